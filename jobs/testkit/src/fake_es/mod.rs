//! A fake Elasticsearch (7.17 / 8.x flavoured) for the integration tests: a real HTTP server
//! on 127.0.0.1 that keeps state (repositories, SLM policies, snapshots, indices, data
//! streams, the keystore) and answers like Elasticsearch does.
//!
//! It is honest in two ways:
//! - every request is checked against the official API specification ([`spec`]); a method,
//!   path, query parameter or body field the spec does not allow gets HTTP 400 and is recorded
//!   as a violation, and a fake with violations fails the test when dropped;
//! - `s3` repositories really use the bucket on the S3 test server (rclone) with the
//!   repository's endpoint and credentials (inline settings or the reloaded keystore):
//!   `_verify` writes and reads a marker, snapshots are written to and listed from the bucket
//!   (`index.latest`, `index-N`), so a missing bucket, a wrong endpoint or bad keys fail like
//!   on a real cluster, and a second fake cluster sees the first one's snapshots.
//!
//! Used in-process by es-snapshot-register's integration tests and, as the `fake-es` binary,
//! by the cluster suite (tests/cluster), where the chart's Jobs in containers talk to it.
// Moved here whole from es-snapshot-register's tests: its request dispatch is one long match.
#![allow(clippy::too_many_lines)]

pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use sts_backup_core::storage::{Addressing, Storage, StorageArgs, StorageError};
use sts_backup_elasticsearch::validate::glob;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub endpoint: String,
}

#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub version: &'static str,
    pub cluster_name: String,
    /// Basic auth the cluster requires.
    pub basic_auth: Option<(String, String)>,
    /// An API key (`id:key`) the cluster requires instead.
    pub api_key: Option<String>,
    /// `-Des.allow_insecure_settings=true` (7.x only).
    pub allow_insecure_settings: bool,
    /// Keystore entries loaded at node start: client → (access key, secret key).
    pub keystore: Vec<(String, String, String)>,
    pub nodes: Vec<String>,
    /// Nodes whose repository verification fails.
    pub broken_nodes: Vec<String>,
    /// How long a snapshot stays IN_PROGRESS.
    pub snapshot_delay: Duration,
    /// Shards that fail in every restore (the last ones of the restored indices).
    pub restore_failed_shards: u64,
    /// How many `_recovery` polls an async restore takes to finish.
    pub restore_polls: u32,
    /// An async restore that never progresses.
    pub restore_stall: bool,
    /// Drop the connection (no response) on this many `_cat/shards` polls after a restore
    /// started, as a restarted proxy or node would.
    pub drop_polls: u32,
    /// Refuse every restore after the request checks pass, with this reason (e.g. the disk
    /// watermark), as Elasticsearch does when the cluster cannot take it.
    pub reject_restore: Option<String>,
    /// Listen on this port (to start a fake "late" on a port a client already uses).
    pub port: Option<u16>,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Host names of S3 endpoints and the address they resolve to, as the cluster's DNS would
    /// resolve a Service name for Elasticsearch's nodes (`r-minio` → `127.0.0.1`).
    pub host_aliases: Vec<(String, String)>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            version: "8.13.4",
            cluster_name: "sts-es".into(),
            basic_auth: None,
            api_key: None,
            allow_insecure_settings: false,
            keystore: Vec::new(),
            nodes: vec!["es-master-0".into()],
            broken_nodes: Vec::new(),
            snapshot_delay: Duration::from_millis(600),
            restore_failed_shards: 0,
            restore_polls: 2,
            restore_stall: false,
            drop_polls: 0,
            reject_restore: None,
            port: None,
            tls: None,
            host_aliases: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct IndexState {
    open: bool,
    shards: u64,
    /// While a restore recovers it: (polls left, polls in all, failed shards, bytes).
    restoring: Option<(u32, u32, u64, u64)>,
}

impl IndexState {
    fn open(open: bool) -> Self {
        IndexState {
            open,
            shards: 1,
            restoring: None,
        }
    }
}

struct State {
    opts: FakeOptions,
    cluster_uuid: String,
    node_ids: Vec<String>,
    log: Vec<Logged>,
    violations: Vec<String>,
    repos: BTreeMap<String, Map<String, Value>>,
    policies: BTreeMap<String, (Value, u64)>,
    indices: BTreeMap<String, IndexState>,
    data_streams: BTreeMap<String, Vec<String>>,
    keystore_pending: HashMap<String, (String, String)>,
    keystore_active: HashMap<String, (String, String)>,
    /// Snapshots not (yet) in the bucket: in progress or failed. (repo, name) → info.
    running: BTreeMap<(String, String), Value>,
    /// Composable index templates: name → (patterns, data stream).
    templates: BTreeMap<String, (Vec<String>, bool)>,
    drops_left: u32,
    seq: u64,
    /// SLM's operation mode (`RUNNING`, `STOPPED`) and per-policy record.
    slm_mode: String,
    slm: BTreeMap<String, SlmRecord>,
}

/// What SLM remembers of a policy's runs: `GET _slm/stats` counters and the policy's
/// `last_success` / `last_failure`.
#[derive(Debug, Clone, Default)]
struct SlmRecord {
    taken: u64,
    failed: u64,
    deleted: u64,
    last_success: Option<(String, i64)>,
    last_failure: Option<(String, i64, String)>,
}

type Shared = Arc<Mutex<State>>;

pub struct FakeEs {
    pub port: u16,
    scheme: &'static str,
    state: Shared,
    rt: Option<tokio::runtime::Runtime>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn iso(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A pseudo-random lowercase id (no extra dependency; unique enough for tests).
fn random_id(seq: u64, len: usize) -> String {
    let mut x = (now_ms() as u64) ^ (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ u64::from(std::process::id());
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

fn es_error(status: u16, kind: &str, reason: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status}),
    )
}

fn es_error_caused(status: u16, kind: &str, reason: &str, cause_kind: &str, cause: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason,
            "caused_by": {"type": cause_kind, "reason": cause}}, "status": status}),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn settings_as_strings(settings: &Map<String, Value>) -> Map<String, Value> {
    settings
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect()
}

/// Matches an ES multi-target expression (`a*,-b*`) against a name. `hidden_rule`: wildcards
/// do not match dot-names unless the term starts with a dot (snapshot creation).
fn expr_matches(expr: &str, name: &str, hidden_rule: bool) -> bool {
    let mut hit = false;
    for (i, term) in expr.split(',').map(str::trim).enumerate() {
        let (exclude, t) = match term.strip_prefix('-') {
            Some(t) if i > 0 => (true, t),
            _ => (false, term),
        };
        if t == "_all" || glob(t, name) {
            if hidden_rule && name.starts_with('.') && !t.starts_with('.') && t.contains('*') {
                continue;
            }
            hit = !exclude;
        }
    }
    hit
}

