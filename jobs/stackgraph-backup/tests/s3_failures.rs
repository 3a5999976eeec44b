//! Failures only a network store has: wrong credentials, a missing bucket, an unreachable
//! endpoint, the server dying mid-upload. All against a real `rclone serve s3`.

mod common;

use std::time::Duration;

use common::{progress_bytes, random_file, sg, Run, Watched, BUCKET};
use sts_backup_testkit::{free_port, S3Server, ACCESS_KEY, SECRET_KEY};

/// stackgraph-backup pointed at an S3 endpoint with a credentials directory.
fn sg_s3(endpoint: &str, creds: &std::path::Path, storage: &str) -> std::process::Command {
    let mut cmd = sg();
    cmd.env("BACKUP_STORAGE", storage)
        .env("S3_ENDPOINT", endpoint)
        .env("S3_CREDENTIALS_DIR", creds);
    cmd
}

fn run(endpoint: &str, creds: &std::path::Path, storage: &str, args: &[&str]) -> Run {
    Run::from(sg_s3(endpoint, creds, storage).args(args).output().unwrap())
}

#[test]
fn wrong_credentials_are_invalid_input_and_change_nothing() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let wrong_secret = server.credentials_dir(ACCESS_KEY, "not-the-secret-key-at-all");
    let out = run(
        &server.endpoint(),
        wrong_secret.path(),
        "s3://sts-stackgraph-backup",
        &["backup", "--", "echo", "x"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("access denied"), "{out:?}");
    assert!(
        !out.stderr.contains("not-the-secret-key-at-all"),
        "the secret must never be printed: {out:?}"
    );
    let unknown_key = server.credentials_dir("nosuchaccesskey", SECRET_KEY);
    let out = run(
        &server.endpoint(),
        unknown_key.path(),
        "s3://sts-stackgraph-backup",
        &["list"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(std::fs::read_dir(server.dir.path().join(BUCKET)).unwrap().count(), 0);

    // Credentials from the environment work the same way.
    let out = Run::from(
        sg().env("BACKUP_STORAGE", "s3://sts-stackgraph-backup")
            .env("S3_ENDPOINT", server.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .args(["backup", "--", "echo", "x"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn missing_bucket_and_bad_settings_are_invalid_input() {
    let server = S3Server::start();
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let out = run(
        &server.endpoint(),
        creds.path(),
        "s3://no-such-bucket",
        &["backup", "--", "echo", "x"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("bucket \"no-such-bucket\" does not exist"),
        "{out:?}"
    );

    // With --create-bucket the missing bucket is made, and the backup lands in it.
    let out = run(
        &server.endpoint(),
        creds.path(),
        "s3://no-such-bucket",
        &["backup", "--create-bucket", "--", "echo", "x"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read_dir(server.dir.path().join("no-such-bucket"))
            .unwrap()
            .count(),
        2
    );

    let out = run(&server.endpoint(), creds.path(), "s3://x", &["list"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--storage: bucket"), "{out:?}");

    let out = Run::from(
        sg_s3(&server.endpoint(), creds.path(), "s3://sts-stackgraph-backup")
            .env("S3_SSE", "aws:kms")
            .args(["backup", "--", "echo", "x"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--sse") && out.stderr.contains("SSE-KMS"),
        "{out:?}"
    );

    let missing = tempfile::tempdir().unwrap();
    let out = run(
        &server.endpoint(),
        missing.path(),
        "s3://sts-stackgraph-backup",
        &["list"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--credentials-dir"), "{out:?}");
}

#[test]
fn unreachable_endpoint_is_a_runtime_failure() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("accesskey"), ACCESS_KEY).unwrap();
    std::fs::write(creds.path().join("secretkey"), SECRET_KEY).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let out = run(
        &endpoint,
        creds.path(),
        "s3://sts-stackgraph-backup",
        &["backup", "--", "echo", "x"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cannot reach the storage endpoint"), "{out:?}");
    assert_eq!(
        out.stderr.trim().lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{out:?}"
    );
}

#[test]
fn server_killed_mid_upload_leaves_nothing_under_the_name() {
    let mut server = S3Server::start();
    server.create_bucket(BUCKET);
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let work = tempfile::tempdir().unwrap();
    let input = random_file(work.path(), 11 * 1024 * 1024, 3);
    // Two full parts are read (so the multipart upload exists and parts are going out),
    // then the exporter pauses while the server is killed.
    let script = format!("cat {0}; sleep 5; cat {0}", input.display());
    let mut cmd = sg_s3(&server.endpoint(), creds.path(), "s3://sts-stackgraph-backup");
    cmd.env("STS_PROGRESS_INTERVAL", "100ms").args([
        "backup",
        "--part-size",
        "5MiB",
        "--name-template",
        "killed.graph",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let mut backup = Watched::spawn(cmd);
    backup.wait_for("11 MiB read", |l| {
        progress_bytes(l).is_some_and(|b| b >= 11 * 1024 * 1024)
    });
    std::thread::sleep(Duration::from_millis(700));
    server.kill();
    let out = backup.finish();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the upload was aborted") || out.stderr.contains("aborting the upload"),
        "{out:?}"
    );
    assert!(out.stderr.contains("cannot reach the storage endpoint"), "{out:?}");
    server.restart();
    // The multipart upload could not be aborted while the server was down, so rclone keeps
    // its parts in a hidden staging directory. That is server state, not an object: no object
    // exists under the name. (A restarted rclone no longer lists the upload, so the pruner's
    // --abort-uploads-older-than cannot abort it through S3; real S3 and MinIO still list it.)
    let objects: Vec<_> = std::fs::read_dir(server.dir.path().join(BUCKET))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".rclone_temp_multipart_"))
        .collect();
    // The run's claim on the name could not be removed either; it says so, and the claim is
    // the pruner's to clean (never a backup, never under the name).
    let (claims, under_name): (Vec<_>, Vec<_>) = objects.iter().partition(|n| n.starts_with(".sts-backup-claim~"));
    assert!(
        under_name.is_empty(),
        "nothing may be left under the final name: {under_name:?}"
    );
    assert!(
        claims.is_empty() || out.stderr.contains("could not remove the claim"),
        "{claims:?} {out:?}"
    );
    let out = run(
        &server.endpoint(),
        creds.path(),
        "s3://sts-stackgraph-backup",
        &["list", "-o", "json"],
    );
    assert_eq!(out.stdout.trim(), "[]", "{out:?}");
}

/// A backup of `script`'s output in 5 MiB parts to a fresh rclone server, progress every 100 ms.
fn watched_backup(script: &str) -> (S3Server, tempfile::TempDir, Watched) {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let mut cmd = sg_s3(&server.endpoint(), creds.path(), "s3://sts-stackgraph-backup");
    cmd.env("STS_PROGRESS_INTERVAL", "100ms")
        .args(["backup", "--part-size", "5MiB", "--", "sh", "-c", script]);
    let backup = Watched::spawn(cmd);
    (server, creds, backup)
}

/// A pruner with a short `--abort-uploads-older-than` aborts a backup's upload while it is
/// still being written: the backup says what happened and how to avoid it, not `"X" not found`.
#[test]
fn an_upload_aborted_by_a_pruner_meanwhile_is_named() {
    let (server, creds, mut backup) = watched_backup("head -c 12000000 /dev/zero; sleep 4; head -c 6000000 /dev/zero");
    backup.wait_for("12 MB read", |l| progress_bytes(l).is_some_and(|b| b >= 12_000_000));
    std::thread::sleep(Duration::from_millis(1500));
    // The pruner's own code path, with a threshold shorter than this backup takes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(async {
        let args = sts_backup_core::storage::StorageArgs {
            storage: format!("s3://{BUCKET}"),
            s3_endpoint: Some(server.endpoint()),
            credentials_dir: Some(creds.path().to_path_buf()),
            ..Default::default()
        };
        let storage = sts_backup_core::storage::Storage::open(&args).await.unwrap();
        let retention = sts_backup_core::retention::RetentionArgs {
            retention: Some("7d".into()),
            abort_uploads_older_than: "1s".into(),
            ..Default::default()
        };
        sts_backup_core::retention::prune(&storage, &retention, chrono::Utc::now())
            .await
            .unwrap()
    });
    assert_eq!(report.uploads_aborted.len(), 1, "{report:?}");
    let out = backup.finish();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("was aborted while this run was still writing it")
            && out.stderr.contains("--abort-uploads-older-than"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("not found"), "{out:?}");
}

#[test]
fn interrupted_backup_aborts_its_upload() {
    let (server, _creds, mut backup) = watched_backup("head -c 6000000 /dev/zero; sleep 30");
    // Mid-stream: the exporter has written everything it will before its long sleep.
    backup.wait_for("6 MB read", |l| progress_bytes(l).is_some_and(|b| b >= 6_000_000));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &backup.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = backup.finish();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("interrupted by SIGTERM"), "{out:?}");
    assert_eq!(std::fs::read_dir(server.dir.path().join(BUCKET)).unwrap().count(), 0);
}

#[test]
fn tls_with_a_custom_ca_bundle() {
    let ca = sts_backup_testkit::make_test_ca();
    let server = S3Server::start_tls(&ca.path().join("server.pem"), &ca.path().join("server.key"));
    server.create_bucket(BUCKET);
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let endpoint = format!("https://localhost:{}", server.port);
    let backup = |ca_bundle: Option<&std::path::Path>| {
        let mut cmd = sg_s3(&endpoint, creds.path(), "s3://sts-stackgraph-backup");
        cmd.args([
            "backup",
            "--name-template",
            "tls-%H%M%S%f.graph",
            "--",
            "echo",
            "over tls",
        ]);
        if let Some(ca) = ca_bundle {
            cmd.env("S3_CA_BUNDLE", ca);
        }
        Run::from(cmd.output().unwrap())
    };
    // The test CA is not in the system roots: the certificate must be refused.
    let out = backup(None);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(std::fs::read_dir(server.dir.path().join(BUCKET)).unwrap().count(), 0);
    // Trusting the CA through --ca-bundle makes it work.
    let out = backup(Some(&ca.path().join("ca.pem")));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_dir(server.dir.path().join(BUCKET)).unwrap().count(), 2);
    // A file that holds no certificate is invalid input.
    let out = backup(Some(&ca.path().join("ext.cnf")));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--ca-bundle"), "{out:?}");
}
