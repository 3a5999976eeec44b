//! `restore` of a snapshot, run inside the one-shot pods the restore scripts start.
//!
//! Nothing is changed before every check has passed ([`plan`]): the snapshot's state and
//! version, the indices it really holds (and, for a `PARTIAL` snapshot, which of them are
//! complete), the templates its data streams need, and what in the cluster stands in the
//! way. Then, only with `--force`, the least destructive overwrite ([`overwrite`]): close
//! what can be closed, roll over data streams and delete only their conflicting backing
//! indices, reopen what was closed if Elasticsearch refuses to start the restore. The
//! restore runs asynchronously and is followed until every shard is done ([`progress`]).

mod overwrite;
mod plan;
mod progress;

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::EsClient;
use crate::error::{Context, Error, Result};
use crate::snapshots;
use crate::validate::{validate_name, IndexPattern};

pub use plan::Plan;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub repository: String,
    /// The snapshot to restore; `None` with `latest`.
    pub snapshot: Option<String>,
    /// Restore the newest `SUCCESS` snapshot of the repository.
    pub latest: bool,
    /// The pattern to restore (never `*`).
    pub indices: String,
    /// Close, roll over and delete what the restore would overwrite.
    pub force: bool,
    /// Restore a `PARTIAL` snapshot's complete indices (the others are left out and listed).
    pub allow_partial: bool,
    /// Restore beside the live indices: `{}` in the template is the original name.
    pub rename_to: Option<String>,
    /// How often to poll the restore.
    pub poll_interval: Duration,
    /// How often to log a progress line (at most 10 s).
    pub progress_interval: Duration,
    /// A restore with no progress for this long fails (exit 1); it keeps running in Elasticsearch.
    pub no_progress_timeout: Duration,
    /// How long to wait for deleted indices to be gone.
    pub delete_timeout: Duration,
}

impl RestoreOptions {
    /// Every check that needs no request (exit 2).
    pub fn validate(&self) -> Result<()> {
        validate_name("--repository", &self.repository)?;
        match (&self.snapshot, self.latest) {
            (Some(_), true) => {
                return Err(Error::invalid(
                    "--latest: give either a SNAPSHOT name or --latest, not both",
                ))
            }
            (None, false) => return Err(Error::invalid("SNAPSHOT: name a snapshot (see `list`) or use --latest")),
            (Some(name), false) => validate_name("SNAPSHOT", name)?,
            (None, true) => {}
        }
        IndexPattern::parse(&self.indices, "--indices")?;
        if let Some(template) = &self.rename_to {
            rename_check(template)?;
        }
        Ok(())
    }
}

/// Checks a `--rename-to` template: one `{}`, and a name Elasticsearch accepts around it.
fn rename_check(template: &str) -> Result<()> {
    if template.matches("{}").count() != 1 {
        return Err(Error::invalid(format!(
            "--rename-to: {template:?} must contain {{}} once (the original name), e.g. restored-{{}}"
        )));
    }
    if template == "{}" {
        return Err(Error::invalid(
            "--rename-to: \"{}\" keeps the names; drop --rename-to to restore in place",
        ));
    }
    validate_name("--rename-to", &template.replace("{}", "x"))
}

/// The name an index or data stream gets under `--rename-to` (backing indices keep their
/// `.ds-` prefix, as Elasticsearch renames them through their data stream's name).
pub fn renamed(template: &str, name: &str) -> String {
    match name.strip_prefix(".ds-") {
        Some(rest) => format!(".ds-{}", template.replace("{}", rest)),
        None => template.replace("{}", name),
    }
}

/// What the restore did; the binary renders it as text or JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub repository: String,
    pub snapshot: String,
    pub state: String,
    /// The indices restored (their names in the cluster, after any rename).
    pub restored: Vec<String>,
    /// Indices of a PARTIAL snapshot left out because some of their shards failed in it.
    pub left_out: Vec<String>,
    pub closed: Vec<String>,
    pub deleted: Vec<String>,
    pub rolled_over: Vec<String>,
    /// Closed indices reopened because the restore could not start.
    pub reopened: Vec<String>,
    pub shards_total: u64,
    pub shards_successful: u64,
    /// `index/shard` of every primary that failed to restore.
    pub failed_shards: Vec<String>,
    pub bytes_total: u64,
    pub seconds: u64,
}

impl RestoreReport {
    /// The report as text lines.
    pub fn lines(&self) -> Vec<String> {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        vec![
            format!(
                "snapshot {:?} ({}) from repository {:?}",
                self.snapshot, self.state, self.repository
            ),
            format!("rolled over: {}", list(&self.rolled_over)),
            format!("closed: {}", list(&self.closed)),
            format!("deleted: {}", list(&self.deleted)),
            format!("reopened: {}", list(&self.reopened)),
            format!("left out (incomplete in the snapshot): {}", list(&self.left_out)),
            format!("restored: {}", list(&self.restored)),
            format!(
                "restored {} index(es); shards total {}, successful {}, failed {}; {} in {}s",
                self.restored.len(),
                self.shards_total,
                self.shards_successful,
                self.failed_shards.len(),
                sts_backup_core::progress::human_bytes(self.bytes_total),
                self.seconds
            ),
        ]
    }

