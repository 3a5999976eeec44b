//! Adoption: giving a legacy StackState backup (data object, no manifest) the manifest this
//! tool writes, so it is verified like any other from then on. The object is read once and
//! hashed; the manifest records that it was adopted and when, and is written create-only.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::catalogue::{list, read_backup, Backup, LegacyBackup};
use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::manifest::{Compression, Manifest, FORMAT_WHOLE};
use crate::naming::manifest_key;
use crate::storage::Storage;

/// Adopts backup `name`; refuses (exit 3) one that already has a manifest.
pub async fn adopt(storage: &Storage, name: &str, now: DateTime<Utc>) -> Result<Manifest> {
    match read_backup(storage, name).await? {
        Backup::Legacy(legacy) => adopt_one(storage, &legacy, now).await,
        Backup::Committed(_) => Err(Error::Refused(format!(
            "backup {name:?} already has a manifest; there is nothing to adopt"
        ))),
    }
}

/// Adopts every legacy backup that `list` shows; returns the new manifests.
pub async fn adopt_all(storage: &Storage, now: DateTime<Utc>) -> Result<Vec<Manifest>> {
    let mut adopted = Vec::new();
    for backup in list(storage).await?.backups {
        if let Backup::Legacy(legacy) = backup {
            adopted.push(adopt_one(storage, &legacy, now).await?);
        }
    }
    Ok(adopted)
}

async fn adopt_one(storage: &Storage, legacy: &LegacyBackup, now: DateTime<Utc>) -> Result<Manifest> {
    let name = &legacy.name;
    tracing::info!("=== Adopting backup {name:?}: reading it once to record its checksum...");
    let stream = storage.get_stream(name).await?;
    let mut reader = HashingReader::new(stream);
    tokio::io::copy(&mut reader, &mut tokio::io::sink())
        .await
        .map_err(|e| crate::catalogue::read_failed(name, &e))?;
    let (size, sha256) = reader.finish();
    if size != legacy.size {
        return Err(Error::Integrity(format!(
            "backup {name:?}: read {size} bytes, the storage lists {}; not adopted",
            legacy.size
        )));
    }
    let mut manifest = Manifest {
        format: FORMAT_WHOLE,
        name: name.clone(),
        size,
        sha256: sha256.clone(),
        created: legacy.created,
        compression: Compression::None,
        raw_size: size,
        raw_sha256: sha256,
        exporter: Vec::new(),
        tool: crate::TOOL.to_string(),
        run: None,
        data_etag: legacy.etag.clone(),
        adopted: Some(now),
        parts: None,
        encryption: None,
        signature: None,
    };
    storage
        .put_new(
            &manifest_key(name),
            Bytes::from(crate::signature::policy().seal(&mut manifest)),
        )
        .await
        .map_err(|e| {
            if e.is_already_exists() {
                Error::Refused(format!(
                    "backup {name:?} was given a manifest meanwhile; not replacing it"
                ))
            } else {
                e.into()
            }
        })?;
    tracing::info!("=== Adopted backup {name:?}: {size} bytes, sha256 {}", manifest.sha256);
    Ok(manifest)
}
