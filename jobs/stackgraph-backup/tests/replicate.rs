//! Issue 18 item 4: `replicate --to` copies committed backups between two real S3 servers
//! (two `rclone serve s3`), or from a directory to one, checks every part while copying, writes the manifest last, keeps
//! signatures valid at the destination, never replaces what is there, and leaves nothing
//! visible when a copy is cut short.

mod common;

use common::{random_file, Backend, Run, Watched, BUCKET};
use sts_backup_testkit::proxy::{Faults, Proxy};
use sts_backup_testkit::{S3Server, SeaweedServer, ACCESS_KEY, SECRET_KEY};

const FIRST: &str = "sts-backup-20260101-0100.graph";
const SECOND: &str = "sts-backup-20260102-0100.graph";
const THIRD: &str = "sts-backup-20260103-0100.graph";
/// A backup the destination made itself (its own store), which no copy may touch.
const OWN: &str = "sts-backup-20251231-0100.graph";

/// `--to` flags (as their env twins) for a destination server.
fn to(endpoint: &str, creds: &std::path::Path) -> Vec<(String, String)> {
    to_bucket(endpoint, creds, BUCKET)
}

fn to_bucket(endpoint: &str, creds: &std::path::Path, bucket: &str) -> Vec<(String, String)> {
    vec![
        ("REPLICA_STORAGE".into(), format!("s3://{bucket}")),
        ("REPLICA_S3_ENDPOINT".into(), endpoint.into()),
        ("REPLICA_S3_CREDENTIALS_DIR".into(), creds.display().to_string()),
    ]
}

fn replicate(src: &Backend, dst: &[(String, String)], extra: &[&str]) -> Run {
    let env: Vec<(&str, &str)> = dst.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec!["replicate"];
    args.extend(extra);
    src.run_with(&args, &env)
}

/// Starts `replicate` reading an S3 source through a link of `rate` bytes/s (keep the proxy
/// alive).
fn replicate_slowly(src: &Backend, dst: &[(String, String)], rate: u64, extra: &[&str]) -> (Watched, Proxy) {
    let Backend::S3 { server, .. } = src else {
        panic!("a slow source needs an S3 backend")
    };
    let slow = Proxy::start(
        server.port,
        Faults {
            rate: Some(rate),
            ..Default::default()
        },
    );
    let mut cmd = common::sg();
    cmd.arg("replicate").args(extra);
    for (k, v) in src.env().into_iter().chain(dst.iter().cloned()) {
        cmd.env(k, v);
    }
    cmd.env("S3_ENDPOINT", format!("http://127.0.0.1:{}", slow.port));
    (Watched::spawn(cmd), slow)
}

