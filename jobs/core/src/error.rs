//! The library's error type. Every variant knows its exit code, so the binaries only print
//! the message and map it (`sts-backup-cli`), the binary edge where the error chain is printed.

use crate::exit::Exit;
use crate::storage::StorageError;

/// Result with the core error as default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flag, argument, template or name. The message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A guard refused the operation (non-empty target, existing backup name).
    #[error("{0}")]
    Refused(String),
    /// The stored data does not match its manifest, or the manifest is missing/unreadable.
    #[error("{0}")]
    Integrity(String),
    /// The export or import command failed.
    #[error("{0}")]
    Command(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The message carries the I/O error; it is not also a `source`, or the one-line report
    /// (which prints the whole chain) would say it twice.
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            error: source,
        }
    }

    /// The exit code this error ends the job with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Invalid(_) => Exit::Invalid,
            Error::Refused(_) => Exit::Refused,
            Error::Integrity(_) => Exit::Integrity,
            Error::Storage(e) => e.exit(),
            Error::Command(_) | Error::Io { .. } => Exit::Failure,
        }
    }
}
