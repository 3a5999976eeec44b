//! A whole restore or scheduled backup run inside the cluster, in the only safe order:
//! lock the store → finish any interrupted restore (scale back what is recorded) → every
//! check → scale the writers down → import → scale back on every path → release → Event.
//! A refusal before the scale-down changes nothing in the cluster.

use std::time::{Duration, Instant};

use sts_backup_core::backup::{backup, BackupOptions};
use sts_backup_core::catalogue::Backup;
use sts_backup_core::interrupt::Interrupt;
use sts_backup_core::manifest::Manifest;
use sts_backup_core::progress::human_bytes;
use sts_backup_core::restore::{self, BackupRestoreOptions};
use sts_backup_core::storage::Storage;
use sts_backup_core::Error;

use crate::context::Cluster;
use crate::error::ClusterError;
use crate::events::{self, Reason};
use crate::lock::{self, Operation, StoreLock};
use crate::scale;

/// Attempts at scaling back before a run gives up (and leaves it to the next run).
const SCALE_BACK_ATTEMPTS: u32 = 5;

/// Where and how a run coordinates with the cluster.
#[derive(Debug, Clone)]
pub struct Orchestration {
    /// The store's name: one Lease per store.
    pub store: String,
    /// Label selector of the store's writers (Deployments and StatefulSets).
    pub scale_down_selector: String,
    /// How long to wait for the writers' pods to be gone.
    pub scale_wait: Duration,
    pub lease_duration: Duration,
}

/// Takes the store's lock and scales back what an interrupted run left down.
async fn begin(cluster: &Cluster, orch: &Orchestration, operation: Operation) -> Result<StoreLock, ClusterError> {
    let held = lock::acquire(cluster, &orch.store, operation, orch.lease_duration).await?;
    match scale::scale_back_retrying(cluster, SCALE_BACK_ATTEMPTS).await {
        Ok(back) if !back.is_empty() => {
            tracing::warn!(
                "=== Recovered an interrupted restore: scaled back {}",
                back.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ")
            );
            Ok(held)
        }
        Ok(_) => Ok(held),
        Err(e) => {
            held.release().await;
            Err(e)
        }
    }
}

