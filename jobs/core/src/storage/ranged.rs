//! Parallel ranged reads of one S3 object, delivered in order as one byte stream.
//!
//! One connection is often slower than the link (latency, a per-connection limit on a shaped
//! network or in the server): N ranged GETs in flight then read up to N times faster. The
//! object is cut into [`RANGE`]-sized ranges; at most `concurrency` of them are being fetched
//! while the reader consumes the oldest, so memory is bounded by (concurrency + 1) ranges
//! whatever the object's size, and the bytes come out in order, so a verifier downstream
//! (`verified.rs`) sees the same stream as from one GET.
//!
//! A range whose read breaks (connection dropped, stalled, server error) is read again from
//! its last byte received, after a backoff, within the same budget as a single read
//! ([`super::retry`]); only the broken range's rest is read twice.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::task::JoinHandle;

use super::retry::Retries;
use super::s3::S3Store;
use super::{ByteStream, StorageError, StorageResult};

/// Bytes per ranged GET.
pub(super) const RANGE: u64 = 4 << 20;

/// Opens `key` from `start` for reading in ranges, `concurrency` in flight. The first range's
/// answer says the object's size; an object that fits in it is read by that one GET alone.
pub(super) async fn open(store: &S3Store, key: &str, start: u64, concurrency: usize) -> StorageResult<ByteStream> {
    let first_end = start + RANGE;
    let first = match store.get_object(key, start, Some(first_end)).await {
        Ok(first) => first,
        // An empty object has no byte range to ask for.
        Err(e) if start == 0 && is_invalid_range(&e) => {
            return Ok(store.guarded(store.get_object(key, 0, None).await?.body, key))
        }
        Err(e) => return Err(e),
    };
    let size = first.content_range().and_then(total_size);
    let Some(size) = size.filter(|size| *size > first_end) else {
        // Fits in the first range, or a server that ignored the range and sent it all.
        return Ok(store.guarded(first.body, key));
    };
    let mut ranges = Ranges {
        store: store.clone(),
        key: key.to_string(),
        next: first_end,
        size,
        concurrency: concurrency.max(1),
        window: VecDeque::new(),
        current: Bytes::new(),
    };
    let opened = store.guarded(first.body, key);
    ranges.window.push_back(tokio::spawn(fetch(
        store.clone(),
        key.to_string(),
        start,
        first_end,
        Some(opened),
    )));
    ranges.fill();
    Ok(Box::new(ranges))
}

/// `bytes 0-4194303/536870912` -> 536870912.
fn total_size(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/')?.1.trim().parse().ok()
}

fn is_invalid_range(e: &StorageError) -> bool {
    matches!(e, StorageError::Failed { detail, .. } if detail.starts_with("InvalidRange") || detail.contains("HTTP 416"))
}

/// The object as one stream: the ranges in order.
struct Ranges {
    store: S3Store,
    key: String,
    /// Where the next range to schedule starts.
    next: u64,
    size: u64,
    concurrency: usize,
    /// The ranges being fetched, oldest first.
    window: VecDeque<JoinHandle<StorageResult<Bytes>>>,
    /// The oldest range, fetched, being consumed.
    current: Bytes,
}

impl Ranges {
    /// Starts ranges until `concurrency` are in flight or the object is covered.
    fn fill(&mut self) {
        while self.window.len() < self.concurrency && self.next < self.size {
            let end = (self.next + RANGE).min(self.size);
            let task = fetch(self.store.clone(), self.key.clone(), self.next, end, None);
            self.window.push_back(tokio::spawn(task));
            self.next = end;
        }
    }

    fn stop(&mut self) {
        for task in self.window.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Ranges {
    fn drop(&mut self) {
        self.stop();
    }
}

impl AsyncRead for Ranges {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while this.current.is_empty() {
            let Some(oldest) = this.window.front_mut() else {
                return Poll::Ready(Ok(())); // the end of the object
            };
            let fetched = ready!(Pin::new(oldest).poll(cx));
            this.window.pop_front();
            match fetched {
                Ok(Ok(range)) => {
                    this.current = range;
                    this.fill();
                }
                Ok(Err(e)) => {
                    this.stop();
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
                Err(e) => {
                    this.stop();
                    return Poll::Ready(Err(std::io::Error::other(format!("a ranged read failed: {e}"))));
                }
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current[..n]);
        this.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Reads bytes `start..end` whole (from `opened` if the GET was sent already), resuming from
/// the last byte received when the read breaks.
async fn fetch(
    store: S3Store,
    key: String,
    start: u64,
    end: u64,
    mut opened: Option<ByteStream>,
) -> StorageResult<Bytes> {
    let len = end - start;
    let mut buf = BytesMut::with_capacity(usize::try_from(len).unwrap_or(usize::MAX));
    let mut retries = Retries::default();
    let range = format!(" (bytes {start}..{end})");
    while (buf.len() as u64) < len {
        let at = start + buf.len() as u64;
        let mut stream = match opened.take() {
            Some(stream) => stream,
            None => match store.get_object(&key, at, Some(end)).await {
                Ok(out) => store.guarded(out.body, &key),
                Err(e @ (StorageError::Unreachable { .. } | StorageError::Failed { .. })) => {
                    retries.failed(&key, &range, at, &e).await?;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let before = buf.len();
        let read = read_rest(&mut stream, &mut buf, len).await;
        if buf.len() > before {
            retries.progressed();
        }
        match read {
            Ok(()) if (buf.len() as u64) == len => {}
            Ok(()) => {
                let ended = format!("the answer ended at byte {}", start + buf.len() as u64);
                retries.failed(&key, &range, start + buf.len() as u64, &ended).await?;
            }
            Err(e) => retries.failed(&key, &range, start + buf.len() as u64, &e).await?,
        }
    }
    Ok(buf.freeze())
}

/// Reads from `stream` into `buf` until it holds `len` bytes or the stream ends.
async fn read_rest(stream: &mut ByteStream, buf: &mut BytesMut, len: u64) -> std::io::Result<()> {
    while (buf.len() as u64) < len {
        let want = len - buf.len() as u64;
        if stream.take(want).read_buf(buf).await? == 0 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::total_size;

    #[test]
    fn reads_the_size_from_content_range() {
        assert_eq!(total_size("bytes 0-4194303/536870912"), Some(536_870_912));
        assert_eq!(total_size("bytes 0-0/*"), None);
        assert_eq!(total_size("garbage"), None);
    }
}
