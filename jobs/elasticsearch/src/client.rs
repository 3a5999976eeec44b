//! A small, typed Elasticsearch REST client over reqwest (rustls): basic auth or API key, an
//! extra CA bundle, errors shown as `type: reason`. Every REST path and every piece of JSON
//! digging lives here, one method per Elasticsearch call; the rest of the crate works with
//! the typed answers. Credentials never reach a log line or an error message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::retry::{retry, Attempt, Backoff, GaveUp};

/// How to authenticate to Elasticsearch.
#[derive(Clone, Default)]
pub enum EsAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    /// The encoded API key (`base64(id:key)`), sent as `Authorization: ApiKey ...`.
    ApiKey(String),
}

impl std::fmt::Debug for EsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EsAuth::None => f.write_str("None"),
            EsAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            EsAuth::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

fn read_secret(path: &PathBuf, flag: &str) -> Result<String> {
    let value = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("{flag}: cannot read {}: {e}", path.display())))?;
    let value = value.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(Error::invalid(format!("{flag}: {} is empty", path.display())));
    }
    Ok(value)
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl EsAuth {
    /// Builds the auth from the documented sources: `ES_USERNAME` + `ES_PASSWORD` /
    /// `ES_PASSWORD_FILE`, or `ES_API_KEY` / `ES_API_KEY_FILE`. Secret values come from the
    /// environment or files only, never from the command line.
    pub fn from_sources(
        username: Option<String>,
        password: Option<String>,
        password_file: Option<PathBuf>,
        api_key: Option<String>,
        api_key_file: Option<PathBuf>,
    ) -> Result<EsAuth> {
        let username = non_empty(username);
        let password_file = password_file.filter(|p| !p.as_os_str().is_empty());
        let api_key_file = api_key_file.filter(|p| !p.as_os_str().is_empty());
        let password = match (non_empty(password), password_file) {
            (Some(p), _) => Some(p),
            (None, Some(file)) => Some(read_secret(&file, "ES_PASSWORD_FILE")?),
            (None, None) => None,
        };
        let api_key = match (non_empty(api_key), api_key_file) {
            (Some(k), _) => Some(k),
            (None, Some(file)) => Some(read_secret(&file, "ES_API_KEY_FILE")?),
            (None, None) => None,
        };
        match (username, password, api_key) {
            (Some(_), _, Some(_)) => Err(Error::invalid(
                "ES_API_KEY: both an API key and ES_USERNAME are set; use one way to authenticate",
            )),
            (None, None, None) => Ok(EsAuth::None),
            (None, Some(_), None) => Err(Error::invalid("ES_USERNAME: a password is set but no user name")),
            (Some(_), None, None) => Err(Error::invalid(
                "ES_PASSWORD: ES_USERNAME is set but neither ES_PASSWORD nor ES_PASSWORD_FILE",
            )),
            (Some(username), Some(password), None) => Ok(EsAuth::Basic { username, password }),
            (None, _, Some(key)) => {
                // Accept both the encoded form and the raw `id:key` pair.
                let key = key.trim().to_string();
                Ok(EsAuth::ApiKey(if key.contains(':') {
                    base64(key.as_bytes())
                } else {
                    key
                }))
            }
        }
    }

    /// Which settings to blame when Elasticsearch rejects the credentials.
    fn source_hint(&self) -> &'static str {
        match self {
            EsAuth::None => "ES_USERNAME/ES_PASSWORD or ES_API_KEY (none set)",
            EsAuth::Basic { .. } => "ES_USERNAME/ES_PASSWORD",
            EsAuth::ApiKey(_) => "ES_API_KEY",
        }
    }
}

/// Standard base64 with padding (API keys given as `id:key`).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct EsConfig {
    /// `http(s)://host:port`; a bare `host:port` gets `http://`.
    pub url: String,
    pub auth: EsAuth,
    /// Extra CA certificates (PEM) to trust.
    pub ca_bundle: Option<PathBuf>,
}

/// A failed Elasticsearch call, in words.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach Elasticsearch at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{method} {path}: {kind}: {reason} (HTTP {status})")]
    Api {
        method: String,
        path: String,
        status: u16,
        kind: String,
        reason: String,
    },
    #[error("{method} {path}: unexpected response: {detail}")]
    Protocol {
        method: String,
        path: String,
        detail: String,
    },
}

