//! Whole orchestrated runs (lock → recovery → checks → scale down → import → scale back →
//! release → Event) against the Kubernetes API double as the restore ServiceAccount, with a
//! real backup in file:// storage and real import commands.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use sts_backup_cluster::lock::{self, Operation};
use sts_backup_cluster::orchestrate::{self, Orchestration};
use sts_backup_cluster::scale;
use sts_backup_cluster::Cluster;
use sts_backup_core::backup::{backup, BackupOptions};
use sts_backup_core::command::CommandSpec;
use sts_backup_core::manifest::Compression;
use sts_backup_core::naming::NameTemplate;
use sts_backup_core::restore::BackupRestoreOptions;
use sts_backup_core::storage::{Storage, StorageArgs};
use sts_backup_core::Error;
use sts_backup_testkit::kube_double::KubeDouble;

fn orch() -> Orchestration {
    Orchestration {
        store: "stackgraph".into(),
        scale_down_selector: SELECTOR.into(),
        scale_wait: Duration::from_secs(60),
        lease_duration: Duration::from_secs(30),
    }
}

struct Env {
    double: KubeDouble,
    kc: std::path::PathBuf,
    store: tempfile::TempDir,
    storage: Storage,
}

async fn env() -> Env {
    let (double, kc) = cluster(ALL_VERBS);
    let store = tempfile::tempdir().unwrap();
    let args = StorageArgs {
        storage: format!("file://{}", store.path().join("backups").display()),
        ..Default::default()
    };
    let storage = Storage::open(&args).await.unwrap();
    Env {
        double,
        kc,
        store,
        storage,
    }
}

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("CMD", vec!["sh".into(), "-c".into(), script.into()]).unwrap()
}

/// A committed backup holding `graph-data`; returns its name.
async fn make_backup(storage: &Storage) -> String {
    let opts = BackupOptions {
        template: NameTemplate::parse("sts-backup-%Y%m%d-%H%M%S.graph").unwrap(),
        compression: Compression::None,
        export: sh("printf graph-data"),
        scratch_dir: None,
        create_bucket: false,
        must_contain: None,
    };
    backup(storage, &opts, chrono::Utc::now()).await.unwrap().name
}

fn restore_opts(name: &str, empty_check: &str, import: CommandSpec) -> BackupRestoreOptions {
    BackupRestoreOptions {
        empty_check: Some(sh(empty_check)),
        import,
        name: name.into(),
        force: false,
        force_arg: None,
        empty_check_timeout: Duration::from_secs(30),
        scratch_dir: None,
        rerun_hint: "restore --force".into(),
    }
}

/// resourceVersions of router and graph: unchanged means never written.
async fn versions(double: &KubeDouble) -> (String, String) {
    let admin = client(&double.admin_kubeconfig).await;
    let d = Api::<Deployment>::namespaced(admin.clone(), NS)
        .get("router")
        .await
        .unwrap();
    let s = Api::<StatefulSet>::namespaced(admin, NS).get("graph").await.unwrap();
    (
        d.metadata.resource_version.unwrap(),
        s.metadata.resource_version.unwrap(),
    )
}

/// The importer records the writers' replicas as it sees them (through the real kubectl), so
/// the test proves the scale-down came before the import, then stores the stream.
fn recording_import(env: &Env) -> CommandSpec {
    let out = env.store.path().join("imported");
    let seen = env.store.path().join("seen");
    sh(&format!(
        "KUBECONFIG={kc} kubectl -n {NS} get deployment/router statefulset/graph -o jsonpath='{{.items[*].spec.replicas}}' > {seen} && cat > {out}",
        kc = env.double.admin_kubeconfig.display(),
        seen = seen.display(),
        out = out.display()
    ))
}

