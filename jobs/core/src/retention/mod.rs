//! Retention: which backups to keep, and the pruning run.
//!
//! A backup `NAME` is committed when both `NAME` and `NAME.manifest.json` exist. The run:
//! list every key under the prefix (all pages), decide with [`policy::plan`], delete the
//! manifests of purged backups in `DeleteObjects` batches of up to 1000 keys, then the data
//! objects whose manifest is gone (never one whose manifest delete failed), delete old
//! orphans, and abort stale multipart uploads. A half-deleted backup is thus invisible
//! (no manifest) and its data is cleaned up as an orphan by the next run; a manifest never
//! points at missing data. Per-key failures are collected and the run goes on.
//!
//! `retention-pruner` is a thin wrapper around [`prune`]; `stackgraph-backup backup` calls
//! it after a successful upload when [`Policy::is_configured`].

pub mod keep;
pub mod policy;
mod report;
pub mod timedelta;

use chrono::{DateTime, Utc};

pub use keep::KeepArgs;
pub use policy::{
    plan, plan_checked, BackupDecision, Health, KeepCount, KeepReason, OrphanDecision, OrphanKind, Plan, Policy,
};
pub use report::{AbortedUpload, BrokenEntry, DeleteFailureEntry, KeptBackup, OrphanEntry, PruneReport, PurgedBackup};
pub use timedelta::Retention;

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use crate::catalogue::{check_committed, find_legacy};
use crate::error::{Error, Result};
use crate::naming::{manifest_key, MANIFEST_SUFFIX};
use crate::storage::{ObjectMeta, Storage, DELETE_BATCH};

/// The reference's default pattern; group 1 is the timestamp.
pub const DEFAULT_NAME_REGEXP: &str = "sts-backup-([0-9]*-[0-9]*).graph";
/// The reference's default `strptime` format for group 1.
pub const DEFAULT_DATETIME_FORMAT: &str = "%Y%m%d-%H%M";
/// Default of `--abort-uploads-older-than`.
pub const DEFAULT_ABORT_UPLOADS_OLDER_THAN: &str = "24h";
/// Default of `--min-keep`: the newest backup is always kept.
pub const DEFAULT_MIN_KEEP: usize = 1;

/// The retention flags, each with its env twin (shared by `retention-pruner` and
/// `stackgraph-backup backup`).
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Regular expression matched at the start of each key (like Python re.match); capture
    /// group 1 is the backup's timestamp. Keys that do not match are never touched.
    #[arg(
        long,
        env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_PARSE_REGEXP",
        default_value = DEFAULT_NAME_REGEXP,
        value_name = "REGEX"
    )]
    pub name_regexp: String,

    /// strftime format of capture group 1, read as UTC.
    #[arg(
        long,
        env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_DATETIME_PARSE_FORMAT",
        default_value = DEFAULT_DATETIME_FORMAT,
        value_name = "FORMAT"
    )]
    pub datetime_format: String,

    /// Keep backups whose age is at most DELTA: Python timedelta keywords ("days = 30",
    /// "weeks=2, hours=12", "days=1.5"; parsed, never evaluated) or 30d, 720h, 2w.
    /// Unset or empty: no age rule.
    #[arg(
        long,
        env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA",
        value_name = "DELTA"
    )]
    pub retention: Option<String>,

    /// Never delete below this many committed backups (the newest is always kept).
    #[arg(
        long,
        env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP",
        default_value_t = DEFAULT_MIN_KEEP,
        value_name = "N",
        value_parser = parse_min_keep
    )]
    pub min_keep: usize,

    #[command(flatten)]
    pub keep: KeepArgs,

    /// Abort multipart uploads older than this, and delete orphaned backup objects (data
    /// without manifest) last modified longer ago than this. 0 or off disables both.
    #[arg(
        long,
        env = "BACKUP_ABORT_UPLOADS_OLDER_THAN",
        default_value = DEFAULT_ABORT_UPLOADS_OLDER_THAN,
        value_name = "DURATION"
    )]
    pub abort_uploads_older_than: String,

    /// Print what would be deleted; delete nothing. From env, false/no/off/0/empty mean
    /// off and any other value means on (a typo errs on the safe side).
    #[arg(long, env = "BACKUP_PRUNE_DRY_RUN", value_parser = clap::builder::FalseyValueParser::new())]
    pub dry_run: bool,
}

