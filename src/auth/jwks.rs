//! A JWKS document (URL or file), parsed into decoding keys by `kid`, refreshed periodically
//! and when a token names a `kid` it does not know (at most once per `MIN_REFETCH`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

/// Shortest interval between two fetches caused by unknown `kid`s, so a flood of forged
/// tokens cannot turn into a flood of requests to the identity provider.
const MIN_REFETCH: Duration = Duration::from_secs(5);

/// Where the document comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched over HTTP(S).
    Url(String),
    /// Read from disk.
    File(PathBuf),
}

/// The cached keys.
pub struct JwksCache {
    source: JwksSource,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// When the last fetch ran (successful or not); serialises refetches.
    last_fetch: Mutex<Option<Instant>>,
}

impl JwksCache {
    /// A cache that has not fetched yet.
    pub fn new(source: JwksSource) -> Self {
        JwksCache {
            source,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
        }
    }

    /// The key for `kid`, refetching once if it is unknown.
    pub async fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Some(k.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have refreshed while we waited for the lock.
            if let Some(k) = self.keys.read().await.get(kid) {
                return Some(k.clone());
            }
            if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
                return None;
            }
            *last = Some(Instant::now());
            if let Err(e) = self.fetch_and_store().await {
                tracing::warn!(error = %e, "JWKS refresh failed");
            }
        }
        self.keys.read().await.get(kid).cloned()
    }

    /// Fetches the document now and replaces the cached keys.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        *self.last_fetch.lock().await = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> anyhow::Result<usize> {
        let body = match &self.source {
            JwksSource::Url(url) => {
                self.http
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?
            }
            JwksSource::File(path) => tokio::fs::read_to_string(path).await?,
        };
        let set: JwkSet = serde_json::from_str(&body)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match key_of(jwk) {
                Ok(k) => {
                    keys.insert(kid, k);
                }
                Err(e) => tracing::warn!(%kid, error = %e, "skipping JWKS key"),
            }
        }
        let n = keys.len();
        *self.keys.write().await = keys;
        tracing::info!(keys = n, "JWKS loaded");
        Ok(n)
    }
}

/// The decoding key and the one algorithm it may verify.
fn key_of(jwk: &Jwk) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(ka), _) => Algorithm::from_str(&ka.to_string())?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => anyhow::bail!("unsupported key type"),
    };
    if !matches!(alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
        anyhow::bail!("algorithm {alg:?} is not accepted from a JWKS");
    }
    Ok((DecodingKey::from_jwk(jwk)?, alg))
}
