//! The backup pipeline: run the export command, stream its bytes (optionally through zstd)
//! into an upload while hashing them, then commit the backup by writing its manifest.
//!
//! Memory stays flat: at most one part being filled plus the parts in flight. A failure at
//! any step (exporter exits non-zero or is killed, storage fails, the job is interrupted)
//! aborts the upload, so nothing is left under the backup's name.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use async_compression::tokio::bufread::ZstdEncoder;
use async_compression::Level;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::compat::{FuturesAsyncWriteCompatExt, TokioAsyncWriteCompatExt};

use crate::claim;
use crate::command::{finish, scratch_dir, CommandSpec};
use crate::content_check;
use crate::error::{Error, Result};
use crate::hashing::{HashingReader, PartHasher};
use crate::interrupt::Interrupt;
use crate::manifest::{Compression, Manifest, PartLayout, Parts, FORMAT_ENCRYPTED, FORMAT_PARTS, MAX_MANIFEST_BYTES};
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
    /// Text the export must contain, or it is refused before commit ([`crate::content_check`]).
    pub must_contain: Option<String>,
}

/// Sizes and checksums measured in the stream.
struct Sums {
    raw_size: u64,
    raw_sha256: String,
    size: u64,
    sha256: String,
    /// SHA-256 of each part as uploaded (stored bytes).
    parts: Vec<String>,
}

/// Runs one backup and returns the committed manifest.
///
/// At most one run commits a name. Where the server enforces create-only writes the upload
/// completes and the manifest is written with `If-None-Match: *` (a no-replace link on
/// `file://`), so a concurrent run of the same name loses with exit 3. Where it does not, the
/// runs settle the name through claims before uploading ([`claim`]); the manifest still
/// records the run and the data object's ETag, and `list`, `verify`, `restore` and the pruner
/// check that identity.
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
    refuse_taken(storage, &name).await?;
    let enforced = log_write_guarantee(storage).await?;
    let run = format!("{:016x}", crate::storage::random_id());
    let progress = Progress::start("uploaded");
    let manifest = if enforced {
        write(storage, opts, &name, &run, &progress, now).await?
    } else {
        // No create-only writes: settle who writes this name before uploading (see `claim`).
        let claim = claim::take(storage, &name, &run).await?;
        let written = match refuse_taken(storage, &name).await {
            Ok(()) => write(storage, opts, &name, &run, &progress, now).await,
            Err(e) => Err(e),
        };
        claim.release(storage).await;
        written?
    };
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

/// Uploads the export under `name` and commits it with its manifest; on any failure nothing
/// is left visible under the name.
async fn write(
    storage: &Storage,
    opts: &BackupOptions,
    name: &str,
    run: &str,
    progress: &Progress,
    now: DateTime<Utc>,
) -> Result<Manifest> {
    let mut interrupt = Interrupt::new()?;
    let mut upload = storage.start_upload(name, Some(run)).await?;
    let sums = match export_into(storage, opts, name, &mut upload, progress, &mut interrupt).await {
        Ok(sums) => sums,
        Err(e) => {
            tracing::warn!("=== Backup {name:?} failed; aborting the upload so nothing is left behind");
            upload.abort().await;
            return Err(e);
        }
    };
    // Last look before the object becomes visible: a server that ignores If-None-Match
    // would let this upload replace a backup committed meanwhile.
    if let Err(e) = refuse_taken(storage, name).await {
        tracing::warn!("=== Backup {name:?} not completed; aborting the upload so nothing is left behind");
        upload.abort().await;
        return Err(e);
    }
    if let Err(e) = upload.complete().await {
        // A failed completion has already aborted the upload (S3) or removed the temp file.
        if e.is_already_exists() {
            return Err(taken(name, &storage.location()));
        }
        tracing::warn!("=== Backup {name:?} failed while completing; the upload was aborted so nothing is left behind");
        return Err(e.into());
    }
    let data_etag = check_own_data(storage, name, run, sums.size).await?;
    let encryption = crate::encryption::keys().encryption();
    let mut manifest = Manifest {
        format: match encryption {
            Some(_) => FORMAT_ENCRYPTED,
            None => FORMAT_PARTS,
        },
        name: name.to_string(),
        size: sums.size,
        sha256: sums.sha256,
        created: now,
        compression: opts.compression,
        raw_size: sums.raw_size,
        raw_sha256: sums.raw_sha256,
        exporter: opts.export.argv().to_vec(),
        tool: crate::TOOL.to_string(),
        run: storage.records_runs().then(|| run.to_string()),
        data_etag,
        adopted: None,
        parts: Some(Parts::standard(storage.part_size(), sums.parts)),
        encryption,
        signature: None,
    };
    commit_manifest(storage, &mut manifest).await?;
    Ok(manifest)
}

