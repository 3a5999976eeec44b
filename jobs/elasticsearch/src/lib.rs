//! Elasticsearch side of sts-backup: the S3 snapshot repository and SLM policy (`register`),
//! and listing and restoring snapshots (`list`, `restore`). The `es-snapshot-register` binary
//! is the command line; this crate returns reports and never prints (the binary renders them
//! as text or JSON).
//!
//! - [`client`]: the typed REST client (one method per Elasticsearch call) and [`ApiError`];
//! - [`connection`]: the connection flags every binary shares;
//! - [`error`]: the crate's error type, which knows its exit code;
//! - [`retry`]: the one backoff loop behind every wait and poll;
//! - [`validate`]: names, Quartz cron, date math, retention and index patterns, checked
//!   before any request;
//! - [`register`]: repository + SLM policy, idempotent, with the two-writers guard;
//! - [`snapshots`]: the snapshot catalogue (`list`, `--latest`, restorability);
//! - [`restore`]: the guarded restore.
#![warn(clippy::print_stdout, clippy::print_stderr, clippy::too_many_lines)]

pub mod client;
pub mod connection;
pub mod error;
pub mod register;
pub mod restore;
pub mod retry;
pub mod snapshots;
pub mod validate;

pub use client::{ApiError, ClusterInfo, EsAuth, EsClient, EsConfig};
pub use connection::ConnectionArgs;
pub use error::{Error, Result};
pub use register::{register, CredentialsMode, RegisterOptions, RegisterReport, OWNER_MARKER};
pub use restore::{restore, restore_with, RestoreOptions, RestoreReport};
pub use snapshots::{list_snapshots, SnapshotRow};
pub use validate::IndexPattern;
