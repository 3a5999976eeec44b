//! A small Elasticsearch REST client over reqwest (rustls): basic auth or API key, an extra
//! CA bundle, errors shown as `type: reason`, and a bounded wait for the cluster to answer.
//! Credentials never reach a log line or an error message.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::error::Error;

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

fn read_secret(path: &PathBuf, flag: &str) -> crate::Result<String> {
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
    ) -> crate::Result<EsAuth> {
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
pub(crate) fn base64(data: &[u8]) -> String {
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
pub enum EsError {
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

impl EsError {
    /// Worth another try while waiting for the cluster to come up.
    pub fn is_transient(&self) -> bool {
        match self {
            EsError::Unreachable { .. } => true,
            EsError::Api { status, kind, .. } => {
                matches!(status, 429 | 502 | 503 | 504)
                    || kind.contains("master_not_discovered")
                    || kind.contains("cluster_block")
            }
            EsError::Protocol { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            EsError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            EsError::Api { kind, .. } => kind,
            _ => "",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            EsError::Api { reason, .. } => reason,
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
    pub fn major(&self) -> u32 {
        self.version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct EsClient {
    http: reqwest::Client,
    base: Url,
    auth: EsAuth,
}

impl EsClient {
    pub fn new(config: &EsConfig) -> crate::Result<EsClient> {
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
            .user_agent(crate::TOOL);
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
    /// and the JSON body (Null when empty) for 2xx, and an [`EsError`] otherwise, except that a
    /// 404 is returned as `Ok((404, body))` when `allow_404`.
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        allow_404: bool,
    ) -> Result<(u16, Value), EsError> {
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
        let resp = req.send().await.map_err(|e| EsError::Unreachable {
            url: self.url(),
            detail: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| EsError::Unreachable {
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
        Err(EsError::Api {
            method: method.to_string(),
            path: shown_path,
            status,
            kind,
            reason,
        })
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Value, EsError> {
        Ok(self.request(Method::GET, segments, query, None, false).await?.1)
    }

    /// GET that maps 404 to `None`.
    pub async fn get_opt(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Option<Value>, EsError> {
        let (status, body) = self.request(Method::GET, segments, query, None, true).await?;
        Ok(if status == 404 { None } else { Some(body) })
    }

    pub async fn put(&self, segments: &[&str], query: &[(&str, &str)], body: &Value) -> Result<Value, EsError> {
        Ok(self.request(Method::PUT, segments, query, Some(body), false).await?.1)
    }

    pub async fn post(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, EsError> {
        Ok(self.request(Method::POST, segments, query, body, false).await?.1)
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, EsError> {
        Ok(self.request(Method::DELETE, segments, &[], None, false).await?.1)
    }

    /// HEAD: true on 2xx, false on 404.
    pub async fn exists(&self, segments: &[&str]) -> Result<bool, EsError> {
        let (status, _) = self.request(Method::HEAD, segments, &[], None, true).await?;
        Ok(status != 404)
    }

    /// `GET /`, converting authentication failures into invalid-input errors (exit 2): the
    /// credentials are configuration, and nothing has been changed yet.
    pub async fn info(&self) -> anyhow::Result<ClusterInfo> {
        let body = self.get(&[], &[]).await.map_err(|e| self.auth_error(e))?;
        Ok(Self::parse_info(&body))
    }

    fn parse_info(body: &Value) -> ClusterInfo {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        ClusterInfo {
            cluster_name: s(body.get("cluster_name")),
            cluster_uuid: s(body.get("cluster_uuid")),
            version: s(body.pointer("/version/number")),
        }
    }

    fn auth_error(&self, e: EsError) -> anyhow::Error {
        if e.status() == Some(401) {
            anyhow::Error::new(Error::invalid(format!(
                "{}: Elasticsearch rejected the credentials ({}: {})",
                self.auth.source_hint(),
                e.kind(),
                e.reason()
            )))
        } else {
            anyhow::Error::new(e)
        }
    }

    /// Waits for `GET /` to answer with a known cluster UUID, retrying transient failures with
    /// exponential backoff (250 ms doubling to 5 s) until `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<ClusterInfo> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(250);
        loop {
            let err: anyhow::Error = match self.get(&[], &[]).await {
                Ok(body) => {
                    let info = Self::parse_info(&body);
                    if info.cluster_uuid.is_empty() || info.cluster_uuid == "_na_" {
                        anyhow::anyhow!("the cluster has not elected a master yet (cluster_uuid _na_)")
                    } else {
                        return Ok(info);
                    }
                }
                Err(e) if e.is_transient() => anyhow::Error::new(e),
                Err(e) => return Err(self.auth_error(e)),
            };
            if Instant::now() + delay > deadline {
                return Err(err.context(format!(
                    "Elasticsearch at {} was not ready within {}",
                    self.url(),
                    humantime::format_duration(timeout)
                )));
            }
            tracing::warn!("waiting for Elasticsearch: {err:#}; retrying in {:?}", delay);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
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
