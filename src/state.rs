//! `AppState`: everything a handler or actor needs, cheap to clone, registered once.

use std::sync::Arc;

use dashmap::DashMap;
use uuid::Uuid;

use crate::auth::{AuthError, AuthUser, Authenticator};
use crate::broker::Broker;
use crate::chat::ChatService;
use crate::config::Settings;
use crate::db::users::{self, UserClaims};
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::realtime::hub::Hub;

/// Users seen by this process beyond which the profile cache is reset (bounds memory).
const USER_CACHE_MAX: usize = 1_000_000;

/// Shared state of one node.
#[derive(Clone)]
pub struct AppState {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Database pool.
    pub db: Db,
    /// Token verifier.
    pub auth: Arc<Authenticator>,
    /// Where committed events are published.
    pub broker: Arc<dyn Broker>,
    /// This node's rooms and user feeds.
    pub hub: Arc<Hub>,
    /// Chats and messages: the one write path for REST and WebSocket.
    pub chats: ChatService,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The generated development secret, when running without `SUPABASE_JWT_SECRET`.
    pub dev_secret: Option<Arc<str>>,
    /// Claims last written to each user's row, so the upsert runs once per change, not per request.
    pub known_users: Arc<DashMap<Uuid, UserClaims>>,
    /// The AI provider (OpenAI-compatible, or the development one).
    pub ai: Arc<dyn crate::ai::AiProvider>,
    /// In-flight AI replies on this node, and the concurrency limits.
    pub generations: Arc<dyn crate::ai::registry::GenerationRegistry>,
    /// Video uploads, jobs and their artifacts (its object store is `videos.storage()`).
    pub videos: crate::video::VideoService,
    /// Per-client limits: request rates by address, sockets per user.
    pub limits: Arc<crate::limits::EdgeLimits>,
}

impl AppState {
    /// Verifies a token and makes sure the user's row reflects its claims.
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, ApiError> {
        let verified = self.auth.verify(token).await.map_err(|e| {
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
