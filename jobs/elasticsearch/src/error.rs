//! The crate's error type. Every variant knows its exit code, so the binary maps an error to
//! its exit status with a `match`, never by downcasting.

use sts_backup_core::exit::Exit;
use sts_backup_core::storage::StorageError;

use crate::client::ApiError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flag, argument or name; the message names it. Nothing was changed (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// Refused for safety before anything was changed (exit 3).
    #[error("{0}")]
    Refused(String),
    /// A runtime failure described in our words (exit 1).
    #[error("{0}")]
    Failed(String),
    /// Elasticsearch answered with an error or could not be reached (exit 1).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The bucket behind the repository (register's checks and owner marker).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An error with what we were doing in front of it.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn refused(msg: impl Into<String>) -> Self {
        Error::Refused(msg.into())
    }

    pub fn failed(msg: impl Into<String>) -> Self {
        Error::Failed(msg.into())
    }

    /// The exit code this error ends the job with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Invalid(_) => Exit::Invalid,
            Error::Refused(_) => Exit::Refused,
            Error::Failed(_) | Error::Api(_) => Exit::Failure,
            Error::Storage(e) => e.exit(),
            Error::Context { source, .. } => source.exit(),
        }
    }

    /// The Elasticsearch error underneath, if any.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            Error::Context { source, .. } => source.api(),
            _ => None,
        }
    }
}

/// `.context("doing x")` for results whose error converts into [`Error`].
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, what: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: what.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: what(),
            source: Box::new(e.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_exit_code() {
        let e: Result<()> = Err(Error::refused("no")).context("restoring");
        let e = e.unwrap_err();
        assert_eq!(e.exit(), Exit::Refused);
        assert_eq!(e.to_string(), "restoring: no");
        assert_eq!(Error::invalid("x").exit(), Exit::Invalid);
        assert_eq!(Error::failed("x").exit(), Exit::Failure);
    }
}