fn resolve_date_math(template: &str) -> String {
    let Some(inner) = template.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
        return template.to_string();
    };
    let now = chrono::Utc::now();
    let mut out = String::new();
    let mut rest = inner;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        // {now...{fmt}} or {now/d}
        let tail = &rest[start + 1..];
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in tail.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let expr = &tail[..end];
        let fmt = expr
            .find('{')
            .map(|i| expr[i + 1..expr.len() - 1].split('|').next().unwrap().to_string())
            .unwrap_or_else(|| "yyyy.MM.dd".into());
        let chrono_fmt = fmt
            .replace("yyyy", "%Y")
            .replace("MM", "%m")
            .replace("dd", "%d")
            .replace("HH", "%H")
            .replace("mm", "%M")
            .replace("ss", "%S");
        out.push_str(&now.format(&chrono_fmt).to_string());
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A rustls acceptor for the certificate chain and key (PEM), e.g. from
/// `sts_backup_testkit::make_test_ca`.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("read the test certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the test certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read the test key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a certificate and key that match");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn reply(status: u16, body: &Value, head: bool) -> Response<Full<Bytes>> {
    let bytes = if head || body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("X-elastic-product", "Elasticsearch");
    if status == 401 {
        resp = resp.header("WWW-Authenticate", "Basic realm=\"security\" charset=\"UTF-8\"");
    }
    resp.body(Full::new(bytes)).unwrap()
}

impl FakeEs {
    pub fn start(opts: FakeOptions) -> FakeEs {
        let listener = std::net::TcpListener::bind(("127.0.0.1", opts.port.unwrap_or(0))).expect("bind the fake ES");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = opts.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key));
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let seq0 = u64::from(port);
        let node_ids = opts
            .nodes
            .iter()
            .enumerate()
            .map(|(i, _)| format!("n{i}{}", random_id(seq0 + i as u64, 8)))
            .collect();
        let keystore: HashMap<String, (String, String)> = opts
            .keystore
            .iter()
            .map(|(c, a, s)| (c.clone(), (a.clone(), s.clone())))
            .collect();
        let state = Arc::new(Mutex::new(State {
            cluster_uuid: format!("{}-{}", random_id(seq0 + 100, 10), random_id(seq0 + 200, 10)),
            node_ids,
            opts,
            log: Vec::new(),
            violations: Vec::new(),
            repos: BTreeMap::new(),
            policies: BTreeMap::new(),
            indices: BTreeMap::new(),
            data_streams: BTreeMap::new(),
            keystore_pending: keystore.clone(),
            keystore_active: keystore,
            running: BTreeMap::new(),
            templates: BTreeMap::new(),
            drops_left: 0,
            seq: 0,
            slm_mode: "RUNNING".into(),
            slm: BTreeMap::new(),
        }));
        spec::spec(); // load once before serving
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = state.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        // A client that rejects the certificate never gets to send a request.
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        FakeEs {
            port,
            scheme,
            state,
            rt: Some(rt),
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub fn cluster_uuid(&self) -> String {
        self.state.lock().unwrap().cluster_uuid.clone()
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests whose endpoint (spec name) is one of `names`.
    pub fn requests_to(&self, name: &str) -> Vec<Logged> {
        self.requests().into_iter().filter(|r| r.endpoint == name).collect()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Takes the violations (for a test that provokes one on purpose).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().violations)
    }

    pub fn repository(&self, name: &str) -> Option<Map<String, Value>> {
        self.state.lock().unwrap().repos.get(name).cloned()
    }

    pub fn policy(&self, id: &str) -> Option<Value> {
        self.state.lock().unwrap().policies.get(id).map(|p| p.0.clone())
    }

    /// Writes keystore entries to "disk"; they take effect on `_nodes/reload_secure_settings`.
    pub fn set_keystore(&self, client: &str, access: &str, secret: &str) {
        self.state
            .lock()
            .unwrap()
            .keystore_pending
            .insert(client.into(), (access.into(), secret.into()));
    }

    pub fn add_index(&self, name: &str, open: bool) {
        self.state
            .lock()
            .unwrap()
            .indices
            .insert(name.into(), IndexState::open(open));
    }

    /// An index with `shards` primary shards.
    pub fn add_index_shards(&self, name: &str, open: bool, shards: u64) {
        let mut idx = IndexState::open(open);
        idx.shards = shards;
        self.state.lock().unwrap().indices.insert(name.into(), idx);
    }

    /// A composable index template (`data_stream: {}` when `data_stream`).
    pub fn add_index_template(&self, name: &str, patterns: &[&str], data_stream: bool) {
        self.state.lock().unwrap().templates.insert(
            name.into(),
            (patterns.iter().map(|p| p.to_string()).collect(), data_stream),
        );
    }

    /// The requests that change indices or data: delete, close, open, rollover, restore.
    pub fn destructive_requests(&self) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| {
                matches!(
                    r.endpoint.as_str(),
                    "indices.delete" | "indices.close" | "indices.open" | "indices.rollover" | "snapshot.restore"
                )
            })
            .collect()
    }

    /// Asserts that nothing was deleted, closed, opened, rolled over or restored.
    pub fn assert_untouched(&self) {
        let changed = self.destructive_requests();
        assert!(
            changed.is_empty(),
            "requests that change the cluster reached the fake: {:?}",
            changed
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
    }

    /// A data stream with the given backing indices (the last is the write index).
    pub fn add_data_stream(&self, name: &str, backing: &[&str]) {
        let mut st = self.state.lock().unwrap();
        for b in backing {
            st.indices.insert(b.to_string(), IndexState::open(true));
        }
        st.data_streams
            .insert(name.into(), backing.iter().map(|s| s.to_string()).collect());
    }

    pub fn indices(&self) -> BTreeMap<String, bool> {
        self.state
            .lock()
            .unwrap()
            .indices
            .iter()
            .map(|(k, v)| (k.clone(), v.open))
            .collect()
    }

    pub fn data_streams(&self) -> BTreeMap<String, Vec<String>> {
        self.state.lock().unwrap().data_streams.clone()
    }

    /// Records an SLM run of `policy` as SLM does: a snapshot taken (and `last_success`) or a
    /// failure (and `last_failure`), at `time_ms`.
    pub fn record_slm_run(&self, policy: &str, snapshot: &str, success: bool, time_ms: i64) {
        let mut st = self.state.lock().unwrap();
        let r = st.slm.entry(policy.to_string()).or_default();
        if success {
            r.taken += 1;
            r.last_success = Some((snapshot.to_string(), time_ms));
        } else {
            r.failed += 1;
            r.last_failure = Some((snapshot.to_string(), time_ms, "a shard failed".to_string()));
        }
    }

    /// Sets SLM's operation mode (`POST _slm/stop` leads to `STOPPED`).
    pub fn set_slm_mode(&self, mode: &str) {
        self.state.lock().unwrap().slm_mode = mode.to_string();
    }

    /// Puts a finished snapshot into the repository's bucket, as if this cluster had taken it.
    pub fn seed_snapshot(&self, repo: &str, name: &str, start_ms: i64, indices: &[&str], data_streams: &[&str]) {
        self.seed_snapshot_with(repo, name, start_ms, indices, data_streams, |_| {});
    }

    /// [`seed_snapshot`](Self::seed_snapshot), with `edit` changing the stored snapshot info
    /// (state, failures, version, index details) first.
    pub fn seed_snapshot_with(
        &self,
        repo: &str,
        name: &str,
        start_ms: i64,
        indices: &[&str],
        data_streams: &[&str],
        edit: impl FnOnce(&mut Value),
    ) {
        let (settings, keystore, version) = {
            let st = self.state.lock().unwrap();
            (
                st.repos
                    .get(repo)
                    .expect("register the repository first")
                    .get("settings")
                    .cloned()
                    .unwrap(),
                st.s3_access(),
                st.opts.version,
            )
        };
        let details: Map<String, Value> = indices
            .iter()
            .map(|i| {
                (
                    i.to_string(),
                    json!({"shard_count": 1, "size_in_bytes": 1_048_576, "max_segments_per_shard": 1}),
                )
            })
            .collect();
        let mut info = json!({
            "snapshot": name, "uuid": random_id(start_ms as u64, 22), "repository": repo, "version": version,
            "indices": indices, "data_streams": data_streams, "include_global_state": false,
            "metadata": {"policy": "auto-sts-backup"}, "state": "SUCCESS",
            "start_time": iso(start_ms), "start_time_in_millis": start_ms,
            "end_time": iso(start_ms + 4000), "end_time_in_millis": start_ms + 4000, "duration_in_millis": 4000,
            "failures": [], "shards": {"total": indices.len(), "failed": 0, "successful": indices.len()}, "feature_states": [],
            "index_details": details
        });
        edit(&mut info);
        self.rt
            .as_ref()
            .unwrap()
            .block_on(async move {
                let storage = repo_storage(settings.as_object().unwrap(), &keystore).await?;
                append_snapshot(&storage, info).await
            })
            .unwrap_or_else(|e| panic!("seeding snapshot {name}: {e}"));
    }
}

