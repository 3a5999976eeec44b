//! The pruning run against a real S3 server (`rclone serve s3` on 127.0.0.1): dry-run,
//! prefixes, orphans, stale multipart uploads, a randomized bucket, 10,000 backups, and
//! failed deletes that must never leave a manifest without its data.
//!
//! Objects are mostly written straight into the directory rclone serves (that is what a
//! bucket is for `rclone serve s3`), before the server first lists it; that makes 20,000
//! objects cheap to set up and lets a test choose each object's modification time.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration as StdDuration, Instant, SystemTime};

use chrono::{DateTime, Duration, Utc};
use sts_backup_core::manifest::{Compression, Manifest};
use sts_backup_core::retention::{self, plan_checked, Health, RetentionArgs};
use sts_backup_core::storage::{Storage, StorageArgs};
use sts_backup_testkit::{tool, S3Server, Server, ACCESS_KEY, SECRET_KEY};

const BUCKET: &str = "sts-stackgraph-backup";
const PREFIX: &str = "pfx";

fn name(t: DateTime<Utc>) -> String {
    t.format("sts-backup-%Y%m%d-%H%M.graph").to_string()
}

/// Writes an object (under the prefix unless `key` starts with `/`) with a chosen mtime.
fn put_file(root: &Path, key: &str, body: &[u8], modified: DateTime<Utc>) {
    let path = match key.strip_prefix('/') {
        Some(outside) => root.join(BUCKET).join(outside),
        None => root.join(BUCKET).join(PREFIX).join(key),
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::from(modified)).unwrap();
}

fn put_backup(root: &Path, t: DateTime<Utc>, body: &[u8]) -> String {
    let key = name(t);
    put_file(root, &key, body, t);
    put_file(root, &format!("{key}.manifest.json"), &manifest(&key, body, t), t);
    key
}

fn sha256_hex(body: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// Total size of the objects under the prefix.
fn sizes(root: &Path, keys: impl IntoIterator<Item = String>) -> u64 {
    keys.into_iter()
        .map(|k| std::fs::metadata(root.join(BUCKET).join(PREFIX).join(k)).unwrap().len())
        .sum()
}

/// A valid manifest for `body`, as stackgraph-backup writes it.
fn manifest(key: &str, body: &[u8], t: DateTime<Utc>) -> Vec<u8> {
    let sha = sha256_hex(body);
    Manifest {
        format: 1,
        name: key.to_string(),
        size: body.len() as u64,
        sha256: sha.clone(),
        created: t,
        compression: Compression::None,
        raw_size: body.len() as u64,
        raw_sha256: sha,
        exporter: vec!["cat".into()],
        tool: "test".into(),
        run: None,
        data_etag: None,
        adopted: None,
        parts: None,
        encryption: None,
        signature: None,
    }
    .to_bytes()
}

/// Our own `rclone serve s3` with extra flags. Unlike [`S3Server`] it keeps rclone's
/// directory cache, so it must only be started after the files are written; with the
/// cache off every delete re-reads the directory, which is quadratic at 20,000 objects.
fn rclone(dir: &Path, extra: &[&str]) -> (Server, String) {
    let port = sts_backup_testkit::free_port();
    let server = Server::spawn(
        Command::new(tool("rclone"))
            .args(["serve", "s3"])
            .args(extra)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--auth-key")
            .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
            .args(["--config", "/dev/null", "--vfs-cache-mode", "off"])
            .arg(dir),
    );
    sts_backup_testkit::wait_for_port(port, "rclone serve s3");
    (server, format!("http://127.0.0.1:{port}"))
}

fn creds_dir() -> tempfile::TempDir {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("accesskey"), ACCESS_KEY).unwrap();
    std::fs::write(creds.path().join("secretkey"), SECRET_KEY).unwrap();
    creds
}

/// Every file under the prefix directory.
fn files(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join(BUCKET).join(PREFIX))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn no_manifest_without_data(keys: &BTreeSet<String>) {
    for k in keys {
        if let Some(base) = k.strip_suffix(".manifest.json") {
            assert!(keys.contains(base), "manifest {k:?} is left without its data");
        }
    }
}

/// A manifest that had its data before the run still has it after the run.
fn no_manifest_lost_its_data(before: &BTreeSet<String>, after: &BTreeSet<String>) {
    for k in after {
        if let Some(base) = k.strip_suffix(".manifest.json") {
            assert!(
                !before.contains(base) || after.contains(base),
                "manifest {k:?} is left without its data"
            );
        }
    }
}

