//! Real servers for integration tests, started on 127.0.0.1 on free ports and stopped on
//! drop. Nothing here is a mock: the S3 server is `rclone serve s3` (it checks SigV4 with the
//! keys we choose), the stores are Debian's etcd and PostgreSQL.
//!
//! Tools come from `tests/install-tools.sh`; a missing tool fails the test with a message
//! saying so, rather than skipping it.
#![warn(clippy::print_stdout, clippy::print_stderr, clippy::too_many_lines)]

pub mod fake_es;
pub mod kube_double;
pub mod proxy;

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "testaccesskey01";
pub const SECRET_KEY: &str = "testsecretkey0123456789";

/// The workspace root (where `.tools/` lives).
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() && !dir.join(".git").exists() {
        if !dir.pop() {
            break;
        }
    }
    dir
}

/// Finds a tool: `.tools/venv/bin`, `.tools/bin`, `/usr/lib/postgresql/*/bin`, then PATH.
pub fn tool(name: &str) -> PathBuf {
    let root = workspace_root();
    let mut candidates = vec![
        root.join(".tools/venv/bin").join(name),
        root.join(".tools/bin").join(name),
        root.join(".tools/npm/node_modules/.bin").join(name),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            candidates.push(e.path().join("bin").join(name));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: run tests/install-tools.sh"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on 127.0.0.1:{port}");
}

/// A child process killed on drop.
pub struct Server {
    child: Option<Child>,
}

impl Server {
    pub fn spawn(cmd: &mut Command) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Server { child: Some(child) }
    }

    /// Adopts a child started with its own stdio set-up.
    pub fn from_child(child: Child) -> Server {
        Server { child: Some(child) }
    }

    /// True once the process has ended.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `rclone serve s3` over a temp directory; top-level directories are buckets.
pub struct S3Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    server: Server,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir)
    }

    /// Starts a server over an existing directory (to restart one on the same data).
    pub fn start_in(dir: tempfile::TempDir) -> S3Server {
        let port = free_port();
        let server = Self::spawn(port, dir.path(), &[]);
        S3Server { port, dir, server }
    }

    /// Serves HTTPS with the given certificate chain and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls = [
            OsStr::new("--cert"),
            cert.as_os_str(),
            OsStr::new("--key"),
            key.as_os_str(),
        ];
        let server = Self::spawn(port, dir.path(), &tls);
        S3Server { port, dir, server }
    }

    fn spawn(port: u16, dir: &Path, extra: &[&OsStr]) -> Server {
        let server = Server::spawn(
            Command::new(tool("rclone"))
                .args(["serve", "s3", "--addr"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--auth-key")
                .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
                // Next to no directory cache: tests inspect and change the files behind the
                // server. Not `0s`: rclone 1.75 then re-arms a zero timer on a directory that
                // keeps a virtual entry (left by a delete that emptied a subdirectory) and spins
                // on it, holding that directory's lock: a core at 100% and requests under it
                // stalled for minutes. 1ms expires as fast without the spin.
                .args([
                    "--config",
                    "/dev/null",
                    "--vfs-cache-mode",
                    "off",
                    "--dir-cache-time",
                    "1ms",
                ])
                .args(extra)
                .arg(dir),
        );
        wait_for_port(port, "rclone serve s3");
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (a directory, which is what rclone serves as one).
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.dir.path().join(bucket)).unwrap();
    }

    /// The file behind an object, to inspect or corrupt it.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.dir.path().join(bucket).join(key)
    }

    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// The server's process id (to stop it with `kill -STOP` and simulate a stalled server).
    pub fn pid(&self) -> u32 {
        self.server.pid().expect("the server is running")
    }

    /// Starts the server again on the same port and data (after [`S3Server::kill`]).
    pub fn restart(&mut self) {
        self.server.kill();
        self.server = Self::spawn(self.port, self.dir.path(), &[]);
    }

    /// A directory with `accesskey`/`secretkey` files, as the chart mounts them.
    pub fn credentials_dir(&self, access: &str, secret: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("accesskey"), access).unwrap();
        std::fs::write(dir.path().join("secretkey"), secret).unwrap();
        dir
    }
}

/// SeaweedFS (`weed mini`): a second real S3 server, used because it honours conditional
/// writes (`If-None-Match: *`), which `rclone serve s3` ignores. Every port is chosen free
/// and bound to 127.0.0.1; telemetry, the admin UI and WebDAV are off.
pub struct SeaweedServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _server: Server,
}

