//! Client-side encryption with age (X25519 recipients). A graph export holds the platform's
//! whole configuration, credentials included; encrypted, the bucket only ever sees ciphertext.
//!
//! The stored object is a plain age file (with the zstd stream inside when compressed), so an
//! operator can decrypt it by hand with `age -d -i KEY`. The manifest's digests stay over the
//! stored bytes, so `list`, `verify`, `replicate` and the pruner need no key; it also records
//! the recipients' fingerprints (to refuse a wrong identity before anything is changed) and
//! the export's size and SHA-256, which a restore compares with what it decrypted.
//!
//! Encryption keeps the data secret; it does not prove who wrote it: anyone who knows the
//! (public) recipients can encrypt a substitute. Signed manifests ([`crate::signature`]) do that.
//!
//! Like the signature policy, the keys are process-wide, installed once at the binary edge:
//! a backup path that forgot to pass the recipients would silently store plaintext.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use age::x25519::{Identity, Recipient};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// The only scheme written and read: age with X25519 recipients.
pub const SCHEME: &str = "age-x25519";

/// Identity files are a few lines; anything larger is not one.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// How a backup is encrypted, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// [`SCHEME`].
    pub scheme: String,
    /// Fingerprints ([`fingerprint`]) of the recipients it was encrypted to, in the order given.
    pub recipients: Vec<String>,
}

/// Flags of the command that writes backups.
#[derive(Debug, Clone, Default, Args)]
pub struct EncryptArgs {
    /// Encrypt each backup to this age recipient (X25519 public key `age1...`, as `age-keygen`
    /// prints); repeat, or separate with commas, for several (any one of their identities
    /// restores). Keep one identity offline: without any, the backups cannot be read.
    #[arg(
        long = "encrypt-to",
        env = "STS_ENCRYPT_TO",
        value_delimiter = ',',
        value_name = "RECIPIENT"
    )]
    pub encrypt_to: Vec<String>,
}

/// Flags of the commands that read backup data.
#[derive(Debug, Clone, Default, Args)]
pub struct IdentityArgs {
    /// age identity file (`AGE-SECRET-KEY-1...` lines, as `age-keygen -o` writes) that decrypts
    /// encrypted backups; repeat, or separate with commas, for several. Read from the file;
    /// never pass key material in an argument.
    #[arg(
        long = "identity",
        env = "STS_IDENTITY_FILE",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub identities: Vec<PathBuf>,
}

