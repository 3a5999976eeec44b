//! Storage flags, shared by every job that touches backups, each with its env twin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use url::Url;

use super::{StorageError, StorageResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Addressing {
    /// `http://endpoint/bucket/key`: what MinIO, rclone and most in-cluster servers need.
    #[default]
    Path,
    /// `http://bucket.endpoint/key`: AWS's preferred style.
    Virtual,
}

/// S3 Object Lock retention modes: governance can be lifted by a user with the
/// `s3:BypassGovernanceRetention` permission, compliance by nobody until the date passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockMode {
    Governance,
    Compliance,
}

/// Object Lock for what a backup writes: the mode, and how long from the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    /// Set by the writer from its retention; without it nothing is locked.
    pub period: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Where backups live: s3://BUCKET[/PREFIX] or file:///PATH.
    #[arg(
        long,
        env = "BACKUP_STORAGE",
        default_value = "file://./sts-backups",
        value_name = "URL"
    )]
    pub storage: String,

    /// S3 endpoint for non-AWS servers, e.g. http://sts-backup-minio:9000 (default: AWS).
    #[arg(long, env = "S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region (SigV4 needs one even for MinIO-style servers).
    #[arg(long, env = "S3_REGION", default_value = DEFAULT_REGION)]
    pub region: String,

    /// S3 addressing style.
    #[arg(long, env = "S3_ADDRESSING", value_enum, default_value_t = Addressing::Path)]
    pub s3_addressing: Addressing,

    /// Directory holding files `accesskey` and `secretkey` (the chart mounts its Secret
    /// there). Without it, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS default chain
    /// (web identity, instance profile) are used.
    #[arg(long, env = "S3_CREDENTIALS_DIR", value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,

    /// PEM bundle of extra CA certificates to trust for TLS to the endpoint.
    #[arg(long, env = "S3_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Server-side encryption: none or AES256 (SSE-S3). SSE-KMS is not supported.
    #[arg(long, env = "S3_SSE", default_value = "none", value_name = "MODE")]
    pub sse: String,

    /// S3 Object Lock on each backup and its manifest (governance or compliance), retained
    /// until the backup's --retention has passed; the bucket must have Object Lock enabled.
    #[arg(long, env = "S3_OBJECT_LOCK", value_enum, value_name = "MODE")]
    pub object_lock: Option<LockMode>,

    /// Bytes per uploaded part (5MiB..5GiB). Parts in memory stay within part size x
    /// (concurrency + 1) also once parts grow on large backups (or one part, if larger).
    #[arg(long, env = "BACKUP_PART_SIZE", default_value = DEFAULT_PART_SIZE, value_name = "SIZE")]
    pub part_size: String,

    /// Parts uploaded in parallel.
    #[arg(long, env = "BACKUP_UPLOAD_CONCURRENCY", default_value_t = DEFAULT_UPLOAD_CONCURRENCY, value_name = "N")]
    pub upload_concurrency: usize,

    /// Ranged GETs in flight when reading a large object (restore, verify); 1 reads it in one
    /// GET. Memory grows by about (N + 1) x 4 MiB. Worth it where one connection is slower
    /// than the link (a real network); not on servers that read the whole object for each
    /// request (`rclone serve s3` computes the ETag's MD5 on every GET).
    #[arg(long, env = "BACKUP_DOWNLOAD_CONCURRENCY", default_value_t = DEFAULT_DOWNLOAD_CONCURRENCY, value_name = "N")]
    pub download_concurrency: usize,

    /// Longest wait for a TCP (and TLS) connection to the S3 endpoint.
    #[arg(long, env = "S3_CONNECT_TIMEOUT", default_value = DEFAULT_CONNECT_TIMEOUT, value_name = "DURATION")]
    pub connect_timeout: String,

    /// Longest one S3 request may take, retries included (listing a page, a HEAD, a delete
    /// batch...). Part uploads and downloads are bounded by --stall-timeout instead.
    #[arg(long, env = "S3_REQUEST_TIMEOUT", default_value = DEFAULT_REQUEST_TIMEOUT, value_name = "DURATION")]
    pub request_timeout: String,

    /// Give up on an upload or download when no byte has moved for this long (a stalled
    /// server or network).
    #[arg(long, env = "S3_STALL_TIMEOUT", default_value = DEFAULT_STALL_TIMEOUT, value_name = "DURATION")]
    pub stall_timeout: String,
}

