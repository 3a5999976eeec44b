//! The "export must contain" check (`--must-contain`): an export that lacks an expected text is
//! refused before anything is committed. StackState's configuration backup checked its `.stj`
//! export for `"_version":` so that an empty file or an error page never became a backup; any
//! store can ask the same (e.g. `PGDMP`, the magic of a `pg_dump -Fc` archive).
//!
//! The check watches the raw export as it streams past, so nothing is buffered or read twice:
//! only the last `needle - 1` bytes are kept, to find a needle split across two reads.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};

/// Finds `needle` in a stream fed chunk by chunk.
struct Scanner {
    needle: Vec<u8>,
    /// The last `needle.len() - 1` bytes seen, for a match across a chunk boundary.
    tail: Vec<u8>,
}

impl Scanner {
    /// True once `needle` occurred in everything fed so far.
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let keep = self.needle.len() - 1;
        let mut boundary = self.tail.clone();
        boundary.extend_from_slice(&chunk[..chunk.len().min(keep)]);
        if contains(&boundary, &self.needle) || contains(chunk, &self.needle) {
            return true;
        }
        self.tail.extend_from_slice(chunk);
        let excess = self.tail.len().saturating_sub(keep);
        self.tail.drain(..excess);
        false
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// A reader that passes its bytes through unchanged while looking for the needle.
pub struct Watched<R> {
    inner: R,
    scanner: Option<Scanner>,
    found: Arc<AtomicBool>,
}

/// The verdict side of [`watch`]: asked once the stream has ended.
pub struct Seen {
    needle: Option<String>,
    found: Arc<AtomicBool>,
}

/// Wraps `inner` so that [`Seen::check`] can tell whether `needle` passed through it. No
/// needle (or an empty one) means no check.
pub fn watch<R>(inner: R, needle: Option<&str>) -> (Watched<R>, Seen) {
    let needle = needle.filter(|n| !n.is_empty());
    let found = Arc::new(AtomicBool::new(needle.is_none()));
    let scanner = needle.map(|n| Scanner {
        needle: n.as_bytes().to_vec(),
        tail: Vec::new(),
    });
    let seen = Seen {
        needle: needle.map(str::to_string),
        found: Arc::clone(&found),
    };
    (Watched { inner, scanner, found }, seen)
}

impl Seen {
    /// Ok when the needle passed (or none was asked for); otherwise the refusal of the export.
    pub fn check(&self) -> Result<()> {
        match &self.needle {
            Some(needle) if !self.found.load(Ordering::Relaxed) => Err(Error::Command(format!(
                "the export does not contain {needle:?} (--must-contain): it is not a valid export of this \
                 store (empty, an error message, or the wrong tool?); refused, nothing committed"
            ))),
            _ => Ok(()),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(scanner)) = (&poll, this.scanner.as_mut()) {
            if scanner.feed(&buf.filled()[before..]) {
                this.found.store(true, Ordering::Relaxed);
                // Found: the rest of the stream passes unscanned.
                this.scanner = None;
            }
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::watch;
    use tokio::io::AsyncReadExt;

    /// Streams `chunks` (each one read) through the watcher; the verdict.
    async fn verdict(chunks: &[&[u8]], needle: Option<&str>) -> bool {
        let mut builder = tokio_test_reader(chunks);
        let (mut watched, seen) = watch(&mut builder, needle);
        let mut out = Vec::new();
        watched.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, chunks.concat(), "the bytes pass unchanged");
        seen.check().is_ok()
    }

    /// A reader returning one chunk per read (or what fits of it), so chunk boundaries are under test.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl tokio::io::AsyncRead for Chunks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(chunk.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn tokio_test_reader(chunks: &[&[u8]]) -> Chunks {
        // an empty chunk would read as the end of the stream
        Chunks(chunks.iter().filter(|c| !c.is_empty()).map(|c| c.to_vec()).collect())
    }

    #[tokio::test]
    async fn finds_the_needle_within_and_across_reads() {
        let needle = Some("\"_version\":");
        assert!(verdict(&[b"{\"_version\": \"5.1\"}"], needle).await);
        assert!(verdict(&[b"{\"_ver", b"sion\": 1}"], needle).await);
        assert!(
            verdict(
                &[b"{\"", b"_", b"v", b"e", b"r", b"s", b"i", b"o", b"n", b"\"", b":1"],
                needle
            )
            .await
        );
        assert!(verdict(&[b"x".repeat(100_000).as_slice(), b"\"_version\":"], needle).await);
    }

    #[tokio::test]
    async fn refuses_an_export_without_the_needle() {
        let needle = Some("\"_version\":");
        assert!(!verdict(&[], needle).await);
        assert!(!verdict(&[b"Error: 401 Unauthorized"], needle).await);
        assert!(!verdict(&[b"{\"_version", b" \":"], needle).await);
        assert!(!verdict(&[b"\"_version\"", b""], needle).await);
    }

    #[tokio::test]
    async fn no_needle_means_no_check() {
        assert!(verdict(&[b"anything"], None).await);
        assert!(verdict(&[], Some("")).await);
    }
}