/// `--min-keep`: a count; empty (an unset chart value) means the default, 1.
fn parse_min_keep(s: &str) -> std::result::Result<usize, String> {
    match s.trim() {
        "" => Ok(DEFAULT_MIN_KEEP),
        t => t.parse().map_err(|_| format!("{t:?} is not a count (a number >= 1)")),
    }
}

impl Default for RetentionArgs {
    fn default() -> Self {
        RetentionArgs {
            name_regexp: DEFAULT_NAME_REGEXP.into(),
            datetime_format: DEFAULT_DATETIME_FORMAT.into(),
            retention: None,
            min_keep: DEFAULT_MIN_KEEP,
            keep: KeepArgs::default(),
            abort_uploads_older_than: DEFAULT_ABORT_UPLOADS_OLDER_THAN.into(),
            dry_run: false,
        }
    }
}

impl RetentionArgs {
    /// Validates the flags (errors name the flag; exit 2). Call it before any work so a bad
    /// value fails fast.
    pub fn policy(&self) -> Result<Policy> {
        Policy::new(self)
    }
}

/// Runs the pruner: validates `args`, lists, decides, deletes (unless `--dry-run`), aborts
/// stale uploads. Per-key lines are logged as they are decided; failures of single keys
/// land in the report ([`PruneReport::has_failures`]) instead of stopping the run. An
/// error is returned only when nothing could be decided (bad flags, listing failed).
pub async fn prune(storage: &Storage, args: &RetentionArgs, now: DateTime<Utc>) -> Result<PruneReport> {
    let policy = args.policy()?;
    prune_with(storage, &policy, now).await
}

/// [`prune`] with an already validated policy.
pub async fn prune_with(storage: &Storage, policy: &Policy, now: DateTime<Utc>) -> Result<PruneReport> {
    let location = storage.location();
    tracing::info!("=== Expiring old backups in {location} ({})", policy.describe());
    let objects = storage.list().await?;
    let health = read_health(storage, &objects, policy).await?;
    let plan = plan_checked(&objects, &health, policy, now);
    refuse_if_nothing_matches(&objects, &plan, policy)?;
    log_plan(&plan, policy);
    let mut report = PruneReport::new(location, policy, now);
    record_plan(&plan, &mut report);

    let purge = keep_locked(storage, plan.purged().collect(), now, &mut report).await;
    let orphans: Vec<_> = plan.orphans.iter().filter(|o| o.delete).collect();
    if policy.dry_run {
        report.purged.extend(purge.iter().map(|b| purged_entry(b)));
        report.orphans.extend(orphans.iter().map(|o| OrphanEntry::from(*o)));
    } else {
        delete_planned(storage, &purge, &orphans, &mut report).await;
    }
    abort_stale_uploads(storage, policy, now, &mut report).await;

    for f in &report.failures {
        tracing::warn!("Failed to delete {:?}: {}", f.key, f.reason);
    }
    tracing::info!("{}", report.summary_line());
    Ok(report)
}

/// A retention flag's value as an Object Lock period (how long what a run writes stays
/// locked): None when unset or empty; a value that does not parse, or is not positive, is
/// invalid input naming `flag`.
pub fn lock_period(text: Option<&str>, flag: &str) -> Result<Option<std::time::Duration>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let retention = Retention::parse(text).map_err(|e| Error::invalid(format!("{flag}: {e}")))?;
    let period = retention
        .as_timedelta()
        .to_std()
        .map_err(|_| Error::invalid(format!("{flag}: {text:?} is not a positive duration")))?;
    Ok(Some(period))
}

