//! Every check before the first destructive call, and the plan they produce: which indices
//! and data streams are restored, under which names, and what must be closed, deleted or
//! rolled over first.

use std::collections::{BTreeMap, BTreeSet};

use super::{renamed, RestoreOptions};
use crate::client::{ClusterInfo, EsClient, IndexRow, SnapshotInfo};
use crate::error::{Error, Result};
use crate::snapshots::{missing_repository, version_problem};
use crate::validate::{glob, IndexPattern};

/// What the checks decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub snapshot: String,
    pub state: String,
    /// Regular indices restored, by their name in the snapshot.
    pub indices: Vec<String>,
    /// Data streams restored (with all their backing indices), by their name in the snapshot.
    pub data_streams: Vec<String>,
    /// Indices left out of a PARTIAL snapshot (some shards failed in it).
    pub left_out: Vec<String>,
    /// Index name in the cluster → primary shards expected.
    pub targets: BTreeMap<String, u64>,
    /// Open indices to close before the restore (Elasticsearch restores over a closed index
    /// with the same number of shards and reopens it).
    pub close: Vec<String>,
    /// Indices already closed that the restore overwrites.
    pub overwrite_closed: Vec<String>,
    /// Indices to delete: backing indices of data streams, or a shard count that differs.
    pub delete: Vec<String>,
    /// Data streams to roll over first, so no conflicting backing index is a write index.
    pub rollover: Vec<String>,
}

impl Plan {
    pub fn has_conflicts(&self) -> bool {
        !(self.close.is_empty()
            && self.overwrite_closed.is_empty()
            && self.delete.is_empty()
            && self.rollover.is_empty())
    }

    /// The `indices` of the restore request: the data streams and the regular indices.
    pub fn request_indices(&self) -> Vec<String> {
        self.data_streams.iter().chain(&self.indices).cloned().collect()
    }

    /// The exit-3 refusal naming everything `--force` would touch.
    pub fn refusal(&self) -> Error {
        let mut what = Vec::new();
        let mut add = |label: &str, v: &[String]| {
            if !v.is_empty() {
                what.push(format!("{label} {}: {}", v.len(), v.join(", ")));
            }
        };
        add("close open index(es)", &self.close);
        add("overwrite closed index(es)", &self.overwrite_closed);
        add("roll over data stream(s)", &self.rollover);
        add("delete index(es)", &self.delete);
        Error::refused(format!(
            "restoring {:?} would {}; nothing was changed. Stop the writers and re-run with --force, or restore \
             beside the live indices with --rename-to restored-{{}}",
            self.snapshot,
            what.join("; ")
        ))
    }
}

