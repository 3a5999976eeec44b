//! The S3 backend (aws-sdk-s3). Tuned for S3-compatible servers: path-style addressing,
//! request/response checksums only where the API requires them (the SDK's 2025 defaults
//! break MinIO/Ceph-style servers), a custom CA bundle, and SSE-S3 but never SSE-KMS.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ObjectLockEnabled, ObjectLockMode,
    ServerSideEncryption,
};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinSet;

use super::config::{Addressing, LockMode, ObjectLock, S3Config, Sse, Timeouts};
use super::{ByteStream, DeleteFailure, ObjectMeta, PendingUpload, StorageError, StorageResult, RUN_METADATA};

/// An entity tag without the quotes HTTP puts around it.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// The endpoint as errors name it (`http://minio:9000`, `AWS S3 (eu-west-1)`).
    endpoint: String,
    sse: Option<ServerSideEncryption>,
    object_lock: Option<ObjectLock>,
    part_size: usize,
    concurrency: usize,
    download_concurrency: usize,
    timeouts: Timeouts,
}

const REQUEST_TIMEOUT_FLAG: &str = "--request-timeout, S3_REQUEST_TIMEOUT";
const STALL_TIMEOUT_FLAG: &str = "--stall-timeout, S3_STALL_TIMEOUT";

/// Completing a multipart upload makes some servers (rclone, MinIO on slow disks) assemble
/// the parts before they answer: the request timeout grows by one second per this many bytes.
const ASSEMBLY_BYTES_PER_SECOND: u64 = 16 << 20;

impl S3Store {
    pub async fn connect(config: S3Config, bucket: String, prefix: String) -> StorageResult<S3Store> {
        let mut trust = TrustStore::default();
        if let Some(pem) = &config.ca_bundle {
            trust = trust.with_pem_certificate(pem.clone());
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| StorageError::Invalid(format!("--ca-bundle: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls_context)
            .build_https();

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(config.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(config.timeouts.connect)
                    .build(),
            )
            // The SDK's own guard on bodies in transit; ours (below) also covers the wait
            // for an answer after the last byte.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(config.timeouts.stall)
                    .build(),
            );
        if let Some(keys) = &config.keys {
            loader = loader.credentials_provider(Credentials::new(
                keys.access_key_id.clone(),
                keys.secret_access_key.clone(),
                keys.session_token.clone(),
                None,
                "sts-backup",
            ));
        }
        let shared = loader.load().await;
        let mut sdk = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.addressing == Addressing::Path)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            sdk = sdk.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        Ok(S3Store {
            client: Client::from_conf(sdk.build()),
            bucket,
            prefix,
            endpoint: config.endpoint_label(),
            sse: match config.sse {
                Sse::None => None,
                Sse::Aes256 => Some(ServerSideEncryption::Aes256),
            },
            object_lock: config.object_lock,
            part_size: config.part_size,
            concurrency: config.concurrency,
            download_concurrency: config.download_concurrency,
            timeouts: config.timeouts,
        })
    }

    /// Runs one request (the SDK's retries included) within `limit`.
    async fn request<T, E>(
        &self,
        op: &'static str,
        key: &str,
        limit: Duration,
        sent: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> StorageResult<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(limit, sent).await {
            Ok(result) => result.map_err(|e| self.classify(op, key, e)),
            Err(_) => Err(self.unreachable(format!(
                "no answer to {op}{} within {} ({REQUEST_TIMEOUT_FLAG})",
                quoted(key),
                humantime::format_duration(limit)
            ))),
        }
    }

    /// Runs a request that carries a body; fails when no byte has moved (body sent or answer
    /// received) for the stall timeout.
    async fn streamed<T, E>(
        &self,
        op: &'static str,
        key: &str,
        activity: &Activity,
        sent: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> StorageResult<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        tokio::pin!(sent);
        loop {
            let left = self.timeouts.stall.saturating_sub(activity.idle());
            // The request is polled first, also once more after the deadline passed: an
            // answer that arrived while this task was not scheduled (a starved runtime) wins.
            tokio::select! {
                biased;
                result = &mut sent => return result.map_err(|e| self.classify(op, key, e)),
                _ = tokio::time::sleep(left), if !left.is_zero() => {}
                _ = std::future::ready(()), if left.is_zero() => return Err(self.stalled(op, key)),
            }
        }
    }

    fn stalled(&self, op: &str, key: &str) -> StorageError {
        self.unreachable(stall_message(op, key, self.timeouts.stall))
    }

    fn unreachable(&self, detail: String) -> StorageError {
        StorageError::Unreachable {
            location: self.location(),
            detail: format!("{}: {detail}", self.endpoint),
        }
    }

    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Turns an SDK error into one line that says what went wrong (never credentials).
    fn classify<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location();
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        match (&err, code.as_deref(), status) {
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => StorageError::Unreachable {
                location,
                detail: format!("{}: {}", self.endpoint, DisplayErrorContext(&err)),
            },
            (_, Some("NoSuchBucket"), _) => StorageError::NoSuchBucket {
                location,
                bucket: self.bucket.clone(),
            },
            (
                _,
                Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken"),
                _,
            )
            | (_, _, Some(403)) => StorageError::AccessDenied {
                location,
                detail: code.unwrap_or_else(|| "HTTP 403".into()),
            },
            (_, Some("PreconditionFailed" | "ConditionalRequestConflict"), _) | (_, _, Some(412)) => {
                StorageError::AlreadyExists {
                    location,
                    key: key.to_string(),
                }
            }
            (_, Some("NoSuchKey" | "NotFound" | "NoSuchUpload"), _) | (_, _, Some(404)) => StorageError::NotFound {
                location,
                key: key.to_string(),
            },
            _ => StorageError::Failed {
                location,
                op,
                key: key.to_string(),
                detail: match (code, status) {
                    (Some(code), Some(status)) => {
                        format!("{code} (HTTP {status}): {}", err.message().unwrap_or(""))
                    }
                    _ => DisplayErrorContext(&err).to_string(),
                },
            },
        }
    }

