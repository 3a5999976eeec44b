//! The Prometheus text exposition of a [`Report`]. Names follow the Prometheus conventions
//! (`_seconds`, `_bytes`, `_total` for counters, base units) and are checked by
//! `promtool check metrics` in the tests.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::monitor::{Report, StoreStatus};

/// Writes metric families: HELP and TYPE once, then the samples.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{k}=\"{}\"", escape(v));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {}", number(*value));
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

type Samples<'a> = Vec<(Vec<(&'a str, &'a str)>, f64)>;

pub fn render(report: &Report) -> String {
    let mut e = Exposition { out: String::new() };
    stores(&mut e, report);
    if let Some(es) = &report.elasticsearch {
        elasticsearch(&mut e, es);
    }
    e.family(
        "sts_backup_monitor_last_check_timestamp_seconds",
        "gauge",
        "When the monitor last finished a check.",
        &[(vec![], report.at.timestamp() as f64)],
    );
    e.family(
        "sts_backup_monitor_check_duration_seconds",
        "gauge",
        "How long the last check took.",
        &[(vec![], report.duration.as_secs_f64())],
    );
    e.out
}

/// Per-store families.
/// A per-store gauge: name, help, and its value for a store at the report's time.
type StoreGauge = (
    &'static str,
    &'static str,
    fn(&StoreStatus, DateTime<Utc>) -> Option<f64>,
);

fn newest(s: &StoreStatus) -> Option<&crate::stores::Newest> {
    s.catalogue.as_ref().and_then(|c| c.newest.as_ref())
}

const STORE_GAUGES: &[StoreGauge] = &[
    (
        "sts_backup_storage_up",
        "Whether the store's bucket could be listed at the last check (1) or not (0).",
        |s, _| Some(flag(s.error.is_none())),
    ),
    (
        "sts_backup_committed_bytes",
        "Bytes held by the store's committed backups.",
        |s, _| s.catalogue.as_ref().map(|c| c.committed_bytes as f64),
    ),
    (
        "sts_backup_last_backup_timestamp_seconds",
        "Creation time of the store's newest committed backup, in seconds since the epoch.",
        |s, _| newest(s).map(|n| n.created.timestamp() as f64),
    ),
    (
        "sts_backup_last_backup_size_bytes",
        "Size of the store's newest committed backup.",
        |s, _| newest(s).map(|n| n.size as f64),
    ),
    (
        "sts_backup_last_backup_age_seconds",
        "Age of the store's newest committed backup at the last check.",
        |s, now| newest(s).map(|n| (now - n.created).num_seconds().max(0) as f64),
    ),
    (
        "sts_backup_due_timestamp_seconds",
        "The newest scheduled start whose grace period has passed: a backup at or after it must exist.",
        |s, _| s.due.due_since.map(|t| t.timestamp() as f64),
    ),
    (
        "sts_backup_overdue",
        "1 when the store's newest committed backup is older than the last scheduled start plus the grace period.",
        |s, _| Some(flag(s.due.overdue)),
    ),
    (
        "sts_backup_verify_timestamp_seconds",
        "When the monitor last re-read the store's newest backup and checked it against its manifest.",
        |s, _| s.verify.as_ref().map(|v| v.at.timestamp() as f64),
    ),
    (
        "sts_backup_verify_success",
        "Result of the last verification of the store's newest backup: 1 intact, 0 corrupt.",
        |s, _| s.verify.as_ref().map(|v| flag(v.ok)),
    ),
];

/// Per-store families.
fn stores(e: &mut Exposition, report: &Report) {
    let mut backups: Samples<'_> = Vec::new();
    for s in &report.stores {
        if let Some(c) = &s.catalogue {
            for (state, n) in [("committed", c.committed), ("broken", c.broken), ("legacy", c.legacy)] {
                backups.push((vec![("store", s.name.as_str()), ("state", state)], n as f64));
            }
        }
    }
    e.family(
        "sts_backup_backups",
        "gauge",
        "Backups in the store's bucket: committed (restorable, checksummed), broken (a manifest that cannot vouch for its data), legacy (written by StackState, no checksum).",
        &backups,
    );
    for (name, help, value) in STORE_GAUGES {
        let samples: Samples<'_> = report
            .stores
            .iter()
            .filter_map(|s| value(s, report.at).map(|v| (vec![("store", s.name.as_str())], v)))
            .collect();
        e.family(name, "gauge", help, &samples);
    }
}

/// Elasticsearch families.
fn elasticsearch(e: &mut Exposition, es: &crate::monitor::EsStatus) {
    e.family(
        "sts_backup_es_up",
        "gauge",
        "Whether Elasticsearch answered at the last check.",
        &[(vec![], flag(es.error.is_none()))],
    );
    if let Some(st) = &es.state {
        es_state(e, &es.repository, &es.policy, st);
    }
    if let Some(due) = &es.due {
        es_due(e, &es.policy, due);
    }
}

fn es_state(e: &mut Exposition, repo: &str, policy: &str, st: &crate::elasticsearch::EsState) {
    e.family(
        "sts_backup_es_repository_up",
        "gauge",
        "Whether the snapshot repository could be listed.",
        &[(vec![("repository", repo)], flag(st.repository_up))],
    );
    e.family(
        "sts_backup_es_slm_running",
        "gauge",
        "Whether snapshot lifecycle management is RUNNING.",
        &[(vec![], flag(st.slm_running))],
    );
    let by_state: Samples<'_> = st
        .snapshots
        .iter()
        .map(|(state, n)| (vec![("repository", repo), ("state", state.as_str())], *n as f64))
        .collect();
    e.family(
        "sts_backup_es_snapshots",
        "gauge",
        "Snapshots in the repository by state.",
        &by_state,
    );
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| -> Samples<'_> {
        t.map(|t| vec![(vec![("repository", repo)], t.timestamp() as f64)])
            .unwrap_or_default()
    };
    e.family(
        "sts_backup_es_last_success_timestamp_seconds",
        "gauge",
        "End time of the newest SUCCESS snapshot in the repository.",
        &ts(st.last_success),
    );
    e.family(
        "sts_backup_es_last_failure_timestamp_seconds",
        "gauge",
        "Time of the newest failed or partial snapshot (SLM's last failure included).",
        &ts(st.last_failure),
    );
    if let Some(c) = &st.slm {
        for (name, help, v) in [
            (
                "sts_backup_es_slm_snapshots_taken_total",
                "Snapshots taken by the SLM policy.",
                c.taken,
            ),
            (
                "sts_backup_es_slm_snapshots_failed_total",
                "Snapshots of the SLM policy that failed.",
                c.failed,
            ),
            (
                "sts_backup_es_slm_snapshots_deleted_total",
                "Snapshots deleted by the SLM policy's retention.",
                c.deleted,
            ),
        ] {
            e.family(name, "counter", help, &[(vec![("policy", policy)], v as f64)]);
        }
    }
}

fn es_due(e: &mut Exposition, policy: &str, due: &crate::schedule::Due) {
    e.family(
        "sts_backup_es_due_timestamp_seconds",
        "gauge",
        "The newest SLM scheduled start whose grace period has passed.",
        &due.due_since
            .map(|t| vec![(vec![("policy", policy)], t.timestamp() as f64)])
            .unwrap_or_default(),
    );
    e.family(
        "sts_backup_es_overdue",
        "gauge",
        "1 when the newest SUCCESS snapshot is older than the SLM policy's last scheduled start plus the grace period.",
        &[(vec![("policy", policy)], flag(due.overdue))],
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(super::number(3.0), "3");
        assert_eq!(super::number(0.25), "0.25");
    }
}
