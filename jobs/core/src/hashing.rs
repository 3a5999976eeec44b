//! A reader adapter that hashes and counts what flows through it, so checksums are computed
//! in the stream and nothing is read twice.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            progress: None,
        }
    }

    /// Also adds every byte read to a shared progress counter.
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// Bytes read so far and the hex SHA-256 of them.
    pub fn finish(self) -> (u64, String) {
        (self.count, hex::encode(self.hasher.finalize()))
    }

    /// The wrapped reader, plus the count and hex SHA-256 of what was read through it.
    pub fn into_parts(self) -> (R, u64, String) {
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }

    /// Hex SHA-256 of what was read so far (the stream may go on).
    pub fn sha_so_far(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let new = &buf.filled()[before..];
            this.hasher.update(new);
            this.count += new.len() as u64;
            if let Some(progress) = &this.progress {
                progress.fetch_add(new.len() as u64, Ordering::Relaxed);
            }
        }
        poll
    }
}

/// What [`PartHasher`] measured: the stream's size and SHA-256, and the SHA-256 of each part.
pub struct PartSums {
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<String>,
}

/// Size of the slices both digests take turns on, so the second reads them from cache.
const HASH_SLICE: usize = 64 * 1024;

/// Hashes a stream's parts, each part and the whole stream, on a thread of its own: the two
/// digests take one pass over the bytes, and the task that reads the export and feeds the
/// upload never waits for them (on the backup's profile they were its largest CPU cost).
/// One part is queued at most, so memory grows by at most one part, and only while the
/// hashing lags behind the upload.
pub struct PartHasher {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    done: tokio::task::JoinHandle<PartSums>,
}

impl Default for PartHasher {
    fn default() -> Self {
        Self::start()
    }
}

impl PartHasher {
    pub fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
        let done = tokio::task::spawn_blocking(move || {
            let mut whole = Sha256::new();
            let mut sums = PartSums {
                size: 0,
                sha256: String::new(),
                parts: Vec::new(),
            };
            while let Some(part) = rx.blocking_recv() {
                let mut one = Sha256::new();
                for slice in part.chunks(HASH_SLICE) {
                    one.update(slice);
                    whole.update(slice);
                }
                sums.size += part.len() as u64;
                sums.parts.push(hex::encode(one.finalize()));
            }
            sums.sha256 = hex::encode(whole.finalize());
            sums
        });
        PartHasher { tx, done }
    }

    /// Queues the next part (waits while one is queued already).
    pub async fn add(&self, part: bytes::Bytes) -> std::io::Result<()> {
        self.tx
            .send(part)
            .await
            .map_err(|_| std::io::Error::other("the hashing thread ended early"))
    }

    /// The sums of every part added, once all are hashed.
    pub async fn finish(self) -> std::io::Result<PartSums> {
        drop(self.tx);
        self.done
            .await
            .map_err(|e| std::io::Error::other(format!("the hashing thread failed: {e}")))
    }
}