struct Env {
    server: S3Server,
    creds: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        std::fs::create_dir_all(server.dir.path().join(BUCKET).join(PREFIX)).unwrap();
        let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
        Env { server, creds }
    }

    fn root(&self) -> &Path {
        self.server.dir.path()
    }

    async fn storage(&self) -> Storage {
        storage_at(&self.server.endpoint(), self.creds.path()).await
    }
}

async fn storage_at(endpoint: &str, creds: &Path) -> Storage {
    let args = StorageArgs {
        storage: format!("s3://{BUCKET}/{PREFIX}"),
        s3_endpoint: Some(endpoint.to_string()),
        credentials_dir: Some(creds.to_path_buf()),
        ..Default::default()
    };
    let storage = Storage::open(&args).await.unwrap();
    storage.check(false).await.unwrap();
    storage
}

fn retention(delta: &str) -> RetentionArgs {
    RetentionArgs {
        retention: Some(delta.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prunes_a_real_bucket_and_dry_run_changes_nothing() {
    let env = Env::start();
    let now = Utc::now();
    let root = env.root();
    let fresh: Vec<String> = (1..=2)
        .map(|d| put_backup(root, now - Duration::days(d), b"fresh"))
        .collect();
    let expired: Vec<String> = (40..45)
        .map(|d| put_backup(root, now - Duration::days(d), b"expired-data"))
        .collect();
    // Manifest-less objects written without our run id are StackState's own backups: the
    // same rules apply to them (rclone keeps object metadata in memory only, so an object
    // written behind its back is exactly that).
    let legacy = name(now - Duration::days(50));
    put_file(root, &legacy, b"crashed", now - Duration::days(50));
    let dangling = format!("{}.manifest.json", name(now - Duration::days(51)));
    put_file(root, &dangling, b"{}", now - Duration::days(51));
    let legacy_fresh = name(now - Duration::days(3));
    put_file(root, &legacy_fresh, b"just written", now - Duration::days(3));
    for k in ["sts-export.graph", "notes.txt", "xsts-backup-20200101-0000.graph"] {
        put_file(root, k, b"not ours", now - Duration::days(400));
    }
    // Outside the prefix: never listed, never touched.
    put_file(
        root,
        "/sts-backup-20200101-0000.graph",
        b"outside",
        now - Duration::days(400),
    );
    put_file(
        root,
        "/other/sts-backup-20200101-0000.graph",
        b"outside",
        now - Duration::days(400),
    );
    let before = files(root);
    let storage = env.storage().await;

    let dry = retention::prune(
        &storage,
        &RetentionArgs {
            dry_run: true,
            ..retention("days = 30")
        },
        now,
    )
    .await
    .unwrap();
    assert!(dry.dry_run && !dry.has_failures());
    assert_eq!(dry.purged.len(), 6);
    assert_eq!(dry.orphans.len(), 1);
    assert_eq!((dry.delete_requests, dry.bytes_freed), (0, 0));
    let selected = sizes(
        root,
        expired.iter().flat_map(|k| [k.clone(), format!("{k}.manifest.json")]),
    ) + sizes(root, [legacy.clone(), dangling.clone()]);
    assert_eq!(dry.bytes_selected(), selected);
    assert_eq!(files(root), before, "a dry run deletes nothing");
    let mut text = Vec::new();
    dry.print_text(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(&format!("Purging backup {:?} (dry run)", expired[0])),
        "{text}"
    );
    assert!(text.contains("dry run, nothing deleted"), "{text}");

    let report = retention::prune(&storage, &retention("days = 30"), now).await.unwrap();
    assert!(!report.has_failures(), "{:?}", report.failures);
    let purged: BTreeSet<&str> = report.purged.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(purged, expired.iter().chain([&legacy]).map(String::as_str).collect());
    let kept: BTreeSet<&str> = report.kept.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(kept, fresh.iter().chain([&legacy_fresh]).map(String::as_str).collect());
    let orphans: BTreeSet<&str> = report.orphans.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(orphans, BTreeSet::from([dangling.as_str()]));
    assert!(report.orphans_kept.is_empty());
    assert_eq!(report.delete_requests, 2, "one batch of manifests, one of data");
    assert_eq!(report.bytes_freed, selected);
    assert_eq!(report.ignored.len(), 3);

    let after = files(root);
    for k in &expired {
        assert!(!after.contains(k) && !after.contains(&format!("{k}.manifest.json")));
    }
    for k in fresh.iter().chain([&legacy_fresh]) {
        assert!(after.contains(k), "{k}");
    }
    for k in ["sts-export.graph", "notes.txt", "xsts-backup-20200101-0000.graph"] {
        assert!(after.contains(k));
    }
    assert!(root.join(BUCKET).join("sts-backup-20200101-0000.graph").exists());
    assert!(root.join(BUCKET).join("other/sts-backup-20200101-0000.graph").exists());
    no_manifest_without_data(&after);

    // JSON carries the same.
    let json = report.to_json();
    assert_eq!(json["summary"]["purged"], 6);
    assert_eq!(json["summary"]["orphans"], 1);
    assert!(!json.to_string().contains('\n'));

    // Running again finds nothing more to do.
    let again = retention::prune(&storage, &retention("days = 30"), now).await.unwrap();
    assert!(again.purged.is_empty() && again.orphans.is_empty() && !again.has_failures());
    assert_eq!(again.delete_requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_deleted_without_a_policy() {
    let env = Env::start();
    let now = Utc::now();
    for d in 100..103 {
        put_backup(env.root(), now - Duration::days(d), b"x");
    }
    put_file(
        env.root(),
        &name(now - Duration::days(200)),
        b"orphan",
        now - Duration::days(200),
    );
    let before = files(env.root());
    let storage = env.storage().await;
    let report = retention::prune(&storage, &RetentionArgs::default(), now)
        .await
        .unwrap();
    assert!(!report.configured);
    assert_eq!(
        (report.kept.len(), report.purged.len(), report.orphans.len()),
        (4, 0, 0),
        "the manifest-less object is a StackState backup, kept like the others"
    );
    assert_eq!(files(env.root()), before);
    let mut text = Vec::new();
    report.print_text(&mut text).unwrap();
    assert!(String::from_utf8(text).unwrap().contains("No retention configured"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_multipart_uploads_are_aborted() {
    let env = Env::start();
    let storage = env.storage().await;
    let key = name(Utc::now());
    {
        let mut upload = storage.start_upload(&key, None).await.unwrap();
        upload.put_part(bytes::Bytes::from(vec![1u8; 1024])).await.unwrap();
        // The second part starts the multipart upload; dropping it leaves it pending.
        upload.put_part(bytes::Bytes::from(vec![2u8; 1024])).await.unwrap();
    }
    let pending = storage.pending_uploads().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");

    // Younger than the threshold: left alone.
    let report = retention::prune(&storage, &retention("days=30"), Utc::now())
        .await
        .unwrap();
    assert!(
        report.uploads_aborted.is_empty() && !report.has_failures(),
        "{report:?}"
    );
    // Dry run reports it and leaves it.
    let later = Utc::now() + Duration::hours(25);
    let args = RetentionArgs {
        dry_run: true,
        ..retention("days=30")
    };
    let report = retention::prune(&storage, &args, later).await.unwrap();
    assert_eq!(report.uploads_aborted.len(), 1);
    assert_eq!(storage.pending_uploads().await.unwrap().len(), 1);
    // Older than 24h (seen from 25 hours later): aborted.
    let report = retention::prune(&storage, &retention("days=30"), later).await.unwrap();
    assert!(!report.has_failures(), "{:?}", report.failures);
    assert_eq!(report.uploads_aborted.len(), 1);
    assert_eq!(report.uploads_aborted[0].key, key);
    assert!(storage.pending_uploads().await.unwrap().is_empty());
}

/// A tiny deterministic generator (xorshift), seeded per run and printed, so a failure can
/// be replayed with `RETENTION_SEED=<n>`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_random_bucket_is_pruned_exactly_as_planned() {
    let seed = std::env::var("RETENTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("RETENTION_SEED={seed}");
    let mut rng = Rng(seed);
    let env = Env::start();
    let now = Utc::now();
    let mut committed = Vec::new();
    for _ in 0..(20 + rng.below(60)) {
        let t = now - Duration::minutes(rng.below(200 * 24 * 60) as i64);
        let key = name(t);
        let written = t + Duration::minutes(rng.below(120) as i64);
        match rng.below(10) {
            0 => put_file(env.root(), &key, b"orphan", written),
            1 => put_file(env.root(), &format!("{key}.manifest.json"), b"{}", written),
            _ => {
                put_file(env.root(), &key, b"data", written);
                put_file(
                    env.root(),
                    &format!("{key}.manifest.json"),
                    &manifest(&key, b"data", t),
                    written,
                );
                committed.push((t, key));
            }
        }
    }
    let unrelated = [
        "sts-export.graph",
        "readme.md",
        "x-sts-backup-20200101-0000.graph",
        "a.manifest.json",
    ];
    for k in unrelated {
        put_file(env.root(), k, b"unrelated", now - Duration::days(1000));
    }
    let pick = |rng: &mut Rng| match rng.below(3) {
        0 => None,
        _ => Some(retention::KeepCount::Count(rng.below(5) as u32)),
    };
    let args = RetentionArgs {
        retention: (rng.below(2) == 0).then(|| format!("days = {}", rng.below(90))),
        min_keep: 1 + rng.below(4) as usize,
        keep: retention::KeepArgs {
            keep_last: pick(&mut rng),
            keep_daily: pick(&mut rng),
            keep_weekly: pick(&mut rng),
            keep_monthly: pick(&mut rng),
        },
        ..Default::default()
    };
    eprintln!("policy: {}", args.policy().unwrap().describe());
    let storage = env.storage().await;
    let listing = storage.list().await.unwrap();
    // Everything here is written behind rclone's back, so no object carries our run id: a
    // data object without manifest is a StackState backup.
    let policy = args.policy().unwrap();
    let keys: BTreeSet<&str> = listing.iter().map(|o| o.key.as_str()).collect();
    let health = Health {
        legacy: listing
            .iter()
            .filter(|o| {
                policy.backup_timestamp(&o.key).is_some() && !keys.contains(format!("{}.manifest.json", o.key).as_str())
            })
            .map(|o| o.key.clone())
            .collect(),
        ..Health::default()
    };
    let expected = plan_checked(&listing, &health, &policy, now);
    let report = retention::prune(&storage, &args, now).await.unwrap();
    assert!(!report.has_failures(), "{:?}", report.failures);

    let mut remaining: BTreeSet<String> = listing.iter().map(|o| o.key.clone()).collect();
    for b in expected.purged() {
        remaining.remove(&b.key);
        if let Some(m) = &b.manifest_key {
            remaining.remove(m);
        }
    }
    for o in expected.orphans.iter().filter(|o| o.delete) {
        remaining.remove(&o.key);
    }
    let after = files(env.root());
    assert_eq!(after, remaining);
    no_manifest_lost_its_data(&listing.iter().map(|o| o.key.clone()).collect(), &after);
    for k in unrelated {
        assert!(after.contains(k), "{k}");
    }
    // The floor counts restorable backups: the committed ones and StackState's (no manifest).
    let mut restorable: Vec<(chrono::DateTime<chrono::Utc>, String)> = committed.clone();
    for key in &health.legacy {
        if let Some(t) = policy.backup_timestamp(key) {
            restorable.push((t, key.clone()));
        }
    }
    if let Some((_, newest)) = restorable.iter().max() {
        assert!(
            after.contains(newest),
            "the newest restorable backup {newest} was deleted"
        );
    }
    let survivors = restorable.iter().filter(|(_, k)| after.contains(k)).count();
    assert!(survivors >= args.min_keep.min(restorable.len()));
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_expired_backups_in_at_most_twenty_requests() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let now = Utc::now();
    let setup = Instant::now();
    let oldest = now - Duration::days(40);
    for i in 0..N {
        put_backup(root, oldest - Duration::minutes(i as i64), b"x");
    }
    let newest = put_backup(root, now - Duration::hours(1), b"fresh");
    eprintln!("scale: wrote {} objects in {:?}", 2 * (N + 1), setup.elapsed());
    // The server's own debug log counts the DeleteObjects requests it really received.
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("rclone.log");
    let log_arg = format!("--log-file={}", log.display());
    let (_server, endpoint) = rclone(root, &["-vv", &log_arg]);
    let creds = creds_dir();
    let storage = storage_at(&endpoint, creds.path()).await;
    let started = Instant::now();
    let report = retention::prune(&storage, &retention("days = 30"), now).await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "scale: pruned {} backups ({} objects) with {} DeleteObjects requests in {took:?}",
        report.purged.len(),
        2 * report.purged.len(),
        report.delete_requests
    );
    assert!(
        !report.has_failures(),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert_eq!(report.purged.len(), N);
    let received = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("serve s3: delete multi"))
        .count();
    eprintln!("scale: the server logged {received} DeleteObjects requests");
    assert!(received <= 20, "{received} requests");
    assert_eq!(received, 20, "10 batches of manifests, then 10 of data");
    assert_eq!(report.delete_requests, received);
    // Everything is gone, seen by the server and on disk.
    let listed: Vec<String> = storage.list().await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, vec![newest.clone(), format!("{newest}.manifest.json")]);
    assert_eq!(files(root), listed.into_iter().collect());
    assert!(took < StdDuration::from_secs(60), "took {took:?}");
}

/// The server refuses every delete (`rclone serve s3 --read-only`): no manifest and no data
/// is deleted, every backup stays complete, the failures are reported.
#[tokio::test(flavor = "multi_thread")]
async fn refused_manifest_deletes_leave_the_data_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(BUCKET).join(PREFIX)).unwrap();
    let now = Utc::now();
    put_backup(dir.path(), now - Duration::hours(1), b"fresh");
    let expired: Vec<String> = (40..43)
        .map(|d| put_backup(dir.path(), now - Duration::days(d), b"old"))
        .collect();
    let before = files(dir.path());
    let (_server, endpoint) = rclone(dir.path(), &["--read-only"]);
    let creds = creds_dir();
    let storage = storage_at(&endpoint, creds.path()).await;

    let report = retention::prune(&storage, &retention("days=30"), now).await.unwrap();
    assert!(report.has_failures());
    assert!(report.purged.is_empty(), "{:?}", report.purged);
    assert_eq!(report.failures.len(), expired.len(), "{:?}", report.failures);
    for (f, k) in report.failures.iter().zip(&expired) {
        assert_eq!(f.key, format!("{k}.manifest.json"));
        assert!(f.reason.contains("left complete and untouched"), "{}", f.reason);
    }
    assert_eq!(report.delete_requests, 1, "the data batch is never sent");
    assert_eq!(files(dir.path()), before);
    no_manifest_without_data(&files(dir.path()));
}

/// `chattr +i` makes one data object and one manifest undeletable (the server's delete of
/// those keys fails, the rest of the batch succeeds). Needs CAP_LINUX_IMMUTABLE; where the
/// attribute cannot be set the test says so and stops (the read-only test above still
/// covers refused deletes).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_data_delete_leaves_no_orphan_manifest() {
    let env = Env::start();
    let now = Utc::now();
    let root = env.root().to_path_buf();
    put_backup(&root, now - Duration::hours(1), b"fresh");
    let a = put_backup(&root, now - Duration::days(40), b"a");
    let stuck_data = put_backup(&root, now - Duration::days(41), b"b");
    let stuck_manifest = put_backup(&root, now - Duration::days(42), b"c");
    let d = put_backup(&root, now - Duration::days(43), b"d");
    let data_path = root.join(BUCKET).join(PREFIX).join(&stuck_data);
    let manifest_path = root
        .join(BUCKET)
        .join(PREFIX)
        .join(format!("{stuck_manifest}.manifest.json"));
    let chattr = |flag: &str, path: &Path| {
        Command::new("chattr")
            .arg(flag)
            .arg(path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !chattr("+i", &data_path) {
        eprintln!("SKIPPED: chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE)");
        return;
    }
    assert!(chattr("+i", &manifest_path));
    struct Unlock(Vec<std::path::PathBuf>);
    impl Drop for Unlock {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = Command::new("chattr").arg("-i").arg(p).status();
            }
        }
    }
    let unlock = Unlock(vec![data_path.clone(), manifest_path.clone()]);

    let storage = env.storage().await;
    let report = retention::prune(&storage, &retention("days=30"), now).await.unwrap();
    assert!(report.has_failures());
    let purged: BTreeSet<&str> = report.purged.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(purged, BTreeSet::from([a.as_str(), d.as_str()]));
    let failed: BTreeSet<&str> = report.failures.iter().map(|f| f.key.as_str()).collect();
    let stuck_manifest_key = format!("{stuck_manifest}.manifest.json");
    assert_eq!(
        failed,
        BTreeSet::from([stuck_data.as_str(), stuck_manifest_key.as_str()])
    );

    let after = files(&root);
    no_manifest_without_data(&after);
    // The data whose delete failed has no manifest now (its manifest went first) ...
    assert!(after.contains(&stuck_data) && !after.contains(&format!("{stuck_data}.manifest.json")));
    // ... and the backup whose manifest could not be deleted is complete and untouched.
    assert!(after.contains(&stuck_manifest) && after.contains(&stuck_manifest_key));
    assert_eq!(report.delete_requests, 2);

    // Once deletable again, the next run removes it (without our run id it counts as a
    // manifest-less StackState backup, and it is expired); the stuck backup goes too.
    drop(unlock);
    let report = retention::prune(&storage, &retention("days=30"), now).await.unwrap();
    assert!(!report.has_failures(), "{:?}", report.failures);
    let purged: BTreeSet<&str> = report.purged.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(purged, BTreeSet::from([stuck_data.as_str(), stuck_manifest.as_str()]));
    let after = files(&root);
    assert_eq!(after.len(), 2, "{after:?}");
    no_manifest_without_data(&after);
}