/// Runs every check; changes nothing.
pub async fn plan(client: &EsClient, opts: &RestoreOptions, cluster: &ClusterInfo, name: &str) -> Result<Plan> {
    let repo = opts.repository.as_str();
    let info = client
        .get_snapshot(repo, name)
        .await
        .map_err(|e| missing_repository(e, repo))?
        .ok_or_else(|| {
            Error::invalid(format!(
                "SNAPSHOT: no snapshot {name:?} in repository {repo:?} (see `list`)"
            ))
        })?;
    check_state(&info, opts.allow_partial)?;
    check_version(&info, cluster)?;
    let mut plan = select(&info, opts)?;
    let existing: BTreeMap<String, IndexRow> = client
        .indices()
        .await?
        .into_iter()
        .map(|r| (r.index.clone(), r))
        .collect();
    if let Some(template) = &opts.rename_to {
        plan.targets = plan.targets.iter().map(|(t, n)| (renamed(template, t), *n)).collect();
        let taken: Vec<&String> = plan.targets.keys().filter(|t| existing.contains_key(*t)).collect();
        if !taken.is_empty() {
            return Err(Error::refused(format!(
                "--rename-to: {} already exist(s) in the cluster: {}; nothing was changed. Choose another template",
                taken.len(),
                taken.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    } else {
        check_templates(client, &plan).await?;
        conflicts(client, &mut plan, &existing).await?;
    }
    Ok(plan)
}

/// SUCCESS restores; PARTIAL only with `--allow-partial`; everything else is refused.
fn check_state(info: &SnapshotInfo, allow_partial: bool) -> Result<()> {
    let name = &info.snapshot;
    match info.state() {
        "SUCCESS" => Ok(()),
        "PARTIAL" if allow_partial => Ok(()),
        "PARTIAL" => Err(Error::refused(format!(
            "snapshot {name:?} is PARTIAL ({} of {} shards failed); nothing was changed. Re-run with --allow-partial to \
             restore only its complete indices, or pick a SUCCESS snapshot (--latest)",
            info.shards.failed, info.shards.total
        ))),
        "IN_PROGRESS" => Err(Error::refused(format!(
            "snapshot {name:?} is still IN_PROGRESS; nothing was changed. Wait for it to finish"
        ))),
        state => Err(Error::refused(format!(
            "snapshot {name:?} is {state}{}; it cannot be restored and nothing was changed (see `list`)",
            info.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        ))),
    }
}

/// Refuses a snapshot written by a version this cluster cannot read.
fn check_version(info: &SnapshotInfo, cluster: &ClusterInfo) -> Result<()> {
    match version_problem(info, &cluster.version) {
        None => Ok(()),
        Some(why) => Err(Error::refused(format!(
            "snapshot {:?} was written by Elasticsearch {}, which this cluster ({}) cannot restore ({why}); nothing \
             was changed",
            info.snapshot,
            info.version.as_deref().unwrap_or("?"),
            cluster.version
        ))),
    }
}

/// The indices and data streams of the snapshot that match the pattern, minus (PARTIAL)
/// the ones with failed shards.
fn select(info: &SnapshotInfo, opts: &RestoreOptions) -> Result<Plan> {
    let pattern = IndexPattern::parse(&opts.indices, "--indices")?;
    let failed: BTreeSet<&str> = info.failures.iter().map(|f| f.index.as_str()).collect();
    let backing = |d: &str, i: &str| i.starts_with(&format!(".ds-{d}-"));
    let streams: Vec<&String> = info.data_streams.iter().filter(|d| pattern.matches(d)).collect();
    let in_stream = |i: &str| info.data_streams.iter().any(|d| backing(d, i));
    let mut plan = Plan {
        snapshot: info.snapshot.clone(),
        state: info.state().to_string(),
        ..Plan::default()
    };
    let mut matched = 0;
    for d in streams {
        let members: Vec<&String> = info.indices.iter().filter(|i| backing(d, i)).collect();
        matched += 1;
        if members.iter().any(|m| failed.contains(m.as_str())) {
            plan.left_out.extend(members.into_iter().cloned());
            continue;
        }
        plan.data_streams.push(d.clone());
        for m in members {
            plan.targets.insert(m.clone(), shards_of(info, m));
        }
    }
    for i in info.indices.iter().filter(|i| pattern.matches(i) && !in_stream(i)) {
        matched += 1;
        if failed.contains(i.as_str()) {
            plan.left_out.push(i.clone());
        } else {
            plan.indices.push(i.clone());
            plan.targets.insert(i.clone(), shards_of(info, i));
        }
    }
    if matched == 0 {
        return Err(Error::invalid(format!(
            "--indices: {:?} matches nothing in snapshot {:?} (it holds: {})",
            pattern.as_str(),
            info.snapshot,
            info.indices.join(", ")
        )));
    }
    if plan.targets.is_empty() {
        return Err(Error::refused(format!(
            "snapshot {:?}: every index matching {:?} is incomplete in it ({}); nothing was changed",
            info.snapshot,
            pattern.as_str(),
            plan.left_out.join(", ")
        )));
    }
    if !plan.left_out.is_empty() {
        tracing::warn!(
            "--allow-partial: leaving out {} incomplete index(es): {}",
            plan.left_out.len(),
            plan.left_out.join(", ")
        );
    }
    Ok(plan)
}

fn shards_of(info: &SnapshotInfo, index: &str) -> u64 {
    info.index_details.get(index).map_or(1, |d| d.shard_count.max(1))
}

/// Every restored data stream needs a composable template with `data_stream` that matches
/// it, or it cannot roll over or get new backing indices after the restore.
async fn check_templates(client: &EsClient, plan: &Plan) -> Result<()> {
    if plan.data_streams.is_empty() {
        return Ok(());
    }
    let templates = client.index_templates().await?;
    let missing: Vec<&String> = plan
        .data_streams
        .iter()
        .filter(|d| {
            !templates
                .iter()
                .any(|t| t.data_stream && t.patterns.iter().any(|p| glob(p, d)))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "data stream(s) {} need an index template with data_stream enabled, and this cluster has none that \
         matches; nothing was changed. Install the platform's index templates first",
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    )))
}

/// What in the cluster the restore would overwrite, and the least destructive way past it.
async fn conflicts(client: &EsClient, plan: &mut Plan, existing: &BTreeMap<String, IndexRow>) -> Result<()> {
    let streams = client.data_streams().await?;
    let mut rollover = BTreeSet::new();
    for (target, shards) in &plan.targets {
        let Some(row) = existing.get(target) else { continue };
        let stream = streams.iter().find(|d| d.indices.contains(target));
        if let Some(d) = stream {
            rollover.insert(d.name.clone());
            plan.delete.push(target.clone());
        } else if row.primaries().is_some_and(|p| p != *shards) {
            plan.delete.push(target.clone());
        } else if row.is_open() {
            plan.close.push(target.clone());
        } else {
            plan.overwrite_closed.push(target.clone());
        }
    }
    for d in &streams {
        if plan.data_streams.contains(&d.name) {
            rollover.insert(d.name.clone());
        }
    }
    plan.rollover = rollover.into_iter().collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: &str, version: &str) -> SnapshotInfo {
        serde_json::from_value(serde_json::json!({"snapshot": "s", "state": state, "version": version,
            "indices": ["sts_a", "sts_b", ".ds-logs-1"], "data_streams": ["logs"],
            "failures": [{"index": "sts_b", "shard_id": 0, "reason": "boom"}]}))
        .unwrap()
    }

    fn cluster(version: &str) -> ClusterInfo {
        ClusterInfo {
            cluster_name: "c".into(),
            cluster_uuid: "u".into(),
            version: version.into(),
        }
    }

    #[test]
    fn states_and_versions() {
        assert!(check_state(&info("SUCCESS", "8.1.0"), false).is_ok());
        assert_eq!(
            check_state(&info("PARTIAL", "8.1.0"), false).unwrap_err().exit() as u8,
            3
        );
        assert!(check_state(&info("PARTIAL", "8.1.0"), true).is_ok());
        for s in ["FAILED", "INCOMPATIBLE", "IN_PROGRESS"] {
            assert_eq!(check_state(&info(s, "8.1.0"), true).unwrap_err().exit() as u8, 3, "{s}");
        }
        assert!(check_version(&info("SUCCESS", "7.17.1"), &cluster("8.13.4")).is_ok());
        assert!(check_version(&info("SUCCESS", "8.13.4"), &cluster("8.13.4")).is_ok());
        assert!(check_version(&info("SUCCESS", "8.14.0"), &cluster("8.13.4")).is_err());
        assert!(check_version(&info("SUCCESS", "6.8.0"), &cluster("8.13.4")).is_err());
    }
}
