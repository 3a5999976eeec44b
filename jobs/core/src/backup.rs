//! The backup pipeline: run the export command, stream its bytes (optionally through zstd)
//! into an upload while hashing them, then commit the backup by writing its manifest.
//!
//! Memory stays flat: at most one part being filled plus the parts in flight. A failure at
//! any step (exporter exits non-zero or is killed, storage fails, the job is interrupted)
//! aborts the upload, so nothing is left under the backup's name.

use std::path::PathBuf;
use std::process::Stdio;

use async_compression::tokio::bufread::ZstdEncoder;
use async_compression::Level;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use crate::command::{finish, scratch_dir, CommandSpec};
use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::interrupt::Interrupt;
use crate::manifest::{Compression, Manifest, FORMAT_VERSION};
use crate::naming::{manifest_key, validate_name, NameTemplate};
use crate::progress::{human_bytes, Progress};
use crate::storage::{Storage, StorageError, Upload};

pub struct BackupOptions {
    pub template: NameTemplate,
    pub compression: Compression,
    pub export: CommandSpec,
    /// Where a `{file}` export writes; the system temp dir when unset.
    pub scratch_dir: Option<PathBuf>,
    /// Create the bucket when it is missing (scheduled backups into the chart's own storage).
    pub create_bucket: bool,
}

/// Sizes and checksums measured in the stream.
struct Sums {
    raw_size: u64,
    raw_sha256: String,
    size: u64,
    sha256: String,
}

/// Runs one backup and returns the committed manifest.
pub async fn backup(storage: &Storage, opts: &BackupOptions, now: DateTime<Utc>) -> Result<Manifest> {
    let name = opts.template.render(now);
    validate_name(&name).map_err(|e| Error::invalid(format!("--name-template: {e}")))?;
    let location = storage.location();
    match storage.check(true).await {
        Err(StorageError::NoSuchBucket { .. }) if opts.create_bucket => {
            tracing::info!("=== Creating missing bucket for {location}");
            storage.create_bucket().await?;
        }
        checked => checked?,
    }
    if storage.head(&name).await?.is_some() || storage.head(&manifest_key(&name)).await?.is_some() {
        return Err(Error::Refused(format!(
            "backup {name:?} already exists in {location}; not overwriting it (two runs in the same minute? \
             add seconds to --name-template, e.g. sts-backup-%Y%m%d-%H%M%S.graph)"
        )));
    }

    let mut interrupt = Interrupt::new()?;
    let progress = Progress::start("uploaded");
    let mut upload = storage.start_upload(&name).await?;
    let sums = match export_into(storage, opts, &name, &mut upload, &progress, &mut interrupt).await {
        Ok(sums) => sums,
        Err(e) => {
            tracing::warn!("=== Backup {name:?} failed; aborting the upload so nothing is left behind");
            upload.abort().await;
            return Err(e);
        }
    };
    if let Err(e) = upload.complete().await {
        // A failed completion has already aborted the upload (S3) or removed the temp file.
        tracing::warn!("=== Backup {name:?} failed while completing; the upload was aborted so nothing is left behind");
        return Err(e.into());
    }

    // The server must hold exactly what we sent before the manifest vouches for it.
    match storage.head(&name).await? {
        Some(meta) if meta.size == sums.size => {}
        found => {
            let _ = storage.delete(&name).await;
            return Err(Error::Integrity(format!(
                "backup {name:?}: storage reports {} bytes after upload, {} were sent; the object was removed",
                found.map(|m| m.size.to_string()).unwrap_or_else(|| "no object".into()),
                sums.size
            )));
        }
    }

    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: name.clone(),
        size: sums.size,
        sha256: sums.sha256,
        created: now,
        compression: opts.compression,
        raw_size: sums.raw_size,
        raw_sha256: sums.raw_sha256,
        exporter: opts.export.argv().to_vec(),
        tool: crate::TOOL.to_string(),
    };
    if let Err(e) = storage
        .put_bytes(&manifest_key(&name), Bytes::from(manifest.to_bytes()))
        .await
    {
        let _ = storage.delete(&name).await;
        return Err(e.into());
    }
    let (_, elapsed, rate) = progress.summary();
    tracing::info!(
        name = %name,
        size = manifest.size,
        sha256 = %manifest.sha256,
        "=== Backup \"{name}\" committed to {location}: {} stored ({} exported), sha256 {}, in {:.1}s ({rate})",
        human_bytes(manifest.size),
        human_bytes(manifest.raw_size),
        manifest.sha256,
        elapsed.as_secs_f64()
    );
    Ok(manifest)
}

