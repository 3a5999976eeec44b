//! When a backup was due, from the schedule itself.
//!
//! Peers report "last success" and leave "late" to a hand-written threshold that drifts from
//! the real schedule. Here the monitor knows each store's schedule (a Kubernetes CronJob
//! expression in its time zone, or Elasticsearch SLM's Quartz expression) and asks: which
//! scheduled start should have produced a backup by now? A store is overdue when its newest
//! backup is older than that start.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Which cron language a schedule is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Kubernetes CronJob `.spec.schedule`: five fields, Vixie-cron semantics (day of month OR
    /// day of week when both are restricted), `@daily`-style macros, in `.spec.timeZone`.
    Kubernetes,
    /// Elasticsearch SLM / Quartz: seconds first, optional year, weekdays 1-7 = SUN-SAT,
    /// `?`, `L`, `W` and `#`; always evaluated in UTC.
    Quartz,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Kubernetes => "Kubernetes cron (5 fields)",
            Dialect::Quartz => "Quartz cron (6 or 7 fields)",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("schedule {expr:?} is not a valid {dialect} expression: {reason}")]
    Expression {
        expr: String,
        dialect: Dialect,
        reason: String,
    },
    #[error("time zone {0:?} is not an IANA time zone name (e.g. Etc/UTC, Europe/Amsterdam)")]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    expr: String,
}

/// How far back [`Schedule::last_start_at_or_before`] looks: a schedule with no start in
/// the past five years (e.g. `0 0 30 2 *`) has never been due.
const LOOKBACK_DAYS: i64 = 5 * 366;

impl Schedule {
    pub fn parse(expr: &str, dialect: Dialect, time_zone: &str) -> Result<Schedule, ScheduleError> {
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(time_zone.to_string()))?;
        let bad = |reason: String| ScheduleError::Expression {
            expr: expr.to_string(),
            dialect,
            reason,
        };
        let cron = match dialect {
            Dialect::Kubernetes => {
                let normalized = kubernetes_macro(expr.trim()).unwrap_or(expr.trim());
                check_kubernetes_fields(normalized).map_err(bad)?;
                CronParser::builder()
                    .seconds(Seconds::Disallowed)
                    .year(Year::Disallowed)
                    .build()
                    .parse(normalized)
            }
            Dialect::Quartz => CronParser::builder()
                .seconds(Seconds::Required)
                .year(Year::Optional)
                .alternative_weekdays(true)
                .sloppy_ranges(true)
                .build()
                .parse(expr.trim()),
        }
        .map_err(|e| bad(e.to_string()))?;
        Ok(Schedule {
            cron,
            tz,
            expr: expr.trim().to_string(),
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The newest scheduled start at or before `at`, or `None` when there was none in the
    /// lookback window.
    pub fn last_start_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.tz);
        let found = self.cron.find_previous_occurrence(&local, true).ok()?;
        let found = found.with_timezone(&Utc);
        (at - found <= chrono::Duration::days(LOOKBACK_DAYS)).then_some(found)
    }

