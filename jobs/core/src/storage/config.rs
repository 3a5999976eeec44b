//! Storage flags, shared by every job that touches backups, each with its env twin.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{StorageError, StorageResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Addressing {
    /// `http://endpoint/bucket/key`: what MinIO, rclone and most in-cluster servers need.
    #[default]
    Path,
    /// `http://bucket.endpoint/key`: AWS's preferred style.
    Virtual,
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
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
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

    /// Bytes per uploaded part (5MiB..5GiB); memory use is about part size x (concurrency + 1).
    #[arg(long, env = "BACKUP_PART_SIZE", default_value = "16MiB", value_name = "SIZE")]
    pub part_size: String,

    /// Parts uploaded in parallel.
    #[arg(long, env = "BACKUP_UPLOAD_CONCURRENCY", default_value_t = 4, value_name = "N")]
    pub upload_concurrency: usize,
}

impl Default for StorageArgs {
    fn default() -> Self {
        StorageArgs {
            storage: "file://./sts-backups".into(),
            s3_endpoint: None,
            region: "us-east-1".into(),
            s3_addressing: Addressing::Path,
            credentials_dir: None,
            ca_bundle: None,
            sse: "none".into(),
            part_size: "16MiB".into(),
            upload_concurrency: 4,
        }
    }
}

/// A parsed `--storage` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl StorageArgs {
    pub fn url(&self) -> StorageResult<StorageUrl> {
        StorageUrl::parse(&self.storage)
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
        match self.upload_concurrency {
            1..=64 => Ok(self.upload_concurrency),
            n => Err(StorageError::Invalid(format!(
                "--upload-concurrency: {n} is outside 1..64"
            ))),
        }
    }
}

impl StorageUrl {
    pub fn parse(url: &str) -> StorageResult<StorageUrl> {
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
            if prefix.split('/').any(|p| p == ".." || p == ".") {
                return Err(invalid(format!(
                    "prefix {prefix:?} must not contain '.' or '..' segments"
                )));
            }
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
