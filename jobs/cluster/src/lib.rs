//! The Kubernetes side of a restore (and of a scheduled backup): the store's Lease, so two
//! runs never touch one store at once; scaling the store's writers down and back to the
//! replica counts recorded on the workloads themselves, so any later run can finish an
//! interrupted one; and Events, so `kubectl describe` shows what happened.
//!
//! Everything runs inside the Job's pod with its ServiceAccount (kube-rs, in-cluster config;
//! `KUBECONFIG` works too). The operator's workstation only launches and follows the Job.
#![warn(clippy::print_stdout, clippy::print_stderr, clippy::too_many_lines)]

pub mod context;
pub mod error;
pub mod events;
pub mod lock;
pub mod orchestrate;
pub mod scale;

pub use context::Cluster;
pub use error::ClusterError;
