//! The snapshot catalogue: what `list` shows, run inside the one-shot pods the restore
//! scripts start.

use sts_backup_core::progress::human_bytes;

use crate::client::{version_parts, ApiError, EsClient, SnapshotInfo};
use crate::error::{Error, Result};
use crate::validate::validate_name;

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
    /// Sum of the indices' sizes in the snapshot (`index_details`).
    pub size_bytes: u64,
    /// Whether `restore` accepts it (SUCCESS, written by a version this cluster reads).
    pub restorable: bool,
    /// `yes`, or why not / on which condition.
    pub restorable_note: String,
    #[serde(skip)]
    pub start_millis: i64,
}

/// A missing repository, explained (the one thing an operator can fix here).
pub(crate) fn missing_repository(e: ApiError, repo: &str) -> Error {
    if e.kind() == "repository_missing_exception" {
        Error::Context {
            context: format!(
                "repository {repo:?} is not registered in this cluster; run `es-snapshot-register register` \
                 (or the chart's backup-init job) first"
            ),
            source: Box::new(Error::Api(e)),
        }
    } else {
        Error::Api(e)
    }
}

fn millis_to_iso(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Whether a snapshot can be restored into a cluster of `cluster_version`, and the note
/// `list` shows. The same rules as `restore`'s checks.
pub fn restorability(info: &SnapshotInfo, cluster_version: &str) -> (bool, String) {
    if version_problem(info, cluster_version).is_some() {
        return (
            false,
            format!("no (written by {})", info.version.as_deref().unwrap_or("?")),
        );
    }
    match info.state() {
        "SUCCESS" => (true, "yes".into()),
        "PARTIAL" => (false, "partial (--allow-partial)".into()),
        "IN_PROGRESS" => (false, "no (in progress)".into()),
        other => (false, format!("no ({other})")),
    }
}

/// Why a cluster of `cluster_version` cannot restore the snapshot, if it cannot: a cluster
/// restores snapshots of its own major version and the one before, never from a newer one.
pub fn version_problem(info: &SnapshotInfo, cluster_version: &str) -> Option<&'static str> {
    let snap = version_parts(info.version.as_deref()?);
    let here = version_parts(cluster_version);
    if snap > here {
        Some("it is newer")
    } else if snap.0 + 1 < here.0 {
        Some("more than one major version older")
    } else {
        None
    }
}

impl SnapshotRow {
    fn from_info(info: &SnapshotInfo, cluster_version: &str) -> SnapshotRow {
        let (restorable, restorable_note) = restorability(info, cluster_version);
        SnapshotRow {
            size_bytes: info.index_details.values().map(|d| d.size_in_bytes).sum(),
            restorable,
            restorable_note,
            name: info.snapshot.clone(),
            state: info.state().to_string(),
            start_time: millis_to_iso(info.start_time_in_millis).or_else(|| info.start_time.clone()),
            end_time: millis_to_iso(info.end_time_in_millis.filter(|m| *m > 0)).or_else(|| info.end_time.clone()),
            indices: info.indices.len(),
            shards_total: info.shards.total,
            shards_successful: info.shards.successful,
            shards_failed: info.shards.failed,
            start_millis: info.start_time_in_millis.unwrap_or(0),
        }
    }
}

/// Every snapshot in the repository, oldest first (newest last).
pub async fn snapshots(client: &EsClient, repo: &str) -> Result<Vec<SnapshotInfo>> {
    let mut infos = client
        .get_snapshots(repo)
        .await
        .map_err(|e| missing_repository(e, repo))?;
    infos.sort_by(|a, b| {
        a.start_time_in_millis
            .cmp(&b.start_time_in_millis)
            .then_with(|| a.snapshot.cmp(&b.snapshot))
    });
    Ok(infos)
}

/// The rows `list` shows, oldest first, judged against the cluster's version.
pub async fn list_snapshots(client: &EsClient, repo: &str) -> Result<Vec<SnapshotRow>> {
    validate_name("--repository", repo)?;
    let cluster = client.info().await?;
    Ok(snapshots(client, repo)
        .await?
        .iter()
        .map(|i| SnapshotRow::from_info(i, &cluster.version))
        .collect())
}

/// The table `list` prints.
pub fn format_table(rows: &[SnapshotRow]) -> String {
    let header = [
        "NAME",
        "STATE",
        "START",
        "END",
        "INDICES",
        "SHARDS_OK",
        "SHARDS_FAILED",
        "SIZE",
        "RESTORABLE",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.clone(),
                r.start_time.clone().unwrap_or_else(|| "-".into()),
                r.end_time.clone().unwrap_or_else(|| "-".into()),
                r.indices.to_string(),
                r.shards_successful.to_string(),
                r.shards_failed.to_string(),
                human_bytes(r.size_bytes),
                r.restorable_note.clone(),
            ]
        })
        .collect();
    table(&header, &cells)
}

/// Left-aligned columns two spaces apart, header first.
fn table(header: &[&str], cells: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in cells {
        for (i, v) in c.iter().enumerate() {
            widths[i] = widths[i].max(v.len());
        }
    }
    let line = |vals: &mut dyn Iterator<Item = &str>| {
        vals.enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    for c in cells {
        out.push_str(&line(&mut c.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_format() {
        let info: SnapshotInfo = serde_json::from_value(serde_json::json!({"snapshot": "b", "state": "SUCCESS",
            "start_time_in_millis": 2000, "end_time_in_millis": 3000, "indices": ["x"],
            "shards": {"total": 1, "successful": 1, "failed": 0}}))
        .unwrap();
        let a = SnapshotRow::from_info(&info, "8.13.4");
        assert!(a.restorable);
        assert_eq!(a.start_time.as_deref(), Some("1970-01-01T00:00:02Z"));
        let table = format_table(&[a]);
        assert!(table.starts_with("NAME"));
        assert!(table.contains("SUCCESS"));
        let partial = SnapshotInfo {
            state: Some("PARTIAL".into()),
            ..info.clone()
        };
        assert_eq!(
            restorability(&partial, "8.13.4"),
            (false, "partial (--allow-partial)".into())
        );
        let newer = SnapshotInfo {
            version: Some("9.0.0".into()),
            ..info
        };
        assert_eq!(restorability(&newer, "8.13.4"), (false, "no (written by 9.0.0)".into()));
    }
}
