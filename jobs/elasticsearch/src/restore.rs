//! `restore` of a snapshot from the repository, run inside the one-shot pods the restore
//! scripts start.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::client::EsClient;
use crate::error::{Context, Error, Result};
use crate::retry::{retry, Attempt, Backoff};
use crate::snapshots::missing_repository;
use crate::validate::IndexPattern;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub repository: String,
    pub snapshot: String,
    /// The pattern to restore (never `*`).
    pub indices: String,
    pub force: bool,
    /// How long to wait for deleted indices to be gone.
    pub delete_timeout: Duration,
}

/// What the restore did; the binary renders it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub rolled_over: Vec<String>,
    pub deleted: Vec<String>,
    pub indices: Vec<String>,
    pub shards_total: u64,
    pub shards_successful: u64,
    pub shards_failed: u64,
}

impl RestoreReport {
    /// The report as text lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rolled_over
            .iter()
            .map(|d| format!("rolled over data stream {d:?}"))
            .collect();
        out.extend(self.deleted.iter().map(|i| format!("deleted index {i:?}")));
        out.push(format!(
            "restored {} index(es); shards total {}, successful {}, failed {}",
            self.indices.len(),
            self.shards_total,
            self.shards_successful,
            self.shards_failed
        ));
        out
    }

    /// Failed shards are a failed restore (exit 1).
    pub fn failure(&self) -> Option<Error> {
        (self.shards_failed > 0).then(|| {
            Error::failed(format!(
                "restore of snapshot {:?} is incomplete: {} of {} shard(s) failed",
                self.snapshot, self.shards_failed, self.shards_total
            ))
        })
    }
}

/// What a restore of `pattern` from the snapshot creates, and what stands in its way.
struct Plan {
    to_restore: BTreeSet<String>,
    conflicts: Vec<String>,
    streams: Vec<String>,
}

async fn plan(client: &EsClient, opts: &RestoreOptions, pattern: &IndexPattern) -> Result<Plan> {
    let repo = opts.repository.as_str();
    let info = client
        .get_snapshot(repo, &opts.snapshot)
        .await
        .map_err(|e| missing_repository(e, repo))?
        .ok_or_else(|| {
            Error::invalid(format!(
                "SNAPSHOT: no snapshot {:?} in repository {repo:?} (see `list`)",
                opts.snapshot
            ))
        })?;
    if info.state() == "IN_PROGRESS" {
        return Err(Error::invalid(format!(
            "SNAPSHOT: {:?} is still in progress",
            opts.snapshot
        )));
    }
    let snap_streams: Vec<String> = info
        .data_streams
        .iter()
        .filter(|d| pattern.matches(d))
        .cloned()
        .collect();
    let to_restore: BTreeSet<String> = info
        .indices
        .iter()
        .filter(|i| pattern.matches(i) || snap_streams.iter().any(|d| i.starts_with(&format!(".ds-{d}-"))))
        .cloned()
        .collect();
    if to_restore.is_empty() {
        return Err(Error::invalid(format!(
            "--indices: {:?} matches nothing in snapshot {:?} (it holds: {})",
            pattern.as_str(),
            opts.snapshot,
            info.indices.join(", ")
        )));
    }
    let open: BTreeSet<String> = client
        .indices()
        .await?
        .into_iter()
        .filter(|r| r.is_open())
        .map(|r| r.index)
        .collect();
    let conflicts: Vec<String> = to_restore.intersection(&open).cloned().collect();
    let streams = client
        .data_streams()
        .await?
        .into_iter()
        .filter(|d| snap_streams.contains(&d.name) || d.indices.iter().any(|b| conflicts.contains(b)))
        .map(|d| d.name)
        .collect();
    Ok(Plan {
        to_restore,
        conflicts,
        streams,
    })
}

/// Restores `SNAPSHOT`: conflict check (open indices, data streams) → refuse (exit 3) or, with
/// `force`, roll over data streams, delete and wait → restore. Failed shards are reported
/// (see [`RestoreReport::failure`]).
pub async fn restore(client: &EsClient, opts: &RestoreOptions) -> Result<RestoreReport> {
    let pattern = IndexPattern::parse(&opts.indices, "--indices")?;
    if opts.snapshot.is_empty() {
        return Err(Error::invalid("SNAPSHOT: the snapshot name is empty (see `list`)"));
    }
    let plan = plan(client, opts, &pattern).await?;
    let mut report = RestoreReport {
        snapshot: opts.snapshot.clone(),
        ..RestoreReport::default()
    };
    if !plan.conflicts.is_empty() || !plan.streams.is_empty() {
        if !opts.force {
            return Err(refusal(opts, &plan));
        }
        clear_conflicts(client, opts, &plan, &mut report).await?;
    }
    tracing::info!(
        "restoring snapshot {:?} (indices {:?}) from repository {:?}",
        opts.snapshot,
        pattern.as_str(),
        opts.repository
    );
    let body = json!({"indices": pattern.as_str(), "include_global_state": false});
    let done = client
        .restore_blocking(&opts.repository, &opts.snapshot, &body)
        .await
        .with_context(|| format!("restoring snapshot {:?}", opts.snapshot))?;
    report.indices = done.0;
    (report.shards_total, report.shards_successful, report.shards_failed) = done.1;
    let _ = plan.to_restore;
    Ok(report)
}

fn refusal(opts: &RestoreOptions, plan: &Plan) -> Error {
    let mut what = Vec::new();
    if !plan.conflicts.is_empty() {
        what.push(format!(
            "{} open index(es): {}",
            plan.conflicts.len(),
            plan.conflicts.join(", ")
        ));
    }
    if !plan.streams.is_empty() {
        what.push(format!("data stream(s): {}", plan.streams.join(", ")));
    }
    Error::refused(format!(
        "restoring {:?} would overwrite {}; stop the writers, then re-run with --force to roll over the data \
         streams, delete these indices and restore",
        opts.snapshot,
        what.join("; ")
    ))
}

async fn clear_conflicts(
    client: &EsClient,
    opts: &RestoreOptions,
    plan: &Plan,
    report: &mut RestoreReport,
) -> Result<()> {
    for ds in &plan.streams {
        let new_index = client
            .rollover(ds)
            .await
            .with_context(|| format!("rolling over data stream {ds:?}"))?;
        tracing::info!("rolled over data stream {ds:?} (new write index {new_index})");
        report.rolled_over.push(ds.clone());
    }
    for index in &plan.conflicts {
        if client
            .delete_index(index)
            .await
            .with_context(|| format!("deleting index {index:?}"))?
        {
            report.deleted.push(index.clone());
        }
    }
    let backoff = Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(1),
        timeout: opts.delete_timeout,
    };
    for index in &plan.conflicts {
        retry("a deleted index to be gone", backoff, || async {
            match client.index_exists(index).await {
                Ok(false) => Attempt::Ready(()),
                Ok(true) => Attempt::Pending(Error::failed(format!(
                    "index {index:?} still exists after deleting it; is a writer recreating it?"
                ))),
                Err(e) => Attempt::Fail(Error::Api(e)),
            }
        })
        .await
        .map_err(crate::retry::GaveUp::into_inner)?;
    }
    Ok(())
}
