//! The binary as the CronJob runs it: flags and env twins, output lines, JSON, exit codes.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Duration, Utc};
use sts_backup_testkit::{S3Server, ACCESS_KEY, SECRET_KEY};

fn name(t: DateTime<Utc>) -> String {
    t.format("sts-backup-%Y%m%d-%H%M.graph").to_string()
}

fn put_backup(dir: &Path, t: DateTime<Utc>) -> String {
    let key = name(t);
    std::fs::write(dir.join(&key), b"data").unwrap();
    std::fs::write(dir.join(format!("{key}.manifest.json")), manifest(&key, t)).unwrap();
    key
}

/// A valid manifest for the 4 bytes `data`, as stackgraph-backup writes it.
fn manifest(key: &str, t: DateTime<Utc>) -> String {
    let sha = "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7";
    serde_json::json!({
        "format": 1, "name": key, "size": 4, "sha256": sha, "created": t, "compression": "none",
        "raw_size": 4, "raw_sha256": sha, "exporter": ["cat"], "tool": "test",
    })
    .to_string()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The binary with a clean environment (no inherited BACKUP_*/S3_* values).
fn pruner() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention-pruner"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKUP_") || k.starts_with("S3_") || k.starts_with("AWS_") || k == "OUTPUT_FORMAT" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// A local backup directory: two expired backups, one fresh, one unrelated file.
fn local() -> (tempfile::TempDir, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let expired = vec![
        put_backup(dir.path(), now - Duration::days(40)),
        put_backup(dir.path(), now - Duration::days(41)),
    ];
    let fresh = put_backup(dir.path(), now - Duration::hours(2));
    std::fs::write(dir.path().join("sts-export.graph"), b"manual").unwrap();
    (dir, expired, fresh)
}

fn storage_flag(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn help_lists_the_exit_codes_and_every_env_twin() {
    let (code, out, _) = run(pruner().arg("--help"));
    assert_eq!(code, 0);
    for needle in [
        "Exit codes:",
        "0  success",
        "1  runtime failure",
        "2  invalid input",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_PARSE_REGEXP",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_DATETIME_PARSE_FORMAT",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_LAST",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_DAILY",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_WEEKLY",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_MONTHLY",
        "BACKUP_ABORT_UPLOADS_OLDER_THAN",
        "BACKUP_PRUNE_DRY_RUN",
        "OUTPUT_FORMAT",
        "LOG_FORMAT",
        "BACKUP_STORAGE",
        "S3_ENDPOINT",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}:\n{out}");
    }
    assert!(!out.contains("3  refused"), "this job never exits 3");
}

