//! The pure part of retention: which listed objects are backups, which are orphans, which
//! are none of our business, and which backups a policy keeps. No I/O here, so the rules
//! are tested exhaustively (table and property tests) without a server.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use regex::Regex;

use super::keep::{Gfs, KeepArgs};
use super::timedelta::Retention;
use super::RetentionArgs;
use crate::claim::is_claim;
use crate::error::{Error, Result};
use crate::naming::MANIFEST_SUFFIX;
use crate::storage::ObjectMeta;

/// How many backups a GFS rule keeps: a number, or `unlimited` (restic's `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepCount {
    Count(u32),
    Unlimited,
}

impl std::str::FromStr for KeepCount {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        // The chart passes every value as a string; an empty one means "not set".
        if s.is_empty() {
            return Ok(KeepCount::Count(0));
        }
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(KeepCount::Unlimited);
        }
        s.parse::<u32>()
            .map(KeepCount::Count)
            .map_err(|_| format!("{s:?} is not a count (a number >= 0, or \"unlimited\")"))
    }
}

impl std::fmt::Display for KeepCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepCount::Count(n) => write!(f, "{n}"),
            KeepCount::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl KeepCount {
    /// Whether the rule keeps anything (`0` is the same as not set, as in restic).
    pub fn is_active(&self) -> bool {
        !matches!(self, KeepCount::Count(0))
    }
}

/// A validated, compiled retention policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The user's pattern, as given.
    pub name_regexp: String,
    /// The pattern anchored at the start (Python `re.match`).
    regex: Regex,
    pub datetime_format: String,
    pub retention: Option<Retention>,
    pub min_keep: usize,
    pub keep: KeepArgs,
    /// Pending uploads and orphans younger than this are left alone; `None` disables both.
    pub abort_after: Option<TimeDelta>,
    pub dry_run: bool,
}

impl Policy {
    /// Validates every flag; errors are one line naming the flag (exit 2). The one
    /// conversion from flags to policy.
    pub fn new(spec: &RetentionArgs) -> Result<Policy> {
        if spec.name_regexp.is_empty() {
            return Err(Error::invalid("--name-regexp: must not be empty"));
        }
        let regex = Regex::new(&format!("^(?:{})", spec.name_regexp)).map_err(|e| {
            let why = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
            Error::invalid(format!(
                "--name-regexp: {:?} is not a valid regular expression: {why}",
                spec.name_regexp
            ))
        })?;
        if regex.captures_len() < 2 {
            return Err(Error::invalid(format!(
                "--name-regexp: {:?} has no capture group; group 1 must capture the timestamp, as in sts-backup-([0-9]*-[0-9]*).graph",
                spec.name_regexp
            )));
        }
        if spec.datetime_format.is_empty()
            || StrftimeItems::new(&spec.datetime_format).any(|i| matches!(i, Item::Error))
        {
            return Err(Error::invalid(format!(
                "--datetime-format: {:?} is not a valid strftime format such as %Y%m%d-%H%M",
                spec.datetime_format
            )));
        }
        let retention = match spec.retention.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(Retention::parse(text)?),
        };
        if spec.min_keep < 1 {
            return Err(Error::invalid(
                "--min-keep: must be at least 1 (the newest backup is never deleted)",
            ));
        }
        let abort_after = parse_abort_after(&spec.abort_uploads_older_than)?;
        Ok(Policy {
            name_regexp: spec.name_regexp.clone(),
            regex,
            datetime_format: spec.datetime_format.clone(),
            retention,
            min_keep: spec.min_keep,
            keep: spec.keep,
            abort_after,
            dry_run: spec.dry_run,
        })
    }

    /// Whether any rule that deletes backups is configured. Without one nothing is deleted.
    pub fn is_configured(&self) -> bool {
        self.retention.is_some() || self.keep.active().next().is_some()
    }

    /// One line describing the policy, for logs and reports.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.retention {
            parts.push(format!("age <= {r}"));
        }
        for rule in self.keep.active() {
            let count = rule.count.map(|c| c.to_string()).unwrap_or_default();
            parts.push(format!("{} {count}", rule.flag.trim_start_matches("keep-")));
        }
        if parts.is_empty() {
            return "no retention configured: keep everything".into();
        }
        format!(
            "keep: {}; always the newest {} backup(s)",
            parts.join("; "),
            self.min_keep
        )
    }

    /// The timestamp of a backup key (regex at the start, group 1 parsed in UTC), or `None`
    /// when the key is not a backup. Manifests are never backups.
    pub fn backup_timestamp(&self, key: &str) -> Option<DateTime<Utc>> {
        if key.ends_with(MANIFEST_SUFFIX) {
            return None;
        }
        let capture = self.regex.captures(key)?.get(1)?.as_str();
        parse_timestamp(capture, &self.datetime_format)
    }
}

