//! `register`: the S3 snapshot repository and the SLM policy, idempotently.
//!
//! Steps: validate everything (no request yet) → wait for Elasticsearch and the bucket →
//! guard against two writers → repository (diff, PUT only when it changes) → `_verify` →
//! SLM policy (diff, PUT only when it changes) → optionally run the policy once and wait.
//!
//! Two writers corrupt a repository (es#89130), so a writable registration is guarded by an
//! owner marker `sts-backup-owner.json` at the repository root (bucket + base path) holding
//! the cluster UUID of the writer:
//! - marker of another cluster → refused (exit 3) unless `--take-over`;
//! - no marker but the location already holds a repository (`index.latest`) that this
//!   cluster has not registered as writable → refused (exit 3) unless `--take-over`;
//! - an existing read-only registration is never turned writable without `--take-over`;
//! - `--readonly` never writes the marker nor creates the bucket, and sends no SLM policy.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use sts_backup_core::storage::{Addressing, S3Keys, Sse, Storage, StorageArgs, StorageError};

use crate::client::{ClusterInfo, EsClient};
use crate::error::{Context, Error, Result};
use crate::retry::{retry, Attempt, Backoff, GaveUp};
use crate::validate::{
    validate_cron, validate_expire_after, validate_name, validate_retention, validate_snapshot_name, IndexPattern,
};

/// The object that records which cluster writes to a repository location.
pub const OWNER_MARKER: &str = "sts-backup-owner.json";

/// Settings Elasticsearch hides in `GET _snapshot` (settings filter); never printed.
const SECRET_SETTINGS: &[&str] = &["access_key", "secret_key", "session_token"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialsMode {
    /// `access_key`/`secret_key` in the repository settings (ES 7.x with
    /// `-Des.allow_insecure_settings=true` only).
    Inline,
    /// Only `client: <name>`; keys live in the ES keystore as `s3.client.<name>.*`.
    Keystore,
}

#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub repository: String,
    pub bucket: String,
    pub base_path: Option<String>,
    pub credentials: CredentialsMode,
    pub s3_client: String,
    pub policy: String,
    pub schedule: String,
    pub snapshot_name: String,
    pub indices: String,
    pub expire_after: String,
    pub min_count: u32,
    pub max_count: u32,
    pub no_policy: bool,
    pub execute_now: bool,
    pub create_bucket: bool,
    pub readonly: bool,
    pub take_over: bool,
    /// How long to wait for Elasticsearch and the bucket to answer.
    pub wait_timeout: Duration,
    /// How long `--execute-now` waits for the snapshot.
    pub snapshot_timeout: Duration,
    /// S3 access for the bucket check (endpoint, region, addressing, credentials, CA, SSE);
    /// its `storage` field is replaced by `s3://<bucket>[/<base_path>]`.
    pub s3: StorageArgs,
}

/// What register did: the binary prints `steps` and a summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegisterReport {
    /// What was created, changed, left unchanged and verified, in order (diff lines indented).
    pub steps: Vec<String>,
    pub repository_changed: bool,
    pub policy_changed: bool,
    pub snapshot: Option<String>,
}