/// Object HEADs a pruning run keeps in flight: a run over thousands of backups is bound by
/// round trips, not bandwidth, and 16 stays far below any server's request limits.
const HEADS_IN_FLIGHT: usize = 16;

/// Takes the backups that S3 Object Lock still retains out of `purge` and reports them kept
/// ("locked until ..."): deleting one would fail half-way (or, in a versioned bucket, only
/// hide it behind a delete marker). One HEAD per object of each candidate (data and
/// manifest), `HEADS_IN_FLIGHT` at a time, only when the bucket has Object Lock; a HEAD that
/// fails keeps the backup and is reported as a failure.
async fn keep_locked<'a>(
    storage: &Storage,
    purge: Vec<&'a BackupDecision>,
    now: DateTime<Utc>,
    report: &mut PruneReport,
) -> Vec<&'a BackupDecision> {
    if purge.is_empty() || !storage.lock_enabled().await {
        return purge;
    }
    let heads: Vec<(&BackupDecision, Result<Option<DateTime<Utc>>>)> = futures::stream::iter(purge)
        .map(|b| async move { (b, lock_of(storage, b).await) })
        .buffered(HEADS_IN_FLIGHT)
        .collect()
        .await;
    let mut free = Vec::new();
    for (b, until) in heads {
        match until {
            Ok(Some(t)) if t > now => {
                let reason = format!("locked until {} (S3 Object Lock)", t.to_rfc3339());
                tracing::info!("Not purging backup {:?}: {reason}", b.key);
                report.kept.push(KeptBackup {
                    key: b.key.clone(),
                    timestamp: b.timestamp,
                    reasons: vec![reason],
                });
            }
            Ok(_) => free.push(b),
            Err(e) => report.failures.push(DeleteFailureEntry {
                key: b.key.clone(),
                reason: format!("could not read its Object Lock ({e}); kept"),
            }),
        }
    }
    free
}

/// The later retain-until date of a backup's data and manifest (None: neither is locked).
async fn lock_of(storage: &Storage, b: &BackupDecision) -> Result<Option<DateTime<Utc>>> {
    let (data, manifest) = futures::join!(storage.locked_until(&b.key), async {
        match &b.manifest_key {
            Some(key) => storage.locked_until(key).await,
            None => Ok(None),
        }
    });
    Ok(data?.max(manifest?))
}

/// Finds out what the floor needs: legacy StackState backups among the manifest-less
/// objects (one HEAD each, they are few) and, newest first, whether manifests are
/// restorable until `--min-keep` restorable backups are found. So the floor never counts a
/// broken backup, and a run over 10,000 backups reads a handful of manifests, not all.
async fn read_health(storage: &Storage, objects: &[ObjectMeta], policy: &Policy) -> Result<Health> {
    let keys: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut candidates: Vec<(&ObjectMeta, DateTime<Utc>)> = objects
        .iter()
        .filter_map(|o| policy.backup_timestamp(&o.key).map(|t| (o, t)))
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.key.cmp(&a.0.key)));
    let has_manifest = |o: &ObjectMeta| keys.contains(manifest_key(&o.key).as_str());

    let mut health = Health::default();
    let manifestless: Vec<_> = candidates.iter().filter(|(o, _)| !has_manifest(o)).copied().collect();
    health.legacy = find_legacy(storage, &manifestless)
        .await?
        .into_iter()
        .map(|l| l.name)
        .collect();

    let mut restorable = 0;
    for chunk in candidates.chunks(policy.min_keep.max(1)) {
        if restorable >= policy.min_keep {
            break;
        }
        let checked: Vec<_> = futures::stream::iter(chunk.iter().filter(|(o, _)| has_manifest(o)))
            .map(|(o, _)| async move { (o.key.clone(), check_committed(storage, o).await) })
            .buffered(HEADS_IN_FLIGHT)
            .collect()
            .await;
        restorable += chunk.iter().filter(|(o, _)| health.legacy.contains(&o.key)).count();
        for (key, checked) in checked {
            match checked {
                Ok(_) => restorable += 1,
                Err(reason) => {
                    tracing::warn!("backup {key:?} cannot be restored ({reason}); it does not count towards the floor");
                    health.broken.insert(key, reason);
                }
            }
        }
    }
    Ok(health)
}

