//! The backup monitor: judges backups from the outside (the bucket and Elasticsearch, not the
//! jobs' own word) and serves what it sees as Prometheus metrics.

pub mod config;
pub mod elasticsearch;
pub mod metrics;
pub mod monitor;
pub mod schedule;
pub mod server;
pub mod stores;