impl Drop for FakeEs {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let violations = self.violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!(
                "the fake Elasticsearch saw requests the spec does not allow:\n{}",
                violations.join("\n")
            );
        }
    }
}

/// What a node needs to reach a repository's bucket: the reloaded keystore, and the host
/// aliases standing in for the cluster's DNS.
#[derive(Clone)]
struct S3Access {
    keystore: HashMap<String, (String, String)>,
    aliases: Vec<(String, String)>,
}

impl State {
    fn s3_access(&self) -> S3Access {
        S3Access {
            keystore: self.keystore_active.clone(),
            aliases: self.opts.host_aliases.clone(),
        }
    }
}

/// `scheme://host[:port][/path]` with `host` replaced by its alias, if it has one.
fn resolve_alias(endpoint: String, aliases: &[(String, String)]) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint;
    };
    let host_end = rest.find([':', '/']).unwrap_or(rest.len());
    match aliases.iter().find(|(host, _)| host == &rest[..host_end]) {
        Some((_, addr)) => format!("{scheme}://{addr}{}", &rest[host_end..]),
        None => endpoint,
    }
}

/// Storage for a repository's settings, with the credentials Elasticsearch would use.
async fn repo_storage(settings: &Map<String, Value>, s3: &S3Access) -> Result<Storage, String> {
    let keystore = &s3.keystore;
    let get = |k: &str| settings.get(k).and_then(Value::as_str).map(str::to_string);
    let bucket = get("bucket").ok_or("missing bucket")?;
    let (access, secret) = match (get("access_key"), get("secret_key")) {
        (Some(a), Some(s)) => (a, s),
        _ => {
            let client = get("client").unwrap_or_else(|| "default".into());
            keystore.get(&client).cloned().ok_or_else(|| {
                format!("sdk_client_exception: Unable to load credentials from any of the providers in the chain (s3 client [{client}] has no keys)")
            })?
        }
    };
    let endpoint = get("endpoint")
        .ok_or("sdk_client_exception: Unable to execute HTTP request: s3.amazonaws.com: Name or service not known")?;
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("{}://{endpoint}", get("protocol").unwrap_or_else(|| "https".into()))
    };
    let endpoint = resolve_alias(endpoint, &s3.aliases);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("accesskey"), &access).unwrap();
    std::fs::write(dir.path().join("secretkey"), &secret).unwrap();
    let storage = match get("base_path") {
        Some(p) if !p.is_empty() => format!("s3://{bucket}/{p}"),
        _ => format!("s3://{bucket}"),
    };
    let args = StorageArgs {
        storage,
        s3_endpoint: Some(endpoint),
        region: get("region").unwrap_or_else(|| "us-east-1".into()),
        s3_addressing: if get("path_style_access").as_deref() == Some("true") {
            Addressing::Path
        } else {
            Addressing::Virtual
        },
        credentials_dir: Some(dir.path().to_path_buf()),
        ..StorageArgs::default()
    };
    let s = Storage::open(&args).await.map_err(|e| e.to_string());
    drop(dir); // the keys are read at connect time
    s
}

fn s3_error(e: &StorageError) -> String {
    match e {
        StorageError::NoSuchBucket { bucket, .. } => format!(
            "amazon_s3_exception: The specified bucket does not exist (Service: Amazon S3; Status Code: 404; Error Code: NoSuchBucket) [{bucket}]"
        ),
        StorageError::AccessDenied { .. } => {
            "amazon_s3_exception: Access Denied (Service: Amazon S3; Status Code: 403; Error Code: AccessDenied)".into()
        }
        other => format!("sdk_client_exception: {other}"),
    }
}

async fn read_repo_snapshots(storage: &Storage) -> Result<(u64, Vec<Value>), String> {
    match storage.get_bytes("index.latest", 64).await {
        Ok(b) if b.len() == 8 => {
            let gen = u64::from_be_bytes(b.try_into().unwrap());
            let data = storage
                .get_bytes(&format!("index-{gen}"), 16 << 20)
                .await
                .map_err(|e| s3_error(&e))?;
            let v: Value = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
            Ok((gen, v["snapshots"].as_array().cloned().unwrap_or_default()))
        }
        Ok(_) => Err("repository_exception: corrupt index.latest".into()),
        Err(e) if e.is_not_found() => Ok((0, Vec::new())),
        Err(e) => Err(s3_error(&e)),
    }
}

