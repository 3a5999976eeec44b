//! `list` and `restore` against the fake Elasticsearch and the real S3 test server.

mod fake_es;

use fake_es::*;
use serde_json::json;

const SNAP: &str = "sts-backup-20261120-0300-ppss8nx40yk";
const DS_INDEX: &str = ".ds-sts_k8s_logs-2026.11.20-000001";

/// A registered repository (restore-only) with one snapshot holding a regular index, an
/// internal index and a data stream.
fn setup(opts: FakeOptions) -> (S3, FakeEs) {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(opts);
    let run = run_bin(&["register", "--no-policy"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    es.seed_snapshot(
        "sts-backup",
        SNAP,
        1_763_607_600_000,
        &["sts_topology_1", ".slm-history-7-000001", DS_INDEX],
        &["sts_k8s_logs"],
    );
    es.clear_log();
    (s3, es)
}

#[test]
fn list_shows_newest_last_as_table_and_one_line_json() {
    let (s3, es) = setup(FakeOptions::default());
    es.seed_snapshot(
        "sts-backup",
        "sts-backup-20261122-0300-newest",
        1_763_780_400_000,
        &["sts_a", "sts_b"],
        &[],
    );
    es.seed_snapshot(
        "sts-backup",
        "sts-backup-20261101-0300-oldest",
        1_761_966_000_000,
        &["sts_a"],
        &[],
    );

    let run = run_bin(&["list"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", run.stdout);
    assert!(lines[0].contains("SHARDS_FAILED"), "{}", run.stdout);
    assert!(
        lines[1].starts_with("sts-backup-20261101-0300-oldest"),
        "{}",
        run.stdout
    );
    assert!(lines[2].starts_with(SNAP), "{}", run.stdout);
    assert!(
        lines[3].starts_with("sts-backup-20261122-0300-newest"),
        "{}",
        run.stdout
    );
    assert!(
        lines[3].contains("SUCCESS") && lines[3].contains("2025-11-22T03:00:00Z"),
        "{}",
        lines[3]
    );

    let run = run_bin(
        &["list"],
        &env_with(&es, &s3, &[("OUTPUT_FORMAT", "json"), ("LOG_FORMAT", "json")]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stdout.starts_with('['));
    let list: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sts-backup-20261101-0300-oldest",
            SNAP,
            "sts-backup-20261122-0300-newest"
        ]
    );
    assert_eq!(list[1]["indices"], 3);
    assert_eq!(list[1]["shards_successful"], 3);
    assert_eq!(list[1]["shards_failed"], 0);
    assert_eq!(list[1]["start_time"], "2025-11-20T03:00:00Z");
    // JSON logs on stderr are objects, one per line.
    for line in run.stderr.lines() {
        assert!(line.starts_with('{'), "{line}");
    }
}

#[test]
fn list_without_repository_says_so() {
    let s3 = S3::start();
    let es = FakeEs::start(FakeOptions::default());
    let run = run_bin(&["list"], &base_env(&es, &s3));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("is not registered"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("repository_missing_exception: [sts-backup] missing"),
        "{}",
        run.stderr
    );
}

#[test]
fn restore_into_an_empty_cluster_skips_internal_indices() {
    let (s3, es) = setup(FakeOptions::default());
    let run = run_bin(&["restore", SNAP], &env_with(&es, &s3, &[("INDICES_TO_RESTORE", "")]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("shards total 2, successful 2, failed 0"),
        "{}",
        run.stdout
    );
    let req = &es.requests_to("snapshot.restore")[0];
    assert_eq!(
        req.body,
        Some(json!({"indices": "sts*", "include_global_state": false}))
    );
    assert_eq!(req.query, vec![("wait_for_completion".to_string(), "true".to_string())]);
    let indices = es.indices();
    assert!(indices.contains_key("sts_topology_1"));
    assert!(indices.contains_key(DS_INDEX));
    assert!(!indices.contains_key(".slm-history-7-000001"), "{indices:?}");
    assert_eq!(es.data_streams()["sts_k8s_logs"], vec![DS_INDEX.to_string()]);
    assert!(es.requests_to("indices.delete").is_empty());
}

#[test]
fn restore_over_open_indices_is_refused_then_forced() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_index("sts_topology_1", true);
    es.add_index("sts_unrelated", true);
    es.add_data_stream("sts_k8s_logs", &[DS_INDEX]);

    let run = run_bin(&["restore", SNAP], &base_env(&es, &s3));
    assert_eq!(run.code, 3, "{}", run.all());
    let err = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        err.contains("2 open index(es): .ds-sts_k8s_logs-2026.11.20-000001, sts_topology_1"),
        "{err}"
    );
    assert!(err.contains("data stream(s): sts_k8s_logs"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(es.requests_to("indices.delete").is_empty());
    assert!(es.requests_to("snapshot.restore").is_empty());

    let run = run_bin(&["restore", SNAP], &env_with(&es, &s3, &[("RESTORE_FORCE", "true")]));
    assert_eq!(run.code, 0, "{}", run.all());
    let order: Vec<String> = es.requests().iter().map(|r| r.endpoint.clone()).collect();
    let rollover = order.iter().position(|e| e == "indices.rollover").expect("rolled over");
    let delete = order.iter().position(|e| e == "indices.delete").expect("deleted");
    let exists = order.iter().rposition(|e| e == "indices.exists").expect("polled");
    let restore = order.iter().position(|e| e == "snapshot.restore").expect("restored");
    assert!(rollover < delete && delete < exists && exists < restore, "{order:?}");
    assert_eq!(es.requests_to("indices.delete").len(), 2);
    assert!(
        run.stdout.contains("deleted index \"sts_topology_1\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("shards total 2, successful 2, failed 0"),
        "{}",
        run.stdout
    );
    let indices = es.indices();
    assert!(
        indices.contains_key("sts_unrelated"),
        "only conflicting indices are deleted"
    );
    assert!(indices.contains_key(DS_INDEX) && indices.contains_key("sts_topology_1"));
    // The data stream has the restored backing index plus the write index from the rollover.
    assert_eq!(es.data_streams()["sts_k8s_logs"].len(), 2);
}

#[test]
fn restore_with_failed_shards_exits_non_zero() {
    let (s3, es) = setup(FakeOptions {
        restore_failed_shards: 1,
        ..FakeOptions::default()
    });
    let run = run_bin(&["restore", SNAP], &base_env(&es, &s3));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("shards total 2, successful 1, failed 1"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("1 of 2 shard(s) failed"), "{}", run.stderr);
}

#[test]
fn restore_input_errors_exit_2() {
    let (s3, es) = setup(FakeOptions::default());
    let run = run_bin(&["restore", SNAP, "--indices", "*"], &base_env(&es, &s3));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("error: --indices:"), "{}", run.stderr);
    assert!(es.requests().is_empty());

    let run = run_bin(&["restore", "no-such-snapshot"], &base_env(&es, &s3));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("error: SNAPSHOT: no snapshot \"no-such-snapshot\""),
        "{}",
        run.stderr
    );

    let run = run_bin(&["restore", SNAP, "--indices", "other*"], &base_env(&es, &s3));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("matches nothing"), "{}", run.stderr);

    // An explicit pattern restores only that.
    let run = run_bin(
        &["restore"],
        &env_with(
            &es,
            &s3,
            &[("SNAPSHOT_NAME", SNAP), ("INDICES_TO_RESTORE", "sts_topology*")],
        ),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("shards total 1, successful 1, failed 0"),
        "{}",
        run.stdout
    );
    assert!(!es.indices().contains_key(DS_INDEX));
    assert!(es
        .requests_to("snapshot.restore")
        .iter()
        .all(|r| r.body.as_ref().unwrap()["indices"] != "*"));
}

#[test]
fn forced_restore_of_backing_indices_rolls_the_stream_over_first() {
    let (s3, es) = setup(FakeOptions::default());
    es.add_data_stream("sts_k8s_logs", &[DS_INDEX]);
    let env = env_with(
        &es,
        &s3,
        &[("RESTORE_FORCE", "true"), ("INDICES_TO_RESTORE", ".ds-sts_k8s_logs-*")],
    );
    let run = run_bin(&["restore", SNAP], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(es.requests_to("indices.rollover").len(), 1);
    assert!(
        run.stdout.contains("shards total 1, successful 1, failed 0"),
        "{}",
        run.stdout
    );
}

/// HTTPS to Elasticsearch with a private CA: refused without `ES_CA_BUNDLE` (no request
/// reaches the server), trusted with it.
#[test]
fn https_with_a_custom_ca_bundle() {
    let ca = sts_backup_testkit::make_test_ca();
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions {
        tls: Some((ca.path().join("server.pem"), ca.path().join("server.key"))),
        ..FakeOptions::default()
    });
    assert!(es.url().starts_with("https://"));

    let untrusted = run_bin(&["list"], &env_with(&es, &s3, &[("ES_WAIT_TIMEOUT", "2s")]));
    assert_eq!(untrusted.code, 1, "{}", untrusted.all());
    assert!(
        es.requests().is_empty(),
        "no request may get through an untrusted certificate"
    );

    let ca_file = ca.path().join("ca.pem").display().to_string();
    let trusted = env_with(&es, &s3, &[("ES_CA_BUNDLE", ca_file.as_str())]);
    let run = run_bin(&["register", "--no-policy"], &trusted);
    assert_eq!(run.code, 0, "{}", run.all());
    es.seed_snapshot("sts-backup", SNAP, 1_763_607_600_000, &["sts_topology_1"], &[]);
    let run = run_bin(&["list", "-o", "json"], &trusted);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains(SNAP), "{}", run.stdout);

    let not_pem = ca.path().join("ext.cnf").display().to_string();
    let run = run_bin(&["list"], &env_with(&es, &s3, &[("ES_CA_BUNDLE", not_pem.as_str())]));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("--es-ca-bundle"), "{}", run.stderr);
}
