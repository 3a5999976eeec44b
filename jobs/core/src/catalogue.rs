//! The catalogue: which backups a store holds and whether one is intact. Reads manifests,
//! lists the restorable backups (and says why others are not) and re-reads one against its
//! manifest; never writes.
//!
//! A backup is restorable when its manifest is readable and agrees with the data object
//! (size, and the ETag it recorded), or when it is a legacy StackState backup: a data object
//! named like `sts-backup-YYYYMMDD-HHMM.graph` that has no manifest and was not written by
//! this tool (no run id in its metadata). Legacy backups have no checksum; `adopt` gives
//! them one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;
use regex::Regex;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::interrupt::Interrupt;
use crate::manifest::{Compression, Manifest, MAX_MANIFEST_BYTES};
use crate::naming::{manifest_key, validate_name, MANIFEST_SUFFIX};
use crate::progress::{human_bytes, Progress};
use crate::signature;
use crate::storage::{ObjectMeta, Storage, StorageError};
use crate::verified::stream_verified;

/// Names of the backups StackState's own backup job writes (`sts-backup-%Y%m%d-%H%M.graph`).
static LEGACY_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^sts-backup-([0-9]{8}-[0-9]{4})\.graph$").expect("a valid pattern"));

/// When a StackState backup name says it was made, if it is one.
pub fn legacy_timestamp(name: &str) -> Option<DateTime<Utc>> {
    let stamp = LEGACY_NAME.captures(name)?.get(1)?.as_str();
    NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M")
        .ok()
        .map(|t| t.and_utc())
}

/// A backup that can be restored.
// One value per listed backup, built once and rarely moved: boxing the manifest would cost
// every match an indirection for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Backup {
    /// Written by this tool (or adopted): restored only after its checksum matched.
    Committed(Manifest),
    /// Made by the tool this one replaces: no manifest, no checksum.
    Legacy(LegacyBackup),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyBackup {
    pub name: String,
    pub size: u64,
    /// From the name, else the object's modification time.
    pub created: DateTime<Utc>,
    pub etag: Option<String>,
}

impl Backup {
    pub fn name(&self) -> &str {
        match self {
            Backup::Committed(m) => &m.name,
            Backup::Legacy(l) => &l.name,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Backup::Committed(m) => m.size,
            Backup::Legacy(l) => l.size,
        }
    }

    pub fn created(&self) -> DateTime<Utc> {
        match self {
            Backup::Committed(m) => m.created,
            Backup::Legacy(l) => l.created,
        }
    }
}

/// A backup-looking object that cannot be restored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenBackup {
    pub name: String,
    pub reason: String,
}

/// What a store holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalogue {
    /// Restorable backups, oldest first.
    pub backups: Vec<Backup>,
    /// Backups that `verify` and `restore` would reject; never counted as restorable.
    pub broken: Vec<BrokenBackup>,
}

/// Whether `data` is the object `manifest` was written for: the run id in the object's
/// metadata (when both have one) and the ETag recorded at upload (when both have one).
pub fn same_data(manifest: &Manifest, data: &ObjectMeta) -> std::result::Result<(), String> {
    if let (Some(want), Some(found)) = (&manifest.run, &data.run) {
        if want != found {
            return Err(format!(
                "its data object was written by another run ({found}) than its manifest ({want}): \
                 concurrent backups of one name"
            ));
        }
    }
    if let (Some(want), Some(found)) = (&manifest.data_etag, &data.etag) {
        if want != found {
            return Err(format!(
                "it is corrupt or was replaced: its data object has ETag {found}, the manifest was written for \
                 ETag {want}"
            ));
        }
    }
    if data.size != manifest.size {
        return Err(format!(
            "the object holds {} bytes but its manifest says {}",
            data.size, manifest.size
        ));
    }
    Ok(())
}

