//! The pure retention rules: which keys are backups, boundary ages, the floor, GFS
//! (restic `forget` semantics), orphans; plus a property test over random bucket states.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use sts_backup_core::claim;
use sts_backup_core::retention::{plan, KeepArgs, KeepCount, KeepReason, OrphanKind, Plan, RetentionArgs};
use sts_backup_core::storage::ObjectMeta;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 3, 1, 12, 0, 0).unwrap()
}

fn name(t: DateTime<Utc>) -> String {
    t.format("sts-backup-%Y%m%d-%H%M.graph").to_string()
}

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn obj(key: &str, modified: DateTime<Utc>) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: 100,
        modified: Some(SystemTime::from(modified)),
        etag: None,
        run: None,
    }
}

/// A committed backup: data object and manifest.
fn committed(t: DateTime<Utc>) -> Vec<ObjectMeta> {
    let key = name(t);
    vec![obj(&key, t), obj(&format!("{key}.manifest.json"), t)]
}

fn run(objects: &[ObjectMeta], args: RetentionArgs) -> Plan {
    plan(objects, &args.policy().unwrap(), now())
}

fn kept(plan: &Plan) -> Vec<String> {
    let mut k: Vec<String> = plan.kept().map(|b| b.key.clone()).collect();
    k.sort();
    k
}

fn purged(plan: &Plan) -> Vec<String> {
    let mut k: Vec<String> = plan.purged().map(|b| b.key.clone()).collect();
    k.sort();
    k
}

fn retention(delta: &str) -> RetentionArgs {
    RetentionArgs {
        retention: Some(delta.into()),
        ..Default::default()
    }
}

#[test]
fn classifies_keys_like_the_reference() {
    let t = at(2021, 2, 16, 3, 0);
    let old = at(2020, 1, 1, 0, 0);
    let mut objects = committed(t);
    objects.extend(committed(at(2021, 2, 20, 3, 0)));
    // re.match: anchored at the start, not at the end.
    objects.push(obj("sts-backup-20210101-0000.graphXYZ", old));
    objects.push(obj("sts-backup-20210101-0000.graphXYZ.manifest.json", old));
    for ignored in [
        "sts-export.graph",
        "xsts-backup-20210216-0300.graph",
        "sts-backup--.graph",
        "sts-backup-20211345-9999.graph",
        "other.manifest.json",
        "notes.txt",
    ] {
        objects.push(obj(ignored, old));
    }
    objects.push(obj("sts-backup-20200101-0000.graph.manifest.json", old)); // manifest without data
    objects.push(obj("sts-backup-20200102-0000.graph", old)); // data without manifest

    let plan = run(&objects, retention("days = 30"));
    let backups: BTreeSet<&str> = plan.backups.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(
        backups,
        BTreeSet::from([
            "sts-backup-20210101-0000.graphXYZ",
            "sts-backup-20210216-0300.graph",
            "sts-backup-20210220-0300.graph"
        ])
    );
    assert_eq!(
        plan.ignored,
        vec![
            "notes.txt",
            "other.manifest.json",
            "sts-backup--.graph",
            "sts-backup-20211345-9999.graph",
            "sts-export.graph",
            "xsts-backup-20210216-0300.graph",
        ]
    );
    let orphans: Vec<(&str, OrphanKind, bool)> = plan
        .orphans
        .iter()
        .map(|o| (o.key.as_str(), o.kind, o.delete))
        .collect();
    assert_eq!(
        orphans,
        vec![
            ("sts-backup-20200102-0000.graph", OrphanKind::Data, true),
            (
                "sts-backup-20200101-0000.graph.manifest.json",
                OrphanKind::Manifest,
                true
            ),
        ]
    );
    // Timestamps are parsed in UTC from capture group 1.
    let b = plan
        .backups
        .iter()
        .find(|b| b.key == "sts-backup-20210216-0300.graph")
        .unwrap();
    assert_eq!(b.timestamp, t);
    assert_eq!(purged(&plan), vec!["sts-backup-20210101-0000.graphXYZ"]);
}

#[test]
fn exactly_the_delta_is_kept() {
    // Python: purge when `now - ts > delta`.
    let newest = now() - Duration::hours(1);
    let exact = now() - Duration::days(30);
    let older = exact - Duration::minutes(1);
    let objects: Vec<_> = [newest, exact, older].into_iter().flat_map(committed).collect();
    let plan = run(&objects, retention("days = 30"));
    assert_eq!(kept(&plan), vec![name(exact), name(newest)]);
    assert_eq!(purged(&plan), vec![name(older)]);
    // The short form means the same.
    assert_eq!(purged(&run(&objects, retention("720h"))), vec![name(older)]);
    // A fraction of a day: 29.99 days keeps only the newest.
    assert_eq!(
        purged(&run(&objects, retention("days=29.99"))),
        vec![name(older), name(exact)]
    );
    // A backup from the future is young (and the newest).
    let future = now() + Duration::days(2);
    let plan = run(
        &committed(future).into_iter().chain(objects.clone()).collect::<Vec<_>>(),
        retention("minutes=30"),
    );
    assert_eq!(kept(&plan), vec![name(future)]);
}