fn parse_abort_after(text: &str) -> Result<Option<TimeDelta>> {
    let text = text.trim();
    if matches!(text, "0" | "off" | "never" | "none") {
        return Ok(None);
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        Error::invalid(format!(
            "--abort-uploads-older-than: {text:?} is not a duration such as 24h or 2d ({e}); 0 or off disables it"
        ))
    })?;
    if d.is_zero() {
        return Ok(None);
    }
    TimeDelta::from_std(d)
        .map(Some)
        .map_err(|_| Error::invalid(format!("--abort-uploads-older-than: {text:?} is too long")))
}

/// `strptime` in UTC: a full date-time, a date alone (midnight), or one with an offset.
fn parse_timestamp(text: &str, format: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
        return Some(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, format) {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    DateTime::parse_from_str(text, format)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeepReason {
    /// No deleting rule is configured.
    NotConfigured,
    /// The newest committed backup: never deleted.
    Newest,
    /// Among the `--min-keep` newest.
    MinKeep,
    /// `now - timestamp <= --retention`.
    WithinRetention,
    /// A GFS rule, by its flag's name (`keep-daily`).
    Rule(&'static str),
    /// restic's rule: the oldest backup is kept when a GFS rule still has counts left.
    OldestOf(&'static str),
}

impl KeepReason {
    pub fn as_str(&self) -> std::borrow::Cow<'static, str> {
        match self {
            KeepReason::NotConfigured => "no retention configured".into(),
            KeepReason::Newest => "newest".into(),
            KeepReason::MinKeep => "min-keep".into(),
            KeepReason::WithinRetention => "within retention".into(),
            KeepReason::Rule(flag) => (*flag).into(),
            KeepReason::OldestOf(flag) => format!("oldest {flag}").into(),
        }
    }
}

/// A backup (a data object with its manifest, or a legacy StackState backup) and the
/// verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDecision {
    pub key: String,
    /// `None` for a legacy backup, which has no manifest.
    pub manifest_key: Option<String>,
    pub timestamp: DateTime<Utc>,
    /// Size of the data object.
    pub size: u64,
    pub manifest_size: u64,
    /// Why `restore` would reject it; a broken backup never counts towards the floor.
    pub broken: Option<String>,
    /// Empty means: purge.
    pub reasons: Vec<KeepReason>,
}

impl BackupDecision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }

    /// Whether `list` shows it (and `restore` accepts it).
    pub fn restorable(&self) -> bool {
        self.broken.is_none()
    }
}

/// What the catalogue found out about backup-looking keys by reading them
/// ([`crate::catalogue::survey`]); [`plan`] without it trusts every manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Data keys whose manifest is unreadable or does not match the data, and why.
    pub broken: HashMap<String, String>,
    /// Data keys without manifest that are legacy StackState backups, not our leftovers.
    pub legacy: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanKind {
    /// A data object without manifest: a crashed backup, or a purge whose data delete failed.
    Data,
    /// A manifest without its data object.
    Manifest,
    /// The claim of a backup run on storage without conditional writes ([`crate::claim`]),
    /// left by a run that was killed.
    Claim,
}

impl OrphanKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrphanKind::Data => "data without manifest",
            OrphanKind::Manifest => "manifest without data",
            OrphanKind::Claim => "claim of an interrupted backup run",
        }
    }
}

/// An object that belongs to an uncommitted or half-deleted backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanDecision {
    pub key: String,
    pub kind: OrphanKind,
    pub timestamp: DateTime<Utc>,
    pub size: u64,
    pub delete: bool,
    /// Why it is kept or deleted.
    pub why: &'static str,
}

/// What a pruning run will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Committed backups, newest first.
    pub backups: Vec<BackupDecision>,
    pub orphans: Vec<OrphanDecision>,
    /// Keys that are not backups (no match, unparsable timestamp, foreign manifests).
    pub ignored: Vec<String>,
}

impl Plan {
    pub fn purged(&self) -> impl Iterator<Item = &BackupDecision> {
        self.backups.iter().filter(|b| !b.keep())
    }

