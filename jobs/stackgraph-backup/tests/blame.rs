//! Failure messages blame the right thing (issue 10 item 12): the importer's own exit status
//! when it quits early, the scratch disk when that fills before the importer runs.

mod common;

use std::process::Command;

use common::{random_file, sg, Backend, Run};

/// A committed backup of `len` random bytes named `b.graph`.
fn backed_up(b: &Backend, len: usize) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let input = random_file(work.path(), len, 11);
    let out = b.run(&[
        "backup",
        "--name-template",
        "b.graph",
        "--",
        "cat",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    work
}

#[test]
fn an_importer_that_quits_early_is_named_with_its_exit_status() {
    let b = Backend::file();
    let _work = backed_up(&b, 8 << 20);
    let out = b.run(&[
        "restore",
        "b.graph",
        "--",
        "sh",
        "-c",
        "head -c 1000 >/dev/null; exit 9",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the import command stopped reading") && out.stderr.contains("exited with status 9"),
        "{out:?}"
    );
}

#[test]
fn a_full_scratch_disk_is_not_blamed_on_the_importer() {
    let b = Backend::file();
    let _work = backed_up(&b, 2 << 20);
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("importer-ran");
    // A file-size limit of 512 KiB stands in for a full scratch disk: writes past it fail
    // (EFBIG) the way they would with ENOSPC. The shell ignores SIGXFSZ so that the write
    // fails instead of the process being killed; exec keeps both for the job.
    let import = format!("cat {{file}} >/dev/null; touch {}", marker.display());
    let script = r#"ulimit -f 1024; trap "" XFSZ; exec "$0" "$@""#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .arg(sg().get_program())
        .args(["restore", "b.graph", "--scratch-dir"])
        .arg(scratch.path())
        .args(["--", "sh", "-c", &import]);
    for (k, v) in b.env() {
        cmd.env(k, v);
    }
    let out = Run::from(cmd.output().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(errors[0].contains("writing the scratch file"), "{out:?}");
    assert_eq!(
        errors[0].matches("os error").count(),
        1,
        "the cause is said once: {out:?}"
    );
    assert!(!out.stderr.contains("import command"), "{out:?}");
    assert!(!marker.exists(), "the importer never ran");
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(left.is_empty(), "the scratch file was removed: {left:?}");
}