/// The exit-3 refusal for a name that is taken. Seconds in the name alone would switch
/// retention off, so the advice names both flags.
fn taken(name: &str, location: &str) -> Error {
    Error::Refused(format!(
        "backup {name:?} already exists in {location}; not overwriting it (two runs in the same minute? \
         add seconds to --name-template, e.g. sts-backup-%Y%m%d-%H%M%S.graph, and the same to the pruner's \
         --datetime-format, e.g. %Y%m%d-%H%M%S, or retention ignores the new names)"
    ))
}

/// Refuses (exit 3) when the data object or the manifest of `name` exists.
async fn refuse_taken(storage: &Storage, name: &str) -> Result<()> {
    if storage.head(name).await?.is_some() || storage.head(&manifest_key(name)).await?.is_some() {
        return Err(taken(name, &storage.location()));
    }
    Ok(())
}

/// Says in one line whether the server enforces one writer per name, and returns it.
async fn log_write_guarantee(storage: &Storage) -> Result<bool> {
    let enforced = storage.honours_conditional_writes().await?;
    if enforced {
        tracing::info!("storage enforces create-only writes: at most one run commits a backup name");
    } else {
        tracing::warn!(
            "storage ignores conditional writes (If-None-Match); concurrent runs of one name are caught \
             by a claim taken before uploading, and the manifest records the run and the data's ETag"
        );
    }
    Ok(enforced)
}

/// After completion the object must be this run's and hold exactly what was sent. Returns
/// its ETag. Only an object of this run is ever removed here: another run's is left to it.
async fn check_own_data(storage: &Storage, name: &str, run: &str, size: u64) -> Result<Option<String>> {
    let lost = |what: &str| {
        Error::Refused(format!(
            "backup {name:?}: {what} right after this run's upload completed: another run of the same name \
             replaced it at that moment (or something removed it); not committing"
        ))
    };
    match storage.head(name).await? {
        None if storage.records_runs() => Err(lost("the object vanished")),
        Some(meta) if storage.records_runs() && meta.run.as_deref() != Some(run) => {
            Err(lost("another run's object took its place"))
        }
        Some(meta) if meta.size == size => Ok(meta.etag),
        found => {
            if found.is_some() {
                let _ = storage.delete(name).await;
            }
            Err(Error::Integrity(format!(
                "backup {name:?}: storage reports {} bytes after upload, {size} were sent; the object was removed",
                found.map(|m| m.size.to_string()).unwrap_or_else(|| "no object".into()),
            )))
        }
    }
}

/// Writes the manifest (signed, with a signing key) create-only, then reads manifest and data
/// back: the run commits only when both are still its own (the after-the-fact check for
/// servers that ignore conditional writes).
async fn commit_manifest(storage: &Storage, manifest: &mut Manifest) -> Result<()> {
    let bytes = crate::signature::policy().seal(manifest);
    let name = &manifest.name;
    let key = manifest_key(name);
    match storage.put_new(&key, Bytes::from(bytes)).await {
        Ok(()) => {}
        Err(e) if e.is_already_exists() => return Err(taken(name, &storage.location())),
        Err(e) => {
            let _ = storage.delete(name).await;
            return Err(e.into());
        }
    }
    check_committed(storage, manifest).await
}