    pub async fn check(&self) -> StorageResult<()> {
        let sent = self.client.head_bucket().bucket(&self.bucket).send();
        match self.request("check bucket", "", self.timeouts.request, sent).await {
            Ok(_) if self.lock_until().is_some() && !self.lock_enabled().await => Err(StorageError::Invalid(format!(
                "--object-lock: bucket {:?} does not have S3 Object Lock enabled (it can only be turned on when the \
                 bucket is created, or by AWS support)",
                self.bucket
            ))),
            Ok(_) => Ok(()),
            Err(StorageError::NotFound { location, .. }) => Err(StorageError::NoSuchBucket {
                location,
                bucket: self.bucket.clone(),
            }),
            Err(other) => Err(other),
        }
    }

    /// The lock mode and retain-until date for an object written now, when the run locks.
    fn lock_until(&self) -> Option<(ObjectLockMode, aws_smithy_types::DateTime)> {
        let lock = self.object_lock?;
        let until = SystemTime::now() + lock.period?;
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        Some((mode, aws_smithy_types::DateTime::from(until)))
    }

    pub async fn lock_enabled(&self) -> bool {
        let sent = self.client.get_object_lock_configuration().bucket(&self.bucket).send();
        match self
            .request("get object lock configuration", "", self.timeouts.request, sent)
            .await
        {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            Err(e) => {
                tracing::debug!("no Object Lock on the bucket: {e}");
                false
            }
        }
    }

