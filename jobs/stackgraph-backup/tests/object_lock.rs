//! Issue 18 item 1 on a real S3 server that implements Object Lock (SeaweedFS): with
//! `--object-lock`, each backup and its manifest are retained until their retention has passed;
//! the pruner keeps locked backups (reported, not failed), nobody can delete the locked data by
//! hand, and impossible settings are refused before anything is written.

mod common;

use std::path::Path;
use std::process::Output;

use common::Run;
use sts_backup_testkit::{SeaweedServer, ACCESS_KEY, SECRET_KEY};

const FIRST: &str = "sts-backup-20260101-0100.graph";
const SECOND: &str = "sts-backup-20260102-0100.graph";

struct Locked {
    server: SeaweedServer,
    creds: tempfile::TempDir,
}

impl Locked {
    /// SeaweedFS with bucket `plain` (no lock) and `locked` (created with Object Lock).
    fn start() -> Locked {
        let server = SeaweedServer::start("plain");
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("accesskey"), ACCESS_KEY).unwrap();
        std::fs::write(creds.path().join("secretkey"), SECRET_KEY).unwrap();
        server.create_locked_bucket("locked");
        Locked { server, creds }
    }

    fn aws(&self, args: &[&str]) -> Output {
        self.server.aws(args)
    }

    fn run(&self, bucket: &str, args: &[&str]) -> Run {
        let mut cmd = common::sg();
        cmd.args(args)
            .env("BACKUP_STORAGE", format!("s3://{bucket}"))
            .env("S3_ENDPOINT", self.server.endpoint())
            .env("S3_CREDENTIALS_DIR", self.creds.path());
        Run::from(cmd.output().unwrap())
    }

    /// Two old backups, the second with retention 1 day (so the first is due), locked or not.
    fn two_backups(&self, bucket: &str, lock: bool) -> Run {
        let mut last = None;
        for name in [FIRST, SECOND] {
            let template = format!("--name-template={name}");
            let mut args = vec!["backup", template.as_str(), "--retention=1d", "--min-keep=1"];
            if lock {
                args.push("--object-lock=governance");
            }
            args.extend(["--", "echo", name]);
            let out = self.run(bucket, &args);
            assert_eq!(out.code, 0, "{out:?}");
            last = Some(out);
        }
        last.unwrap()
    }

    fn names(&self, bucket: &str) -> Vec<String> {
        common::listed_names(&self.run(bucket, &["list", "-o", "json"]))
    }
}

#[test]
fn locked_backups_outlive_retention_and_deletion_by_hand() {
    let l = Locked::start();
    // Negative control: without a lock the second backup's retention run deletes the first.
    l.two_backups("plain", false);
    assert_eq!(l.names("plain"), [SECOND]);

    let second = l.two_backups("locked", true);
    assert_eq!(
        l.names("locked"),
        [FIRST, SECOND],
        "the locked backup is kept: {second:?}"
    );
    assert!(
        second.stderr.contains("locked until"),
        "the pruner says why: {second:?}"
    );

    // The retention is on the object, about a day ahead.
    let retention = l.aws(&["s3api", "get-object-retention", "--bucket", "locked", "--key", FIRST]);
    let doc: serde_json::Value = serde_json::from_slice(&retention.stdout).unwrap();
    assert_eq!(doc["Retention"]["Mode"], "GOVERNANCE", "{doc}");
    let until = chrono::DateTime::parse_from_rfc3339(doc["Retention"]["RetainUntilDate"].as_str().unwrap()).unwrap();
    let ahead = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::days(1),
        "{ahead}"
    );
    let manifest = format!("{FIRST}.manifest.json");
    let kept = l.aws(&[
        "s3api",
        "get-object-retention",
        "--bucket",
        "locked",
        "--key",
        &manifest,
    ]);
    assert!(
        kept.status.success(),
        "the manifest is locked too: {}",
        String::from_utf8_lossy(&kept.stderr)
    );

    // By hand: deleting the locked version is refused by the server.
    let versions = l.aws(&["s3api", "list-object-versions", "--bucket", "locked", "--prefix", FIRST]);
    let doc: serde_json::Value = serde_json::from_slice(&versions.stdout).unwrap();
    let version = doc["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Key"] == FIRST)
        .and_then(|v| v["VersionId"].as_str())
        .unwrap()
        .to_string();
    let delete = l.aws(&[
        "s3api",
        "delete-object",
        "--bucket",
        "locked",
        "--key",
        FIRST,
        "--version-id",
        &version,
    ]);
    assert!(!delete.status.success(), "a locked version must not be deletable");
    assert!(
        String::from_utf8_lossy(&delete.stderr).contains("AccessDenied"),
        "{delete:?}"
    );
}

