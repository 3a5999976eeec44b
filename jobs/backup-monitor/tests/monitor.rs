//! The monitor against a real S3 server (`rclone serve s3`) holding real backups made by the
//! backup pipeline, and against a real Prometheus that scrapes it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sts_backup_core::backup::{backup, BackupOptions};
use sts_backup_core::command::CommandSpec;
use sts_backup_core::manifest::Compression;
use sts_backup_core::naming::NameTemplate;
use sts_backup_core::storage::{Storage, StorageArgs};
use sts_backup_testkit::{free_port, tool, wait_for_port, S3Server, Server, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "sts-stackgraph-backup";

struct World {
    server: S3Server,
    creds: tempfile::TempDir,
    config: tempfile::NamedTempFile,
}

impl World {
    fn new() -> World {
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
        let mut config = tempfile::NamedTempFile::new().unwrap();
        write!(
            config,
            r#"{{"stores":[{{"name":"stackgraph","storage":"s3://{BUCKET}","schedule":"0 3 * * *","grace":"1h","verifyEvery":"7d"}}]}}"#
        )
        .unwrap();
        World { server, creds, config }
    }

    fn args(&self) -> StorageArgs {
        StorageArgs {
            storage: format!("s3://{BUCKET}"),
            s3_endpoint: Some(self.server.endpoint()),
            credentials_dir: Some(self.creds.path().to_path_buf()),
            ..StorageArgs::default()
        }
    }

    /// A real backup through the backup pipeline, as if it ran at `at`.
    fn backup_at(&self, at: DateTime<Utc>, content: &str) -> String {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let storage = Storage::open(&self.args()).await.unwrap();
            let opts = BackupOptions {
                template: NameTemplate::parse("sts-backup-%Y%m%d-%H%M.graph").unwrap(),
                compression: Compression::None,
                export: CommandSpec::new("EXPORT_CMD", vec!["echo".into(), content.into()]).unwrap(),
                scratch_dir: None,
                create_bucket: false,
                must_contain: None,
            };
            backup(&storage, &opts, at).await.unwrap().name
        })
    }

    fn object(&self, key: &str) -> PathBuf {
        self.server.object_path(BUCKET, key)
    }

    fn monitor(&self, args: &[&str], offset: Option<Duration>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup-monitor"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MONITOR_CONFIG", self.config.path())
            .env("S3_ENDPOINT", self.server.endpoint())
            .env("S3_CREDENTIALS_DIR", self.creds.path())
            .env("S3_CONNECT_TIMEOUT", "2s");
        if let Some(offset) = offset {
            cmd.env("MONITOR_CLOCK_OFFSET", humantime::format_duration(offset).to_string());
        }
        cmd
    }

    fn check_json(&self, offset: Option<Duration>) -> (Output, Value) {
        let out = self.monitor(&["check", "-o", "json"], offset).output().unwrap();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out, json)
    }
}

fn store(report: &Value) -> &Value {
    &report["stores"][0]
}

/// The clock offset that puts the monitor's "now" at `at`.
fn offset_to(at: DateTime<Utc>) -> Option<Duration> {
    let d = at - Utc::now();
    Some(d.to_std().unwrap_or_default())
}

fn today_at(h: u32, m: u32) -> DateTime<Utc> {
    let now = Utc::now().date_naive();
    Utc.from_utc_datetime(&now.and_hms_opt(h, m, 0).unwrap())
}

