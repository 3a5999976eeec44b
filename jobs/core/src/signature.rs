//! Signed manifests. A SHA-256 in a manifest only catches accidents: whoever can write the
//! bucket can replace the data and recompute every digest. An ed25519 signature over the
//! manifest, made with a key the bucket never sees, makes such a substitute detectable.
//!
//! The signature covers the manifest as canonical JSON (keys sorted, no whitespace): the
//! backup's name, creation time, sizes, whole and per-part digests, everything but the
//! signature and the two fields that tie it to one stored copy ([`UNSIGNED_FIELDS`]). So
//! neither data, digests, name nor time can change without the signature failing, and an old
//! signed manifest cannot pose as a newer backup (its name is signed, and a manifest must carry
//! the name of the object it sits beside). The copy-binding fields stay outside so that a copy
//! in another bucket (`replicate`) keeps its signature: they only guard against two runs
//! mixing their objects, and every byte is still checked against the signed digests. For
//! manifests of ASCII text (all this tool writes) the signed bytes equal
//! `jq -cjS 'del(.signature, .run, .data_etag)'`, so an operator can check a manifest with
//! openssl alone (`docs/interfaces.md`).
//!
//! Keys are standard PEM files, as `openssl genpkey -algorithm ed25519` writes them (PKCS#8)
//! and `openssl pkey -pubout` exports (SubjectPublicKeyInfo). A key is named by its id: the
//! first 16 hex digits of the SHA-256 of its 32 public-key bytes.
//!
//! The trust policy is process-wide, installed once at the binary edge, like the signal
//! watcher: every path that reads a manifest (list, verify, restore, the pruner's counts)
//! must apply it, and a parameter that one path forgot to pass would be a silent bypass.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Args;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// Manifest fields a signature does not cover: itself, and the run id and ETag of the stored
/// data object, which differ between copies of one backup.
pub const UNSIGNED_FIELDS: [&str; 3] = ["signature", "run", "data_etag"];

/// The signature a manifest carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// Id of the signing key ([`key_id`]), so a reader with several trusted keys (rotation)
    /// knows which one to use.
    pub key_id: String,
    /// The ed25519 signature, hex.
    pub ed25519: String,
}

/// Flags of every command that reads manifests.
#[derive(Debug, Clone, Default, Args)]
pub struct TrustArgs {
    /// Public key (PEM) whose signatures are trusted; repeat, or separate with commas, to
    /// accept several (key rotation). When set, unsigned or badly signed backups are refused
    /// (exit 4) and `list` shows them as not restorable.
    #[arg(
        long = "trusted-key",
        env = "STS_TRUSTED_KEYS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub trusted_keys: Vec<PathBuf>,
}

/// Flags of the commands that write manifests.
#[derive(Debug, Clone, Default, Args)]
pub struct SigningArgs {
    /// Private ed25519 key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`) that signs each
    /// manifest written. Read from the file; never pass key material in an argument.
    #[arg(long = "signing-key", env = "STS_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// What a process signs with and which signatures it accepts.
#[derive(Debug, Default)]
pub struct Policy {
    signer: Option<(String, SigningKey)>,
    trusted: Vec<(String, VerifyingKey)>,
}

/// How a manifest is signed, as far as this process can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seal {
    Unsigned,
    /// Signed by a trusted key whose signature checked.
    Trusted(String),
    /// Signed, but no key is trusted here, so nothing was checked.
    Unchecked(String),
}

impl Policy {
    /// Loads the keys the flags name; a missing or malformed key file is invalid input.
    /// `signing` is given for the commands that write manifests: with trusted keys, they
    /// must sign with one of them, or what they write would not be trusted (and a backup
    /// could be pruned right after it was made).
    pub fn from_args(trust: &TrustArgs, signing: Option<&SigningArgs>) -> Result<Self> {
        let signer = match signing.and_then(|s| s.signing_key.as_deref()) {
            Some(path) => Some(read_signing_key(path)?),
            None => None,
        };
        let trusted = trust
            .trusted_keys
            .iter()
            .map(|path| read_public_key(path))
            .collect::<Result<Vec<_>>>()?;
        if signing.is_some() && !trusted.is_empty() {
            match &signer {
                None => return Err(Error::invalid(
                    "--signing-key: missing; with --trusted-key set, a manifest written unsigned would not be trusted",
                )),
                Some((id, _)) if !trusted.iter().any(|(t, _)| t == id) => {
                    return Err(Error::invalid(format!(
                    "--signing-key: key {id} is not among the --trusted-key keys; what it signs would not be trusted"
                )))
                }
                Some(_) => {}
            }
        }
        Ok(Policy { signer, trusted })
    }

