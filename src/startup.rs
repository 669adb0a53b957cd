//! Building and running one node: `Application::build(settings)` returns a bound server and
//! its port, so tests start the real thing on port 0.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use anyhow::Context;

use crate::ai::cluster::SingleNode;
use crate::ai::registry::{GenerationRegistry, LocalGenerations};
use crate::ai::{Replies, ReplyCluster};
use crate::auth::jwks::{JwksCache, JwksSource};
use crate::auth::{dev_secret, Authenticator, UserAuth};
use crate::broker::{Broker, LocalBroker};
use crate::chat::{ChatService, WriterSettings};
use crate::cluster::{ClusterConfig, Joining};
use crate::config::Settings;
use crate::db::{migrate, Db};
use crate::limits::EdgeLimits;
use crate::metrics::Metrics;
use crate::realtime::router::Router;
use crate::state::AppState;

/// How long shutdown waits for in-flight AI replies to be stored (as cancelled).
const SHUTDOWN_REPLY_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// A bound, not yet running, Echo node.
pub struct Application {
    server: Server,
    port: u16,
    state: AppState,
}

impl Application {
    /// Migrates the database, wires the state and binds the listener. Must run inside an actix
    /// system (the actors start on it).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        raise_nofile_limit();
        let applied = migrate::run_migrations(&settings)
            .await
            .context("running migrations")?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrations applied");
        }
        let state = build_state(settings).await?;
        let listener = TcpListener::bind((state.settings.host, state.settings.port))
            .with_context(|| format!("binding {}:{}", state.settings.host, state.settings.port))?;
        let port = listener.local_addr()?.port();
        state.videos.storage().server_bound(port);
        let server = crate::server::http_server(state.clone(), listener)?;
        tracing::info!(
            node = %state.settings.node_id,
            database = state.db.backend_name(),
            broker = state.broker.name(),
            "Echo listening on http://{}:{port}",
            state.settings.host
        );
        Ok(Application {
            server,
            port,
            state,
        })
    }

    /// The port the server is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until the server is stopped, then closes the pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let db = self.state.db.clone();
        let result = self.server.await;
        db.close();
        result
    }
}

/// Stops a node gracefully: WebSocket sessions are closed (1001) first, then in-flight HTTP
/// requests finish, then the server stops.
pub async fn shutdown(state: &AppState, handle: &ServerHandle) {
    state.videos.shutdown().await;
    crate::ai::registry::stop_all(state.generations.as_ref(), SHUTDOWN_REPLY_GRACE).await;
    state.router.shutdown();
    // WebSocket sessions run in tasks of their own, not as HTTP connections: their close
    // frames go out before the workers stop.
    let deadline = tokio::time::Instant::now() + state.settings.shutdown_timeout;
    while state.router.session_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    handle.stop(true).await;
}

async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let settings = Arc::new(settings);
    let dev_secret = dev_secret(&settings)?;
    let hs_secret = settings
        .jwt_secret
        .clone()
        .or(dev_secret.as_deref().map(str::to_string));
    let jwks = start_jwks(&settings).await;
    let db = Db::connect(&settings)?;
    let auth = Arc::new(UserAuth::new(
        Arc::new(Authenticator::new(&settings, hs_secret.as_deref(), jwks)),
        db.clone(),
    ));
    let metrics = Arc::new(Metrics::new(&settings.node_id)?);
    let generations: Arc<dyn GenerationRegistry> = Arc::new(LocalGenerations::new(
        settings.ai.max_concurrent_per_user,
        settings.ai.max_concurrent_per_node,
    ));
    let delivery = build_delivery(&settings, &db, &metrics, &generations)?;
    crate::realtime::heartbeat::start(
        &delivery.router,
        settings.heartbeat_interval,
        settings.client_timeout,
        metrics.clone(),
    );
    let writer = WriterSettings {
        lanes: settings.database_write_lanes,
        max_batch: settings.database_write_batch,
    };
    let chats = ChatService::new(db.clone(), delivery.broker.clone(), writer, metrics.clone());
    let ai = crate::ai::build_provider(&settings.ai)?;
    let replies = Arc::new(Replies {
        settings: settings.ai.clone(),
        db: db.clone(),
        chats: chats.clone(),
        broker: delivery.broker.clone(),
        provider: ai.clone(),
        registry: generations.clone(),
        cluster: delivery.replies,
        watch: delivery.router.clone(),
        metrics: metrics.clone(),
    });
    let storage = crate::storage::build(
        &settings.storage,
        &settings.data_dir,
        settings.host,
        hs_secret.as_deref(),
    )
    .await
    .context("object storage")?;
    let videos = crate::video::start(
        settings.clone(),
        db.clone(),
        storage,
        delivery.broker.clone(),
        ai.clone(),
    )?;
    let limits = Arc::new(EdgeLimits::new(settings.limits.clone()));
    Ok(AppState {
        settings,
        db,
        auth,
        broker: delivery.broker,
        router: delivery.router,
        chats,
        metrics,
        dev_secret,
        ai,
        generations,
        replies,
        videos,
        limits,
    })
}

