//! Who and where this run is: the client, the namespace, and the Job and pod it runs as
//! (from the downward API: `POD_NAME`, `POD_NAMESPACE`, and the `job-name` label the Job
//! controller puts on its pods, passed as `JOB_NAME`).

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, Client};

use crate::error::{ClusterError, Result};

#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    /// `namespace/pod`: the Lease holder identity.
    pub identity: String,
    /// The Job this pod belongs to, for Events (absent outside a Job).
    pub job: Option<Job>,
}

impl Cluster {
    /// In-cluster config (or `KUBECONFIG`); the namespace from `POD_NAMESPACE`, else the
    /// client's default.
    pub async fn connect() -> Result<Cluster> {
        let client = Client::try_default()
            .await
            .map_err(ClusterError::api("cannot load the in-cluster Kubernetes config"))?;
        let namespace = env("POD_NAMESPACE").unwrap_or_else(|| client.default_namespace().to_string());
        let pod = env("POD_NAME")
            .or_else(|| env("HOSTNAME"))
            .unwrap_or_else(|| "unknown-pod".into());
        Cluster::new(client, namespace, &pod, env("JOB_NAME").as_deref()).await
    }

    /// A run as `pod` in `namespace`, belonging to Job `job` (read now, for its Events).
    pub async fn new(client: Client, namespace: String, pod: &str, job: Option<&str>) -> Result<Cluster> {
        let job = match job {
            Some(name) => Api::<Job>::namespaced(client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(ClusterError::api(format!("get job {name}")))?,
            None => None,
        };
        Ok(Cluster {
            identity: format!("{namespace}/{pod}"),
            client,
            namespace,
            job,
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
