//! `stackgraph-backup restore --orchestrate` / `finalize` / `backup --orchestrate` as the
//! restore Job runs them: the binary, a ServiceAccount token kubeconfig (RBAC enforced by the
//! Kubernetes API double), the downward-API env, and the real kubectl to look at the result.

mod common;

use std::path::Path;

use common::{sg, Backend, Run};
use sts_backup_testkit::kube_double::{restore_namespace, ALL_VERBS, NS, SELECTOR};

fn as_job(backend: &Backend, kubeconfig: &Path, pod: &str, args: &[&str]) -> Run {
    let mut cmd = sg();
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", pod)
        .env("JOB_NAME", "restore-run")
        .env("STS_SCALE_WAIT", "60s");
    for (k, v) in backend.env() {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

#[test]
fn orchestrated_restore_through_the_binary() {
    let (double, kc) = restore_namespace(ALL_VERBS);
    let backend = Backend::file();
    let made = backend.run(&["backup", "--", "sh", "-c", "printf graph-data"]);
    assert_eq!(made.code, 0, "{made:?}");
    let name = backend.names().pop().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("imported");
    let import = format!("cat > {}", target.display());
    let restore = |pod: &str, check: &str| {
        as_job(
            &backend,
            &kc,
            pod,
            &[
                "restore",
                &name,
                "--orchestrate",
                "--scale-down-selector",
                SELECTOR,
                "--empty-check",
                check,
                "--",
                "sh",
                "-c",
                &import,
            ],
        )
    };

    // Refused (the target holds data): exit 3, nothing scaled, RestoreRefused.
    let refused = restore("restore-run-aaaaa", "sh -c 'exit 1'");
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(!target.exists());
    assert_eq!(double.writer_replicas(), "3 2");
    assert!(double.event_reasons().contains("RestoreRefused"));

    // Another run holds the store: exit 3 naming it.
    double.apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: sts-backup-lock-stackgraph, namespace: {NS}, annotations: {{sts-backup.io/operation: restore}}}}\n\
         spec: {{holderIdentity: {NS}/restore-run-other, leaseDurationSeconds: 600, acquireTime: \"{now}\", renewTime: \"{now}\"}}\n",
        now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ")
    ));
    let locked = restore("restore-run-bbbbb", "sh -c 'exit 0'");
    assert_eq!(locked.code, 3, "{locked:?}");
    assert!(locked.stderr.contains("sts/restore-run-other"), "{locked:?}");
    assert_eq!(locked.stderr.trim().lines().count(), 1, "{locked:?}");
    double.kubectl(&["-n", NS, "delete", "lease", "sts-backup-lock-stackgraph"]);

    // Succeeds: the data is imported and the writers are back at 3 and 2.
    let done = restore("restore-run-ccccc", "sh -c 'exit 0'");
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"graph-data");
    assert_eq!(double.writer_replicas(), "3 2");
    assert!(double.event_reasons().contains("RestoreCompleted"));

    let fin = as_job(&backend, &kc, "restore-run-ddddd", &["finalize"]);
    assert_eq!(fin.code, 0, "{fin:?}");
    assert!(fin.stdout.contains("nothing to scale back"), "{fin:?}");
}

#[test]
fn orchestrate_without_a_selector_is_invalid_input() {
    let backend = Backend::file();
    let run = backend.run(&["restore", "x.graph", "--orchestrate", "--", "cat"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--scale-down-selector"), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
}

/// SIGTERM (the Job deleted, activeDeadlineSeconds) mid-import: the importer is stopped, the
/// writers are scaled back, the lock is released, and the run fails.
#[test]
fn sigterm_during_the_import_still_scales_back() {
    let (double, kc) = restore_namespace(ALL_VERBS);
    let backend = Backend::file();
    let made = backend.run(&["backup", "--", "sh", "-c", "printf graph-data"]);
    assert_eq!(made.code, 0, "{made:?}");
    let name = backend.names().pop().unwrap();
    let mut cmd = sg();
    cmd.args([
        "restore",
        &name,
        "--orchestrate",
        "--scale-down-selector",
        SELECTOR,
        "--",
        "sh",
        "-c",
        "cat > /dev/null; sleep 60",
    ])
    .env("KUBECONFIG", &kc)
    .env("POD_NAMESPACE", NS)
    .env("POD_NAME", "restore-run-aaaaa")
    .env("JOB_NAME", "restore-run")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    for (k, v) in backend.env() {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while double.writer_replicas() != "0 0" {
        assert!(std::time::Instant::now() < deadline, "never scaled down");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Let the importer start.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("SIGTERM"), "{run:?}");
    assert_eq!(double.writer_replicas(), "3 2");
    let lease = double.kubectl(&[
        "-n",
        NS,
        "get",
        "lease",
        "sts-backup-lock-stackgraph",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease.trim(), "", "lock released");
    assert!(double.event_reasons().contains("RestoreFailed"));
}

/// `restore --latest` (what `restore-stackgraph-backup.sh --latest` renders): the newest
/// committed backup; a NAME with --latest, or neither (the template's empty BACKUP_NAME), is
/// invalid input.
#[test]
fn latest_restores_the_newest_committed_backup() {
    let backend = Backend::file();
    for (template, data) in [("a-%Y%m%d.graph", "older"), ("b-%Y%m%d.graph", "newer")] {
        let made = backend.run(&[
            "backup",
            "--name-template",
            template,
            "--",
            "sh",
            "-c",
            &format!("printf {data}"),
        ]);
        assert_eq!(made.code, 0, "{made:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("imported");
    let import = format!("cat > {}", target.display());
    let latest = backend.run_with(
        &["restore", "--", "sh", "-c", &import],
        &[("RESTORE_LATEST", "true"), ("BACKUP_NAME", "")],
    );
    assert_eq!(latest.code, 0, "{latest:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"newer");
    assert!(latest.stderr.contains("--latest: backup b-"), "{latest:?}");

    let both = backend.run(&["restore", "x.graph", "--latest", "--", "cat"]);
    assert_eq!(both.code, 2, "{both:?}");
    assert!(both.stderr.contains("not both"), "{both:?}");
    let neither = backend.run_with(
        &["restore", "--", "cat"],
        &[("BACKUP_NAME", ""), ("RESTORE_LATEST", "false")],
    );
    assert_eq!(neither.code, 2, "{neither:?}");
    assert!(neither.stderr.contains("NAME: missing"), "{neither:?}");
}