#[test]
fn the_floor_keeps_the_newest_and_min_keep() {
    let times: Vec<_> = (1..=6).map(|d| now() - Duration::days(100 + d)).collect();
    let objects: Vec<_> = times.iter().copied().flat_map(committed).collect();
    // Everything expired: the newest survives anyway.
    let plan = run(&objects, retention("days=1"));
    assert_eq!(kept(&plan), vec![name(times[0])]);
    assert_eq!(plan.backups[0].reasons, vec![KeepReason::Newest, KeepReason::MinKeep]);
    // min-keep 3: the three newest.
    let plan = run(
        &objects,
        RetentionArgs {
            min_keep: 3,
            ..retention("days=1")
        },
    );
    let mut expected: Vec<_> = times[..3].iter().map(|t| name(*t)).collect();
    expected.sort();
    assert_eq!(kept(&plan), expected);
    // keep-last 0 is "not set": with nothing else configured nothing is deleted.
    let plan = run(
        &objects,
        RetentionArgs {
            keep: KeepArgs {
                keep_last: Some(KeepCount::Count(0)),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert!(purged(&plan).is_empty());
    assert!(plan
        .backups
        .iter()
        .all(|b| b.reasons == vec![KeepReason::NotConfigured]));
    // Orphans and uncommitted data are not counted by the floor: only committed backups.
    let mut with_orphan = objects.clone();
    with_orphan.push(obj(&name(now() - Duration::days(1)), now() - Duration::days(1)));
    let plan = run(&with_orphan, retention("days=2"));
    assert_eq!(kept(&plan), vec![name(times[0])]);
    assert!(!plan.orphans[0].delete, "an orphan within retention is left alone");
}

#[test]
fn min_keep_zero_is_refused() {
    let err = RetentionArgs {
        min_keep: 0,
        ..Default::default()
    }
    .policy()
    .unwrap_err();
    assert!(err.to_string().starts_with("--min-keep:"), "{err}");
    for (args, flag) in [
        (
            RetentionArgs {
                name_regexp: "sts-backup-[0-9]+".into(),
                ..Default::default()
            },
            "--name-regexp:",
        ),
        (
            RetentionArgs {
                name_regexp: "(unclosed".into(),
                ..Default::default()
            },
            "--name-regexp:",
        ),
        (
            RetentionArgs {
                datetime_format: "%Q".into(),
                ..Default::default()
            },
            "--datetime-format:",
        ),
        (
            RetentionArgs {
                abort_uploads_older_than: "soon".into(),
                ..Default::default()
            },
            "--abort-uploads-older-than:",
        ),
        (retention("days=30, days=1"), "--retention:"),
    ] {
        let err = args.policy().unwrap_err().to_string();
        assert!(err.starts_with(flag), "{err}");
    }
}

/// Feb 2021: 28th is a Sunday (ISO week 8: 22nd..28th), 20th is in week 7.
fn gfs_bucket() -> (Vec<ObjectMeta>, [DateTime<Utc>; 6]) {
    let t = [
        at(2021, 2, 28, 10, 0),
        at(2021, 2, 28, 3, 0),
        at(2021, 2, 27, 3, 0),
        at(2021, 2, 26, 3, 0),
        at(2021, 2, 25, 3, 0),
        at(2021, 2, 20, 3, 0),
    ];
    (t.iter().copied().flat_map(committed).collect(), t)
}

fn keep(last: Option<u32>, daily: Option<u32>, weekly: Option<u32>, monthly: Option<u32>) -> RetentionArgs {
    RetentionArgs {
        keep: KeepArgs {
            keep_last: last.map(KeepCount::Count),
            keep_daily: daily.map(KeepCount::Count),
            keep_weekly: weekly.map(KeepCount::Count),
            keep_monthly: monthly.map(KeepCount::Count),
        },
        ..Default::default()
    }
}

#[test]
fn gfs_rules_follow_restic_forget() {
    let (objects, t) = gfs_bucket();
    let names = |idx: &[usize]| {
        let mut v: Vec<String> = idx.iter().map(|i| name(t[*i])).collect();
        v.sort();
        v
    };
    let cases: Vec<(&str, RetentionArgs, Vec<usize>)> = vec![
        ("keep-last 2", keep(Some(2), None, None, None), vec![0, 1]),
        // One per day for the 3 newest days with backups; the older one of the 28th goes.
        ("keep-daily 3", keep(None, Some(3), None, None), vec![0, 2, 3]),
        // More days asked than exist: every day, and the oldest backup is kept (restic).
        ("keep-daily 10", keep(None, Some(10), None, None), vec![0, 2, 3, 4, 5]),
        ("keep-weekly 2", keep(None, None, Some(2), None), vec![0, 5]),
        ("keep-weekly 1", keep(None, None, Some(1), None), vec![0]),
        ("keep-monthly 1", keep(None, None, None, Some(1)), vec![0]),
        // Counts left at the end keep the oldest backup, even in a period already kept.
        ("keep-monthly 2", keep(None, None, None, Some(2)), vec![0, 5]),
        (
            "keep-last 1 + keep-weekly 2",
            keep(Some(1), None, Some(2), None),
            vec![0, 5],
        ),
        (
            "keep-last 2 + keep-daily 2",
            keep(Some(2), Some(2), None, None),
            vec![0, 1, 2],
        ),
        (
            "retention 2 days + keep-monthly 2",
            RetentionArgs {
                retention: Some("days=2".into()),
                ..keep(None, None, None, Some(2))
            },
            vec![0, 1, 5],
        ),
        (
            "keep-daily unlimited",
            RetentionArgs {
                keep: KeepArgs {
                    keep_daily: Some(KeepCount::Unlimited),
                    ..Default::default()
                },
                ..Default::default()
            },
            vec![0, 2, 3, 4, 5],
        ),
        (
            "min-keep 4 + keep-weekly 1",
            RetentionArgs {
                min_keep: 4,
                ..keep(None, None, Some(1), None)
            },
            vec![0, 1, 2, 3],
        ),
    ];
    for (what, args, expected) in cases {
        assert_eq!(kept(&run(&objects, args)), names(&expected), "{what}");
    }
    // The oldest-backup rule shows up as such.
    let two = [t[0], t[1]].into_iter().flat_map(committed).collect::<Vec<_>>();
    let plan = run(&two, keep(None, Some(5), None, None));
    assert_eq!(plan.backups[1].reasons, vec![KeepReason::OldestOf("keep-daily")]);
}

#[test]
fn orphans_wait_for_the_abort_threshold() {
    let old = now() - Duration::days(60);
    let mut objects = committed(now() - Duration::hours(2));
    objects.push(obj(&name(old), old)); // crashed long ago: goes
    let young = now() - Duration::days(50);
    // Named 50 days ago but written 1 hour ago (a slow upload finishing): stays.
    objects.push(obj(&name(young), now() - Duration::hours(1)));
    let plan = run(&objects, retention("days=30"));
    let verdicts: BTreeMap<&str, bool> = plan.orphans.iter().map(|o| (o.key.as_str(), o.delete)).collect();
    assert!(verdicts[name(old).as_str()]);
    assert!(!verdicts[name(young).as_str()]);
    // Off: nothing is deleted as an orphan.
    let plan = run(
        &objects,
        RetentionArgs {
            abort_uploads_older_than: "0".into(),
            ..retention("days=30")
        },
    );
    assert!(plan.orphans.iter().all(|o| !o.delete));
    // Not configured: nothing at all.
    let plan = run(&objects, RetentionArgs::default());
    assert!(plan.orphans.iter().all(|o| !o.delete));
}

/// Claims of backup runs (storage without conditional writes) are leftovers of their own
/// kind: removed once older than the abort threshold, never backups, never "ignored".
#[test]
fn claims_of_killed_runs_are_cleaned_after_the_abort_threshold() {
    let mut objects = committed(now() - Duration::hours(2));
    let stale = claim::claim_key(&name(now() - Duration::days(3)), "0123456789abcdef");
    let fresh = claim::claim_key(&name(now()), "fedcba9876543210");
    objects.push(obj(&stale, now() - Duration::days(3)));
    objects.push(obj(&fresh, now() - Duration::minutes(5)));
    let plan = run(&objects, retention("days=30"));
    let claims: BTreeMap<&str, (OrphanKind, bool)> = plan
        .orphans
        .iter()
        .map(|o| (o.key.as_str(), (o.kind, o.delete)))
        .collect();
    assert_eq!(claims[stale.as_str()], (OrphanKind::Claim, true), "{plan:?}");
    assert_eq!(
        claims[fresh.as_str()],
        (OrphanKind::Claim, false),
        "a running backup's claim stays"
    );
    assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
    assert_eq!(kept(&plan).len(), 1);
}

#[derive(Debug, Clone)]
struct Bucket {
    objects: Vec<ObjectMeta>,
    committed: Vec<(DateTime<Utc>, String)>,
    unrelated: BTreeSet<String>,
}

fn bucket_strategy() -> impl Strategy<Value = Bucket> {
    let backup = (-5i64..400 * 24 * 60, any::<bool>(), any::<bool>(), 0i64..72 * 60);
    let unrelated = prop::sample::select(vec![
        "sts-export.graph",
        "notes.txt",
        "xsts-backup-20210101-0000.graph",
        "sts-backup--.graph",
        "sts-backup-20219999-0000.graph",
        "other.manifest.json",
        "sts-export.graph.manifest.json",
        "STS-BACKUP-20210101-0000.graph",
    ]);
    (
        prop::collection::vec(backup, 0..40),
        prop::collection::btree_set(unrelated, 0..5),
    )
        .prop_map(|(backups, unrelated)| {
            let mut objects = Vec::new();
            let mut committed = BTreeMap::new();
            let mut seen = BTreeSet::new();
            for (minutes_ago, is_committed, manifest_only, written_after) in backups {
                let t = now() - Duration::minutes(minutes_ago);
                let key = name(t);
                if !seen.insert(key.clone()) {
                    continue;
                }
                let written = t + Duration::minutes(written_after);
                if is_committed {
                    objects.push(obj(&key, written));
                    objects.push(obj(&format!("{key}.manifest.json"), written));
                    committed.insert(key, t);
                } else if manifest_only {
                    objects.push(obj(&format!("{key}.manifest.json"), written));
                } else {
                    objects.push(obj(&key, written));
                }
            }
            let unrelated: BTreeSet<String> = unrelated.into_iter().map(String::from).collect();
            objects.extend(unrelated.iter().map(|k| obj(k, now() - Duration::days(900))));
            Bucket {
                objects,
                committed: committed.into_iter().map(|(k, t)| (t, k)).collect(),
                unrelated,
            }
        })
}

fn count_strategy() -> impl Strategy<Value = Option<KeepCount>> {
    prop_oneof![
        4 => Just(None),
        4 => (0u32..6).prop_map(|n| Some(KeepCount::Count(n))),
        1 => Just(Some(KeepCount::Unlimited)),
    ]
}

fn args_strategy() -> impl Strategy<Value = RetentionArgs> {
    (
        prop::option::of(0u32..60 * 24),
        1usize..6,
        count_strategy(),
        count_strategy(),
        count_strategy(),
        count_strategy(),
        prop::sample::select(vec!["24h", "0", "1h", "30d"]),
    )
        .prop_map(|(hours, min_keep, last, daily, weekly, monthly, abort)| RetentionArgs {
            retention: hours.map(|h| format!("hours = {h}")),
            min_keep,
            keep: KeepArgs {
                keep_last: last,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
            },
            abort_uploads_older_than: abort.into(),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_floor_holds_and_unrelated_keys_are_never_selected(bucket in bucket_strategy(), args in args_strategy()) {
        let policy = args.policy().unwrap();
        let plan = plan(&bucket.objects, &policy, now());

        // Every listed key lands in exactly one place.
        let mut placed: Vec<&str> = Vec::new();
        for b in &plan.backups {
            placed.push(&b.key);
            placed.extend(b.manifest_key.as_deref());
        }
        placed.extend(plan.orphans.iter().map(|o| o.key.as_str()));
        placed.extend(plan.ignored.iter().map(String::as_str));
        placed.sort();
        let mut listed: Vec<&str> = bucket.objects.iter().map(|o| o.key.as_str()).collect();
        listed.sort();
        prop_assert_eq!(placed, listed);

        // Unrelated keys are ignored, never backups or orphans.
        for k in &bucket.unrelated {
            prop_assert!(plan.ignored.contains(k));
        }
        // The committed backups are exactly the pairs; newest first.
        let mut newest_first = bucket.committed.clone();
        newest_first.sort_by(|a, b| b.cmp(a));
        let decided: Vec<(DateTime<Utc>, String)> = plan.backups.iter().map(|b| (b.timestamp, b.key.clone())).collect();
        prop_assert_eq!(&decided, &newest_first);

        // The floor: the newest and the min-keep newest survive.
        let floor = policy.min_keep.min(plan.backups.len());
        prop_assert!(plan.backups[..floor].iter().all(|b| b.keep()));
        prop_assert!(plan.kept().count() >= floor);
        if !plan.backups.is_empty() {
            prop_assert!(plan.backups[0].keep());
        }
        // Nothing is deleted without a rule; nothing within the delta is deleted.
        if !policy.is_configured() {
            prop_assert_eq!(plan.purged().count(), 0);
            prop_assert!(plan.orphans.iter().all(|o| !o.delete));
        }
        if let Some(r) = policy.retention {
            for b in plan.purged() {
                prop_assert!(now() - b.timestamp > r.as_timedelta());
            }
        }
        // keep-last N keeps at least the N newest.
        if let Some(KeepCount::Count(n)) = policy.keep.keep_last {
            prop_assert!(plan.backups.iter().take(n as usize).all(|b| b.keep()));
        }
    }
}
