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
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::client::{ClusterInfo, EsClient, EsError};
use super::validate::{validate_cron, validate_expire_after, validate_retention, validate_snapshot_name, IndexPattern};
use crate::error::Error;
use crate::storage::{Addressing, Storage, StorageArgs, StorageError};

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

/// What register did, for tests and the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegisterReport {
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
    pub fn validate(&self) -> crate::Result<()> {
        if self.repository.is_empty()
            || self.repository.starts_with('_')
            || self.repository.contains(['/', ' ', ',', '*'])
        {
            return Err(Error::invalid(format!(
                "--repository: {:?} is not a valid repository name",
                self.repository
            )));
        }
        crate::storage::StorageUrl::parse(&format!("s3://{}", self.bucket))
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
            if self.policy.is_empty() || self.policy.starts_with('_') || self.policy.contains(['/', ' ', ',']) {
                return Err(Error::invalid(format!(
                    "--policy: {:?} is not a valid policy id",
                    self.policy
                )));
            }
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
    pub fn repository_body(&self) -> crate::Result<Value> {
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
fn endpoint_parts(endpoint: &str) -> crate::Result<(String, String)> {
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

fn sse_enabled(sse: &str) -> crate::Result<bool> {
    match sse {
        "" | "none" => Ok(false),
        "AES256" | "aes256" => Ok(true),
        s if s.to_ascii_lowercase().contains("kms") => Err(Error::invalid(format!(
            "--sse: {s:?} (SSE-KMS) is not supported by Elasticsearch S3 repositories (ETags are not MD5); use AES256"
        ))),
        s => Err(Error::invalid(format!("--sse: {s:?} is not one of none, AES256"))),
    }
}

/// The S3 keys for `--credentials inline`: the credentials directory, else the AWS env.
fn inline_keys(args: &StorageArgs) -> crate::Result<(String, String)> {
    let read = |name: &str| -> crate::Result<String> {
        let dir = args.credentials_dir.as_ref().expect("checked");
        let path = dir.join(name);
        let v = std::fs::read_to_string(&path)
            .map_err(|e| Error::invalid(format!("--credentials-dir: cannot read {}: {e}", path.display())))?;
        let v = v.trim().to_string();
        if v.is_empty() {
            return Err(Error::invalid(format!(
                "--credentials-dir: {} is empty",
                path.display()
            )));
        }
        Ok(v)
    };
    if args.credentials_dir.is_some() {
        return Ok((read("accesskey")?, read("secretkey")?));
    }
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(a), Ok(s)) if !a.is_empty() && !s.is_empty() => Ok((a, s)),
        _ => Err(Error::invalid(
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

async fn wait_storage(opts: &RegisterOptions) -> anyhow::Result<Storage> {
    let args = opts.storage_args();
    let storage = Storage::open(&args).await.map_err(|e| Error::invalid(e.to_string()))?;
    let deadline = Instant::now() + opts.wait_timeout;
    let mut delay = Duration::from_millis(250);
    let bucket = &opts.bucket;
    loop {
        match storage.check(false).await {
            Ok(()) => return Ok(storage),
            Err(StorageError::NoSuchBucket { .. }) if opts.create_bucket => {
                tracing::info!("bucket {bucket:?} does not exist; creating it (--create-bucket)");
                match storage.create_bucket().await {
                    Ok(()) => println!("bucket {bucket:?}: created"),
                    Err(e @ StorageError::Unreachable { .. }) => {
                        if Instant::now() + delay > deadline {
                            return Err(e.into());
                        }
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(Error::invalid(format!(
                            "--bucket: cannot create {bucket:?}: {e}"
                        ))))
                    }
                }
            }
            Err(StorageError::NoSuchBucket { .. }) => {
                return Err(Error::invalid(format!(
                    "--bucket: bucket {bucket:?} does not exist, so Elasticsearch snapshots and restores cannot work; \
                     create it, or run with --create-bucket (the chart sets it when scheduled snapshots are on)"
                ))
                .into())
            }
            Err(e @ StorageError::Unreachable { .. }) if Instant::now() + delay <= deadline => {
                tracing::warn!("waiting for the storage: {e}; retrying in {delay:?}");
            }
            Err(e @ (StorageError::AccessDenied { .. } | StorageError::Invalid(_))) => {
                return Err(Error::invalid(format!("--credentials-dir: {e}")).into())
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("checking bucket {bucket:?}"))),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OwnerMarker {
    cluster_uuid: String,
    cluster_name: String,
    repository: String,
    registered_at: String,
    tool: String,
}

/// The two-writers guard (see the module docs). Returns whether the marker must be written.
async fn check_owner(
    opts: &RegisterOptions,
    storage: &Storage,
    cluster: &ClusterInfo,
    existing_writable_here: bool,
    existing_readonly_here: bool,
) -> anyhow::Result<bool> {
    let location = storage.location();
    let marker = match storage.get_bytes(OWNER_MARKER, 64 * 1024).await {
        Ok(bytes) => Some(
            serde_json::from_slice::<OwnerMarker>(&bytes)
                .map_err(|e| anyhow::anyhow!("{location}/{OWNER_MARKER} is not an owner marker: {e}"))?,
        ),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let take_over_hint = "register it with --readonly to restore from it, or use --take-over once that cluster \
                          no longer writes there (two writers corrupt a repository)";
    if existing_readonly_here && !opts.take_over {
        return Err(Error::Refused(format!(
            "repository {:?} is registered read-only in this cluster (attached from another cluster); refusing to make \
             it writable: keep --readonly, or use --take-over if this cluster should become the only writer",
            opts.repository
        ))
        .into());
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
        Some(m) => Err(Error::Refused(format!(
            "{location} belongs to cluster {:?} (uuid {}), not this one ({}); {take_over_hint}",
            m.cluster_name, m.cluster_uuid, cluster.cluster_uuid
        ))
        .into()),
        None => {
            if existing_writable_here || opts.take_over {
                return Ok(true);
            }
            if storage.head("index.latest").await?.is_some() {
                return Err(Error::Refused(format!(
                    "{location} already holds an Elasticsearch snapshot repository that this cluster did not register; \
                     {take_over_hint}"
                ))
                .into());
            }
            Ok(true)
        }
    }
}

/// Runs the whole registration.
pub async fn register(client: &EsClient, opts: &RegisterOptions) -> anyhow::Result<RegisterReport> {
    opts.validate()?;
    let mut report = RegisterReport::default();
    let desired_repo = opts.repository_body()?;

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
        ))
        .into());
    }
    let storage = wait_storage(opts).await?;
    tracing::info!("bucket {:?} is reachable", opts.bucket);

    let repo = opts.repository.as_str();
    let existing = client
        .get_opt(&["_snapshot", repo], &[])
        .await?
        .and_then(|v| v.get(repo).cloned());
    let existing_flat = existing.as_ref().map(flatten).unwrap_or_default();
    let desired_flat = flatten(&desired_repo);
    let same_location = existing_flat.get("settings.bucket") == desired_flat.get("settings.bucket")
        && existing_flat.get("settings.base_path") == desired_flat.get("settings.base_path");
    let existing_readonly = existing_flat.get("settings.readonly").is_some_and(|v| v == "true");

    if !opts.readonly {
        let write_marker = check_owner(
            opts,
            &storage,
            &cluster,
            existing.is_some() && same_location && !existing_readonly,
            existing.is_some() && existing_readonly,
        )
        .await?;
        if write_marker {
            let marker = OwnerMarker {
                cluster_uuid: cluster.cluster_uuid.clone(),
                cluster_name: cluster.cluster_name.clone(),
                repository: opts.repository.clone(),
                registered_at: chrono::Utc::now().to_rfc3339(),
                tool: crate::TOOL.to_string(),
            };
            let body = serde_json::to_vec_pretty(&marker).expect("serializable");
            storage.put_bytes(OWNER_MARKER, Bytes::from(body)).await?;
            tracing::info!("{}/{OWNER_MARKER}: this cluster is the writer", storage.location());
        }
    }

    if opts.credentials == CredentialsMode::Keystore {
        reload_secure_settings(client).await?;
    }

    let changes = diff(&existing_flat, &desired_flat);
    let put_repo = existing.is_none() || !changes.is_empty();
    if existing.is_none() {
        println!("repository {repo:?}: create");
        for line in diff(&BTreeMap::new(), &desired_flat) {
            println!("{line}");
        }
    } else if changes.is_empty() {
        println!("repository {repo:?}: unchanged");
    } else {
        println!("repository {repo:?}: update");
        for line in &changes {
            println!("{line}");
        }
    }
    if put_repo {
        put_repository(client, repo, &desired_repo).await?;
        report.repository_changed = true;
    }
    match verify(client, repo).await {
        Ok(()) => {}
        // Inline keys are hidden by GET, so a rotated key shows up here: send them again.
        Err(e) if !put_repo && opts.credentials == CredentialsMode::Inline => {
            tracing::warn!("verification failed ({e:#}); re-sending the repository with the current S3 keys");
            println!("repository {repo:?}: update (S3 keys)");
            put_repository(client, repo, &desired_repo).await?;
            report.repository_changed = true;
            verify(client, repo).await?;
        }
        Err(e) => return Err(e),
    }

    if opts.readonly {
        tracing::info!("--readonly: no SLM policy for an attached repository");
    } else if opts.no_policy {
        if client.get_opt(&["_slm", "policy", &opts.policy], &[]).await?.is_some() {
            tracing::warn!(
                "--no-policy: SLM policy {:?} exists and keeps taking snapshots; delete it with DELETE _slm/policy/{} \
                 if scheduled snapshots are off",
                opts.policy,
                opts.policy
            );
        }
    } else {
        report.policy_changed = ensure_policy(client, opts).await?;
        if opts.execute_now {
            report.snapshot = Some(execute_now(client, opts).await?);
        }
    }
    Ok(report)
}

async fn put_repository(client: &EsClient, repo: &str, body: &Value) -> anyhow::Result<()> {
    // verify=false: the explicit _verify below reports per node.
    client
        .put(&["_snapshot", repo], &[("verify", "false")], body)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("registering repository {repo:?}")))?;
    tracing::info!("repository {repo:?} registered");
    Ok(())
}

async fn reload_secure_settings(client: &EsClient) -> anyhow::Result<()> {
    let body = client.post(&["_nodes", "reload_secure_settings"], &[], None).await?;
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
    if !failed.is_empty() {
        anyhow::bail!("reloading the keystore failed on node(s): {}", failed.join("; "));
    }
    tracing::info!("keystore secure settings reloaded on all nodes");
    Ok(())
}

/// `POST _snapshot/<repo>/_verify`, naming the nodes that failed.
async fn verify(client: &EsClient, repo: &str) -> anyhow::Result<()> {
    match client.post(&["_snapshot", repo, "_verify"], &[], None).await {
        Ok(body) => {
            let names: Vec<String> = body
                .get("nodes")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(id, n)| n.get("name").and_then(Value::as_str).unwrap_or(id).to_string())
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "repository {repo:?}: verified on {} node(s): {}",
                names.len(),
                names.join(", ")
            );
            Ok(())
        }
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
            Err(anyhow::Error::new(e).context(what))
        }
    }
}