    /// Failed shards are a failed restore (exit 1).
    pub fn failure(&self) -> Option<Error> {
        (!self.failed_shards.is_empty()).then(|| {
            Error::failed(format!(
                "restore of snapshot {:?} is incomplete: {} of {} shard(s) failed: {}",
                self.snapshot,
                self.failed_shards.len(),
                self.shards_total,
                self.failed_shards.join(", ")
            ))
        })
    }
}

/// Restores a snapshot: checks → (with `--force`) least destructive overwrite → async
/// restore followed to the end. Failed shards are in the report ([`RestoreReport::failure`]).
pub async fn restore(client: &EsClient, opts: &RestoreOptions) -> Result<RestoreReport> {
    restore_with(client, opts, || async { Ok(()) }).await
}

/// [`restore`], calling `before_overwrite` once every check has passed and right before the
/// first change of an in-place `--force` restore (not for `--rename-to`, which overwrites
/// nothing): where an orchestrated run stops the writers. Its error ends the restore with
/// nothing in Elasticsearch changed.
pub async fn restore_with<F, Fut>(
    client: &EsClient,
    opts: &RestoreOptions,
    before_overwrite: F,
) -> Result<RestoreReport>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    opts.validate()?;
    let cluster = client.info().await?;
    let snapshot = resolve(client, opts).await?;
    let plan = plan::plan(client, opts, &cluster, &snapshot).await?;
    let mut report = RestoreReport {
        repository: opts.repository.clone(),
        snapshot: plan.snapshot.clone(),
        state: plan.state.clone(),
        left_out: plan.left_out.clone(),
        ..RestoreReport::default()
    };
    if plan.has_conflicts() && !opts.force {
        return Err(plan.refusal());
    }
    if opts.force && opts.rename_to.is_none() {
        before_overwrite().await?;
    }
    if plan.has_conflicts() {
        overwrite::clear(client, opts, &plan, &mut report).await?;
    }
    tracing::info!(
        "restoring {} index(es) of snapshot {:?} from repository {:?}",
        plan.indices.len(),
        plan.snapshot,
        opts.repository
    );
    if let Err(e) = client
        .start_restore(&opts.repository, &plan.snapshot, &restore_body(opts, &plan))
        .await
        .with_context(|| format!("restoring snapshot {:?}", plan.snapshot))
    {
        overwrite::undo(client, &mut report).await;
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        return Err(Error::Context {
            context: format!(
                "the restore did not start (reopened: {}; deleted: {})",
                list(&report.reopened),
                list(&report.deleted)
            ),
            source: Box::new(e),
        });
    }
    progress::follow(client, opts, &plan, &mut report).await?;
    Ok(report)
}

/// The snapshot name: the one given, or the newest `SUCCESS` one with `--latest`.
async fn resolve(client: &EsClient, opts: &RestoreOptions) -> Result<String> {
    if let Some(name) = &opts.snapshot {
        return Ok(name.clone());
    }
    let all = snapshots::snapshots(client, &opts.repository).await?;
    let newest = all.iter().rev().find(|s| s.state() == "SUCCESS").ok_or_else(|| {
        Error::invalid(format!(
            "--latest: repository {:?} holds no SUCCESS snapshot ({} snapshot(s) in all; see `list`)",
            opts.repository,
            all.len()
        ))
    })?;
    tracing::info!("--latest: snapshot {:?}", newest.snapshot);
    Ok(newest.snapshot.clone())
}

/// The `_restore` body: exactly the indices the checks passed, never the global state.
fn restore_body(opts: &RestoreOptions, plan: &Plan) -> Value {
    let mut body = json!({
        "indices": plan.request_indices().join(","),
        "include_global_state": false,
        "partial": false,
    });
    if let Some(template) = &opts.rename_to {
        body["rename_pattern"] = json!("(.+)");
        body["rename_replacement"] = json!(template.replace("{}", "$1"));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_templates() {
        assert!(rename_check("restored-{}").is_ok());
        assert!(rename_check("restored").is_err());
        assert!(rename_check("{}").is_err());
        assert!(rename_check("{}-{}").is_err());
        assert!(rename_check("Restored-{}").is_err());
        assert_eq!(renamed("r-{}", "sts_a"), "r-sts_a");
        assert_eq!(
            renamed("r-{}", ".ds-logs-2026.01.01-000001"),
            ".ds-r-logs-2026.01.01-000001"
        );
    }
}
