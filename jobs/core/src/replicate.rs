//! Off-site copies: `replicate` copies the committed backups that a second storage location
//! lacks. A backup on a cluster-local volume dies with the cluster; a copy in another bucket,
//! region or provider does not.
//!
//! Each copy is held to the same rules as a backup: the data is streamed part by part, every
//! part checked against the source manifest's digest before it is sent, the whole object's
//! size and SHA-256 checked before the upload is completed, and the manifest written last
//! (create-only), so a copy cut short leaves nothing visible at the destination. Nothing is
//! ever deleted at the destination: its own retention (and floor) decides what goes. The
//! manifest is copied with its signature; only the fields that bind it to one stored object
//! (`run`, `data_etag`, outside the signature) are the destination's own.

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::catalogue::{self, Backup};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::naming::manifest_key;
use crate::progress::{human_bytes, Progress};
use crate::signature;
use crate::storage::{Storage, Upload};

/// What one `replicate` run did, backup by backup.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Copied and committed at the destination by this run.
    pub copied: Vec<String>,
    /// Already committed at the destination.
    pub present: Vec<String>,
    /// Not copied, and why (not a failure of this run: nothing it could do).
    pub skipped: Vec<NotCopied>,
    /// Copies that failed, and why; the next run tries them again.
    pub failed: Vec<NotCopied>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotCopied {
    pub name: String,
    pub reason: String,
}

impl NotCopied {
    fn new(name: String, reason: impl Into<String>) -> Self {
        NotCopied {
            name,
            reason: reason.into(),
        }
    }
}