    pub async fn locked_until(&self, key: &str) -> StorageResult<Option<chrono::DateTime<chrono::Utc>>> {
        let sent = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send();
        match self.request("head", key, self.timeouts.request, sent).await {
            Ok(out) => Ok(out
                .object_lock_retain_until_date()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .map(chrono::DateTime::<chrono::Utc>::from)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    pub async fn create_bucket(&self) -> StorageResult<()> {
        let sent = self.client.create_bucket().bucket(&self.bucket).send();
        self.request("create bucket", "", self.timeouts.request, sent)
            .await
            .map(|_| ())
    }

    pub async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let sent = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send();
        match self.request("head", key, self.timeouts.request, sent).await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified: out.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                etag: out.e_tag().map(unquote),
                run: out.metadata().and_then(|m| m.get(RUN_METADATA)).cloned(),
            })),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// GetObject of bytes `start..end` (`Range: bytes=start-(end-1)`): a bounded read.
    pub async fn get_range(&self, key: &str, start: u64, end: u64) -> StorageResult<ByteStream> {
        let out = self.get_object(key, start, Some(end)).await?;
        Ok(self.guarded(out.body, key))
    }

    pub async fn list(&self) -> StorageResult<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        loop {
            let next = async { pages.next().await.transpose() };
            let Some(page) = self.request("list", "", self.timeouts.request, next).await? else {
                break;
            };
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                // Only objects directly under the prefix; "subdirectories" are not ours.
                if key.is_empty() || key.contains('/') {
                    continue;
                }
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: obj.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                    etag: obj.e_tag().map(unquote),
                    run: None,
                });
            }
        }
        Ok(out)
    }

    pub async fn get_bytes(&self, key: &str, limit: usize) -> StorageResult<Vec<u8>> {
        // One plain GET: a small object, never worth ranged reads.
        let out = self.get_object(key, 0, None).await?;
        let stream = self.guarded(out.body, key);
        let buf = super::read_at_most(stream, limit as u64 + 1, &self.location(), key).await?;
        if buf.len() > limit {
            return Err(StorageError::TooLarge {
                location: self.location(),
                key: key.to_string(),
                limit,
            });
        }
        Ok(buf)
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.put_object(key, data, false, None, false).await
    }

    /// PutObject; `create_only` sends `If-None-Match: *`, `run` tags the object, `locked`
    /// applies the configured Object Lock (backups and manifests, never claims or probes).
    pub async fn put_object(
        &self,
        key: &str,
        data: Bytes,
        create_only: bool,
        run: Option<&str>,
        locked: bool,
    ) -> StorageResult<()> {
        let activity = Activity::new();
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_server_side_encryption(self.sse.clone())
            .body(watched_body(data, &activity));
        if create_only {
            put = put.if_none_match("*");
        }
        if let Some(run) = run {
            put = put.metadata(RUN_METADATA, run);
        }
        if let Some((mode, until)) = self.lock_until().filter(|_| locked) {
            // AWS wants a checksum header on every write that sets a retention.
            put = put
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until)
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
        }
        self.streamed("put", key, &activity, put.send()).await.map(|_| ())
    }

    /// Writes a probe object, then writes it again create-only: a server that honours
    /// `If-None-Match: *` refuses the second write. The probe is removed either way.
    pub async fn probe_conditional_writes(&self) -> StorageResult<bool> {
        let key = format!(".sts-backup-probe-{:016x}", super::file::rand_nonce());
        self.put_object(&key, Bytes::from_static(b"probe"), false, None, false)
            .await?;
        let second = self
            .put_object(&key, Bytes::from_static(b"probe"), true, None, false)
            .await;
        let _ = self.delete_batch(std::slice::from_ref(&key)).await;
        match second {
            Err(StorageError::AlreadyExists { .. }) => Ok(true),
            Ok(()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        self.get_from(key, 0).await
    }

    /// The object's bytes from `start` to its end: one GET (`Range: bytes=start-` when
    /// `start` > 0), or with `--download-concurrency` above 1 ranged GETs in parallel,
    /// delivered in order ([`super::ranged`]).
    pub async fn get_from(&self, key: &str, start: u64) -> StorageResult<ByteStream> {
        if self.download_concurrency > 1 {
            return super::ranged::open(self, key, start, self.download_concurrency).await;
        }
        let out = self.get_object(key, start, None).await?;
        Ok(self.guarded(out.body, key))
    }

    /// GetObject of bytes `start..end` (`end` exclusive; `None`: to the object's end).
    pub(super) async fn get_object(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> StorageResult<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        let range = match end {
            Some(end) => Some(format!("bytes={start}-{}", end.saturating_sub(1))),
            None => (start > 0).then(|| format!("bytes={start}-")),
        };
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_range(range)
            .send();
        self.request("get", key, self.timeouts.request, sent).await
    }

    /// A response body that fails when no byte arrives for the stall timeout.
    pub(super) fn guarded(&self, body: SdkByteStream, key: &str) -> ByteStream {
        Box::new(StallGuard {
            inner: body.into_async_read(),
            stall: self.timeouts.stall,
            timer: None,
            message: format!("{}: {}", self.endpoint, stall_message("get", key, self.timeouts.stall)),
        })
    }

    pub fn start_upload(&self, key: &str, run: Option<&str>) -> S3Upload {
        S3Upload {
            store: self.clone(),
            key: key.to_string(),
            run: run.map(str::to_string),
            upload_id: None,
            first: None,
            next_part: 1,
            sent_bytes: 0,
            in_flight: JoinSet::new(),
            in_flight_bytes: 0,
            done: Vec::new(),
        }
    }

    pub async fn delete_batch(&self, keys: &[String]) -> StorageResult<Vec<DeleteFailure>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Invalid(format!("delete: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StorageError::Invalid(format!("delete: {e}")))?;
        let sent = self.client.delete_objects().bucket(&self.bucket).delete(delete).send();
        let what = format!("{} keys", keys.len());
        let out = self.request("delete", &what, self.timeouts.request, sent).await?;
        Ok(out
            .errors()
            .iter()
            .map(|e| DeleteFailure {
                key: e
                    .key()
                    .map(|k| k.strip_prefix(&self.prefix).unwrap_or(k))
                    .unwrap_or("")
                    .to_string(),
                reason: format!("{} {}", e.code().unwrap_or("error"), e.message().unwrap_or(""))
                    .trim()
                    .to_string(),
            })
            .collect())
    }

    pub async fn pending_uploads(&self) -> StorageResult<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let sent = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send();
            let page = self.request("list uploads", "", self.timeouts.request, sent).await?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: key.strip_prefix(&self.prefix).unwrap_or(key).to_string(),
                    upload_id: id.to_string(),
                    initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    pub async fn abort_pending(&self, upload: &PendingUpload) -> StorageResult<()> {
        let sent = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send();
        match self
            .request("abort upload", &upload.key, self.timeouts.request, sent)
            .await
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// A streaming upload. The first part is held back: a stream that ends within one part is
/// sent with a single PutObject; longer ones become a multipart upload whose parts go out
/// concurrently (bounded), and which is aborted on any failure.
pub struct S3Upload {
    store: S3Store,
    key: String,
    run: Option<String>,
    upload_id: Option<String>,
    first: Option<Bytes>,
    next_part: i32,
    sent_bytes: u64,
    /// Each part's task returns its length, so the bytes it held are released when it ends.
    in_flight: JoinSet<StorageResult<(CompletedPart, usize)>>,
    in_flight_bytes: usize,
    done: Vec<CompletedPart>,
}

/// Whether a part of `next` bytes may be read while `held` bytes of parts are in memory:
/// within `budget`, or alone. The budget is (concurrency + 1) parts of the configured size,
/// what the default 8 MiB parts hold with 3 in flight and one being read; parts that grow
/// past 20 GiB ([`crate::manifest::PartLayout::standard`]) therefore go out fewer at a time,
/// and one at a time once one part alone exceeds half the budget, so memory stays flat.
fn fits(held: usize, next: usize, budget: usize) -> bool {
    held == 0 || held.saturating_add(next) <= budget
}

impl S3Upload {
    /// Waits until a part of `len` bytes may be read into memory (see [`fits`]).
    pub async fn make_room(&mut self, len: usize) -> StorageResult<()> {
        let budget = (self.store.concurrency + 1).saturating_mul(self.store.part_size);
        while !fits(self.held(), len, budget) && !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        Ok(())
    }

    /// Bytes of parts this upload holds: in flight, and the first part kept back.
    fn held(&self) -> usize {
        self.in_flight_bytes + self.first.as_ref().map_or(0, Bytes::len)
    }

    pub async fn put_part(&mut self, data: Bytes) -> StorageResult<()> {
        if self.upload_id.is_none() {
            match self.first.take() {
                None => {
                    self.first = Some(data);
                    return Ok(());
                }
                Some(first) => {
                    let sent = self
                        .store
                        .client
                        .create_multipart_upload()
                        .bucket(&self.store.bucket)
                        .key(self.store.full_key(&self.key))
                        .set_server_side_encryption(self.store.sse.clone())
                        .set_object_lock_mode(self.store.lock_until().map(|(mode, _)| mode))
                        .set_object_lock_retain_until_date(self.store.lock_until().map(|(_, until)| until))
                        .set_metadata(
                            self.run
                                .as_ref()
                                .map(|run| [(RUN_METADATA.to_string(), run.clone())].into()),
                        )
                        .customize()
                        .interceptor(super::compat::InitiateMultipartUploadRoot)
                        .send();
                    let out = self
                        .store
                        .request("start upload", &self.key, self.store.timeouts.request, sent)
                        .await?;
                    self.upload_id = out.upload_id().map(str::to_string);
                    if self.upload_id.is_none() {
                        return Err(self.failed("start upload", "the server returned no upload id".into()));
                    }
                    self.spawn_part(first).await?;
                }
            }
        }
        self.spawn_part(data).await
    }

    fn failed(&self, op: &'static str, detail: String) -> StorageError {
        StorageError::Failed {
            location: self.store.location(),
            op,
            key: self.key.clone(),
            detail,
        }
    }

    async fn spawn_part(&mut self, data: Bytes) -> StorageResult<()> {
        while self.in_flight.len() >= self.store.concurrency {
            self.reap_one().await?;
        }
        let number = self.next_part;
        if number > 10_000 {
            return Err(self.failed(
                "upload",
                "more than 10000 parts; raise --part-size (BACKUP_PART_SIZE)".into(),
            ));
        }
        self.next_part += 1;
        self.sent_bytes += data.len() as u64;
        let len = data.len();
        self.in_flight_bytes += len;
        let store = self.store.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.in_flight.spawn(async move {
            let activity = Activity::new();
            let sent = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(store.full_key(&key))
                .upload_id(upload_id)
                .part_number(number)
                .body(watched_body(data, &activity))
                .send();
            let out = store.streamed("upload part", &key, &activity, sent).await?;
            let part = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build();
            Ok((part, len))
        });
        Ok(())
    }

    async fn reap_one(&mut self) -> StorageResult<()> {
        if let Some(joined) = self.in_flight.join_next().await {
            let (part, len) = joined.map_err(|e| self.failed("upload part", e.to_string()))??;
            self.in_flight_bytes -= len;
            self.done.push(part);
        }
        Ok(())
    }

    pub async fn complete(mut self) -> StorageResult<()> {
        let Some(upload_id) = self.upload_id.clone() else {
            let data = self.first.take().unwrap_or_default();
            return self
                .store
                .put_object(&self.key, data, true, self.run.as_deref(), true)
                .await;
        };
        let result = self.finish(&upload_id).await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn finish(&mut self, upload_id: &str) -> StorageResult<()> {
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let sent = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.full_key(&self.key))
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send();
        let limit = self.store.timeouts.request + Duration::from_secs(self.sent_bytes / ASSEMBLY_BYTES_PER_SECOND);
        self.store
            .request("complete upload", &self.key, limit, sent)
            .await
            .map(|_| ())
    }

    pub async fn abort(mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(upload_id) = self.upload_id.take() {
            let pending = PendingUpload {
                key: self.key.clone(),
                upload_id,
                initiated: None,
            };
            // Bounded: a job told to stop must not wait on a stalled server.
            let budget = self.store.timeouts.abort();
            match tokio::time::timeout(budget, self.store.abort_pending(&pending)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    "could not abort the multipart upload of {:?} (the pruner will): {e}",
                    self.key
                ),
                Err(_) => tracing::warn!(
                    "could not abort the multipart upload of {:?} within {}: {} does not answer (the pruner will)",
                    self.key,
                    humantime::format_duration(budget),
                    self.store.endpoint
                ),
            }
        }
    }
}

/// ` "key"` for messages, or nothing for requests about the bucket.
fn quoted(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" {key:?}")
    }
}

fn stall_message(op: &str, key: &str, stall: Duration) -> String {
    format!(
        "no byte moved for {} during {op}{} ({STALL_TIMEOUT_FLAG})",
        humantime::format_duration(stall),
        quoted(key)
    )
}

/// When bytes last moved on one request.
#[derive(Clone)]
struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// Size of the slices a request body is handed to the HTTP stack in; each one taken counts
/// as progress.
const BODY_SLICE: usize = 64 * 1024;

/// A request body that records when the HTTP stack takes each slice, so a stalled server
/// (the socket buffer full, nothing read) shows as no activity. Rebuilt for SDK retries.
fn watched_body(data: Bytes, activity: &Activity) -> SdkByteStream {
    let activity = activity.clone();
    SdkByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(WatchedBody {
            data: data.clone(),
            activity: activity.clone(),
        })
    }))
}