/// The region when none is given; S3-compatible servers accept it.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Parts of 8 MiB, 3 in flight: about 32 MiB of part buffers (peak RSS under 64 MiB measured
/// by tests/bench), and 8 MiB is where rclone, s3cmd and aws-cli sit too. Parts grow for very
/// large backups (see `backup::part_size_for`).
pub const DEFAULT_PART_SIZE: &str = "8MiB";
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 3;
/// One GET per object read by default: on the chart's `rclone serve s3` every ranged GET
/// costs the server a read of the whole object (tests/bench measures it).
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 1;
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
pub const DEFAULT_REQUEST_TIMEOUT: &str = "60s";
pub const DEFAULT_STALL_TIMEOUT: &str = "60s";

/// S3 keys are at most 1024 bytes; a prefix leaves room for the longest backup name, its
/// manifest suffix and upload bookkeeping.
pub const MAX_PREFIX_LEN: usize = 1024 - crate::naming::MAX_NAME_LEN - 64;

impl Default for StorageArgs {
    fn default() -> Self {
        StorageArgs {
            storage: "file://./sts-backups".into(),
            s3_endpoint: None,
            region: DEFAULT_REGION.into(),
            s3_addressing: Addressing::Path,
            credentials_dir: None,
            ca_bundle: None,
            sse: "none".into(),
            object_lock: None,
            part_size: DEFAULT_PART_SIZE.into(),
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT.into(),
            stall_timeout: DEFAULT_STALL_TIMEOUT.into(),
        }
    }
}

/// A parsed `--storage` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// What the storage flags mean, checked once: every value parsed and typed, files read and
/// keys validated, before anything is contacted.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub url: StorageUrl,
    pub s3: S3Config,
}

impl StorageConfig {
    /// Dates the Object Lock of what this run writes: each object is retained for `period`
    /// (the writer's retention) from its write. With --object-lock and no period, exit 2.
    pub fn lock_for(&mut self, period: Option<Duration>) -> StorageResult<()> {
        let Some(lock) = self.s3.object_lock.as_mut() else {
            return Ok(());
        };
        let period = period.ok_or_else(|| {
            StorageError::Invalid(
                "--object-lock: needs --retention (BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA): a backup \
                 is locked for as long as retention keeps it"
                    .into(),
            )
        })?;
        lock.period = Some(period);
        Ok(())
    }
}

/// The S3 settings. For `file://` storage these hold the defaults (other values are refused).
#[derive(Debug, Clone)]
pub struct S3Config {
    /// None: AWS itself.
    pub endpoint: Option<Url>,
    pub region: String,
    pub addressing: Addressing,
    /// None: the AWS default chain (web identity, instance profile...).
    pub keys: Option<S3Keys>,
    /// PEM certificates to trust besides the system roots.
    pub ca_bundle: Option<Vec<u8>>,
    pub sse: Sse,
    pub object_lock: Option<ObjectLock>,
    pub part_size: usize,
    pub concurrency: usize,
    /// Ranged GETs in flight per object read (1: one plain GET).
    pub download_concurrency: usize,
    pub timeouts: Timeouts,
}

impl S3Config {
    /// The endpoint as log lines and errors name it.
    pub fn endpoint_label(&self) -> String {
        match &self.endpoint {
            Some(url) => url.as_str().trim_end_matches('/').to_string(),
            None => format!("AWS S3 ({})", self.region),
        }
    }
}

/// Server-side encryption of uploaded objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sse {
    None,
    /// SSE-S3.
    Aes256,
}

impl Sse {
    pub fn parse(text: &str) -> StorageResult<Sse> {
        match text.trim() {
            "" | "none" => Ok(Sse::None),
            "AES256" | "aes256" => Ok(Sse::Aes256),
            s if s.to_ascii_lowercase().contains("kms") => Err(StorageError::Invalid(format!(
                "--sse: {s:?} (SSE-KMS) is not supported: KMS ETags are not MD5 and S3-compatible clients, Elasticsearch included, fail to verify uploads; use AES256 (SSE-S3)"
            ))),
            s => Err(StorageError::Invalid(format!("--sse: {s:?} is not one of none, AES256"))),
        }
    }
}

/// How long to wait on the S3 endpoint before giving up (exit 1, naming the endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub stall: Duration,
}

impl Timeouts {
    /// The most an abort on the way out may take: a stalled server must not keep a job that
    /// was told to stop (SIGTERM) alive past its grace period.
    pub fn abort(&self) -> Duration {
        self.request.min(Duration::from_secs(10))
    }
}