/// Exit 2 when backups exist but the policy recognizes none of them: retention would
/// silently be off (a `--name-template` with seconds and a `--datetime-format` without).
fn refuse_if_nothing_matches(objects: &[ObjectMeta], plan: &Plan, policy: &Policy) -> Result<()> {
    if !plan.backups.is_empty() || !plan.orphans.is_empty() {
        return Ok(());
    }
    let keys: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let ours: Vec<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_suffix(MANIFEST_SUFFIX))
        .filter(|name| keys.contains(name))
        .collect();
    match ours.first() {
        None => Ok(()),
        Some(example) => Err(Error::invalid(format!(
            "--name-regexp/--datetime-format: none of the {} backups matches (e.g. {example:?} with {:?} and {:?}), \
             so retention would never delete any; make --datetime-format match the names (with seconds: %Y%m%d-%H%M%S)",
            ours.len(),
            policy.name_regexp,
            policy.datetime_format
        ))),
    }
}

fn log_plan(plan: &Plan, policy: &Policy) {
    for b in &plan.backups {
        if b.keep() {
            let reasons: Vec<_> = b.reasons.iter().map(KeepReason::as_str).collect();
            tracing::info!("Not purging backup {:?} ({})", b.key, reasons.join(", "));
        } else {
            tracing::info!(
                "Purging backup {:?}{}",
                b.key,
                if policy.dry_run { " (dry run)" } else { "" }
            );
        }
    }
    for o in &plan.orphans {
        let verb = if o.delete { "Purging" } else { "Not purging" };
        tracing::info!("{verb} orphan {:?}: {} ({})", o.key, o.kind.as_str(), o.why);
    }
    if !policy.is_configured() {
        tracing::info!("No retention configured (--retention or --keep-*): no backup is deleted");
    }
}

/// What stays: kept backups, broken ones, orphans left alone, ignored keys.
fn record_plan(plan: &Plan, report: &mut PruneReport) {
    report.ignored = plan.ignored.clone();
    report.kept = plan
        .kept()
        .map(|b| KeptBackup {
            key: b.key.clone(),
            timestamp: b.timestamp,
            reasons: b.reasons.iter().map(|r| r.as_str().to_string()).collect(),
        })
        .collect();
    report.broken = plan
        .backups
        .iter()
        .filter_map(|b| {
            b.broken.as_ref().map(|reason| BrokenEntry {
                key: b.key.clone(),
                reason: reason.clone(),
                kept: b.keep(),
            })
        })
        .collect();
    report.orphans_kept = plan
        .orphans
        .iter()
        .filter(|o| !o.delete)
        .map(|o| o.key.clone())
        .collect();
}

fn purged_entry(b: &BackupDecision) -> PurgedBackup {
    PurgedBackup {
        key: b.key.clone(),
        timestamp: b.timestamp,
        bytes: b.size + b.manifest_size,
    }
}