impl SeaweedServer {
    /// Starts the server with `bucket` created (the server's own start-up option).
    pub fn start(bucket: &str) -> SeaweedServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"backup","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new(tool("weed"));
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
            ])
            .args(["-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-s3.port={port}"));
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "s3.debug.port",
        ] {
            cmd.arg(format!("-{flag}={}", free_port()));
        }
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let server = Server::spawn(cmd.current_dir(dir.path()).env("S3_BUCKET", bucket));
        wait_for_port(port, "weed mini (S3)");
        SeaweedServer {
            port,
            dir,
            _server: server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS CLI against this server with its credentials.
    pub fn aws(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("aws"))
            .args(["--endpoint-url", &self.endpoint()])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    }

    /// The Object Lock retention of an object (`{"Mode", "RetainUntilDate"}`), None when it
    /// has none.
    pub fn object_retention(&self, bucket: &str, key: &str) -> Option<serde_json::Value> {
        let out = self.aws(&["s3api", "get-object-retention", "--bucket", bucket, "--key", key]);
        if !out.status.success() {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(doc["Retention"].clone())
    }

    /// Creates `bucket` with S3 Object Lock enabled, waiting until the server takes writes:
    /// its S3 port opens before the volume server is ready, so the bucket start-up option's
    /// bucket is probed with a small object until a put succeeds (up to 30 s).
    pub fn create_locked_bucket(&self, bucket: &str) {
        let create = || {
            self.aws(&[
                "s3api",
                "create-bucket",
                "--bucket",
                bucket,
                "--object-lock-enabled-for-bucket",
            ])
        };
        let mut made = create();
        for _ in 0..60 {
            let probe = self.aws(&[
                "s3api",
                "put-object",
                "--bucket",
                bucket,
                "--key",
                ".probe",
                "--body",
                "/etc/hostname",
            ]);
            if made.status.success() && probe.status.success() {
                let _ = self.aws(&["s3api", "delete-object", "--bucket", bucket, "--key", ".probe"]);
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
            if !made.status.success() {
                made = create();
            }
        }
        panic!(
            "SeaweedFS did not take bucket {bucket:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
}

/// Runs a command to completion as `user` when we are root (PostgreSQL refuses to run as
/// root), otherwise as ourselves.
pub fn as_user(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A single-node etcd with its own data directory.
pub struct EtcdServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _server: Server,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_with_data(dir, "data")
    }

    /// Starts etcd on `<dir>/<data>` (e.g. a directory made by `etcdctl snapshot restore`).
    pub fn start_with_data(dir: tempfile::TempDir, data: &str) -> EtcdServer {
        let port = free_port();
        let peer = free_port();
        let server = Server::spawn(
            Command::new(tool("etcd"))
                .arg("--data-dir")
                .arg(dir.path().join(data))
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{port}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{port}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(format!("default=http://127.0.0.1:{peer}")),
        );
        wait_for_port(port, "etcd");
        EtcdServer {
            port,
            dir,
            _server: server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `etcdctl` against this server (API v3).
    pub fn ctl(&self) -> Command {
        let mut cmd = Command::new(tool("etcdctl"));
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(self.endpoint());
        cmd
    }
}

/// A PostgreSQL cluster made with initdb in a temp dir, listening on 127.0.0.1 only.
pub struct PgServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _server: Server,
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new().prefix("sts-pg").tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let status = as_user("postgres", &tool("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let server = Server::spawn(
            as_user("postgres", &tool("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-k")
                .arg(dir.path()),
        );
        wait_for_port(port, "postgres");
        let pg = PgServer {
            port,
            dir,
            _server: server,
        };
        pg.wait_ready();
        pg
    }

    /// The port opens before recovery ends ("the database system is starting up"): wait
    /// until a query succeeds (30 s at most).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(tool("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    "select 1",
                    "-p",
                ])
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL with psql and returns stdout (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(tool("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A throwaway CA and a server certificate for `localhost`/127.0.0.1 signed by it, made with
/// the `openssl` command: files `ca.pem`, `server.pem` (certificate + CA), `server.key`.
pub fn make_test_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[String]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let words = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let ca = "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj";
    run(&[words(ca), vec!["/CN=sts-backup test CA".into()]].concat());
    run(&words(
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
    ));
    std::fs::write(
        dir.path().join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&words(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf",
    ));
    let chain = [
        std::fs::read(dir.path().join("server.crt")).unwrap(),
        std::fs::read(dir.path().join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.path().join("server.pem"), chain).unwrap();
    dir
}

/// An ed25519 key pair made by openssl, as an operator makes one for signed manifests:
/// `(DIR/NAME.pem, DIR/NAME.pub.pem)` (PKCS#8 private key, SubjectPublicKeyInfo public key).
pub fn ed25519_key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (private, public) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub.pem")));
    let steps: [&[&OsStr]; 2] = [
        &[
            OsStr::new("genpkey"),
            OsStr::new("-algorithm"),
            OsStr::new("ed25519"),
            OsStr::new("-out"),
            private.as_os_str(),
        ],
        &[
            OsStr::new("pkey"),
            OsStr::new("-in"),
            private.as_os_str(),
            OsStr::new("-pubout"),
            OsStr::new("-out"),
            public.as_os_str(),
        ],
    ];
    for args in steps {
        let out = Command::new("openssl").args(args).output().expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (private, public)
}
