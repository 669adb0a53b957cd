//! Storage settings, read with the rest of the configuration (`config::Settings::storage`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{http_url, parse, value, ConfigError};

/// Which object store holds uploads and artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    /// Files under `ECHO_DATA_DIR/storage`, served through HMAC-signed URLs by this server.
    Local,
    /// A Google Cloud Storage bucket, with V4 signed URLs.
    Gcs,
}

/// Object storage and upload limits.
#[derive(Clone)]
pub struct StorageSettings {
    /// `STORAGE_BACKEND`: `local` or `gcs` (default: `gcs` when `GCS_BUCKET` is set).
    pub backend: StorageBackend,
    /// `MAX_UPLOAD_BYTES`: largest upload accepted (default 2 GiB); over it, 413.
    pub max_upload_bytes: u64,
    /// `USER_STORAGE_QUOTA_BYTES`: bytes of uploads one user may keep (default 50 GiB; 0 = no
    /// limit).
    pub user_quota_bytes: u64,
    /// `SIGNED_URL_TTL_SECS`: how long signed URLs stay valid (default 3600).
    pub signed_url_ttl: Duration,
    /// `PUBLIC_BASE_URL`: this server's URL as clients reach it, for local signed URLs
    /// (default `http://<HOST>:<bound port>`).
    pub public_base_url: Option<String>,
    /// `STORAGE_URL_SECRET`: key of the local backend's URL signatures (default: derived from
    /// the JWT secret, so every node of a cluster agrees).
    pub url_secret: Option<String>,
    /// `GCS_BUCKET`: the bucket.
    pub gcs_bucket: Option<String>,
    /// `GCS_ENDPOINT`: endpoint override (emulators and tests); also the host of signed URLs.
    pub gcs_endpoint: Option<String>,
    /// `GCS_CREDENTIALS_FILE`: a service-account key JSON; default: Application Default
    /// Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, or the metadata server).
    pub gcs_credentials_file: Option<PathBuf>,
    /// `GCS_ANONYMOUS`: send requests without credentials (emulators only).
    pub gcs_anonymous: bool,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("backend", &self.backend)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("user_quota_bytes", &self.user_quota_bytes)
            .field("signed_url_ttl", &self.signed_url_ttl)
            .field("public_base_url", &self.public_base_url)
            .field(
                "url_secret",
                &self.url_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("gcs_bucket", &self.gcs_bucket)
            .field("gcs_endpoint", &self.gcs_endpoint)
            .field("gcs_credentials_file", &self.gcs_credentials_file)
            .field("gcs_anonymous", &self.gcs_anonymous)
            .finish()
    }
}

impl StorageSettings {
    /// Reads the storage variables.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| value(env, k);
        let gcs_bucket = get("GCS_BUCKET");
        let backend = match get("STORAGE_BACKEND").as_deref() {
            None if gcs_bucket.is_some() => StorageBackend::Gcs,
            None | Some("local") => StorageBackend::Local,
            Some("gcs") => StorageBackend::Gcs,
            Some(other) => {
                return Err(ConfigError {
                    var: "STORAGE_BACKEND",
                    reason: format!("{other:?} is not one of local, gcs"),
                })
            }
        };
        if backend == StorageBackend::Gcs && gcs_bucket.is_none() {
            return Err(ConfigError {
                var: "GCS_BUCKET",
                reason: "required when STORAGE_BACKEND=gcs".into(),
            });
        }
        let base_url = |var: &'static str| -> Result<Option<String>, ConfigError> {
            Ok(http_url(env, var)?.map(|u| u.trim_end_matches('/').to_string()))
        };
        let max_upload_bytes: u64 = parse(env, "MAX_UPLOAD_BYTES", 2 * 1024 * 1024 * 1024)?;
        if max_upload_bytes == 0 {
            return Err(ConfigError {
                var: "MAX_UPLOAD_BYTES",
                reason: "must be positive".into(),
            });
        }
        let ttl: u64 = parse(env, "SIGNED_URL_TTL_SECS", 3600)?;
        if !(1..=7 * 24 * 3600).contains(&ttl) {
            return Err(ConfigError {
                var: "SIGNED_URL_TTL_SECS",
                reason: "must be between 1 and 604800 (7 days, the GCS maximum)".into(),
            });
        }
        Ok(StorageSettings {
            backend,
            max_upload_bytes,
            user_quota_bytes: parse(env, "USER_STORAGE_QUOTA_BYTES", 50 * 1024 * 1024 * 1024)?,
            signed_url_ttl: Duration::from_secs(ttl),
            public_base_url: base_url("PUBLIC_BASE_URL")?,
            url_secret: get("STORAGE_URL_SECRET"),
            gcs_bucket,
            gcs_endpoint: base_url("GCS_ENDPOINT")?,
            gcs_credentials_file: get("GCS_CREDENTIALS_FILE").map(PathBuf::from),
            gcs_anonymous: parse(env, "GCS_ANONYMOUS", false)?,
        })
    }
}
