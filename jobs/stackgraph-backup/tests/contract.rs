//! The storage contract: every behaviour here must hold on a real S3 server and on a
//! `file://` directory alike. Each test runs once per backend.

mod common;

use common::{random_file, sha256_file, Backend};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod s3 { $( #[test] fn $name() { super::$name(&super::Backend::s3()); } )* }
        mod file { $( #[test] fn $name() { super::$name(&super::Backend::file()); } )* }
    };
}

on_both_backends!(
    round_trip_streaming_multipart,
    round_trip_zstd_through_a_scratch_file,
    name_collision_is_refused,
    failing_exporter_leaves_nothing,
    corrupted_backup_is_never_imported,
    non_empty_target_is_refused_without_force,
    force_passes_the_force_argument,
    unknown_and_uncommitted_backups,
    bad_names_are_invalid_input,
    progress_is_logged,
    backup_applies_retention_when_configured,
);

fn round_trip_streaming_multipart(b: &Backend) {
    let work = tempfile::tempdir().unwrap();
    // 12 MiB with 5 MiB parts: three parts, uploaded concurrently.
    let input = random_file(work.path(), 12 * 1024 * 1024 + 7, 1);
    let input_s = input.to_str().unwrap();
    let out = b.run_with(&["backup", "--part-size", "5MiB", "--", "cat", input_s], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let names = b.names();
    assert_eq!(names.len(), 1);
    let name = &names[0];
    assert!(name.starts_with("sts-backup-") && name.ends_with(".graph"), "{name}");
    assert_eq!(b.objects(), vec![name.clone(), format!("{name}.manifest.json")]);

    let listed = b.run(&["list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(listed.stdout.trim()).unwrap();
    assert_eq!(list[0]["size"], 12 * 1024 * 1024 + 7);
    assert_eq!(list[0]["sha256"], sha256_file(&input));
    assert_eq!(list[0]["compression"], "none");
    assert!(chrono::DateTime::parse_from_rfc3339(list[0]["created"].as_str().unwrap()).is_ok());
    let table = b.run(&["list"]);
    assert!(
        table.stdout.starts_with("NAME") && table.stdout.contains(name.as_str()),
        "{table:?}"
    );

    let verified = b.run(&["verify", name]);
    assert_eq!(verified.code, 0, "{verified:?}");

    // Import on stdin into a file and compare.
    let restored = work.path().join("restored.bin");
    let cmd = format!("cat > {}", restored.display());
    let out = b.run(&["restore", name, "--", "sh", "-c", &cmd]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sha256_file(&restored), sha256_file(&input));
}

fn round_trip_zstd_through_a_scratch_file(b: &Backend) {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("text.txt");
    std::fs::write(&input, "stackgraph node\n".repeat(200_000)).unwrap();
    // The exporter writes {file}; the importer reads {file}.
    let export = format!("cp {} {{file}}", input.display());
    let out = b.run(&["backup", "--compress", "zstd", "--", "sh", "-c", &export]);
    assert_eq!(out.code, 0, "{out:?}");
    let listed = b.run(&["list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(listed.stdout.trim()).unwrap();
    assert_eq!(list[0]["compression"], "zstd");
    assert!(
        list[0]["size"].as_u64().unwrap() < 100_000,
        "zstd should shrink 3.2 MB of repeated text"
    );
    assert_eq!(list[0]["raw_size"], 3_200_000);
    let name = list[0]["name"].as_str().unwrap();

    let restored = work.path().join("restored.txt");
    let import = format!("cp {{file}} {}", restored.display());
    let out = b.run(&["restore", name, "--", "sh", "-c", &import]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read(&restored).unwrap(), std::fs::read(&input).unwrap());
    // No scratch file survives in the object store.
    assert_eq!(b.objects().len(), 2);
}

fn name_collision_is_refused(b: &Backend) {
    let tpl = ["--name-template", "fixed-name.graph"];
    let first = b.run(&[&["backup"][..], &tpl, &["--", "echo", "one"]].concat());
    assert_eq!(first.code, 0, "{first:?}");
    let before = std::fs::read(b.object_path("fixed-name.graph")).unwrap();
    let second = b.run(&[&["backup"][..], &tpl, &["--", "echo", "two"]].concat());
    assert_eq!(second.code, 3, "{second:?}");
    assert!(second.stderr.contains("already exists"), "{second:?}");
    assert_eq!(std::fs::read(b.object_path("fixed-name.graph")).unwrap(), before);
}

fn failing_exporter_leaves_nothing(b: &Backend) {
    let work = tempfile::tempdir().unwrap();
    let input = random_file(work.path(), 11 * 1024 * 1024, 2);
    // Writes two full parts, then dies: the multipart upload has started and must be aborted.
    let script = format!("cat {}; exit 7", input.display());
    let out = b.run(&["backup", "--part-size", "5MiB", "--", "sh", "-c", &script]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("exited with status 7"), "{out:?}");
    assert_eq!(b.objects(), Vec::<String>::new());
    assert_eq!(b.all_files(), Vec::<String>::new(), "no temp files either");
    assert_eq!(b.names(), Vec::<String>::new());

    // Killed by a signal mid-stream.
    let out = b.run(&["backup", "--", "sh", "-c", "echo partial; kill -9 $$"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("killed by signal 9"), "{out:?}");
    assert_eq!(b.objects(), Vec::<String>::new());

    // Fails while a process it started in the background holds its output open: noticed
    // when the exporter exits, not when that process ends (it would take 10 minutes), and
    // the background process is stopped with it.
    let started = std::time::Instant::now();
    // A duration of its own, so that the two backends' runs never see each other's sleep.
    let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    let secs = 600 + random % 10_000;
    let sleeper = format!("sleep {secs}");
    let out = b.run(&["backup", "--", "sh", "-c", &format!("{sleeper} & echo partial; exit 5")]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("exited with status 5"), "{out:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(b.objects(), Vec::<String>::new());
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("^{sleeper}$")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the background sleep was stopped too");

    // {file} exporter that writes nothing.
    let out = b.run(&["backup", "--", "true", "{file}"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("was not written"), "{out:?}");
    assert_eq!(b.objects(), Vec::<String>::new());
}

fn corrupted_backup_is_never_imported(b: &Backend) {
    let out = b.run(&["backup", "--name-template", "c.graph", "--", "seq", "1", "50000"]);
    assert_eq!(out.code, 0, "{out:?}");
    let path = b.object_path("c.graph");
    let mut data = std::fs::read(&path).unwrap();
    data[1000] ^= 0x01;
    std::fs::write(&path, data).unwrap();

    let verified = b.run(&["verify", "c.graph"]);
    assert_eq!(verified.code, 4, "{verified:?}");
    assert!(verified.stderr.contains("corrupt"), "{verified:?}");

    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target");
    for import in [
        format!("cat > {}", target.display()),
        format!("cp {{file}} {}", target.display()),
    ] {
        let out = b.run(&["restore", "c.graph", "--", "sh", "-c", &import]);
        assert_eq!(out.code, 4, "{out:?}");
        assert!(!target.exists(), "the importer must not have run");
    }
}

fn non_empty_target_is_refused_without_force(b: &Backend) {
    let out = b.run(&["backup", "--name-template", "t.graph", "--", "echo", "new data"]);
    assert_eq!(out.code, 0, "{out:?}");
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target.txt");
    std::fs::write(&target, "old data\n").unwrap();
    let check = format!("test ! -s {}", target.display());
    // `test ! -s` exits 1 when the file has data: the contract's "holds data".
    let import = format!("cat > {}", target.display());
    let out = b.run(&["restore", "t.graph", "--empty-check", &check, "--", "sh", "-c", &import]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("rerun with --force"), "{out:?}");
    assert!(
        out.stderr.contains("restore --force"),
        "the exact command is printed: {out:?}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old data\n");

    // An empty-check that errors (exit 2) is a failure, not a verdict.
    let out = b.run(&[
        "restore",
        "t.graph",
        "--empty-check",
        "sh -c 'exit 2'",
        "--",
        "sh",
        "-c",
        &import,
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old data\n");

    let out = b.run(&[
        "restore",
        "t.graph",
        "--force",
        "--empty-check",
        &check,
        "--",
        "sh",
        "-c",
        &import,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new data\n");
}

fn force_passes_the_force_argument(b: &Backend) {
    let out = b.run(&["backup", "--name-template", "f.graph", "--", "echo", "x"]);
    assert_eq!(out.code, 0, "{out:?}");
    let work = tempfile::tempdir().unwrap();
    let argv = work.path().join("argv");
    // The importer records its arguments; `-force` must be appended only with --force.
    let import = format!("printf '%s\\n' \"$@\" > {}; cat >/dev/null", argv.display());
    let out = b.run(&[
        "restore",
        "f.graph",
        "--force-arg",
        "-force",
        "--",
        "sh",
        "-c",
        &import,
        "importer",
        "-import",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_to_string(&argv).unwrap(), "-import\n");
    let out = b.run_with(
        &["restore", "f.graph", "--", "sh", "-c", &import, "importer", "-import"],
        &[("RESTORE_FORCE", "true"), ("RESTORE_FORCE_ARG", "-force")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_to_string(&argv).unwrap(), "-import\n-force\n");
}

fn unknown_and_uncommitted_backups(b: &Backend) {
    let out = b.run(&["restore", "sts-backup-20200101-0000.graph", "--", "cat"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("NAME: there is no backup"), "{out:?}");
    // Data without manifest (a crashed run): invisible to list, an integrity failure to restore.
    let out = b.run(&["backup", "--name-template", "u.graph", "--", "echo", "x"]);
    assert_eq!(out.code, 0, "{out:?}");
    std::fs::remove_file(b.object_path("u.graph.manifest.json")).unwrap();
    assert_eq!(b.names(), Vec::<String>::new());
    let out = b.run(&["restore", "u.graph", "--", "cat"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("no manifest"), "{out:?}");
    // An unreadable manifest is an integrity failure too.
    std::fs::write(b.object_path("u.graph.manifest.json"), "{not json").unwrap();
    let out = b.run(&["verify", "u.graph"]);
    assert_eq!(out.code, 4, "{out:?}");
}

fn bad_names_are_invalid_input(b: &Backend) {
    for name in ["../etc/passwd", "a/b", "x\ny", "a b", ".hidden"] {
        let out = b.run(&["restore", name, "--", "cat"]);
        assert_eq!(out.code, 2, "{name:?}: {out:?}");
        assert!(out.stderr.starts_with("error: NAME:"), "{out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
    }
    let out = b.run(&["backup", "--name-template", "bad/%Y", "--", "echo"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = b.run(&["backup"]);
    assert_eq!(out.code, 2, "missing EXPORT_CMD: {out:?}");
    assert!(out.stderr.contains("EXPORT_CMD"), "{out:?}");
    assert_eq!(b.objects(), Vec::<String>::new());
}

fn progress_is_logged(b: &Backend) {
    let out = b.run_with(
        &[
            "backup",
            "--",
            "sh",
            "-c",
            "head -c 1000000 /dev/zero; sleep 1; head -c 1000000 /dev/zero",
        ],
        &[("STS_PROGRESS_INTERVAL", "200ms")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("uploaded: "), "{out:?}");
    assert!(out.stderr.contains("/s)"), "a rate is shown: {out:?}");
    assert!(out.stderr.contains("=== Exporting"), "{out:?}");
}

fn backup_applies_retention_when_configured(b: &Backend) {
    for old in ["sts-backup-20200101-0300.graph", "sts-backup-20200102-0300.graph"] {
        let out = b.run(&["backup", "--name-template", old, "--", "echo", old]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    // A bad retention value fails before any work.
    let out = b.run_with(
        &["backup", "--", "echo", "new"],
        &[(
            "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA",
            "__import__('os')",
        )],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--retention"), "{out:?}");
    assert_eq!(b.names().len(), 2);

    let out = b.run_with(
        &["backup", "--", "echo", "new"],
        &[("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA", "days = 30")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("=== Expiring old backups"), "{out:?}");
    let names = b.names();
    assert_eq!(names.len(), 1, "the two 2020 backups are purged: {names:?}");
    assert!(!names[0].starts_with("sts-backup-2020"), "{names:?}");
    assert_eq!(b.objects().len(), 2, "data and manifest of the new backup only");
}
