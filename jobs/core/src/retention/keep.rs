//! The GFS keep rules (`--keep-last`, `--keep-daily`, …), restic `forget` semantics.
//!
//! Each rule is one flag in [`KeepArgs`] and one row in [`KeepArgs::rules`] (its name and the
//! period a backup falls into): adding `--keep-yearly` touches those two places; the policy,
//! its description, the decision and the report all walk the rows.

use chrono::{DateTime, Datelike, Utc};

use super::policy::{BackupDecision, KeepCount, KeepReason};

/// The GFS flags, each with its env twin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct KeepArgs {
    /// Keep the N newest backups (restic forget semantics; "unlimited" keeps all).
    #[arg(long, env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_LAST", value_name = "N")]
    pub keep_last: Option<KeepCount>,

    /// Keep the newest backup of each of the N newest days that have backups (UTC).
    #[arg(long, env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_DAILY", value_name = "N")]
    pub keep_daily: Option<KeepCount>,

    /// Keep the newest backup of each of the N newest ISO weeks that have backups.
    #[arg(long, env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_WEEKLY", value_name = "N")]
    pub keep_weekly: Option<KeepCount>,

    /// Keep the newest backup of each of the N newest months that have backups.
    #[arg(long, env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_MONTHLY", value_name = "N")]
    pub keep_monthly: Option<KeepCount>,
}

/// The period a backup falls into for one rule: backups of one period share a value.
/// `nr` is the backup's position among the restorable ones, newest first.
type PeriodFn = fn(DateTime<Utc>, usize) -> i64;

/// One GFS rule: its flag's name (as shown in reasons), its count, its period.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub flag: &'static str,
    pub count: Option<KeepCount>,
    period: PeriodFn,
}

impl KeepArgs {
    /// Every rule, in the order reasons are reported.
    pub fn rules(&self) -> Vec<Rule> {
        let rule = |flag, count, period| Rule { flag, count, period };
        vec![
            rule("keep-last", self.keep_last, |_, nr| nr as i64),
            rule("keep-daily", self.keep_daily, |t, _| {
                i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day())
            }),
            rule("keep-weekly", self.keep_weekly, |t, _| {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }),
            rule("keep-monthly", self.keep_monthly, |t, _| {
                i64::from(t.year()) * 100 + i64::from(t.month())
            }),
        ]
    }

    /// The rules that keep something (`0` is the same as not set, as in restic).
    pub fn active(&self) -> impl Iterator<Item = Rule> {
        self.rules()
            .into_iter()
            .filter(|r| r.count.is_some_and(|c| c.is_active()))
    }
}

/// Walks restorable backups newest to oldest: a rule keeps a backup when its period differs
/// from the last one the rule kept, while the rule has counts left; the oldest backup is kept
/// too if the rule still has counts left (restic's rule).
pub struct Gfs {
    rules: Vec<(Rule, Option<u32>, Option<i64>)>,
    restorable: usize,
}

impl Gfs {
    pub fn new(keep: &KeepArgs, restorable: usize) -> Gfs {
        let rules = keep
            .rules()
            .into_iter()
            .map(|r| {
                let remaining = match r.count {
                    None => Some(0),
                    Some(KeepCount::Count(c)) => Some(c),
                    Some(KeepCount::Unlimited) => None,
                };
                (r, remaining, None)
            })
            .collect();
        Gfs { rules, restorable }
    }

    /// Adds the reasons the rules keep the `nr`-th newest restorable backup for.
    pub fn keep(&mut self, b: &mut BackupDecision, nr: usize) {
        let is_oldest = nr + 1 == self.restorable;
        for (rule, remaining, last) in &mut self.rules {
            if *remaining == Some(0) {
                continue;
            }
            let val = (rule.period)(b.timestamp, nr);
            if *last != Some(val) || is_oldest {
                b.reasons.push(if *last == Some(val) {
                    KeepReason::OldestOf(rule.flag)
                } else {
                    KeepReason::Rule(rule.flag)
                });
                *last = Some(val);
                if let Some(c) = remaining {
                    *c -= 1;
                }
            }
        }
    }
}