/// S3 keys, from the credentials directory or the AWS environment variables. Whitespace
/// around a value (the newline a Secret or YAML block often carries) is trimmed; any other
/// control or non-printable character is refused, naming where it came from, never the value.
#[derive(Clone)]
pub struct S3Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Keys { .. }")
    }
}

impl S3Keys {
    /// The keys the flags select: the credentials directory when set, else
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set, else None (the AWS default chain).
    pub fn read(credentials_dir: Option<&Path>) -> StorageResult<Option<S3Keys>> {
        let keys = match credentials_dir {
            Some(dir) => Some(S3Keys {
                access_key_id: read_secret_file(dir, "accesskey")?,
                secret_access_key: read_secret_file(dir, "secretkey")?,
                session_token: None,
            }),
            None => Self::from_env()?,
        };
        if let Some(keys) = &keys {
            crate::logging::redact(&keys.access_key_id);
            crate::logging::redact(&keys.secret_access_key);
            if let Some(token) = &keys.session_token {
                crate::logging::redact(token);
            }
        }
        Ok(keys)
    }

    fn from_env() -> StorageResult<Option<S3Keys>> {
        let var = |name: &str| std::env::var_os(name).map(|v| secret_value(name, &v.to_string_lossy()));
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (None, None) => Ok(None),
            (Some(access), Some(secret)) => Ok(Some(S3Keys {
                access_key_id: access?,
                secret_access_key: secret?,
                session_token: var("AWS_SESSION_TOKEN").transpose()?,
            })),
            (Some(_), None) => Err(StorageError::Invalid(
                "AWS_SECRET_ACCESS_KEY: not set, but AWS_ACCESS_KEY_ID is; set both or use --credentials-dir".into(),
            )),
            (None, Some(_)) => Err(StorageError::Invalid(
                "AWS_ACCESS_KEY_ID: not set, but AWS_SECRET_ACCESS_KEY is; set both or use --credentials-dir".into(),
            )),
        }
    }
}

fn read_secret_file(dir: &Path, name: &str) -> StorageResult<String> {
    let path = dir.join(name);
    let field = format!("--credentials-dir: {}", path.display());
    let value = std::fs::read(&path).map_err(|e| StorageError::Invalid(format!("{field}: cannot read: {e}")))?;
    secret_value(&field, &String::from_utf8_lossy(&value))
}

/// A key with surrounding whitespace trimmed, or why it is refused (never echoing it).
fn secret_value(field: &str, raw: &str) -> StorageResult<String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(StorageError::Invalid(format!("{field}: is empty")));
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(StorageError::Invalid(format!(
            "{field}: holds {} at byte {at}; keys are printable ASCII without spaces",
            describe_char(c)
        )));
    }
    Ok(value.to_string())
}

fn describe_char(c: char) -> String {
    if c.is_control() {
        format!("the control character U+{:04X}", c as u32)
    } else if c.is_whitespace() {
        "a space".into()
    } else {
        "a non-ASCII character".into()
    }
}

impl StorageArgs {
    pub fn url(&self) -> StorageResult<StorageUrl> {
        StorageUrl::parse(&self.storage)
    }

    /// Parses and checks every storage flag (reading the credentials and CA files) without
    /// contacting anything. Every error names its flag and means exit 2.
    pub fn config(&self) -> StorageResult<StorageConfig> {
        let url = self.url()?;
        let sse = Sse::parse(&self.sse)?;
        let region = parse_region(&self.region)?;
        let timeouts = Timeouts {
            connect: parse_timeout("--connect-timeout", &self.connect_timeout)?,
            request: parse_timeout("--request-timeout", &self.request_timeout)?,
            stall: parse_timeout("--stall-timeout", &self.stall_timeout)?,
        };
        let part_size = self.part_size_bytes()?;
        let concurrency = self.concurrency()?;
        let download_concurrency = in_range("--download-concurrency", self.download_concurrency)?;
        if let StorageUrl::File(_) = url {
            self.refuse_s3_only(sse, &region, timeouts)?;
            return Ok(StorageConfig {
                url,
                s3: S3Config {
                    endpoint: None,
                    region,
                    addressing: self.s3_addressing,
                    keys: None,
                    ca_bundle: None,
                    sse,
                    object_lock: None,
                    part_size,
                    concurrency,
                    download_concurrency,
                    timeouts,
                },
            });
        }
        let endpoint = self.s3_endpoint.as_deref().map(parse_endpoint).transpose()?;
        let ca_bundle = self.ca_bundle.as_deref().map(read_ca_bundle).transpose()?;
        let keys = S3Keys::read(self.credentials_dir.as_deref())?;
        Ok(StorageConfig {
            url,
            s3: S3Config {
                endpoint,
                region,
                addressing: self.s3_addressing,
                keys,
                ca_bundle,
                sse,
                object_lock: self.object_lock.map(|mode| ObjectLock { mode, period: None }),
                part_size,
                concurrency,
                download_concurrency,
                timeouts,
            },
        })
    }

