//! `list` and `restore` of the snapshots in the repository, run inside the one-shot pods the
//! restore scripts start.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use super::validate::IndexPattern;
use crate::error::Error;

/// One snapshot, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotRow {
    pub name: String,
    pub state: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub indices: usize,
    pub shards_total: u64,
    pub shards_successful: u64,
    pub shards_failed: u64,
    #[serde(skip)]
    pub start_millis: i64,
}

fn missing_repository(e: EsError, repo: &str) -> anyhow::Error {
    if e.kind() == "repository_missing_exception" {
        anyhow::Error::new(e).context(format!(
            "repository {repo:?} is not registered in this cluster; run `es-snapshot-register register` \
             (or the chart's backup-init job) first"
        ))
    } else {
        e.into()
    }
}

fn millis_to_iso(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn row(info: &Value) -> SnapshotRow {
    let ms = |k: &str| info.get(k).and_then(Value::as_i64);
    let text = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_string);
    let shards = |k: &str| {
        info.pointer(&format!("/shards/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    SnapshotRow {
        name: text("snapshot").unwrap_or_default(),
        state: text("state").unwrap_or_else(|| "UNKNOWN".into()),
        start_time: millis_to_iso(ms("start_time_in_millis")).or_else(|| text("start_time")),
        end_time: millis_to_iso(ms("end_time_in_millis").filter(|m| *m > 0)).or_else(|| text("end_time")),
        indices: info.get("indices").and_then(Value::as_array).map_or(0, Vec::len),
        shards_total: shards("total"),
        shards_successful: shards("successful"),
        shards_failed: shards("failed"),
        start_millis: ms("start_time_in_millis").unwrap_or(0),
    }
}

/// Every snapshot in the repository, oldest first (newest last).
pub async fn list_snapshots(client: &EsClient, repo: &str) -> anyhow::Result<Vec<SnapshotRow>> {
    let body = client
        .get(&["_snapshot", repo, "_all"], &[])
        .await
        .map_err(|e| missing_repository(e, repo))?;
    let mut rows: Vec<SnapshotRow> = body
        .get("snapshots")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(row).collect())
        .unwrap_or_default();
    rows.sort_by(|a, b| a.start_millis.cmp(&b.start_millis).then_with(|| a.name.cmp(&b.name)));
    Ok(rows)
}

/// The table `list` prints.
pub fn format_table(rows: &[SnapshotRow]) -> String {
    let header = ["NAME", "STATE", "START", "END", "INDICES", "SHARDS_OK", "SHARDS_FAILED"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.state.clone(),
                r.start_time.clone().unwrap_or_else(|| "-".into()),
                r.end_time.clone().unwrap_or_else(|| "-".into()),
                r.indices.to_string(),
                r.shards_successful.to_string(),
                r.shards_failed.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            widths[i] = widths[i].max(v.len());
        }
    }
    let line = |vals: Vec<&str>| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub repository: String,
    pub snapshot: String,
    /// The pattern to restore (never `*`).
    pub indices: String,
    pub force: bool,
    /// How often and how long to poll for deleted indices to be gone.
    pub delete_poll_interval: Duration,
    pub delete_poll_tries: u32,
}

/// What the restore reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub indices: Vec<String>,
    pub shards_total: u64,
    pub shards_successful: u64,
    pub shards_failed: u64,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Restores `SNAPSHOT`: conflict check (open indices, data streams) → refuse (exit 3) or, with
