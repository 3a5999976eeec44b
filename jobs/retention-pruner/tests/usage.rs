//! Usage errors and bad storage settings: one line naming the flag, exit 2, nothing deleted.

use std::process::Command;

fn pruner(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention-pruner"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BACKUP_") || k.starts_with("S3_") || k.starts_with("AWS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("BACKUP_STORAGE", format!("file://{}", dir.display()));
    cmd
}

/// Arguments, environment, and the flag the error line must name.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn usage_errors_are_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sts-backup-20200101-0000.graph"), b"x").unwrap();
    let cases: [Case; 9] = [
        (&["--retention", "-30d"], &[], "--retention"),
        (&["--min-keep", "-1"], &[], "--min-keep"),
        (&["--part-size", "-5MiB"], &[], "--part-size"),
        (&["--bogus"], &[], "--bogus"),
        (&["-o", "xml"], &[], "--output"),
        (
            &["--retention", "1d"],
            &[("S3_ENDPOINT", "http://[::1")],
            "--s3-endpoint",
        ),
        (&["--retention", "1d"], &[("S3_SSE", "aws:kms")], "--sse"),
        (&["--retention", "1d"], &[("S3_REGION", "")], "--region"),
        (&["--retention", "1d"], &[("S3_STALL_TIMEOUT", "0s")], "--stall-timeout"),
    ];
    for (args, env, flag) in cases {
        let out = pruner(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(lines.len(), 1, "{args:?} {env:?}: one line expected: {stderr}");
        assert!(
            lines[0].contains(flag),
            "{args:?} {env:?}: should name {flag}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing may be deleted"
    );
    let help = pruner(dir.path()).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--request-timeout"));
}
