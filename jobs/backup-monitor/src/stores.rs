//! What a store's bucket says: its committed, broken and legacy backups, judged the way
//! `stackgraph-backup list` judges them (the catalogue), never from a job's own report.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sts_backup_core::catalogue::{self, Backup};
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
    let found = catalogue::list(storage).await?;
    let mut out = Catalogue {
        broken: found.broken.len(),
        ..Catalogue::default()
    };
    for backup in &found.backups {
        match backup {
            Backup::Committed(m) => {
                out.committed += 1;
                out.committed_bytes += m.size;
                // Oldest first: the last committed one is the newest.
                out.newest = Some(Newest {
                    name: m.name.clone(),
                    created: m.created,
                    size: m.size,
                });
            }
            Backup::Legacy(_) => out.legacy += 1,
        }
    }
    Ok(out)
}
