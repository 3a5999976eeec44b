//! Round trips through real stores, from Debian packages: the backup is taken with the
//! store's own export tool and restored with its import tool, and the restored data is
//! compared with the original.

mod common;

use std::path::PathBuf;

use common::Backend;
use sts_backup_testkit::{tool, EtcdServer, PgServer};

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// An age key pair made with `age-keygen`: the env that encrypts a backup to it
/// (`STS_ENCRYPT_TO`) and the env that restores with it (`STS_IDENTITY_FILE`).
struct AgeKey {
    _dir: tempfile::TempDir,
    recipient: String,
    file: PathBuf,
}

impl AgeKey {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (file, recipient) = common::age_keygen(dir.path(), "identity");
        AgeKey {
            _dir: dir,
            recipient,
            file,
        }
    }

    fn backup_env(key: Option<&Self>) -> Vec<(&'static str, String)> {
        key.map(|k| vec![("STS_ENCRYPT_TO", k.recipient.clone())])
            .unwrap_or_default()
    }

    fn restore_env(key: Option<&Self>) -> Vec<(&'static str, String)> {
        key.map(|k| vec![("STS_IDENTITY_FILE", s(&k.file))]).unwrap_or_default()
    }
}

/// With a key, the stored object must be an age file (not the export in the clear).
fn assert_stored_as(b: &Backend, name: &str, key: Option<&AgeKey>) {
    let stored = std::fs::read(b.object_path(name)).unwrap();
    assert_eq!(
        stored.starts_with(b"age-encryption.org/v1\n"),
        key.is_some(),
        "backup {name}: encrypted = {}",
        key.is_some()
    );
}

fn env_refs<'a>(env: &'a [(&'static str, String)], more: &[(&'static str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    env.iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(more.iter().copied())
        .collect()
}

/// etcd: `etcdctl snapshot save {file}` / `etcdctl snapshot restore {file}` into a new data
/// directory, which a second etcd then serves.
#[test]
fn etcd_snapshot_round_trip() {
    etcd_round_trip(None);
}

/// The same, encrypted to an age recipient (and compressed: zstd inside age).
#[test]
fn etcd_snapshot_round_trip_encrypted() {
    let key = AgeKey::new();
    etcd_round_trip(Some(&key));
}

fn etcd_round_trip(key: Option<&AgeKey>) {
    let b = Backend::s3();
    let etcd = EtcdServer::start();
    let mut expected = Vec::new();
    for i in 0..100 {
        let (key, value) = (
            format!("/registry/item/{i:03}"),
            format!("value {i} with spaces & symbols \"'"),
        );
        let st = etcd.ctl().args(["put", &key, &value]).output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        expected.push(format!("{key}\n{value}"));
    }
    let etcdctl = s(&tool("etcdctl"));
    let out = b.run_with(
        &[
            "backup",
            "--compress",
            "zstd",
            "--name-template",
            "etcd-%Y%m%d-%H%M.db",
            "--",
            &etcdctl,
            "--endpoints",
            &etcd.endpoint(),
            "snapshot",
            "save",
            "{file}",
        ],
        &env_refs(&AgeKey::backup_env(key), &[("ETCDCTL_API", "3")]),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let name = b.names().pop().unwrap();
    assert_stored_as(&b, &name, key);

    let target = tempfile::tempdir().unwrap();
    let data_dir = target.path().join("restored");
    let check = format!("test ! -e {}", data_dir.display());
    let restore_args = [
        "restore",
        &name,
        "--empty-check",
        &check,
        "--",
        &etcdctl,
        "snapshot",
        "restore",
        "{file}",
        "--data-dir",
        &s(&data_dir),
    ];
    let restore_env = AgeKey::restore_env(key);
    let restore_env = env_refs(&restore_env, &[("ETCDCTL_API", "3")]);
    let out = b.run_with(&restore_args, &restore_env);
    assert_eq!(out.code, 0, "{out:?}");

    // The data directory now exists: a second restore is refused and leaves it alone.
    let marker = std::fs::read_dir(&data_dir).unwrap().count();
    let out = b.run_with(&restore_args, &restore_env);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), marker);

    let restored = EtcdServer::start_with_data(target, "restored");
    let got = restored
        .ctl()
        .args(["get", "/registry/item/", "--prefix"])
        .output()
        .unwrap();
    assert!(got.status.success());
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim_end(), expected.join("\n"));
}

fn pg_args(pg: &PgServer) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        pg.port.to_string(),
        "-U".into(),
        "postgres".into(),
    ]
}

/// PostgreSQL: `pg_dump -Fc` streamed from stdout, `pg_restore` fed on stdin, with a psql
/// query as the emptiness check (it fails with exit 1 when the schema has tables).
#[test]
fn postgres_dump_round_trip() {
    postgres_round_trip(None);
}

/// The same, encrypted to an age recipient.
#[test]
fn postgres_dump_round_trip_encrypted() {
    let key = AgeKey::new();
    postgres_round_trip(Some(&key));
}

fn postgres_round_trip(key: Option<&AgeKey>) {
    let b = Backend::s3();
    let pg = PgServer::start();
    pg.psql("postgres", "create database app");
    pg.psql(
        "app",
        "create table items (id int primary key, name text, payload bytea); \
         insert into items select g, 'item ' || g, sha256(g::text::bytea) from generate_series(1, 50000) g; \
         create index on items (name);",
    );
    let digest = |db: &str| pg.psql(db, "select md5(string_agg(i::text, ',' order by id)) from items i");
    let original = digest("app");

    let conn = pg_args(&pg);
    let mut dump: Vec<String> = vec![s(&tool("pg_dump")), "-Fc".into()];
    dump.extend(conn.clone());
    dump.push("app".into());
    let mut args = vec![
        "backup".to_string(),
        "--name-template".into(),
        "pg-%Y%m%d-%H%M.dump".into(),
        "--".into(),
    ];
    args.extend(dump);
    let backup_env = AgeKey::backup_env(key);
    let out = b.run_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &env_refs(&backup_env, &[]),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let name = b.names().pop().unwrap();
    assert_stored_as(&b, &name, key);

    pg.psql("postgres", "create database restored");
    let empty_check = format!(
        "{} {} -d restored -v ON_ERROR_STOP=1 -Atc \"select 1 / (count(*) = 0)::int from pg_tables where schemaname = 'public'\"",
        s(&tool("psql")),
        conn.join(" ")
    );
    let mut restore: Vec<String> = vec![
        "restore".into(),
        name.clone(),
        "--empty-check".into(),
        empty_check,
        "--force-arg=--clean".into(),
        "--".into(),
        s(&tool("pg_restore")),
    ];
    restore.extend(conn);
    restore.extend(["--no-owner".into(), "-d".into(), "restored".into()]);
    let argv: Vec<&str> = restore.iter().map(String::as_str).collect();
    let restore_env = AgeKey::restore_env(key);
    let restore_env = env_refs(&restore_env, &[]);
    let out = b.run_with(&argv, &restore_env);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(digest("restored"), original);

    // Now the database holds data: refused without --force, nothing changes.
    pg.psql("restored", "insert into items values (-1, 'added after restore', null)");
    let out = b.run_with(&argv, &restore_env);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        pg.psql("restored", "select count(*) from items where id = -1").trim(),
        "1"
    );

    // With --force, pg_restore gets --clean and the database matches the backup again.
    let mut forced = argv.clone();
    forced.insert(2, "--force");
    let out = b.run_with(&forced, &restore_env);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(digest("restored"), original);
}