/// Deletes manifests first (purged backups' and dangling ones: after this a purged backup
/// is invisible whatever happens next), then data only where the manifest is gone (legacy
/// backups have none), plus orphaned data; records every outcome.
async fn delete_planned(
    storage: &Storage,
    purge: &[&BackupDecision],
    orphans: &[&OrphanDecision],
    report: &mut PruneReport,
) {
    let manifest_keys: Vec<String> = purge
        .iter()
        .filter_map(|b| b.manifest_key.clone())
        .chain(
            orphans
                .iter()
                .filter(|o| o.kind == OrphanKind::Manifest)
                .map(|o| o.key.clone()),
        )
        .collect();
    let manifest_failures = delete_batched(storage, &manifest_keys, report).await;
    let manifest_failed = |b: &BackupDecision| b.manifest_key.as_ref().and_then(|k| manifest_failures.get(k));

    let mut data_keys = Vec::new();
    for b in purge {
        match manifest_failed(b) {
            Some(reason) => report.failures.push(DeleteFailureEntry {
                key: b.manifest_key.clone().unwrap_or_default(),
                reason: format!("{reason}; backup {:?} is left complete and untouched", b.key),
            }),
            None => data_keys.push(b.key.clone()),
        }
    }
    data_keys.extend(
        orphans
            .iter()
            .filter(|o| matches!(o.kind, OrphanKind::Data | OrphanKind::Claim))
            .map(|o| o.key.clone()),
    );
    let data_failures = delete_batched(storage, &data_keys, report).await;

    for b in purge.iter().filter(|b| manifest_failed(b).is_none()) {
        report.bytes_freed += b.manifest_size;
        match data_failures.get(&b.key) {
            Some(reason) => report.failures.push(DeleteFailureEntry {
                key: b.key.clone(),
                reason: format!(
                    "{reason}; its manifest is deleted, so the backup is no longer listed and the next run removes the data"
                ),
            }),
            None => {
                report.bytes_freed += b.size;
                report.purged.push(purged_entry(b));
            }
        }
    }
    record_orphans(orphans, &manifest_failures, &data_failures, report);
}

/// Records the outcome of each orphan's delete.
fn record_orphans(
    orphans: &[&OrphanDecision],
    manifest_failures: &HashMap<String, String>,
    data_failures: &HashMap<String, String>,
    report: &mut PruneReport,
) {
    for o in orphans {
        let failed = match o.kind {
            OrphanKind::Manifest => manifest_failures.get(&o.key),
            OrphanKind::Data | OrphanKind::Claim => data_failures.get(&o.key),
        };
        match failed {
            Some(reason) => report.failures.push(DeleteFailureEntry {
                key: o.key.clone(),
                reason: reason.clone(),
            }),
            None => {
                report.bytes_freed += o.size;
                report.orphans.push(OrphanEntry::from(*o));
            }
        }
    }
}

/// Deletes keys through [`Storage::delete_many`] and returns the failed keys with why.
async fn delete_batched(storage: &Storage, keys: &[String], report: &mut PruneReport) -> HashMap<String, String> {
    report.delete_requests += keys.len().div_ceil(DELETE_BATCH);
    storage
        .delete_many(keys)
        .await
        .into_iter()
        .map(|f| (f.key, f.reason))
        .collect()
}

async fn abort_stale_uploads(storage: &Storage, policy: &Policy, now: DateTime<Utc>, report: &mut PruneReport) {
    let Some(min_age) = policy.abort_after else { return };
    let uploads = match storage.pending_uploads().await {
        Ok(u) => u,
        // Some S3-compatible servers answer NoSuchUpload when nothing is pending.
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            report.failures.push(DeleteFailureEntry {
                key: String::new(),
                reason: format!("could not list pending uploads: {e}"),
            });
            return;
        }
    };
    for upload in uploads {
        let Some(upload_age) = policy::upload_age(now, upload.initiated) else {
            tracing::debug!("pending upload of {:?} has no start time; left alone", upload.key);
            continue;
        };
        if upload_age <= min_age {
            continue;
        }
        let entry = AbortedUpload {
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
            initiated: upload.initiated.map(DateTime::<Utc>::from),
        };
        if policy.dry_run {
            tracing::info!("Would abort the pending upload of {:?} (dry run)", upload.key);
            report.uploads_aborted.push(entry);
            continue;
        }
        match storage.abort_pending(&upload).await {
            Ok(()) => {
                tracing::info!("Aborted the pending upload of {:?}", upload.key);
                report.uploads_aborted.push(entry);
            }
            Err(e) => report.failures.push(DeleteFailureEntry {
                key: upload.key.clone(),
                reason: format!("could not abort pending upload {}: {e}", upload.upload_id),
            }),
        }
    }
}