impl ApiError {
    /// Worth another try while waiting for the cluster to come up.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Api { status, kind, .. } => {
                matches!(status, 429 | 502 | 503 | 504)
                    || kind.contains("master_not_discovered")
                    || kind.contains("cluster_block")
            }
            ApiError::Protocol { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            ApiError::Api { kind, .. } => kind,
            _ => "",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ApiError::Api { reason, .. } => reason,
            _ => "",
        }
    }
}

/// Turns an Elasticsearch error body into `(type, reason)`, following `caused_by` once.
pub fn error_type_reason(body: &Value, status: u16) -> (String, String) {
    match body.get("error") {
        Some(Value::Object(err)) => {
            let kind = err.get("type").and_then(Value::as_str).unwrap_or("error").to_string();
            let mut reason = err.get("reason").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(cause) = err.get("caused_by") {
                let ck = cause.get("type").and_then(Value::as_str).unwrap_or("");
                let cr = cause.get("reason").and_then(Value::as_str).unwrap_or("");
                if !ck.is_empty() || !cr.is_empty() {
                    reason = format!("{reason} (caused by {ck}: {cr})");
                }
            }
            (kind, reason)
        }
        Some(Value::String(s)) => ("error".into(), s.clone()),
        _ => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no details")
                .to_string();
            (format!("http_{status}"), reason)
        }
    }
}

/// What `GET /` tells about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub cluster_uuid: String,
    pub version: String,
}

impl ClusterInfo {
    fn parse(body: &Value) -> ClusterInfo {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        ClusterInfo {
            cluster_name: s(body.get("cluster_name")),
            cluster_uuid: s(body.get("cluster_uuid")),
            version: s(body.pointer("/version/number")),
        }
    }

    pub fn major(&self) -> u32 {
        version_parts(&self.version).0
    }
}

/// `8.13.4` → (8, 13, 4); missing or odd parts are 0.
pub fn version_parts(version: &str) -> (u32, u32, u32) {
    let mut it = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Shard counts of a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ShardCounts {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub successful: u64,
    #[serde(default)]
    pub failed: u64,
}

/// A shard that failed in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShardFailure {
    #[serde(default)]
    pub index: String,
    #[serde(default)]
    pub shard_id: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `index_details` of one index in a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct IndexDetails {
    #[serde(default)]
    pub shard_count: u64,
    #[serde(default)]
    pub size_in_bytes: u64,
}

/// One snapshot as `GET _snapshot` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot: String,
    #[serde(default)]
    pub state: Option<String>,
    /// The Elasticsearch version that wrote it.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub indices: Vec<String>,
    #[serde(default)]
    pub data_streams: Vec<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub start_time_in_millis: Option<i64>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub end_time_in_millis: Option<i64>,
    #[serde(default)]
    pub shards: ShardCounts,
    #[serde(default)]
    pub failures: Vec<ShardFailure>,
    #[serde(default)]
    pub index_details: BTreeMap<String, IndexDetails>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl SnapshotInfo {
    pub fn state(&self) -> &str {
        self.state.as_deref().unwrap_or("UNKNOWN")
    }
}

/// One row of `_cat/indices`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexRow {
    pub index: String,
    #[serde(default)]
    pub status: String,
    /// Number of primary shards (a string in `_cat` output).
    #[serde(default)]
    pub pri: Option<String>,
}

impl IndexRow {
    pub fn is_open(&self) -> bool {
        self.status != "close"
    }

    pub fn primaries(&self) -> Option<u64> {
        self.pri.as_deref().and_then(|p| p.parse().ok())
    }
}

/// A data stream and its backing indices (the last is the write index).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataStream {
    pub name: String,
    #[serde(default, deserialize_with = "backing_indices")]
    pub indices: Vec<String>,
}

fn backing_indices<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Backing {
        index_name: String,
    }
    Ok(Vec::<Backing>::deserialize(d)?
        .into_iter()
        .map(|b| b.index_name)
        .collect())
}

/// A composable index template, as far as restores care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTemplate {
    pub name: String,
    pub patterns: Vec<String>,
    pub data_stream: bool,
}