async fn append_snapshot(storage: &Storage, info: Value) -> Result<(), String> {
    let (gen, mut snaps) = read_repo_snapshots(storage).await?;
    let uuid = info["uuid"].as_str().unwrap_or("x").to_string();
    snaps.push(info.clone());
    let next = gen + 1;
    let put =
        |k: String, b: Vec<u8>| async move { storage.put_bytes(&k, Bytes::from(b)).await.map_err(|e| s3_error(&e)) };
    put(format!("snap-{uuid}.dat"), info.to_string().into_bytes()).await?;
    put(
        format!("index-{next}"),
        json!({"snapshots": snaps}).to_string().into_bytes(),
    )
    .await?;
    put("index.latest".into(), next.to_be_bytes().to_vec()).await?;
    Ok(())
}

/// Answers one request; an `Err` makes hyper drop the connection without a response.
async fn handle(state: Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().to_string();
    let head = method == "HEAD";
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();

    let body: Option<Value> = if body_bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body_bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = format!("{method} {path}: body is not JSON: {e}");
                state.lock().unwrap().violations.push(msg.clone());
                let (s, b) = es_error(400, "x_content_parse_exception", &msg);
                return Ok(reply(s, &b, head));
            }
        }
    };
    let query_keys: Vec<String> = query.iter().map(|(k, _)| k.clone()).collect();
    let checked = spec::spec().check(&method, &segments, &query_keys, body.as_ref());
    {
        let mut st = state.lock().unwrap();
        st.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
            endpoint: checked.clone().unwrap_or_default(),
        });
        // Authentication comes before everything else, like the security layer.
        let expected = match (&st.opts.basic_auth, &st.opts.api_key) {
            (Some((user, pass)), _) => Some((
                user.clone(),
                format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())),
            )),
            (None, Some(key)) => Some(("_api_key".to_string(), format!("ApiKey {}", base64(key.as_bytes())))),
            (None, None) => None,
        };
        if let Some((user, expected)) = expected {
            if auth.as_deref() != Some(expected.as_str()) {
                let reason = match auth {
                    None => format!("missing authentication credentials for REST request [{path}]"),
                    Some(_) => format!("unable to authenticate user [{user}] for REST request [{path}]"),
                };
                let (s, b) = es_error(401, "security_exception", &reason);
                return Ok(reply(s, &b, head));
            }
        }
    }
    let endpoint = match checked {
        Ok(name) => name,
        Err(why) => {
            state.lock().unwrap().violations.push(why.clone());
            let (s, b) = es_error(400, "illegal_argument_exception", &format!("[spec] {why}"));
            return Ok(reply(s, &b, head));
        }
    };
    if endpoint == "cat.shards" {
        let mut st = state.lock().unwrap();
        if st.drops_left > 0 {
            st.drops_left -= 1;
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the fake drops this connection",
            ));
        }
    }
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (status, out) = dispatch(&state, &endpoint, &segments, &q, body).await;
    Ok(reply(status, &out, head))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