#[test]
fn invalid_input_exits_2_with_one_line_and_changes_nothing() {
    let (dir, _, _) = local();
    let before = files(dir.path());
    let cases: &[(&[&str], &str)] = &[
        (
            &["--retention", "days=30) + __import__('os').system('true'"],
            "--retention",
        ),
        (&["--retention", "days=-1"], "--retention"),
        (&["--retention", "days=1, days=2"], "--retention"),
        (&["--retention", "fortnights=2"], "--retention"),
        (&["--retention", "30x"], "--retention"),
        (&["--retention", "30d", "--min-keep", "0"], "--min-keep"),
        (
            &["--retention", "30d", "--name-regexp", "sts-backup-.*"],
            "--name-regexp",
        ),
        (&["--retention", "30d", "--datetime-format", "%Q"], "--datetime-format"),
        (&["--retention", "30d", "--keep-daily=-3"], "--keep-daily"),
        (
            &["--retention", "30d", "--abort-uploads-older-than", "later"],
            "--abort-uploads-older-than",
        ),
        (&["--retention", "30d", "-o", "yaml"], "--output"),
    ];
    for (args, flag) in cases {
        let (code, out, err) = run(pruner().arg("--storage").arg(storage_flag(dir.path())).args(*args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(flag), "{args:?}: {err}");
        if !flag.starts_with("--keep") && *flag != "--output" {
            // Our own validation: exactly one `error:` line.
            let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
            assert_eq!(lines.len(), 1, "{err}");
        }
    }
    // A missing storage directory is also a usage error.
    let (code, _, err) = run(pruner().args(["--storage", "file:///nonexistent/sts", "--retention", "30d"]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(files(dir.path()), before);
}

#[test]
fn text_output_keeps_the_reference_lines() {
    let (dir, expired, fresh) = local();
    let (code, out, err) = run(pruner()
        .arg("--storage")
        .arg(storage_flag(dir.path()))
        .args(["--retention", "days = 30"]));
    assert_eq!(code, 0, "{err}");
    for k in &expired {
        assert!(out.contains(&format!("Purging backup \"{k}\"\n")), "{out}");
    }
    assert!(
        out.contains(&format!(
            "Not purging backup \"{fresh}\" (newest, min-keep, within retention)"
        )),
        "{out}"
    );
    assert!(out.contains("Summary: kept 1, purged 2, ignored 1"), "{out}");
    assert!(
        !out.contains("sts-export.graph"),
        "ignored keys are only counted: {out}"
    );
    assert!(
        err.contains("Purging backup"),
        "per-key lines are logged on stderr too: {err}"
    );
    assert_eq!(
        files(dir.path()),
        vec![
            fresh.clone(),
            format!("{fresh}.manifest.json"),
            "sts-export.graph".into()
        ]
    );
}

#[test]
fn env_twins_dry_run_and_json() {
    let (dir, expired, fresh) = local();
    let before = files(dir.path());
    let (code, out, err) = run(pruner()
        .env("BACKUP_STORAGE", storage_flag(dir.path()))
        .env("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA", "days = 30")
        .env("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_LAST", "")
        .env("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP", "")
        .env("BACKUP_PRUNE_DRY_RUN", "true")
        .env("OUTPUT_FORMAT", "json")
        .env("LOG_FORMAT", "json"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["summary"]["purged"], 2);
    assert_eq!(doc["summary"]["kept"], 1);
    assert_eq!(doc["summary"]["ignored"], 1);
    assert_eq!(doc["summary"]["bytes_freed"], 0);
    let expired_bytes: u64 = expired
        .iter()
        .flat_map(|k| [k.clone(), format!("{k}.manifest.json")])
        .map(|k| std::fs::metadata(dir.path().join(k)).unwrap().len())
        .sum();
    assert_eq!(doc["summary"]["bytes_selected"], expired_bytes);
    let mut purged: Vec<String> = doc["purged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect();
    purged.sort();
    let mut want = expired.clone();
    want.sort();
    assert_eq!(purged, want);
    assert_eq!(doc["kept"][0]["key"], fresh.as_str());
    assert_eq!(files(dir.path()), before, "dry run deletes nothing");
    // JSON logs on stderr are objects, one per line.
    for line in err.lines() {
        assert!(line.starts_with('{'), "{line}");
    }
    // The same without dry run deletes.
    let (code, _, err) = run(pruner()
        .env("BACKUP_STORAGE", storage_flag(dir.path()))
        .env("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA", "720h")
        .env("BACKUP_PRUNE_DRY_RUN", "false")
        .env("OUTPUT_FORMAT", "table"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(files(dir.path()).len(), 3);
}

#[test]
fn without_a_policy_nothing_is_deleted() {
    let (dir, _, _) = local();
    let before = files(dir.path());
    let (code, out, _) = run(pruner().arg("--storage").arg(storage_flag(dir.path())));
    assert_eq!(code, 0);
    assert!(out.contains("No retention configured"), "{out}");
    assert_eq!(files(dir.path()), before);
}

#[test]
fn prunes_s3_and_exits_1_when_storage_fails() {
    let server = S3Server::start();
    server.create_bucket("sts-stackgraph-backup");
    let bucket = server.dir.path().join("sts-stackgraph-backup");
    let now = Utc::now();
    let old = put_backup(&bucket, now - Duration::days(60));
    let new = put_backup(&bucket, now - Duration::days(1));
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let s3 = |cmd: &mut Command, endpoint: &str| {
        cmd.args(["--storage", "s3://sts-stackgraph-backup", "--s3-endpoint", endpoint])
            .arg("--credentials-dir")
            .arg(creds.path())
            .args(["-o", "json"]);
    };
    let mut cmd = pruner();
    s3(&mut cmd, &server.endpoint());
    cmd.args(["--keep-daily", "7"]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["summary"]["purged"], 0, "keep-daily 7 keeps both days: {doc}");
    let mut cmd = pruner();
    s3(&mut cmd, &server.endpoint());
    cmd.args(["--keep-daily", "1"]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["purged"][0]["key"], old.as_str(), "{doc}");
    assert_eq!(doc["summary"]["delete_requests"], 2);
    assert!(!bucket.join(&old).exists() && bucket.join(&new).exists());

    // Nothing listens there any more: a runtime failure, exit 1.
    let endpoint = server.endpoint();
    drop(server);
    let mut cmd = pruner();
    s3(&mut cmd, &endpoint);
    cmd.args(["--keep-daily", "1"]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
}

/// The pruner against rclone S3 with `args`; returns (exit, stdout JSON or text, stderr).
fn prune_s3(server: &S3Server, creds: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = pruner();
    cmd.args([
        "--storage",
        "s3://sts-stackgraph-backup",
        "--s3-endpoint",
        &server.endpoint(),
    ])
    .arg("--credentials-dir")
    .arg(creds)
    .args(args);
    run(&mut cmd)
}

/// Issue 10 item 2: a newest backup whose manifest is truncated, or whose manifest size
/// disagrees with the data, is not "newest, min-keep": the floor keeps the newest
/// restorable one, and the broken one is reported.
#[test]
fn the_floor_counts_only_restorable_backups() {
    for breakage in ["truncated manifest", "size mismatch"] {
        let server = S3Server::start();
        server.create_bucket("sts-stackgraph-backup");
        let bucket = server.dir.path().join("sts-stackgraph-backup");
        let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
        let now = Utc::now();
        let good_old = put_backup(&bucket, now - Duration::days(30));
        let good_new = put_backup(&bucket, now - Duration::days(20));
        let broken = put_backup(&bucket, now - Duration::days(10));
        match breakage {
            "truncated manifest" => {
                let m = bucket.join(format!("{broken}.manifest.json"));
                let text = std::fs::read_to_string(&m).unwrap();
                std::fs::write(&m, &text[..text.len() / 2]).unwrap();
            }
            _ => std::fs::write(bucket.join(&broken), b"data and more").unwrap(),
        }
        let (code, out, err) = prune_s3(&server, creds.path(), &["--retention", "7d"]);
        assert_eq!(code, 0, "{breakage}: {err}");
        assert!(
            out.contains(&format!("Not purging backup \"{good_new}\" (newest, min-keep)")),
            "{breakage}: {out}"
        );
        assert!(
            out.contains(&format!("Purging backup \"{good_old}\"")),
            "{breakage}: {out}"
        );
        assert!(
            out.contains(&format!("Backup \"{broken}\" cannot be restored")),
            "{breakage}: the broken backup is reported: {out}"
        );
        assert!(bucket.join(&good_new).exists() && bucket.join(format!("{good_new}.manifest.json")).exists());
    }
}

/// Issue 10 item 3: StackState's own backups (no manifest, not written by this tool) are
/// backups to the pruner: retention and the floor apply; they are not orphans.
#[test]
fn stackstate_backups_without_manifest_are_kept_by_the_floor() {
    let server = S3Server::start();
    server.create_bucket("sts-stackgraph-backup");
    let bucket = server.dir.path().join("sts-stackgraph-backup");
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let now = Utc::now();
    let legacy: Vec<String> = [60, 50, 40]
        .iter()
        .map(|d| {
            let key = name(now - Duration::days(*d));
            std::fs::write(bucket.join(&key), b"stackstate backup").unwrap();
            key
        })
        .collect();
    let (code, out, err) = prune_s3(&server, creds.path(), &["--retention", "30d", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["summary"]["kept"], 1, "{doc}");
    assert_eq!(doc["kept"][0]["key"], legacy[2].as_str(), "{doc}");
    assert_eq!(doc["summary"]["purged"], 2, "{doc}");
    assert_eq!(doc["summary"]["orphans"], 0, "{doc}");
    assert!(bucket.join(&legacy[2]).exists());
}

/// Issue 10 item 13: backups exist but --datetime-format parses none of their names
/// (seconds in the name template): exit 2 naming the flags, nothing deleted.
#[test]
fn ignoring_every_backup_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now() - Duration::days(40);
    for s in 0..2 {
        let key = (now + Duration::seconds(s))
            .format("sts-backup-%Y%m%d-%H%M%S.graph")
            .to_string();
        std::fs::write(dir.path().join(&key), b"data").unwrap();
        std::fs::write(dir.path().join(format!("{key}.manifest.json")), manifest(&key, now)).unwrap();
    }
    let before = files(dir.path());
    let (code, out, err) = run(pruner()
        .arg("--storage")
        .arg(storage_flag(dir.path()))
        .args(["--retention", "7d"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--datetime-format") && err.contains("%Y%m%d-%H%M%S"),
        "{err}"
    );
    assert_eq!(files(dir.path()), before);
    let (code, _, err) = run(pruner().arg("--storage").arg(storage_flag(dir.path())).args([
        "--retention",
        "7d",
        "--datetime-format",
        "%Y%m%d-%H%M%S",
    ]));
    assert_eq!(code, 0, "{err}");
}
