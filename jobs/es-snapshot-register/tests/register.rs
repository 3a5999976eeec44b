//! `register` against the fake Elasticsearch (spec-checked) and the real S3 test server.

mod fake_es;

use std::time::Duration;

use fake_es::*;
use serde_json::json;
use sts_backup_testkit::{ACCESS_KEY, SECRET_KEY};

fn puts(es: &FakeEs) -> usize {
    es.requests().iter().filter(|r| r.method == "PUT").count()
}

#[test]
fn first_registration_then_unchanged_then_changed() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    // The keystore on disk has the keys, the nodes have not loaded them yet: only
    // `_nodes/reload_secure_settings` makes `_verify` pass.
    let es = FakeEs::start(FakeOptions::default());
    es.set_keystore("default", ACCESS_KEY, SECRET_KEY);

    let run = run_bin(&["register"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("repository \"sts-backup\": create"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("verified on 1 node(s): es-master-0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("policy \"auto-sts-backup\": create"),
        "{}",
        run.stdout
    );
    assert_no_secrets(&run, &[SECRET_KEY, ACCESS_KEY]);

    // Keystore mode: only the client name, and the keystore reloaded before verifying.
    let put = &es.requests_to("snapshot.create_repository")[0];
    let body = put.body.clone().unwrap();
    assert_eq!(
        body,
        json!({"type": "s3", "settings": {"bucket": BUCKET, "endpoint": format!("127.0.0.1:{}", s3.server.port),
            "protocol": "http", "path_style_access": true, "region": "us-east-1", "client": "default"}})
    );
    let names: Vec<String> = es.requests().iter().map(|r| r.endpoint.clone()).collect();
    let reload = names
        .iter()
        .position(|n| n == "nodes.reload_secure_settings")
        .expect("reload called");
    let verify = names
        .iter()
        .position(|n| n == "snapshot.verify_repository")
        .expect("verify called");
    assert!(reload < verify, "{names:?}");
    let policy = es.policy("auto-sts-backup").unwrap();
    assert_eq!(
        policy,
        json!({"schedule": "0 0 3 * * ?", "name": "<sts-backup-{now{yyyyMMdd-HHmm}}>", "repository": "sts-backup",
            "config": {"indices": "sts*", "ignore_unavailable": false, "include_global_state": false},
            "retention": {"expire_after": "30d", "min_count": 5, "max_count": 30}})
    );
    // The owner marker records this cluster.
    let marker = std::fs::read_to_string(s3.server.object_path(BUCKET, "sts-backup-owner.json")).unwrap();
    assert!(marker.contains(&es.cluster_uuid()), "{marker}");

    // Same configuration again: no write at all.
    es.clear_log();
    let run = run_bin(&["register"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("repository \"sts-backup\": unchanged"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("policy \"auto-sts-backup\": unchanged"),
        "{}",
        run.stdout
    );
    assert_eq!(puts(&es), 0, "{:#?}", es.requests());

    // Changed schedule and SSE: the diff is printed and both are written.
    es.clear_log();
    let run = run_bin(
        &["register", "--schedule", "0 30 2 * * ?"],
        &env_with(&es, &s3, &[("S3_SSE", "AES256")]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("repository \"sts-backup\": update"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("+ settings.server_side_encryption: \"true\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("~ schedule: \"0 0 3 * * ?\" -> \"0 30 2 * * ?\""),
        "{}",
        run.stdout
    );
    assert_eq!(es.requests_to("snapshot.create_repository").len(), 1);
    assert_eq!(es.requests_to("slm.put_lifecycle").len(), 1);
    assert_eq!(
        es.repository("sts-backup").unwrap()["settings"]["server_side_encryption"],
        "true"
    );
}

#[test]
fn inline_credentials_on_7x_are_idempotent_and_never_printed() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = FakeEs::start(FakeOptions {
        version: "7.17.18",
        allow_insecure_settings: true,
        ..FakeOptions::default()
    });
    let env = env_with(
        &es,
        &s3,
        &[
            ("ES_S3_CREDENTIALS", "inline"),
            ("BACKUP_ELASTICSEARCH_S3_PREFIX", "es/"),
        ],
    );
    let run = run_bin(&["register", "--no-policy"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_secrets(&run, &[SECRET_KEY, ACCESS_KEY]);
    assert!(run.stdout.contains("+ settings.secret_key: (hidden)"), "{}", run.stdout);
    let body = es.requests_to("snapshot.create_repository")[0].body.clone().unwrap();
    assert_eq!(body["settings"]["access_key"], ACCESS_KEY);
    assert_eq!(body["settings"]["base_path"], "es");
    assert!(body["settings"].get("client").is_none());
    assert!(es.requests_to("nodes.reload_secure_settings").is_empty());
    assert!(es.requests_to("slm.put_lifecycle").is_empty());

    // GET hides the keys; the visible settings match and _verify passes: nothing is sent.
    es.clear_log();
    let run = run_bin(&["register", "--no-policy"], &env);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("repository \"sts-backup\": unchanged"),
        "{}",
        run.stdout
    );
    assert_eq!(puts(&es), 0);
}

#[test]
fn inline_credentials_are_refused_on_8x() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = FakeEs::start(FakeOptions::default());
    let run = run_bin(&["register"], &env_with(&es, &s3, &[("ES_S3_CREDENTIALS", "inline")]));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("error: --credentials: inline S3 keys"),
        "{}",
        run.stderr
    );
    assert!(es.requests_to("snapshot.create_repository").is_empty());
    assert_no_secrets(&run, &[SECRET_KEY]);
}

#[test]
fn missing_bucket_restore_only_fails_and_scheduled_creates_it() {
    let s3 = S3::start();
    let es = fake_with_keystore(FakeOptions::default());
    let run = run_bin(&["register", "--no-policy"], &base_env(&es, &s3));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("restores cannot work"), "{}", run.stderr);
    assert!(run.stderr.contains("error: --bucket:"), "{}", run.stderr);
    assert!(es.requests_to("snapshot.create_repository").is_empty());
    assert!(!s3.bucket_exists(BUCKET));

    let run = run_bin(&["register"], &env_with(&es, &s3, &[("ES_CREATE_BUCKET", "true")]));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("bucket \"sts-elasticsearch-backup\": created"),
        "{}",
        run.stdout
    );
    assert!(s3.bucket_exists(BUCKET));
    assert!(es.repository("sts-backup").is_some());
}

#[test]
fn keystore_without_the_keys_fails_verification_like_elasticsearch() {
    // The job reaches the bucket, but the Elasticsearch nodes have no S3 keys for the client.
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = FakeEs::start(FakeOptions::default());
    let run = run_bin(&["register", "--s3-client", "minio"], &base_env(&es, &s3));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("repository_verification_exception: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("s3 client [minio] has no keys"), "{}", run.stderr);
    assert_eq!(es.repository("sts-backup").unwrap()["settings"]["client"], "minio");
}

#[test]
fn verification_failure_names_the_nodes() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions {
        nodes: vec!["es-master-0".into(), "es-data-1".into()],
        broken_nodes: vec!["es-data-1".into()],
        ..FakeOptions::default()
    });
    let run = run_bin(&["register"], &base_env(&es, &s3));
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("failed verification on node(s) n1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("repository_verification_exception: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("es-data-1"), "{}", run.stderr);
    assert!(
        es.requests_to("slm.put_lifecycle").is_empty(),
        "no policy on an unverified repository"
    );
}

