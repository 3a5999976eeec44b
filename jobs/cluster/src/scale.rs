//! Scaling a store's writers down for a restore and back afterwards.
//!
//! The replica count is recorded **on the workload itself** (an annotation written in the
//! same patch that sets replicas to 0, with the object's resourceVersion as a precondition),
//! not in the restoring pod's memory: if the pod dies hard after scaling down, the next run
//! that takes the store's lock finds the annotations and scales back before anything else
//! ([`scale_back`]). Deployments and StatefulSets are handled alike.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::json;

use crate::context::Cluster;
use crate::error::{ClusterError, Result};

/// Where the replica count before a restore is kept. The same key as the restore scripts
/// used, so a run also finishes a restore the old script left half-done.
pub const REPLICAS_ANNOTATION: &str = "sts-backup.io/replicas-before-restore";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
        })
    }
}

/// One workload and the replica count it had (down) or got back (up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: Kind,
    pub name: String,
    pub replicas: i32,
    /// `matchLabels` of its pod selector, to watch its pods go.
    pub pods: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.kind, self.name, self.replicas)
    }
}

/// A workload as read from the API, kind-independent.
struct Seen {
    kind: Kind,
    name: String,
    resource_version: Option<String>,
    replicas: i32,
    recorded: Option<String>,
    pods: String,
}

fn selector_string(selector: Option<&LabelSelector>) -> String {
    selector
        .and_then(|s| s.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn seen<K: Resource>(kind: Kind, obj: &K, replicas: Option<i32>, selector: Option<&LabelSelector>) -> Seen {
    Seen {
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        resource_version: obj.meta().resource_version.clone(),
        replicas: replicas.unwrap_or(1),
        recorded: obj
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPLICAS_ANNOTATION).cloned()),
        pods: selector_string(selector),
    }
}

async fn list_workloads(cluster: &Cluster, selector: Option<&str>) -> Result<Vec<Seen>> {
    let params = match selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    let mut out = Vec::new();
    let deployments = cluster
        .api::<Deployment>()
        .list(&params)
        .await
        .map_err(ClusterError::api("list deployments"))?;
    for d in &deployments {
        let spec = d.spec.as_ref();
        out.push(seen(
            Kind::Deployment,
            d,
            spec.and_then(|s| s.replicas),
            spec.map(|s| &s.selector),
        ));
    }
    let statefulsets = cluster
        .api::<StatefulSet>()
        .list(&params)
        .await
        .map_err(ClusterError::api("list statefulsets"))?;
    for s in &statefulsets {
        let spec = s.spec.as_ref();
        out.push(seen(
            Kind::StatefulSet,
            s,
            spec.and_then(|s| s.replicas),
            spec.map(|s| &s.selector),
        ));
    }
    Ok(out)
}

async fn patch(cluster: &Cluster, kind: Kind, name: &str, body: serde_json::Value) -> Result<(), kube::Error> {
    let params = PatchParams::default();
    match kind {
        Kind::Deployment => cluster
            .api::<Deployment>()
            .patch(name, &params, &Patch::Merge(&body))
            .await
            .map(|_| ()),
        Kind::StatefulSet => cluster
            .api::<StatefulSet>()
            .patch(name, &params, &Patch::Merge(&body))
            .await
            .map(|_| ()),
    }
}

/// Scales every Deployment and StatefulSet matching `selector` to 0, recording each one's
/// replica count first (in the same patch), then waits until their pods are gone.
/// Workloads already at 0 are left alone. Returns what was scaled down.
pub async fn scale_down(cluster: &Cluster, selector: &str, wait: Duration) -> Result<Vec<Workload>> {
    let mut scaled = Vec::new();
    for w in list_workloads(cluster, Some(selector)).await? {
        if w.recorded.is_some() {
            // Left by an interrupted run that scale_back did not finish: never overwrite
            // the original count with the current (zero) one.
            return Err(ClusterError::Invalid(format!(
                "{}/{} still carries {REPLICAS_ANNOTATION} from an interrupted restore; run --finalize first",
                w.kind, w.name
            )));
        }
        if w.replicas == 0 {
            continue;
        }
        let body = json!({
            "metadata": {
                "resourceVersion": w.resource_version,
                "annotations": { REPLICAS_ANNOTATION: w.replicas.to_string() },
            },
            "spec": { "replicas": 0 },
        });
        patch(cluster, w.kind, &w.name, body)
            .await
            .map_err(ClusterError::api(format!("scale {}/{} to 0", w.kind, w.name)))?;
        let workload = Workload {
            kind: w.kind,
            name: w.name,
            replicas: w.replicas,
            pods: w.pods,
        };
        tracing::info!("=== Scaled down {workload} to 0");
        scaled.push(workload);
    }
    wait_for_pods_gone(cluster, &scaled, wait).await?;
    Ok(scaled)
}

async fn wait_for_pods_gone(cluster: &Cluster, workloads: &[Workload], wait: Duration) -> Result<()> {
    let pods: Api<Pod> = cluster.api();
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let mut remaining = BTreeMap::new();
        for w in workloads.iter().filter(|w| !w.pods.is_empty()) {
            let n = pods
                .list(&ListParams::default().labels(&w.pods))
                .await
                .map_err(ClusterError::api(format!("list pods of {}/{}", w.kind, w.name)))?
                .items
                .len();
            if n > 0 {
                remaining.insert(format!("{}/{}", w.kind, w.name), n);
            }
        }
        if remaining.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(ClusterError::Timeout(format!(
                "pods still running after {}s: {remaining:?}",
                wait.as_secs()
            )));
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            tracing::info!("=== Waiting for pods to stop: {remaining:?}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Scales every workload in the namespace that carries a recorded count back to it and
/// removes the record. Safe to run any number of times: this is both the normal end of a
/// restore and the recovery of an interrupted one.
pub async fn scale_back(cluster: &Cluster) -> Result<Vec<Workload>> {
    let mut restored = Vec::new();
    let mut failures = Vec::new();
    for w in list_workloads(cluster, None).await? {
        let Some(recorded) = w.recorded else { continue };
        let Ok(replicas) = recorded.trim().parse::<i32>() else {
            failures.push(format!(
                "{}/{}: unreadable {REPLICAS_ANNOTATION}={recorded:?}",
                w.kind, w.name
            ));
            continue;
        };
        let body = json!({
            "metadata": {
                "resourceVersion": w.resource_version,
                "annotations": { REPLICAS_ANNOTATION: null },
            },
            "spec": { "replicas": replicas },
        });
        match patch(cluster, w.kind, &w.name, body).await {
            Ok(()) => {
                let workload = Workload {
                    kind: w.kind,
                    name: w.name,
                    replicas,
                    pods: w.pods,
                };
                tracing::info!("=== Scaled {workload} back");
                restored.push(workload);
            }
            Err(e) => failures.push(format!("{}/{}: {e}", w.kind, w.name)),
        }
    }
    if failures.is_empty() {
        Ok(restored)
    } else {
        Err(ClusterError::Failed(format!(
            "could not scale back {} (scaled back: {}); the next run retries",
            failures.join("; "),
            restored.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// Scales back with retries: a conflict (someone edited the workload) or a passing API
/// error must not leave writers at zero.
pub async fn scale_back_retrying(cluster: &Cluster, attempts: u32) -> Result<Vec<Workload>> {
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        match scale_back(cluster).await {
            Ok(w) => return Ok(w),
            Err(e) => {
                tracing::warn!("scale back, attempt {attempt}/{attempts}: {e}");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(u64::from(attempt.min(5)))).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| ClusterError::Failed("scale back: no attempt".into())))
}