    pub fn kept(&self) -> impl Iterator<Item = &BackupDecision> {
        self.backups.iter().filter(|b| b.keep())
    }
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> TimeDelta {
    now.signed_duration_since(then)
}

/// Decides the fate of every listed object, trusting every manifest. Pure: same inputs,
/// same plan.
pub fn plan(objects: &[ObjectMeta], policy: &Policy, now: DateTime<Utc>) -> Plan {
    plan_checked(objects, &Health::default(), policy, now)
}

/// [`plan`] with what reading the backups showed: broken ones do not count towards the
/// floor, legacy ones are backups rather than orphans.
pub fn plan_checked(objects: &[ObjectMeta], health: &Health, policy: &Policy, now: DateTime<Utc>) -> Plan {
    let by_key: HashMap<&str, &ObjectMeta> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut plan = Plan::default();
    let mut claimed_manifests: HashSet<&str> = HashSet::new();

    let mut keys: Vec<&ObjectMeta> = objects.iter().collect();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys.dedup_by(|a, b| a.key == b.key);

    for obj in &keys {
        let Some(ts) = policy.backup_timestamp(&obj.key) else {
            continue;
        };
        let manifest_key = format!("{}{MANIFEST_SUFFIX}", obj.key);
        let manifest = by_key.get(manifest_key.as_str());
        if manifest.is_none() && !health.legacy.contains(&obj.key) {
            plan.orphans.push(orphan(obj, OrphanKind::Data, ts, policy, now));
            continue;
        }
        if let Some(m) = manifest {
            claimed_manifests.insert(m.key.as_str());
        }
        plan.backups.push(BackupDecision {
            key: obj.key.clone(),
            manifest_key: manifest.map(|_| manifest_key),
            timestamp: ts,
            size: obj.size,
            manifest_size: manifest.map_or(0, |m| m.size),
            broken: health.broken.get(&obj.key).cloned(),
            reasons: Vec::new(),
        });
    }
    plan.orphans.extend(stale_claims(&keys, policy, now));
    for obj in &keys {
        if claimed_manifests.contains(obj.key.as_str())
            || policy.backup_timestamp(&obj.key).is_some()
            || is_claim(&obj.key)
        {
            continue;
        }
        let dangling = obj
            .key
            .strip_suffix(MANIFEST_SUFFIX)
            .filter(|base| !by_key.contains_key(base))
            .and_then(|base| policy.backup_timestamp(base));
        match dangling {
            Some(ts) => plan.orphans.push(orphan(obj, OrphanKind::Manifest, ts, policy, now)),
            None => plan.ignored.push(obj.key.clone()),
        }
    }

    // Newest first; equal timestamps in a fixed order so runs are repeatable.
    plan.backups
        .sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then_with(|| b.key.cmp(&a.key)));
    decide(&mut plan.backups, policy, now);
    plan
}

/// Claims of backup runs, dated by when they were written: removed like other leftovers of
/// interrupted runs once older than `--abort-uploads-older-than`.
fn stale_claims<'a>(
    keys: &'a [&ObjectMeta],
    policy: &'a Policy,
    now: DateTime<Utc>,
) -> impl Iterator<Item = OrphanDecision> + 'a {
    keys.iter().filter(|o| is_claim(&o.key)).map(move |o| {
        let written = o.modified.map_or(now, DateTime::<Utc>::from);
        orphan(o, OrphanKind::Claim, written, policy, now)
    })
}

fn orphan(
    obj: &ObjectMeta,
    kind: OrphanKind,
    ts: DateTime<Utc>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> OrphanDecision {
    let modified = obj.modified.map(DateTime::<Utc>::from).unwrap_or(ts);
    let (delete, why) = match policy.abort_after {
        _ if !policy.is_configured() => (false, "no retention configured"),
        None => (false, "orphan cleanup is off (--abort-uploads-older-than 0)"),
        Some(min_age) if age(now, modified) <= min_age => {
            (false, "younger than --abort-uploads-older-than (may be in progress)")
        }
        // A claim dates a run, not a backup: the age rule alone decides.
        Some(_) if kind == OrphanKind::Claim => (true, "older than --abort-uploads-older-than"),
        Some(_) => match &policy.retention {
            Some(r) if age(now, ts) <= r.as_timedelta() => (false, "within retention"),
            _ => (true, "older than --abort-uploads-older-than"),
        },
    };
    OrphanDecision {
        key: obj.key.clone(),
        kind,
        timestamp: ts,
        size: obj.size,
        delete,
        why,
    }
}

/// Applies the rules to backups sorted newest first. A backup is kept when any rule keeps
/// it. The floor (newest, `--min-keep`) and the GFS rules count restorable backups only: a
/// broken one is kept only while within `--retention`, never in place of a good one.
fn decide(backups: &mut [BackupDecision], policy: &Policy, now: DateTime<Utc>) {
    if !policy.is_configured() {
        for b in backups.iter_mut() {
            b.reasons.push(KeepReason::NotConfigured);
        }
        return;
    }
    let retention = policy.retention.map(|r| r.as_timedelta());

    let restorable = backups.iter().filter(|b| b.restorable()).count();
    let mut gfs = Gfs::new(&policy.keep, restorable);
    let mut nr = 0;
    for b in backups.iter_mut() {
        if b.restorable() && nr == 0 {
            b.reasons.push(KeepReason::Newest);
        }
        if b.restorable() && nr < policy.min_keep {
            b.reasons.push(KeepReason::MinKeep);
        }
        // The reference deletes when `now - ts > delta`: exactly the delta is kept.
        if retention.is_some_and(|r| age(now, b.timestamp) <= r) {
            b.reasons.push(KeepReason::WithinRetention);
        }
        if b.restorable() {
            gfs.keep(b, nr);
            nr += 1;
        }
    }
}

/// The age of a pending upload, if it is known.
pub fn upload_age(now: DateTime<Utc>, initiated: Option<SystemTime>) -> Option<TimeDelta> {
    initiated.map(|t| age(now, DateTime::<Utc>::from(t)))
}
