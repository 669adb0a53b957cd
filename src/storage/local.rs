//! The local-disk backend: objects are files under `ECHO_DATA_DIR/storage/<key>`, written to a
//! temporary file first and renamed into place, so a key never holds a partial object. Clients
//! reach them through `GET|PUT /files/<key>?expires=…&sig=…`, an HMAC-SHA256 signature over
//! the method, the key and the expiry.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use super::{valid_key, BodyChunks, ObjectStore, StorageError, StorageSettings, UrlMethod};

type HmacSha256 = Hmac<Sha256>;

/// Folder (inside the root, so renames stay on one file system) for uploads in progress. Its
/// leading dot keeps it out of the key space.
const PARTIAL_DIR: &str = ".partial";

/// Objects on this machine's disk.
pub struct LocalStore {
    root: PathBuf,
    signing_key: Vec<u8>,
    public_base_url: Option<String>,
    host: IpAddr,
    bound_base_url: OnceLock<String>,
}

impl LocalStore {
    /// A store rooted at `data_dir/storage`. The URL signing key is `STORAGE_URL_SECRET`, else
    /// derived from `secret` (the JWT secret), else random for this process.
    pub fn new(
        settings: &StorageSettings,
        data_dir: &Path,
        host: IpAddr,
        secret: Option<&str>,
    ) -> anyhow::Result<LocalStore> {
        let root = data_dir.join("storage");
        std::fs::create_dir_all(root.join(PARTIAL_DIR))?;
        // Uploads cut off by a crash leave partial files behind; none can be resumed.
        if let Ok(entries) = std::fs::read_dir(root.join(PARTIAL_DIR)) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let signing_key = match (&settings.url_secret, secret) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(s)) => {
                let mut mac = HmacSha256::new_from_slice(s.as_bytes())
                    .map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
                mac.update(b"echo storage url signing v1");
                mac.finalize().into_bytes().to_vec()
            }
            (None, None) => {
                tracing::warn!(
                    "neither STORAGE_URL_SECRET nor a JWT secret is set: file URLs are signed \
                     with a random key and stop working when this process exits"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        Ok(LocalStore {
            root,
            signing_key,
            public_base_url: settings.public_base_url.clone(),
            host,
            bound_base_url: OnceLock::new(),
        })
    }

    /// The folder objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives on disk, or `InvalidKey`.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        if !valid_key(key) {
            return Err(StorageError::InvalidKey);
        }
        Ok(self.root.join(key))
    }

    fn signature(&self, method: UrlMethod, key: &str, expires: i64) -> Result<HmacSha256, String> {
        let mut mac = HmacSha256::new_from_slice(&self.signing_key).map_err(|e| e.to_string())?;
        mac.update(method.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        Ok(mac)
    }

    /// True when `sig` (hex) authorises `method` on `key` and `expires` has not passed.
    pub fn verify(&self, method: UrlMethod, key: &str, expires: i64, sig: &str) -> bool {
        if expires < chrono::Utc::now().timestamp() {
            return false;
        }
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.signature(method, key, expires)
            .is_ok_and(|mac| mac.verify_slice(&sig).is_ok())
    }

    fn base_url(&self) -> String {
        if let Some(base) = &self.public_base_url {
            return base.clone();
        }
        self.bound_base_url
            .get()
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:8000".into())
    }

    fn partial_path(&self) -> PathBuf {
        self.root
            .join(PARTIAL_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    async fn commit(&self, partial: &Path, key: &str) -> Result<(), StorageError> {
        let dest = self.path_of(key)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(partial, &dest).await?;
        Ok(())
    }

    async fn write_stream(
        &self,
        key: &str,
        mut body: BodyChunks,
        max_bytes: u64,
    ) -> Result<u64, StorageError> {
        self.path_of(key)?;
        let partial = self.partial_path();
        let result = async {
            let file = tokio::fs::File::create(&partial).await?;
            let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
            let mut size: u64 = 0;
            while let Some(chunk) = body.recv().await {
                let chunk = chunk.map_err(|e| StorageError::Interrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(StorageError::TooLarge { limit: max_bytes });
                }
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            out.into_inner().sync_data().await?;
            Ok(size)
        }
        .await;
        match result {
            Ok(size) => match self.commit(&partial, key).await {
                Ok(()) => Ok(size),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&partial).await;
                    Err(e)
                }
            },
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }
}

impl ObjectStore for LocalStore {
    fn name(&self) -> &'static str {
        "local"
    }

    fn put_stream<'a>(
        &'a self,
        key: &'a str,
        _content_type: &'a str,
        body: BodyChunks,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(self.write_stream(key, body, max_bytes))
    }

    fn put_file<'a>(
        &'a self,
        key: &'a str,
        _content_type: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            self.path_of(key)?;
            let partial = self.partial_path();
            let size = match tokio::fs::copy(path, &partial).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(e.into());
                }
            };
            if let Err(e) = self.commit(&partial, key).await {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
            Ok(size)
        })
    }

    fn put_bytes<'a>(
        &'a self,
        key: &'a str,
        _content_type: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.path_of(key)?;
            let partial = self.partial_path();
            if let Err(e) = tokio::fs::write(&partial, &data).await {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e.into());
            }
            if let Err(e) = self.commit(&partial, key).await {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
            Ok(())
        })
    }

    fn read_bytes<'a>(
        &'a self,
        key: &'a str,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<Bytes, StorageError>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            let meta = match tokio::fs::metadata(&path).await {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound)
                }
                Err(e) => return Err(e.into()),
            };
            if meta.len() > max_bytes {
                return Err(StorageError::TooLarge { limit: max_bytes });
            }
            Ok(Bytes::from(tokio::fs::read(&path).await?))
        })
    }

    fn download_to<'a>(
        &'a self,
        key: &'a str,
        dest: &'a Path,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            match tokio::fs::copy(&path, dest).await {
                Ok(n) => {
                    progress(n);
                    Ok(n)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, StorageError>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        method: UrlMethod,
        ttl: Duration,
        _content_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            if !valid_key(key) {
                return Err(StorageError::InvalidKey);
            }
            let expires = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
            let mac = self
                .signature(method, key, expires)
                .map_err(StorageError::Backend)?;
            let sig = hex::encode(mac.finalize().into_bytes());
            Ok(format!(
                "{}/files/{key}?expires={expires}&sig={sig}",
                self.base_url()
            ))
        })
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }

    fn server_bound(&self, port: u16) {
        let host = match self.host {
            IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let _ = self.bound_base_url.set(format!("http://{host}:{port}"));
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let meta = tokio::fs::metadata(&self.root).await?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(StorageError::Backend(format!(
                    "{} is not a folder",
                    self.root.display()
                )))
            }
        })
    }

    fn as_local(&self) -> Option<&LocalStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn store(dir: &Path) -> LocalStore {
        let settings = StorageSettings::from_map(&HashMap::new()).unwrap();
        LocalStore::new(&settings, dir, "127.0.0.1".parse().unwrap(), Some("s3cret")).unwrap()
    }

    #[tokio::test]
    async fn signatures_bind_method_key_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.server_bound(8123);
        let url = s
            .signed_url("a/b.jpg", UrlMethod::Get, Duration::from_secs(60), None)
            .await
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:8123/files/a/b.jpg?expires="));
        let q: HashMap<String, String> =
            serde_urlencoded::from_str(url.split_once('?').unwrap().1).unwrap();
        let exp: i64 = q["expires"].parse().unwrap();
        assert!(s.verify(UrlMethod::Get, "a/b.jpg", exp, &q["sig"]));
        assert!(!s.verify(UrlMethod::Put, "a/b.jpg", exp, &q["sig"]));
        assert!(!s.verify(UrlMethod::Get, "a/c.jpg", exp, &q["sig"]));
        assert!(!s.verify(UrlMethod::Get, "a/b.jpg", exp + 1, &q["sig"]));
        assert!(!s.verify(UrlMethod::Get, "a/b.jpg", exp, "zz"));
        let past = chrono::Utc::now().timestamp() - 1;
        let expired = hex::encode(
            s.signature(UrlMethod::Get, "a/b.jpg", past)
                .unwrap()
                .finalize()
                .into_bytes(),
        );
        assert!(
            !s.verify(UrlMethod::Get, "a/b.jpg", past, &expired),
            "expired"
        );
    }

    #[tokio::test]
    async fn an_oversized_stream_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for _ in 0..4 {
                if tx.send(Ok(Bytes::from(vec![0u8; 1000]))).await.is_err() {
                    break;
                }
            }
        });
        let err = s.put_stream("u/x.mp4", "video/mp4", rx, 2500).await;
        assert!(matches!(err, Err(StorageError::TooLarge { limit: 2500 })));
        assert_eq!(s.size("u/x.mp4").await.unwrap(), None);
        let partial = std::fs::read_dir(s.root().join(PARTIAL_DIR))
            .unwrap()
            .count();
        assert_eq!(partial, 0);
    }
}
