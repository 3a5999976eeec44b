//! `list` against the fake Elasticsearch and the real S3 test server (`restore` is in
//! restore.rs).

mod fake_es;

use fake_es::*;
use serde_json::json;

#[test]
fn list_shows_newest_last_as_table_and_one_line_json() {
    let (s3, es) = registered(FakeOptions::default());
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

/// Issue 14 item 5: state, indices, shards failed, size, and whether each can be restored.
#[test]
fn list_shows_size_and_marks_what_cannot_be_restored() {
    let (s3, es) = registered(FakeOptions::default());
    let seed = |name: &str, ms: i64, edit: &dyn Fn(&mut serde_json::Value)| {
        es.seed_snapshot_with("sts-backup", name, ms, &["sts_a", "sts_b"], &[], edit);
    };
    seed("snap-partial", 1_763_700_000_000, &|i| {
        i["state"] = json!("PARTIAL");
        i["shards"] = json!({"total": 2, "successful": 1, "failed": 1});
    });
    seed("snap-failed", 1_763_800_000_000, &|i| i["state"] = json!("FAILED"));
    seed("snap-newer", 1_763_900_000_000, &|i| i["version"] = json!("9.1.0"));

    let run = run_bin(&["list"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].contains("SIZE") && lines[0].ends_with("RESTORABLE"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with(SNAP) && lines[1].contains("3.0 MiB") && lines[1].ends_with("yes"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("PARTIAL") && lines[2].ends_with("partial (--allow-partial)"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("FAILED") && lines[3].ends_with("no (FAILED)"),
        "{}",
        lines[3]
    );
    assert!(lines[4].ends_with("no (written by 9.1.0)"), "{}", lines[4]);

    let run = run_bin(&["list", "-o", "json"], &base_env(&es, &s3));
    let list: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(list[0]["size_bytes"], 3 * 1_048_576);
    assert_eq!(list[0]["restorable"], true);
    assert_eq!(list[2]["restorable"], false);
    assert_eq!(list[2]["shards_failed"], 0);
    assert_eq!(list[1]["shards_failed"], 1);
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