impl RegisterOptions {
    fn base_path(&self) -> Option<String> {
        self.base_path
            .as_deref()
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty())
    }

    /// Every check that needs no network. Errors name the flag (exit 2).
    pub fn validate(&self) -> Result<()> {
        validate_name("--repository", &self.repository)?;
        validate_name("--policy", &self.policy)?;
        sts_backup_core::storage::StorageUrl::parse(&format!("s3://{}", self.bucket))
            .map_err(|e| Error::invalid(format!("--bucket: {}", e.to_string().trim_start_matches("--storage: "))))?;
        if let Some(p) = self.base_path() {
            if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                return Err(Error::invalid(format!(
                    "--base-path: {p:?} must not contain empty, '.' or '..' segments"
                )));
            }
        }
        if let Some(e) = &self.s3.s3_endpoint {
            endpoint_parts(e)?;
        }
        sse_enabled(&self.s3.sse)?;
        if self.credentials == CredentialsMode::Keystore && self.s3_client.trim().is_empty() {
            return Err(Error::invalid("--s3-client: must not be empty in keystore mode"));
        }
        if self.credentials == CredentialsMode::Inline {
            inline_keys(&self.s3)?;
        }
        if self.execute_now && (self.no_policy || self.readonly) {
            return Err(Error::invalid(
                "--execute-now: needs the SLM policy; it cannot be combined with --no-policy or --readonly",
            ));
        }
        if self.readonly && self.create_bucket {
            return Err(Error::invalid(
                "--create-bucket: a --readonly repository attaches existing snapshots; it never creates the bucket",
            ));
        }
        if self.policy_wanted() {
            validate_cron(&self.schedule)?;
            validate_snapshot_name(&self.snapshot_name)?;
            IndexPattern::parse(&self.indices, "--indices")?;
            validate_expire_after(&self.expire_after)?;
            validate_retention(self.min_count, self.max_count)?;
        }
        Ok(())
    }

    fn policy_wanted(&self) -> bool {
        !self.no_policy && !self.readonly
    }

    fn storage_args(&self) -> StorageArgs {
        let mut args = self.s3.clone();
        args.storage = match self.base_path() {
            Some(p) => format!("s3://{}/{p}", self.bucket),
            None => format!("s3://{}", self.bucket),
        };
        args
    }

    /// The repository body this configuration asks for.
    pub fn repository_body(&self) -> Result<Value> {
        let mut s = Map::new();
        s.insert("bucket".into(), json!(self.bucket));
        if let Some(endpoint) = &self.s3.s3_endpoint {
            let (protocol, host) = endpoint_parts(endpoint)?;
            s.insert("endpoint".into(), json!(host));
            s.insert("protocol".into(), json!(protocol));
        }
        s.insert(
            "path_style_access".into(),
            json!(self.s3.s3_addressing == Addressing::Path),
        );
        s.insert("region".into(), json!(self.s3.region));
        if let Some(p) = self.base_path() {
            s.insert("base_path".into(), json!(p));
        }
        if sse_enabled(&self.s3.sse)? {
            s.insert("server_side_encryption".into(), json!(true));
        }
        if self.readonly {
            s.insert("readonly".into(), json!(true));
        }
        match self.credentials {
            CredentialsMode::Inline => {
                let (access, secret) = inline_keys(&self.s3)?;
                s.insert("access_key".into(), json!(access));
                s.insert("secret_key".into(), json!(secret));
            }
            CredentialsMode::Keystore => {
                s.insert("client".into(), json!(self.s3_client));
            }
        }
        Ok(json!({"type": "s3", "settings": Value::Object(s)}))
    }

    /// The SLM policy body (counts as integers, indices as one pattern string).
    pub fn policy_body(&self) -> Value {
        json!({
            "schedule": self.schedule,
            "name": self.snapshot_name,
            "repository": self.repository,
            "config": {
                "indices": self.indices,
                "ignore_unavailable": false,
                "include_global_state": false
            },
            "retention": {
                "expire_after": self.expire_after,
                "min_count": self.min_count,
                "max_count": self.max_count
            }
        })
    }
}

/// `http://host:9000` → (`http`, `host:9000`): the repository wants them apart.
fn endpoint_parts(endpoint: &str) -> Result<(String, String)> {
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(|| {
        Error::invalid(format!(
            "--s3-endpoint: {endpoint:?} must start with http:// or https://"
        ))
    })?;
    if !matches!(scheme, "http" | "https") {
        return Err(Error::invalid(format!(
            "--s3-endpoint: {endpoint:?} must start with http:// or https://"
        )));
    }
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '@', '?']) {
        return Err(Error::invalid(format!(
            "--s3-endpoint: {endpoint:?} must be scheme://host[:port] without a path or credentials"
        )));
    }
    Ok((scheme.to_string(), host.to_string()))
}

/// SSE-S3 or none (the core's one SSE rule); SSE-KMS is refused there.
fn sse_enabled(sse: &str) -> Result<bool> {
    Ok(Sse::parse(sse).map_err(|e| Error::invalid(e.to_string()))? == Sse::Aes256)
}

