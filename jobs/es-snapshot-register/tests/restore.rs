//! `restore` against the stateful fake Elasticsearch and the real S3 test server (issue 14):
//! every check before the first destructive call, the least destructive overwrite, the
//! asynchronous restore with progress, and the final report.
//!
//! The key assertion of every refusal: no delete, close, open, rollover or restore request
//! reached the fake (`assert_untouched`, from its request log). The refusal tests run with
//! `--force` and conflicting open indices in place, so a check that came too late would
//! show up as a close or delete in the log.

mod fake_es;

use fake_es::*;
use serde_json::{json, Value};

const DS: &str = "sts_k8s_logs";
const T0: i64 = 1_763_607_600_000;

/// [`registered`], plus the data stream's index template in the cluster.
fn setup(opts: FakeOptions) -> (S3, FakeEs) {
    let (s3, es) = registered(opts);
    es.add_index_template(DS, &["sts_k8s_logs*"], true);
    (s3, es)
}

/// The environment of a restore pod, polling fast.
fn env(es: &FakeEs, s3: &S3, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut all = vec![("RESTORE_POLL_INTERVAL", "50ms"), ("STS_PROGRESS_INTERVAL", "50ms")];
    all.extend_from_slice(extra);
    env_with(es, s3, &all)
}

fn error_line(run: &Run) -> String {
    run.stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{}", run.all()))
        .to_string()
}

fn position(es: &FakeEs, endpoint: &str, path_part: &str) -> usize {
    es.requests()
        .iter()
        .position(|r| r.endpoint == endpoint && r.path.contains(path_part))
        .unwrap_or_else(|| panic!("no {endpoint} {path_part} in {:?}", es.requests()))
}

