//! The `file://` backend: a directory. Uploads go to a hidden temp file that is fsynced and
//! then hard-linked into place, so a half-written backup never carries the final name and an
//! existing object is never replaced.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{ByteStream, DeleteFailure, ObjectMeta, PendingUpload, StorageError, StorageResult};

/// Temp files of uploads in progress: `.upload-<key>.<random>.partial`.
const UPLOAD_PREFIX: &str = ".upload-";
const UPLOAD_SUFFIX: &str = ".partial";

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        FileStore { root }
    }

    pub fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    pub fn part_size(&self) -> usize {
        4 << 20
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_error(&self, op: &'static str, key: &str, e: std::io::Error) -> StorageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            return StorageError::NotFound {
                location: self.location(),
                key: key.to_string(),
            };
        }
        StorageError::Failed {
            location: self.location(),
            op,
            key: key.to_string(),
            detail: e.to_string(),
        }
    }

    pub async fn check(&self, create: bool) -> StorageResult<()> {
        if create {
            tokio::fs::create_dir_all(&self.root)
                .await
                .map_err(|e| self.io_error("create directory", "", e))?;
        }
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Invalid(format!(
                "--storage: {} is not a directory",
                self.root.display()
            ))),
            Err(_) => Err(StorageError::Invalid(format!(
                "--storage: directory {} does not exist",
                self.root.display()
            ))),
        }
    }

    pub async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
                modified: m.modified().ok(),
                etag: None,
                run: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("stat", key, e)),
        }
    }

    /// The directory's entries; `None` when the directory does not exist (yet).
    async fn read_root(&self) -> StorageResult<Option<tokio::fs::ReadDir>> {
        match tokio::fs::read_dir(&self.root).await {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("list", "", e)),
        }
    }

    pub async fn list(&self) -> StorageResult<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let Some(mut dir) = self.read_root().await? else {
            return Ok(out);
        };
        while let Some(entry) = dir.next_entry().await.map_err(|e| self.io_error("list", "", e))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = entry.metadata().await.map_err(|e| self.io_error("stat", &name, e))?;
            if meta.is_file() {
                out.push(ObjectMeta {
                    key: name,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    etag: None,
                    run: None,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn get_bytes(&self, key: &str, limit: usize) -> StorageResult<Vec<u8>> {
        let path = self.path(key);
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| self.io_error("read", key, e))?;
        if meta.len() > limit as u64 {
            return Err(StorageError::TooLarge {
                location: self.location(),
                key: key.to_string(),
                limit,
            });
        }
        tokio::fs::read(&path).await.map_err(|e| self.io_error("read", key, e))
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let mut upload = self.start_upload(key).await?;
        if let Err(e) = upload.put_part(data).await {
            upload.abort().await;
            return Err(e);
        }
        upload.complete().await
    }

    pub async fn get_from(&self, key: &str, start: u64) -> StorageResult<ByteStream> {
        let mut file = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| self.io_error("open", key, e))?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| self.io_error("seek", key, e))?;
        }
        Ok(Box::new(file))
    }

    pub async fn start_upload(&self, key: &str) -> StorageResult<FileUpload> {
        let nonce: u64 = rand_nonce();
        let temp = self
            .root
            .join(format!("{UPLOAD_PREFIX}{key}.{nonce:016x}{UPLOAD_SUFFIX}"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(|e| self.io_error("create", key, e))?;
        Ok(FileUpload {
            store: self.clone(),
            key: key.to_string(),
            temp,
            file,
        })
    }

    pub async fn delete_batch(&self, keys: &[String]) -> StorageResult<Vec<DeleteFailure>> {
        let mut failures = Vec::new();
        for key in keys {
            match tokio::fs::remove_file(self.path(key)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(DeleteFailure {
                    key: key.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        Ok(failures)
    }

    pub async fn pending_uploads(&self) -> StorageResult<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let Some(mut dir) = self.read_root().await? else {
            return Ok(out);
        };
        while let Some(entry) = dir.next_entry().await.map_err(|e| self.io_error("list", "", e))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(inner) = name
                .strip_prefix(UPLOAD_PREFIX)
                .and_then(|n| n.strip_suffix(UPLOAD_SUFFIX))
            else {
                continue;
            };
            let key = inner.rsplit_once('.').map(|(k, _)| k).unwrap_or(inner).to_string();
            let initiated = entry.metadata().await.ok().and_then(|m| m.modified().ok());
            out.push(PendingUpload {
                key,
                upload_id: name,
                initiated,
            });
        }
        Ok(out)
    }

    pub async fn abort_pending(&self, upload: &PendingUpload) -> StorageResult<()> {
        match tokio::fs::remove_file(self.root.join(&upload.upload_id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("abort upload", &upload.key, e)),
        }
    }
}

/// A random 64-bit value for temp names, without pulling in an RNG crate.
pub(crate) fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

pub struct FileUpload {
    store: FileStore,
    key: String,
    temp: PathBuf,
    file: tokio::fs::File,
}

impl FileUpload {
    pub async fn put_part(&mut self, data: Bytes) -> StorageResult<()> {
        self.file
            .write_all(&data)
            .await
            .map_err(|e| self.store.io_error("write", &self.key, e))
    }

    pub async fn complete(mut self) -> StorageResult<()> {
        let result = self.finish().await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.temp).await;
        }
        result
    }

    async fn finish(&mut self) -> StorageResult<()> {
        self.file
            .flush()
            .await
            .map_err(|e| self.store.io_error("write", &self.key, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| self.store.io_error("fsync", &self.key, e))?;
        let target = self.store.path(&self.key);
        // hard_link fails when the target exists: a completed upload never replaces an object.
        link_no_replace(&self.temp, &target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                StorageError::AlreadyExists {
                    location: self.store.location(),
                    key: self.key.clone(),
                }
            } else {
                self.store.io_error("complete", &self.key, e)
            }
        })?;
        let _ = tokio::fs::remove_file(&self.temp).await;
        if let Ok(dir) = std::fs::File::open(&self.store.root) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    pub async fn abort(self) {
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}

fn link_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to)
}
