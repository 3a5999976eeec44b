//! The Kubernetes API double set up as the chart's restore Job sees it: namespace `sts`,
//! its writers, the Job, and the ServiceAccount `restore` bound to the Role under test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use sts_backup_cluster::scale::REPLICAS_ANNOTATION;
use sts_backup_cluster::Cluster;
use sts_backup_testkit::kube_double::KubeDouble;

pub use sts_backup_testkit::kube_double::{restore_namespace as cluster, ALL_VERBS, NS, SELECTOR};

pub async fn client(kubeconfig: &Path) -> Client {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

/// One run (one pod of the restore Job) as the ServiceAccount.
pub async fn run_as(kubeconfig: &Path, pod: &str) -> Cluster {
    Cluster::new(client(kubeconfig).await, NS.into(), pod, Some("restore-run"))
        .await
        .unwrap()
}

/// replicas and the recorded annotation of router, graph and ui, read as the admin.
pub async fn state(double: &KubeDouble) -> BTreeMap<&'static str, (i32, Option<String>)> {
    let admin = client(&double.admin_kubeconfig).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin, NS);
    let annotation = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.annotations.as_ref().and_then(|a| a.get(REPLICAS_ANNOTATION).cloned())
    };
    let mut out = BTreeMap::new();
    for name in ["router", "ui"] {
        let d = deployments.get(name).await.unwrap();
        out.insert(name, (d.spec.unwrap().replicas.unwrap(), annotation(&d.metadata)));
    }
    let s = statefulsets.get("graph").await.unwrap();
    out.insert("graph", (s.spec.unwrap().replicas.unwrap(), annotation(&s.metadata)));
    out
}

pub async fn pods(double: &KubeDouble, app: &str) -> usize {
    let admin = client(&double.admin_kubeconfig).await;
    Api::<Pod>::namespaced(admin, NS)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

pub async fn wait_pods(double: &KubeDouble, app: &str, n: usize) {
    for _ in 0..100 {
        if pods(double, app).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{app}: expected {n} pods, have {}", pods(double, app).await);
}

/// (reason, type, message) of the Events on the run's Job.
pub async fn job_events(double: &KubeDouble, run: &Cluster) -> Vec<(String, String, String)> {
    let admin = client(&double.admin_kubeconfig).await;
    let list = Api::<Event>::namespaced(admin, NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let job_uid = run.job.as_ref().unwrap().metadata.uid.clone();
    list.items
        .iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Job") && e.involved_object.uid == job_uid)
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default(),
            )
        })
        .collect()
}
