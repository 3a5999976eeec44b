//! The S3 backend (aws-sdk-s3). Tuned for S3-compatible servers: path-style addressing,
//! request/response checksums only where the API requires them (the SDK's 2025 defaults
//! break MinIO/Ceph-style servers), a custom CA bundle, and SSE-S3 but never SSE-KMS.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::config::{Addressing, StorageArgs};
use super::{ByteStream, DeleteFailure, ObjectMeta, PendingUpload, StorageError, StorageResult, RUN_METADATA};

/// An entity tag without the quotes HTTP puts around it.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    sse: Option<ServerSideEncryption>,
    part_size: usize,
    concurrency: usize,
}

fn read_secret_file(dir: &std::path::Path, name: &str) -> StorageResult<String> {
    let path = dir.join(name);
    let value = std::fs::read_to_string(&path)
        .map_err(|e| StorageError::Invalid(format!("--credentials-dir: cannot read {}: {e}", path.display())))?;
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(StorageError::Invalid(format!(
            "--credentials-dir: {} is empty",
            path.display()
        )));
    }
    Ok(value)
}

fn parse_sse(sse: &str) -> StorageResult<Option<ServerSideEncryption>> {
    match sse {
        "" | "none" => Ok(None),
        "AES256" | "aes256" => Ok(Some(ServerSideEncryption::Aes256)),
        s if s.to_ascii_lowercase().contains("kms") => Err(StorageError::Invalid(format!(
            "--sse: {s:?} (SSE-KMS) is not supported: KMS ETags are not MD5 and S3-compatible clients, Elasticsearch included, fail to verify uploads; use AES256 (SSE-S3)"
        ))),
        s => Err(StorageError::Invalid(format!("--sse: {s:?} is not one of none, AES256"))),
    }
}

impl S3Store {
    pub async fn connect(args: &StorageArgs, bucket: String, prefix: String) -> StorageResult<S3Store> {
        let sse = parse_sse(&args.sse)?;
        let part_size = args.part_size_bytes()?;
        let concurrency = args.concurrency()?;
        if let Some(endpoint) = &args.s3_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(StorageError::Invalid(format!(
                    "--s3-endpoint: {endpoint:?} must start with http:// or https://"
                )));
            }
        }

        let mut trust = TrustStore::default();
        if let Some(ca) = &args.ca_bundle {
            let pem = std::fs::read(ca)
                .map_err(|e| StorageError::Invalid(format!("--ca-bundle: cannot read {}: {e}", ca.display())))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(StorageError::Invalid(format!(
                    "--ca-bundle: {} holds no PEM certificate",
                    ca.display()
                )));
            }
            trust = trust.with_pem_certificate(pem);
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
            .region(Region::new(args.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(dir) = &args.credentials_dir {
            let access = read_secret_file(dir, "accesskey")?;
            let secret = read_secret_file(dir, "secretkey")?;
            loader = loader.credentials_provider(Credentials::new(access, secret, None, None, "credentials-dir"));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(args.s3_addressing == Addressing::Path)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &args.s3_endpoint {
            config = config.endpoint_url(endpoint.trim_end_matches('/'));
        }
        Ok(S3Store {
            client: Client::from_conf(config.build()),
            bucket,
            prefix,
            sse,
            part_size,
            concurrency,
        })
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
                detail: DisplayErrorContext(&err).to_string(),
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
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) => Err(match self.classify("check bucket", "", err) {
                StorageError::NotFound { location, .. } => StorageError::NoSuchBucket {
                    location,
                    bucket: self.bucket.clone(),
                },
                other => other,
            }),
        }
    }

    pub async fn create_bucket(&self) -> StorageResult<()> {
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify("create bucket", "", e))
    }

    pub async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified: out.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                etag: out.e_tag().map(unquote),
                run: out.metadata().and_then(|m| m.get(RUN_METADATA)).cloned(),
            })),
            Err(err) => match self.classify("head", key, err) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
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
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.classify("list", "", e))?;
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
        let mut stream = self.get_stream(key).await?;
        let mut buf = Vec::new();
        (&mut stream)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| StorageError::Failed {
                location: self.location(),
                op: "read",
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        if buf.len() > limit {
            return Err(StorageError::Failed {
                location: self.location(),
                op: "read",
                key: key.to_string(),
                detail: format!("object is over the {limit}-byte limit"),
            });
        }
        Ok(buf)
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.put_object(key, data, false, None).await
    }

    /// PutObject; `create_only` sends `If-None-Match: *`, `run` tags the object.
    pub async fn put_object(&self, key: &str, data: Bytes, create_only: bool, run: Option<&str>) -> StorageResult<()> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_server_side_encryption(self.sse.clone())
            .body(SdkByteStream::from(data));
        if create_only {
            put = put.if_none_match("*");
        }
        if let Some(run) = run {
            put = put.metadata(RUN_METADATA, run);
        }
        put.send().await.map(|_| ()).map_err(|e| self.classify("put", key, e))
    }

    /// Writes a probe object, then writes it again create-only: a server that honours
    /// `If-None-Match: *` refuses the second write. The probe is removed either way.
    pub async fn probe_conditional_writes(&self) -> StorageResult<bool> {
        let key = format!(".sts-backup-probe-{:016x}", super::file::rand_nonce());
        self.put_object(&key, Bytes::from_static(b"probe"), false, None).await?;
        let second = self.put_object(&key, Bytes::from_static(b"probe"), true, None).await;
        let _ = self.delete_batch(std::slice::from_ref(&key)).await;
        match second {
            Err(StorageError::AlreadyExists { .. }) => Ok(true),
            Ok(()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.classify("get", key, e))?;
        Ok(Box::new(out.body.into_async_read()))
    }

    pub fn start_upload(&self, key: &str, run: Option<&str>) -> S3Upload {
        S3Upload {
            store: self.clone(),
            key: key.to_string(),
            run: run.map(str::to_string),
            upload_id: None,
            first: None,
            next_part: 1,
            in_flight: JoinSet::new(),
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
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| self.classify("delete", &format!("{} keys", keys.len()), e))?;
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
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.classify("list uploads", "", e))?;
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
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match self.classify("abort upload", &upload.key, err) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
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
    in_flight: JoinSet<StorageResult<CompletedPart>>,
    done: Vec<CompletedPart>,
}