#[test]
fn waits_for_elasticsearch_that_starts_late() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let port = sts_backup_testkit::free_port();
    let env: Vec<(&str, String)> = vec![
        ("ELASTICSEARCH_ENDPOINT", format!("127.0.0.1:{port}")),
        ("S3_ENDPOINT", s3.server.endpoint()),
        ("S3_CREDENTIALS_DIR", s3.creds.path().display().to_string()),
        ("ES_WAIT_TIMEOUT", "30s".into()),
    ];
    let child = std::thread::spawn(move || run_bin(&["register"], &env));
    std::thread::sleep(Duration::from_millis(2500));
    let es = fake_with_keystore(FakeOptions {
        port: Some(port),
        ..FakeOptions::default()
    });
    let run = child.join().unwrap();
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("waiting for Elasticsearch"), "{}", run.stderr);
    assert!(es.repository("sts-backup").is_some());
    assert!(es.policy("auto-sts-backup").is_some());
}

#[test]
fn gives_up_when_elasticsearch_never_answers() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let port = sts_backup_testkit::free_port();
    let env: Vec<(&str, String)> = vec![
        ("ELASTICSEARCH_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("S3_ENDPOINT", s3.server.endpoint()),
        ("S3_CREDENTIALS_DIR", s3.creds.path().display().to_string()),
        ("ES_WAIT_TIMEOUT", "2s".into()),
    ];
    let run = run_bin(&["register"], &env);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("was not ready within 2s"), "{}", run.stderr);
}