#[test]
fn verdicts_follow_the_bucket_and_the_schedule() {
    let w = World::new();
    let day = chrono::Duration::days(1);
    // Two backups made by yesterday's and today's 03:00 runs.
    w.backup_at(today_at(3, 2) - day, "one");
    let newest = w.backup_at(today_at(3, 2), "two");

    // Tomorrow 03:30: today's backup covers the start due (today 03:00): healthy.
    let (out, r) = w.check_json(offset_to(today_at(3, 30) + day));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = store(&r);
    assert_eq!(s["error"], Value::Null);
    assert_eq!(s["catalogue"]["committed"], 2);
    assert_eq!(s["catalogue"]["broken"], 0);
    assert_eq!(s["catalogue"]["newest"]["name"], newest.as_str());
    assert_eq!(s["due"]["overdue"], false);
    assert_eq!(s["verify"]["ok"], true, "the newest backup was re-read and is intact");
    // Quiet on success.
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .all(|l| !l.contains("WARN")),
        "{out:?}"
    );

    // Tomorrow 05:00: tomorrow's 03:00 run left nothing: overdue, exit 1, one warning line.
    let (out, r) = w.check_json(offset_to(today_at(5, 0) + day));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(store(&r)["due"]["overdue"], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup overdue") && stderr.contains("check the CronJob"),
        "{stderr}"
    );

    // The newest manifest deleted: that backup is no longer committed and the older one is
    // the newest again.
    std::fs::remove_file(w.object(&format!("{newest}.manifest.json"))).unwrap();
    let (_, r) = w.check_json(offset_to(today_at(3, 30) + day));
    assert_eq!(store(&r)["catalogue"]["committed"], 1);
    assert_ne!(store(&r)["catalogue"]["newest"]["name"], newest.as_str());
    // Its data object is a leftover of our own run (it carries our run id), not a backup
    // written by StackState: neither committed nor legacy.
    assert_eq!(store(&r)["catalogue"]["legacy"], 0);

    // A backup StackState wrote (its name pattern, no manifest, no run id) is legacy.
    std::fs::write(w.object("sts-backup-20240101-0300.graph"), "made by StackState\n").unwrap();
    let (_, r) = w.check_json(offset_to(today_at(3, 30) + day));
    assert_eq!(store(&r)["catalogue"]["legacy"], 1);
}

#[test]
fn a_replaced_object_is_broken_and_rot_is_found_by_verification() {
    // On S3 the manifest records the object's ETag: bytes replaced behind its back make the
    // backup broken at the next listing.
    let w = World::new();
    let newest = w.backup_at(Utc::now() - chrono::Duration::minutes(5), "intact content");
    std::fs::write(w.object(&newest), "INTACT CONTENT\n").unwrap();
    let (out, r) = w.check_json(None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(store(&r)["catalogue"]["broken"], 1);
    assert_eq!(store(&r)["catalogue"]["committed"], 0);

    // On file:// storage nothing but the checksum notices: rot of the same size is found
    // only by re-reading the newest backup.
    let dir = tempfile::tempdir().unwrap();
    let storage_url = format!("file://{}", dir.path().display());
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        r#"{{"stores":[{{"name":"stackgraph","storage":"{storage_url}","schedule":"0 3 * * *","verifyEvery":"7d"}}]}}"#
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = rt.block_on(async {
        let args = StorageArgs {
            storage: storage_url.clone(),
            ..StorageArgs::default()
        };
        let storage = Storage::open(&args).await.unwrap();
        let opts = BackupOptions {
            template: NameTemplate::parse("sts-backup-%Y%m%d-%H%M.graph").unwrap(),
            compression: Compression::None,
            export: CommandSpec::new("EXPORT_CMD", vec!["echo".into(), "intact content".into()]).unwrap(),
            scratch_dir: None,
            create_bucket: false,
            must_contain: None,
        };
        backup(&storage, &opts, Utc::now()).await.unwrap().name
    });
    let check = |label: &str| {
        let out = w
            .monitor(&["check", "-o", "json"], None)
            .env("MONITOR_CONFIG", config.path())
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{label}: {e}"));
        (out, r)
    };
    // Negative control: intact, verified OK.
    let (out, r) = check("intact");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(store(&r)["verify"]["ok"], true);
    std::fs::write(dir.path().join(&name), "INTACT CONTENT\n").unwrap();
    let (out, r) = check("rotten");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(store(&r)["verify"]["ok"], false, "{r}");
    assert_eq!(store(&r)["verify"]["backup"], name.as_str());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is corrupt"));
}

#[test]
fn an_unreachable_store_is_reported_not_hung() {
    let mut w = World::new();
    w.backup_at(Utc::now(), "x");
    w.server.kill();
    let started = Instant::now();
    let (out, r) = w.check_json(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(store(&r)["error"].as_str().is_some(), "{r}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage unreachable"), "{stderr}");
    assert!(!stderr.contains(SECRET_KEY) && !stderr.contains(ACCESS_KEY));
}

#[test]
fn bad_config_is_one_line_and_exit_2() {
    let w = World::new();
    let mut bad = tempfile::NamedTempFile::new().unwrap();
    write!(
        bad,
        r#"{{"stores":[{{"name":"sg","storage":"s3://{BUCKET}","schedule":"0 0 3 * * ?"}}]}}"#
    )
    .unwrap();
    let out = w
        .monitor(&["check"], None)
        .env("MONITOR_CONFIG", bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("stores[0].schedule"), "{stderr}");
}

#[test]
fn promtool_accepts_the_exposition() {
    let w = World::new();
    w.backup_at(Utc::now(), "x");
    let out = w.monitor(&["check"], None).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("sts_backup_backups{store=\"stackgraph\",state=\"committed\"} 1"),
        "{text}"
    );
    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success() && lint.trim().is_empty(), "promtool: {lint}");
}