/// Node ids in a `repository_verification_exception` reason: `[repo] [[id, 'msg'], [id2, 'msg']]`.
pub fn failed_nodes(reason: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\[([A-Za-z0-9_\-]+), '").expect("valid regex");
    re.captures_iter(reason).map(|c| c[1].to_string()).collect()
}

async fn ensure_policy(client: &EsClient, opts: &RegisterOptions) -> anyhow::Result<bool> {
    let id = opts.policy.as_str();
    let desired = opts.policy_body();
    let existing = client
        .get_opt(&["_slm", "policy", id], &[])
        .await?
        .and_then(|v| v.get(id).and_then(|p| p.get("policy")).cloned());
    let desired_flat = flatten(&desired);
    match &existing {
        None => {
            println!("policy {id:?}: create");
            for line in diff(&BTreeMap::new(), &desired_flat) {
                println!("{line}");
            }
        }
        Some(old) => {
            let changes = diff(&flatten(old), &desired_flat);
            if changes.is_empty() {
                println!("policy {id:?}: unchanged");
                return Ok(false);
            }
            println!("policy {id:?}: update");
            for line in &changes {
                println!("{line}");
            }
        }
    }
    client
        .put(&["_slm", "policy", id], &[], &desired)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("writing SLM policy {id:?}")))?;
    tracing::info!("SLM policy {id:?} written");
    Ok(true)
}