#[test]
fn rejected_credentials_exit_2_without_leaking_them() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions {
        basic_auth: Some(("elastic".into(), "right-Pa55word".into())),
        ..FakeOptions::default()
    });
    let run = run_bin(
        &["register"],
        &env_with(
            &es,
            &s3,
            &[("ES_USERNAME", "elastic"), ("ES_PASSWORD", "wrong-Pa55word")],
        ),
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("error: ES_USERNAME/ES_PASSWORD: Elasticsearch rejected the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("security_exception: unable to authenticate user [elastic]"),
        "{}",
        run.stderr
    );
    assert_no_secrets(&run, &["wrong-Pa55word", "right-Pa55word"]);
    assert_eq!(es.requests().len(), 1, "no retry and no further request after a 401");

    // The right password from a file works, and is not printed either.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "right-Pa55word\n").unwrap();
    let file = dir.path().join("password").display().to_string();
    let run = run_bin(
        &["register"],
        &env_with(&es, &s3, &[("ES_USERNAME", "elastic"), ("ES_PASSWORD_FILE", &file)]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_secrets(&run, &["right-Pa55word", SECRET_KEY]);
}

#[test]
fn invalid_input_exits_2_naming_the_flag_before_any_request() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions::default());
    let cases: &[(&[&str], &str)] = &[
        (&["--schedule", "0 3 * * *"], "--schedule"),
        (&["--schedule", "0 0 3 * * *"], "--schedule"),
        (&["--schedule", "* 0 3 * * ?"], "--schedule"),
        (&["--min-count", "0"], "--min-count"),
        (&["--min-count", "40", "--max-count", "30"], "--min-count"),
        (&["--max-count", "0"], "--max-count"),
        (&["--snapshot-name", "<Sts-{now}>"], "--snapshot-name"),
        (&["--snapshot-name", "sts-{now{yyyyMMdd}}"], "--snapshot-name"),
        (&["--expire-after", "30days"], "--expire-after"),
        (&["--indices", "*"], "--indices"),
        (&["--sse", "aws:kms"], "--sse"),
        (&["--min-count", "five"], "--min-count"),
        (&["--execute-now", "--no-policy"], "--execute-now"),
        (&["--bucket", "Bad_Bucket"], "--bucket"),
    ];
    for (args, flag) in cases {
        let mut argv = vec!["register"];
        argv.extend_from_slice(args);
        let run = run_bin(&argv, &base_env(&es, &s3));
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {}", run.stderr);
        assert!(errors[0].contains(flag), "{args:?}: {}", errors[0]);
    }
    // Retention from the environment too.
    let run = run_bin(
        &["register"],
        &env_with(
            &es,
            &s3,
            &[("BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MIN_COUNT", "0")],
        ),
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(es.requests().is_empty(), "{:#?}", es.requests());
}

/// Issue 10 item 8: repository, policy and snapshot names are checked like Elasticsearch
/// does, before any request, in every subcommand; nothing reaches the fake or the bucket.
#[test]
fn bad_names_exit_2_before_any_request_in_every_subcommand() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions::default());
    let long = "a".repeat(256);
    let bad = [
        "..",
        ".",
        "Upper",
        "a/b",
        "a\\b",
        "a*",
        "a?",
        "a\"b",
        "a<b",
        "a>b",
        "a|b",
        "a,b",
        "a#b",
        "a b",
        "_x",
        "-x",
        "+x",
        long.as_str(),
    ];
    for name in bad {
        let repo = format!("--repository={name}");
        let policy = format!("--policy={name}");
        for sub in [
            vec!["register", repo.as_str()],
            vec!["list", repo.as_str()],
            vec!["restore", "snap", repo.as_str()],
            vec!["register", policy.as_str()],
            vec!["restore", "--", name],
        ] {
            let run = run_bin(&sub, &base_env(&es, &s3));
            assert_eq!(run.code, 2, "{sub:?}: {}", run.all());
            let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
            assert_eq!(errors.len(), 1, "{sub:?}: {}", run.stderr);
            let flag = if sub.iter().any(|a| a.starts_with("--policy")) {
                "--policy"
            } else if sub.iter().any(|a| a.starts_with("--repository")) {
                "--repository"
            } else {
                "SNAPSHOT"
            };
            assert!(
                errors[0].starts_with(&format!("error: {flag}: ")),
                "{sub:?}: {}",
                errors[0]
            );
        }
    }
    assert!(es.requests().is_empty(), "{:#?}", es.requests());
    let objects: Vec<_> = std::fs::read_dir(s3.server.dir.path().join(BUCKET)).unwrap().collect();
    assert!(objects.is_empty(), "nothing written to the bucket: {objects:?}");
    // The negative control: a valid name does reach the fake.
    let run = run_bin(
        &["register", "--repository", "sts-backup.2", "--no-policy"],
        &base_env(&es, &s3),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(!es.requests().is_empty());
}

