//! One `coordination.k8s.io/v1` Lease per store: at most one restore or backup of a store
//! runs at a time. The holder renews it while running; a holder that dies stops renewing and
//! the Lease expires, so the next run takes it over (with a warning) instead of waiting for
//! a human. Every write carries the Lease's resourceVersion: two runs racing for a free or
//! expired Lease cannot both win (the API server answers 409 to the loser).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use tokio::sync::Notify;

use crate::context::Cluster;
use crate::error::{ClusterError, Result};

/// Annotation on the Lease naming what the holder is doing.
pub const OPERATION_ANNOTATION: &str = "sts-backup.io/operation";

/// What a run holds the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Restore,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
        }
    }
}

/// The Lease object's name for a store.
pub fn lease_name(store: &str) -> String {
    format!("sts-backup-lock-{store}")
}

/// A held store lock; renewed in the background until [`StoreLock::release`].
pub struct StoreLock {
    cluster: Cluster,
    name: String,
    stop: Arc<Notify>,
    renewer: tokio::task::JoinHandle<()>,
}

/// Who holds a store now (for refusals and for a backup that must skip).
#[derive(Debug, Clone)]
pub struct Holder {
    pub identity: String,
    pub operation: String,
    pub since: String,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// A Lease is free when nobody holds it or its holder stopped renewing.
fn current_holder(lease: &Lease) -> Option<Holder> {
    let spec = lease.spec.as_ref()?;
    let identity = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = renewed
        .checked_add(duration)
        .map(|end| end < Timestamp::now())
        .unwrap_or(true);
    if expired {
        return None;
    }
    Some(Holder {
        identity,
        operation: lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OPERATION_ANNOTATION).cloned())
            .unwrap_or_else(|| "unknown".into()),
        since: spec
            .acquire_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "an unknown time".into()),
    })
}

/// Takes the store's Lease for `operation`, or says who holds it ([`ClusterError::Locked`]).
pub async fn acquire(cluster: &Cluster, store: &str, operation: Operation, duration: Duration) -> Result<StoreLock> {
    let api = cluster.api::<Lease>();
    let name = lease_name(store);
    let seconds = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let spec = LeaseSpec {
        holder_identity: Some(cluster.identity.clone()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        ..LeaseSpec::default()
    };
    let existing = api
        .get_opt(&name)
        .await
        .map_err(ClusterError::api(format!("get lease {name}")))?;
    let locked = |holder: Holder| ClusterError::Locked {
        store: store.to_string(),
        holder: holder.identity,
        operation: holder.operation,
        since: holder.since,
    };
    let lease = match existing {
        None => new_lease(&name, operation, spec),
        Some(lease) => match current_holder(&lease) {
            Some(holder) => return Err(locked(holder)),
            None => take_over(lease, store, operation, spec),
        },
    };
    let written = match lease.metadata.resource_version {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => api.replace(&name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => {}
        // Another run won the race between our read and our write.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let lease = api
                .get(&name)
                .await
                .map_err(ClusterError::api(format!("get lease {name}")))?;
            return Err(locked(current_holder(&lease).unwrap_or(Holder {
                identity: "another run".into(),
                operation: "unknown".into(),
                since: "just now".into(),
            })));
        }
        Err(e) => return Err(ClusterError::api(format!("take lease {name}"))(e)),
    }
    tracing::info!("=== Locked store {store} for {} (lease {name})", operation.as_str());
    let stop = Arc::new(Notify::new());
    let renewer = tokio::spawn(renew(cluster.clone(), name.clone(), duration, stop.clone()));
    Ok(StoreLock {
        cluster: cluster.clone(),
        name,
        stop,
        renewer,
    })
}

fn operation_annotation(operation: Operation) -> BTreeMap<String, String> {
    BTreeMap::from([(OPERATION_ANNOTATION.to_string(), operation.as_str().to_string())])
}

/// The first Lease of a store (created, so it has no resourceVersion yet).
fn new_lease(name: &str, operation: Operation, spec: LeaseSpec) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(operation_annotation(operation)),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            lease_transitions: Some(0),
            ..spec
        }),
    }
}

/// A free (expired or released) Lease taken over; its resourceVersion makes the replace
/// fail with 409 if another run took it meanwhile.
fn take_over(lease: Lease, store: &str, operation: Operation, spec: LeaseSpec) -> Lease {
    if let Some(previous) = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
    {
        tracing::warn!(
            "store {store}: taking over the expired lock of {previous} (it stopped renewing; a run that died?)"
        );
    }
    let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0) + 1;
    let mut taken = lease;
    taken
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(operation_annotation(operation));
    taken.spec = Some(LeaseSpec {
        lease_transitions: Some(transitions),
        ..spec
    });
    taken
}

/// Who holds the store now, if anyone (expired Leases count as free).
pub async fn holder(cluster: &Cluster, store: &str) -> Result<Option<Holder>> {
    let name = lease_name(store);
    let lease = cluster
        .api::<Lease>()
        .get_opt(&name)
        .await
        .map_err(ClusterError::api(format!("get lease {name}")))?;
    Ok(lease.as_ref().and_then(current_holder))
}

async fn renew(cluster: Cluster, name: String, duration: Duration, stop: Arc<Notify>) {
    let api = cluster.api::<Lease>();
    let every = (duration / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.notified() => return,
        }
        let result = async {
            let mut lease = api.get(&name).await?;
            let ours =
                lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(cluster.identity.as_str());
            if !ours {
                tracing::error!("lease {name} was taken by another run; this run no longer holds the store");
                return Ok::<_, kube::Error>(false);
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(now());
            }
            api.replace(&name, &PostParams::default(), &lease).await?;
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!("renewing lease {name} failed (will retry): {e}"),
        }
    }
}

/// A lock dropped without [`StoreLock::release`] (a panic, a run torn down) stops renewing, so
/// the Lease expires and the next run takes it over: the same as a holder killed hard.
impl Drop for StoreLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl StoreLock {
    /// Stops renewing and frees the Lease (holder cleared, so the next run need not wait
    /// for it to expire). A failure here only delays the next run until expiry.
    pub async fn release(mut self) {
        self.stop.notify_one();
        let _ = (&mut self.renewer).await;
        let api = self.cluster.api::<Lease>();
        let freed = async {
            let mut lease = api.get(&self.name).await?;
            if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(self.cluster.identity.as_str()) {
                return Ok::<_, kube::Error>(());
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = Some(now());
            }
            api.replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        match freed {
            Ok(()) => tracing::info!("=== Released lease {}", self.name),
            Err(e) => tracing::warn!("could not release lease {} (it expires on its own): {e}", self.name),
        }
    }
}
