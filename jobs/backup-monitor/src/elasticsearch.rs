//! What Elasticsearch says about its snapshots: the repository's snapshots by state, the SLM
//! policy's schedule, last success and failure, and SLM's own counters. Read-only: the
//! monitor sends only GET requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("Elasticsearch at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Elasticsearch answered {status} to GET {path}: {body}")]
    Status { status: u16, path: String, body: String },
    #[error("--es-ca-bundle / credentials: {0}")]
    Setup(String),
}

/// How to reach Elasticsearch (the same env names as `es-snapshot-register`).
#[derive(Debug, Clone, clap::Args)]
pub struct EsArgs {
    /// Elasticsearch URL.
    #[arg(
        long,
        env = "ELASTICSEARCH_ENDPOINT",
        default_value = "http://localhost:9200",
        value_name = "URL"
    )]
    pub es_url: String,
    /// Basic-auth user (the password comes from ES_PASSWORD_FILE or ES_PASSWORD).
    #[arg(long, env = "ES_USERNAME")]
    pub es_username: Option<String>,
    /// File holding the basic-auth password.
    #[arg(long, env = "ES_PASSWORD_FILE", value_name = "FILE")]
    pub es_password_file: Option<PathBuf>,
    /// File holding an API key (`id:key` or its base64 form).
    #[arg(long, env = "ES_API_KEY_FILE", value_name = "FILE")]
    pub es_api_key_file: Option<PathBuf>,
    /// PEM bundle of extra CA certificates for TLS to Elasticsearch.
    #[arg(long, env = "ES_CA_BUNDLE", value_name = "FILE")]
    pub es_ca_bundle: Option<PathBuf>,
}

/// SLM's counters for the policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SlmCounters {
    pub taken: u64,
    pub failed: u64,
    pub deleted: u64,
}

/// One look at Elasticsearch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EsState {
    /// SLM's operation mode is RUNNING (not STOPPING/STOPPED).
    pub slm_running: bool,
    /// The repository could be listed (it exists and its storage answers).
    pub repository_up: bool,
    /// Snapshots in the repository by state (SUCCESS, PARTIAL, FAILED, IN_PROGRESS, ...).
    pub snapshots: BTreeMap<String, usize>,
    /// End of the newest SUCCESS snapshot.
    pub last_success: Option<DateTime<Utc>>,
    /// The newest failure: SLM's `last_failure` or the end of the newest FAILED/PARTIAL snapshot.
    pub last_failure: Option<DateTime<Utc>>,
    /// The policy's Quartz schedule, when the policy exists.
    pub schedule: Option<String>,
    pub slm: Option<SlmCounters>,
}

pub struct EsClient {
    http: reqwest::Client,
    url: String,
    auth: Option<Auth>,
}

enum Auth {
    Basic(String, String),
    ApiKey(String),
}

