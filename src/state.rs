//! `AppState`: everything a handler needs, cheap to clone, registered once. It sits above the
//! core (services, actors, the cluster) and below the HTTP routes; the actors never see it:
//! sessions get a [`SessionEnv`], replies their [`Replies`], video jobs their `JobEnv`.

use std::sync::Arc;

use crate::ai::registry::GenerationRegistry;
use crate::ai::{AiProvider, Replies};
use crate::auth::{AuthUser, UserAuth};
use crate::broker::Broker;
use crate::chat::ChatService;
use crate::config::Settings;
use crate::db::Db;
use crate::error::ApiError;
use crate::limits::EdgeLimits;
use crate::metrics::Metrics;
use crate::realtime::router::Router;
use crate::realtime::session::SessionEnv;
use crate::video::VideoService;

/// Shared state of one node.
#[derive(Clone)]
pub struct AppState {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Database pool.
    pub db: Db,
    /// Token verification and the user rows it keeps current.
    pub auth: Arc<UserAuth>,
    /// Where committed events are published.
    pub broker: Arc<dyn Broker>,
    /// This node's rooms and user feeds.
    pub router: Arc<Router>,
    /// Chats and messages: the one read and write path for REST and WebSocket.
    pub chats: ChatService,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The generated development secret, when running without `SUPABASE_JWT_SECRET`.
    pub dev_secret: Option<Arc<str>>,
    /// The AI provider (OpenAI-compatible, or the development one).
    pub ai: Arc<dyn AiProvider>,
    /// In-flight AI replies on this node, and the concurrency limits.
    pub generations: Arc<dyn GenerationRegistry>,
    /// AI replies: start, cancel, resume (for REST and WebSocket alike).
    pub replies: Arc<Replies>,
    /// Video uploads, jobs and their artifacts (its object store is `videos.storage()`).
    pub videos: VideoService,
    /// Per-client limits: request rates by address, sockets per user.
    pub limits: Arc<EdgeLimits>,
}

impl AppState {
    /// Verifies a token and makes sure the user's row reflects its claims.
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, ApiError> {
        self.auth.authenticate(token).await
    }

    /// What a WebSocket session may use.
    pub fn session_env(&self) -> SessionEnv {
        SessionEnv {
            settings: self.settings.clone(),
            router: self.router.clone(),
            chats: self.chats.clone(),
            replies: self.replies.clone(),
            videos: self.videos.clone(),
            auth: self.auth.clone(),
            metrics: self.metrics.clone(),
        }
    }
}
