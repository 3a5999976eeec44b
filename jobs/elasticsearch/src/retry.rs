//! The one backoff loop behind every wait in this crate: waiting for the cluster and the
//! bucket to answer, for a snapshot to finish, for deleted indices to be gone, and for a
//! dropped connection to come back while a restore runs.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// What one attempt found.
pub enum Attempt<T, E> {
    /// Done.
    Ready(T),
    /// A transient failure: logged as a warning and tried again.
    Retry(E),
    /// Not there yet (no failure): tried again quietly.
    Pending(E),
    /// A failure that another try will not fix.
    Fail(E),
}

/// How long to wait between attempts and in all.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub timeout: Duration,
}

impl Backoff {
    /// 250 ms doubling up to 5 s, for `timeout` in all.
    pub fn standard(timeout: Duration) -> Backoff {
        Backoff {
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
            timeout,
        }
    }
}

/// Why [`retry`] gave up.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// An attempt failed for good.
    Failed(E),
    /// The timeout passed; the last attempt's error.
    TimedOut(E),
}

impl<E> GaveUp<E> {
    /// The error, whichever way it ended.
    pub fn into_inner(self) -> E {
        match self {
            GaveUp::Failed(e) | GaveUp::TimedOut(e) => e,
        }
    }
}

/// Calls `attempt` until it is ready, fails for good or `backoff.timeout` has passed.
/// `what` names the wait in the retry warnings ("waiting for {what}: ...").
pub async fn retry<T, E, F, Fut>(what: &str, backoff: Backoff, mut attempt: F) -> Result<T, GaveUp<E>>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let deadline = Instant::now() + backoff.timeout;
    let mut delay = backoff.first;
    loop {
        let err = match attempt().await {
            Attempt::Ready(v) => return Ok(v),
            Attempt::Fail(e) => return Err(GaveUp::Failed(e)),
            Attempt::Retry(e) => {
                if Instant::now() + delay <= deadline {
                    tracing::warn!("waiting for {what}: {e}; retrying in {delay:?}");
                }
                e
            }
            Attempt::Pending(e) => e,
        };
        if Instant::now() + delay > deadline {
            return Err(GaveUp::TimedOut(err));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(timeout_ms: u64) -> Backoff {
        Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn retries_until_ready_and_stops_on_failure_or_timeout() {
        let mut n = 0;
        let got = retry("x", quick(1000), || {
            n += 1;
            let v = n;
            async move {
                if v < 3 {
                    Attempt::Retry("not yet")
                } else {
                    Attempt::Ready(v)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);

        let failed = retry::<(), _, _, _>("x", quick(1000), || async { Attempt::Fail("bad") }).await;
        assert!(matches!(failed, Err(GaveUp::Failed("bad"))));

        let timed_out = retry::<(), _, _, _>("x", quick(20), || async { Attempt::Pending("slow") }).await;
        assert!(matches!(timed_out, Err(GaveUp::TimedOut("slow"))));
    }
}