#[test]
fn impossible_lock_settings_are_refused_before_anything_is_written() {
    let l = Locked::start();
    let no_retention = l.run("locked", &["backup", "--object-lock=governance", "--", "echo", "x"]);
    assert_eq!(no_retention.code, 2, "{no_retention:?}");
    assert!(
        no_retention.stderr.contains("--object-lock: needs --retention"),
        "{no_retention:?}"
    );
    let unlocked = l.run(
        "plain",
        &[
            "backup",
            "--object-lock=compliance",
            "--retention=1d",
            "--",
            "echo",
            "x",
        ],
    );
    assert_eq!(unlocked.code, 2, "{unlocked:?}");
    assert!(
        unlocked.stderr.contains("does not have S3 Object Lock enabled"),
        "{unlocked:?}"
    );
    assert_eq!(l.names("plain"), Vec::<String>::new());
    assert_eq!(l.names("locked"), Vec::<String>::new());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::sg();
    cmd.args([
        "backup",
        "--object-lock=governance",
        "--retention=1d",
        "--",
        "echo",
        "x",
    ])
    .env("BACKUP_STORAGE", format!("file://{}", dir.path().display()));
    let file = Run::from(cmd.output().unwrap());
    assert_eq!(file.code, 2, "{file:?}");
    assert!(file.stderr.contains("--object-lock"), "{file:?}");
    assert!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0) == 0 || !Path::new(dir.path()).exists());
}

/// The pruner reads the locks of its candidates concurrently (bounded), not one HEAD after
/// another: through a counting proxy, the retention run of the last backup over 24 locked,
/// expired backups opens many connections at once; one HEAD at a time would reuse one.
#[test]
fn the_pruner_reads_locks_concurrently() {
    let l = Locked::start();
    let names: Vec<String> = (1..=24)
        .map(|d| format!("sts-backup-202601{d:02}-0100.graph"))
        .collect();
    for name in &names[..23] {
        let template = format!("--name-template={name}");
        // --min-keep=99: these runs prune nothing, so each writes one backup
        let args = [
            "backup",
            &template,
            "--object-lock=governance",
            "--retention=1d",
            "--min-keep=99",
            "--",
            "echo",
            name,
        ];
        let out = l.run("locked", &args);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let proxy = sts_backup_testkit::proxy::Proxy::start(l.server.port, Default::default());
    let template = format!("--name-template={}", names[23]);
    let mut cmd = common::sg();
    cmd.args([
        "backup",
        &template,
        "--object-lock=governance",
        "--retention=1d",
        "--min-keep=1",
        "--",
        "echo",
        "x",
    ])
    .env("BACKUP_STORAGE", "s3://locked")
    .env("S3_ENDPOINT", format!("http://127.0.0.1:{}", proxy.port))
    .env("S3_CREDENTIALS_DIR", l.creds.path());
    let out = Run::from(cmd.output().unwrap());
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stderr.matches("locked until").count(),
        23,
        "every expired backup kept by its lock: {out:?}"
    );
    assert_eq!(l.names("locked").len(), 24);
    let connections = proxy.counters.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        connections >= 8,
        "the lock HEADs went one at a time: {connections} connections"
    );
}

/// `adopt` under `--object-lock` writes a locked manifest (the adopted backup is then as
/// undeletable as a new one); without a retention it refuses, exit 2, and writes nothing.
#[test]
fn adopt_under_object_lock_writes_a_locked_manifest() {
    let l = Locked::start();
    let legacy = "sts-backup-20250301-0200.graph";
    let other = "sts-backup-20250302-0200.graph";
    for name in [legacy, other] {
        // written by another tool (no run id): a StackState backup without manifest
        let put = l.aws(&[
            "s3api",
            "put-object",
            "--bucket",
            "locked",
            "--key",
            name,
            "--body",
            "/etc/hostname",
        ]);
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    }
    let manifest = |name: &str| format!("{name}.manifest.json");
    let no_retention = l.run("locked", &["adopt", legacy, "--object-lock=governance"]);
    assert_eq!(no_retention.code, 2, "{no_retention:?}");
    assert!(
        no_retention.stderr.contains("--object-lock: needs --retention"),
        "{no_retention:?}"
    );
    let head = l.aws(&["s3api", "head-object", "--bucket", "locked", "--key", &manifest(legacy)]);
    assert!(!head.status.success(), "no manifest was written");

    let out = l.run(
        "locked",
        &["adopt", legacy, "--object-lock=governance", "--retention=1d"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let retention = l.server.object_retention("locked", &manifest(legacy));
    assert_eq!(retention.map(|r| r["Mode"].clone()), Some("GOVERNANCE".into()));
    // Negative control: adopted without --object-lock, the manifest carries no retention.
    let out = l.run("locked", &["adopt", other]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        l.server.object_retention("locked", &manifest(other)),
        None,
        "an unlocked manifest has no retention"
    );
    assert_eq!(l.names("locked"), [legacy, other]);
}