/// The run's result after scaling back: a scale-back failure becomes the run's error when it
/// had none (and is logged when it had one).
fn combine(result: Result<(), Error>, back: Result<(), ClusterError>) -> Result<(), Error> {
    match (result, back) {
        (Err(e), Err(b)) => {
            tracing::error!("{b}");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(b)) => Err(b.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn size_of(backup: &Backup) -> u64 {
    match backup {
        Backup::Committed(m) => m.raw_size,
        Backup::Legacy(l) => l.size,
    }
}

/// A restore of a store whose checks and import live in another crate (Elasticsearch): the
/// lock is held and an interrupted restore finished by [`RestoreGuard::begin`]; the caller runs
/// its checks, calls [`RestoreGuard::scale_down`] right before its first change, and ends with
/// [`RestoreGuard::end`] on every path. The StackGraph restore runs the same steps.
pub struct RestoreGuard<'a> {
    cluster: &'a Cluster,
    orch: &'a Orchestration,
    held: StoreLock,
}

impl<'a> RestoreGuard<'a> {
    /// Takes the store's lock and scales back what an interrupted restore left down.
    pub async fn begin(cluster: &'a Cluster, orch: &'a Orchestration) -> Result<RestoreGuard<'a>, ClusterError> {
        let held = begin(cluster, orch, Operation::Restore).await?;
        Ok(RestoreGuard { cluster, orch, held })
    }

    /// Scales the store's writers down (recording their counts) and waits for their pods;
    /// nothing when the store has no writers configured (an empty selector).
    pub async fn scale_down(&self) -> Result<(), ClusterError> {
        if self.orch.scale_down_selector.is_empty() {
            return Ok(());
        }
        scale::scale_down(self.cluster, &self.orch.scale_down_selector, self.orch.scale_wait)
            .await
            .map(|_| ())
    }

    /// Scales back whatever is recorded (retrying) and releases the lock.
    pub async fn end(self) -> Result<(), ClusterError> {
        let back = scale::scale_back_retrying(self.cluster, SCALE_BACK_ATTEMPTS).await;
        self.held.release().await;
        back.map(|_| ())
    }
}

/// An orchestrated restore of `opts.name`; records RestoreCompleted/Refused/Failed.
pub async fn restore(
    cluster: &Cluster,
    orch: &Orchestration,
    storage: &Storage,
    opts: &BackupRestoreOptions,
) -> Result<Backup, Error> {
    let started = Instant::now();
    let result = restore_steps(cluster, orch, storage, opts).await;
    let took = started.elapsed().as_secs();
    match &result {
        Ok(b) => {
            let msg = format!("restored backup {} ({}) in {took}s", opts.name, human_bytes(size_of(b)));
            events::record(cluster, Reason::RestoreCompleted, &msg).await;
        }
        Err(e @ Error::Refused(_)) => {
            let msg = format!("restore of backup {} refused after {took}s: {e}", opts.name);
            events::record(cluster, Reason::RestoreRefused, &msg).await;
        }
        Err(e) => {
            let msg = format!("restore of backup {} failed after {took}s: {e}", opts.name);
            events::record(cluster, Reason::RestoreFailed, &msg).await;
        }
    }
    result
}

async fn restore_steps(
    cluster: &Cluster,
    orch: &Orchestration,
    storage: &Storage,
    opts: &BackupRestoreOptions,
) -> Result<Backup, Error> {
    // From here on SIGTERM is a value, not the end of the process: scale back still runs.
    let mut interrupt = Interrupt::new()?;
    let guard = RestoreGuard::begin(cluster, orch).await?;
    let checked = match restore::check(storage, opts).await {
        Ok(b) => b,
        Err(e) => {
            // Nothing was scaled: release without touching any workload.
            guard.held.release().await;
            return Err(e);
        }
    };
    let result = async {
        tokio::select! {
            down = guard.scale_down() => { down?; }
            e = interrupt.wait() => return Err(e),
        }
        restore::import(storage, opts, &checked).await
    }
    .await;
    combine(result, guard.end().await).map(|()| checked)
}

/// An orchestrated scheduled backup. A store locked by another run is skipped (`Ok(None)`,
/// Event BackupSkipped), not failed.
pub async fn backup_run(
    cluster: &Cluster,
    orch: &Orchestration,
    storage: &Storage,
    opts: &BackupOptions,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Manifest>, Error> {
    let started = Instant::now();
    let held = match begin(cluster, orch, Operation::Backup).await {
        Ok(held) => held,
        Err(ClusterError::Locked {
            holder,
            operation,
            since,
            ..
        }) => {
            let msg = format!(
                "backup skipped: store {} is locked by {holder} ({operation}, since {since})",
                orch.store
            );
            tracing::warn!("{msg}");
            events::record(cluster, Reason::BackupSkipped, &msg).await;
            return Ok(None);
        }
        Err(e) => {
            events::record(cluster, Reason::BackupFailed, &format!("backup failed: {e}")).await;
            return Err(e.into());
        }
    };
    let result = backup(storage, opts, now).await;
    held.release().await;
    let took = started.elapsed().as_secs();
    match &result {
        Ok(m) => {
            let msg = format!("backup {} ({}) completed in {took}s", m.name, human_bytes(m.raw_size));
            events::record(cluster, Reason::BackupCompleted, &msg).await;
        }
        Err(e) => {
            events::record(
                cluster,
                Reason::BackupFailed,
                &format!("backup failed after {took}s: {e}"),
            )
            .await;
        }
    }
    result.map(Some)
}

/// `finalize`: take the lock, scale back whatever an interrupted restore left down, release.
pub async fn finalize(cluster: &Cluster, orch: &Orchestration) -> Result<Vec<scale::Workload>, ClusterError> {
    let held = lock::acquire(cluster, &orch.store, Operation::Restore, orch.lease_duration).await?;
    let back = scale::scale_back_retrying(cluster, SCALE_BACK_ATTEMPTS).await;
    held.release().await;
    back
}

/// The flags of an orchestrated run (each with its env twin).
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestrateArgs {
    /// Run inside the cluster: take the store's lock, scale the writers down and back
    /// (restore), record Events. Needs the chart's ServiceAccount.
    #[arg(long, env = "STS_ORCHESTRATE")]
    pub orchestrate: bool,

    /// The store's name, for its lock (one Lease per store); default: the binary's store
    /// (stackgraph, elasticsearch).
    #[arg(long = "store", env = "STS_STORE", value_name = "NAME")]
    pub store: Option<String>,

    /// Label selector of the store's writers (Deployments and StatefulSets) to scale down
    /// during a restore. Required with --orchestrate for restore.
    #[arg(long, env = "STS_SCALE_DOWN_SELECTOR", value_name = "SELECTOR")]
    pub scale_down_selector: Option<String>,

    /// Lock the store for the restore but scale nothing down: for a store whose writer must
    /// keep running for the import (the configuration store: its importer talks to the server).
    #[arg(long, env = "STS_NO_SCALE_DOWN", conflicts_with = "scale_down_selector")]
    pub no_scale_down: bool,

    /// How long to wait for the writers' pods to be gone.
    #[arg(long, env = "STS_SCALE_WAIT", default_value = "10m", value_name = "DURATION", value_parser = sts_backup_core::restore::parse_timeout)]
    pub scale_wait: Duration,

    /// The lock's lease: renewed every third of it; a holder that dies frees it after this long.
    #[arg(long, env = "STS_LEASE_DURATION", default_value = "60s", value_name = "DURATION", value_parser = sts_backup_core::restore::parse_timeout)]
    pub lease_duration: Duration,
}

impl OrchestrateArgs {
    /// The run's settings; `needs_selector` for restores that must know what to stop;
    /// `default_store` when no --store is given.
    pub fn orchestration(&self, needs_selector: bool, default_store: &str) -> Result<Orchestration, Error> {
        let store = self.store.as_deref().unwrap_or(default_store).trim();
        if store.is_empty() || lock::lease_name(store).len() > 253 {
            return Err(Error::invalid(format!("--store: {store:?} is not a usable store name")));
        }
        let selector = self.scale_down_selector.clone().unwrap_or_default();
        if needs_selector && selector.trim().is_empty() && !self.no_scale_down {
            return Err(Error::invalid(
                "--scale-down-selector: required with --orchestrate (the label selector of the store's writers), \
                 or --no-scale-down for a store whose writer must keep running",
            ));
        }
        Ok(Orchestration {
            store: store.to_string(),
            scale_down_selector: selector.trim().to_string(),
            scale_wait: self.scale_wait,
            lease_duration: self.lease_duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        orchestrate: OrchestrateArgs,
    }

    fn parse(args: &[&str]) -> Result<OrchestrateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|c| c.orchestrate)
    }

    /// A restore must say what to stop, or say explicitly that nothing is stopped (the lock
    /// alone); forgetting the selector stays an error.
    #[test]
    fn a_restore_names_its_writers_or_says_it_has_none() {
        assert!(parse(&[]).unwrap().orchestration(true, "configuration").is_err());
        let lock_only = parse(&["--no-scale-down"]).unwrap();
        assert_eq!(
            lock_only
                .orchestration(true, "configuration")
                .unwrap()
                .scale_down_selector,
            ""
        );
        assert!(parse(&["--no-scale-down", "--scale-down-selector", "app=x"]).is_err());
        let writers = parse(&["--scale-down-selector", "app=x"]).unwrap();
        assert_eq!(writers.orchestration(true, "s").unwrap().scale_down_selector, "app=x");
    }
}
