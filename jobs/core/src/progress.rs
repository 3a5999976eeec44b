//! Periodic progress lines (bytes and rate) for long transfers, so a stuck or slow backup is
//! visible in the pod log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often progress is logged; `STS_PROGRESS_INTERVAL` (humantime, e.g. `1s`) overrides the
/// 10-second default for tests and impatient operators.
fn interval() -> Duration {
    std::env::var("STS_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(10))
}

/// Logs `<what>: N MiB (R MiB/s)` until dropped.
pub struct Progress {
    counter: Arc<AtomicU64>,
    started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(what: &str) -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let what = what.to_string();
        let shared = counter.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval());
            tick.tick().await;
            loop {
                tick.tick().await;
                let bytes = shared.load(Ordering::Relaxed);
                tracing::info!(
                    bytes,
                    "{what}: {} ({})",
                    human_bytes(bytes),
                    rate(bytes, started.elapsed())
                );
            }
        });
        Progress { counter, started, task }
    }

    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    /// Bytes counted, elapsed time and a human rate, for the final summary line.
    pub fn summary(&self) -> (u64, Duration, String) {
        let bytes = self.counter.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        (bytes, elapsed, rate(bytes, elapsed))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