    /// S3 settings mean nothing to a directory; one that is set was meant for another store.
    fn refuse_s3_only(&self, sse: Sse, region: &str, timeouts: Timeouts) -> StorageResult<()> {
        let defaults = Timeouts {
            connect: parse_timeout("", DEFAULT_CONNECT_TIMEOUT)?,
            request: parse_timeout("", DEFAULT_REQUEST_TIMEOUT)?,
            stall: parse_timeout("", DEFAULT_STALL_TIMEOUT)?,
        };
        let set = [
            (self.s3_endpoint.is_some(), "--s3-endpoint (S3_ENDPOINT)"),
            (self.credentials_dir.is_some(), "--credentials-dir (S3_CREDENTIALS_DIR)"),
            (self.ca_bundle.is_some(), "--ca-bundle (S3_CA_BUNDLE)"),
            (sse != Sse::None, "--sse (S3_SSE)"),
            (region != DEFAULT_REGION, "--region (S3_REGION)"),
            (
                self.s3_addressing != Addressing::Path,
                "--s3-addressing (S3_ADDRESSING)",
            ),
            (
                timeouts.connect != defaults.connect,
                "--connect-timeout (S3_CONNECT_TIMEOUT)",
            ),
            (
                timeouts.request != defaults.request,
                "--request-timeout (S3_REQUEST_TIMEOUT)",
            ),
            (timeouts.stall != defaults.stall, "--stall-timeout (S3_STALL_TIMEOUT)"),
            (self.object_lock.is_some(), "--object-lock (S3_OBJECT_LOCK)"),
        ];
        match set.iter().find(|(is_set, _)| *is_set) {
            Some((_, flag)) => Err(StorageError::Invalid(format!(
                "{flag}: only applies to s3:// storage, but --storage is {:?}; unset it or use an s3:// URL",
                self.storage.trim()
            ))),
            None => Ok(()),
        }
    }

    /// The part size in bytes, checked against the S3 limits.
    pub fn part_size_bytes(&self) -> StorageResult<usize> {
        let bytes = parse_byte_size(&self.part_size).map_err(|e| StorageError::Invalid(format!("--part-size: {e}")))?;
        const MIN: u64 = 5 * 1024 * 1024;
        const MAX: u64 = 5 * 1024 * 1024 * 1024;
        if !(MIN..=MAX).contains(&bytes) {
            return Err(StorageError::Invalid(format!(
                "--part-size: {} is outside 5MiB..5GiB (the S3 part size limits)",
                self.part_size
            )));
        }
        Ok(bytes as usize)
    }

    pub fn concurrency(&self) -> StorageResult<usize> {
        in_range("--upload-concurrency", self.upload_concurrency)
    }
}

/// A concurrency flag's value, 1..64.
fn in_range(flag: &str, n: usize) -> StorageResult<usize> {
    match n {
        1..=64 => Ok(n),
        n => Err(StorageError::Invalid(format!("{flag}: {n} is outside 1..64"))),
    }
}

/// A region as SigV4 signs it: letters, digits, '-', '_' and '.', surrounding whitespace trimmed.
fn parse_region(raw: &str) -> StorageResult<String> {
    let region = raw.trim();
    let invalid = |why: String| StorageError::Invalid(format!("--region (S3_REGION): {why}"));
    if region.is_empty() {
        return Err(invalid(format!(
            "must not be empty; use {DEFAULT_REGION} for S3-compatible servers"
        )));
    }
    if let Some(c) = region
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(invalid(format!(
            "{region:?} holds {}; a region is letters, digits and '-', e.g. {DEFAULT_REGION}",
            describe_char(c)
        )));
    }
    Ok(region.to_string())
}

