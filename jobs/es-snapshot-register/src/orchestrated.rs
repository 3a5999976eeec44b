//! `restore --orchestrate`: the Elasticsearch restore as the restore Job runs it in the
//! cluster. The store's Lease (`sts-backup-lock-elasticsearch`), an interrupted restore's
//! writers scaled back first, every check before anything changes, the writers of
//! `--scale-down-selector` (if the chart configures any) scaled down right before an in-place
//! `--force` overwrite and back on every path (SIGTERM too), Events on the Job.

use std::time::Instant;

use sts_backup_cluster::events::{self, Reason};
use sts_backup_cluster::orchestrate::{Orchestration, RestoreGuard};
use sts_backup_cluster::{Cluster, ClusterError};
use sts_backup_core::exit::Exit;
use sts_backup_core::interrupt::Interrupt;
use sts_backup_elasticsearch::{restore_with, Error, EsClient, RestoreOptions, RestoreReport};

/// The store this binary locks when no --store is given.
pub const STORE: &str = "elasticsearch";

/// Runs the restore under the store's lock and records RestoreCompleted/Refused/Failed.
pub async fn restore(client: &EsClient, opts: &RestoreOptions, orch: &Orchestration) -> Result<RestoreReport, Error> {
    let cluster = Cluster::connect().await.map_err(cluster_error)?;
    let started = Instant::now();
    let result = guarded(&cluster, client, opts, orch).await;
    let took = started.elapsed().as_secs();
    let what = opts.snapshot.as_deref().unwrap_or("(the latest)");
    let (reason, message) = match &result {
        Ok(r) => match r.failure() {
            None => (
                Reason::RestoreCompleted,
                format!(
                    "restored snapshot {} ({} index(es)) in {took}s",
                    r.snapshot,
                    r.restored.len()
                ),
            ),
            Some(e) => (
                Reason::RestoreFailed,
                format!("restore of snapshot {} failed after {took}s: {e}", r.snapshot),
            ),
        },
        Err(e) if matches!(e.exit(), Exit::Refused | Exit::Invalid) => (
            Reason::RestoreRefused,
            format!("restore of snapshot {what} refused after {took}s: {e}"),
        ),
        Err(e) => (
            Reason::RestoreFailed,
            format!("restore of snapshot {what} failed after {took}s: {e}"),
        ),
    };
    events::record(&cluster, reason, &message).await;
    result
}

async fn guarded(
    cluster: &Cluster,
    client: &EsClient,
    opts: &RestoreOptions,
    orch: &Orchestration,
) -> Result<RestoreReport, Error> {
    // SIGTERM (Job deleted, activeDeadlineSeconds) becomes a value: the writers still go back.
    let mut interrupt = Interrupt::new().map_err(|e| Error::failed(e.to_string()))?;
    let guard = RestoreGuard::begin(cluster, orch).await.map_err(cluster_error)?;
    let result = tokio::select! {
        r = restore_with(client, opts, || async { guard.scale_down().await.map_err(cluster_error) }) => r,
        e = interrupt.wait() => Err(Error::failed(e.to_string())),
    };
    match (result, guard.end().await) {
        (Err(e), Err(back)) => {
            tracing::error!("{back}");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(back)) => Err(cluster_error(back)),
        (Ok(report), Ok(())) => Ok(report),
    }
}

/// A cluster-side error with its exit code kept (a held lock is a refusal, exit 3).
fn cluster_error(e: ClusterError) -> Error {
    match e.exit() {
        Exit::Refused => Error::refused(e.to_string()),
        Exit::Invalid => Error::invalid(e.to_string()),
        _ => Error::failed(e.to_string()),
    }
}