/// The S3 keys for `--credentials inline`, read by the core's one credentials reader (the
/// credentials directory, else the AWS env; trimmed and checked there).
fn inline_keys(args: &StorageArgs) -> Result<(String, String)> {
    match S3Keys::read(args.credentials_dir.as_deref()).map_err(|e| Error::invalid(e.to_string()))? {
        Some(keys) => Ok((keys.access_key_id, keys.secret_access_key)),
        None => Err(Error::invalid(
            "--credentials: inline needs the S3 keys from --credentials-dir or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        )),
    }
}

/// Flattens JSON into `a.b.c → string` (arrays joined by commas) so that what Elasticsearch
/// returns (settings as strings) compares with what we send (booleans, numbers).
pub fn flatten(value: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.insert(prefix.to_string(), parts.join(","));
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            Value::Null => {}
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

fn is_secret(key: &str) -> bool {
    SECRET_SETTINGS.iter().any(|s| key.ends_with(s))
}

/// Diff lines between what exists and what we want. Secrets that the existing side does not
/// show (Elasticsearch filters them) are not compared; secret values are never printed.
pub fn diff(existing: &BTreeMap<String, String>, desired: &BTreeMap<String, String>) -> Vec<String> {
    let show = |k: &str, v: &str| {
        if is_secret(k) {
            "(hidden)".to_string()
        } else {
            format!("{v:?}")
        }
    };
    let mut lines = Vec::new();
    for (k, v) in desired {
        match existing.get(k) {
            None if is_secret(k) && !existing.is_empty() => {}
            None => lines.push(format!("  + {k}: {}", show(k, v))),
            Some(old) if old != v => lines.push(format!("  ~ {k}: {} -> {}", show(k, old), show(k, v))),
            Some(_) => {}
        }
    }
    for (k, v) in existing {
        if !desired.contains_key(k) {
            lines.push(format!("  - {k}: {}", show(k, v)));
        }
    }
    lines
}

/// Opens the bucket and waits for it to answer (creating it with `--create-bucket`).
async fn wait_storage(opts: &RegisterOptions, report: &mut RegisterReport) -> Result<Storage> {
    let storage = Storage::open(&opts.storage_args())
        .await
        .map_err(|e| Error::invalid(e.to_string()))?;
    let bucket = &opts.bucket;
    let created = retry("the storage", Backoff::standard(opts.wait_timeout), || async {
        match storage.check(false).await {
            Ok(()) => Attempt::Ready(false),
            Err(StorageError::NoSuchBucket { .. }) if opts.create_bucket => {
                tracing::info!("bucket {bucket:?} does not exist; creating it (--create-bucket)");
                match storage.create_bucket().await {
                    Ok(()) => Attempt::Ready(true),
                    Err(e @ StorageError::Unreachable { .. }) => Attempt::Retry(Error::Storage(e)),
                    Err(e) => Attempt::Fail(Error::invalid(format!("--bucket: cannot create {bucket:?}: {e}"))),
                }
            }
            Err(StorageError::NoSuchBucket { .. }) => Attempt::Fail(Error::invalid(format!(
                "--bucket: bucket {bucket:?} does not exist, so Elasticsearch snapshots and restores cannot work; \
                 create it, or run with --create-bucket (the chart sets it when scheduled snapshots are on)"
            ))),
            Err(e @ StorageError::Unreachable { .. }) => Attempt::Retry(Error::Storage(e)),
            Err(e @ (StorageError::AccessDenied { .. } | StorageError::Invalid(_))) => {
                Attempt::Fail(Error::invalid(format!("--credentials-dir: {e}")))
            }
            Err(e) => Attempt::Fail(Error::Context {
                context: format!("checking bucket {bucket:?}"),
                source: Box::new(Error::Storage(e)),
            }),
        }
    })
    .await
    .map_err(GaveUp::into_inner)?;
    if created {
        report.steps.push(format!("bucket {bucket:?}: created"));
    }
    Ok(storage)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OwnerMarker {
    cluster_uuid: String,
    cluster_name: String,
    repository: String,
    registered_at: String,
    tool: String,
}

/// What this cluster already has registered under the repository name.
struct Existing {
    flat: BTreeMap<String, String>,
    present: bool,
    same_location: bool,
    readonly: bool,
}

/// The two-writers guard (see the module docs). Returns whether the marker must be written.
async fn check_owner(
    opts: &RegisterOptions,
    storage: &Storage,
    cluster: &ClusterInfo,
    here: &Existing,
) -> Result<bool> {
    let location = storage.location();
    let marker = match storage.get_bytes(OWNER_MARKER, 64 * 1024).await {
        Ok(bytes) => Some(
            serde_json::from_slice::<OwnerMarker>(&bytes)
                .map_err(|e| Error::failed(format!("{location}/{OWNER_MARKER} is not an owner marker: {e}")))?,
        ),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let take_over_hint = "register it with --readonly to restore from it, or use --take-over once that cluster \
                          no longer writes there (two writers corrupt a repository)";
    if here.present && here.readonly && !opts.take_over {
        return Err(Error::refused(format!(
            "repository {:?} is registered read-only in this cluster (attached from another cluster); refusing to make \
             it writable: keep --readonly, or use --take-over if this cluster should become the only writer",
            opts.repository
        )));
    }
    match marker {
        Some(m) if m.cluster_uuid == cluster.cluster_uuid => Ok(false),
        Some(m) if opts.take_over => {
            tracing::warn!(
                "--take-over: {location} was written by cluster {:?} ({}); this cluster ({}) takes over",
                m.cluster_name,
                m.cluster_uuid,
                cluster.cluster_uuid
            );
            Ok(true)
        }
        Some(m) => Err(Error::refused(format!(
            "{location} belongs to cluster {:?} (uuid {}), not this one ({}); {take_over_hint}",
            m.cluster_name, m.cluster_uuid, cluster.cluster_uuid
        ))),
        None if (here.present && here.same_location && !here.readonly) || opts.take_over => Ok(true),
        None if storage.head("index.latest").await?.is_some() => Err(Error::refused(format!(
            "{location} already holds an Elasticsearch snapshot repository that this cluster did not register; \
             {take_over_hint}"
        ))),
        None => Ok(true),
    }
}

/// Records this cluster as the writer of the location (see the module docs).
async fn write_owner_marker(opts: &RegisterOptions, storage: &Storage, cluster: &ClusterInfo) -> Result<()> {
    let marker = OwnerMarker {
        cluster_uuid: cluster.cluster_uuid.clone(),
        cluster_name: cluster.cluster_name.clone(),
        repository: opts.repository.clone(),
        registered_at: chrono::Utc::now().to_rfc3339(),
        tool: sts_backup_core::TOOL.to_string(),
    };
    let body =
        serde_json::to_vec_pretty(&marker).map_err(|e| Error::failed(format!("encoding the owner marker: {e}")))?;
    storage.put_bytes(OWNER_MARKER, Bytes::from(body)).await?;
    tracing::info!("{}/{OWNER_MARKER}: this cluster is the writer", storage.location());
    Ok(())
}

/// Runs the whole registration: connect → bucket → owner guard → repository → policy.
pub async fn register(client: &EsClient, opts: &RegisterOptions) -> Result<RegisterReport> {
    opts.validate()?;
    let mut report = RegisterReport::default();
    let desired_repo = opts.repository_body()?;
    let cluster = connect(client, opts).await?;
    let storage = wait_storage(opts, &mut report).await?;
    tracing::info!("bucket {:?} is reachable", opts.bucket);

    let repo = opts.repository.as_str();
    let existing = client.get_repository(repo).await?;
    let desired_flat = flatten(&desired_repo);
    let flat = existing.as_ref().map(flatten).unwrap_or_default();
    let here = Existing {
        present: existing.is_some(),
        same_location: flat.get("settings.bucket") == desired_flat.get("settings.bucket")
            && flat.get("settings.base_path") == desired_flat.get("settings.base_path"),
        readonly: flat.get("settings.readonly").is_some_and(|v| v == "true"),
        flat,
    };
    if !opts.readonly && check_owner(opts, &storage, &cluster, &here).await? {
        write_owner_marker(opts, &storage, &cluster).await?;
    }
    if opts.credentials == CredentialsMode::Keystore {
        reload_secure_settings(client).await?;
    }
    ensure_repository(client, opts, &here, &desired_repo, &mut report).await?;

    if opts.readonly {
        tracing::info!("--readonly: no SLM policy for an attached repository");
    } else if opts.no_policy {
        if client.get_policy(&opts.policy).await?.is_some() {
            tracing::warn!(
                "--no-policy: SLM policy {:?} exists and keeps taking snapshots; delete it with DELETE _slm/policy/{} \
                 if scheduled snapshots are off",
                opts.policy,
                opts.policy
            );
        }
    } else {
        report.policy_changed = ensure_policy(client, opts, &mut report).await?;
        if opts.execute_now {
            report.snapshot = Some(execute_now(client, opts, &mut report).await?);
        }
    }
    Ok(report)
}

/// Waits for the cluster and refuses what it cannot take (inline keys on 8.x).
async fn connect(client: &EsClient, opts: &RegisterOptions) -> Result<ClusterInfo> {
    let cluster = client.wait_ready(opts.wait_timeout).await?;
    tracing::info!(
        "Elasticsearch {} cluster {:?} ({}) at {}",
        cluster.version,
        cluster.cluster_name,
        cluster.cluster_uuid,
        client.url()
    );
    if opts.credentials == CredentialsMode::Inline && cluster.major() >= 8 {
        return Err(Error::invalid(format!(
            "--credentials: inline S3 keys in repository settings were removed in Elasticsearch 8 (this is {}); \
             use --credentials keystore",
            cluster.version
        )));
    }
    Ok(cluster)
}

/// Diff → PUT only when it changes → `_verify` (re-sending inline keys once if they rotated).
async fn ensure_repository(
    client: &EsClient,
    opts: &RegisterOptions,
    here: &Existing,
    desired: &Value,
    report: &mut RegisterReport,
) -> Result<()> {
    let repo = opts.repository.as_str();
    let desired_flat = flatten(desired);
    let changes = diff(&here.flat, &desired_flat);
    let put_repo = !here.present || !changes.is_empty();
    if !here.present {
        report.steps.push(format!("repository {repo:?}: create"));
        report.steps.extend(diff(&BTreeMap::new(), &desired_flat));
    } else if changes.is_empty() {
        report.steps.push(format!("repository {repo:?}: unchanged"));
    } else {
        report.steps.push(format!("repository {repo:?}: update"));
        report.steps.extend(changes);
    }
    if put_repo {
        put_repository(client, repo, desired).await?;
        report.repository_changed = true;
    }
    match verify(client, repo).await {
        Ok(line) => report.steps.push(line),
        // Inline keys are hidden by GET, so a rotated key shows up here: send them again.
        Err(e) if !put_repo && opts.credentials == CredentialsMode::Inline => {
            tracing::warn!("verification failed ({e}); re-sending the repository with the current S3 keys");
            report.steps.push(format!("repository {repo:?}: update (S3 keys)"));
            put_repository(client, repo, desired).await?;
            report.repository_changed = true;
            report.steps.push(verify(client, repo).await?);
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn put_repository(client: &EsClient, repo: &str, body: &Value) -> Result<()> {
    client
        .put_repository(repo, body)
        .await
        .with_context(|| format!("registering repository {repo:?}"))?;
    tracing::info!("repository {repo:?} registered");
    Ok(())
}

async fn reload_secure_settings(client: &EsClient) -> Result<()> {
    let failed = client.reload_secure_settings().await?;
    if !failed.is_empty() {
        return Err(Error::failed(format!(
            "reloading the keystore failed on node(s): {}",
            failed.join("; ")
        )));
    }
    tracing::info!("keystore secure settings reloaded on all nodes");
    Ok(())
}

/// `_verify`, naming the nodes that failed; the line to report on success.
async fn verify(client: &EsClient, repo: &str) -> Result<String> {
    match client.verify_repository(repo).await {
        Ok(names) => Ok(format!(
            "repository {repo:?}: verified on {} node(s): {}",
            names.len(),
            names.join(", ")
        )),
        Err(e) => {
            let nodes = failed_nodes(e.reason());
            let what = if nodes.is_empty() {
                format!("repository {repo:?} failed verification")
            } else {
                format!(
                    "repository {repo:?} failed verification on node(s) {}",
                    nodes.join(", ")
                )
            };
            Err(e).context(what)
        }
    }
}

/// Node ids in a `repository_verification_exception` reason: `[repo] [[id, 'msg'], [id2, 'msg']]`.
pub fn failed_nodes(reason: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"\[([A-Za-z0-9_\-]+), '").expect("valid regex"));
    re.captures_iter(reason).map(|c| c[1].to_string()).collect()
}

async fn ensure_policy(client: &EsClient, opts: &RegisterOptions, report: &mut RegisterReport) -> Result<bool> {
    let id = opts.policy.as_str();
    let desired = opts.policy_body();
    let desired_flat = flatten(&desired);
    match client.get_policy(id).await? {
        None => {
            report.steps.push(format!("policy {id:?}: create"));
            report.steps.extend(diff(&BTreeMap::new(), &desired_flat));
        }
        Some(old) => {
            let changes = diff(&flatten(&old), &desired_flat);
            if changes.is_empty() {
                report.steps.push(format!("policy {id:?}: unchanged"));
                return Ok(false);
            }
            report.steps.push(format!("policy {id:?}: update"));
            report.steps.extend(changes);
        }
    }
    client
        .put_policy(id, &desired)
        .await
        .with_context(|| format!("writing SLM policy {id:?}"))?;
    tracing::info!("SLM policy {id:?} written");
    Ok(true)
}

/// Runs the policy once and waits for its snapshot to end.
async fn execute_now(client: &EsClient, opts: &RegisterOptions, report: &mut RegisterReport) -> Result<String> {
    let id = opts.policy.as_str();
    let name = client
        .execute_policy(id)
        .await
        .with_context(|| format!("running SLM policy {id:?}"))?;
    report.steps.push(format!("snapshot {name:?}: started"));
    let backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(10),
        timeout: opts.snapshot_timeout,
    };
    let info = retry("the snapshot", backoff, || async {
        match client.get_snapshot(&opts.repository, &name).await {
            Ok(Some(info)) if info.state() == "SUCCESS" => Attempt::Ready(info),
            Ok(Some(info)) if matches!(info.state(), "IN_PROGRESS" | "STARTED" | "INIT") => {
                Attempt::Pending(Error::failed("still running"))
            }
            Ok(Some(info)) => Attempt::Fail(Error::failed(format!(
                "snapshot {name:?} ended {}: {} ({} of {} shards failed)",
                info.state(),
                info.reason.as_deref().unwrap_or(""),
                info.shards.failed,
                info.shards.total
            ))),
            Ok(None) => Attempt::Pending(Error::failed("not listed yet")),
            Err(e) if e.is_transient() => Attempt::Pending(Error::Api(e)),
            Err(e) => Attempt::Fail(Error::Api(e)),
        }
    })
    .await
    .map_err(|e| match e {
        GaveUp::Failed(e) => e,
        GaveUp::TimedOut(_) => Error::failed(format!(
            "snapshot {name:?} did not finish within {}",
            humantime::format_duration(opts.snapshot_timeout)
        )),
    })?;
    report.steps.push(format!(
        "snapshot {name:?}: SUCCESS ({} indices, shards {}/{} successful, {} failed)",
        info.indices.len(),
        info.shards.successful,
        info.shards.total,
        info.shards.failed
    ));
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_and_diffs() {
        let existing =
            flatten(&json!({"type": "s3", "settings": {"bucket": "b", "path_style_access": "true", "client": "x"}}));
        let desired = flatten(
            &json!({"type": "s3", "settings": {"bucket": "b", "path_style_access": true,
            "access_key": "AK", "secret_key": "SK", "region": "r"}}),
        );
        let d = diff(&existing, &desired);
        assert_eq!(
            d,
            vec![
                "  + settings.region: \"r\"".to_string(),
                "  - settings.client: \"x\"".to_string()
            ]
        );
        let changed = diff(
            &flatten(&json!({"secret_key": "OLD"})),
            &flatten(&json!({"secret_key": "NEW"})),
        );
        assert_eq!(changed, vec!["  ~ secret_key: (hidden) -> (hidden)".to_string()]);
    }

    #[test]
    fn finds_failed_nodes() {
        let reason = "[sts-backup] [[aBc-1_x, 'RemoteTransportException[..]'], [node2, 'x']]";
        assert_eq!(failed_nodes(reason), vec!["aBc-1_x", "node2"]);
    }

    #[test]
    fn endpoint_split() {
        assert_eq!(
            endpoint_parts("http://minio:9000/").unwrap(),
            ("http".into(), "minio:9000".into())
        );
        assert!(endpoint_parts("minio:9000").is_err());
        assert!(endpoint_parts("http://u:p@minio").is_err());
    }
}