async fn execute_now(client: &EsClient, opts: &RegisterOptions) -> anyhow::Result<String> {
    let id = opts.policy.as_str();
    let body = client
        .request(
            reqwest::Method::PUT,
            &["_slm", "policy", id, "_execute"],
            &[],
            None,
            false,
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("running SLM policy {id:?}")))?
        .1;
    let name = body
        .get("snapshot_name")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("_execute did not return a snapshot_name: {body}"))?
        .to_string();
    println!("snapshot {name:?}: started");
    let deadline = Instant::now() + opts.snapshot_timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        let found = match client.get_opt(&["_snapshot", &opts.repository, &name], &[]).await {
            Ok(v) => v,
            Err(e) if e.is_transient() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(info) = found.as_ref().and_then(|v| v.pointer("/snapshots/0")) {
            let state = info.get("state").and_then(Value::as_str).unwrap_or("UNKNOWN");
            let shards = |k: &str| {
                info.pointer(&format!("/shards/{k}"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            match state {
                "IN_PROGRESS" | "STARTED" | "INIT" => {}
                "SUCCESS" => {
                    println!(
                        "snapshot {name:?}: SUCCESS ({} indices, shards {}/{} successful, {} failed)",
                        info.get("indices").and_then(Value::as_array).map_or(0, Vec::len),
                        shards("successful"),
                        shards("total"),
                        shards("failed")
                    );
                    return Ok(name);
                }
                other => {
                    let reason = info.get("reason").and_then(Value::as_str).unwrap_or("");
                    return Err(EsError::Protocol {
                        method: "GET".into(),
                        path: format!("/_snapshot/{}/{name}", opts.repository),
                        detail: format!(
                            "snapshot ended {other}: {reason} ({} of {} shards failed)",
                            shards("failed"),
                            shards("total")
                        ),
                    }
                    .into());
                }
            }
        }
        if Instant::now() + delay > deadline {
            anyhow::bail!(
                "snapshot {name:?} did not finish within {}",
                humantime::format_duration(opts.snapshot_timeout)
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
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