fn read_secret(path: &PathBuf) -> Result<String, EsError> {
    let text = std::fs::read_to_string(path).map_err(|e| EsError::Setup(format!("{}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

impl EsClient {
    pub fn new(args: &EsArgs, timeout: Duration) -> Result<EsClient, EsError> {
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(ca) = &args.es_ca_bundle {
            let pem = std::fs::read(ca).map_err(|e| EsError::Setup(format!("{}: {e}", ca.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| EsError::Setup(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let auth = if let Some(file) = &args.es_api_key_file {
            Some(Auth::ApiKey(read_secret(file)?))
        } else if let Ok(key) = std::env::var("ES_API_KEY") {
            Some(Auth::ApiKey(key.trim().to_string()))
        } else if let Some(user) = &args.es_username {
            let password = match &args.es_password_file {
                Some(file) => read_secret(file)?,
                None => std::env::var("ES_PASSWORD").unwrap_or_default(),
            };
            Some(Auth::Basic(user.clone(), password))
        } else {
            None
        };
        let http = builder.build().map_err(|e| EsError::Setup(e.to_string()))?;
        Ok(EsClient {
            http,
            url: args.es_url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// GET `path`; `Ok(None)` for 404.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, EsError> {
        let mut req = self.http.get(format!("{}{path}", self.url));
        req = match &self.auth {
            Some(Auth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            Some(Auth::ApiKey(k)) => {
                let key = if k.contains(':') {
                    base64_encode(k.as_bytes())
                } else {
                    k.clone()
                };
                req.header("Authorization", format!("ApiKey {key}"))
            }
            None => req,
        };
        let resp = req.send().await.map_err(|e| EsError::Unreachable {
            url: self.url.clone(),
            reason: without_url(&e),
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = resp.text().await.map_err(|e| EsError::Unreachable {
            url: self.url.clone(),
            reason: without_url(&e),
        })?;
        if !status.is_success() {
            return Err(EsError::Status {
                status: status.as_u16(),
                path: path.to_string(),
                body: body.chars().take(300).collect(),
            });
        }
        serde_json::from_str(&body).map(Some).map_err(|e| EsError::Status {
            status: status.as_u16(),
            path: path.to_string(),
            body: format!("unexpected body: {e}"),
        })
    }

    /// Reads the state of `repository` and `policy`. An error means Elasticsearch itself
    /// could not be asked; a missing repository or policy is reported in the state.
    pub async fn observe(&self, repository: &str, policy: &str) -> Result<EsState, EsError> {
        let mut state = EsState::default();
        let status: Option<SlmStatus> = self.get("/_slm/status").await?;
        state.slm_running = status.is_some_and(|s| s.operation_mode == "RUNNING");

        let policies: Option<BTreeMap<String, PolicyEntry>> = self.get(&format!("/_slm/policy/{policy}")).await?;
        let entry = policies.and_then(|mut p| p.remove(policy));
        if let Some(entry) = &entry {
            state.schedule = Some(entry.policy.schedule.clone());
        }
        let slm_failure = entry
            .as_ref()
            .and_then(|e| e.last_failure.as_ref())
            .and_then(|f| millis(f.time));

        let stats: Option<SlmStats> = self.get("/_slm/stats").await?;
        state.slm = stats.and_then(|s| {
            s.policy_stats
                .into_iter()
                .find(|p| p.policy == policy)
                .map(|p| SlmCounters {
                    taken: p.snapshots_taken,
                    failed: p.snapshots_failed,
                    deleted: p.snapshots_deleted,
                })
        });

        match self.get::<SnapshotList>(&format!("/_snapshot/{repository}/_all")).await {
            Ok(Some(list)) => {
                state.repository_up = true;
                let mut newest_failure = None;
                for snap in list.snapshots {
                    *state.snapshots.entry(snap.state.clone()).or_default() += 1;
                    let end = snap.end_time_in_millis.or(snap.start_time_in_millis).and_then(millis);
                    match snap.state.as_str() {
                        "SUCCESS" => state.last_success = state.last_success.max(end),
                        "FAILED" | "PARTIAL" => newest_failure = newest_failure.max(end),
                        _ => {}
                    }
                }
                state.last_failure = slm_failure.max(newest_failure);
            }
            // A missing repository, or one whose storage fails (ES answers 500 with a
            // repository_exception): the repository is down, Elasticsearch is not.
            Ok(None) | Err(EsError::Status { .. }) => {
                state.repository_up = false;
                state.last_failure = slm_failure;
            }
            Err(e) => return Err(e),
        }
        Ok(state)
    }
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// reqwest's error text carries the URL; keep one line with the reason only.
fn without_url(e: &reqwest::Error) -> String {
    let mut reason = String::from(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    reason.replace('\n', " ")
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct SlmStatus {
    operation_mode: String,
}

#[derive(Deserialize)]
struct PolicyEntry {
    policy: PolicyBody,
    last_failure: Option<Invocation>,
}

#[derive(Deserialize)]
struct PolicyBody {
    schedule: String,
}

#[derive(Deserialize)]
struct Invocation {
    time: i64,
}

#[derive(Deserialize)]
struct SlmStats {
    #[serde(default)]
    policy_stats: Vec<PolicyStats>,
}

#[derive(Deserialize)]
struct PolicyStats {
    policy: String,
    #[serde(default)]
    snapshots_taken: u64,
    #[serde(default)]
    snapshots_failed: u64,
    #[serde(default)]
    snapshots_deleted: u64,
}

#[derive(Deserialize)]
struct SnapshotList {
    snapshots: Vec<SnapshotInfo>,
}

#[derive(Deserialize)]
struct SnapshotInfo {
    state: String,
    start_time_in_millis: Option<i64>,
    end_time_in_millis: Option<i64>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64_encode(b"id:key"), "aWQ6a2V5");
        assert_eq!(super::base64_encode(b"a"), "YQ==");
        assert_eq!(super::base64_encode(b"ab"), "YWI=");
    }
}
