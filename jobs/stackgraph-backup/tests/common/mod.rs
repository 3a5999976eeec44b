//! Shared helpers: the binary under test, and the two storage backends every contract test
//! runs against (a real S3 server, and a `file://` directory).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sts_backup_testkit::{S3Server, ACCESS_KEY, SECRET_KEY};

pub const BUCKET: &str = "sts-stackgraph-backup";

pub enum Backend {
    File(tempfile::TempDir),
    S3 { server: S3Server, creds: tempfile::TempDir },
}

impl Backend {
    pub fn file() -> Backend {
        Backend::File(tempfile::tempdir().unwrap())
    }

    pub fn s3() -> Backend {
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
        Backend::S3 { server, creds }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::File(dir) => vec![("BACKUP_STORAGE".into(), format!("file://{}", dir.path().display()))],
            Backend::S3 { server, creds } => vec![
                ("BACKUP_STORAGE".into(), format!("s3://{BUCKET}")),
                ("S3_ENDPOINT".into(), server.endpoint()),
                ("S3_CREDENTIALS_DIR".into(), creds.path().display().to_string()),
            ],
        }
    }

    /// The directory that holds the objects (rclone serves directories as buckets).
    pub fn object_dir(&self) -> PathBuf {
        match self {
            Backend::File(dir) => dir.path().to_path_buf(),
            Backend::S3 { server, .. } => server.dir.path().join(BUCKET),
        }
    }

    /// Visible object keys, sorted.
    pub fn objects(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(self.object_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Everything in the object directory, hidden temp files included.
    pub fn all_files(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(self.object_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    pub fn object_path(&self, key: &str) -> PathBuf {
        self.object_dir().join(key)
    }

    /// Runs stackgraph-backup with this backend's env.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let mut cmd = sg();
        cmd.args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().unwrap())
    }

    pub fn names(&self) -> Vec<String> {
        listed_names(&self.run(&["list", "-o", "json"]))
    }
}

/// The names in the output of `list -o json`, which must have succeeded.
pub fn listed_names(out: &Run) -> Vec<String> {
    assert_eq!(out.code, 0, "list failed: {}", out.stderr);
    let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// A `stackgraph-backup` command with a clean environment for the variables it reads.
pub fn sg() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackgraph-backup"));
    for var in [
        "BACKUP_STORAGE",
        "S3_ENDPOINT",
        "S3_CREDENTIALS_DIR",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "BACKUP_NAME",
        "RESTORE_FORCE",
        "BACKUP_COMPRESS",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE",
        "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA",
        "RUST_LOG",
        "STS_SIGNING_KEY",
        "STS_TRUSTED_KEYS",
        "STS_ENCRYPT_TO",
        "STS_IDENTITY_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true").stdin(Stdio::null());
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Writes `len` deterministic pseudo-random bytes (not compressible) to a file.
pub fn random_file(dir: &Path, len: usize, seed: u64) -> PathBuf {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    let path = dir.join(format!("input-{seed}.bin"));
    std::fs::write(&path, data).unwrap();
    path
}

pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A running command whose stderr is read as it comes, so a test can act at a precise step
/// (after a log line) rather than after a fixed sleep.
pub struct Watched {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Watched {
        use std::io::BufRead;
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Blocks until a stderr line satisfies `hit` (30 s at most).
    pub fn wait_for(&mut self, what: &str, hit: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = hit(&line);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no sign of {what}; stderr so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn finish(mut self) -> Run {
        use std::io::Read;
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        self.seen.extend(self.lines.iter());
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: self.seen.join("\n"),
        }
    }
}

/// The byte count of a progress line (`... bytes=N`), if it is one.
pub fn progress_bytes(line: &str) -> Option<u64> {
    let rest = &line[line.find("bytes=")? + "bytes=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// An age identity file made by `age-keygen -o DIR/NAME.key`, and its recipient (`age1...`).
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.key"));
    let made = Command::new("age-keygen").arg("-o").arg(&file).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let public = Command::new("age-keygen").arg("-y").arg(&file).output().unwrap();
    assert!(public.status.success(), "{}", String::from_utf8_lossy(&public.stderr));
    (file, String::from_utf8(public.stdout).unwrap().trim().to_string())
}