    /// Whether every manifest read must carry a trusted signature.
    pub fn requires_signatures(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// The manifest's bytes as stored, signed when this process has a signing key.
    pub fn seal(&self, manifest: &mut Manifest) -> Vec<u8> {
        manifest.signature = None;
        if let Some((id, key)) = &self.signer {
            let signature = key.sign(&signed_bytes(&manifest_value(manifest)));
            manifest.signature = Some(ManifestSignature {
                key_id: id.clone(),
                ed25519: hex::encode(signature.to_bytes()),
            });
        }
        manifest.to_bytes()
    }

    /// Checks the signature of `manifest`, parsed from `stored`, against the trusted keys.
    /// With trusted keys, anything but a good signature by one of them is an integrity failure.
    pub fn check(&self, stored: &[u8], manifest: &Manifest) -> Result<Seal> {
        let name = &manifest.name;
        let Some(sig) = &manifest.signature else {
            return match self.requires_signatures() {
                true => Err(Error::Integrity(format!(
                    "backup {name:?} is not signed, and only backups signed by a trusted key (--trusted-key) are accepted"
                ))),
                false => Ok(Seal::Unsigned),
            };
        };
        if !self.requires_signatures() {
            return Ok(Seal::Unchecked(sig.key_id.clone()));
        }
        let Some((_, key)) = self.trusted.iter().find(|(id, _)| *id == sig.key_id) else {
            return Err(Error::Integrity(format!(
                "backup {name:?} is signed by key {}, which is not among the trusted keys (--trusted-key)",
                sig.key_id
            )));
        };
        let value: Value = serde_json::from_slice(stored)
            .map_err(|e| Error::Integrity(format!("manifest of backup {name:?} is unreadable: {e}")))?;
        let good = parse_signature(&sig.ed25519).is_some_and(|s| key.verify(&signed_bytes(&value), &s).is_ok());
        match good {
            true => Ok(Seal::Trusted(sig.key_id.clone())),
            false => Err(Error::Integrity(format!(
                "backup {name:?}: the signature of its manifest does not match (key {}): the manifest was changed \
                 after it was signed, or forged",
                sig.key_id
            ))),
        }
    }

    /// Why a backup without a manifest (a StackState backup) cannot be trusted, if it cannot.
    pub fn refuses_unsigned(&self, name: &str) -> Option<Error> {
        self.requires_signatures().then(|| {
            Error::Integrity(format!(
                "backup {name:?} has no manifest, so no signature, and only backups signed by a trusted key \
                 (--trusted-key) are accepted"
            ))
        })
    }
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Makes `policy` the process's policy. Called once, by the binary, before any manifest is
/// read or written; a second call is a programming error reported as invalid input.
pub fn install(policy: Policy) -> Result<()> {
    POLICY
        .set(policy)
        .map_err(|_| Error::invalid("the signature policy was already set"))
}

/// The process's policy: the installed one, or none (no signing, nothing required).
pub fn policy() -> &'static Policy {
    POLICY.get_or_init(Policy::default)
}

/// A key's id: the first 16 hex digits of the SHA-256 of its 32 public-key bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn read_pem(path: &Path, flag: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::invalid(format!("{flag}: cannot read {}: {e}", path.display())))
}

fn read_signing_key(path: &Path) -> Result<(String, SigningKey)> {
    let key = SigningKey::from_pkcs8_pem(&read_pem(path, "--signing-key")?).map_err(|e| {
        Error::invalid(format!(
            "--signing-key: {} is not an ed25519 private key in PKCS#8 PEM ({e}); make one with `openssl genpkey -algorithm ed25519`",
            path.display()
        ))
    })?;
    Ok((key_id(&key.verifying_key()), key))
}

fn read_public_key(path: &Path) -> Result<(String, VerifyingKey)> {
    let key = VerifyingKey::from_public_key_pem(&read_pem(path, "--trusted-key")?).map_err(|e| {
        Error::invalid(format!(
            "--trusted-key: {} is not an ed25519 public key in PEM ({e}); export one with `openssl pkey -in KEY -pubout`",
            path.display()
        ))
    })?;
    Ok((key_id(&key), key))
}

fn parse_signature(hex_text: &str) -> Option<ed25519_dalek::Signature> {
    let bytes: [u8; 64] = hex::decode(hex_text).ok()?.try_into().ok()?;
    Some(ed25519_dalek::Signature::from_bytes(&bytes))
}

