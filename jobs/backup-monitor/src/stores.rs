//! What a store's bucket says: its committed, broken and legacy backups, judged the way
//! `stackgraph-backup list` judges them (the catalogue), never from a job's own report.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sts_backup_core::catalogue;
use sts_backup_core::naming::MANIFEST_SUFFIX;
use sts_backup_core::storage::Storage;

/// The newest restorable backup of a store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Newest {
    pub name: String,
    pub created: DateTime<Utc>,
    pub size: u64,
}

/// One look at a store's bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Catalogue {
    /// Backups with data and a readable manifest that agrees with it.
    pub committed: usize,
    /// Manifests that cannot vouch for their data (unreadable, size mismatch, data missing).
    pub broken: usize,
    /// Data objects with no manifest that are not leftovers of our own runs: backups
    /// written by the tool this one replaces (StackState's `sts-backup-*.graph`).
    pub legacy: usize,
    /// Bytes held by committed backups.
    pub committed_bytes: u64,
    pub newest: Option<Newest>,
}

/// Reads the bucket. An error means the store could not be read at all (unreachable,
/// credentials refused, bucket missing).
pub async fn observe(storage: &Storage) -> Result<Catalogue, sts_backup_core::Error> {
    let committed = catalogue::list(storage).await?;
    let objects = storage.list().await?;
    let manifests: std::collections::HashSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_suffix(MANIFEST_SUFFIX))
        .collect();
    let committed_names: std::collections::HashSet<&str> = committed.iter().map(|m| m.name.as_str()).collect();
    let broken = manifests.iter().filter(|n| !committed_names.contains(*n)).count();
    let legacy = objects
        .iter()
        .filter(|o| !o.key.ends_with(MANIFEST_SUFFIX) && !manifests.contains(o.key.as_str()))
        .filter(|o| is_legacy_name(&o.key))
        .count();
    Ok(Catalogue {
        committed: committed.len(),
        broken,
        legacy,
        committed_bytes: committed.iter().map(|m| m.size).sum(),
        newest: committed.last().map(|m| Newest {
            name: m.name.clone(),
            created: m.created,
            size: m.size,
        }),
    })
}

/// StackState's own backup names: `sts-backup-YYYYMMDD-HHMM.graph` (StackGraph) and
/// `sts-backup-YYYYMMDD-HHMM.stj` (configuration).
fn is_legacy_name(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("sts-backup-") else {
        return false;
    };
    let stamp = rest.strip_suffix(".graph").or_else(|| rest.strip_suffix(".stj"));
    stamp.is_some_and(|s| {
        s.len() == 13 && s.as_bytes()[8] == b'-' && s.chars().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn legacy_names() {
        assert!(super::is_legacy_name("sts-backup-20240101-0300.graph"));
        assert!(super::is_legacy_name("sts-backup-20240101-0400.stj"));
        assert!(!super::is_legacy_name("sts-backup-20240101-0300.graph.part"));
        assert!(!super::is_legacy_name("sts-backup-2024011-0300.graph"));
        assert!(!super::is_legacy_name(".sts-claim-sts-backup-20240101-0300.graph"));
    }
}
