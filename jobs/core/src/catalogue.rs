//! The catalogue: which backups a store holds and whether one is intact. Reads manifests,
//! lists the committed backups and re-reads one against its manifest; never writes.

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::interrupt::Interrupt;
use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::naming::{manifest_key, validate_name, MANIFEST_SUFFIX};
use crate::progress::{human_bytes, Progress};
use crate::storage::Storage;

/// Reads and checks the manifest of backup `name`.
pub async fn read_manifest(storage: &Storage, name: &str) -> Result<Manifest> {
    validate_name(name).map_err(|e| Error::invalid(format!("NAME: {e}")))?;
    match storage.get_bytes(&manifest_key(name), MAX_MANIFEST_BYTES).await {
        Ok(bytes) => Manifest::from_bytes(name, &bytes),
        Err(e) if e.is_not_found() => {
            if storage.head(name).await?.is_some() {
                Err(Error::Integrity(format!(
                    "backup {name:?} has no manifest: it was never committed (an interrupted run?) and cannot be trusted"
                )))
            } else {
                Err(Error::invalid(format!(
                    "NAME: there is no backup {name:?} in {}; `stackgraph-backup list` shows the backups",
                    storage.location()
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The committed backups (data and a readable manifest of matching size), oldest first.
pub async fn list(storage: &Storage) -> Result<Vec<Manifest>> {
    storage.check(false).await?;
    let objects = storage.list().await?;
    let sizes: std::collections::HashMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let names: Vec<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_suffix(MANIFEST_SUFFIX))
        .filter(|name| sizes.contains_key(name) && validate_name(name).is_ok())
        .collect();
    let manifests: Vec<_> = futures::stream::iter(names)
        .map(|name| async move { (name, read_manifest(storage, name).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut out = Vec::new();
    for (name, manifest) in manifests {
        match manifest {
            Ok(m) if sizes.get(name) == Some(&m.size) => out.push(m),
            Ok(m) => tracing::warn!(
                "skipping backup {name:?}: the object holds {} bytes but its manifest says {}; run verify",
                sizes.get(name).copied().unwrap_or(0),
                m.size
            ),
            Err(e) => tracing::warn!("skipping backup {name:?}: {e}"),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// Re-reads backup `name` and checks size and SHA-256 against its manifest.
pub async fn verify_backup(storage: &Storage, name: &str) -> Result<Manifest> {
    let manifest = read_manifest(storage, name).await?;
    let mut interrupt = Interrupt::new()?;
    tracing::info!("=== Verifying backup \"{name}\" ({})...", human_bytes(manifest.size));
    let progress = Progress::start("verified");
    let stream = open_data(storage, &manifest).await?;
    let mut reader = HashingReader::new(stream).with_progress(progress.counter());
    let mut sink = tokio::io::sink();
    tokio::select! {
        copied = tokio::io::copy(&mut reader, &mut sink) => {
            copied.map_err(|e| Error::Integrity(format!("backup {name:?}: reading the object failed: {e}")))?;
        }
        err = interrupt.wait() => return Err(err),
    }
    let (size, sha256) = reader.finish();
    check_sums(&manifest, size, &sha256)?;
    tracing::info!("=== Backup \"{name}\" is intact: {size} bytes, sha256 {sha256}");
    Ok(manifest)
}

pub(crate) async fn open_data(storage: &Storage, manifest: &Manifest) -> Result<crate::storage::ByteStream> {
    storage.get_stream(&manifest.name).await.map_err(|e| {
        if e.is_not_found() {
            Error::Integrity(format!("backup {:?}: the data object is missing", manifest.name))
        } else {
            e.into()
        }
    })
}

pub(crate) fn check_sums(manifest: &Manifest, size: u64, sha256: &str) -> Result<()> {
    if size != manifest.size || sha256 != manifest.sha256 {
        return Err(Error::Integrity(format!(
            "backup {:?} is corrupt: read {size} bytes with sha256 {sha256}, the manifest says {} bytes with sha256 {}",
            manifest.name, manifest.size, manifest.sha256
        )));
    }
    Ok(())
}