impl S3Upload {
    pub async fn put_part(&mut self, data: Bytes) -> StorageResult<()> {
        if self.upload_id.is_none() {
            match self.first.take() {
                None => {
                    self.first = Some(data);
                    return Ok(());
                }
                Some(first) => {
                    let out = self
                        .store
                        .client
                        .create_multipart_upload()
                        .bucket(&self.store.bucket)
                        .key(self.store.full_key(&self.key))
                        .set_server_side_encryption(self.store.sse.clone())
                        .set_metadata(
                            self.run
                                .as_ref()
                                .map(|run| [(RUN_METADATA.to_string(), run.clone())].into()),
                        )
                        .customize()
                        .interceptor(super::compat::InitiateMultipartUploadRoot)
                        .send()
                        .await
                        .map_err(|e| self.store.classify("start upload", &self.key, e))?;
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
        let store = self.store.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.in_flight.spawn(async move {
            let out = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(store.full_key(&key))
                .upload_id(upload_id)
                .part_number(number)
                .body(SdkByteStream::from(data))
                .send()
                .await
                .map_err(|e| store.classify("upload part", &key, e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        });
        Ok(())
    }

    async fn reap_one(&mut self) -> StorageResult<()> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.map_err(|e| self.failed("upload part", e.to_string()))??;
            self.done.push(part);
        }
        Ok(())
    }

    pub async fn complete(mut self) -> StorageResult<()> {
        let Some(upload_id) = self.upload_id.clone() else {
            let data = self.first.take().unwrap_or_default();
            return self.store.put_object(&self.key, data, true, self.run.as_deref()).await;
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
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.full_key(&self.key))
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.store.classify("complete upload", &self.key, e))
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
            if let Err(e) = self.store.abort_pending(&pending).await {
                tracing::warn!(
                    "could not abort the multipart upload of {:?} (the pruner will): {e}",
                    self.key
                );
            }
        }
    }
}