async fn dispatch(
    state: &Shared,
    endpoint: &str,
    seg: &[String],
    q: &(dyn Fn(&str) -> Option<String> + Sync),
    body: Option<Value>,
) -> (u16, Value) {
    match endpoint {
        "info" => {
            let st = state.lock().unwrap();
            (
                200,
                json!({"name": st.opts.nodes[0], "cluster_name": st.opts.cluster_name, "cluster_uuid": st.cluster_uuid,
                    "version": {"number": st.opts.version, "build_flavor": "default", "lucene_version": "9.10.0",
                        "minimum_wire_compatibility_version": "7.17.0"}, "tagline": "You Know, for Search"}),
            )
        }
        "snapshot.get_repository" => {
            let st = state.lock().unwrap();
            let Some(name) = seg.get(1) else {
                // `GET _snapshot`: every repository (what a `..` name collapses to).
                let all: Map<String, Value> = st
                    .repos
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
                    .collect();
                return (200, Value::Object(all));
            };
            match st.repos.get(name) {
                None => es_error(404, "repository_missing_exception", &format!("[{name}] missing")),
                Some(r) => {
                    let mut r = r.clone();
                    // The settings filter hides the S3 keys.
                    if let Some(Value::Object(s)) = r.get_mut("settings") {
                        s.remove("access_key");
                        s.remove("secret_key");
                    }
                    (200, json!({ name.clone(): r }))
                }
            }
        }
        "snapshot.create_repository" => put_repository(state, &seg[1], body.unwrap_or(Value::Null), q("verify")).await,
        "snapshot.verify_repository" => verify(state, &seg[1]).await,
        "nodes.reload_secure_settings" => {
            let mut st = state.lock().unwrap();
            st.keystore_active = st.keystore_pending.clone();
            let nodes: Map<String, Value> = st
                .node_ids
                .iter()
                .zip(&st.opts.nodes)
                .map(|(id, name)| (id.clone(), json!({"name": name})))
                .collect();
            let n = nodes.len();
            (
                200,
                json!({"_nodes": {"total": n, "successful": n, "failed": 0}, "cluster_name": st.opts.cluster_name, "nodes": nodes}),
            )
        }
        "slm.get_lifecycle" => {
            let st = state.lock().unwrap();
            let id = &seg[2];
            match st.policies.get(id) {
                None => es_error(
                    404,
                    "resource_not_found_exception",
                    &format!("snapshot lifecycle policy or policies [{id}] not found, no policies are configured"),
                ),
                Some((policy, version)) => {
                    let mut entry = json!({"version": version, "modified_date_millis": now_ms(), "policy": policy,
                        "next_execution_millis": now_ms() + 3_600_000, "stats": {"policy": id}});
                    if let Some(r) = st.slm.get(id) {
                        if let Some((name, time)) = &r.last_success {
                            entry["last_success"] = json!({"snapshot_name": name, "time": time});
                        }
                        if let Some((name, time, details)) = &r.last_failure {
                            entry["last_failure"] = json!({"snapshot_name": name, "time": time, "details": details});
                        }
                    }
                    (200, json!({ id.clone(): entry }))
                }
            }
        }
        "slm.put_lifecycle" => {
            let body = body.unwrap_or(Value::Null);
            let mut st = state.lock().unwrap();
            let id = seg[2].clone();
            let repo = body["repository"].as_str().unwrap_or("");
            if !st.repos.contains_key(repo) {
                return es_error(
                    400,
                    "illegal_argument_exception",
                    &format!("no such repository [{repo}]"),
                );
            }
            let schedule = body["schedule"].as_str().unwrap_or("");
            let n = schedule.split_whitespace().count();
            if !(6..=7).contains(&n) {
                return es_error(
                    400,
                    "illegal_argument_exception",
                    &format!("invalid schedule [{schedule}]: must be a valid cron expression or time unit"),
                );
            }
            let version = st.policies.get(&id).map_or(1, |p| p.1 + 1);
            st.policies.insert(id, (body, version));
            (200, json!({"acknowledged": true}))
        }
        "slm.execute_lifecycle" => execute_policy(state, &seg[2]).await,
        "slm.get_status" => (200, json!({"operation_mode": state.lock().unwrap().slm_mode})),
        "slm.get_stats" => {
            let st = state.lock().unwrap();
            let sum = |f: fn(&SlmRecord) -> u64| st.slm.values().map(f).sum::<u64>();
            let per_policy: Vec<Value> = st
                .slm
                .iter()
                .map(|(id, r)| {
                    json!({"policy": id, "snapshots_taken": r.taken, "snapshots_failed": r.failed,
                    "snapshots_deleted": r.deleted, "snapshot_deletion_failures": 0})
                })
                .collect();
            (
                200,
                json!({"retention_runs": 0, "retention_failed": 0, "retention_timed_out": 0,
                    "retention_deletion_time": "0s", "retention_deletion_time_millis": 0,
                    "total_snapshots_taken": sum(|r| r.taken), "total_snapshots_failed": sum(|r| r.failed),
                    "total_snapshots_deleted": sum(|r| r.deleted), "total_snapshot_deletion_failures": 0,
                    "policy_stats": per_policy}),
            )
        }
        "snapshot.get" => get_snapshots(state, &seg[1], &seg[2], q("index_details").as_deref() == Some("true")).await,
        "snapshot.restore" => {
            restore(
                state,
                &seg[1],
                &seg[2],
                body.unwrap_or(Value::Null),
                q("wait_for_completion"),
            )
            .await
        }
        "cat.indices" => {
            let st = state.lock().unwrap();
            let rows: Vec<Value> = st
                .indices
                .iter()
                .map(|(k, v)| json!({"index": k, "status": if v.open { "open" } else { "close" }, "pri": v.shards.to_string()}))
                .collect();
            if q("format").as_deref() == Some("json") {
                (200, Value::Array(rows))
            } else {
                (200, Value::String("text output not implemented in the fake".into()))
            }
        }
        "indices.get_data_stream" => {
            let st = state.lock().unwrap();
            let list: Vec<Value> = st
                .data_streams
                .iter()
                .filter(|(name, _)| seg.len() < 2 || expr_matches(&seg[1], name, false))
                .map(|(name, backing)| {
                    json!({"name": name, "timestamp_field": {"name": "@timestamp"}, "generation": backing.len(),
                        "indices": backing.iter().map(|b| json!({"index_name": b, "index_uuid": "u"})).collect::<Vec<_>>(),
                        "status": "GREEN", "template": name, "hidden": false, "system": false})
                })
                .collect();
            if seg.len() == 2 && list.is_empty() && !seg[1].contains('*') {
                return es_error(404, "index_not_found_exception", &format!("no such index [{}]", seg[1]));
            }
            (200, json!({"data_streams": list}))
        }
        "indices.rollover" => {
            let mut st = state.lock().unwrap();
            let alias = seg[0].clone();
            let Some(backing) = st.data_streams.get(&alias).cloned() else {
                return es_error(
                    400,
                    "illegal_argument_exception",
                    &format!("rollover target [{alias}] does not exist"),
                );
            };
            let gen = backing.len() + 1;
            let new_index = format!(".ds-{alias}-{}-{gen:06}", chrono::Utc::now().format("%Y.%m.%d"));
            st.indices.insert(new_index.clone(), IndexState::open(true));
            st.data_streams.get_mut(&alias).unwrap().push(new_index.clone());
            (
                200,
                json!({"acknowledged": true, "shards_acknowledged": true, "old_index": backing.last(), "new_index": new_index,
                    "rolled_over": true, "dry_run": false, "lazy": false, "conditions": {}}),
            )
        }
        "indices.delete" => {
            let mut st = state.lock().unwrap();
            for name in seg[0].split(',') {
                if name.contains('*') || name == "_all" {
                    return es_error(
                        400,
                        "illegal_argument_exception",
                        "Wildcard expressions or all indices are not allowed",
                    );
                }
                if !st.indices.contains_key(name) {
                    return es_error(404, "index_not_found_exception", &format!("no such index [{name}]"));
                }
                if let Some((ds, _)) = st
                    .data_streams
                    .iter()
                    .find(|(_, b)| b.last().map(String::as_str) == Some(name))
                {
                    return es_error(
                        400,
                        "illegal_argument_exception",
                        &format!("index [{name}] is the write index for data stream [{ds}] and cannot be deleted"),
                    );
                }
            }
            for name in seg[0].split(',') {
                st.indices.remove(name);
                for backing in st.data_streams.values_mut() {
                    backing.retain(|b| b != name);
                }
            }
            (200, json!({"acknowledged": true}))
        }
        "indices.close" | "indices.open" => open_close(state, &seg[0], endpoint == "indices.open"),
        "indices.get_index_template" => {
            let st = state.lock().unwrap();
            let list: Vec<Value> = st
                .templates
                .iter()
                .map(|(name, (patterns, ds))| {
                    let mut t = json!({"index_patterns": patterns, "composed_of": []});
                    if *ds {
                        t["data_stream"] = json!({"hidden": false, "allow_custom_routing": false});
                    }
                    json!({"name": name, "index_template": t})
                })
                .collect();
            (200, json!({"index_templates": list}))
        }
        "cat.shards" => cat_shards(state, seg.get(2).map_or("*", String::as_str), q("format")),
        "indices.recovery" => recovery(state, &seg[0]),
        "indices.exists" => {
            let st = state.lock().unwrap();
            if seg[0].split(',').all(|n| st.indices.contains_key(n)) {
                (200, Value::Null)
            } else {
                (404, Value::Null)
            }
        }
        other => {
            let msg = format!("the fake does not implement {other}");
            state.lock().unwrap().violations.push(msg.clone());
            es_error(400, "illegal_argument_exception", &msg)
        }
    }
}

