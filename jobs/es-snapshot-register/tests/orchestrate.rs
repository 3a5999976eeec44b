//! `restore --orchestrate` for the elasticsearch store, as the restore Job runs it: the binary
//! with a ServiceAccount token kubeconfig (RBAC enforced by the Kubernetes API double), the
//! downward-API env, and the stateful fake Elasticsearch. The writers (a Deployment of 3 and a
//! StatefulSet of 2) go down only for an in-place `--force` restore, after every check, and
//! come back to their recorded counts on every path.

mod fake_es;

use std::path::Path;

use fake_es::*;
use sts_backup_testkit::kube_double::{restore_namespace, KubeDouble, ALL_VERBS, NS, SELECTOR};

const LEASE: &str = "sts-backup-lock-elasticsearch";

fn as_job(es: &FakeEs, s3: &S3, kubeconfig: &Path, pod: &str, force: bool) -> Run {
    let kc = kubeconfig.display().to_string();
    let env = env_with(
        es,
        s3,
        &[
            ("RESTORE_POLL_INTERVAL", "50ms"),
            ("STS_PROGRESS_INTERVAL", "50ms"),
            ("RESTORE_FORCE", if force { "true" } else { "false" }),
            ("STS_ORCHESTRATE", "true"),
            ("STS_STORE", "elasticsearch"),
            ("STS_SCALE_DOWN_SELECTOR", SELECTOR),
            ("STS_SCALE_WAIT", "60s"),
            ("KUBECONFIG", &kc),
            ("POD_NAMESPACE", NS),
            ("POD_NAME", pod),
            ("JOB_NAME", "restore-run"),
        ],
    );
    run_bin(&["restore", SNAP], &env)
}

/// PATCHes of the writers the double served, in order.
fn writer_patches(double: &KubeDouble) -> Vec<String> {
    std::fs::read_to_string(double.dir.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("PATCH ") && (l.contains("/deployments/router") || l.contains("/statefulsets/graph")))
        .map(str::to_string)
        .collect()
}

fn conflicting() -> (S3, FakeEs) {
    let (s3, es) = registered(FakeOptions::default());
    es.add_index_template("sts_k8s_logs", &["sts_k8s_logs*"], true);
    es.add_index("sts_topology_1", true);
    (s3, es)
}

#[test]
fn refused_without_force_scales_nothing_and_forced_scales_down_and_back() {
    let (double, kc) = restore_namespace(ALL_VERBS);
    let (s3, es) = conflicting();

    // Refused (open indices would be overwritten): exit 3, no workload touched, ES untouched.
    let refused = as_job(&es, &s3, &kc, "restore-run-aaaaa", false);
    assert_eq!(refused.code, 3, "{}", refused.all());
    es.assert_untouched();
    assert_eq!(double.writer_replicas(), "3 2");
    assert!(writer_patches(&double).is_empty(), "{:?}", writer_patches(&double));
    assert!(
        double.event_reasons().contains("RestoreRefused"),
        "{}",
        double.event_reasons()
    );

    // Forced: the writers go down (counts recorded), the overwrite and restore run, they come back.
    let done = as_job(&es, &s3, &kc, "restore-run-bbbbb", true);
    assert_eq!(done.code, 0, "{}", done.all());
    assert!(
        done.stderr.contains("Scaled down deployment/router (3) to 0"),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("Scaled down statefulset/graph (2) to 0"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("Locked store elasticsearch"), "{}", done.stderr);
    assert!(!es.requests_to("indices.close").is_empty() && !es.requests_to("snapshot.restore").is_empty());
    assert_eq!(writer_patches(&double).len(), 4, "{:?}", writer_patches(&double));
    assert_eq!(double.writer_replicas(), "3 2");
    assert!(
        double.event_reasons().contains("RestoreCompleted"),
        "{}",
        double.event_reasons()
    );
    let holder = double.kubectl(&["-n", NS, "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}"]);
    assert_eq!(holder.trim(), "", "the lease was not released");
}

/// Negative control: the Role without `patch` on statefulsets. The 403 comes before the first
/// change in Elasticsearch: nothing closed or restored, the Deployment scaled back, exit 1.
#[test]
fn a_role_without_patch_on_statefulsets_fails_before_any_change() {
    let (double, kc) = restore_namespace("[get, list, watch]");
    let (s3, es) = conflicting();
    let run = as_job(&es, &s3, &kc, "restore-run-aaaaa", true);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains(r#"cannot patch resource \"statefulsets\""#)
            || run.stderr.contains(r#"cannot patch resource "statefulsets""#),
        "{}",
        run.stderr
    );
    es.assert_untouched();
    assert_eq!(double.writer_replicas(), "3 2");
    assert!(
        double.event_reasons().contains("RestoreFailed"),
        "{}",
        double.event_reasons()
    );
}

/// A renamed restore overwrites nothing: no writer is scaled even with --force.
#[test]
fn another_holder_refuses_and_a_rename_scales_nothing() {
    let (double, kc) = restore_namespace(ALL_VERBS);
    let (s3, es) = conflicting();
    double.apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {LEASE}, namespace: {NS}, annotations: {{sts-backup.io/operation: restore}}}}\n\
         spec: {{holderIdentity: {NS}/restore-run-other, leaseDurationSeconds: 600, acquireTime: \"{now}\", renewTime: \"{now}\"}}\n",
        now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ")
    ));
    let locked = as_job(&es, &s3, &kc, "restore-run-aaaaa", true);
    assert_eq!(locked.code, 3, "{}", locked.all());
    assert!(
        locked.stderr.contains("locked by sts/restore-run-other"),
        "{}",
        locked.stderr
    );
    es.assert_untouched();
    double.kubectl(&["-n", NS, "delete", "lease", LEASE]);

    let kc_s = kc.display().to_string();
    let env = env_with(
        &es,
        &s3,
        &[
            ("RESTORE_POLL_INTERVAL", "50ms"),
            ("STS_PROGRESS_INTERVAL", "50ms"),
            ("RESTORE_FORCE", "true"),
            ("RESTORE_RENAME_TO", "restored-{}"),
            ("STS_ORCHESTRATE", "true"),
            ("STS_SCALE_DOWN_SELECTOR", SELECTOR),
            ("KUBECONFIG", &kc_s),
            ("POD_NAMESPACE", NS),
            ("POD_NAME", "restore-run-bbbbb"),
            ("JOB_NAME", "restore-run"),
        ],
    );
    let renamed = run_bin(&["restore", SNAP], &env);
    assert_eq!(renamed.code, 0, "{}", renamed.all());
    assert!(writer_patches(&double).is_empty(), "{:?}", writer_patches(&double));
}
