//! The one-pass read of a format-2 backup (per-part digests in the manifest). The stored
//! object is read once and cut into the parts it was uploaded in; each part is released to
//! the consumer only after its SHA-256 matched the manifest, the last one only after the
//! whole object's size and SHA-256 matched too. So no unverified byte ever reaches an
//! importer, and a restore reads the object once instead of twice.
//!
//! A read that breaks (connection dropped, stalled, server error) resumes from the last byte
//! received with a Range GET, after a backoff and within a retry budget; only what was in
//! flight is read again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_compression::tokio::bufread::ZstdDecoder;
use bytes::{Buf, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::catalogue::{check_data, data_missing};
use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::interrupt::Interrupt;
use crate::manifest::{Compression, Manifest, Parts};
use crate::storage::retry::{self, Retries};
use crate::storage::{ByteStream, Storage, StorageError};

/// Size of the writes of decompressed data into the consumer.
const WRITE_CHUNK: usize = 1 << 20;

/// Size of the reads of decrypted data.
const READ_CHUNK: usize = 256 * 1024;

/// Streams a format-2 backup into `out` (decompressed), part by part, each part verified
/// before any byte of it is written. `write_failed` names the consumer in errors.
pub(crate) async fn stream_verified<W: AsyncWrite + Unpin>(
    storage: &Storage,
    manifest: &Manifest,
    parts: &Parts,
    progress: Arc<AtomicU64>,
    out: &mut W,
    write_failed: impl Fn(&std::io::Error) -> Error,
    interrupt: &mut Interrupt,
) -> Result<()> {
    let pending = Verified::start(storage, manifest, parts, progress, interrupt).await?;
    pending.deliver(out, write_failed, interrupt).await
}

type Reading<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A one-pass read that has verified its first part, so its consumer (the importer) is
/// started only once there is verified data to give it: a backup whose first part is bad
/// never starts the importer.
pub(crate) struct Verified<'a> {
    /// The rest of the read; `None` once it has finished.
    reading: Option<Reading<'a>>,
    rx: mpsc::Receiver<Bytes>,
    first: Bytes,
    manifest: &'a Manifest,
}

impl<'a> Verified<'a> {
    /// Checks the data object against the manifest and reads until the first part passed.
    pub(crate) async fn start(
        storage: &'a Storage,
        manifest: &'a Manifest,
        parts: &'a Parts,
        progress: Arc<AtomicU64>,
        interrupt: &mut Interrupt,
    ) -> Result<Verified<'a>> {
        check_data(storage, manifest).await?;
        // One part in the channel, one being read, one being written: memory is three parts.
        let (tx, mut rx) = mpsc::channel(1);
        let mut reading: Reading<'a> = Box::pin(read_parts(storage, manifest, parts, progress, tx));
        let (first, finished) = tokio::select! {
            first = rx.recv() => (first, false),
            done = &mut reading => {
                done?;
                (rx.recv().await, true)
            }
            err = interrupt.wait() => return Err(err),
        };
        Ok(Verified {
            reading: (!finished).then_some(reading),
            rx,
            first: first.unwrap_or_default(),
            manifest,
        })
    }

    /// Writes every verified part into `out` while the read goes on.
    pub(crate) async fn deliver<W: AsyncWrite + Unpin>(
        self,
        out: &mut W,
        write_failed: impl Fn(&std::io::Error) -> Error,
        interrupt: &mut Interrupt,
    ) -> Result<()> {
        let received = Received {
            rx: self.rx,
            current: self.first,
        };
        let write = deliver(received, self.manifest, out, write_failed);
        match self.reading {
            Some(reading) => tokio::select! {
                done = futures::future::try_join(reading, write) => done.map(|_| ()),
                err = interrupt.wait() => Err(err),
            },
            None => tokio::select! {
                done = write => done,
                err = interrupt.wait() => Err(err),
            },
        }
    }
}

