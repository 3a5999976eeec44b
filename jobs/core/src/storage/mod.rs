//! Object storage: the one storage client every job uses. Two backends behind one enum:
//! S3 (AWS, MinIO, rclone, Ceph...) and a local directory (`file://`), the embedded default
//! for one machine and demos. Both pass the same contract tests.
//!
//! Keys are relative to the configured prefix; backups live flat under it.

mod compat;
mod config;
mod file;
mod ranged;
pub mod retry;
mod s3;

use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use config::{
    parse_byte_size, Addressing, LockMode, ObjectLock, S3Config, S3Keys, Sse, StorageArgs, StorageConfig, StorageUrl,
    Timeouts, DEFAULT_REGION,
};
pub use file::FileStore;
pub use s3::S3Store;

use crate::exit::Exit;

/// Most keys one batch delete may carry (the S3 `DeleteObjects` limit).
pub const DELETE_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Invalid(String),
    #[error("{location}: bucket {bucket:?} does not exist")]
    NoSuchBucket { location: String, bucket: String },
    #[error("{location}: access denied ({detail}); check the access key and secret key")]
    AccessDenied { location: String, detail: String },
    #[error("{location}: cannot reach the storage endpoint: {detail}")]
    Unreachable { location: String, detail: String },
    #[error("{location}: {key:?} not found")]
    NotFound { location: String, key: String },
    /// A small object (a manifest) over its size limit: not something this tool wrote.
    #[error("{location}: {key:?} is over the {limit}-byte limit; it was not written by this tool or is damaged")]
    TooLarge {
        location: String,
        key: String,
        limit: usize,
    },
    /// A read of the stored bytes failed half-way (the server went away, the connection
    /// dropped): a failure (exit 1), not a bad backup.
    #[error("storage connection lost while reading {key:?}: {detail}")]
    ConnectionLost { key: String, detail: String },
    /// The server no longer knows the upload this run is writing: something aborted it
    /// meanwhile (a pruner whose `--abort-uploads-older-than` is shorter than this backup,
    /// or a bucket lifecycle rule). Nothing was committed.
    #[error(
        "{location}: the upload of {key:?} was aborted while this run was still writing it (by a pruner whose \
         --abort-uploads-older-than is shorter than this backup takes, or by a bucket lifecycle rule); nothing \
         was committed: keep --abort-uploads-older-than above the longest backup's duration"
    )]
    UploadAborted { location: String, key: String },
    /// A create-only write found the key taken (another writer got there first).
    #[error("{location}: {key:?} already exists")]
    AlreadyExists { location: String, key: String },
    #[error("{location}: {op} {key:?} failed: {detail}")]
    Failed {
        location: String,
        op: &'static str,
        key: String,
        detail: String,
    },
}

impl StorageError {
    pub fn exit(&self) -> Exit {
        match self {
            StorageError::Invalid(_) | StorageError::NoSuchBucket { .. } | StorageError::AccessDenied { .. } => {
                Exit::Invalid
            }
            StorageError::TooLarge { .. } => Exit::Integrity,
            StorageError::AlreadyExists { .. } => Exit::Refused,
            _ => Exit::Failure,
        }
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, StorageError::AlreadyExists { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// An upload's own parts "not found" mid-write means someone aborted the upload: say so.
fn aborted_meanwhile(e: StorageError) -> StorageError {
    match e {
        StorageError::NotFound { location, key } => StorageError::UploadAborted { location, key },
        other => other,
    }
}

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
    /// The server's entity tag, quotes removed (S3; `None` for `file://`).
    pub etag: Option<String>,
    /// The run that wrote the object ([`RUN_METADATA`]); only `head` reads it.
    pub run: Option<String>,
}

/// S3 user metadata naming the backup run that wrote a data object. It tells our objects
/// from foreign ones (StackState's own backups) and a manifest's data from another run's.
pub const RUN_METADATA: &str = "sts-backup-run";

/// An upload that was started and never completed (S3 multipart, or a file backend temp file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// A key whose deletion failed inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    pub key: String,
    pub reason: String,
}

pub type ByteStream = Box<dyn AsyncRead + Send + Unpin>;

/// A configured storage location.
#[derive(Debug, Clone)]
pub enum Storage {
    File(FileStore),
    S3(S3Store),
}

impl Storage {
    /// Opens the storage that the flags describe. Nothing is contacted yet; see [`Storage::check`].
    pub async fn open(args: &StorageArgs) -> StorageResult<Storage> {
        Self::open_config(args.config()?).await
    }

