//! Issue 10 items 3 and 6 through the binary, on a real S3 server: StackState's own backups
//! (no manifest) are listed, restored with a warning and adopted; a storage connection lost
//! mid-restore is a failure (exit 1), not a bad backup.

mod common;

use common::{random_file, sha256_file, Backend, Watched};

const LEGACY: &str = "sts-backup-20250301-0200.graph";

#[test]
fn stackstate_backups_are_listed_restored_and_adopted() {
    let b = Backend::s3();
    std::fs::write(b.object_path(LEGACY), b"stackstate graph export\n").unwrap();
    // A leftover-looking object with another name is not a StackState backup.
    std::fs::write(b.object_path("notes.graph"), b"not a backup\n").unwrap();

    let table = b.run(&["list"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(LEGACY) && l.contains("(no checksum)")),
        "{table:?}"
    );
    let json = b.run(&["list", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc[0]["name"], LEGACY);
    assert_eq!(doc[0]["checksum"], false);
    assert_eq!(doc[0]["created"], "2025-03-01T02:00:00Z");

    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("restored");
    let import = format!("cat > {}", target.display());
    let out = b.run(&["restore", LEGACY, "--", "sh", "-c", &import]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("WITHOUT a checksum"), "{out:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"stackstate graph export\n");

    let adopted = b.run(&["adopt", "--all"]);
    assert_eq!(adopted.code, 0, "{adopted:?}");
    assert!(adopted.stdout.contains(&format!("adopted {LEGACY}")), "{adopted:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.object_path(&format!("{LEGACY}.manifest.json"))).unwrap()).unwrap();
    assert!(manifest["adopted"].is_string(), "{manifest}");
    assert_eq!(manifest["size"], 24);
    let doc: serde_json::Value = serde_json::from_str(b.run(&["list", "-o", "json"]).stdout.trim()).unwrap();
    assert_eq!(
        (doc[0]["checksum"].clone(), doc[0]["adopted"].clone()),
        (true.into(), true.into())
    );
    let verified = b.run(&["verify", LEGACY]);
    assert_eq!(verified.code, 0, "{verified:?}");
    // Adopting again is refused: it has a manifest now.
    let again = b.run(&["adopt", LEGACY]);
    assert_eq!(again.code, 3, "{again:?}");
    // The adopted backup is now verified like any other: a changed byte is caught.
    std::fs::write(b.object_path(LEGACY), b"stackstate graph exporT\n").unwrap();
    assert_eq!(b.run(&["verify", LEGACY]).code, 4);
}

#[test]
fn our_own_leftover_is_not_a_stackstate_backup() {
    let b = Backend::file();
    std::fs::write(b.object_path(LEGACY), b"data without manifest\n").unwrap();
    // On file:// every object was written by this tool: no manifest means never committed.
    assert_eq!(b.names(), Vec::<String>::new());
    let out = b.run(&["restore", LEGACY, "--", "cat"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("never committed"), "{out:?}");
}

#[test]
fn a_lost_connection_during_restore_is_exit_1_with_the_partial_import_line() {
    let mut b = Backend::s3();
    let work = tempfile::tempdir().unwrap();
    let input = random_file(work.path(), 40 << 20, 9);
    let out = b.run(&[
        "backup",
        "--name-template",
        "big.graph",
        "--",
        "cat",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let _ = sha256_file(&input);
    // The importer reads slowly, so the download is still running when the server dies.
    let mut cmd = common::sg();
    cmd.args(["restore", "big.graph", "--", "sh", "-c", "sleep 3; cat > /dev/null"]);
    for (k, v) in b.env() {
        cmd.env(k, v);
    }
    let mut restore = Watched::spawn(cmd);
    restore.wait_for("the import start", |l| l.contains("streamed on stdin"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    if let Backend::S3 { server, .. } = &mut b {
        server.kill();
    }
    let out = restore.finish();
    assert_eq!(out.code, 1, "a lost connection is not a bad backup: {out:?}");
    assert!(out.stderr.contains("storage connection lost"), "{out:?}");
    assert!(out.stderr.contains("partial import"), "{out:?}");
}