    /// The first scheduled start strictly after `at`.
    pub fn next_start_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Kubernetes accepts the robfig/cron macros; `@midnight` is not known to croner.
fn kubernetes_macro(expr: &str) -> Option<&'static str> {
    Some(match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// Kubernetes' parser (robfig/cron `ParseStandard`) knows five fields of numbers, names,
/// `*`, `?`, ranges, lists and steps; the Quartz extensions `L`, `W`, `#` and croner's `+`
/// would be rejected by the API server, so they are rejected here too.
fn check_kubernetes_fields(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for field in fields {
        let upper = field.to_ascii_uppercase();
        let is_name = |s: &str| s.chars().all(|c| c.is_ascii_alphabetic()) && s.len() == 3;
        for atom in upper.split([',', '-', '/']) {
            let ok = atom == "*" || atom == "?" || atom.chars().all(|c| c.is_ascii_digit()) || is_name(atom);
            if !ok || atom.is_empty() {
                return Err(format!("field {field:?} is not valid Kubernetes cron syntax"));
            }
        }
    }
    Ok(())
}

/// What the schedule says about one store at one instant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Due {
    /// The newest scheduled start whose grace period has run out: a backup at or after it
    /// must exist by now. `None` when no start is that old yet.
    pub due_since: Option<DateTime<Utc>>,
    /// The newest backup is older than `due_since` (or there is none and `due_since` fell
    /// after the monitor started watching).
    pub overdue: bool,
}

/// Judges a store: `newest` is its newest restorable backup's creation time. A store with
/// no backup at all is overdue only for starts after `watching_since` (the monitor's own
/// start), so a fresh install is not flagged before its first scheduled run.
pub fn judge(
    schedule: &Schedule,
    grace: Duration,
    newest: Option<DateTime<Utc>>,
    watching_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Due {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let due_since = now
        .checked_sub_signed(grace)
        .and_then(|cutoff| schedule.last_start_at_or_before(cutoff));
    let overdue = match (due_since, newest) {
        (None, _) => false,
        (Some(due), Some(newest)) => newest < due,
        (Some(due), None) => due >= watching_since,
    };
    Due { due_since, overdue }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn k8s(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, Dialect::Kubernetes, tz).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn daily_at_three_is_not_overdue_at_half_past_but_is_at_five() {
        let s = k8s("0 3 * * *", "Etc/UTC");
        let yesterday = Some(utc("2026-03-09T03:04:00Z"));
        let since = utc("2026-01-01T00:00:00Z");
        let at_0330 = judge(&s, HOUR, yesterday, since, utc("2026-03-10T03:30:00Z"));
        assert_eq!(at_0330.due_since, Some(utc("2026-03-09T03:00:00Z")));
        assert!(!at_0330.overdue);
        let at_0500 = judge(&s, HOUR, yesterday, since, utc("2026-03-10T05:00:00Z"));
        assert_eq!(at_0500.due_since, Some(utc("2026-03-10T03:00:00Z")));
        assert!(at_0500.overdue);
        // Today's backup arrived: fine again.
        let today = Some(utc("2026-03-10T03:20:00Z"));
        assert!(!judge(&s, HOUR, today, since, utc("2026-03-10T05:00:00Z")).overdue);
    }

    #[test]
    fn a_fresh_install_is_not_overdue_before_its_first_run() {
        let s = k8s("0 3 * * *", "Etc/UTC");
        let installed = utc("2026-03-10T10:00:00Z");
        assert!(!judge(&s, HOUR, None, installed, utc("2026-03-10T12:00:00Z")).overdue);
        assert!(!judge(&s, HOUR, None, installed, utc("2026-03-11T03:59:00Z")).overdue);
        assert!(judge(&s, HOUR, None, installed, utc("2026-03-11T04:00:00Z")).overdue);
    }

    #[test]
    fn time_zone_moves_the_start() {
        // 03:00 in Amsterdam is 02:00 UTC in winter.
        let s = k8s("0 3 * * *", "Europe/Amsterdam");
        assert_eq!(
            s.last_start_at_or_before(utc("2026-01-15T02:30:00Z")),
            Some(utc("2026-01-15T02:00:00Z"))
        );
        // ... and 01:00 UTC in summer.
        assert_eq!(
            s.last_start_at_or_before(utc("2026-07-15T02:30:00Z")),
            Some(utc("2026-07-15T01:00:00Z"))
        );
    }

    #[test]
    fn dst_spring_forward_runs_a_skipped_time_after_the_gap() {
        // 2026-03-29: Amsterdam jumps from 02:00 to 03:00 local (01:00 UTC). A job at 02:30
        // local has no such wall-clock time that day; it is due at the first instant after
        // the gap, not skipped (otherwise a daily backup would be "missing" that day).
        let s = k8s("30 2 * * *", "Europe/Amsterdam");
        let start = s.last_start_at_or_before(utc("2026-03-29T05:00:00Z")).unwrap();
        assert_eq!(
            start.date_naive(),
            chrono::NaiveDate::from_ymd_opt(2026, 3, 29).unwrap()
        );
        assert!(
            start >= utc("2026-03-29T01:00:00Z") && start <= utc("2026-03-29T01:30:00Z"),
            "{start}"
        );
        // The day before is the ordinary 01:30 UTC.
        assert_eq!(
            s.last_start_at_or_before(utc("2026-03-28T05:00:00Z")),
            Some(utc("2026-03-28T01:30:00Z"))
        );
    }

    #[test]
    fn dst_fall_back_counts_a_repeated_time_once_at_its_first_instant() {
        // 2026-10-25: Amsterdam goes from 03:00 back to 02:00 local, so 02:30 local happens
        // at 00:30 and again at 01:30 UTC. The job runs once; a backup made at the first
        // instant must not be reported overdue because of the second.
        let s = k8s("30 2 * * *", "Europe/Amsterdam");
        let first = utc("2026-10-25T00:30:00Z");
        assert_eq!(s.last_start_at_or_before(utc("2026-10-25T00:45:00Z")), Some(first));
        assert_eq!(s.last_start_at_or_before(utc("2026-10-25T06:00:00Z")), Some(first));
        let backup = Some(utc("2026-10-25T00:31:00Z"));
        assert!(!judge(&s, HOUR, backup, first, utc("2026-10-25T06:00:00Z")).overdue);
    }

    #[test]
    fn vixie_day_of_month_or_day_of_week() {
        // "At 04:00 on the 1st, and on every Monday" (both restricted: OR).
        let s = k8s("0 4 1 * 1", "Etc/UTC");
        // 2026-06-03 is a Wednesday; the previous start is Monday 2026-06-01 (also the 1st),
        // from Wednesday 2026-06-10 it is Monday 2026-06-08.
        assert_eq!(
            s.last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-06-08T04:00:00Z"))
        );
        assert_eq!(
            s.last_start_at_or_before(utc("2026-07-01T05:00:00Z")),
            Some(utc("2026-07-01T04:00:00Z")),
            "the 1st of July is a Wednesday, started by the day-of-month field"
        );
    }

    #[test]
    fn kubernetes_macros_and_names() {
        assert_eq!(
            k8s("@daily", "Etc/UTC").last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-06-10T00:00:00Z"))
        );
        assert_eq!(
            k8s("@midnight", "Etc/UTC").last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-06-10T00:00:00Z"))
        );
        assert_eq!(
            k8s("0 3 * * SUN", "Etc/UTC").last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-06-07T03:00:00Z"))
        );
    }

    #[test]
    fn kubernetes_rejects_what_the_api_server_rejects() {
        for bad in ["0 0 3 * * ?", "0 3 L * *", "0 3 * * 1#2", "0 3 * *", "x 3 * * *", ""] {
            let err = Schedule::parse(bad, Dialect::Kubernetes, "Etc/UTC").unwrap_err();
            assert!(matches!(err, ScheduleError::Expression { .. }), "{bad}: {err}");
        }
        assert_eq!(
            Schedule::parse("0 3 * * *", Dialect::Kubernetes, "Mars/Olympus").unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn quartz_slm_schedules() {
        let s = Schedule::parse("0 30 1 * * ?", Dialect::Quartz, "UTC").unwrap();
        assert_eq!(
            s.last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-06-10T01:30:00Z"))
        );
        // Quartz weekdays: 1 = Sunday. 2026-06-07 is a Sunday.
        let sunday = Schedule::parse("0 0 3 ? * 1", Dialect::Quartz, "UTC").unwrap();
        assert_eq!(
            sunday.last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-06-07T03:00:00Z"))
        );
        // Last day of the month.
        let last = Schedule::parse("0 0 2 L * ?", Dialect::Quartz, "UTC").unwrap();
        assert_eq!(
            last.last_start_at_or_before(utc("2026-06-10T12:00:00Z")),
            Some(utc("2026-05-31T02:00:00Z"))
        );
        assert!(Schedule::parse("0 3 * * *", Dialect::Quartz, "UTC").is_err());
    }

    #[test]
    fn never_due_schedules_are_never_overdue() {
        let s = k8s("0 0 30 2 *", "Etc/UTC");
        let now = Utc.with_ymd_and_hms(2026, 6, 10, 0, 0, 0).unwrap();
        assert_eq!(judge(&s, HOUR, None, utc("2020-01-01T00:00:00Z"), now).due_since, None);
        assert!(!judge(&s, HOUR, None, utc("2020-01-01T00:00:00Z"), now).overdue);
    }

    #[test]
    fn next_start() {
        let s = k8s("0 3 * * *", "Etc/UTC");
        assert_eq!(
            s.next_start_after(utc("2026-06-10T03:00:00Z")),
            Some(utc("2026-06-11T03:00:00Z"))
        );
    }
}