/// Copies every committed backup of `src` that `dst` lacks, oldest first.
pub async fn replicate(src: &Storage, dst: &Storage) -> Result<Report> {
    let source = catalogue::list(src).await?;
    dst.check(false).await?;
    let there: std::collections::HashSet<String> = dst.list().await?.into_iter().map(|o| o.key).collect();
    let mut report = Report::default();
    for broken in source.broken {
        report.skipped.push(NotCopied::new(
            broken.name,
            format!("not restorable at the source: {}", broken.reason),
        ));
    }
    for backup in source.backups {
        let name = backup.name().to_string();
        let Backup::Committed(manifest) = backup else {
            report.skipped.push(NotCopied::new(
                name,
                "a StackState backup without manifest; `stackgraph-backup adopt` it first",
            ));
            continue;
        };
        if there.contains(&manifest_key(&name)) {
            report.present.push(name);
        } else if there.contains(&name) {
            report.skipped.push(NotCopied::new(
                name,
                "the destination holds an uncommitted object of that name (an interrupted copy?); its pruner \
                 removes it, and the next run copies the backup",
            ));
        } else {
            match copy_one(src, dst, &manifest).await {
                Ok(()) => report.copied.push(name),
                Err(e @ Error::Invalid(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!("backup {name:?} was not copied: {e}");
                    report.failed.push(NotCopied::new(name, e.to_string()));
                }
            }
        }
    }
    Ok(report)
}

/// Copies one backup: data checked and uploaded, completed, then the manifest.
async fn copy_one(src: &Storage, dst: &Storage, listed: &Manifest) -> Result<()> {
    let name = listed.name.as_str();
    // The manifest as stored (its signature covers these bytes), checked again: the
    // listing may be minutes old.
    let stored = src.get_bytes(&manifest_key(name), MAX_MANIFEST_BYTES).await?;
    let manifest = Manifest::from_bytes(name, &stored)?;
    signature::policy().check(&stored, &manifest)?;
    tracing::info!(
        "=== Copying backup {name:?} ({}) from {} to {}...",
        human_bytes(manifest.size),
        src.location(),
        dst.location()
    );
    let run = format!("{:016x}", crate::storage::random_id());
    let mut upload = dst.start_upload(name, Some(&run)).await?;
    let progress = Progress::start("copied");
    if let Err(e) = send_checked(src, &manifest, &mut upload, &progress).await {
        upload.abort().await;
        return Err(e);
    }
    upload.complete().await?;
    let etag = dst.head(name).await?.and_then(|meta| meta.etag);
    let bytes = rebind(&stored, dst.records_runs().then_some(run.as_str()), etag.as_deref())?;
    dst.put_new(&manifest_key(name), Bytes::from(bytes))
        .await
        .map_err(|e| {
            if e.is_already_exists() {
                Error::Refused(format!(
                    "backup {name:?} was committed at the destination meanwhile; not replacing it"
                ))
            } else {
                e.into()
            }
        })?;
    let (_, elapsed, rate) = progress.summary();
    tracing::info!("=== Copied backup {name:?} in {:.1}s ({rate})", elapsed.as_secs_f64());
    Ok(())
}

/// Streams the source object into `upload`, one part at a time: a part is sent only after
/// its digest matched (format 2), and the whole object's size and SHA-256 are checked before
/// the caller completes the upload.
async fn send_checked(src: &Storage, manifest: &Manifest, upload: &mut Upload, progress: &Progress) -> Result<()> {
    let name = manifest.name.as_str();
    let mut interrupt = Interrupt::new()?;
    let mut stream = src.get_stream(name).await?;
    let cut: Vec<(u64, u64)> = match &manifest.parts {
        Some(parts) => parts.layout.parts(manifest.size).collect(),
        None => crate::manifest::PartLayout::standard(src.part_size() as u64)
            .parts(manifest.size)
            .collect(),
    };
    let mut whole = Sha256::new();
    let counter = progress.counter();
    for (index, (_, len)) in cut.iter().enumerate() {
        let mut part = BytesMut::zeroed(
            usize::try_from(*len).map_err(|_| Error::Integrity(format!("backup {name:?}: a part of {len} bytes")))?,
        );
        tokio::select! {
            read = stream.read_exact(&mut part) => {
                read.map_err(|e| catalogue::read_failed(name, &e))?;
            }
            err = interrupt.wait() => return Err(err),
        }
        whole.update(&part);
        if let Some(parts) = &manifest.parts {
            let digest = hex::encode(Sha256::digest(&part));
            if parts.sha256.get(index) != Some(&digest) {
                return Err(Error::Integrity(format!(
                    "backup {name:?}: part {} of {} does not match its manifest; not copied",
                    index + 1,
                    cut.len()
                )));
            }
        }
        counter.fetch_add(*len, std::sync::atomic::Ordering::Relaxed);
        upload.put_part(part.freeze()).await?;
    }
    let mut rest = [0u8; 1];
    if stream
        .read(&mut rest)
        .await
        .map_err(|e| catalogue::read_failed(name, &e))?
        > 0
    {
        return Err(Error::Integrity(format!(
            "backup {name:?}: the object holds more than its manifest's {} bytes",
            manifest.size
        )));
    }
    let sha256 = hex::encode(whole.finalize());
    catalogue::check_sums(manifest, manifest.size, &sha256)
}

/// The source manifest's bytes with the destination's run id and ETag: the fields that bind
/// a manifest to one stored object, outside its signature.
fn rebind(stored: &[u8], run: Option<&str>, etag: Option<&str>) -> Result<Vec<u8>> {
    let mut value: Value =
        serde_json::from_slice(stored).map_err(|e| Error::Integrity(format!("a manifest is unreadable: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(Error::Integrity("a manifest is not a JSON object".into()));
    };
    for (field, new) in [("run", run), ("data_etag", etag)] {
        match new {
            Some(v) => fields.insert(field.into(), v.into()),
            None => fields.remove(field),
        };
    }
    let mut bytes = serde_json::to_vec_pretty(&value).map_err(|e| Error::Integrity(format!("a manifest: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Where the copies go: the storage flags again, `--to-` prefixed, each with its env twin
/// (`REPLICA_`), so the destination has its own endpoint, bucket, credentials and CA.
#[derive(Debug, Clone, clap::Args)]
pub struct DestinationArgs {
    /// Where the copies go: s3://BUCKET[/PREFIX] or file:///PATH.
    #[arg(long = "to", env = "REPLICA_STORAGE", value_name = "URL")]
    pub to: String,

    /// S3 endpoint of the destination (default: AWS).
    #[arg(long = "to-s3-endpoint", env = "REPLICA_S3_ENDPOINT", value_name = "URL")]
    pub to_s3_endpoint: Option<String>,

    /// S3 region of the destination.
    #[arg(long = "to-region", env = "REPLICA_S3_REGION", default_value = crate::storage::DEFAULT_REGION)]
    pub to_region: String,

    /// S3 addressing style of the destination.
    #[arg(long = "to-s3-addressing", env = "REPLICA_S3_ADDRESSING", value_enum, default_value_t = crate::storage::Addressing::Path)]
    pub to_s3_addressing: crate::storage::Addressing,

    /// Directory holding the destination's `accesskey` and `secretkey` files.
    #[arg(long = "to-credentials-dir", env = "REPLICA_S3_CREDENTIALS_DIR", value_name = "DIR")]
    pub to_credentials_dir: Option<std::path::PathBuf>,

    /// PEM bundle of extra CA certificates for TLS to the destination.
    #[arg(long = "to-ca-bundle", env = "REPLICA_S3_CA_BUNDLE", value_name = "FILE")]
    pub to_ca_bundle: Option<std::path::PathBuf>,

    /// Server-side encryption at the destination: none or AES256.
    #[arg(long = "to-sse", env = "REPLICA_S3_SSE", default_value = "none", value_name = "MODE")]
    pub to_sse: String,

    /// S3 Object Lock on each copy and its manifest at the destination (governance or
    /// compliance), retained for --to-retention from the copy's write: the off-site copy
    /// cannot be deleted, even by someone holding the source's or the destination's keys
    /// (compliance). The destination bucket must have Object Lock enabled.
    #[arg(
        long = "to-object-lock",
        env = "REPLICA_OBJECT_LOCK",
        value_enum,
        value_name = "MODE"
    )]
    pub to_object_lock: Option<crate::storage::LockMode>,

    /// How long a locked copy is retained (the destination's retention: "days = 30", 30d,
    /// 720h...). Needed with --to-object-lock.
    #[arg(long = "to-retention", env = "REPLICA_RETENTION_TIME_DELTA", value_name = "DELTA")]
    pub to_retention: Option<String>,
}

impl DestinationArgs {
    /// Opens the destination; a bad flag is invalid input naming the `--to` flags.
    pub async fn open(&self) -> Result<Storage> {
        let args = crate::storage::StorageArgs {
            storage: self.to.clone(),
            s3_endpoint: self.to_s3_endpoint.clone(),
            region: self.to_region.clone(),
            s3_addressing: self.to_s3_addressing,
            credentials_dir: self.to_credentials_dir.clone(),
            ca_bundle: self.to_ca_bundle.clone(),
            sse: self.to_sse.clone(),
            object_lock: self.to_object_lock,
            ..Default::default()
        };
        let mut config = args
            .config()
            .map_err(|e| Error::invalid(format!("--to (destination): {e}")))?;
        let period = crate::retention::lock_period(
            self.to_retention.as_deref(),
            "--to-retention (REPLICA_RETENTION_TIME_DELTA)",
        )?;
        if self.to_object_lock.is_some() && period.is_none() {
            return Err(Error::invalid(
                "--to-object-lock (REPLICA_OBJECT_LOCK): needs --to-retention (REPLICA_RETENTION_TIME_DELTA): a copy is \
                 locked for as long as the destination keeps it",
            ));
        }
        config.lock_for(period)?;
        Ok(Storage::open_config(config).await?)
    }
}
