//! The manifest: a small JSON document written *after* a backup's data. Its presence is the
//! commit point: a backup without one is invisible to `list`, `restore` and the pruner's
//! counts, and is cleaned up as an orphan.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the manifest format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Manifests are tiny; anything larger is not ours and is refused unread.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The backup's name, which is also its object key (relative to the storage prefix).
    pub name: String,
    /// Bytes stored (after compression).
    pub size: u64,
    /// SHA-256 (hex) of the stored bytes.
    pub sha256: String,
    pub created: DateTime<Utc>,
    pub compression: Compression,
    /// Bytes the export command produced (before compression).
    pub raw_size: u64,
    /// SHA-256 (hex) of what the export command produced.
    pub raw_sha256: String,
    /// The export command, as run (argv; `{file}` left as written).
    pub exporter: Vec<String>,
    /// The tool and version that wrote the backup.
    pub tool: String,
    /// The run that wrote the data object (also in the object's metadata on S3). With
    /// `data_etag` it ties the manifest to that one object, so data from a concurrent run
    /// of the same name is never vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The data object's entity tag right after upload (S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_etag: Option<String>,
    /// Set when the manifest was written afterwards for a backup made by another tool
    /// (`stackgraph-backup adopt`): the checksums are of the bytes found at that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<DateTime<Utc>>,
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses a stored manifest; any problem is an integrity failure naming the backup.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::Integrity(format!(
                "manifest of backup {name:?} is {} bytes, larger than any manifest this tool writes",
                bytes.len()
            )));
        }
        let mut manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Integrity(format!("manifest of backup {name:?} is unreadable: {e}")))?;
        // Hex is case-insensitive; checksums are computed and compared in lower case.
        manifest.sha256.make_ascii_lowercase();
        manifest.raw_sha256.make_ascii_lowercase();
        if manifest.name != name {
            return Err(Error::Integrity(format!(
                "manifest of backup {name:?} names another backup ({:?})",
                manifest.name
            )));
        }
        if manifest.format > FORMAT_VERSION {
            return Err(Error::Integrity(format!(
                "manifest of backup {name:?} has format {} but this tool reads up to {FORMAT_VERSION}; upgrade sts-backup",
                manifest.format
            )));
        }
        if manifest.sha256.len() != 64 || !manifest.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Integrity(format!(
                "manifest of backup {name:?} has no valid sha256"
            )));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            name: "b.graph".into(),
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            created: DateTime::<Utc>::UNIX_EPOCH,
            compression: Compression::Zstd,
            raw_size: 3,
            raw_sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            exporter: vec!["cat".into()],
            tool: "test".into(),
            run: Some("0123456789abcdef".into()),
            data_etag: Some("900150983cd24fb0d6963f7d28e17f72".into()),
            adopted: None,
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::from_bytes("b.graph", &m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn reads_manifests_without_run_identity() {
        let mut m = sample();
        m.run = None;
        m.data_etag = None;
        let bytes = m.to_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("run"));
        assert_eq!(Manifest::from_bytes("b.graph", &bytes).unwrap(), m);
    }

    #[test]
    fn rejects_foreign_or_broken_manifests() {
        let m = sample();
        assert!(matches!(
            Manifest::from_bytes("other", &m.to_bytes()),
            Err(Error::Integrity(_))
        ));
        assert!(matches!(
            Manifest::from_bytes("b.graph", b"{"),
            Err(Error::Integrity(_))
        ));
        let mut bad = sample();
        bad.sha256 = "xyz".into();
        assert!(matches!(
            Manifest::from_bytes("b.graph", &bad.to_bytes()),
            Err(Error::Integrity(_))
        ));
        let mut future = sample();
        future.format = FORMAT_VERSION + 1;
        assert!(matches!(
            Manifest::from_bytes("b.graph", &future.to_bytes()),
            Err(Error::Integrity(_))
        ));
    }
}