fn manifest_value(manifest: &Manifest) -> Value {
    serde_json::to_value(manifest).expect("a manifest always serializes")
}

/// The bytes a signature covers: the manifest without [`UNSIGNED_FIELDS`], canonical JSON.
fn signed_bytes(manifest: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match manifest {
        Value::Object(map) => {
            let mut signed = map.clone();
            for field in UNSIGNED_FIELDS {
                signed.remove(field);
            }
            write_canonical(&Value::Object(signed), &mut out);
        }
        other => write_canonical(other, &mut out),
    }
    out
}

/// JSON with object keys sorted and no whitespace, whatever order the parser kept.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(key).expect("a string serializes"));
                out.push(b':');
                write_canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("a scalar serializes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    fn keys(seed: u8) -> (String, SigningKey) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        (key_id(&key.verifying_key()), key)
    }

    fn signing(seed: u8) -> Policy {
        Policy {
            signer: Some(keys(seed)),
            trusted: Vec::new(),
        }
    }

    fn trusting(seeds: &[u8]) -> Policy {
        let trusted = seeds
            .iter()
            .map(|s| {
                let (id, key) = keys(*s);
                (id, key.verifying_key())
            })
            .collect();
        Policy { signer: None, trusted }
    }

    fn sealed(seed: u8) -> (Vec<u8>, Manifest) {
        let mut m = sample();
        let bytes = signing(seed).seal(&mut m);
        (bytes.clone(), Manifest::from_bytes("b.graph", &bytes).unwrap())
    }

    #[test]
    fn a_signed_manifest_checks_with_any_trusted_key_and_round_trips() {
        let (bytes, m) = sealed(1);
        assert_eq!(trusting(&[2, 1]).check(&bytes, &m).unwrap(), Seal::Trusted(keys(1).0));
        assert_eq!(Policy::default().check(&bytes, &m).unwrap(), Seal::Unchecked(keys(1).0));
        assert!(m.signature.is_some());
    }

    #[test]
    fn unsigned_foreign_or_changed_manifests_are_refused_when_keys_are_trusted() {
        let refused = |bytes: &[u8], m: &Manifest| matches!(trusting(&[1]).check(bytes, m), Err(Error::Integrity(_)));
        let mut plain = sample();
        let bytes = Policy::default().seal(&mut plain);
        assert!(refused(&bytes, &plain), "unsigned");
        assert_eq!(Policy::default().check(&bytes, &plain).unwrap(), Seal::Unsigned);
        let (other, m) = sealed(3);
        assert!(refused(&other, &m), "another key");
        // Negative control for the next case: the untouched manifest passes.
        let (good, m) = sealed(1);
        assert!(!refused(&good, &m));
        // A copy of the backup elsewhere has its own run id and ETag: the signature still holds.
        let text = String::from_utf8(good.clone()).unwrap();
        let copy = text
            .replace("0123456789abcdef", "fedcba9876543210")
            .replace("900150983cd24fb0d6963f7d28e17f72", "x-1");
        assert_ne!(copy, text);
        let copied: Manifest = serde_json::from_str(&copy).unwrap();
        assert!(!refused(copy.as_bytes(), &copied), "copy-binding fields are not signed");
        for (from, to) in [("\"size\": 3", "\"size\": 4"), ("b.graph", "c.graph"), ("1970", "2070")] {
            let text = String::from_utf8(good.clone()).unwrap();
            assert!(text.contains(from), "{from} in {text}");
            let changed = text.replacen(from, to, 1).into_bytes();
            let m: Manifest = serde_json::from_slice(&changed).unwrap();
            assert!(refused(&changed, &m), "{from} -> {to}");
        }
    }

    #[test]
    fn the_signed_bytes_do_not_depend_on_key_order_or_whitespace() {
        let (bytes, m) = sealed(1);
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let compact = serde_json::to_vec(&value).unwrap();
        assert_eq!(trusting(&[1]).check(&compact, &m).unwrap(), Seal::Trusted(keys(1).0));
        let canonical = String::from_utf8(signed_bytes(&value)).unwrap();
        assert!(
            canonical.starts_with("{\"adopted\"") || canonical.starts_with("{\"compression\""),
            "{canonical}"
        );
        assert!(
            !canonical.contains("signature") && !canonical.contains(' '),
            "{canonical}"
        );
        assert!(
            !canonical.contains("\"run\"") && !canonical.contains("data_etag"),
            "{canonical}"
        );
    }
}