/// Reads backup `name`: its manifest, or, for a legacy StackState backup, what the data
/// object says. Anything else without a manifest is an uncommitted leftover (exit 4).
pub async fn read_backup(storage: &Storage, name: &str) -> Result<Backup> {
    validate_name(name).map_err(|e| Error::invalid(format!("NAME: {e}")))?;
    match storage.get_bytes(&manifest_key(name), MAX_MANIFEST_BYTES).await {
        Ok(bytes) => {
            let manifest = Manifest::from_bytes(name, &bytes)?;
            signature::policy().check(&bytes, &manifest)?;
            Ok(Backup::Committed(manifest))
        }
        Err(e) if e.is_not_found() => match storage.head(name).await? {
            Some(meta) => {
                let found = legacy(storage, &meta, legacy_timestamp(name)).ok_or_else(|| {
                    Error::Integrity(format!(
                        "backup {name:?} has no manifest: it was never committed (an interrupted run?) and cannot be trusted"
                    ))
                })?;
                match signature::policy().refuses_unsigned(name) {
                    Some(refusal) => Err(refusal),
                    None => Ok(Backup::Legacy(found)),
                }
            }
            None => Err(Error::invalid(format!(
                "NAME: there is no backup {name:?} in {}; `stackgraph-backup list` shows the backups",
                storage.location()
            ))),
        },
        Err(e) => Err(e.into()),
    }
}

/// Reads and checks the manifest of backup `name` (legacy backups have none: exit 4).
pub async fn read_manifest(storage: &Storage, name: &str) -> Result<Manifest> {
    match read_backup(storage, name).await? {
        Backup::Committed(m) => Ok(m),
        Backup::Legacy(_) => Err(Error::Integrity(format!(
            "backup {name:?} has no manifest (a StackState backup); `stackgraph-backup adopt {name}` gives it one"
        ))),
    }
}

/// A manifest-less data object (`meta`, from a HEAD) is a legacy backup when its name says
/// when it was made (`stamp`) and this tool did not write it (S3 records our run id; a
/// `file://` directory is only ever written by this tool).
fn legacy(storage: &Storage, meta: &ObjectMeta, stamp: Option<DateTime<Utc>>) -> Option<LegacyBackup> {
    if !storage.records_runs() || meta.run.is_some() {
        return None;
    }
    Some(LegacyBackup {
        name: meta.key.clone(),
        size: meta.size,
        created: stamp.or(meta.modified.map(DateTime::<Utc>::from))?,
        etag: meta.etag.clone(),
    })
}

/// The restorable backups, oldest first, and the broken ones.
pub async fn list(storage: &Storage) -> Result<Catalogue> {
    storage.check(false).await?;
    let objects = storage.list().await?;
    survey(storage, &objects, legacy_timestamp).await
}