/// The first 16 hex digits of the SHA-256 of a recipient as `age-keygen` prints it (the style
/// of signing key ids): names a recipient in the manifest without the key itself.
pub fn fingerprint(recipient: &Recipient) -> String {
    let digest = Sha256::digest(recipient.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// The recipients this process encrypts to and the identities it decrypts with.
#[derive(Default)]
pub struct Keys {
    recipients: Vec<Recipient>,
    identities: Vec<Identity>,
}

impl Keys {
    /// Parses the recipients and reads the identity files; anything malformed is invalid
    /// input naming the flag and the value or file (never a key's content).
    pub fn from_args(encrypt: Option<&EncryptArgs>, identity: Option<&IdentityArgs>) -> Result<Self> {
        let recipients = encrypt
            .map(|a| a.encrypt_to.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|text| text.trim())
            .filter(|text| !text.is_empty())
            .map(|text| {
                Recipient::from_str(text).map_err(|why| {
                    Error::invalid(format!(
                        "--encrypt-to: {text:?} is not an age X25519 recipient (age1..., as age-keygen prints): {why}"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut identities = Vec::new();
        for path in identity.map(|a| a.identities.as_slice()).unwrap_or_default() {
            if path.as_os_str().is_empty() {
                continue;
            }
            identities.extend(read_identity_file(path)?);
        }
        Ok(Keys { recipients, identities })
    }

    /// What the manifest of a backup written now records, when this process encrypts.
    pub fn encryption(&self) -> Option<Encryption> {
        (!self.recipients.is_empty()).then(|| Encryption {
            scheme: SCHEME.to_string(),
            recipients: self.recipients.iter().map(fingerprint).collect(),
        })
    }

    /// The encryptor for one backup (a fresh file key each time), when this process encrypts.
    pub(crate) fn encryptor(&self) -> Option<age::Encryptor> {
        if self.recipients.is_empty() {
            return None;
        }
        let recipients = self.recipients.iter().map(|r| r as &dyn age::Recipient);
        Some(age::Encryptor::with_recipients(recipients).expect("X25519 recipients always combine"))
    }

    /// Whether this process was given identities.
    pub fn decrypts(&self) -> bool {
        !self.identities.is_empty()
    }

    /// Whether `manifest`'s backup can be decrypted here: checked before anything is changed.
    /// No identity is invalid input (exit 2); identities none of which is a recipient of the
    /// backup are an integrity failure (exit 4).
    pub fn check_readable(&self, manifest: &Manifest) -> Result<()> {
        let Some(encryption) = &manifest.encryption else {
            return Ok(());
        };
        let name = &manifest.name;
        if encryption.scheme != SCHEME {
            return Err(Error::Integrity(format!(
                "backup {name:?} is encrypted with {:?}, which this tool does not read (it reads {SCHEME})",
                encryption.scheme
            )));
        }
        if self.identities.is_empty() {
            return Err(Error::invalid(format!(
                "--identity: backup {name:?} is encrypted (to {}); give the age identity file that decrypts it \
                 with --identity or STS_IDENTITY_FILE",
                encryption.recipients.join(", ")
            )));
        }
        if self.matching(encryption).next().is_none() {
            return Err(Error::Integrity(format!(
                "backup {name:?} is encrypted to {}; none of the given identities matches (theirs: {})",
                encryption.recipients.join(", "),
                self.identities
                    .iter()
                    .map(|i| fingerprint(&i.to_public()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// Whether the stored object's age header, whose first bytes are `start`, unwraps with the
    /// identities among the manifest's recipients (run [`Self::check_readable`] first). The
    /// fingerprints in the manifest are only a claim: a forged manifest, or a header written to
    /// another key, would otherwise be found out only once the importer was running. Unwrapping
    /// the file key also checks the header's MAC; the payload is not read.
    pub fn check_header(&self, manifest: &Manifest, start: &[u8]) -> Result<()> {
        let Some(encryption) = &manifest.encryption else {
            return Ok(());
        };
        let name = &manifest.name;
        let refused = |why: String| {
            Error::Integrity(format!(
                "backup {name:?}: {why}; nothing was changed (a forged manifest, or an object encrypted to \
                 another key than the manifest says)"
            ))
        };
        let decryptor = age::Decryptor::new_buffered(start).map_err(|e| {
            refused(format!(
                "the first {} bytes of the stored object are not an age header this tool reads ({e})",
                start.len()
            ))
        })?;
        let identities = self.matching(encryption).map(|i| i as &dyn age::Identity);
        decryptor.decrypt(identities).map(drop).map_err(|e| {
            refused(format!(
                "the stored object's age header does not open with the identities matching {} ({e})",
                encryption.recipients.join(", ")
            ))
        })
    }

    /// The identities that are recipients of `encryption`.
    pub(crate) fn matching<'a>(&'a self, encryption: &'a Encryption) -> impl Iterator<Item = &'a Identity> + 'a {
        self.identities
            .iter()
            .filter(|i| encryption.recipients.contains(&fingerprint(&i.to_public())))
    }
}

/// Reads an age identity file: `AGE-SECRET-KEY-1...` lines, blank lines and `#` comments.
/// Errors name the file and line, never what is on it.
fn read_identity_file(path: &Path) -> Result<Vec<Identity>> {
    let shown = path.display();
    let bad = |why: String| Error::invalid(format!("--identity: {shown}: {why}"));
    let size = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot be read ({e})")))?
        .len();
    if size > MAX_IDENTITY_FILE {
        return Err(bad(format!("{size} bytes, too large for an age identity file")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    let mut identities = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = Identity::from_str(line).map_err(|_| {
            bad(format!(
                "line {} is not an age X25519 identity (AGE-SECRET-KEY-1..., as age-keygen -o writes)",
                number + 1
            ))
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(bad("holds no age identity (AGE-SECRET-KEY-1... line)".into()));
    }
    Ok(identities)
}

static KEYS: OnceLock<Keys> = OnceLock::new();

/// Makes `keys` the process's keys. Called once, by the binary, before any backup is written
/// or read; a second call is a programming error reported as invalid input.
pub fn install(keys: Keys) -> Result<()> {
    KEYS.set(keys)
        .map_err(|_| Error::invalid("the encryption keys were already set"))
}

/// The process's keys: the installed ones, or none (nothing encrypted, nothing decryptable).
pub fn keys() -> &'static Keys {
    KEYS.get_or_init(Keys::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn identity_files_as_age_keygen_writes_them_are_read() {
        let identity = Identity::generate();
        let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
        let file = write(&format!(
            "# created: 2026-01-01T00:00:00Z\n# public key: {}\n{secret}\n",
            identity.to_public()
        ));
        let read = read_identity_file(file.path()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].to_public(), identity.to_public());
    }

    #[test]
    fn bad_identity_files_name_the_file_and_line_but_not_the_content() {
        let file = write("# comment\nAGE-SECRET-KEY-1NOTAKEY\n");
        let err = read_identity_file(file.path()).err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, Error::Invalid(_)), "{text}");
        assert!(text.contains("--identity") && text.contains("line 2"), "{text}");
        assert!(!text.contains("NOTAKEY"), "the content leaked: {text}");
        let empty = write("# nothing\n\n");
        assert!(matches!(read_identity_file(empty.path()), Err(Error::Invalid(_))));
        assert!(matches!(
            read_identity_file(Path::new("/nonexistent/key.txt")),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn fingerprints_are_16_hex_of_the_recipient_string() {
        let r = Identity::generate().to_public();
        let fp = fingerprint(&r);
        assert_eq!(fp.len(), 16);
        assert_eq!(fp, hex::encode(&Sha256::digest(r.to_string().as_bytes())[..8]));
    }

    /// An age file of `data` encrypted to `to`, as the backup writes it.
    fn age_file(to: &Recipient, data: &[u8]) -> Vec<u8> {
        let encryptor = age::Encryptor::with_recipients(std::iter::once(to as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        std::io::Write::write_all(&mut writer, data).unwrap();
        writer.finish().unwrap();
        out
    }

    /// The header check opens the header with the identity the manifest names, and refuses
    /// (integrity, exit 4) one written to another key, a damaged header and a truncated one.
    #[test]
    fn the_stored_header_must_open_with_the_named_identity() {
        let (mine, theirs) = (Identity::generate(), Identity::generate());
        let keys = Keys {
            recipients: Vec::new(),
            identities: vec![mine.clone()],
        };
        let mut manifest = crate::manifest::tests::sample();
        manifest.encryption = Some(Encryption {
            scheme: SCHEME.into(),
            recipients: vec![fingerprint(&mine.to_public())],
        });
        let good = age_file(&mine.to_public(), b"the export");
        keys.check_readable(&manifest).unwrap();
        keys.check_header(&manifest, &good).unwrap();

        let other = age_file(&theirs.to_public(), b"the export");
        let err = keys.check_header(&manifest, &other).err().unwrap();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        assert!(
            err.to_string().contains("does not open with the identities matching"),
            "{err}"
        );

        let mut damaged = good.clone();
        let at = good.windows(4).position(|w| w == b"\n---").unwrap() + 6;
        damaged[at] ^= 0x01;
        assert!(matches!(
            keys.check_header(&manifest, &damaged),
            Err(Error::Integrity(_))
        ));
        let header_end = at + 44;
        assert!(matches!(
            keys.check_header(&manifest, &good[..header_end - 10]),
            Err(Error::Integrity(_))
        ));
        assert!(matches!(
            keys.check_header(&manifest, b"not age"),
            Err(Error::Integrity(_))
        ));
    }

    #[test]
    fn invalid_recipients_are_named() {
        let args = EncryptArgs {
            encrypt_to: vec!["age1nope".into()],
        };
        let err = Keys::from_args(Some(&args), None).err().unwrap();
        assert!(matches!(err, Error::Invalid(_)));
        assert!(err.to_string().contains("--encrypt-to") && err.to_string().contains("age1nope"));
    }
}