#[test]
fn execute_now_waits_for_the_snapshot() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions {
        snapshot_delay: Duration::from_millis(1500),
        ..FakeOptions::default()
    });
    es.add_index("sts_topology", true);
    es.add_index(".slm-history-7-000001", true);
    es.add_data_stream("sts_k8s_logs", &[".ds-sts_k8s_logs-2026.11.20-000001"]);
    let run = run_bin(&["register", "--execute-now"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains(": SUCCESS (2 indices"), "{}", run.stdout);
    let exec = es.requests_to("slm.execute_lifecycle");
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0].method, "PUT");
    assert!(es.requests_to("snapshot.get").len() >= 2, "polled until done");
    // The snapshot is really in the bucket.
    assert!(s3.server.object_path(BUCKET, "index.latest").exists());

    let run = run_bin(&["list", "-o", "json"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let list: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "SUCCESS");
    assert_eq!(list[0]["indices"], 2);
    assert!(list[0]["name"].as_str().unwrap().starts_with("sts-backup-"));
}

#[test]
fn two_clusters_never_write_one_repository() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let a = fake_with_keystore(FakeOptions {
        cluster_name: "cluster-a".into(),
        ..FakeOptions::default()
    });
    let run = run_bin(&["register", "--no-policy"], &base_env(&a, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    a.seed_snapshot(
        "sts-backup",
        "sts-backup-20261120-0300-abc",
        1_763_607_600_000,
        &["sts_topology"],
        &[],
    );

    // Cluster B must not become a second writer.
    let b = fake_with_keystore(FakeOptions {
        cluster_name: "cluster-b".into(),
        ..FakeOptions::default()
    });
    let run = run_bin(&["register"], &base_env(&b, &s3));
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("belongs to cluster \"cluster-a\""),
        "{}",
        run.stderr
    );
    assert!(b.requests_to("snapshot.create_repository").is_empty());

    // Read-only attach works, sends no policy, and sees A's snapshots.
    let run = run_bin(
        &["register", "--readonly"],
        &env_with(&b, &s3, &[("ES_READONLY", "true")]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(b.repository("sts-backup").unwrap()["settings"]["readonly"], "true");
    assert!(b.requests_to("slm.put_lifecycle").is_empty());
    let run = run_bin(&["list"], &base_env(&b, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("sts-backup-20261120-0300-abc"), "{}", run.stdout);

    // A read-only registration is never silently turned writable.
    let run = run_bin(&["register"], &base_env(&b, &s3));
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stderr.contains("registered read-only"), "{}", run.stderr);

    // After A is gone, B takes over explicitly.
    let run = run_bin(&["register", "--take-over"], &base_env(&b, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("- settings.readonly"), "{}", run.stdout);
    let marker = std::fs::read_to_string(s3.server.object_path(BUCKET, "sts-backup-owner.json")).unwrap();
    assert!(marker.contains(&b.cluster_uuid()));

    // A location with snapshots but no marker (e.g. written by the old scripts) is refused too.
    std::fs::remove_file(s3.server.object_path(BUCKET, "sts-backup-owner.json")).unwrap();
    let c = fake_with_keystore(FakeOptions::default());
    let run = run_bin(&["register"], &base_env(&c, &s3));
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stderr.contains("did not register"), "{}", run.stderr);
}

#[test]
fn help_documents_exit_codes_and_env() {
    let run = run_bin(&["--help"], &[]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    assert!(run.stdout.contains("ELASTICSEARCH_ENDPOINT"));
    let run = run_bin(&["register", "--help"], &[]);
    for env in [
        "BACKUP_ELASTICSEARCH_BUCKET_NAME",
        "BACKUP_ELASTICSEARCH_S3_PREFIX",
        "ES_S3_CREDENTIALS",
        "ES_S3_CLIENT",
        "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_POLICY_NAME",
        "BACKUP_ELASTICSEARCH_SCHEDULED_SCHEDULE",
        "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_NAME_TEMPLATE",
        "BACKUP_ELASTICSEARCH_SCHEDULED_INDICES",
        "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_EXPIRE_AFTER",
        "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MIN_COUNT",
        "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MAX_COUNT",
        "ES_NO_POLICY",
        "ES_EXECUTE_NOW",
        "ES_CREATE_BUCKET",
        "ES_READONLY",
        "S3_ENDPOINT",
        "BACKUP_ELASTICSEARCH_SNAPSHOT_REPOSITORY_NAME",
    ] {
        assert!(run.stdout.contains(env), "register --help lacks {env}");
    }
}

#[test]
fn api_key_from_env_or_file() {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(FakeOptions {
        api_key: Some("key-id:Api-Key-S3cret".into()),
        ..FakeOptions::default()
    });
    // Raw `id:key` is encoded by the job.
    let run = run_bin(
        &["register", "--no-policy"],
        &env_with(&es, &s3, &[("ES_API_KEY", "key-id:Api-Key-S3cret")]),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_secrets(&run, &["Api-Key-S3cret"]);
    // The encoded form, from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apikey");
    std::fs::write(&file, "a2V5LWlkOkFwaS1LZXktUzNjcmV0\n").unwrap();
    let file = file.display().to_string();
    let run = run_bin(&["list"], &env_with(&es, &s3, &[("ES_API_KEY_FILE", &file)]));
    assert_eq!(run.code, 0, "{}", run.all());
    // No key at all: 401, exit 2, naming where credentials come from.
    let run = run_bin(&["list"], &base_env(&es, &s3));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("missing authentication credentials"),
        "{}",
        run.stderr
    );
}