    /// Opens an already checked configuration.
    pub async fn open_config(config: StorageConfig) -> StorageResult<Storage> {
        match config.url {
            StorageUrl::File(path) => Ok(Storage::File(FileStore::new(path))),
            StorageUrl::S3 { bucket, prefix } => Ok(Storage::S3(S3Store::connect(config.s3, bucket, prefix).await?)),
        }
    }

    /// Whether the bucket has S3 Object Lock enabled (never on `file://`; a server that does
    /// not implement it answers an error, taken as no).
    pub async fn lock_enabled(&self) -> bool {
        match self {
            Storage::File(_) => false,
            Storage::S3(s) => s.lock_enabled().await,
        }
    }

    /// Until when Object Lock retains `key`, if it does.
    pub async fn locked_until(&self, key: &str) -> StorageResult<Option<chrono::DateTime<chrono::Utc>>> {
        match self {
            Storage::File(_) => Ok(None),
            Storage::S3(s) => s.locked_until(key).await,
        }
    }

    /// Where the backups are, for log lines (`s3://bucket/prefix`, `file:///path`).
    pub fn location(&self) -> String {
        match self {
            Storage::File(s) => s.location(),
            Storage::S3(s) => s.location(),
        }
    }

    /// Proves the location exists and the credentials work. `create` makes a missing
    /// local directory (never a bucket).
    pub async fn check(&self, create: bool) -> StorageResult<()> {
        match self {
            Storage::File(s) => s.check(create).await,
            Storage::S3(s) => s.check().await,
        }
    }

    pub async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        match self {
            Storage::File(s) => s.head(key).await,
            Storage::S3(s) => s.head(key).await,
        }
    }

    /// Every object under the prefix, all pages.
    pub async fn list(&self) -> StorageResult<Vec<ObjectMeta>> {
        match self {
            Storage::File(s) => s.list().await,
            Storage::S3(s) => s.list().await,
        }
    }

    /// Reads a small object whole (manifests). Refuses objects over `limit` bytes.
    pub async fn get_bytes(&self, key: &str, limit: usize) -> StorageResult<Vec<u8>> {
        match self {
            Storage::File(s) => s.get_bytes(key, limit).await,
            Storage::S3(s) => s.get_bytes(key, limit).await,
        }
    }

    /// Writes a small object only if the key is free: `AlreadyExists` otherwise. Atomic on
    /// `file://` and on S3 servers that honour `If-None-Match: *` (see
    /// [`Storage::honours_conditional_writes`]); elsewhere the check is best effort.
    pub async fn put_new(&self, key: &str, data: Bytes) -> StorageResult<()> {
        match self {
            Storage::File(s) => s.put_bytes(key, data).await,
            Storage::S3(s) => s.put_object(key, data, true, None, true).await.map(|_| ()),
        }
    }

    /// Whether create-only writes are enforced by the server. S3 servers differ (AWS and
    /// MinIO honour `If-None-Match: *`, `rclone serve s3` ignores it), so this writes a probe
    /// object twice and looks at the answer. `file://` always is.
    pub async fn honours_conditional_writes(&self) -> StorageResult<bool> {
        match self {
            Storage::File(_) => Ok(true),
            Storage::S3(s) => s.probe_conditional_writes().await,
        }
    }

    /// Whether data objects carry the run that wrote them ([`RUN_METADATA`]). Only S3 has
    /// object metadata; a `file://` directory is written by this tool alone.
    pub fn records_runs(&self) -> bool {
        matches!(self, Storage::S3(_))
    }

    /// Writes a small object whole; never replaces an existing object on the file backend.
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> StorageResult<()> {
        match self {
            Storage::File(s) => s.put_bytes(key, data).await,
            Storage::S3(s) => s.put_bytes(key, data).await,
        }
    }

