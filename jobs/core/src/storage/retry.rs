//! The one rule for reads that resume where they broke: how many failed attempts in a row a
//! read may make before it gives up, and how long it waits between them. A failed attempt is
//! one that received no byte; any byte received gives the read its whole budget again.

use std::fmt::Display;
use std::time::Duration;

use super::{StorageError, StorageResult};

/// Failed attempts in a row (no byte received in between) before a read gives up.
pub const RETRIES: u32 = 4;

/// The wait before the first retry; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The failed attempts of one read since its last byte.
#[derive(Debug, Default)]
pub struct Retries {
    failures: u32,
}

impl Retries {
    /// A byte arrived: the read has its whole budget again.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Counts one failed attempt at reading `key` (`what` says which bytes, for the log) that
    /// broke at byte `at`, and waits before the next; past the budget the read fails as a lost
    /// connection (exit 1: the backup is not at fault).
    pub async fn failed(&mut self, key: &str, what: &str, at: u64, e: &(dyn Display + Sync)) -> StorageResult<()> {
        self.failures += 1;
        if self.failures > RETRIES {
            return Err(StorageError::ConnectionLost {
                key: key.to_string(),
                detail: format!("{e} (gave up at byte {at} after {RETRIES} retries)"),
            });
        }
        let wait = FIRST_BACKOFF * 2u32.pow(self.failures - 1);
        tracing::warn!(
            "reading {key:?}{what} broke at byte {at} ({e}); resuming from there in {} (retry {} of {RETRIES})",
            humantime::format_duration(wait),
            self.failures
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// A read error that is a read which already spent its budget (a ranged read gives up that
/// way), as that storage error: retrying it again would multiply the budget. Any other read
/// error comes back as it was.
pub fn spent(e: std::io::Error) -> Result<StorageError, std::io::Error> {
    let lost = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StorageError>())
        .is_some_and(|e| matches!(e, StorageError::ConnectionLost { .. }));
    if !lost {
        return Err(e);
    }
    let kind = e.kind();
    match e.into_inner() {
        Some(inner) => inner
            .downcast::<StorageError>()
            .map(|lost| *lost)
            .map_err(|other| std::io::Error::new(kind, other)),
        None => Err(kind.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_read_gives_up_after_its_budget_and_progress_renews_it() {
        let mut retries = Retries::default();
        for _ in 0..RETRIES {
            retries.failed("k", "", 0, &"cut").await.unwrap();
        }
        retries.progressed();
        for _ in 0..RETRIES {
            retries.failed("k", "", 10, &"cut").await.unwrap();
        }
        let e = retries.failed("k", "", 10, &"cut").await.unwrap_err();
        assert!(matches!(e, StorageError::ConnectionLost { .. }), "{e}");
        assert!(matches!(
            spent(std::io::Error::other(e)),
            Ok(StorageError::ConnectionLost { .. })
        ));
        assert!(spent(std::io::Error::other("connection reset")).is_err());
    }
}
