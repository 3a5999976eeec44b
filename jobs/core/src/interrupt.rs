//! SIGTERM/SIGINT handling. Kubernetes stops a pod with SIGTERM; a job that is interrupted
//! must abort its upload and stop its child command instead of dying half-way.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::error::{Error, Result};

pub struct Interrupt {
    term: Signal,
    int: Signal,
}

impl Interrupt {
    pub fn new() -> Result<Self> {
        let install = |kind: SignalKind| signal(kind).map_err(|e| Error::io("installing a signal handler", e));
        Ok(Interrupt {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    /// Resolves when a signal arrives, with the error the job should end with.
    pub async fn wait(&mut self) -> Error {
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        Error::Command(format!("interrupted by {name}"))
    }
}