/// Prometheus scrapes `backup-monitor serve`; its HTTP API shows what the bucket holds, and
/// follows a deleted manifest and a stopped server.
#[test]
fn prometheus_sees_the_store() {
    let mut w = World::new();
    let first = w.backup_at(Utc::now() - chrono::Duration::hours(2), "one");
    w.backup_at(Utc::now() - chrono::Duration::minutes(1), "two");

    let port = free_port();
    let mut serve = w.monitor(
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--interval", "1s"],
        None,
    );
    let _monitor = Server::spawn(&mut serve);
    wait_for_port(port, "backup-monitor");

    let prom = Prometheus::start(port);
    prom.wait_for("sts_backup_backups{state=\"committed\"}", 2.0);
    prom.wait_for("sts_backup_storage_up", 1.0);
    prom.wait_for("sts_backup_overdue", 0.0);
    prom.wait_for("sts_backup_verify_success", 1.0);

    std::fs::remove_file(w.object(&format!("{first}.manifest.json"))).unwrap();
    prom.wait_for("sts_backup_backups{state=\"committed\"}", 1.0);

    w.server.kill();
    prom.wait_for("sts_backup_storage_up", 0.0);
    // The last known catalogue is kept while storage is down.
    prom.wait_for("sts_backup_backups{state=\"committed\"}", 1.0);
}

struct Prometheus {
    port: u16,
    _server: Server,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: backup-monitor\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let server = Server::spawn(Command::new(tool("prometheus")).args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]));
        wait_for_port(port, "prometheus");
        Prometheus {
            port,
            _server: server,
            _dir: dir,
        }
    }

    fn query(&self, expr: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let out = Command::new("curl")
            .args(["-sf", "--get", &url, "--data-urlencode", &format!("query={expr}")])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn wait_for(&self, expr: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(expr);
            if last == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("Prometheus: {expr} = {last:?}, expected {want}");
    }
}

/// With trusted keys (issue 18), a backup nobody signed is not restorable: the monitor counts
/// it as broken, so an attacker's unsigned substitute raises the alert.
#[test]
fn unsigned_backups_are_broken_when_keys_are_trusted() {
    let w = World::new();
    w.backup_at(today_at(3, 2), "unsigned");
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = sts_backup_testkit::ed25519_key_pair(keys.path(), "k");
    let check = |trust: bool| {
        let mut cmd = w.monitor(&["check", "-o", "json"], offset_to(today_at(3, 30)));
        if trust {
            cmd.env("STS_TRUSTED_KEYS", &public);
        }
        let out = cmd.output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), store(&report)["catalogue"]["broken"].clone())
    };
    // Negative control: without trusted keys the backup is healthy.
    assert_eq!(check(false), (true, Value::from(0)));
    assert_eq!(check(true), (false, Value::from(1)));
}
