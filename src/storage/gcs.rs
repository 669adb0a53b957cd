//! The Google Cloud Storage backend, through the official `google-cloud-storage` client:
//! uploads are resumable and streamed (a bounded buffer, never the whole object), downloads are
//! streamed, and clients get V4 signed URLs.
//!
//! Credentials are the usual Google ones (Application Default Credentials), or a
//! service-account key file (`GCS_CREDENTIALS_FILE`); `GCS_ENDPOINT` points the client and the
//! signed URLs at an emulator.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use google_cloud_auth::credentials::{anonymous, service_account, Credentials};
use google_cloud_auth::signer::Signer;
use google_cloud_storage::builder::storage::SignedUrlBuilder;
use google_cloud_storage::client::Storage;
use google_cloud_storage::streaming_source::StreamingSource;
use tokio::io::AsyncWriteExt;

use super::{valid_key, BodyChunks, ObjectStore, StorageError, StorageSettings, UrlMethod};

/// Bytes buffered per resumable-upload request: the memory one upload holds at most.
const UPLOAD_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Objects in a GCS bucket.
pub struct GcsStore {
    client: Storage,
    bucket: String,
    bucket_path: String,
    endpoint: Option<String>,
    signer: Option<Signer>,
}

impl GcsStore {
    /// Connects the client (no request is made until the first operation).
    pub async fn new(settings: &StorageSettings) -> anyhow::Result<GcsStore> {
        // The client's TLS stack needs a process-wide rustls provider; ring builds without cmake.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bucket = settings
            .gcs_bucket
            .clone()
            .ok_or_else(|| anyhow::anyhow!("GCS_BUCKET is not set"))?;
        let key_json = match &settings.gcs_credentials_file {
            Some(path) => {
                let raw = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("GCS_CREDENTIALS_FILE {}: {e}", path.display()))?;
                Some(
                    serde_json::from_str::<serde_json::Value>(&raw)
                        .map_err(|e| anyhow::anyhow!("GCS_CREDENTIALS_FILE is not JSON: {e}"))?,
                )
            }
            None => None,
        };
        let credentials: Credentials = if settings.gcs_anonymous {
            anonymous::Builder::new().build()
        } else if let Some(key) = &key_json {
            service_account::Builder::new(key.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("GCS_CREDENTIALS_FILE: {e}"))?
        } else {
            google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| anyhow::anyhow!("Google application default credentials: {e}"))?
        };
        let signer = match (&key_json, settings.gcs_anonymous) {
            (Some(key), _) => Some(
                service_account::Builder::new(key.clone())
                    .build_signer()
                    .map_err(|e| anyhow::anyhow!("GCS_CREDENTIALS_FILE signer: {e}"))?,
            ),
            (None, true) => {
                tracing::warn!(
                    "GCS_ANONYMOUS without GCS_CREDENTIALS_FILE: URLs are NOT signed (emulators only)"
                );
                None
            }
            (None, false) => Some(
                google_cloud_auth::credentials::Builder::default()
                    .build_signer()
                    .map_err(|e| anyhow::anyhow!("Google credentials cannot sign URLs: {e}"))?,
            ),
        };
        let mut builder = Storage::builder().with_credentials(credentials);
        if let Some(endpoint) = &settings.gcs_endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let client = builder
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("Cloud Storage client: {e}"))?;
        Ok(GcsStore {
            client,
            bucket_path: format!("projects/_/buckets/{bucket}"),
            bucket,
            endpoint: settings.gcs_endpoint.clone(),
            signer,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn checked(key: &str) -> Result<(), StorageError> {
        if valid_key(key) {
            Ok(())
        } else {
            Err(StorageError::InvalidKey)
        }
    }
}

fn backend(e: google_cloud_storage::Error) -> StorageError {
    if e.http_status_code() == Some(404) {
        StorageError::NotFound
    } else {
        StorageError::Backend(e.to_string())
    }
}

/// An upload body read from the HTTP handler's channel, cut off past the size limit.
struct ChannelSource {
    body: BodyChunks,
    size: u64,
    max: u64,
    over: Arc<AtomicBool>,
}

impl StreamingSource for ChannelSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        match self.body.recv().await? {
            Ok(chunk) => {
                self.size += chunk.len() as u64;
                if self.size > self.max {
                    self.over.store(true, Ordering::Relaxed);
                    return Some(Err(std::io::Error::other("upload over the size limit")));
                }
                Some(Ok(chunk))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl ObjectStore for GcsStore {
    fn name(&self) -> &'static str {
        "gcs"
    }

    fn put_stream<'a>(
        &'a self,
        key: &'a str,
        content_type: &'a str,
        body: BodyChunks,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            let over = Arc::new(AtomicBool::new(false));
            let source = ChannelSource {
                body,
                size: 0,
                max: max_bytes,
                over: over.clone(),
            };
            // An error from the source aborts the resumable session before it is finalised,
            // so nothing appears under the key.
            let result = self
                .client
                .write_object(&self.bucket_path, key, source)
                .set_content_type(content_type)
                .with_resumable_upload_buffer_size(UPLOAD_BUFFER_BYTES)
                .send_buffered()
                .await;
            match result {
                Ok(object) => Ok(object.size.max(0) as u64),
                Err(_) if over.load(Ordering::Relaxed) => {
                    Err(StorageError::TooLarge { limit: max_bytes })
                }
                Err(e) => Err(StorageError::Interrupted(e.to_string())),
            }
        })
    }

    fn put_file<'a>(
        &'a self,
        key: &'a str,
        content_type: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            let file = tokio::fs::File::open(path).await?;
            // Buffered: at most one resumable chunk of the file is held in memory at a time.
            let object = self
                .client
                .write_object(&self.bucket_path, key, file)
                .set_content_type(content_type)
                .with_resumable_upload_buffer_size(UPLOAD_BUFFER_BYTES)
                .send_buffered()
                .await
                .map_err(backend)?;
            Ok(object.size.max(0) as u64)
        })
    }

    fn put_bytes<'a>(
        &'a self,
        key: &'a str,
        content_type: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            self.client
                .write_object(&self.bucket_path, key, data)
                .set_content_type(content_type)
                .send_buffered()
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn read_bytes<'a>(
        &'a self,
        key: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<Bytes, StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            let mut resp = self
                .client
                .read_object(&self.bucket_path, key)
                .send()
                .await
                .map_err(backend)?;
            let mut out = Vec::new();
            while let Some(chunk) = resp.next().await {
                let chunk = chunk.map_err(backend)?;
                if (out.len() + chunk.len()) as u64 > max_bytes {
                    return Err(StorageError::TooLarge { limit: max_bytes });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(out))
        })
    }

    fn download_to<'a>(
        &'a self,
        key: &'a str,
        dest: &'a Path,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            let mut resp = self
                .client
                .read_object(&self.bucket_path, key)
                .send()
                .await
                .map_err(backend)?;
            let file = tokio::fs::File::create(dest).await?;
            let mut out = tokio::io::BufWriter::with_capacity(1024 * 1024, file);
            let mut size = 0u64;
            while let Some(chunk) = resp.next().await {
                let chunk = chunk.map_err(backend)?;
                out.write_all(&chunk).await?;
                size += chunk.len() as u64;
                progress(size);
            }
            out.flush().await?;
            Ok(size)
        })
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            // The read's response carries the object's metadata; dropping it before reading the
            // body ends the download.
            let mut resp = match self.client.read_object(&self.bucket_path, key).send().await {
                Ok(resp) => resp,
                Err(e) if e.http_status_code() == Some(404) => return Ok(None),
                Err(e) => return Err(StorageError::Backend(e.to_string())),
            };
            let size = resp.object().size.max(0) as u64;
            if size > 0 {
                return Ok(Some(size));
            }
            // No stored length in the response (GCS always sends one; some emulators do not):
            // count the bytes.
            let mut counted = 0u64;
            while let Some(chunk) = resp.next().await {
                counted += chunk.map_err(backend)?.len() as u64;
            }
            Ok(Some(counted))
        })
    }

    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        method: UrlMethod,
        ttl: Duration,
        content_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            Self::checked(key)?;
            let Some(signer) = &self.signer else {
                let base = self
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "https://storage.googleapis.com".into());
                return Ok(format!("{base}/{}/{key}", self.bucket));
            };
            let mut builder = SignedUrlBuilder::for_object(&self.bucket_path, key)
                .with_method(match method {
                    UrlMethod::Get => google_cloud_storage::http::Method::GET,
                    UrlMethod::Put => google_cloud_storage::http::Method::PUT,
                })
                .with_expiration(ttl);
            if let Some(endpoint) = &self.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            if let (UrlMethod::Put, Some(ct)) = (method, content_type) {
                builder = builder.with_header("content-type", ct);
            }
            builder
                .sign_with(signer)
                .await
                .map_err(|e| StorageError::Backend(format!("signing a URL: {e}")))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            match self.size("echo-health-check").await {
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}