/// Sorts the listed `objects` into restorable and broken backups: one manifest read per
/// backup, one HEAD per manifest-less object whose name `legacy_stamp` dates. The pruner
/// passes its own `--name-regexp` rule as `legacy_stamp`, `list` the StackState name.
pub async fn survey(
    storage: &Storage,
    objects: &[ObjectMeta],
    legacy_stamp: impl Fn(&str) -> Option<DateTime<Utc>>,
) -> Result<Catalogue> {
    let data: HashMap<&str, &ObjectMeta> = objects
        .iter()
        .filter(|o| !o.key.ends_with(MANIFEST_SUFFIX) && validate_name(&o.key).is_ok())
        .map(|o| (o.key.as_str(), o))
        .collect();
    let with_manifest: Vec<&ObjectMeta> = objects
        .iter()
        .filter_map(|o| o.key.strip_suffix(MANIFEST_SUFFIX))
        .filter_map(|name| data.get(name).copied())
        .collect();
    let without: Vec<(&ObjectMeta, DateTime<Utc>)> = data
        .values()
        .filter(|o| !objects.iter().any(|m| m.key == manifest_key(&o.key)))
        .filter_map(|o| legacy_stamp(&o.key).map(|t| (*o, t)))
        .collect();

    let mut out = Catalogue::default();
    let checked: Vec<_> = futures::stream::iter(with_manifest)
        .map(|obj| async move { (obj, check_committed(storage, obj).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    for (obj, manifest) in checked {
        match manifest {
            Ok(m) => out.backups.push(Backup::Committed(m)),
            Err(reason) => out.broken.push(BrokenBackup {
                name: obj.key.clone(),
                reason,
            }),
        }
    }
    for found in find_legacy(storage, &without).await? {
        match signature::policy().refuses_unsigned(&found.name) {
            Some(refusal) => out.broken.push(BrokenBackup {
                name: found.name,
                reason: format!("{refusal}; `stackgraph-backup adopt --signing-key` signs it"),
            }),
            None => out.backups.push(Backup::Legacy(found)),
        }
    }
    out.backups
        .sort_by(|a, b| a.created().cmp(&b.created()).then_with(|| a.name().cmp(b.name())));
    out.broken.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The manifest of the listed data object `obj` if it is readable and was written for that
/// object; otherwise why not.
pub async fn check_committed(storage: &Storage, obj: &ObjectMeta) -> std::result::Result<Manifest, String> {
    let manifest = read_manifest(storage, &obj.key).await.map_err(|e| e.to_string())?;
    same_data(&manifest, obj)?;
    Ok(manifest)
}

/// Which of the manifest-less data objects (with the time their name says) are legacy
/// backups: one HEAD each, for the run id. Only S3 records runs; elsewhere there are none.
pub async fn find_legacy(storage: &Storage, objects: &[(&ObjectMeta, DateTime<Utc>)]) -> Result<Vec<LegacyBackup>> {
    if !storage.records_runs() {
        return Ok(Vec::new());
    }
    let heads: Vec<_> = futures::stream::iter(objects)
        .map(|(obj, stamp)| async move { (storage.head(&obj.key).await, *stamp) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut found = Vec::new();
    for (head, stamp) in heads {
        found.extend(head?.and_then(|meta| legacy(storage, &meta, Some(stamp))));
    }
    Ok(found)
}

/// Re-reads backup `name` and checks size and SHA-256 against its manifest. A legacy
/// backup is read whole and its size checked; it has no checksum to compare (exit 0 with a
/// warning).
pub async fn verify_backup(storage: &Storage, name: &str) -> Result<Backup> {
    let backup = read_backup(storage, name).await?;
    let mut interrupt = Interrupt::new()?;
    tracing::info!("=== Verifying backup \"{name}\" ({})...", human_bytes(backup.size()));
    let progress = Progress::start("verified");
    if let Backup::Committed(manifest @ Manifest { parts: Some(_), .. }) = &backup {
        verify_parts(storage, manifest, &progress, &mut interrupt).await?;
        return Ok(backup);
    }
    let stream = match &backup {
        Backup::Committed(m) => open_data(storage, m).await?,
        Backup::Legacy(_) => storage.get_stream(name).await?,
    };
    let mut reader = HashingReader::new(stream).with_progress(progress.counter());
    let mut sink = tokio::io::sink();
    // Only the storage stream can fail here (nothing is decoded): a failure is a lost connection.
    tokio::select! {
        copied = tokio::io::copy(&mut reader, &mut sink) => {
            copied.map_err(|e| read_failed(name, &e))?;
        }
        err = interrupt.wait() => return Err(err),
    }
    let (size, sha256) = reader.finish();
    match &backup {
        Backup::Committed(m) => {
            check_sums(m, size, &sha256)?;
            tracing::info!("=== Backup \"{name}\" is intact: {size} bytes, sha256 {sha256}");
        }
        Backup::Legacy(l) => {
            if size != l.size {
                return Err(Error::Integrity(format!(
                    "backup {name:?}: read {size} bytes, the storage lists {}",
                    l.size
                )));
            }
            tracing::warn!(
                "backup {name:?} has no manifest (a StackState backup): read {size} bytes (sha256 {sha256}) but there \
                 is no checksum to compare; `stackgraph-backup adopt {name}` records one"
            );
        }
    }
    Ok(backup)
}

/// Verifies a format-2 backup in one read, part by part (the stored bytes; nothing is
/// decompressed): a corrupt part is named.
async fn verify_parts(
    storage: &Storage,
    manifest: &Manifest,
    progress: &Progress,
    interrupt: &mut Interrupt,
) -> Result<()> {
    let name = manifest.name.as_str();
    let Some(parts) = &manifest.parts else {
        return Ok(());
    };
    // Given an identity, an encrypted backup is decrypted too, proving the plaintext.
    let decrypt = manifest.encryption.is_some() && crate::encryption::keys().decrypts();
    let stored = match decrypt {
        true => manifest.clone(),
        false => Manifest {
            compression: Compression::None,
            encryption: None,
            ..manifest.clone()
        },
    };
    let mut sink = tokio::io::sink();
    let counter = progress.counter();
    let write_failed = |e: &std::io::Error| read_failed(name, e);
    stream_verified(storage, &stored, parts, counter, &mut sink, write_failed, interrupt).await?;
    tracing::info!(
        "=== Backup \"{name}\" is intact: {} bytes in {} parts, each matching its sha256, so the whole is sha256 {}",
        manifest.size,
        parts.sha256.len(),
        manifest.sha256
    );
    Ok(())
}

/// The error for a read of the stored bytes that failed half-way: a lost connection is a
/// failure (exit 1), not a bad backup.
pub(crate) fn read_failed(name: &str, e: &std::io::Error) -> Error {
    Error::Storage(StorageError::ConnectionLost {
        key: name.to_string(),
        detail: e.to_string(),
    })
}

/// A storage stream that remembers whether it failed, so a failed read further down (in the
/// decoder) is told apart from a bad backup.
pub(crate) struct Tracked<R> {
    inner: R,
    failed: Arc<AtomicBool>,
}

impl<R> Tracked<R> {
    pub(crate) fn new(inner: R, failed: Arc<AtomicBool>) -> Self {
        Tracked { inner, failed }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tracked<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(_)) = &polled {
            self.failed.store(true, Ordering::SeqCst);
        }
        polled
    }
}

/// Opens the data object of a committed backup after checking it is the one the manifest
/// was written for.
pub(crate) async fn open_data(storage: &Storage, manifest: &Manifest) -> Result<crate::storage::ByteStream> {
    let name = &manifest.name;
    check_data(storage, manifest).await?;
    storage.get_stream(name).await.map_err(|e| data_error(name, e))
}

/// Checks that the data object of a committed backup exists and is the one its manifest
/// was written for (HEAD: size, run, ETag).
pub(crate) async fn check_data(storage: &Storage, manifest: &Manifest) -> Result<()> {
    let name = &manifest.name;
    let meta = storage.head(name).await?.ok_or_else(|| data_missing(name))?;
    same_data(manifest, &meta).map_err(|why| Error::Integrity(format!("backup {name:?} cannot be trusted: {why}")))
}

pub(crate) fn data_missing(name: &str) -> Error {
    Error::Integrity(format!("backup {name:?}: the data object is missing"))
}

/// A failed read of a committed backup's data object: gone is an integrity failure (its
/// manifest promised it), anything else a storage error.
fn data_error(name: &str, e: StorageError) -> Error {
    if e.is_not_found() {
        data_missing(name)
    } else {
        e.into()
    }
}

/// The most [`read_start`] reads: an age header (one X25519 stanza is about 100 bytes) and
/// its nonce fit many times over.
pub const START_READ: u64 = 64 * 1024;

/// The first bytes of a committed backup's data object, for a look at its header before
/// anything is changed: at most [`START_READ`], never past the first part, in one bounded
/// read. When that is the whole first part it is checked against its digest; otherwise the
/// bytes are unverified and serve only to be judged, never to be imported.
pub(crate) async fn read_start(storage: &Storage, manifest: &Manifest) -> Result<Vec<u8>> {
    let name = &manifest.name;
    check_data(storage, manifest).await?;
    let first_part = manifest
        .parts
        .as_ref()
        .and_then(|p| p.layout.parts(manifest.size).next().zip(p.sha256.first()))
        .map(|((_, len), want)| (len, want));
    let len = first_part.map_or(manifest.size, |(len, _)| len).min(START_READ);
    let start = storage.get_start(name, len).await.map_err(|e| data_error(name, e))?;
    if (start.len() as u64) < len {
        return Err(Error::Integrity(format!(
            "backup {name:?} is corrupt: the object ends at byte {}, before the size its manifest records",
            start.len()
        )));
    }
    if let Some((part_len, want)) = first_part.filter(|(part_len, _)| *part_len == len) {
        let got = hex::encode(Sha256::digest(&start));
        if got != *want {
            return Err(Error::Integrity(format!(
                "backup {name:?} is corrupt: part 1 (bytes 0..{part_len}) has sha256 {got}, the manifest says {want}"
            )));
        }
    }
    Ok(start)
}

pub(crate) fn check_sums(manifest: &Manifest, size: u64, sha256: &str) -> Result<()> {
    if size != manifest.size || !sha256.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(Error::Integrity(format!(
            "backup {:?} is corrupt: read {size} bytes with sha256 {sha256}, the manifest says {} bytes with sha256 {}",
            manifest.name, manifest.size, manifest.sha256
        )));
    }
    Ok(())
}