#[test]
fn restore_into_an_empty_cluster_runs_async_with_progress() {
    let (s3, es) = setup(FakeOptions {
        restore_polls: 4,
        ..FakeOptions::default()
    });
    let run = run_bin(&["restore", SNAP], &env(&es, &s3, &[("INDICES_TO_RESTORE", "")]));
    assert_eq!(run.code, 0, "{}", run.all());
    let req = &es.requests_to("snapshot.restore")[0];
    assert_eq!(
        req.body,
        Some(json!({"indices": "sts_k8s_logs,sts_topology_1", "include_global_state": false, "partial": false}))
    );
    assert_eq!(
        req.query,
        vec![("wait_for_completion".to_string(), "false".to_string())]
    );
    // Progress lines while it runs: shards done rise over several polls.
    let progress: Vec<&str> = run.stderr.lines().filter(|l| l.contains("shards ")).collect();
    assert!(progress.len() >= 3, "{}", run.stderr);
    assert!(progress[0].contains("shards 0/2 started"), "{}", run.stderr);
    assert!(
        progress
            .last()
            .unwrap()
            .contains("shards 2/2 started (0 failed), 2.0 MiB of 2.0 MiB"),
        "{}",
        run.stderr
    );
    assert!(es.requests_to("indices.recovery").len() >= 4);
    assert!(
        run.stdout.contains(&format!("restored: {DS_INDEX}, sts_topology_1")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("shards total 2, successful 2, failed 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("deleted: none"), "{}", run.stdout);
    let indices = es.indices();
    assert!(indices["sts_topology_1"] && indices[DS_INDEX]);
    assert!(!indices.contains_key(".slm-history-7-000001"), "{indices:?}");
    assert_eq!(es.data_streams()[DS], vec![DS_INDEX.to_string()]);
    assert!(es.requests_to("indices.delete").is_empty());
    assert!(es.requests_to("indices.close").is_empty());
}

/// Without --force: exit 3 naming what would be touched, nothing changed. With --force: the
/// open regular index is closed, not deleted (Elasticsearch restores over a closed index with
/// the same number of shards and reopens it: "Existing indices can only be restored if they
/// are closed and have the same number of shards as the indices in the snapshot. The restore
/// operation automatically opens restored indices if they were closed", restore snapshot API,
/// https://www.elastic.co/guide/en/elasticsearch/reference/7.9/restore-snapshot-api.html);
/// only the data stream's backing index is deleted, after a rollover.
#[test]
fn overwrite_closes_what_it_can_and_deletes_only_backing_indices() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_index("sts_topology_1", true);
    es.add_index("sts_unrelated", true);
    es.add_data_stream(DS, &[DS_INDEX]);

    let run = run_bin(&["restore", SNAP], &env(&es, &s3, &[]));
    assert_eq!(run.code, 3, "{}", run.all());
    let err = error_line(&run);
    assert!(err.contains("close open index(es) 1: sts_topology_1"), "{err}");
    assert!(err.contains("roll over data stream(s) 1: sts_k8s_logs"), "{err}");
    assert!(err.contains(&format!("delete index(es) 1: {DS_INDEX}")), "{err}");
    assert!(err.contains("--force") && err.contains("--rename-to"), "{err}");
    es.assert_untouched();

    let run = run_bin(
        &["restore", SNAP, "-o", "json"],
        &env(&es, &s3, &[("RESTORE_FORCE", "true")]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let rollover = position(&es, "indices.rollover", DS);
    let close = position(&es, "indices.close", "sts_topology_1");
    let delete = position(&es, "indices.delete", DS_INDEX);
    let restore = position(&es, "snapshot.restore", SNAP);
    assert!(
        rollover < close && close < delete && delete < restore,
        "{:?}",
        es.requests()
    );
    assert_eq!(
        es.requests_to("indices.delete").len(),
        1,
        "only the backing index is deleted"
    );
    assert!(es.requests_to("indices.open").is_empty());
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["closed"], json!(["sts_topology_1"]));
    assert_eq!(report["deleted"], json!([DS_INDEX]));
    assert_eq!(report["rolled_over"], json!([DS]));
    assert_eq!(report["restored"], json!([DS_INDEX, "sts_topology_1"]));
    assert_eq!(report["failed_shards"], json!([]));
    let indices = es.indices();
    assert!(indices["sts_unrelated"], "only conflicting indices are touched");
    assert!(indices["sts_topology_1"], "the restore reopens the closed index");
    // The data stream has the restored backing index plus the write index from the rollover.
    assert_eq!(es.data_streams()[DS].len(), 2);
}

/// A closed index with another shard count cannot be restored over; it is deleted instead.
#[test]
fn a_different_shard_count_is_deleted_not_closed() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_index_shards("sts_topology_1", true, 3);
    let run = run_bin(
        &["restore", SNAP, "--indices", "sts_topology*", "--force"],
        &env(&es, &s3, &[]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(es.requests_to("indices.close").is_empty());
    assert_eq!(es.requests_to("indices.delete").len(), 1);
    assert!(run.stdout.contains("deleted: sts_topology_1"), "{}", run.stdout);
}

/// Each refusal: exit 3 (or 2), one line, and no delete/close/rollover/restore request, even
/// with --force and open conflicting indices in place.
#[test]
fn refusals_change_nothing() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_index("sts_topology_1", true);
    es.add_data_stream(DS, &[DS_INDEX]);
    let seed = |name: &str, edit: &dyn Fn(&mut Value)| {
        es.seed_snapshot_with(
            "sts-backup",
            name,
            T0 + 1000,
            &["sts_topology_1", DS_INDEX],
            &[DS],
            edit,
        );
    };
    seed("snap-failed", &|i| {
        i["state"] = json!("FAILED");
        i["reason"] = json!("node left");
    });
    seed("snap-incompatible", &|i| i["state"] = json!("INCOMPATIBLE"));
    seed("snap-running", &|i| i["state"] = json!("IN_PROGRESS"));
    seed("snap-partial", &|i| {
        i["state"] = json!("PARTIAL");
        i["failures"] =
            json!([{"index": "sts_topology_1", "shard_id": 0, "reason": "boom", "status": "INTERNAL_SERVER_ERROR"}]);
    });
    seed("snap-newer", &|i| i["version"] = json!("8.14.0"));
    seed("snap-old", &|i| i["version"] = json!("6.8.23"));
    let force = env(&es, &s3, &[("RESTORE_FORCE", "true")]);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["restore", "snap-failed"],
            3,
            "is FAILED (node left); it cannot be restored",
        ),
        (&["restore", "snap-incompatible"], 3, "is INCOMPATIBLE"),
        (&["restore", "snap-running"], 3, "still IN_PROGRESS"),
        (
            &["restore", "snap-partial"],
            3,
            "is PARTIAL (0 of 2 shards failed); nothing was changed. Re-run with --allow-partial",
        ),
        (
            &[
                "restore",
                "snap-partial",
                "--allow-partial",
                "--indices",
                "sts_topology*",
            ],
            3,
            "every index matching",
        ),
        (
            &["restore", "snap-newer"],
            3,
            "written by Elasticsearch 8.14.0, which this cluster (8.13.4) cannot restore",
        ),
        (&["restore", "snap-old"], 3, "more than one major version older"),
        (
            &["restore", SNAP, "--indices", "other*"],
            2,
            "--indices: \"other*\" matches nothing in snapshot",
        ),
        (
            &["restore", "no-such-snapshot"],
            2,
            "SNAPSHOT: no snapshot \"no-such-snapshot\"",
        ),
    ];
    for (args, code, text) in cases {
        es.clear_log();
        let run = run_bin(args, &force);
        assert_eq!(run.code, *code, "{args:?}: {}", run.all());
        assert!(error_line(&run).contains(text), "{args:?}: {}", error_line(&run));
        es.assert_untouched();
    }
    // "matches nothing" names what the snapshot holds.
    let run = run_bin(&["restore", SNAP, "--indices", "other*"], &force);
    assert!(error_line(&run).contains(&format!("it holds: sts_topology_1, .slm-history-7-000001, {DS_INDEX}")));

    // A data stream without a matching data stream template could not roll over afterwards.
    let (s3, es) = setup(FakeOptions::default());
    es.add_index("sts_topology_1", true);
    es.add_index_template(DS, &["other*"], true);
    let run = run_bin(&["restore", SNAP, "--force"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        error_line(&run).contains("sts_k8s_logs need an index template with data_stream"),
        "{}",
        run.all()
    );
    es.assert_untouched();
}

/// The negative control of the refusals: the same setup with a restorable snapshot does
/// close and delete, so `assert_untouched` can fail.
#[test]
fn the_refusal_assertion_can_fail() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_index("sts_topology_1", true);
    let run = run_bin(&["restore", SNAP, "--force"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 0, "{}", run.all());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| es.assert_untouched()));
    assert!(
        caught.is_err(),
        "assert_untouched must fail after a close and a restore"
    );
}

