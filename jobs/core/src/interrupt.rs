//! SIGTERM/SIGINT handling. Kubernetes stops a pod with SIGTERM; a job that is interrupted
//! must abort its upload and stop its child command instead of dying half-way.
//!
//! One watcher per process ([`install`], called by the binaries' start-up) records the first
//! signal. A step that must clean up when stopped holds an [`Interrupt`] and reacts to it; the
//! start-up ends the job on a signal only while no step holds one (see [`unhandled`]). A signal
//! that arrives between two steps is therefore not lost: the next step sees it at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The first signal received, once one was.
static RECEIVED: OnceLock<watch::Receiver<Option<&'static str>>> = OnceLock::new();

/// How many [`Interrupt`]s are alive: steps that handle a signal themselves.
static HANDLERS: AtomicUsize = AtomicUsize::new(0);

/// Whether a step has seen the signal: the job then ends through that step's error, after
/// whatever cleanup follows it (an upload aborted, a claim released), never cut short.
static HANDLED: AtomicBool = AtomicBool::new(false);

/// Starts the process's signal watcher (idempotent). Needs a running Tokio runtime.
pub fn install() -> Result<()> {
    if RECEIVED.get().is_some() {
        return Ok(());
    }
    let listen = |kind: SignalKind| signal(kind).map_err(|e| Error::io("installing a signal handler", e));
    let (mut term, mut int) = (listen(SignalKind::terminate())?, listen(SignalKind::interrupt())?);
    let (tx, rx) = watch::channel(None);
    if RECEIVED.set(rx).is_err() {
        return Ok(()); // another thread installed it first; its watcher serves.
    }
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = tx.send(Some(name));
        // Keep the channel (and the handlers) alive: later signals are already recorded.
        std::future::pending::<()>().await;
    });
    Ok(())
}

fn interrupted(name: &str) -> Error {
    Error::Command(format!("interrupted by {name}"))
}

/// Resolves with the job's error when a signal arrives that no step handles (no [`Interrupt`]
/// held, or none that saw it): the start-up then ends the job (nothing is mid-write between
/// steps). Once a step has seen the signal this never resolves: that step ends the job.
pub async fn unhandled() -> Error {
    let Some(mut rx) = RECEIVED.get().cloned() else {
        return std::future::pending().await;
    };
    loop {
        let name = rx
            .wait_for(Option::is_some)
            .await
            .map(|name| (*name).unwrap_or("a signal"));
        let Ok(name) = name else {
            return std::future::pending().await;
        };
        if HANDLED.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        if HANDLERS.load(Ordering::SeqCst) == 0 {
            return interrupted(name);
        }
        // A step is cleaning up; look again shortly in case it ended without acting.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A step's claim to handle a signal itself (abort an upload, stop a child command).
pub struct Interrupt {
    rx: watch::Receiver<Option<&'static str>>,
}

impl Interrupt {
    pub fn new() -> Result<Self> {
        install()?;
        let rx = RECEIVED
            .get()
            .cloned()
            .ok_or_else(|| Error::Command("signal watcher missing".into()))?;
        HANDLERS.fetch_add(1, Ordering::SeqCst);
        Ok(Interrupt { rx })
    }

    /// Resolves when a signal arrives (or has already arrived), with the error the job should
    /// end with.
    pub async fn wait(&mut self) -> Error {
        let name = self
            .rx
            .wait_for(Option::is_some)
            .await
            .map(|name| (*name).unwrap_or("a signal"));
        match name {
            Ok(name) => {
                HANDLED.store(true, Ordering::SeqCst);
                interrupted(name)
            }
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        HANDLERS.fetch_sub(1, Ordering::SeqCst);
    }
}