async fn put_repository(state: &Shared, name: &str, body: Value, verify_param: Option<String>) -> (u16, Value) {
    let settings = body["settings"].as_object().cloned().unwrap_or_default();
    {
        let mut st = state.lock().unwrap();
        if body["type"] != "s3" {
            return es_error(
                500,
                "repository_exception",
                &format!("[{name}] repository type [{}] does not exist", body["type"]),
            );
        }
        if settings.contains_key("access_key") || settings.contains_key("secret_key") {
            let major: u32 = st.opts.version.split('.').next().unwrap().parse().unwrap();
            if major >= 8 {
                return es_error(
                    400,
                    "illegal_argument_exception",
                    "Setting [access_key] is insecure, use the elasticsearch keystore instead",
                );
            }
            if !st.opts.allow_insecure_settings {
                return es_error(
                    400,
                    "illegal_argument_exception",
                    "Setting [access_key] is insecure, but property [allow_insecure_settings] is not set",
                );
            }
        }
        st.repos.insert(name.to_string(), {
            let mut m = Map::new();
            m.insert("type".into(), json!("s3"));
            m.insert("settings".into(), Value::Object(settings_as_strings(&settings)));
            m
        });
    }
    if verify_param.as_deref() != Some("false") {
        let (status, body) = verify(state, name).await;
        if status != 200 {
            return (status, body);
        }
    }
    (200, json!({"acknowledged": true}))
}

async fn verify(state: &Shared, name: &str) -> (u16, Value) {
    let (repo, keystore, nodes, broken, seq) = {
        let mut st = state.lock().unwrap();
        st.seq += 1;
        let Some(repo) = st.repos.get(name).cloned() else {
            return es_error(404, "repository_missing_exception", &format!("[{name}] missing"));
        };
        let nodes: Vec<(String, String)> = st.node_ids.iter().cloned().zip(st.opts.nodes.iter().cloned()).collect();
        (repo, st.s3_access(), nodes, st.opts.broken_nodes.clone(), st.seq)
    };
    let settings = repo["settings"].as_object().cloned().unwrap_or_default();
    let readonly = settings.get("readonly").and_then(Value::as_str) == Some("true");
    let result: Result<(), String> = async {
        let storage = repo_storage(&settings, &keystore).await?;
        if readonly {
            storage.check(false).await.map_err(|e| s3_error(&e))?;
            return Ok(());
        }
        let key = format!("tests-{}/master.dat", random_id(seq, 22));
        storage
            .put_bytes(&key, Bytes::from_static(b"verify"))
            .await
            .map_err(|e| s3_error(&e))?;
        let back = storage.get_bytes(&key, 1024).await.map_err(|e| s3_error(&e))?;
        storage.delete(&key).await.map_err(|e| s3_error(&e))?;
        if back != b"verify" {
            return Err("store location returned different data".into());
        }
        Ok(())
    }
    .await;
    if let Err(cause) = result {
        let (kind, reason) = cause.split_once(": ").unwrap_or(("repository_exception", &cause));
        return es_error_caused(
            500,
            "repository_verification_exception",
            &format!("[{name}] path  is not accessible on master node"),
            kind,
            reason,
        );
    }
    let failed: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| broken.contains(n))
        .map(|(id, n)| {
            format!(
                "[{id}, 'RemoteTransportException[[{n}][127.0.0.1:9300][internal:admin/repository/verify]]; nested: \
                 RepositoryVerificationException[[{name}] store location [] is not accessible on the node [{n}]]']"
            )
        })
        .collect();
    if !failed.is_empty() {
        return es_error(
            500,
            "repository_verification_exception",
            &format!("[{name}] [{}]", failed.join(", ")),
        );
    }
    let nodes: Map<String, Value> = nodes.into_iter().map(|(id, n)| (id, json!({"name": n}))).collect();
    (200, json!({"nodes": nodes}))
}

async fn execute_policy(state: &Shared, id: &str) -> (u16, Value) {
    let (policy, repo, info, keystore, delay) = {
        let mut st = state.lock().unwrap();
        let Some((policy, _)) = st.policies.get(id).cloned() else {
            return es_error(
                404,
                "resource_not_found_exception",
                &format!("no such snapshot lifecycle policy [{id}]"),
            );
        };
        let repo_name = policy["repository"].as_str().unwrap_or("").to_string();
        let Some(repo) = st.repos.get(&repo_name).cloned() else {
            return es_error(500, "repository_missing_exception", &format!("[{repo_name}] missing"));
        };
        if repo["settings"]["readonly"] == "true" {
            return es_error(
                500,
                "repository_exception",
                &format!("[{repo_name}] cannot create snapshot in a readonly repository"),
            );
        }
        st.seq += 1;
        let seq = st.seq;
        let name = format!(
            "{}-{}",
            resolve_date_math(policy["name"].as_str().unwrap_or("snap")),
            random_id(seq, 22)
        );
        let pattern = policy["config"]["indices"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                policy["config"]["indices"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| "*".into())
            });
        let streams: Vec<String> = st
            .data_streams
            .keys()
            .filter(|d| expr_matches(&pattern, d, true))
            .cloned()
            .collect();
        let mut indices: Vec<String> = st
            .indices
            .keys()
            .filter(|i| expr_matches(&pattern, i, true) || streams.iter().any(|d| st.data_streams[d].contains(i)))
            .cloned()
            .collect();
        indices.sort();
        let start = now_ms();
        let info = json!({
            "snapshot": name, "uuid": random_id(seq + 7, 22), "repository": repo_name, "version": st.opts.version,
            "indices": indices, "data_streams": streams, "include_global_state": policy["config"]["include_global_state"],
            "metadata": {"policy": id}, "state": "IN_PROGRESS", "start_time": iso(start), "start_time_in_millis": start,
            "end_time_in_millis": 0, "duration_in_millis": 0, "failures": [],
            "shards": {"total": 0, "failed": 0, "successful": 0}, "feature_states": []
        });
        st.running.insert((repo_name.clone(), name.clone()), info.clone());
        (policy, repo, info, st.s3_access(), st.opts.snapshot_delay)
    };
    let _ = policy;
    let name = info["snapshot"].as_str().unwrap().to_string();
    let shared = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let settings = repo["settings"].as_object().cloned().unwrap_or_default();
        let repo_name = info["repository"].as_str().unwrap().to_string();
        let snap = info["snapshot"].as_str().unwrap().to_string();
        let mut done = info.clone();
        let n = done["indices"].as_array().map_or(0, Vec::len);
        let end = now_ms();
        done["state"] = json!("SUCCESS");
        done["end_time"] = json!(iso(end));
        done["end_time_in_millis"] = json!(end);
        done["duration_in_millis"] = json!(end - info["start_time_in_millis"].as_i64().unwrap());
        done["shards"] = json!({"total": n, "failed": 0, "successful": n});
        let written = async {
            let storage = repo_storage(&settings, &keystore).await?;
            append_snapshot(&storage, done.clone()).await
        }
        .await;
        let mut st = shared.lock().unwrap();
        match written {
            Ok(()) => {
                st.running.remove(&(repo_name, snap));
            }
            Err(why) => {
                let mut failed = done;
                failed["state"] = json!("FAILED");
                failed["reason"] = json!(why);
                st.running.insert((repo_name, snap), failed);
            }
        }
    });
    (200, json!({"snapshot_name": name}))
}