/// Reads manifest and data back: the run has committed only when both are still its own.
async fn check_committed(storage: &Storage, manifest: &Manifest) -> Result<()> {
    let name = &manifest.name;
    let stored = storage.get_bytes(&manifest_key(name), MAX_MANIFEST_BYTES).await?;
    let ours = Manifest::from_bytes(name, &stored).is_ok_and(|m| m.run == manifest.run && m.sha256 == manifest.sha256);
    let data = storage.head(name).await?;
    let data_ours = data
        .as_ref()
        .is_some_and(|d| crate::catalogue::same_data(manifest, d).is_ok());
    if !ours || !data_ours {
        return Err(Error::Refused(format!(
            "backup {name:?}: another run wrote the same name at the same time (the storage does not enforce \
             create-only writes); this run did not commit it, and the name is not listed as a backup unless \
             one run's manifest and data match"
        )));
    }
    Ok(())
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
        let sums = pump(source, opts, storage.part_size(), upload, progress, interrupt).await?;
        // `scratch` is removed on return, on success and on failure alike.
        refuse_empty(sums)
    } else {
        tracing::info!(
            "=== Exporting with `{}` and streaming backup \"{name}\" to {location}...",
            opts.export.display()
        );
        let mut child = opts.export.spawn(None, Stdio::null(), Stdio::piped())?;
        let group = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let pumped = pump(stdout, opts, storage.part_size(), upload, progress, interrupt);
        let sums = match exporter_outcome(&opts.export, &mut child, pumped).await {
            Ok(sums) => sums,
            Err(e) => {
                crate::command::kill(&mut child).await;
                crate::command::kill_group(group);
                return Err(e);
            }
        };
        finish(&opts.export, "export command", &mut child, interrupt).await?;
        refuse_empty(sums)
    }
}

/// The pumped stream, unless the exporter fails first: an exporter that exits non-zero while
/// a process it started in the background still holds its output open fails the backup at
/// once, instead of when that process finally closes it.
async fn exporter_outcome(
    spec: &CommandSpec,
    child: &mut tokio::process::Child,
    pumped: impl std::future::Future<Output = Result<Sums>>,
) -> Result<Sums> {
    tokio::pin!(pumped);
    tokio::select! {
        sums = &mut pumped => sums,
        status = child.wait() => match status {
            Ok(status) if !status.success() => Err(Error::Command(format!(
                "export command `{}` {}",
                spec.display(),
                crate::command::describe_status(status)
            ))),
            _ => pumped.await,
        },
    }
}

/// Streams `source` into the upload part by part; the stored bytes are hashed (whole and per
/// part) on the [`PartHasher`]'s thread, the raw bytes of a compressed or encrypted backup in
/// the stream. The order is export, zstd, age: the stored object is a plain age file.
async fn pump<R: AsyncRead + Unpin>(
    source: R,
    opts: &BackupOptions,
    part_size: usize,
    upload: &mut Upload,
    progress: &Progress,
    interrupt: &mut Interrupt,
) -> Result<Sums> {
    let (source, seen) = content_check::watch(source, opts.must_contain.as_deref());
    let hasher = PartHasher::start();
    let counter = progress.counter();
    let encryptor = crate::encryption::keys().encryptor();
    let mut send = Send {
        part_size,
        upload,
        hasher: &hasher,
        progress: &counter,
        interrupt,
    };
    let raw = if opts.compression == Compression::None && encryptor.is_none() {
        // Stored bytes are the raw bytes: one digest serves both.
        let mut stored = source;
        send.parts(&mut stored).await?;
        None
    } else {
        let mut raw = HashingReader::new(source);
        match opts.compression {
            Compression::None => send.sealed(&mut raw, encryptor).await?,
            Compression::Zstd => {
                let encoder = ZstdEncoder::with_quality(BufReader::with_capacity(256 * 1024, &mut raw), Level::Default);
                send.sealed(encoder, encryptor).await?;
            }
        }
        Some(raw.finish())
    };
    let stored = hasher.finish().await.map_err(|e| Error::io("hashing the backup", e))?;
    let (raw_size, raw_sha256) = raw.unwrap_or_else(|| (stored.size, stored.sha256.clone()));
    seen.check()?;
    Ok(Sums {
        raw_size,
        raw_sha256,
        size: stored.size,
        sha256: stored.sha256,
        parts: stored.parts,
    })
}

