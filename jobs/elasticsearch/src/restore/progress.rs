//! Following an asynchronous restore: a progress line at least every 10 s (indices and
//! shards done, bytes and rate), a stall limit (`--no-progress-timeout`), and polls that
//! survive a dropped connection without restarting the restore.
//!
//! Done means every primary shard of the restored indices is `STARTED`, or `UNASSIGNED`
//! after a failed allocation (`ALLOCATION_FAILED`, seen on two polls in a row so a shard
//! between Elasticsearch's allocation retries is not counted as failed too early).
//! This is a watch with a stall limit, not a retry with a deadline, so it has its own loop.

use std::collections::BTreeMap;
use std::time::Instant;

use sts_backup_core::progress::human_bytes;

use super::{Plan, RestoreOptions, RestoreReport};
use crate::client::{ApiError, EsClient};
use crate::error::{Error, Result};

/// One look at the restore.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    /// index → (started, failed, other) primaries.
    shards: BTreeMap<String, (u64, u64, u64)>,
    failed: Vec<String>,
    recovered: u64,
    total_bytes: u64,
}

impl Snapshot {
    fn count(&self, pick: fn(&(u64, u64, u64)) -> u64) -> u64 {
        self.shards.values().map(pick).sum()
    }

    fn done(&self, plan: &Plan) -> bool {
        plan.targets.keys().all(|t| self.shards.contains_key(t)) && self.count(|s| s.2) == 0
    }

    fn indices_done(&self) -> usize {
        self.shards.values().filter(|s| s.1 == 0 && s.2 == 0).count()
    }
}

async fn look(client: &EsClient, indices: &str) -> std::result::Result<Snapshot, ApiError> {
    let rows = client.primary_shards(indices).await?;
    let bytes = client.recovery(indices).await?;
    let mut snap = Snapshot::default();
    for r in rows {
        let entry = snap.shards.entry(r.index.clone()).or_default();
        match r.state.as_str() {
            "STARTED" => entry.0 += 1,
            "UNASSIGNED" if r.unassigned_reason.as_deref() == Some("ALLOCATION_FAILED") => {
                entry.1 += 1;
                snap.failed.push(format!("{}/{}", r.index, r.shard));
            }
            _ => entry.2 += 1,
        }
    }
    snap.recovered = bytes.values().map(|b| b.0).sum();
    snap.total_bytes = bytes.values().map(|b| b.1).sum();
    Ok(snap)
}

fn progress_line(plan: &Plan, snap: &Snapshot, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    format!(
        "restore of {:?}: indices {}/{} done, shards {}/{} started ({} failed), {} of {} ({}/s)",
        plan.snapshot,
        snap.indices_done(),
        plan.targets.len(),
        snap.count(|s| s.0),
        plan.targets.values().sum::<u64>(),
        snap.count(|s| s.1),
        human_bytes(snap.recovered),
        human_bytes(snap.total_bytes),
        human_bytes((snap.recovered as f64 / secs) as u64)
    )
}

/// Polls until the restore is done, logging progress; fills the report's outcome.
pub async fn follow(client: &EsClient, opts: &RestoreOptions, plan: &Plan, report: &mut RestoreReport) -> Result<()> {
    let started = Instant::now();
    let indices = plan.targets.keys().cloned().collect::<Vec<_>>().join(",");
    let mut last_change = Instant::now();
    let mut last_log: Option<Instant> = None;
    let mut last: Option<Snapshot> = None;
    let mut failed_before: Vec<String> = Vec::new();
    loop {
        match look(client, &indices).await {
            Ok(snap) => {
                let moved = last.as_ref().is_none_or(|l| {
                    (l.count(|s| s.0), l.count(|s| s.1), l.recovered)
                        != (snap.count(|s| s.0), snap.count(|s| s.1), snap.recovered)
                });
                if moved {
                    last_change = Instant::now();
                }
                let confirmed = snap.failed == failed_before;
                failed_before = snap.failed.clone();
                if snap.done(plan) && (snap.failed.is_empty() || confirmed) {
                    tracing::info!("{}", progress_line(plan, &snap, started));
                    fill(report, &snap, started);
                    return Ok(());
                }
                if last_log.is_none_or(|t| t.elapsed() >= opts.progress_interval) {
                    tracing::info!("{}", progress_line(plan, &snap, started));
                    last_log = Some(Instant::now());
                }
                last = Some(snap);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    "following the restore: {e}; polling again (the restore keeps running in Elasticsearch)"
                );
            }
            Err(e) => return Err(e.into()),
        }
        if last_change.elapsed() >= opts.no_progress_timeout {
            return Err(Error::failed(format!(
                "restore of snapshot {:?} made no progress for {} (--no-progress-timeout); it may still be running in \
                 Elasticsearch: see GET _cat/recovery and GET _cluster/allocation/explain",
                plan.snapshot,
                humantime::format_duration(opts.no_progress_timeout)
            )));
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}

fn fill(report: &mut RestoreReport, snap: &Snapshot, started: Instant) {
    report.restored = snap
        .shards
        .iter()
        .filter(|(_, s)| s.1 == 0 && s.2 == 0)
        .map(|(i, _)| i.clone())
        .collect();
    report.shards_total = snap.shards.values().map(|s| s.0 + s.1 + s.2).sum();
    report.shards_successful = snap.count(|s| s.0);
    report.failed_shards = snap.failed.clone();
    report.bytes_total = snap.total_bytes;
    report.seconds = started.elapsed().as_secs();
}
