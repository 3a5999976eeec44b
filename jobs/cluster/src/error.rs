//! Errors of the cluster side, each with its exit code.

use sts_backup_core::Exit;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Another run holds the store's Lease.
    #[error("store {store:?} is locked by {holder} ({operation}, since {since}); not starting another run")]
    Locked {
        store: String,
        holder: String,
        operation: String,
        since: String,
    },
    #[error("Kubernetes API: {context}: {source}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// The pod's identity or namespace could not be determined, or a value is unusable.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
}

impl ClusterError {
    pub fn api(context: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
        let context = context.into();
        move |source| ClusterError::Api { context, source }
    }

    pub fn exit(&self) -> Exit {
        match self {
            ClusterError::Locked { .. } => Exit::Refused,
            ClusterError::Invalid(_) => Exit::Invalid,
            ClusterError::Api { .. } | ClusterError::Timeout(_) | ClusterError::Failed(_) => Exit::Failure,
        }
    }

    /// True when the API server answered 403: the ServiceAccount's Role lacks a verb.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ClusterError::Api { source: kube::Error::Api(s), .. } if s.code == 403)
    }
}

impl From<ClusterError> for sts_backup_core::Error {
    fn from(e: ClusterError) -> Self {
        match e.exit() {
            Exit::Refused => sts_backup_core::Error::Refused(e.to_string()),
            Exit::Invalid => sts_backup_core::Error::Invalid(e.to_string()),
            _ => sts_backup_core::Error::Command(e.to_string()),
        }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