fn parse_timeout(flag: &str, raw: &str) -> StorageResult<Duration> {
    let invalid = |why: String| StorageError::Invalid(format!("{flag}: {why}"));
    let duration = humantime::parse_duration(raw.trim())
        .map_err(|_| invalid(format!("{raw:?} is not a duration such as 30s or 2m")))?;
    if duration.is_zero() {
        return Err(invalid("must be longer than 0s".into()));
    }
    Ok(duration)
}

/// An endpoint URL: http(s), a host, an optional port and path; no user, query or fragment.
fn parse_endpoint(raw: &str) -> StorageResult<Url> {
    let text = raw.trim();
    let invalid = |why: String| StorageError::Invalid(format!("--s3-endpoint (S3_ENDPOINT): {why}"));
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(invalid(format!(
            "{text:?} must start with http:// or https://, e.g. http://sts-backup-minio:9000"
        )));
    }
    let url = Url::parse(text).map_err(|e| invalid(format!("{text:?} is not a valid URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not carry a user name or password; give the keys with --credentials-dir".into(),
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!("{text:?} holds a space or control character")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{text:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!("{text:?} must not have a query or fragment")));
    }
    Ok(url)
}

fn read_ca_bundle(path: &Path) -> StorageResult<Vec<u8>> {
    let pem = std::fs::read(path)
        .map_err(|e| StorageError::Invalid(format!("--ca-bundle: cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(StorageError::Invalid(format!(
            "--ca-bundle: {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

impl StorageUrl {
    pub fn parse(url: &str) -> StorageResult<StorageUrl> {
        let url = url.trim();
        let invalid = |why: String| StorageError::Invalid(format!("--storage: {why}"));
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a path, e.g. file:///var/backups".into()));
            }
            return Ok(StorageUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket).map_err(|e| invalid(format!("bucket {bucket:?} {e}")))?;
            let prefix = prefix.trim_matches('/');
            validate_prefix(prefix).map_err(|e| invalid(format!("prefix {prefix:?} {e}")))?;
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            return Ok(StorageUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or(url);
        Err(invalid(format!(
            "unsupported scheme {scheme:?} in {url:?}; use s3://BUCKET[/PREFIX] or file:///PATH"
        )))
    }
}

/// A key prefix that reads the same on every server and in every log line.
fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "is {} bytes; at most {MAX_PREFIX_LEN} keep every key under S3's 1024-byte limit",
            prefix.len()
        ));
    }
    if let Some(c) = prefix.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!("must not contain {}", describe_char_or(c)));
    }
    if prefix.split('/').any(|p| p.is_empty() && !prefix.is_empty()) {
        return Err("must not contain empty segments ('//')".into());
    }
    if prefix.split('/').any(|p| p == ".." || p == ".") {
        return Err("must not contain '.' or '..' segments".into());
    }
    Ok(())
}

fn describe_char_or(c: char) -> String {
    if c == '\\' {
        "a backslash".into()
    } else {
        describe_char(c)
    }
}

/// S3 bucket naming rules (3-63 chars of lowercase letters, digits, '.', '-').
fn validate_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("is missing: use s3://BUCKET[/PREFIX]".into());
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err("must be 3 to 63 characters long".into());
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("may only hold lowercase letters, digits, '.' and '-'".into());
    }
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(bucket.as_bytes()[0]) || !edge_ok(bucket.as_bytes()[bucket.len() - 1]) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Parses `16MiB`, `8M`, `1048576`, `1.5GiB`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative; give a size such as 16MiB"));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 16MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use B, KiB, MiB or GiB")),
    };
    Ok((number * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_storage_urls() {
        assert_eq!(
            StorageUrl::parse("s3://sts-stackgraph-backup").unwrap(),
            StorageUrl::S3 {
                bucket: "sts-stackgraph-backup".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            StorageUrl::parse("s3://bkt/a/b/").unwrap(),
            StorageUrl::S3 {
                bucket: "bkt".into(),
                prefix: "a/b/".into()
            }
        );
        assert_eq!(
            StorageUrl::parse("file:///var/b").unwrap(),
            StorageUrl::File("/var/b".into())
        );
        for bad in [
            "gs://x",
            "s3://",
            "s3://Upper",
            "s3://a",
            "s3://bkt/../x",
            "file://",
            "/plain/path",
        ] {
            let err = StorageUrl::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("--storage: "), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_byte_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_byte_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_byte_size("1024").unwrap(), 1024);
        assert!(parse_byte_size("12 parsecs").is_err());
        let args = StorageArgs {
            part_size: "1MiB".into(),
            ..Default::default()
        };
        assert!(args.part_size_bytes().is_err());
    }
}
