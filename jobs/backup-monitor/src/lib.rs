//! The backup monitor: judges backups from the outside (the bucket and Elasticsearch, not the
//! jobs' own word) and serves what it sees as Prometheus metrics.

#![warn(clippy::print_stdout, clippy::print_stderr, clippy::too_many_lines)]

pub mod config;
pub mod elasticsearch;
pub mod metrics;
pub mod monitor;
pub mod schedule;
pub mod server;
pub mod stores;
