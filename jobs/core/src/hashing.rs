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