/// Bytes buffered between the encryptor and the uploader: a few of age's 64 KiB chunks.
const SEAL_PIPE: usize = 256 * 1024;

/// Where the stored stream goes: cut into parts, hashed and uploaded.
struct Send<'a> {
    part_size: usize,
    upload: &'a mut Upload,
    hasher: &'a PartHasher,
    progress: &'a AtomicU64,
    interrupt: &'a mut Interrupt,
}

impl Send<'_> {
    /// Stores `plain` as it is, or encrypted when there is an encryptor: age encrypts into a
    /// small pipe that the uploader reads, chunk by chunk, so memory stays flat.
    async fn sealed<R: AsyncRead + Unpin>(&mut self, plain: R, encryptor: Option<age::Encryptor>) -> Result<()> {
        let Some(encryptor) = encryptor else {
            let mut plain = plain;
            return self.parts(&mut plain).await;
        };
        let (pipe, mut ciphertext) = tokio::io::duplex(SEAL_PIPE);
        let encrypting = async move {
            let mut plain = BufReader::with_capacity(SEAL_PIPE, plain);
            let mut sealed = encryptor.wrap_async_output(pipe.compat_write()).await?.compat_write();
            tokio::io::copy_buf(&mut plain, &mut sealed).await?;
            // Closing writes age's last chunk, marked final, and ends the pipe.
            sealed.shutdown().await
        };
        let encrypting = async {
            encrypting
                .await
                .map_err(|e| Error::io("reading and encrypting the export stream", e))
        };
        futures::future::try_join(encrypting, self.parts(&mut ciphertext)).await?;
        Ok(())
    }

    /// Cuts the stored stream into parts by [`PartLayout::standard`] and uploads them; each part
    /// goes to the hasher first (the manifest's per-part digests), so what is hashed is exactly what
    /// is sent.
    async fn parts<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<()> {
        let Send {
            part_size,
            upload,
            hasher,
            progress,
            interrupt,
        } = self;
        let part_size = *part_size;
        for index in 0.. {
            let part_size = part_size_for(part_size, index);
            tokio::select! {
                room = upload.make_room(part_size) => room?,
                err = interrupt.wait() => return Err(err),
            }
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
                progress.fetch_add(read as u64, Ordering::Relaxed);
            }
            if !part.is_empty() {
                let part = part.freeze();
                tokio::select! {
                    queued = hasher.add(part.clone()) => queued.map_err(|e| Error::io("hashing the backup", e))?,
                    err = interrupt.wait() => return Err(err),
                }
                tokio::select! {
                    sent = upload.put_part(part) => sent?,
                    err = interrupt.wait() => return Err(err),
                }
            }
            if eof {
                break;
            }
        }
        Ok(())
    }
}

fn refuse_empty(sums: Sums) -> Result<Sums> {
    if sums.raw_size == 0 {
        return Err(Error::Command(
            "the export command produced no data; an empty backup is refused".into(),
        ));
    }
    Ok(sums)
}

/// Bytes in part `index` of a backup with `base`-sized parts: the manifest's rule
/// ([`PartLayout::standard`]), so restore finds the same boundaries.
fn part_size_for(base: usize, index: usize) -> usize {
    let len = PartLayout::standard(base as u64).part_len(index as u64);
    usize::try_from(len).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::part_size_for;

    #[test]
    fn parts_grow_so_the_10000_part_limit_holds_large_backups() {
        const MIB: usize = 1 << 20;
        assert_eq!(part_size_for(8 * MIB, 0), 8 * MIB);
        assert_eq!(part_size_for(8 * MIB, 2_499), 8 * MIB);
        assert_eq!(part_size_for(8 * MIB, 2_500), 16 * MIB);
        assert_eq!(part_size_for(8 * MIB, 9_999), 64 * MIB);
        let total: usize = (0..10_000).map(|i| part_size_for(8 * MIB, i)).sum();
        assert!(total > 290 * 1024 * MIB, "{}", total / MIB);
        assert_eq!(
            part_size_for(4 << 30, 9_999),
            5 << 30,
            "never above the 5 GiB part limit"
        );
    }
}