async fn export_into(
    storage: &Storage,
    opts: &BackupOptions,
    name: &str,
    upload: &mut Upload,
    progress: &Progress,
    interrupt: &mut Interrupt,
) -> Result<Sums> {
    let location = storage.location();
    if opts.export.uses_file() {
        let scratch = scratch_dir(opts.scratch_dir.as_deref(), "sts-backup-")?;
        let file = scratch.path().join(name);
        tracing::info!(
            "=== Exporting to \"{}\" with `{}`...",
            file.display(),
            opts.export.display()
        );
        let mut child = opts
            .export
            .spawn(Some(&file), Stdio::null(), Stdio::from(std::io::stderr()))?;
        finish(&opts.export, "export command", &mut child, interrupt).await?;
        let source = tokio::fs::File::open(&file).await.map_err(|e| {
            Error::Command(format!(
                "export failed: backup file \"{}\" was not written ({e})",
                file.display()
            ))
        })?;
        tracing::info!("=== Uploading backup \"{name}\" to {location}...");
        let sums = pump(
            source,
            opts.compression,
            storage.part_size(),
            upload,
            progress,
            interrupt,
        )
        .await?;
        // `scratch` is removed on return, on success and on failure alike.
        refuse_empty(sums)
    } else {
        tracing::info!(
            "=== Exporting with `{}` and streaming backup \"{name}\" to {location}...",
            opts.export.display()
        );
        let mut child = opts.export.spawn(None, Stdio::null(), Stdio::piped())?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let pumped = pump(
            stdout,
            opts.compression,
            storage.part_size(),
            upload,
            progress,
            interrupt,
        )
        .await;
        let sums = match pumped {
            Ok(sums) => sums,
            Err(e) => {
                crate::command::kill(&mut child).await;
                return Err(e);
            }
        };
        finish(&opts.export, "export command", &mut child, interrupt).await?;
        refuse_empty(sums)
    }
}

/// Streams `source` into the upload part by part, hashing raw and stored bytes on the way.
async fn pump<R: AsyncRead + Unpin>(
    source: R,
    compression: Compression,
    part_size: usize,
    upload: &mut Upload,
    progress: &Progress,
    interrupt: &mut Interrupt,
) -> Result<Sums> {
    let raw = HashingReader::new(source);
    let sums = match compression {
        Compression::None => {
            let mut stored = raw.with_progress(progress.counter());
            send_parts(&mut stored, part_size, upload, interrupt).await?;
            let (size, sha256) = stored.finish();
            Sums {
                raw_size: size,
                raw_sha256: sha256.clone(),
                size,
                sha256,
            }
        }
        Compression::Zstd => {
            let encoder = ZstdEncoder::with_quality(BufReader::with_capacity(256 * 1024, raw), Level::Default);
            let mut stored = HashingReader::new(encoder).with_progress(progress.counter());
            send_parts(&mut stored, part_size, upload, interrupt).await?;
            let (encoder, size, sha256) = stored.into_parts();
            let (raw_size, raw_sha256) = encoder.into_inner().into_inner().finish();
            Sums {
                raw_size,
                raw_sha256,
                size,
                sha256,
            }
        }
    };
    Ok(sums)
}

fn refuse_empty(sums: Sums) -> Result<Sums> {
    if sums.raw_size == 0 {
        return Err(Error::Command(
            "the export command produced no data; an empty backup is refused".into(),
        ));
    }
    Ok(sums)
}

async fn send_parts<R: AsyncRead + Unpin>(
    reader: &mut R,
    part_size: usize,
    upload: &mut Upload,
    interrupt: &mut Interrupt,
) -> Result<()> {
    loop {
        let mut part = BytesMut::with_capacity(part_size);
        let mut eof = false;
        while part.len() < part_size {
            let read = tokio::select! {
                read = reader.read_buf(&mut part) => read.map_err(|e| Error::io("reading the export stream", e))?,
                err = interrupt.wait() => return Err(err),
            };
            if read == 0 {
                eof = true;
                break;
            }
        }
        if !part.is_empty() {
            tokio::select! {
                sent = upload.put_part(part.freeze()) => sent?,
                err = interrupt.wait() => return Err(err),
            }
        }
        if eof {
            return Ok(());
        }
    }
}
