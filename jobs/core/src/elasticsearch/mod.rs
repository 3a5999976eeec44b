//! Elasticsearch snapshot repository, SLM policy, list and restore (owned by the es-snapshot-register work).
//!
//! - [`client`]: the REST client (basic auth / API key, CA bundle, `type: reason` errors, bounded wait);
//! - [`validate`]: Quartz cron, date-math names, retention, index patterns (checked before any request);
//! - [`register`]: repository + SLM policy, idempotent, with the two-writers guard;
//! - [`snapshots`]: list and restore.

pub mod client;
pub mod register;
pub mod snapshots;
pub mod validate;

pub use client::{ClusterInfo, EsAuth, EsClient, EsConfig, EsError};
pub use register::{register, CredentialsMode, RegisterOptions, RegisterReport, OWNER_MARKER};
pub use snapshots::{format_table, list_snapshots, restore, RestoreOptions, RestoreOutcome, SnapshotRow};
pub use validate::IndexPattern;
