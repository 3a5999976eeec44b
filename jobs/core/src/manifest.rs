//! The manifest: a small JSON document written *after* a backup's data. Its presence is the
//! commit point: a backup without one is invisible to `list`, `restore` and the pruner's
//! counts, and is cleaned up as an orphan.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::encryption::Encryption;
use crate::error::{Error, Result};
use crate::signature::ManifestSignature;

/// Format 1: one SHA-256 of the whole stored object, so a restore must read it all before it
/// may trust any byte (verify, then a guarded second pass).
pub const FORMAT_WHOLE: u32 = 1;
/// Format 2 adds a SHA-256 per uploaded part ([`Parts`]): each part is checked as it
/// arrives, so a restore reads the object once.
pub const FORMAT_PARTS: u32 = 2;
/// Format 3: format 2 of an encrypted backup ([`Encryption`]). A reader that does not
/// decrypt must refuse it ("upgrade") rather than feed ciphertext to an importer; unencrypted
/// backups are still written as format 2, so older readers keep reading them.
pub const FORMAT_ENCRYPTED: u32 = 3;
/// The newest manifest format this build reads.
pub const FORMAT_VERSION: u32 = FORMAT_ENCRYPTED;

/// Manifests are small (10,000 part digests are about 750 KiB); anything larger is not
/// ours and is refused unread.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// How a stored object is cut into parts: `size` bytes each, doubling every
/// `doubles_every` parts at most `max_doublings` times, never above `max_size`; the last part
/// holds the rest. The rule is recorded, not the boundaries, so a reader needs no copy of the
/// writer's code to find them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartLayout {
    pub size: u64,
    pub doubles_every: u64,
    pub max_doublings: u32,
    pub max_size: u64,
}

impl PartLayout {
    /// The layout backups use: S3 takes at most 10,000 parts of at most 5 GiB, so parts
    /// double every 2,500 (at most 8 times the base): the default 8 MiB parts carry a backup
    /// of up to about 290 GiB, while memory stays at base x (concurrency + 1) for the first
    /// 19.5 GiB.
    pub fn standard(base: u64) -> Self {
        PartLayout {
            size: base,
            doubles_every: 2_500,
            max_doublings: 3,
            max_size: 5 << 30,
        }
    }

    /// Bytes in part `index` (0-based) when it is not the last.
    pub fn part_len(&self, index: u64) -> u64 {
        let doublings = (index / self.doubles_every.max(1)).min(u64::from(self.max_doublings.min(32)));
        self.size
            .saturating_mul(1 << doublings)
            .min(self.max_size.max(self.size))
    }

    /// `(offset, length)` of each part of an object of `total` bytes, in order.
    pub fn parts(&self, total: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut offset = 0u64;
        (0u64..).map_while(move |index| {
            (offset < total && self.size > 0).then(|| {
                let len = self.part_len(index).min(total - offset);
                offset += len;
                (offset - len, len)
            })
        })
    }
}

/// Format 2: the stored bytes as uploaded, part by part, with the SHA-256 (hex) of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    #[serde(flatten)]
    pub layout: PartLayout,
    pub sha256: Vec<String>,
}