/// Reads the stored object once and sends each verified part; the last one only after the
/// object's end checked out. Stops quietly when the consumer has gone (it reports why).
///
/// The whole object's SHA-256 is not computed again: the manifest's part digests cover every
/// byte of its size ([`Manifest::from_bytes`] refuses one whose digests do not), each part
/// matched its digest, and the object ends where the manifest says, so the bytes are the
/// ones the backup hashed. Format-1 and adopted backups, without part digests, still check
/// the whole-object digest.
async fn read_parts(
    storage: &Storage,
    manifest: &Manifest,
    parts: &Parts,
    progress: Arc<AtomicU64>,
    tx: mpsc::Sender<Bytes>,
) -> Result<()> {
    let mut source = Resuming::new(storage, &manifest.name, progress);
    let count = parts.sha256.len();
    for (index, ((offset, len), want)) in parts.layout.parts(manifest.size).zip(&parts.sha256).enumerate() {
        let mut part = BytesMut::with_capacity(usize::try_from(len).unwrap_or(usize::MAX));
        source.read_exact(&mut part, len).await?;
        let got = hex::encode(Sha256::digest(&part));
        if got != *want {
            return Err(Error::Integrity(format!(
                "backup {:?} is corrupt: part {} of {count} (bytes {offset}..{}) has sha256 {got}, the manifest \
                 says {want}; no byte of it was released",
                manifest.name,
                index + 1,
                offset + len
            )));
        }
        if index + 1 == count {
            source.expect_end(&manifest.name).await?;
        }
        if tx.send(part.freeze()).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes the received (verified) parts into `out`, decrypted and decompressed if the backup
/// is.
async fn deliver<W: AsyncWrite + Unpin>(
    mut received: Received,
    manifest: &Manifest,
    out: &mut W,
    write_failed: impl Fn(&std::io::Error) -> Error,
) -> Result<()> {
    if manifest.encryption.is_some() {
        return decrypt_into(received, manifest, out, write_failed).await;
    }
    match manifest.compression {
        Compression::None => {
            out.write_all(&received.current).await.map_err(|e| write_failed(&e))?;
            while let Some(part) = received.rx.recv().await {
                out.write_all(&part).await.map_err(|e| write_failed(&e))?;
            }
        }
        Compression::Zstd => {
            let mut decoder = ZstdDecoder::new(received);
            decoder.multiple_members(true);
            let mut buf = vec![0u8; WRITE_CHUNK];
            loop {
                let n = decoder
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::Integrity(format!("decompressing a verified backup failed: {e}")))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).await.map_err(|e| write_failed(&e))?;
            }
        }
    }
    out.flush().await.map_err(|e| write_failed(&e))
}

/// Decrypts the verified parts (then decompresses them) into `out`, proving the plaintext:
/// its size and SHA-256 must be the export's, recorded in the manifest. Age authenticates
/// each 64 KiB chunk and the end of the stream; the plaintext check also catches a stored
/// object re-encrypted to the same recipients. The last [`WRITE_CHUNK`] is held back until
/// the plaintext checked out, so a consumer never receives a complete import of bytes that
/// do not match.
async fn decrypt_into<W: AsyncWrite + Unpin>(
    received: Received,
    manifest: &Manifest,
    out: &mut W,
    write_failed: impl Fn(&std::io::Error) -> Error,
) -> Result<()> {
    let name = &manifest.name;
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        Error::Integrity(format!(
            "backup {name:?}: {what} failed: {e} (the stored bytes match the manifest's digests: the backup \
             was written so, tampered with before its manifest, or forged)"
        ))
    };
    let Some(encryption) = &manifest.encryption else {
        return Err(Error::Integrity(format!("backup {name:?} is not encrypted")));
    };
    let keys = crate::encryption::keys();
    keys.check_readable(manifest)?;
    let decryptor = age::Decryptor::new_async_buffered(received.compat())
        .await
        .map_err(|e| broken("reading the age header", &e))?;
    let identities = keys.matching(encryption).map(|i| i as &dyn age::Identity);
    let plain = decryptor
        .decrypt_async(identities)
        .map_err(|e| broken("decrypting", &e))?
        .compat();
    let plain: Box<dyn AsyncRead + Unpin + Send> = match manifest.compression {
        Compression::None => Box::new(plain),
        Compression::Zstd => {
            let mut decoder = ZstdDecoder::new(tokio::io::BufReader::with_capacity(256 * 1024, plain));
            decoder.multiple_members(true);
            Box::new(decoder)
        }
    };
    let mut plain = HashingReader::new(plain);
    // Reads go through an initialized buffer: the futures-to-tokio adapter zeroes whatever
    // uninitialized room a read is given, which per 64 KiB age chunk doubled the restore's CPU.
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut held = BytesMut::with_capacity(2 * WRITE_CHUNK + READ_CHUNK);
    loop {
        let n = plain
            .read(&mut chunk)
            .await
            .map_err(|e| broken("decrypting or decompressing", &e))?;
        if n == 0 {
            break;
        }
        held.extend_from_slice(&chunk[..n]);
        if held.len() > 2 * WRITE_CHUNK {
            let ready = held.split_to(held.len() - WRITE_CHUNK);
            out.write_all(&ready).await.map_err(|e| write_failed(&e))?;
        }
    }
    let (size, sha256) = plain.finish();
    if size != manifest.raw_size || sha256 != manifest.raw_sha256 {
        return Err(Error::Integrity(format!(
            "backup {name:?}: the decrypted data is {size} bytes with sha256 {sha256}, the manifest records {} \
             bytes with sha256 {} (its end was held back)",
            manifest.raw_size, manifest.raw_sha256
        )));
    }
    out.write_all(&held).await.map_err(|e| write_failed(&e))?;
    out.flush().await.map_err(|e| write_failed(&e))
}