/// In development mode (no authentication configured), the generated secret, with a warning.
fn dev_secret(settings: &Settings) -> anyhow::Result<Option<Arc<str>>> {
    if !settings.dev_mode() {
        return Ok(None);
    }
    let secret = dev_secret::load_or_create(&settings.data_dir)?;
    tracing::warn!(
        file = %dev_secret::path(&settings.data_dir).display(),
        host = %settings.host,
        "no authentication is configured (SUPABASE_JWT_SECRET, JWT_JWKS_URL, JWT_JWKS_FILE): \
         DEVELOPMENT MODE with a generated secret and POST /dev/token. Mint a token with \
         `echo-server token --user <uuid>`. Never run like this in production."
    );
    Ok(Some(Arc::<str>::from(secret)))
}

/// The JWKS cache, when keys come from a JWKS document: fetched once now, then refreshed in
/// the background every `JWKS_REFRESH_SECS`.
async fn start_jwks(settings: &Settings) -> Option<Arc<JwksCache>> {
    let cache = match (&settings.jwks_url, &settings.jwks_file) {
        (Some(url), _) => Arc::new(JwksCache::new(JwksSource::Url(url.clone()))),
        (None, Some(file)) => Arc::new(JwksCache::new(JwksSource::File(file.clone()))),
        (None, None) => return None,
    };
    if let Err(e) = cache.refresh().await {
        tracing::warn!(error = %e, "initial JWKS fetch failed; retrying on demand");
    }
    let refreshed = cache.clone();
    let every = settings.jwks_refresh;
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = refreshed.refresh().await {
                tracing::warn!(error = %e, "periodic JWKS refresh failed");
            }
        }
    });
    Some(cache)
}

/// How events travel on this node: the router that delivers them here, the broker that
/// publishes them, and where replies on other nodes are found.
struct EventPath {
    router: Arc<Router>,
    broker: Arc<dyn Broker>,
    replies: Arc<dyn ReplyCluster>,
}

/// The event path: in-process on a single node, through Redis in a cluster.
fn build_delivery(
    settings: &Settings,
    db: &Db,
    metrics: &Arc<Metrics>,
    generations: &Arc<dyn GenerationRegistry>,
) -> anyhow::Result<EventPath> {
    match ClusterConfig::from_settings(settings) {
        Some(config) => build_cluster(config, db, metrics, generations),
        None => {
            let router = Arc::new(Router::start(db.clone(), metrics.clone(), None, None));
            Ok(EventPath {
                broker: Arc::new(LocalBroker::new(router.clone())),
                router,
                replies: Arc::new(SingleNode),
            })
        }
    }
}

/// Joins the cluster: the router follows topics through Redis and shares presence with the
/// other nodes; the Redis broker delivers through the router.
fn build_cluster(
    config: ClusterConfig,
    db: &Db,
    metrics: &Arc<Metrics>,
    generations: &Arc<dyn GenerationRegistry>,
) -> anyhow::Result<EventPath> {
    let joining = Joining::new(config)?;
    let router = Arc::new(Router::start(
        db.clone(),
        metrics.clone(),
        Some(joining.interest()),
        Some(joining.peers()),
    ));
    let cluster = joining.start(router.clone(), generations.clone())?;
    Ok(EventPath {
        router,
        broker: cluster.broker,
        replies: cluster.replies,
    })
}

/// Raises the soft open-file limit to the hard one and logs the resulting session capacity.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(
            open_files = n,
            approx_max_sessions = n.saturating_sub(100),
            "open-file limit raised"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}
