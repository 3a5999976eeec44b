//! The backup monitor's view of Elasticsearch, against the stateful fake: snapshots by state,
//! SLM's counters and mode, last success and failure, and overdue from the SLM policy's own
//! Quartz schedule. The monitor only reads: the fake's log must hold GET requests only.

mod fake_es;

use fake_es::*;
use serde_json::json;
use sts_backup_core::storage::StorageArgs;
use sts_backup_elasticsearch::ConnectionArgs;
use sts_backup_monitor::config::Config;
use sts_backup_monitor::metrics;
use sts_backup_monitor::monitor::{Monitor, Report};

const POLICY: &str = "auto-sts-backup";
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn check(es: &FakeEs) -> Report {
    let config = Config::parse(&format!(
        r#"{{"elasticsearch":{{"repository":"sts-backup","policy":"{POLICY}","grace":"1h"}}}}"#
    ))
    .unwrap();
    let client = ConnectionArgs {
        es_url: es.url(),
        es_username: None,
        es_password_file: None,
        es_api_key_file: None,
        es_ca_bundle: None,
    }
    .client()
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Started watching a week ago, so a missing snapshot since then counts.
        let mut m = Monitor::new(config, &StorageArgs::default(), Some(client), chrono::Duration::zero())
            .await
            .unwrap();
        m.watch_since(chrono::Utc::now() - chrono::Duration::days(7));
        m.check().await
    })
}

#[test]
fn the_monitor_reads_snapshots_and_slm_and_judges_the_schedule() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions::default());
    let run = run_bin(&["register", "--schedule", "0 0 3 * * ?"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());

    // A success two days ago, then a failure: the newest failure is newer than the newest
    // success, and yesterday's 03:00 run left no success (overdue).
    let old = now_ms() - 2 * DAY_MS;
    es.seed_snapshot("sts-backup", "sts-backup-old", old, &["sts_a"], &[]);
    es.seed_snapshot_with("sts-backup", "sts-backup-failed", old + DAY_MS, &["sts_a"], &[], |v| {
        v["state"] = json!("FAILED");
    });
    es.record_slm_run(POLICY, "sts-backup-old", true, old + 4000);
    es.record_slm_run(POLICY, "sts-backup-failed", false, old + DAY_MS + 4000);
    es.clear_log();

    let report = check(&es);
    let status = report.elasticsearch.as_ref().unwrap();
    assert_eq!(status.error, None);
    let state = status.state.as_ref().unwrap();
    assert!(state.repository_up && state.slm_running, "{state:?}");
    assert_eq!(state.snapshots.get("SUCCESS"), Some(&1));
    assert_eq!(state.snapshots.get("FAILED"), Some(&1));
    assert_eq!(state.schedule.as_deref(), Some("0 0 3 * * ?"));
    assert!(state.last_failure > state.last_success, "{state:?}");
    let slm = state.slm.as_ref().unwrap();
    assert_eq!((slm.taken, slm.failed), (1, 1));
    assert!(status.due.as_ref().unwrap().overdue, "{status:?}");
    let text = metrics::render(&report);
    assert!(
        text.contains("sts_backup_es_overdue{policy=\"auto-sts-backup\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sts_backup_es_slm_snapshots_failed_total{policy=\"auto-sts-backup\"} 1"),
        "{text}"
    );
    assert!(!report.healthy());
    let writes: Vec<String> = es
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "the monitor must only read: {writes:?}");

    // A fresh success: no longer overdue, and the failure is older than the success.
    es.seed_snapshot("sts-backup", "sts-backup-new", now_ms() - 60_000, &["sts_a"], &[]);
    es.record_slm_run(POLICY, "sts-backup-new", true, now_ms() - 56_000);
    let report = check(&es);
    let status = report.elasticsearch.as_ref().unwrap();
    let state = status.state.as_ref().unwrap();
    assert!(!status.due.as_ref().unwrap().overdue, "{status:?}");
    assert!(state.last_success > state.last_failure);
    assert!(report.healthy(), "{report:?}");

    // SLM stopped: reported, and unhealthy.
    es.set_slm_mode("STOPPED");
    let report = check(&es);
    assert!(
        !report
            .elasticsearch
            .as_ref()
            .unwrap()
            .state
            .as_ref()
            .unwrap()
            .slm_running
    );
    assert!(!report.healthy());
}

#[test]
fn an_unreachable_elasticsearch_is_reported() {
    let es = fake_with_keystore(FakeOptions::default());
    let url = es.url();
    drop(es);
    let config = Config::parse(r#"{"elasticsearch":{"repository":"sts-backup","policy":"auto-sts-backup"}}"#).unwrap();
    let client = ConnectionArgs {
        es_url: url,
        es_username: None,
        es_password_file: None,
        es_api_key_file: None,
        es_ca_bundle: None,
    }
    .client()
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let mut m = Monitor::new(config, &StorageArgs::default(), Some(client), chrono::Duration::zero())
            .await
            .unwrap();
        m.check().await
    });
    assert!(report.elasticsearch.as_ref().unwrap().error.is_some());
    assert!(metrics::render(&report).contains("sts_backup_es_up 0"));
    assert!(!report.healthy());
}