/// The verified parts as one byte stream, for the decompressor.
struct Received {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl AsyncBufRead for Received {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.current.is_empty() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(part) => this.current = part,
                None => break,
            }
        }
        Poll::Ready(Ok(&this.current[..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().current.advance(amt);
    }
}

impl AsyncRead for Received {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// A stored object read from the start, reopened at the last byte received when the read
/// breaks.
struct Resuming<'a> {
    storage: &'a Storage,
    key: &'a str,
    /// Bytes received so far: where a reopened read starts.
    offset: u64,
    stream: Option<ByteStream>,
    retries: Retries,
    progress: Arc<AtomicU64>,
}

impl<'a> Resuming<'a> {
    fn new(storage: &'a Storage, key: &'a str, progress: Arc<AtomicU64>) -> Self {
        Resuming {
            storage,
            key,
            offset: 0,
            stream: None,
            retries: Retries::default(),
            progress,
        }
    }

    /// Appends the next `len` bytes of the object to `buf`.
    async fn read_exact(&mut self, buf: &mut BytesMut, len: u64) -> Result<()> {
        let end = self.offset + len;
        while self.offset < end {
            let stream = match self.stream.take() {
                Some(stream) => self.stream.insert(stream),
                None => {
                    let opened = self.open().await?;
                    self.stream.insert(opened)
                }
            };
            let read = stream.take(end - self.offset).read_buf(buf).await;
            match read {
                Ok(0) => return Err(self.short()),
                Ok(n) => {
                    self.offset += n as u64;
                    self.retries.progressed();
                    self.progress.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => match retry::spent(e) {
                    Ok(lost) => return Err(Error::Storage(lost)),
                    Err(e) => self.failed(&e).await?,
                },
            }
        }
        Ok(())
    }

    /// After the last part: an object longer than its manifest says is not the one it
    /// was written for.
    async fn expect_end(&mut self, name: &str) -> Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        match stream.read(&mut [0u8; 1]).await {
            Ok(n) if n > 0 => Err(Error::Integrity(format!(
                "backup {name:?} is corrupt: the object is longer than the {} bytes its manifest records",
                self.offset
            ))),
            _ => Ok(()),
        }
    }

    fn short(&self) -> Error {
        Error::Integrity(format!(
            "backup {:?} is corrupt: the object ends at byte {}, before the size its manifest records",
            self.key, self.offset
        ))
    }

    /// Opens the object at the current offset, retrying what may pass (the server
    /// unreachable or failing) within the budget.
    async fn open(&mut self) -> Result<ByteStream> {
        loop {
            match self.storage.get_from(self.key, self.offset).await {
                Ok(stream) => return Ok(stream),
                Err(e) if e.is_not_found() => return Err(data_missing(self.key)),
                Err(e @ (StorageError::Unreachable { .. } | StorageError::Failed { .. })) => self.failed(&e).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Counts one failed attempt and waits before the next; past the budget the read fails
    /// as a lost connection (exit 1: the backup is not at fault).
    async fn failed(&mut self, e: &(dyn std::fmt::Display + Sync)) -> Result<()> {
        self.stream = None;
        Ok(self.retries.failed(self.key, "", self.offset, e).await?)
    }
}