/// PARTIAL with --allow-partial: only indices whose shards all succeeded are restored; the
/// others are listed. `partial` stays false in the request: with `partial: true`
/// Elasticsearch would recreate the missing shards empty ("If true, allows restoring a
/// partial snapshot of indices with unavailable shards. Only shards that were successfully
/// included in the snapshot will be restored. All missing shards will be recreated as
/// empty", restore snapshot API docs), and the fake refuses an incomplete index without it.
#[test]
fn partial_snapshot_restores_only_complete_indices() {
    let (s3, es) = setup(FakeOptions::default());
    es.seed_snapshot_with("sts-backup", "snap-partial", T0 + 1000, &["sts_a", "sts_b", "sts_c"], &[], |i| {
        i["state"] = json!("PARTIAL");
        i["shards"] = json!({"total": 3, "successful": 2, "failed": 1});
        i["failures"] = json!([{"index": "sts_b", "shard_id": 0, "reason": "IndexShardSnapshotFailedException", "status": "INTERNAL_SERVER_ERROR"}]);
    });
    let run = run_bin(&["restore", "snap-partial", "--allow-partial"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 0, "{}", run.all());
    let body = es.requests_to("snapshot.restore")[0].body.clone().unwrap();
    assert_eq!(body["indices"], "sts_a,sts_c");
    assert_eq!(body["partial"], false);
    assert!(
        run.stdout.contains("left out (incomplete in the snapshot): sts_b"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("leaving out 1 incomplete index(es): sts_b"),
        "{}",
        run.stderr
    );
    assert!(!es.indices().contains_key("sts_b"));
}

/// Elasticsearch refuses the restore after our checks passed (here: the disk watermark):
/// the closed index is reopened, exit 1, and the message says what happened.
#[test]
fn a_restore_elasticsearch_rejects_reopens_what_was_closed() {
    let (s3, es) = setup(FakeOptions {
        reject_restore: Some("not enough disk space: the high disk watermark [90%] is exceeded".into()),
        ..FakeOptions::default()
    });
    es.add_index("sts_topology_1", true);
    let run = run_bin(
        &["restore", SNAP, "--indices", "sts_topology*", "--force"],
        &env(&es, &s3, &[]),
    );
    assert_eq!(run.code, 1, "{}", run.all());
    let err = error_line(&run);
    assert!(
        err.contains("the restore did not start (reopened: sts_topology_1; deleted: none)"),
        "{err}"
    );
    assert!(err.contains("high disk watermark"), "{err}");
    assert!(position(&es, "indices.close", "sts_topology_1") < position(&es, "indices.open", "sts_topology_1"));
    assert!(es.indices()["sts_topology_1"], "reopened");
    assert!(es.requests_to("indices.delete").is_empty());
}

#[test]
fn a_stalled_restore_fails_after_the_no_progress_timeout() {
    let (s3, es) = setup(FakeOptions {
        restore_stall: true,
        ..FakeOptions::default()
    });
    let started = std::time::Instant::now();
    let run = run_bin(
        &["restore", SNAP],
        &env(&es, &s3, &[("RESTORE_NO_PROGRESS_TIMEOUT", "1s")]),
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        error_line(&run).contains("made no progress for 1s (--no-progress-timeout)"),
        "{}",
        run.all()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(es.requests_to("snapshot.restore").len(), 1);
}

/// Connections dropped mid-poll are polled again; the restore is never started twice.
#[test]
fn a_dropped_connection_does_not_restart_the_restore() {
    let (s3, es) = setup(FakeOptions {
        drop_polls: 2,
        restore_polls: 3,
        ..FakeOptions::default()
    });
    let run = run_bin(&["restore", SNAP], &env(&es, &s3, &[]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("polling again (the restore keeps running in Elasticsearch)"),
        "{}",
        run.stderr
    );
    assert_eq!(es.requests_to("snapshot.restore").len(), 1);
    assert!(
        run.stdout.contains("shards total 2, successful 2, failed 0"),
        "{}",
        run.stdout
    );
}

#[test]
fn failed_shards_exit_1_and_are_named() {
    let (s3, es) = setup(FakeOptions {
        restore_failed_shards: 1,
        ..FakeOptions::default()
    });
    let run = run_bin(&["restore", SNAP], &env(&es, &s3, &[]));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("shards total 2, successful 1, failed 1"),
        "{}",
        run.stdout
    );
    assert!(
        error_line(&run).contains(&format!("1 of 2 shard(s) failed: {DS_INDEX}/0")),
        "{}",
        run.all()
    );
}

#[test]
fn latest_picks_the_newest_success_snapshot() {
    let (s3, es) = setup(FakeOptions::default());
    es.seed_snapshot("sts-backup", "snap-newer-ok", T0 + 10_000, &["sts_new"], &[]);
    es.seed_snapshot_with("sts-backup", "snap-newest-failed", T0 + 20_000, &["sts_x"], &[], |i| {
        i["state"] = json!("FAILED");
    });
    let run = run_bin(&["restore", "--latest"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(es.requests_to("snapshot.restore")[0].path.contains("snap-newer-ok"));
    assert!(es.indices().contains_key("sts_new"));

    let run = run_bin(&["restore", SNAP, "--latest"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(error_line(&run).contains("--latest: give either"), "{}", run.all());
}

/// --rename-to restores beside the live indices: no --force, nothing closed or deleted.
#[test]
fn rename_restores_beside_the_live_indices() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_index("sts_topology_1", true);
    es.add_data_stream(DS, &[DS_INDEX]);
    let run = run_bin(&["restore", SNAP, "--rename-to", "restored-{}"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 0, "{}", run.all());
    let body = es.requests_to("snapshot.restore")[0].body.clone().unwrap();
    assert_eq!(body["rename_pattern"], "(.+)");
    assert_eq!(body["rename_replacement"], "restored-$1");
    assert!(es.requests_to("indices.close").is_empty() && es.requests_to("indices.delete").is_empty());
    let indices = es.indices();
    assert!(indices["sts_topology_1"] && indices["restored-sts_topology_1"]);
    assert!(
        indices.contains_key(".ds-restored-sts_k8s_logs-2026.11.20-000001"),
        "{indices:?}"
    );
    assert_eq!(
        es.data_streams()[DS],
        vec![DS_INDEX.to_string()],
        "the live stream is untouched"
    );

    // Again: the renamed indices exist now, so it refuses (never overwrites).
    es.clear_log();
    let run = run_bin(
        &["restore", SNAP, "--rename-to", "restored-{}", "--force"],
        &env(&es, &s3, &[]),
    );
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        error_line(&run).contains("--rename-to: 2 already exist(s)"),
        "{}",
        run.all()
    );
    es.assert_untouched();

    let run = run_bin(&["restore", SNAP, "--rename-to", "Restored"], &env(&es, &s3, &[]));
    assert_eq!(run.code, 2, "{}", run.all());
}
