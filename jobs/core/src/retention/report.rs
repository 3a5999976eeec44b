//! What a pruning run did (or, with `--dry-run`, would do): reference-style text lines and a
//! summary, or the same as one JSON document.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::policy::{OrphanDecision, Policy};
use crate::progress::human_bytes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptBackup {
    pub key: String,
    pub timestamp: DateTime<Utc>,
    /// Every rule that keeps it (`newest`, `min-keep`, `within retention`, `keep-daily`, ...).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgedBackup {
    pub key: String,
    pub timestamp: DateTime<Utc>,
    /// Data object plus manifest.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanEntry {
    pub key: String,
    /// `data without manifest` or `manifest without data`.
    pub kind: &'static str,
    pub bytes: u64,
}

impl From<&OrphanDecision> for OrphanEntry {
    fn from(o: &OrphanDecision) -> Self {
        OrphanEntry {
            key: o.key.clone(),
            kind: o.kind.as_str(),
            bytes: o.size,
        }
    }
}

/// A backup that `restore` would reject (unreadable manifest, data of another run, sizes
/// that disagree). It never counts towards the floor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenEntry {
    pub key: String,
    pub reason: String,
    /// Kept because it is within `--retention`; otherwise it is purged like any expired one.
    pub kept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbortedUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteFailureEntry {
    /// The object that could not be deleted (empty for a failure that is not about one key).
    pub key: String,
    pub reason: String,
}

/// The outcome of [`super::prune`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub location: String,
    pub dry_run: bool,
    /// Whether a deleting rule was configured; without one nothing is deleted.
    pub configured: bool,
    pub policy: String,
    pub now: DateTime<Utc>,
    /// Backups that stay.
    pub kept: Vec<KeptBackup>,
    /// Backups that cannot be restored (also in `kept` or `purged`).
    pub broken: Vec<BrokenEntry>,
    /// Backups deleted (manifest and data), or that would be with `--dry-run`.
    pub purged: Vec<PurgedBackup>,
    /// Keys that are not backups; never touched.
    pub ignored: Vec<String>,
    /// Orphans deleted (or that would be).
    pub orphans: Vec<OrphanEntry>,
    /// Orphans left alone (too young, within retention, or cleanup off).
    pub orphans_kept: Vec<String>,
    pub uploads_aborted: Vec<AbortedUpload>,
    pub failures: Vec<DeleteFailureEntry>,
    /// Bytes actually freed (0 with `--dry-run`; see `purged[].bytes` for what would be).
    pub bytes_freed: u64,
    /// `DeleteObjects` requests sent (each carries up to 1000 keys).
    pub delete_requests: usize,
}

impl PruneReport {
    pub(super) fn new(location: String, policy: &Policy, now: DateTime<Utc>) -> Self {
        PruneReport {
            location,
            dry_run: policy.dry_run,
            configured: policy.is_configured(),
            policy: policy.describe(),
            now,
            kept: Vec::new(),
            broken: Vec::new(),
            purged: Vec::new(),
            ignored: Vec::new(),
            orphans: Vec::new(),
            orphans_kept: Vec::new(),
            uploads_aborted: Vec::new(),
            failures: Vec::new(),
            bytes_freed: 0,
            delete_requests: 0,
        }
    }

    /// Whether any deletion or abort failed (the binaries exit 1).
    pub fn has_failures(&self) -> bool {
        !self.failures.is_empty()
    }

    /// Bytes the purged backups and orphans hold (what a dry run would free).
    pub fn bytes_selected(&self) -> u64 {
        self.purged.iter().map(|p| p.bytes).sum::<u64>() + self.orphans.iter().map(|o| o.bytes).sum::<u64>()
    }

    /// `kept 3, purged 5, ...` in one line.
    pub fn summary_line(&self) -> String {
        let (verb, bytes) = if self.dry_run {
            ("would purge", self.bytes_selected())
        } else {
            ("purged", self.bytes_freed)
        };
        format!(
            "Summary{}: kept {}, {verb} {}, ignored {}, orphans {} {}, uploads aborted {}, {} {} ({}), failures {}, delete requests {}",
            if self.dry_run { " (dry run, nothing deleted)" } else { "" },
            self.kept.len(),
            self.purged.len(),
            self.ignored.len(),
            self.orphans.len(),
            if self.dry_run { "to delete" } else { "deleted" },
            self.uploads_aborted.len(),
            if self.dry_run { "bytes to free" } else { "bytes freed" },
            bytes,
            human_bytes(bytes),
            self.failures.len(),
            self.delete_requests,
        )
    }

    /// The reference's per-key lines (`Purging backup "<key>"` / `Not purging backup
    /// "<key>"`, in key order), then orphans, aborts, failures and the summary.
    pub fn print_text(&self, w: &mut impl Write) -> std::io::Result<()> {
        let suffix = if self.dry_run { " (dry run)" } else { "" };
        let mut lines: Vec<(&str, String)> = self
            .kept
            .iter()
            .map(|k| {
                (
                    k.key.as_str(),
                    format!("Not purging backup {:?} ({})", k.key, k.reasons.join(", ")),
                )
            })
            .chain(
                self.purged
                    .iter()
                    .map(|p| (p.key.as_str(), format!("Purging backup {:?}{suffix}", p.key))),
            )
            .collect();
        lines.sort_by(|a, b| a.0.cmp(b.0));
        for (_, line) in lines {
            writeln!(w, "{line}")?;
        }
        for b in &self.broken {
            writeln!(
                w,
                "Backup {:?} cannot be restored ({}); not counted towards the floor",
                b.key, b.reason
            )?;
        }
        for o in &self.orphans {
            writeln!(w, "Purging orphan {:?} ({}){suffix}", o.key, o.kind)?;
        }
        for u in &self.uploads_aborted {
            writeln!(
                w,
                "Aborting pending upload of {:?} (upload id {}){suffix}",
                u.key, u.upload_id
            )?;
        }
        for f in &self.failures {
            if f.key.is_empty() {
                writeln!(w, "Failed: {}", f.reason)?;
            } else {
                writeln!(w, "Failed to delete {:?}: {}", f.key, f.reason)?;
            }
        }
        if !self.configured {
            writeln!(
                w,
                "No retention configured (--retention or --keep-*): no backup was deleted"
            )?;
        }
        writeln!(w, "{}", self.summary_line())
    }

    /// The whole report as one JSON value (print it on one line).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a report always serializes");
        v["summary"] = serde_json::json!({
            "kept": self.kept.len(),
            "broken": self.broken.len(),
            "purged": self.purged.len(),
            "ignored": self.ignored.len(),
            "orphans": self.orphans.len(),
            "uploads_aborted": self.uploads_aborted.len(),
            "failures": self.failures.len(),
            "bytes_freed": self.bytes_freed,
            "bytes_selected": self.bytes_selected(),
            "delete_requests": self.delete_requests,
        });
        v
    }
}