async fn run(env: &Env, pod: &str) -> Cluster {
    run_as(&env.kc, pod).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_scales_down_imports_and_returns_replicas_to_3_and_2() {
    let env = env().await;
    let name = make_backup(&env.storage).await;
    let run = run(&env, "restore-run-aaaaa").await;
    let opts = restore_opts(&name, "exit 0", recording_import(&env));
    orchestrate::restore(&run, &orch(), &env.storage, &opts).await.unwrap();

    let seen = std::fs::read_to_string(env.store.path().join("seen")).unwrap();
    assert_eq!(seen.trim(), "0 0", "the importer ran while the writers were at zero");
    assert_eq!(std::fs::read(env.store.path().join("imported")).unwrap(), b"graph-data");
    let s = state(&env.double).await;
    assert_eq!(s["router"], (3, None));
    assert_eq!(s["graph"], (2, None));
    assert_eq!(s["ui"], (2, None));
    assert!(
        lock::holder(&run, "stackgraph").await.unwrap().is_none(),
        "lock released"
    );
    let events = job_events(&env.double, &run).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "RestoreCompleted");
    assert!(
        events[0].2.contains(&name) && events[0].2.contains("10 B"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_restore_never_scales_anything() {
    let env = env().await;
    let name = make_backup(&env.storage).await;
    let before = versions(&env.double).await;
    let run = run(&env, "restore-run-aaaaa").await;
    // Exit 1 from the empty check: the target holds data.
    let opts = restore_opts(&name, "exit 1", recording_import(&env));
    let err = orchestrate::restore(&run, &orch(), &env.storage, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert_eq!(versions(&env.double).await, before, "no workload was ever written");
    assert!(!env.store.path().join("seen").exists(), "the importer never ran");
    assert!(
        lock::holder(&run, "stackgraph").await.unwrap().is_none(),
        "lock released"
    );
    let events = job_events(&env.double, &run).await;
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["RestoreRefused"]
    );

    // A missing backup is refused before any scaling too.
    let opts = restore_opts("sts-backup-19990101-0000.graph", "exit 0", recording_import(&env));
    assert!(orchestrate::restore(&run, &orch(), &env.storage, &opts).await.is_err());
    assert_eq!(versions(&env.double).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_still_scales_back() {
    let env = env().await;
    let name = make_backup(&env.storage).await;
    let run = run(&env, "restore-run-aaaaa").await;
    let opts = restore_opts(&name, "exit 0", sh("cat > /dev/null; exit 7"));
    let err = orchestrate::restore(&run, &orch(), &env.storage, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Command(ref m) if m.contains('7')), "{err}");
    let s = state(&env.double).await;
    assert_eq!(s["router"], (3, None));
    assert_eq!(s["graph"], (2, None));
    let events = job_events(&env.double, &run).await;
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["RestoreFailed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_restore_is_refused_naming_the_holder_and_a_backup_is_skipped() {
    let env = env().await;
    let name = make_backup(&env.storage).await;
    let before = versions(&env.double).await;
    let first = run(&env, "restore-run-aaaaa").await;
    let held = lock::acquire(&first, "stackgraph", Operation::Restore, Duration::from_secs(30))
        .await
        .unwrap();
    let second = run(&env, "restore-run-bbbbb").await;
    let opts = restore_opts(&name, "exit 0", recording_import(&env));
    let err = orchestrate::restore(&second, &orch(), &env.storage, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Refused(ref m) if m.contains("sts/restore-run-aaaaa")),
        "{err}"
    );
    assert_eq!(sts_backup_core::Error::exit(&err), sts_backup_core::Exit::Refused);
    assert_eq!(versions(&env.double).await, before);

    let backup_opts = BackupOptions {
        template: NameTemplate::parse("sts-backup-%Y%m%d-%H%M%S.second").unwrap(),
        compression: Compression::None,
        export: sh("printf more"),
        scratch_dir: None,
        create_bucket: false,
        must_contain: None,
    };
    let skipped = orchestrate::backup_run(&second, &orch(), &env.storage, &backup_opts, chrono::Utc::now())
        .await
        .unwrap();
    assert!(skipped.is_none(), "a backup during a restore is skipped, not failed");
    let reasons: Vec<_> = job_events(&env.double, &second)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(reasons.contains(&"BackupSkipped".to_string()), "{reasons:?}");
    held.release().await;
    let done = orchestrate::backup_run(&second, &orch(), &env.storage, &backup_opts, chrono::Utc::now())
        .await
        .unwrap();
    assert!(done.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_recovers_a_restore_killed_after_scale_down() {
    let env = env().await;
    {
        let killed = run(&env, "restore-run-aaaaa").await;
        let held = lock::acquire(&killed, "stackgraph", Operation::Restore, Duration::from_secs(2))
            .await
            .unwrap();
        scale::scale_down(&killed, SELECTOR, Duration::from_secs(60))
            .await
            .unwrap();
        drop(held);
    }
    assert_eq!(state(&env.double).await["router"].0, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The next scheduled backup takes the expired lock and scales back first.
    let next = run(&env, "backup-run-ccccc").await;
    let backup_opts = BackupOptions {
        template: NameTemplate::parse("sts-backup-%Y%m%d-%H%M%S.graph").unwrap(),
        compression: Compression::None,
        export: sh("printf graph-data"),
        scratch_dir: None,
        create_bucket: false,
        must_contain: None,
    };
    orchestrate::backup_run(&next, &orch(), &env.storage, &backup_opts, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    let s = state(&env.double).await;
    assert_eq!(s["router"], (3, None));
    assert_eq!(s["graph"], (2, None));
    // finalize is a no-op now.
    assert!(orchestrate::finalize(&next, &orch()).await.unwrap().is_empty());
}