impl Parts {
    /// The digests of a backup uploaded in [`PartLayout::standard`] parts of `base` bytes.
    pub fn standard(base: usize, sha256: Vec<String>) -> Self {
        Parts {
            layout: PartLayout::standard(base as u64),
            sha256,
        }
    }
}

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
    /// Bytes the export command produced (before compression and encryption).
    pub raw_size: u64,
    /// SHA-256 (hex) of what the export command produced; a restore of an encrypted backup
    /// proves the plaintext against it.
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
    /// Format 2: the per-part digests that let a restore check each part before it is
    /// released to the importer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Parts>,
    /// Format 3: the stored object is an age file encrypted to these recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// An ed25519 signature over everything above ([`crate::signature`]), when the writer
    /// had a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ManifestSignature>,
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
        if let Some(parts) = &mut manifest.parts {
            parts.sha256.iter_mut().for_each(|d| d.make_ascii_lowercase());
        }
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
        if !is_sha256(&manifest.sha256) {
            return Err(Error::Integrity(format!(
                "manifest of backup {name:?} has no valid sha256"
            )));
        }
        manifest
            .check_parts()
            .map_err(|why| Error::Integrity(format!("manifest of backup {name:?} is inconsistent: {why}")))?;
        Ok(manifest)
    }

    /// Format 2 carries one valid digest per part of `size` bytes; format 1 carries none.
    fn check_parts(&self) -> std::result::Result<(), String> {
        if self.encryption.is_some() != (self.format >= FORMAT_ENCRYPTED) {
            return Err(format!(
                "format {} {} encryption",
                self.format,
                if self.encryption.is_some() { "with" } else { "without" }
            ));
        }
        if self.encryption.is_some() && !is_sha256(&self.raw_sha256) {
            return Err("an encrypted backup without a valid plaintext sha256".into());
        }
        let Some(parts) = &self.parts else {
            return match self.format >= FORMAT_PARTS {
                true => Err(format!("format {} without part digests", self.format)),
                false => Ok(()),
            };
        };
        if self.format < FORMAT_PARTS {
            return Err(format!("format {} with part digests", self.format));
        }
        if parts.layout.size == 0 || parts.layout.doubles_every == 0 {
            return Err("a part layout of zero bytes or zero parts per step".into());
        }
        let (digests, expected) = (
            parts.sha256.len(),
            parts.layout.parts(self.size).take(parts.sha256.len() + 1).count(),
        );
        if expected > digests {
            return Err(format!("{digests} part digests, too few for {} bytes", self.size));
        }
        if expected < digests {
            return Err(format!(
                "{digests} part digests for {} bytes in {expected} parts",
                self.size
            ));
        }
        match parts.sha256.iter().all(|d| is_sha256(d)) {
            true => Ok(()),
            false => Err("a part digest is not a SHA-256".into()),
        }
    }
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT_PARTS,
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
            parts: Some(Parts {
                layout: PartLayout::standard(2),
                sha256: vec![ABC.into(), ABC.into()],
            }),
            encryption: None,
            signature: None,
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

    /// A format-1 manifest (no `parts`) still reads; a format-2 one must carry exactly one
    /// digest per part of its layout.
    #[test]
    fn part_digests_match_the_layout_or_the_manifest_is_refused() {
        let mut v1 = sample();
        (v1.format, v1.parts) = (FORMAT_WHOLE, None);
        let text = String::from_utf8(v1.to_bytes()).unwrap();
        assert!(!text.contains("parts"), "{text}");
        assert_eq!(Manifest::from_bytes("b.graph", text.as_bytes()).unwrap(), v1);
        let refused = |m: &Manifest| matches!(Manifest::from_bytes("b.graph", &m.to_bytes()), Err(Error::Integrity(_)));
        let mut missing = sample();
        missing.parts = None;
        assert!(refused(&missing), "format 2 without parts");
        for count in [1, 3] {
            let mut wrong = sample();
            wrong.parts.as_mut().unwrap().sha256 = vec![ABC.into(); count];
            assert!(refused(&wrong), "{count} digests for 2 parts");
        }
        let mut bad = sample();
        bad.parts.as_mut().unwrap().sha256[1] = "zz".into();
        assert!(refused(&bad));
        let mut upper = sample();
        upper.parts.as_mut().unwrap().sha256[0].make_ascii_uppercase();
        assert_eq!(Manifest::from_bytes("b.graph", &upper.to_bytes()).unwrap(), sample());
    }

    /// Encrypted backups are format 3 (older readers refuse them rather than import
    /// ciphertext); unencrypted ones stay format 2 without the field.
    #[test]
    fn encryption_and_format_3_go_together() {
        let plain = String::from_utf8(sample().to_bytes()).unwrap();
        assert!(!plain.contains("encryption"), "{plain}");
        let mut encrypted = sample();
        encrypted.format = FORMAT_ENCRYPTED;
        encrypted.encryption = Some(Encryption {
            scheme: crate::encryption::SCHEME.into(),
            recipients: vec!["0123456789abcdef".into()],
        });
        assert_eq!(
            Manifest::from_bytes("b.graph", &encrypted.to_bytes()).unwrap(),
            encrypted
        );
        let refused = |m: &Manifest| matches!(Manifest::from_bytes("b.graph", &m.to_bytes()), Err(Error::Integrity(_)));
        let mut old_format = encrypted.clone();
        old_format.format = FORMAT_PARTS;
        assert!(refused(&old_format), "encryption in a format-2 manifest");
        let mut unmarked = sample();
        unmarked.format = FORMAT_ENCRYPTED;
        assert!(refused(&unmarked), "format 3 without encryption");
        let mut no_plain_digest = encrypted.clone();
        no_plain_digest.raw_sha256 = String::new();
        assert!(refused(&no_plain_digest), "no plaintext digest to prove");
    }

    #[test]
    fn the_layout_cuts_an_object_like_the_upload_did() {
        let layout = PartLayout::standard(10);
        let cut: Vec<_> = layout.parts(25).collect();
        assert_eq!(cut, [(0, 10), (10, 10), (20, 5)]);
        assert_eq!(layout.parts(20).count(), 2, "no empty part at a boundary");
        assert_eq!(layout.parts(0).count(), 0);
        assert_eq!(layout.part_len(2_499), 10);
        assert_eq!(layout.part_len(2_500), 20);
        assert_eq!(layout.part_len(9_999), 80);
        assert_eq!(layout.part_len(u64::MAX), 80, "at most 8 times the base");
        // Parts sum to the object exactly, across a doubling.
        let total = 2_600 * 10 + 7;
        assert_eq!(layout.parts(total).map(|(_, len)| len).sum::<u64>(), total);
        assert_eq!(layout.parts(total).nth(2_500), Some((25_000, 20)));
    }
}
