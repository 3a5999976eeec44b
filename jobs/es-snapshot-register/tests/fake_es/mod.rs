//! The harness of the integration tests around the fake Elasticsearch: the S3 test server,
//! the fake cluster (`sts_backup_testkit::fake_es`, shared with the cluster suite's `fake-es`
//! binary) and this crate's binary.
#![allow(dead_code)]

use std::process::Command;

pub use sts_backup_testkit::fake_es::*;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with a clean environment plus `envs`.
pub fn run_bin(args: &[&str], envs: &[(&str, String)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_es-snapshot-register"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info,sts_backup_core=debug,es_snapshot_register=debug")
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run es-snapshot-register");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The S3 test server plus credentials as the chart mounts them.
pub struct S3 {
    pub server: sts_backup_testkit::S3Server,
    pub creds: tempfile::TempDir,
}

impl S3 {
    pub fn start() -> S3 {
        let server = sts_backup_testkit::S3Server::start();
        let creds = server.credentials_dir(sts_backup_testkit::ACCESS_KEY, sts_backup_testkit::SECRET_KEY);
        S3 { server, creds }
    }

    pub fn bucket_exists(&self, bucket: &str) -> bool {
        self.server.dir.path().join(bucket).is_dir()
    }
}

pub const BUCKET: &str = "sts-elasticsearch-backup";

/// The environment a register/list/restore pod gets.
pub fn base_env(es: &FakeEs, s3: &S3) -> Vec<(&'static str, String)> {
    vec![
        ("ELASTICSEARCH_ENDPOINT", es.url()),
        ("S3_ENDPOINT", s3.server.endpoint()),
        ("S3_CREDENTIALS_DIR", s3.creds.path().display().to_string()),
        ("ES_WAIT_TIMEOUT", "20s".into()),
        ("ES_SNAPSHOT_TIMEOUT", "30s".into()),
    ]
}

/// `base_env` plus more.
pub fn env_with(es: &FakeEs, s3: &S3, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = base_env(es, s3);
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((k, v.to_string()));
    }
    env
}

/// A fake with the test keys in its keystore under client `default`.
pub fn fake_with_keystore(mut opts: FakeOptions) -> FakeEs {
    opts.keystore = vec![(
        "default".into(),
        sts_backup_testkit::ACCESS_KEY.into(),
        sts_backup_testkit::SECRET_KEY.into(),
    )];
    FakeEs::start(opts)
}

/// The snapshot [`registered`] seeds, and its data stream's backing index.
pub const SNAP: &str = "sts-backup-20261120-0300-ppss8nx40yk";
pub const DS_INDEX: &str = ".ds-sts_k8s_logs-2026.11.20-000001";

/// A registered repository (restore-only, keystore keys) holding [`SNAP`]: a regular index,
/// an internal index and the data stream `sts_k8s_logs`. The request log starts empty.
pub fn registered(opts: FakeOptions) -> (S3, FakeEs) {
    let s3 = S3::start();
    s3.server.create_bucket(BUCKET);
    let es = fake_with_keystore(opts);
    let run = run_bin(&["register", "--no-policy"], &base_env(&es, &s3));
    assert_eq!(run.code, 0, "{}", run.all());
    es.seed_snapshot(
        "sts-backup",
        SNAP,
        1_763_607_600_000,
        &["sts_topology_1", ".slm-history-7-000001", DS_INDEX],
        &["sts_k8s_logs"],
    );
    es.clear_log();
    (s3, es)
}

/// Asserts the secrets never show up in a run's output.
pub fn assert_no_secrets(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !run.all().contains(s),
            "secret {s:?} leaked into the output:\n{}",
            run.all()
        );
    }
}