/// `force`, roll over data streams, delete and wait → `_restore?wait_for_completion=true`.
/// Any failed shard is an error (exit 1).
pub async fn restore(client: &EsClient, opts: &RestoreOptions) -> anyhow::Result<RestoreOutcome> {
    let pattern = IndexPattern::parse(&opts.indices, "--indices")?;
    if opts.snapshot.is_empty() {
        return Err(Error::invalid("SNAPSHOT: the snapshot name is empty (see `list`)").into());
    }
    let repo = opts.repository.as_str();
    let info = client
        .get_opt(&["_snapshot", repo, &opts.snapshot], &[])
        .await
        .map_err(|e| missing_repository(e, repo))?;
    let Some(info) = info.as_ref().and_then(|v| v.pointer("/snapshots/0")).cloned() else {
        return Err(Error::invalid(format!(
            "SNAPSHOT: no snapshot {:?} in repository {repo:?} (see `list`)",
            opts.snapshot
        ))
        .into());
    };
    let state = info.get("state").and_then(Value::as_str).unwrap_or("UNKNOWN");
    if state == "IN_PROGRESS" {
        return Err(Error::invalid(format!("SNAPSHOT: {:?} is still in progress", opts.snapshot)).into());
    }
    let snap_indices = strings(info.get("indices"));
    let snap_streams: Vec<String> = strings(info.get("data_streams"))
        .into_iter()
        .filter(|d| pattern.matches(d))
        .collect();
    // What the restore creates: matching indices plus the backing indices of matching data streams.
    let to_restore: BTreeSet<String> = snap_indices
        .iter()
        .filter(|i| pattern.matches(i) || snap_streams.iter().any(|d| i.starts_with(&format!(".ds-{d}-"))))
        .cloned()
        .collect();
    if to_restore.is_empty() {
        return Err(Error::invalid(format!(
            "--indices: {:?} matches nothing in snapshot {:?} (it holds: {})",
            pattern.as_str(),
            opts.snapshot,
            snap_indices.join(", ")
        ))
        .into());
    }

    // Open indices in the cluster that the restore would overwrite.
    let cat = client
        .get(
            &["_cat", "indices"],
            &[("format", "json"), ("h", "index,status"), ("expand_wildcards", "all")],
        )
        .await?;
    let open: BTreeSet<String> = cat
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r.get("status").and_then(Value::as_str) != Some("close"))
                .filter_map(|r| r.get("index").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let conflicts: Vec<String> = to_restore.intersection(&open).cloned().collect();
    // Data streams the restore touches: the snapshot's matching ones that exist here, and any
    // whose backing indices would be overwritten (their write index can only go after a rollover).
    let streams: Vec<String> = data_streams(client)
        .await?
        .into_iter()
        .filter(|(name, backing)| snap_streams.contains(name) || backing.iter().any(|b| conflicts.contains(b)))
        .map(|(name, _)| name)
        .collect();

    if !conflicts.is_empty() || !streams.is_empty() {
        if !opts.force {
            let mut what = Vec::new();
            if !conflicts.is_empty() {
                what.push(format!("{} open index(es): {}", conflicts.len(), conflicts.join(", ")));
            }
            if !streams.is_empty() {
                what.push(format!("data stream(s): {}", streams.join(", ")));
            }
            return Err(Error::Refused(format!(
                "restoring {:?} would overwrite {}; stop the writers, then re-run with --force to roll over the data \
                 streams, delete these indices and restore",
                opts.snapshot,
                what.join("; ")
            ))
            .into());
        }
        for ds in &streams {
            let body = client
                .post(&[ds, "_rollover"], &[], None)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("rolling over data stream {ds:?}")))?;
            let new_index = body.get("new_index").and_then(Value::as_str).unwrap_or("?");
            println!("rolled over data stream {ds:?} (new write index {new_index})");
        }
        for index in &conflicts {
            match client.delete(&[index]).await {
                Ok(_) => println!("deleted index {index:?}"),
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(anyhow::Error::new(e).context(format!("deleting index {index:?}"))),
            }
        }
        for index in &conflicts {
            let mut tries = 0;
            while client.exists(&[index]).await? {
                tries += 1;
                if tries >= opts.delete_poll_tries {
                    anyhow::bail!("index {index:?} still exists after deleting it; is a writer recreating it?");
                }
                tokio::time::sleep(opts.delete_poll_interval).await;
            }
        }
    }

    println!(
        "restoring snapshot {:?} (indices {:?}) from repository {repo:?}",
        opts.snapshot,
        pattern.as_str()
    );
    let body = json!({"indices": pattern.as_str(), "include_global_state": false});
    let resp = client
        .post(
            &["_snapshot", repo, &opts.snapshot, "_restore"],
            &[("wait_for_completion", "true")],
            Some(&body),
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("restoring snapshot {:?}", opts.snapshot)))?;
    let shards = |k: &str| {
        resp.pointer(&format!("/snapshot/shards/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let outcome = RestoreOutcome {
        indices: strings(resp.pointer("/snapshot/indices")),
        shards_total: shards("total"),
        shards_successful: shards("successful"),
        shards_failed: shards("failed"),
    };
    println!(
        "restored {} index(es); shards total {}, successful {}, failed {}",
        outcome.indices.len(),
        outcome.shards_total,
        outcome.shards_successful,
        outcome.shards_failed
    );
    if outcome.shards_failed > 0 || resp.pointer("/snapshot/shards").is_none() {
        anyhow::bail!(
            "restore of snapshot {:?} is incomplete: {} of {} shard(s) failed",
            opts.snapshot,
            outcome.shards_failed,
            outcome.shards_total
        );
    }
    Ok(outcome)
}

/// The cluster's data streams with their backing indices.
async fn data_streams(client: &EsClient) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let body = match client.get(&["_data_stream"], &[]).await {
        Ok(b) => b,
        // Clusters without data stream support (before 7.9).
        Err(e) if matches!(e.status(), Some(400 | 404)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(body
        .get("data_streams")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    let name = d.get("name").and_then(Value::as_str)?.to_string();
                    let backing = d
                        .get("indices")
                        .and_then(Value::as_array)
                        .map(|i| {
                            i.iter()
                                .filter_map(|x| x.get("index_name").and_then(Value::as_str).map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((name, backing))
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sort_and_format() {
        let a = row(
            &json!({"snapshot": "b", "state": "SUCCESS", "start_time_in_millis": 2000, "end_time_in_millis": 3000,
            "indices": ["x"], "shards": {"total": 1, "successful": 1, "failed": 0}}),
        );
        assert_eq!(a.start_time.as_deref(), Some("1970-01-01T00:00:02Z"));
        let table = format_table(&[a]);
        assert!(table.starts_with("NAME"));
        assert!(table.contains("SUCCESS"));
    }
}
