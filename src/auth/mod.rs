//! Supabase-compatible JWT authentication: HS256 with the project's shared secret, and
//! RS256/ES256/EdDSA keys from a JWKS document selected by `kid`.

pub mod dev_secret;
pub mod extract;
pub mod jwks;
pub mod users;

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Settings;
use crate::db::users::UserClaims;

pub use extract::AuthUser;
pub use jwks::JwksCache;
pub use users::UserAuth;

/// The claims Echo reads from a Supabase access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's UUID.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Audience (`authenticated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Supabase's free-form user metadata (`full_name`, `name`, `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<serde_json::Value>,
}

/// A verified token: who it is and until when.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The user's id (`sub`).
    pub user_id: Uuid,
    /// When the token expires (seconds since the epoch).
    pub exp: i64,
    /// What the claims say about the user, for the `users` row.
    pub profile: UserClaims,
}

/// Why a token was refused. Clients only ever see the generic 401 text.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (or `token` parameter).
    #[error("missing bearer token")]
    Missing,
    /// Signature, algorithm, expiry, audience, issuer or claims are wrong.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies access tokens. Cheap to share behind an `Arc`.
pub struct Authenticator {
    hs_key: Option<DecodingKey>,
    jwks: Option<Arc<JwksCache>>,
    audience: String,
    issuer: Option<String>,
    leeway: u64,
}

impl Authenticator {
    /// Builds the verifier from settings; `hs_secret` is the configured or development secret.
    pub fn new(settings: &Settings, hs_secret: Option<&str>, jwks: Option<Arc<JwksCache>>) -> Self {
        Authenticator {
            hs_key: hs_secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks,
            audience: settings.jwt_audience.clone(),
            issuer: settings.jwt_issuer.clone(),
            leeway: settings.jwt_leeway_secs,
        }
    }

    /// The JWKS cache, if asymmetric keys are configured.
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_audience(&[self.audience.as_str()]);
        v.leeway = self.leeway;
        // RFC 7519 §4.1.5: a token must not be accepted before its `nbf` (within the leeway).
        v.validate_nbf = true;
        v.required_spec_claims =
            HashSet::from(["exp".to_string(), "sub".to_string(), "aud".to_string()]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss.as_str()]);
            v.required_spec_claims.insert("iss".to_string());
        }
        v
    }

    /// Verifies `token`: the algorithm must be the key's own (HS256 only with the shared
    /// secret, asymmetric ones only with a JWKS key of that `kid`).
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs_key
                .clone()
                .ok_or_else(|| AuthError::Invalid("HS256 is not configured".into()))?,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or_else(|| AuthError::Invalid("no JWKS configured".into()))?;
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Invalid("token has no kid".into()))?;
                let (key, alg) = jwks
                    .key(kid)
                    .await
                    .ok_or_else(|| AuthError::Invalid(format!("unknown kid {kid:?}")))?;
                if alg != header.alg {
                    return Err(AuthError::Invalid(format!(
                        "token alg {:?} does not match key alg {alg:?}",
                        header.alg
                    )));
                }
                key
            }
            other => return Err(AuthError::Invalid(format!("algorithm {other:?} refused"))),
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(header.alg))
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let user_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| AuthError::Invalid("sub is not a UUID".into()))?;
        let meta = claims.user_metadata.as_ref();
        let meta_str = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        };
        Ok(Verified {
            user_id,
            exp: claims.exp,
            profile: UserClaims {
                id: user_id,
                email: claims.email.clone().filter(|e| !e.is_empty()),
                full_name: meta_str("full_name").or_else(|| meta_str("name")),
                username: meta_str("username"),
            },
        })
    }
}

/// Signs an HS256 access token like Supabase's, for the development `token` command and tests.
pub fn mint_hs256(
    secret: &str,
    user_id: Uuid,
    email: Option<&str>,
    ttl_secs: i64,
    audience: &str,
) -> anyhow::Result<String> {
    let claims = Claims {
        sub: user_id.to_string(),
        exp: chrono::Utc::now().timestamp() + ttl_secs,
        aud: Some(serde_json::Value::String(audience.to_string())),
        iss: None,
        email: email.map(str::to_string),
        user_metadata: None,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