/// Runs stackgraph-backup against the destination (its flags as the main storage).
fn at(dst: &[(String, String)], args: &[&str], extra_env: &[(&str, &str)]) -> Run {
    let mut cmd = common::sg();
    cmd.args(args);
    for (k, v) in dst {
        cmd.env(
            k.replace("REPLICA_STORAGE", "BACKUP_STORAGE").replace("REPLICA_", ""),
            v,
        );
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

fn signing_key(dir: &std::path::Path) -> (String, String) {
    let (private, public) = sts_backup_testkit::ed25519_key_pair(dir, "k");
    (private.display().to_string(), public.display().to_string())
}

#[test]
fn copies_what_the_destination_lacks_and_keeps_signatures() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = signing_key(keys.path());
    let src = Backend::s3();
    let data = tempfile::tempdir().unwrap();
    let big = random_file(data.path(), 20 << 20, 7);
    for (name, file) in [
        (FIRST, big.display().to_string()),
        (SECOND, "/etc/hostname".to_string()),
    ] {
        let template = format!("--name-template={name}");
        let signing = format!("--signing-key={private}");
        let out = src.run(&["backup", &template, &signing, "--", "cat", &file]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let dst_server = S3Server::start();
    dst_server.create_bucket(BUCKET);
    let creds = dst_server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let dst = to(&dst_server.endpoint(), creds.path());

    let first = replicate(&src, &dst, &["-o", "json"]);
    assert_eq!(first.code, 0, "{first:?}");
    let report: serde_json::Value = serde_json::from_str(first.stdout.trim()).unwrap();
    assert_eq!(report["copied"], serde_json::json!([FIRST, SECOND]), "{report}");
    // The copies are restorable at the destination, with the signatures of the source.
    let trusted = [("STS_TRUSTED_KEYS", public.as_str())];
    let listed = at(&dst, &["list", "-o", "json"], &trusted);
    assert_eq!(common::listed_names(&listed), [FIRST, SECOND], "{listed:?}");
    let restored = data.path().join("restored");
    let import = format!("cat > {}", restored.display());
    let out = at(&dst, &["restore", FIRST, "--", "sh", "-c", &import], &trusted);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(common::sha256_file(&restored), common::sha256_file(&big));

    // A second run finds both present and changes nothing.
    let again = replicate(&src, &dst, &["-o", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    let report: serde_json::Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(report["copied"], serde_json::json!([]), "{report}");
    assert_eq!(report["present"], serde_json::json!([FIRST, SECOND]), "{report}");
}

/// A source on `file://` (on S3 the changed object's ETag already makes `list` call it
/// broken, and it is skipped): the part digests catch the change while copying.
#[test]
fn a_corrupt_source_part_is_not_copied() {
    let src = Backend::file();
    let data = tempfile::tempdir().unwrap();
    let big = random_file(data.path(), 20 << 20, 9);
    for (name, file) in [
        (FIRST, big.display().to_string()),
        (SECOND, "/etc/hostname".to_string()),
    ] {
        let template = format!("--name-template={name}");
        assert_eq!(src.run(&["backup", &template, "--", "cat", &file]).code, 0);
    }
    // One byte flipped in the third part of FIRST (4 MiB parts on file://), size unchanged.
    let path = src.object_path(FIRST);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(8 << 20) + 5] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let dst_server = S3Server::start();
    dst_server.create_bucket(BUCKET);
    let creds = dst_server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let dst = to(&dst_server.endpoint(), creds.path());
    let out = replicate(&src, &dst, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("failed {FIRST}: backup {FIRST:?}: part 3 of 5 does not match")),
        "{out:?}"
    );
    // Negative control: the intact backup was copied by the same run.
    assert!(out.stdout.contains(&format!("copied {SECOND}")), "{out:?}");
    let objects: Vec<String> = std::fs::read_dir(dst_server.dir.path().join(BUCKET))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !objects.iter().any(|o| o.starts_with(FIRST)),
        "nothing of the corrupt backup: {objects:?}"
    );
}

#[test]
fn a_destination_killed_mid_copy_shows_nothing_half_copied() {
    let src = Backend::s3();
    let data = tempfile::tempdir().unwrap();
    let big = random_file(data.path(), 64 << 20, 11);
    let template = format!("--name-template={FIRST}");
    assert_eq!(
        src.run(&["backup", &template, "--", "cat", &big.display().to_string()])
            .code,
        0
    );
    let mut dst_server = S3Server::start();
    dst_server.create_bucket(BUCKET);
    let creds = dst_server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let dst = to(&dst_server.endpoint(), creds.path());

    // The source is read through a link of 16 MiB/s, so the copy takes about 4 s.
    let (mut copy, _slow) = replicate_slowly(&src, &dst, 16 << 20, &[]);
    copy.wait_for("the copy to start", |l| l.contains("Copying backup"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    dst_server.kill();
    let out = copy.finish();
    assert_eq!(out.code, 1, "{out:?}");
    dst_server.restart();
    let listed = at(&dst, &["list", "-o", "json"], &[]);
    assert_eq!(common::listed_names(&listed), Vec::<String>::new(), "{listed:?}");
    // The next run copies it whole.
    let again = replicate(&src, &dst, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains(&format!("copied {FIRST}")), "{again:?}");
    let listed = at(&dst, &["list", "-o", "json"], &[]);
    assert_eq!(common::listed_names(&listed), [FIRST], "{listed:?}");
}

/// The other kind of server as destination: SeaweedFS, bucket `plain` and bucket `locked`
/// (created with Object Lock), ready for writes.
fn seaweed() -> (SeaweedServer, tempfile::TempDir) {
    let server = SeaweedServer::start("plain");
    server.create_locked_bucket("locked");
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("accesskey"), ACCESS_KEY).unwrap();
    std::fs::write(creds.path().join("secretkey"), SECRET_KEY).unwrap();
    (server, creds)
}

/// Keys of every object and every unfinished multipart upload in a SeaweedFS bucket.
fn seaweed_keys(server: &SeaweedServer, bucket: &str) -> (Vec<String>, Vec<String>) {
    let keys = |args: &[&str], field: &str| -> Vec<String> {
        let out = server.aws(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        doc[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["Key"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        keys(&["s3api", "list-objects-v2", "--bucket", bucket], "Contents"),
        keys(&["s3api", "list-multipart-uploads", "--bucket", bucket], "Uploads"),
    )
}

fn backup_named(src: &Backend, name: &str, file: &std::path::Path) {
    let template = format!("--name-template={name}");
    let out = src.run(&["backup", &template, "--", "cat", &file.display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// rclone -> SeaweedFS: a destination that already holds backups (a copy from an earlier run
/// and one of its own), and the source server killed in the middle of a copy: nothing of the
/// cut copy is visible or left as an upload at the destination, its own backup is untouched,
/// and the rerun completes.
#[test]
fn rclone_to_seaweedfs_source_killed_mid_copy_then_completed() {
    let mut src = Backend::s3();
    let data = tempfile::tempdir().unwrap();
    let big = random_file(data.path(), 64 << 20, 13);
    let (dst_server, creds) = seaweed();
    let dst = to_bucket(&dst_server.endpoint(), creds.path(), "plain");
    // The destination's own backup, and SECOND copied by an earlier run.
    let own = at(
        &dst,
        &["backup", &format!("--name-template={OWN}"), "--", "echo", "own"],
        &[],
    );
    assert_eq!(own.code, 0, "{own:?}");
    backup_named(&src, SECOND, std::path::Path::new("/etc/hostname"));
    let earlier = replicate(&src, &dst, &[]);
    assert_eq!(earlier.code, 0, "{earlier:?}");
    assert!(earlier.stdout.contains(&format!("copied {SECOND}")), "{earlier:?}");
    backup_named(&src, FIRST, &big);
    backup_named(&src, THIRD, std::path::Path::new("/etc/hostname"));

    // The source is read through a link of 4 MiB/s (FIRST takes about 16 s, so a loaded
    // machine still sees it in flight); killed once the destination holds an unfinished upload
    // of FIRST (from its second part on, after about 4 s).
    let (mut copy, _slow) = replicate_slowly(&src, &dst, 4 << 20, &["-o", "json"]);
    copy.wait_for("the copy of FIRST to start", |l| {
        l.contains("Copying backup") && l.contains(FIRST)
    });
    let started = std::time::Instant::now();
    while !seaweed_keys(&dst_server, "plain").1.iter().any(|k| k == FIRST) {
        assert!(
            started.elapsed().as_secs() < 30,
            "no upload of {FIRST} began at the destination"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Backend::S3 { server, .. } = &mut src else {
        unreachable!()
    };
    server.kill();
    let cut = copy.finish();
    assert_eq!(cut.code, 1, "{cut:?}");
    let report: serde_json::Value = serde_json::from_str(cut.stdout.trim()).unwrap();
    assert_eq!(report["present"], serde_json::json!([SECOND]), "{report}");
    assert_eq!(report["failed"][0]["name"], FIRST, "{report}");

    let (objects, uploads) = seaweed_keys(&dst_server, "plain");
    assert!(
        !objects.iter().any(|k| k.starts_with(FIRST)),
        "half a copy is visible: {objects:?}"
    );
    assert!(
        !uploads.iter().any(|k| k.starts_with(FIRST)),
        "the cut upload was left: {uploads:?}"
    );
    let listed = at(&dst, &["list", "-o", "json"], &[]);
    assert_eq!(common::listed_names(&listed), [OWN, SECOND], "{listed:?}");

    let Backend::S3 { server, .. } = &mut src else {
        unreachable!()
    };
    server.restart();
    let again = replicate(&src, &dst, &["-o", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    let report: serde_json::Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(report["copied"], serde_json::json!([FIRST, THIRD]), "{report}");
    assert_eq!(report["present"], serde_json::json!([SECOND]), "{report}");
    // The control of the visibility check above: the same listing now shows FIRST.
    let (objects, _) = seaweed_keys(&dst_server, "plain");
    assert!(objects.iter().any(|k| k == FIRST), "{objects:?}");
    // (listed oldest first by when each was stored there: FIRST arrived after SECOND)
    let listed = at(&dst, &["list", "-o", "json"], &[]);
    let mut names = common::listed_names(&listed);
    names.sort();
    assert_eq!(names, [OWN, FIRST, SECOND, THIRD], "{listed:?}");
    let restored = data.path().join("restored");
    let import = format!("cat > {}", restored.display());
    let out = at(&dst, &["restore", FIRST, "--", "sh", "-c", &import], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(common::sha256_file(&restored), common::sha256_file(&big));
}

/// `--to-object-lock` with `--to-retention`: each copy and its manifest are locked at the
/// destination; refused (exit 2, nothing copied) without a retention or on a bucket without
/// Object Lock.
#[test]
fn copies_are_locked_at_the_destination_with_to_object_lock() {
    let src = Backend::s3();
    backup_named(&src, FIRST, std::path::Path::new("/etc/hostname"));
    let (dst_server, creds) = seaweed();
    let mut locked = to_bucket(&dst_server.endpoint(), creds.path(), "locked");
    locked.push(("REPLICA_OBJECT_LOCK".into(), "governance".into()));

    let no_retention = replicate(&src, &locked, &[]);
    assert_eq!(no_retention.code, 2, "{no_retention:?}");
    assert!(
        no_retention
            .stderr
            .contains("--to-object-lock (REPLICA_OBJECT_LOCK): needs --to-retention"),
        "{no_retention:?}"
    );
    let mut plain = to_bucket(&dst_server.endpoint(), creds.path(), "plain");
    plain.extend([
        ("REPLICA_OBJECT_LOCK".into(), "governance".into()),
        ("REPLICA_RETENTION_TIME_DELTA".into(), "days = 1".into()),
    ]);
    let unlockable = replicate(&src, &plain, &[]);
    assert_eq!(unlockable.code, 2, "{unlockable:?}");
    assert!(
        unlockable.stderr.contains("does not have S3 Object Lock enabled"),
        "{unlockable:?}"
    );
    for bucket in ["plain", "locked"] {
        assert_eq!(
            seaweed_keys(&dst_server, bucket).0,
            Vec::<String>::new(),
            "nothing copied to {bucket}"
        );
    }

    locked.push(("REPLICA_RETENTION_TIME_DELTA".into(), "days = 1".into()));
    let out = replicate(&src, &locked, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    for key in [FIRST.to_string(), format!("{FIRST}.manifest.json")] {
        let retention = dst_server.object_retention("locked", &key);
        let doc = retention.unwrap_or_else(|| panic!("{key} is not locked"));
        assert_eq!(doc["Mode"], "GOVERNANCE", "{doc}");
        let until = chrono::DateTime::parse_from_rfc3339(doc["RetainUntilDate"].as_str().unwrap()).unwrap();
        let ahead = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
        assert!(
            ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::days(1),
            "{key}: {ahead}"
        );
    }
    // Negative control: a copy without the flag (another locked bucket) carries no retention.
    dst_server.create_locked_bucket("locked2");
    let unlocked = to_bucket(&dst_server.endpoint(), creds.path(), "locked2");
    assert_eq!(replicate(&src, &unlocked, &[]).code, 0);
    assert_eq!(
        dst_server.object_retention("locked2", FIRST),
        None,
        "an unlocked copy has no retention"
    );
}
