//! `UserAuth`: who a request or a socket belongs to. It verifies the token, then makes sure the
//! user's row reflects the token's claims (once per change, not per request).

use std::sync::Arc;

use dashmap::DashMap;
use uuid::Uuid;

use super::{AuthError, AuthUser, Authenticator};
use crate::db::users::{self, UserClaims};
use crate::db::Db;
use crate::error::ApiError;

/// Users seen by this process beyond which the profile cache is reset (bounds memory).
const USER_CACHE_MAX: usize = 1_000_000;

/// Token verification plus the user rows it keeps current.
pub struct UserAuth {
    verifier: Arc<Authenticator>,
    db: Db,
    /// Claims last written to each user's row, so the upsert runs once per change, not per
    /// request.
    known_users: DashMap<Uuid, UserClaims>,
}

impl UserAuth {
    /// Verifies with `verifier`, writes user rows through `db`.
    pub fn new(verifier: Arc<Authenticator>, db: Db) -> UserAuth {
        UserAuth {
            verifier,
            db,
            known_users: DashMap::new(),
        }
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Authenticator {
        &self.verifier
    }

    /// Verifies a token and makes sure the user's row reflects its claims.
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, ApiError> {
        let verified = self.verifier.verify(token).await.map_err(|e| {
            match &e {
                AuthError::Missing => {}
                AuthError::Invalid(why) => tracing::debug!(%why, "token refused"),
            }
            ApiError::Unauthorized
        })?;
        let fresh = self
            .known_users
            .get(&verified.user_id)
            .is_some_and(|known| *known == verified.profile);
        if !fresh {
            let mut conn = self.db.conn().await?;
            users::upsert_from_claims(&mut conn, &verified.profile).await?;
            if self.known_users.len() >= USER_CACHE_MAX {
                self.known_users.clear();
            }
            self.known_users
                .insert(verified.user_id, verified.profile.clone());
        }
        Ok(AuthUser {
            id: verified.user_id,
            exp: verified.exp,
        })
    }
}