struct WatchedBody {
    data: Bytes,
    activity: Activity,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        let slice = this.data.split_to(this.data.len().min(BODY_SLICE));
        this.activity.touch();
        Poll::Ready(Some(Ok(http_body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// A download that fails with `TimedOut` when it has waited for the next byte for the stall
/// timeout. Time the reader is not polled (a slow consumer) does not count.
struct StallGuard<R> {
    inner: R,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    message: String,
}

impl<R: AsyncRead + Unpin> AsyncRead for StallGuard<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.timer = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        this.message.clone(),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::fits;
    use crate::manifest::PartLayout;

    const MIB: usize = 1 << 20;

    /// The upload's schedule, played over a backup's real part sizes: before a part is read,
    /// finished parts are reaped (oldest first) until it fits; the reader never holds more
    /// than the budget, or one part when a part alone is larger.
    fn peak(parts: impl Iterator<Item = usize>, concurrency: usize, budget: usize) -> usize {
        let mut in_flight: std::collections::VecDeque<usize> = Default::default();
        let mut peak = 0;
        for len in parts {
            while !fits(in_flight.iter().sum(), len, budget) && !in_flight.is_empty() {
                in_flight.pop_front();
            }
            peak = peak.max(in_flight.iter().sum::<usize>() + len);
            while in_flight.len() >= concurrency {
                in_flight.pop_front();
            }
            in_flight.push_back(len);
        }
        peak
    }

    #[test]
    fn memory_stays_flat_as_parts_grow() {
        let layout = PartLayout::standard(8 * MIB as u64);
        let parts = || (0..10_000).map(|i| layout.part_len(i) as usize);
        // 3 in flight and one being read: the default's 32 MiB, at 8 MiB as at 64 MiB parts.
        assert_eq!(peak(parts().take(2_500), 3, 32 * MIB), 32 * MIB);
        assert_eq!(peak(parts(), 3, 32 * MIB), 64 * MIB, "one 64 MiB part alone");
        assert_eq!(peak(parts().take(7_500), 3, 32 * MIB), 32 * MIB);
        // Negative control: a count-only limit (the old rule) holds 4 x 64 MiB.
        assert_eq!(peak(parts(), 3, usize::MAX), 256 * MIB);
    }

    #[test]
    fn a_part_always_fits_when_nothing_is_held() {
        assert!(fits(0, 5 << 30, 32 * MIB));
        assert!(fits(24 * MIB, 8 * MIB, 32 * MIB));
        assert!(!fits(32 * MIB, 8 * MIB, 32 * MIB));
        assert!(!fits(16 * MIB, 32 * MIB, 32 * MIB));
    }
}