    pub async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        self.get_from(key, 0).await
    }

    /// The object's bytes from `start` to its end (a Range GET on S3): a read that broke
    /// resumes here instead of starting over.
    pub async fn get_from(&self, key: &str, start: u64) -> StorageResult<ByteStream> {
        match self {
            Storage::File(s) => s.get_from(key, start).await,
            Storage::S3(s) => s.get_from(key, start).await,
        }
    }

    /// At most the first `len` bytes of an object (all of it when shorter): one bounded Range
    /// GET on S3, so a look at an object's header never makes the server send the rest.
    pub async fn get_start(&self, key: &str, len: u64) -> StorageResult<Vec<u8>> {
        let stream = match self {
            Storage::File(s) => s.get_from(key, 0).await?,
            Storage::S3(s) => s.get_range(key, 0, len).await?,
        };
        read_at_most(stream, len, &self.location(), key).await
    }

    /// Starts an upload that becomes visible under `key` only on [`Upload::complete`], which
    /// never replaces an existing object where the server enforces it. `run` is recorded as
    /// [`RUN_METADATA`] on S3.
    pub async fn start_upload(&self, key: &str, run: Option<&str>) -> StorageResult<Upload> {
        match self {
            Storage::File(s) => Ok(Upload::File(s.start_upload(key).await?)),
            Storage::S3(s) => Ok(Upload::S3(s.start_upload(key, run))),
        }
    }

    /// Deletes keys in batches of [`DELETE_BATCH`] (one request each) and returns the keys
    /// that failed, with why. A batch that fails as a whole marks each of its keys failed and
    /// the next batch is still sent. A key that is already gone counts as deleted.
    pub async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        let mut failures = Vec::new();
        for batch in keys.chunks(DELETE_BATCH) {
            let sent = match self {
                Storage::File(s) => s.delete_batch(batch).await,
                Storage::S3(s) => s.delete_batch(batch).await,
            };
            match sent {
                Ok(failed) => failures.extend(failed),
                Err(e) => failures.extend(batch.iter().map(|key| DeleteFailure {
                    key: key.clone(),
                    reason: e.to_string(),
                })),
            }
        }
        failures
    }

    pub async fn delete(&self, key: &str) -> StorageResult<()> {
        match self.delete_many(&[key.to_string()]).await.into_iter().next() {
            None => Ok(()),
            Some(f) => Err(StorageError::Failed {
                location: self.location(),
                op: "delete",
                key: f.key,
                detail: f.reason,
            }),
        }
    }

    /// Uploads that were started and never completed or aborted.
    pub async fn pending_uploads(&self) -> StorageResult<Vec<PendingUpload>> {
        match self {
            Storage::File(s) => s.pending_uploads().await,
            Storage::S3(s) => s.pending_uploads().await,
        }
    }

    pub async fn abort_pending(&self, upload: &PendingUpload) -> StorageResult<()> {
        match self {
            Storage::File(s) => s.abort_pending(upload).await,
            Storage::S3(s) => s.abort_pending(upload).await,
        }
    }

    /// Creates the bucket (S3 only; a directory for `file://`).
    pub async fn create_bucket(&self) -> StorageResult<()> {
        match self {
            Storage::File(s) => s.check(true).await,
            Storage::S3(s) => s.create_bucket().await,
        }
    }

    /// Bytes per part for streaming uploads.
    pub fn part_size(&self) -> usize {
        match self {
            Storage::File(s) => s.part_size(),
            Storage::S3(s) => s.part_size(),
        }
    }
}

/// A random 64-bit value (run ids, temp names), without pulling in an RNG crate.
pub fn random_id() -> u64 {
    file::rand_nonce()
}

/// An upload in progress. Dropping it without `complete` or `abort` leaves a pending upload
/// that the pruner removes later; callers abort explicitly on every error path.
pub enum Upload {
    File(file::FileUpload),
    S3(s3::S3Upload),
}

impl Upload {
    /// Waits until a part of `len` bytes may be read into memory: S3 parts in flight stay
    /// within a byte budget however large parts grow. Files are written as they come.
    pub async fn make_room(&mut self, len: usize) -> StorageResult<()> {
        let room = match self {
            Upload::File(_) => Ok(()),
            Upload::S3(u) => u.make_room(len).await,
        };
        room.map_err(aborted_meanwhile)
    }

    /// Sends one part. S3 parts go out concurrently, up to the configured limit, so this
    /// returns as soon as a slot is free; the memory held is bounded by parts in flight.
    pub async fn put_part(&mut self, data: Bytes) -> StorageResult<()> {
        let sent = match self {
            Upload::File(u) => u.put_part(data).await,
            Upload::S3(u) => u.put_part(data).await,
        };
        sent.map_err(aborted_meanwhile)
    }

    /// Makes the object visible under its key.
    pub async fn complete(self) -> StorageResult<()> {
        let done = match self {
            Upload::File(u) => u.complete().await,
            Upload::S3(u) => u.complete().await,
        };
        done.map_err(aborted_meanwhile)
    }

    /// Throws the upload away; nothing is left under the key.
    pub async fn abort(self) {
        match self {
            Upload::File(u) => u.abort().await,
            Upload::S3(u) => u.abort().await,
        }
    }
}

/// Reads at most `cap` bytes of an object's stream into memory; a broken read is one line
/// naming the object.
pub(crate) async fn read_at_most(
    stream: impl AsyncRead + Unpin,
    cap: u64,
    location: &str,
    key: &str,
) -> StorageResult<Vec<u8>> {
    let mut buf = Vec::new();
    stream
        .take(cap)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StorageError::Failed {
            location: location.to_string(),
            op: "read",
            key: key.to_string(),
            detail: e.to_string(),
        })?;
    Ok(buf)
}