async fn all_snapshots(state: &Shared, repo: &str) -> Result<Vec<Value>, (u16, Value)> {
    let (settings, keystore, running) = {
        let st = state.lock().unwrap();
        let Some(r) = st.repos.get(repo) else {
            return Err(es_error(
                404,
                "repository_missing_exception",
                &format!("[{repo}] missing"),
            ));
        };
        let running: Vec<Value> = st
            .running
            .iter()
            .filter(|((r, _), _)| r == repo)
            .map(|(_, v)| v.clone())
            .collect();
        (
            r["settings"].as_object().cloned().unwrap_or_default(),
            st.s3_access(),
            running,
        )
    };
    let storage = repo_storage(&settings, &keystore).await.map_err(|e| {
        es_error(
            500,
            "repository_exception",
            &format!("[{repo}] could not read repository data: {e}"),
        )
    })?;
    let (_, mut snaps) = read_repo_snapshots(&storage).await.map_err(|e| {
        es_error(
            500,
            "repository_exception",
            &format!("[{repo}] could not read repository data: {e}"),
        )
    })?;
    snaps.extend(running);
    Ok(snaps)
}

async fn get_snapshots(state: &Shared, repo: &str, which: &str, index_details: bool) -> (u16, Value) {
    let mut snaps = match all_snapshots(state, repo).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    // `index_details` is only in the answer when asked for (7.13+).
    if !index_details {
        for s in &mut snaps {
            if let Some(o) = s.as_object_mut() {
                o.remove("index_details");
            }
        }
    }
    if which == "_all" || which == "*" {
        let n = snaps.len();
        return (200, json!({"snapshots": snaps, "total": n, "remaining": 0}));
    }
    let found: Vec<Value> = snaps.into_iter().filter(|s| s["snapshot"] == which).collect();
    if found.is_empty() {
        return es_error(
            404,
            "snapshot_missing_exception",
            &format!("[{repo}:{which}] is missing"),
        );
    }
    (200, json!({"snapshots": found, "total": 1, "remaining": 0}))
}

/// `POST <index>/_close` and `_open`: a missing index is 404; the write index of a data
/// stream cannot be closed (close index API docs).
fn open_close(state: &Shared, expr: &str, open: bool) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    for name in expr.split(',') {
        if !st.indices.contains_key(name) {
            return es_error(404, "index_not_found_exception", &format!("no such index [{name}]"));
        }
        if !open {
            if let Some((ds, _)) = st
                .data_streams
                .iter()
                .find(|(_, b)| b.last().map(String::as_str) == Some(name))
            {
                return es_error(
                    400,
                    "illegal_argument_exception",
                    &format!("index [{name}] is the write index for data stream [{ds}] and cannot be closed"),
                );
            }
        }
    }
    for name in expr.split(',') {
        st.indices.get_mut(name).unwrap().open = open;
    }
    if open {
        (200, json!({"acknowledged": true, "shards_acknowledged": true}))
    } else {
        let indices: Map<String, Value> = expr
            .split(',')
            .map(|n| (n.to_string(), json!({"closed": true})))
            .collect();
        (
            200,
            json!({"acknowledged": true, "shards_acknowledged": true, "indices": indices}),
        )
    }
}

fn names_for(st: &State, expr: &str) -> Result<Vec<String>, (u16, Value)> {
    let mut out = Vec::new();
    for term in expr.split(',') {
        if term.contains('*') {
            out.extend(st.indices.keys().filter(|i| glob(term, i)).cloned());
        } else if st.indices.contains_key(term) {
            out.push(term.to_string());
        } else {
            return Err(es_error(
                404,
                "index_not_found_exception",
                &format!("no such index [{term}]"),
            ));
        }
    }
    Ok(out)
}

/// `GET _cat/shards/<indices>?format=json`: primaries and replicas of a one-node cluster
/// (replicas stay UNASSIGNED), restoring primaries INITIALIZING until their recovery is done,
/// failed ones UNASSIGNED with `ALLOCATION_FAILED`.
fn cat_shards(state: &Shared, expr: &str, format: Option<String>) -> (u16, Value) {
    let st = state.lock().unwrap();
    if format.as_deref() != Some("json") {
        return (200, Value::String("text output not implemented in the fake".into()));
    }
    let names = match names_for(&st, expr) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let mut rows = Vec::new();
    for name in names {
        let idx = &st.indices[&name];
        for shard in 0..idx.shards {
            let (state, reason) = match idx.restoring {
                Some((left, _, failed, _)) if left == 0 && shard >= idx.shards - failed => {
                    ("UNASSIGNED", Some("ALLOCATION_FAILED"))
                }
                Some((left, _, _, _)) if left > 0 => ("INITIALIZING", None),
                _ => ("STARTED", None),
            };
            rows.push(
                json!({"index": name, "shard": shard.to_string(), "prirep": "p", "state": state,
                "unassigned.reason": reason}),
            );
            rows.push(
                json!({"index": name, "shard": shard.to_string(), "prirep": "r", "state": "UNASSIGNED",
                "unassigned.reason": "INDEX_CREATED"}),
            );
        }
    }
    (200, Value::Array(rows))
}

/// `GET <indices>/_recovery`: one SNAPSHOT recovery per restoring primary; every call moves
/// the restores one step on (unless the fake stalls them).
fn recovery(state: &Shared, expr: &str) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    let names = match names_for(&st, expr) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let stall = st.opts.restore_stall;
    let mut out = Map::new();
    for name in names {
        let idx = st.indices.get_mut(&name).unwrap();
        let Some((left, all, failed, bytes)) = idx.restoring.as_mut() else {
            out.insert(name, json!({"shards": []}));
            continue;
        };
        if !stall && *left > 0 {
            *left -= 1;
        }
        let done = u64::from(*all - *left);
        let per_shard = *bytes / idx.shards.max(1);
        let shards: Vec<Value> = (0..idx.shards)
            .filter(|s| *left > 0 || *s < idx.shards - *failed)
            .map(|s| {
                let recovered = per_shard * done / u64::from((*all).max(1));
                json!({"id": s, "type": "SNAPSHOT", "stage": if *left == 0 { "DONE" } else { "INDEX" }, "primary": true,
                    "index": {"size": {"total_in_bytes": per_shard, "recovered_in_bytes": recovered, "reused_in_bytes": 0,
                        "percent": format!("{:.1}%", recovered as f64 * 100.0 / per_shard.max(1) as f64)}}})
            })
            .collect();
        out.insert(name, json!({"shards": shards}));
    }
    (200, Value::Object(out))
}

