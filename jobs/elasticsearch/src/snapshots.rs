//! The snapshot catalogue: what `list` shows, run inside the one-shot pods the restore
//! scripts start.

use crate::client::{ApiError, EsClient, SnapshotInfo};
use crate::error::{Error, Result};

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

impl SnapshotRow {
    fn from_info(info: &SnapshotInfo) -> SnapshotRow {
        SnapshotRow {
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

/// The rows `list` shows, oldest first.
pub async fn list_snapshots(client: &EsClient, repo: &str) -> Result<Vec<SnapshotRow>> {
    Ok(snapshots(client, repo)
        .await?
        .iter()
        .map(SnapshotRow::from_info)
        .collect())
}

/// The table `list` prints.
pub fn format_table(rows: &[SnapshotRow]) -> String {
    let header = ["NAME", "STATE", "START", "END", "INDICES", "SHARDS_OK", "SHARDS_FAILED"];
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
        let a = SnapshotRow::from_info(&info);
        assert_eq!(a.start_time.as_deref(), Some("1970-01-01T00:00:02Z"));
        let table = format_table(&[a]);
        assert!(table.starts_with("NAME"));
        assert!(table.contains("SUCCESS"));
    }
}
