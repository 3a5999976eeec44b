//! Kubernetes Events on the Job (and on the CronJob that made it), so `kubectl describe`
//! and event exporters show what a run did: `BackupCompleted`, `BackupFailed`,
//! `BackupSkipped`, `RestoreCompleted`, `RestoreRefused`, `RestoreFailed`.
//! An Event that cannot be written is logged and otherwise ignored: it never fails a run.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;

use crate::context::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BackupCompleted,
    BackupFailed,
    BackupSkipped,
    RestoreCompleted,
    RestoreRefused,
    RestoreFailed,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::BackupCompleted => "BackupCompleted",
            Reason::BackupFailed => "BackupFailed",
            Reason::BackupSkipped => "BackupSkipped",
            Reason::RestoreCompleted => "RestoreCompleted",
            Reason::RestoreRefused => "RestoreRefused",
            Reason::RestoreFailed => "RestoreFailed",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Reason::BackupCompleted | Reason::RestoreCompleted | Reason::BackupSkipped => "Normal",
            _ => "Warning",
        }
    }
}

/// Records `reason` with `message` on the run's Job and on the CronJob owning it.
pub async fn record(cluster: &Cluster, reason: Reason, message: &str) {
    let Some(job) = &cluster.job else {
        tracing::debug!("not in a Job: no Event for {}", reason.as_str());
        return;
    };
    let mut targets = vec![ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: Some(cluster.namespace.clone()),
        uid: job.metadata.uid.clone(),
        ..ObjectReference::default()
    }];
    for owner in job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "CronJob")
    {
        targets.push(ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(cluster.namespace.clone()),
            uid: Some(owner.uid.clone()),
            ..ObjectReference::default()
        });
    }
    let api = cluster.api::<Event>();
    let message: String = message.chars().take(1024).collect();
    for target in targets {
        let now = Time(Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", target.name.clone().unwrap_or_default())),
                namespace: Some(cluster.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: target,
            reason: Some(reason.as_str().into()),
            message: Some(message.clone()),
            type_: Some(reason.event_type().into()),
            source: Some(EventSource {
                component: Some("sts-backup".into()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some("sts-backup".into()),
            reporting_instance: Some(cluster.identity.clone()),
            ..Event::default()
        };
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!("could not record Event {}: {e}", reason.as_str());
        }
    }
}