/// One row of `_cat/shards`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShardRow {
    pub index: String,
    pub shard: String,
    pub prirep: String,
    pub state: String,
    #[serde(rename = "unassigned.reason", default)]
    pub unassigned_reason: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn protocol(method: &str, path: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::Protocol {
        method: method.into(),
        path: path.into(),
        detail: e.to_string(),
    }
}

fn parse_snapshots(body: &Value, method: &str, path: &str) -> std::result::Result<Vec<SnapshotInfo>, ApiError> {
    let list = body.get("snapshots").cloned().unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(list).map_err(|e| protocol(method, path, &e))
}

#[derive(Debug, Clone)]
pub struct EsClient {
    http: reqwest::Client,
    base: Url,
    auth: EsAuth,
}

impl EsClient {
    pub fn new(config: &EsConfig) -> Result<EsClient> {
        let raw = config.url.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let base =
            Url::parse(&with_scheme).map_err(|e| Error::invalid(format!("--es-url: {raw:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "--es-url: {raw:?} must use http:// or https://"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(Error::invalid(
                "--es-url: must not carry credentials; use ES_USERNAME/ES_PASSWORD or ES_API_KEY",
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(sts_backup_core::TOOL);
        if let Some(ca) = &config.ca_bundle {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::invalid(format!("--es-ca-bundle: cannot read {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::invalid(format!("--es-ca-bundle: {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(Error::invalid(format!(
                    "--es-ca-bundle: {} holds no PEM certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| Error::invalid(format!("--es-ca-bundle: cannot set up TLS: {e}")))?;
        Ok(EsClient {
            http,
            base,
            auth: config.auth.clone(),
        })
    }

    /// The URL without credentials, for messages.
    pub fn url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    fn url_for(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http URLs have a path");
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request. `segments` are the path segments (encoded here); returns the status
    /// and the JSON body (Null when empty) for 2xx, and an [`ApiError`] otherwise, except that a
    /// 404 is returned as `Ok((404, body))` when `allow_404`.
    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        allow_404: bool,
    ) -> std::result::Result<(u16, Value), ApiError> {
        let url = self.url_for(segments, query);
        let shown_path = format!("/{}", segments.join("/"));
        tracing::debug!("{method} {shown_path}");
        let mut req = self.http.request(method.clone(), url);
        req = match &self.auth {
            EsAuth::None => req,
            EsAuth::Basic { username, password } => req.basic_auth(username, Some(password)),
            EsAuth::ApiKey(key) => req.header("Authorization", format!("ApiKey {key}")),
        };
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            url: self.url(),
            detail: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ApiError::Unreachable {
            url: self.url(),
            detail: error_chain(&e),
        })?;
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if (200..300).contains(&status) || (status == 404 && allow_404) {
            return Ok((status, json));
        }
        let (kind, reason) = error_type_reason(&json, status);
        Err(ApiError::Api {
            method: method.to_string(),
            path: shown_path,
            status,
            kind,
            reason,
        })
    }

    async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> std::result::Result<Value, ApiError> {
        Ok(self.request(Method::GET, segments, query, None, false).await?.1)
    }

    /// GET that maps 404 to `None`.
    async fn get_opt(&self, segments: &[&str], query: &[(&str, &str)]) -> std::result::Result<Option<Value>, ApiError> {
        let (status, body) = self.request(Method::GET, segments, query, None, true).await?;
        Ok(if status == 404 { None } else { Some(body) })
    }

    async fn put(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> std::result::Result<Value, ApiError> {
        Ok(self.request(Method::PUT, segments, query, body, false).await?.1)
    }

    async fn post(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> std::result::Result<Value, ApiError> {
        Ok(self.request(Method::POST, segments, query, body, false).await?.1)
    }

    // ---- cluster ------------------------------------------------------------------------

    /// `GET /`, converting rejected credentials into an invalid-input error (exit 2): the
    /// credentials are configuration, and nothing has been changed yet.
    pub async fn info(&self) -> Result<ClusterInfo> {
        let body = self.get(&[], &[]).await.map_err(|e| self.auth_error(e))?;
        Ok(ClusterInfo::parse(&body))
    }

    fn auth_error(&self, e: ApiError) -> Error {
        if e.status() == Some(401) {
            Error::invalid(format!(
                "{}: Elasticsearch rejected the credentials ({}: {})",
                self.auth.source_hint(),
                e.kind(),
                e.reason()
            ))
        } else {
            Error::Api(e)
        }
    }

    /// Waits for `GET /` to answer with a known cluster UUID, retrying transient failures
    /// with backoff until `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<ClusterInfo> {
        let outcome = retry("Elasticsearch", Backoff::standard(timeout), || async {
            match self.get(&[], &[]).await {
                Ok(body) => {
                    let info = ClusterInfo::parse(&body);
                    if info.cluster_uuid.is_empty() || info.cluster_uuid == "_na_" {
                        Attempt::Retry(Error::failed(
                            "the cluster has not elected a master yet (cluster_uuid _na_)",
                        ))
                    } else {
                        Attempt::Ready(info)
                    }
                }
                Err(e) if e.is_transient() => Attempt::Retry(Error::Api(e)),
                Err(e) => Attempt::Fail(self.auth_error(e)),
            }
        })
        .await;
        match outcome {
            Ok(info) => Ok(info),
            Err(GaveUp::Failed(e)) => Err(e),
            Err(GaveUp::TimedOut(e)) => Err(Error::Context {
                context: format!(
                    "Elasticsearch at {} was not ready within {}",
                    self.url(),
                    humantime::format_duration(timeout)
                ),
                source: Box::new(e),
            }),
        }
    }

    /// `POST _nodes/reload_secure_settings`; the nodes that failed, as `name: type: reason`.
    pub async fn reload_secure_settings(&self) -> Result<Vec<String>> {
        let body = self.post(&["_nodes", "reload_secure_settings"], &[], None).await?;
        let mut failed = Vec::new();
        if let Some(nodes) = body.get("nodes").and_then(Value::as_object) {
            for (id, node) in nodes {
                if let Some(ex) = node.get("reload_exception") {
                    let name = node.get("name").and_then(Value::as_str).unwrap_or(id);
                    let kind = ex.get("type").and_then(Value::as_str).unwrap_or("error");
                    let reason = ex.get("reason").and_then(Value::as_str).unwrap_or("");
                    failed.push(format!("{name}: {kind}: {reason}"));
                }
            }
        }
        Ok(failed)
    }

    // ---- repositories -------------------------------------------------------------------

    /// `GET _snapshot/<repo>`: the repository (`{type, settings}`), or `None`.
    pub async fn get_repository(&self, repo: &str) -> Result<Option<Value>> {
        Ok(self
            .get_opt(&["_snapshot", repo], &[])
            .await?
            .and_then(|v| v.get(repo).cloned()))
    }

    /// `PUT _snapshot/<repo>?verify=false` (the explicit [`verify_repository`](Self::verify_repository)
    /// reports per node).
    pub async fn put_repository(&self, repo: &str, body: &Value) -> std::result::Result<(), ApiError> {
        self.put(&["_snapshot", repo], &[("verify", "false")], Some(body))
            .await
            .map(drop)
    }

    /// `POST _snapshot/<repo>/_verify`: the names of the nodes that verified it.
    pub async fn verify_repository(&self, repo: &str) -> std::result::Result<Vec<String>, ApiError> {
        let body = self.post(&["_snapshot", repo, "_verify"], &[], None).await?;
        Ok(body
            .get("nodes")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(id, n)| n.get("name").and_then(Value::as_str).unwrap_or(id).to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    // ---- SLM ----------------------------------------------------------------------------

    /// `GET _slm/policy/<id>`: the policy body, or `None`.
    pub async fn get_policy(&self, id: &str) -> Result<Option<Value>> {
        Ok(self
            .get_opt(&["_slm", "policy", id], &[])
            .await?
            .and_then(|v| v.get(id).and_then(|p| p.get("policy")).cloned()))
    }

    /// `GET _slm/policy/<id>`: the whole entry (policy, `last_success`, `last_failure`,
    /// `next_execution_millis`, stats), or `None`.
    pub async fn get_policy_entry(&self, id: &str) -> Result<Option<Value>> {
        Ok(self
            .get_opt(&["_slm", "policy", id], &[])
            .await?
            .and_then(|v| v.get(id).cloned()))
    }

    /// `GET _slm/status`: SLM's operation mode (`RUNNING`, `STOPPING`, `STOPPED`).
    pub async fn slm_status(&self) -> std::result::Result<String, ApiError> {
        let body = self.get(&["_slm", "status"], &[]).await?;
        Ok(body
            .get("operation_mode")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_string())
    }

    /// `GET _slm/stats`: SLM's counters, overall and per policy.
    pub async fn slm_stats(&self) -> std::result::Result<Value, ApiError> {
        self.get(&["_slm", "stats"], &[]).await
    }

    pub async fn put_policy(&self, id: &str, body: &Value) -> std::result::Result<(), ApiError> {
        self.put(&["_slm", "policy", id], &[], Some(body)).await.map(drop)
    }

    /// `PUT _slm/policy/<id>/_execute`: the name of the snapshot it started.
    pub async fn execute_policy(&self, id: &str) -> Result<String> {
        let body = self.put(&["_slm", "policy", id, "_execute"], &[], None).await?;
        body.get("snapshot_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::failed(format!("_execute did not return a snapshot_name: {body}")))
    }

    // ---- snapshots ----------------------------------------------------------------------

    /// `GET _snapshot/<repo>/_all?index_details=true`: every snapshot with per-index sizes.
    pub async fn get_snapshots(&self, repo: &str) -> std::result::Result<Vec<SnapshotInfo>, ApiError> {
        let body = self
            .get(&["_snapshot", repo, "_all"], &[("index_details", "true")])
            .await?;
        parse_snapshots(&body, "GET", &format!("/_snapshot/{repo}/_all"))
    }

    /// `GET _snapshot/<repo>/<snapshot>?index_details=true`, or `None` when it does not exist.
    pub async fn get_snapshot(
        &self,
        repo: &str,
        snapshot: &str,
    ) -> std::result::Result<Option<SnapshotInfo>, ApiError> {
        let (status, body) = self
            .request(
                Method::GET,
                &["_snapshot", repo, snapshot],
                &[("index_details", "true")],
                None,
                true,
            )
            .await?;
        if status == 404 {
            // A missing repository is an error, a missing snapshot is an answer.
            let (kind, reason) = error_type_reason(&body, status);
            if kind == "repository_missing_exception" {
                return Err(ApiError::Api {
                    method: "GET".into(),
                    path: format!("/_snapshot/{repo}/{snapshot}"),
                    status,
                    kind,
                    reason,
                });
            }
            return Ok(None);
        }
        Ok(parse_snapshots(&body, "GET", &format!("/_snapshot/{repo}/{snapshot}"))?
            .into_iter()
            .next())
    }

    /// `POST _snapshot/<repo>/<snapshot>/_restore?wait_for_completion=false`: starts a restore
    /// and returns once Elasticsearch accepted it.
    pub async fn start_restore(&self, repo: &str, snapshot: &str, body: &Value) -> std::result::Result<(), ApiError> {
        self.post(
            &["_snapshot", repo, snapshot, "_restore"],
            &[("wait_for_completion", "false")],
            Some(body),
        )
        .await
        .map(drop)
    }

    // ---- indices and data streams ---------------------------------------------------------

    /// `GET _cat/indices?expand_wildcards=all`: every index with its state and primaries.
    pub async fn indices(&self) -> std::result::Result<Vec<IndexRow>, ApiError> {
        let body = self
            .get(
                &["_cat", "indices"],
                &[
                    ("format", "json"),
                    ("h", "index,status,pri"),
                    ("expand_wildcards", "all"),
                ],
            )
            .await?;
        serde_json::from_value(body).map_err(|e| protocol("GET", "/_cat/indices", &e))
    }

    /// `GET _data_stream`: the data streams with their backing indices (empty on clusters
    /// without data streams, before 7.9).
    pub async fn data_streams(&self) -> std::result::Result<Vec<DataStream>, ApiError> {
        let body = match self.get(&["_data_stream"], &[]).await {
            Ok(b) => b,
            Err(e) if matches!(e.status(), Some(400 | 404)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Streams {
            #[serde(default)]
            data_streams: Vec<DataStream>,
        }
        let s: Streams = serde_json::from_value(body).map_err(|e| protocol("GET", "/_data_stream", &e))?;
        Ok(s.data_streams)
    }

    /// `GET _index_template`: the composable templates (name, patterns, data stream or not).
    pub async fn index_templates(&self) -> std::result::Result<Vec<IndexTemplate>, ApiError> {
        let body = match self.get(&["_index_template"], &[]).await {
            Ok(b) => b,
            Err(e) if e.status() == Some(404) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let templates = body
            .get("index_templates")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|t| IndexTemplate {
                        name: t.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                        patterns: t
                            .pointer("/index_template/index_patterns")
                            .map(strings)
                            .unwrap_or_default(),
                        data_stream: t.pointer("/index_template/data_stream").is_some(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(templates)
    }

    /// `POST <stream>/_rollover`: the new write index.
    pub async fn rollover(&self, stream: &str) -> std::result::Result<String, ApiError> {
        let body = self.post(&[stream, "_rollover"], &[], None).await?;
        Ok(body.get("new_index").and_then(Value::as_str).unwrap_or("?").to_string())
    }

    /// `DELETE <index>`; `false` when it was already gone.
    pub async fn delete_index(&self, index: &str) -> std::result::Result<bool, ApiError> {
        let (status, _) = self.request(Method::DELETE, &[index], &[], None, true).await?;
        Ok(status != 404)
    }

    /// `POST <index>/_close`.
    pub async fn close_index(&self, index: &str) -> std::result::Result<(), ApiError> {
        self.post(&[index, "_close"], &[], None).await.map(drop)
    }

    /// `POST <index>/_open`.
    pub async fn open_index(&self, index: &str) -> std::result::Result<(), ApiError> {
        self.post(&[index, "_open"], &[], None).await.map(drop)
    }

    /// `HEAD <index>`.
    pub async fn index_exists(&self, index: &str) -> std::result::Result<bool, ApiError> {
        let (status, _) = self.request(Method::HEAD, &[index], &[], None, true).await?;
        Ok(status != 404)
    }

    // ---- restore progress ---------------------------------------------------------------

    /// `GET _cat/shards/<indices>`: the primary shards of `indices` with their state.
    pub async fn primary_shards(&self, indices: &str) -> std::result::Result<Vec<ShardRow>, ApiError> {
        let body = self
            .get(
                &["_cat", "shards", indices],
                &[("format", "json"), ("h", "index,shard,prirep,state,unassigned.reason")],
            )
            .await?;
        let rows: Vec<ShardRow> = serde_json::from_value(body).map_err(|e| protocol("GET", "/_cat/shards", &e))?;
        Ok(rows.into_iter().filter(|r| r.prirep == "p").collect())
    }

    /// `GET <indices>/_recovery`: bytes recovered and total per index, over primary shards.
    pub async fn recovery(&self, indices: &str) -> std::result::Result<BTreeMap<String, (u64, u64)>, ApiError> {
        let body = self.get(&[indices, "_recovery"], &[]).await?;
        let mut out = BTreeMap::new();
        for (index, v) in body.as_object().into_iter().flatten() {
            let entry: &mut (u64, u64) = out.entry(index.clone()).or_default();
            for shard in v.get("shards").and_then(Value::as_array).into_iter().flatten() {
                if shard.get("primary").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                let n = |p: &str| shard.pointer(p).and_then(Value::as_u64).unwrap_or(0);
                entry.0 += n("/index/size/recovered_in_bytes");
                entry.1 += n("/index/size/total_in_bytes");
            }
        }
        Ok(out)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b"id:key"), "aWQ6a2V5");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn shows_type_and_reason() {
        let body = serde_json::json!({"error": {"type": "security_exception", "reason": "unable to authenticate",
            "caused_by": {"type": "x", "reason": "y"}}, "status": 401});
        assert_eq!(
            error_type_reason(&body, 401),
            (
                "security_exception".into(),
                "unable to authenticate (caused by x: y)".into()
            )
        );
        assert_eq!(error_type_reason(&Value::Null, 502).0, "http_502");
    }

    #[test]
    fn auth_sources() {
        assert!(matches!(
            EsAuth::from_sources(None, None, None, None, None),
            Ok(EsAuth::None)
        ));
        let a = EsAuth::from_sources(Some("u".into()), Some("p".into()), None, None, None).unwrap();
        assert!(!format!("{a:?}").contains('p') || format!("{a:?}").contains("redacted"));
        assert!(EsAuth::from_sources(Some("u".into()), None, None, None, None).is_err());
        match EsAuth::from_sources(None, None, None, Some("id:key".into()), None).unwrap() {
            EsAuth::ApiKey(k) => assert_eq!(k, "aWQ6a2V5"),
            other => panic!("{other:?}"),
        }
    }
}
