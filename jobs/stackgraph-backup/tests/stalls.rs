//! A stalled S3 server (`kill -STOP` on a real `rclone serve s3`: the kernel still accepts
//! connections, nothing answers). Every job must give up within its timeouts with exit 1 and
//! one line naming the endpoint, and SIGTERM must end a stalled backup within a bounded time.

mod common;

use std::time::{Duration, Instant};

use common::{progress_bytes, sg, Run, Watched, BUCKET};
use sts_backup_testkit::{S3Server, ACCESS_KEY, SECRET_KEY};

/// Stops the server for the life of the value; continues it on drop, so a failing test does
/// not leave a stopped process behind, and after 40 s at the latest, so a job that hangs
/// until the server wakes fails the test instead of hanging it.
struct Stopped(u32);

impl Stopped {
    fn new(server: &S3Server) -> Stopped {
        let pid = server.pid();
        signal(pid, "-STOP");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(40));
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        });
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn setup() -> (S3Server, tempfile::TempDir) {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    (server, creds)
}

fn sg_s3(server: &S3Server, creds: &tempfile::TempDir, timeouts: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = sg();
    cmd.env("BACKUP_STORAGE", format!("s3://{BUCKET}"))
        .env("S3_ENDPOINT", server.endpoint())
        .env("S3_CREDENTIALS_DIR", creds.path());
    for (k, v) in timeouts {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd`; kills it and fails if it is still running after `limit`.
fn run_within(mut cmd: std::process::Command, limit: Duration) -> (Run, Duration) {
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (Run::from(out.unwrap()), started.elapsed()),
        Err(_) => {
            signal(pid, "-KILL");
            panic!("still running after {limit:?}: the job hangs on a stalled server");
        }
    }
}

#[track_caller]
fn assert_names_endpoint(out: &Run, server: &S3Server) {
    assert_eq!(out.code, 1, "{out:?}");
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(
        errors[0].contains(&server.endpoint()),
        "the error should name the endpoint: {out:?}"
    );
}

#[test]
fn list_and_verify_give_up_on_a_stalled_server() {
    let (server, creds) = setup();
    let out = sg_s3(&server, &creds, &[])
        .args(["backup", "--name-template", "b.graph", "--", "echo", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let timeouts = [("S3_REQUEST_TIMEOUT", "2s"), ("S3_CONNECT_TIMEOUT", "2s")];
    let _stopped = Stopped::new(&server);
    for args in [&["list"][..], &["verify", "b.graph"][..]] {
        let mut cmd = sg_s3(&server, &creds, &timeouts);
        cmd.args(args);
        let (out, took) = run_within(cmd, Duration::from_secs(30));
        assert_names_endpoint(&out, &server);
        assert!(out.stderr.contains("S3_REQUEST_TIMEOUT"), "{out:?}");
        // Three attempts of 2 s each plus back-off.
        assert!(took < Duration::from_secs(15), "{args:?} took {took:?}");
    }
}

#[test]
fn the_request_timeout_flag_and_its_env_twin_are_validated() {
    let (server, creds) = setup();
    for (var, value) in [
        ("S3_REQUEST_TIMEOUT", "0s"),
        ("S3_CONNECT_TIMEOUT", "soon"),
        ("S3_STALL_TIMEOUT", "-5s"),
    ] {
        let out = Run::from(sg_s3(&server, &creds, &[(var, value)]).arg("list").output().unwrap());
        assert_eq!(out.code, 2, "{var}={value}: {out:?}");
        let flag = var.trim_start_matches("S3_").to_ascii_lowercase().replace('_', "-");
        assert!(out.stderr.contains(&format!("--{flag}")), "{out:?}");
    }
}

/// A backup whose exporter pauses after 12 MB, so the server can be stopped mid-upload.
fn stalling_backup(server: &S3Server, creds: &tempfile::TempDir, timeouts: &[(&str, &str)]) -> Watched {
    let mut cmd = sg_s3(server, creds, timeouts);
    cmd.env("STS_PROGRESS_INTERVAL", "100ms").args([
        "backup",
        "--name-template",
        "stalled.graph",
        "--part-size",
        "5MiB",
        "--",
        "sh",
        "-c",
        "head -c 12000000 /dev/urandom; sleep 2; head -c 40000000 /dev/urandom",
    ]);
    let mut job = Watched::spawn(cmd);
    job.wait_for("12 MB read", |l| progress_bytes(l).is_some_and(|b| b >= 12_000_000));
    job
}

#[test]
fn a_backup_stalled_mid_upload_fails_naming_the_endpoint() {
    let (server, creds) = setup();
    let job = stalling_backup(
        &server,
        &creds,
        &[("S3_STALL_TIMEOUT", "3s"), ("S3_REQUEST_TIMEOUT", "3s")],
    );
    let stopped = Stopped::new(&server);
    let started = Instant::now();
    let out = job.finish();
    let took = started.elapsed();
    drop(stopped);
    assert_names_endpoint(&out, &server);
    assert!(out.stderr.contains("S3_STALL_TIMEOUT"), "{out:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let visible: Vec<_> = std::fs::read_dir(server.dir.path().join(BUCKET))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stalled"))
        .collect();
    assert!(visible.is_empty(), "nothing may be visible: {visible:?}");
}

#[test]
fn sigterm_ends_a_stalled_backup_within_a_bounded_time() {
    let (server, creds) = setup();
    // Timeouts far beyond the test: only the bounded abort can end the job in time.
    let job = stalling_backup(
        &server,
        &creds,
        &[("S3_STALL_TIMEOUT", "10m"), ("S3_REQUEST_TIMEOUT", "10m")],
    );
    let stopped = Stopped::new(&server);
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    signal(job.pid(), "-TERM");
    let out = job.finish();
    let took = started.elapsed();
    drop(stopped);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("SIGTERM"), "{out:?}");
    assert!(
        took < Duration::from_secs(15),
        "SIGTERM took {took:?} to end the job: {out:?}"
    );
}

/// One start-up handles signals for every command (issue 11): a `list` waiting on a stalled
/// server ends on SIGTERM at once with exit 1 and one line, not killed mid-way by the default
/// action (exit status 143, no message) or left waiting for its timeouts.
#[test]
fn sigterm_ends_any_command_with_one_line() {
    let (server, creds) = setup();
    let _stopped = Stopped::new(&server);
    let mut cmd = sg_s3(&server, &creds, &[("S3_REQUEST_TIMEOUT", "30s")]);
    cmd.arg("list")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Long enough for the runtime and the watcher to be up and the request to be waiting.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    signal(child.id(), "-TERM");
    let out = Run::from(child.wait_with_output().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 1, "{out:?}");
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors, ["error: interrupted by SIGTERM"], "{out:?}");
}
