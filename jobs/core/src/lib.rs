//! Shared core of the sts-backup jobs: storage (S3 and `file://`), backup naming and
//! manifests, the catalogue (list, verify), the streamed backup and guarded restore
//! pipelines, logging and exit codes. The job binaries are thin wrappers around this crate.
#![warn(clippy::print_stdout, clippy::print_stderr, clippy::too_many_lines)]

pub mod adopt;
pub mod backup;
pub mod catalogue;
pub mod claim;
pub mod command;
pub mod content_check;
pub mod encryption;
pub mod error;
pub mod exit;
pub mod hashing;
pub mod interrupt;
pub mod logging;
pub mod manifest;
pub mod naming;
pub mod progress;
pub mod replicate;
pub mod restore;
pub mod retention;
pub mod signature;
pub mod storage;
mod verified;

pub use error::{Error, Result};
pub use exit::Exit;

/// `name version`, recorded in manifests and printed by `--version`.
pub const TOOL: &str = concat!("sts-backup ", env!("CARGO_PKG_VERSION"));
