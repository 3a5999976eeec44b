//! The cluster side against the Kubernetes API double (stateful, OpenAPI-validated, with
//! controllers), authenticated as a ServiceAccount token so the double enforces the Role
//! the chart will grant: the store lock, scaling down and back to the recorded counts,
//! recovery after a hard kill, Events on the Job, and a Role missing a verb.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use sts_backup_cluster::events::{self, Reason};
use sts_backup_cluster::lock::{self, Operation};
use sts_backup_cluster::scale::{self, Kind, REPLICAS_ANNOTATION};
use sts_backup_cluster::ClusterError;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_is_locked_out_naming_the_holder_until_release() {
    let (_double, kc) = cluster(ALL_VERBS);
    let first = run_as(&kc, "restore-run-aaaaa").await;
    let second = run_as(&kc, "restore-run-bbbbb").await;

    let held = lock::acquire(&first, "stackgraph", Operation::Restore, Duration::from_secs(30))
        .await
        .unwrap();
    let refused = lock::acquire(&second, "stackgraph", Operation::Backup, Duration::from_secs(30)).await;
    match refused {
        Err(ClusterError::Locked {
            ref holder,
            ref operation,
            ref store,
            ..
        }) => {
            assert_eq!(holder, "sts/restore-run-aaaaa");
            assert_eq!(operation, "restore");
            assert_eq!(store, "stackgraph");
        }
        other => panic!("second acquire must be Locked, got {:?}", other.map(|_| ())),
    }
    let msg = refused.err().unwrap();
    assert_eq!(msg.exit(), sts_backup_core::Exit::Refused);
    assert!(msg.to_string().contains("sts/restore-run-aaaaa"), "{msg}");
    // Another store is independent.
    let other = lock::acquire(&second, "elasticsearch", Operation::Backup, Duration::from_secs(30))
        .await
        .unwrap();
    let holder = lock::holder(&second, "stackgraph").await.unwrap().unwrap();
    assert_eq!(holder.identity, "sts/restore-run-aaaaa");

    held.release().await;
    assert!(lock::holder(&second, "stackgraph").await.unwrap().is_none());
    let taken = lock::acquire(&second, "stackgraph", Operation::Backup, Duration::from_secs(30))
        .await
        .unwrap();
    taken.release().await;
    other.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_holds_and_an_abandoned_one_is_taken_over_after_expiry() {
    let (double, kc) = cluster(ALL_VERBS);
    let first = run_as(&kc, "restore-run-aaaaa").await;
    let second = run_as(&kc, "restore-run-bbbbb").await;
    let held = lock::acquire(&first, "stackgraph", Operation::Restore, Duration::from_secs(3))
        .await
        .unwrap();
    // Negative control for the takeover: while renewed, the 3 s lease outlives 3 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = lock::acquire(&second, "stackgraph", Operation::Restore, Duration::from_secs(3)).await;
    assert!(
        matches!(still, Err(ClusterError::Locked { .. })),
        "a renewed lease must still be held after its duration"
    );
    // Hard kill: the run's state is gone, nobody releases or renews.
    drop(held);
    drop(first);
    let right_after = lock::acquire(&second, "stackgraph", Operation::Restore, Duration::from_secs(3)).await;
    assert!(matches!(right_after, Err(ClusterError::Locked { .. })));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let taken = lock::acquire(&second, "stackgraph", Operation::Restore, Duration::from_secs(3))
        .await
        .expect("an expired lease is taken over");
    let admin = client(&double.admin_kubeconfig).await;
    let lease = Api::<Lease>::namespaced(admin, NS)
        .get(&lock::lease_name("stackgraph"))
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("sts/restore-run-bbbbb"));
    assert_eq!(spec.lease_transitions, Some(1));
    taken.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_records_and_zeroes_writers_and_scale_back_restores_exactly() {
    let (double, kc) = cluster(ALL_VERBS);
    wait_pods(&double, "router", 3).await;
    wait_pods(&double, "graph", 2).await;
    let run = run_as(&kc, "restore-run-aaaaa").await;

    let mut down = scale::scale_down(&run, SELECTOR, Duration::from_secs(60))
        .await
        .unwrap();
    down.sort_by(|a, b| a.name.cmp(&b.name));
    let summary: Vec<_> = down.iter().map(|w| (w.kind, w.name.as_str(), w.replicas)).collect();
    assert_eq!(
        summary,
        [(Kind::StatefulSet, "graph", 2), (Kind::Deployment, "router", 3)]
    );
    let s = state(&double).await;
    assert_eq!(s["router"], (0, Some("3".into())));
    assert_eq!(s["graph"], (0, Some("2".into())));
    assert_eq!(s["ui"], (2, None), "a workload outside the selector is untouched");
    // scale_down returned only once the writers' pods were gone.
    assert_eq!(pods(&double, "router").await, 0);
    assert_eq!(pods(&double, "graph").await, 0);
    assert_eq!(pods(&double, "ui").await, 2);

    // A second scale-down must not overwrite the recorded counts with the current zeros.
    let again = scale::scale_down(&run, SELECTOR, Duration::from_secs(5)).await;
    assert!(matches!(again, Err(ClusterError::Invalid(ref m)) if m.contains(REPLICAS_ANNOTATION)));
    assert_eq!(state(&double).await["router"], (0, Some("3".into())));

    let back = scale::scale_back(&run).await.unwrap();
    assert_eq!(back.len(), 2);
    let s = state(&double).await;
    assert_eq!(s["router"], (3, None));
    assert_eq!(s["graph"], (2, None));
    assert_eq!(s["ui"], (2, None));
    wait_pods(&double, "router", 3).await;
    wait_pods(&double, "graph", 2).await;
    // Idempotent: nothing left to do.
    assert!(scale::scale_back(&run).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_recovers_the_replicas_after_a_hard_kill() {
    let (double, kc) = cluster(ALL_VERBS);
    {
        let run = run_as(&kc, "restore-run-aaaaa").await;
        let held = lock::acquire(&run, "stackgraph", Operation::Restore, Duration::from_secs(2))
            .await
            .unwrap();
        scale::scale_down(&run, SELECTOR, Duration::from_secs(60))
            .await
            .unwrap();
        // Killed: no scale back, no release; all in-memory state is dropped.
        drop(held);
    }
    let s = state(&double).await;
    assert_eq!((s["router"].0, s["graph"].0), (0, 0));
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The Job's retry: a new pod, a new client, nothing but what is in the cluster.
    let retry = run_as(&kc, "restore-run-ccccc").await;
    let held = lock::acquire(&retry, "stackgraph", Operation::Restore, Duration::from_secs(30))
        .await
        .unwrap();
    let back = scale::scale_back_retrying(&retry, 3).await.unwrap();
    assert_eq!(back.len(), 2);
    let s = state(&double).await;
    assert_eq!(s["router"], (3, None));
    assert_eq!(s["graph"], (2, None));
    held.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_on_the_job() {
    let (double, kc) = cluster(ALL_VERBS);
    let run = run_as(&kc, "restore-run-aaaaa").await;
    events::record(
        &run,
        Reason::RestoreCompleted,
        "restored sts-backup-20261127.graph (12 MiB) in 42s",
    )
    .await;
    events::record(&run, Reason::RestoreRefused, "target not empty").await;
    let on_job = job_events(&double, &run).await;
    assert!(
        on_job.contains(&(
            "RestoreCompleted".into(),
            "Normal".into(),
            "restored sts-backup-20261127.graph (12 MiB) in 42s".into()
        )),
        "{on_job:?}"
    );
    assert!(
        on_job.contains(&("RestoreRefused".into(), "Warning".into(), "target not empty".into())),
        "{on_job:?}"
    );
    assert_eq!(on_job.len(), 2, "{on_job:?}");
}

/// Negative control for the Role: without `patch` on statefulsets the double answers 403,
/// the error says which verb on what, and the Deployment already scaled is recoverable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_patch_on_statefulsets_is_refused_with_403() {
    let (double, kc) = cluster("[get, list, watch]");
    let run = run_as(&kc, "restore-run-aaaaa").await;
    let err = scale::scale_down(&run, SELECTOR, Duration::from_secs(30))
        .await
        .expect_err("scale down must fail without patch on statefulsets");
    assert!(err.is_forbidden(), "expected 403, got {err}");
    let text = err.to_string();
    assert!(text.contains("statefulset/graph"), "{text}");
    assert!(text.contains("patch"), "the 403 must name the verb: {text}");
    assert_eq!(state(&double).await["graph"], (2, None), "graph untouched");
    // The Deployment scaled before the refusal carries its record; scale back restores it.
    assert_eq!(state(&double).await["router"], (0, Some("3".into())));
    scale::scale_back(&run).await.unwrap();
    assert_eq!(state(&double).await["router"], (3, None));
}