fn restore_error(repo: &str, name: &str, uuid: &str, why: &str) -> (u16, Value) {
    es_error(
        500,
        "snapshot_restore_exception",
        &format!("[{repo}:{name}/{uuid}] {why}"),
    )
}

/// (name in the snapshot, name in the cluster) pairs.
type Renames = Vec<(String, String)>;

/// What a restore request selects: (data streams, indices), each with its target name.
fn restore_targets(info: &Value, body: &Value) -> Result<(Renames, Renames), String> {
    let pattern = match &body["indices"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => "*".into(),
    };
    let rename = match (body["rename_pattern"].as_str(), body["rename_replacement"].as_str()) {
        (Some(p), Some(r)) => Some((regex::Regex::new(p).map_err(|e| e.to_string())?, r.to_string())),
        _ => None,
    };
    let apply = |n: &str| match &rename {
        Some((re, r)) => re.replace_all(n, r.as_str()).into_owned(),
        None => n.to_string(),
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let streams: Vec<(String, String)> = strings(&info["data_streams"])
        .into_iter()
        .filter(|d| expr_matches(&pattern, d, false))
        .map(|d| (d.clone(), apply(&d)))
        .collect();
    let targets = strings(&info["indices"])
        .into_iter()
        .filter_map(|i| {
            // Backing indices are renamed through their data stream's name (RestoreService).
            if let Some((d, _)) = streams.iter().find(|(d, _)| i.starts_with(&format!(".ds-{d}-"))) {
                let _ = d;
                return Some((i.clone(), format!(".ds-{}", apply(&i[4..]))));
            }
            expr_matches(&pattern, &i, false).then(|| (i.clone(), apply(&i)))
        })
        .collect();
    Ok((streams, targets))
}

/// `POST _snapshot/<repo>/<snapshot>/_restore`, checked like RestoreService: the snapshot's
/// state and version, `partial`, open or differently sharded existing indices.
async fn restore(state: &Shared, repo: &str, name: &str, body: Value, wait: Option<String>) -> (u16, Value) {
    let snaps = match all_snapshots(state, repo).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(info) = snaps.into_iter().find(|s| s["snapshot"] == name) else {
        return es_error(
            404,
            "snapshot_missing_exception",
            &format!("[{repo}:{name}] is missing"),
        );
    };
    let uuid = info["uuid"].as_str().unwrap_or("").to_string();
    let snap_state = info["state"].as_str().unwrap_or("");
    if !matches!(snap_state, "SUCCESS" | "PARTIAL") {
        return restore_error(repo, name, &uuid, &format!("unsupported snapshot state [{snap_state}]"));
    }
    let (streams, targets) = match restore_targets(&info, &body) {
        Ok(t) => t,
        Err(e) => return es_error(400, "illegal_argument_exception", &e),
    };
    let mut st = state.lock().unwrap();
    let snap_version = info["version"].as_str().unwrap_or("0");
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    if parts(snap_version) > parts(st.opts.version) {
        return restore_error(repo, name, &uuid, &format!(
            "the snapshot was created with Elasticsearch version [{snap_version}] which is higher than the version of this node [{}]",
            st.opts.version
        ));
    }
    // `partial: false` (the default) refuses indices that were not fully snapshotted; with
    // `partial: true` their missing shards would be recreated empty (restore API docs).
    let failed: Vec<String> = info["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["index"].as_str().map(str::to_string))
        .collect();
    if body["partial"] != json!(true) {
        if let Some((i, _)) = targets.iter().find(|(i, _)| failed.contains(i)) {
            return restore_error(
                repo,
                name,
                &uuid,
                &format!("index [{i}] wasn't fully snapshotted - cannot restore"),
            );
        }
    }
    let shard_count = |i: &str| info["index_details"][i]["shard_count"].as_u64().unwrap_or(1);
    for (i, t) in &targets {
        match st.indices.get(t) {
            Some(idx) if idx.open => {
                return restore_error(
                    repo,
                    name,
                    &uuid,
                    &format!(
                "cannot restore index [{t}] because an open index with same name already exists in the cluster. Either \
                 close or delete the existing index or restore the index under a different name by providing a rename \
                 pattern and replacement name"),
                )
            }
            Some(idx) if idx.shards != shard_count(i) => {
                return restore_error(
                    repo,
                    name,
                    &uuid,
                    &format!(
                        "cannot restore index [{t}] with [{}] shards from a snapshot of index [{i}] with [{}] shards",
                        idx.shards,
                        shard_count(i)
                    ),
                )
            }
            _ => {}
        }
    }
    if let Some(why) = st.opts.reject_restore.clone() {
        return restore_error(repo, name, &uuid, &why);
    }
    let failed_shards = st.opts.restore_failed_shards;
    let polls = if wait.as_deref() == Some("true") {
        0
    } else {
        st.opts.restore_polls
    };
    for (i, t) in &targets {
        let shards = shard_count(i);
        let bytes = info["index_details"][i.as_str()]["size_in_bytes"]
            .as_u64()
            .unwrap_or(1_048_576);
        let fail = if targets.iter().position(|(x, _)| x == i) == Some(targets.len() - 1) {
            failed_shards.min(shards)
        } else {
            0
        };
        st.indices.insert(
            t.clone(),
            IndexState {
                open: true,
                shards,
                restoring: Some((polls, polls, fail, bytes)),
            },
        );
    }
    for (d, renamed) in &streams {
        let mut backing: Vec<String> = targets
            .iter()
            .filter(|(i, _)| i.starts_with(&format!(".ds-{d}-")))
            .map(|(_, t)| t.clone())
            .collect();
        let entry = st.data_streams.entry(renamed.clone()).or_default();
        backing.retain(|b| !entry.contains(b));
        entry.extend(backing);
        entry.sort();
    }
    if wait.as_deref() != Some("true") {
        st.drops_left = st.opts.drop_polls;
        return (200, json!({"accepted": true}));
    }
    let total = targets.len() as u64;
    let failed = failed_shards.min(total);
    (
        200,
        json!({"snapshot": {"snapshot": name, "indices": targets.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(),
            "shards": {"total": total, "failed": failed, "successful": total - failed}}}),
    )
}
