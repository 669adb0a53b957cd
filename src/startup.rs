//! Building and running one node: `Application::build(settings)` returns a bound server and
//! its port, so tests start the real thing on port 0.

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, DefaultHeaders, ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use dashmap::DashMap;

use crate::auth::jwks::{JwksCache, JwksSource};
use crate::auth::{dev_secret, Authenticator};
use crate::broker::presence::ClusterPresence;
use crate::broker::redis::{RedisBroker, RemoteSink};
use crate::broker::{Broker, LocalBroker};
use crate::chat::ChatService;
use crate::config::Settings;
use crate::db::{migrate, Db};
use crate::metrics::Metrics;
use crate::realtime::hub::Hub;
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
        let server = http_server(state.clone(), listener)?;
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
    state.hub.shutdown();
    handle.stop(true).await;
}

async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let settings = Arc::new(settings);
    let dev_secret = if settings.dev_mode() {
        let secret = dev_secret::load_or_create(&settings.data_dir)?;
        tracing::warn!(
            file = %dev_secret::path(&settings.data_dir).display(),
            host = %settings.host,
            "no authentication is configured (SUPABASE_JWT_SECRET, JWT_JWKS_URL, JWT_JWKS_FILE): \
             DEVELOPMENT MODE with a generated secret and POST /dev/token. Mint a token with \
             `echo-server token --user <uuid>`. Never run like this in production."
        );
        Some(Arc::<str>::from(secret))
    } else {
        None
    };
    let jwks = match (&settings.jwks_url, &settings.jwks_file) {
        (Some(url), _) => Some(Arc::new(JwksCache::new(JwksSource::Url(url.clone())))),
        (None, Some(file)) => Some(Arc::new(JwksCache::new(JwksSource::File(file.clone())))),
        (None, None) => None,
    };
    if let Some(cache) = &jwks {
        if let Err(e) = cache.refresh().await {
            tracing::warn!(error = %e, "initial JWKS fetch failed; retrying on demand");
        }
        let cache = cache.clone();
        let every = settings.jwks_refresh;
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = cache.refresh().await {
                    tracing::warn!(error = %e, "periodic JWKS refresh failed");
                }
            }
        });
    }
    let hs_secret = settings
        .jwt_secret
        .clone()
        .or(dev_secret.as_deref().map(str::to_string));
    let auth = Arc::new(Authenticator::new(&settings, hs_secret.as_deref(), jwks));
    let db = Db::connect(&settings)?;
    let metrics = Arc::new(Metrics::new(&settings.node_id)?);
    let generations: Arc<dyn crate::ai::registry::GenerationRegistry> =
        Arc::new(crate::ai::registry::LocalGenerations::new(
            settings.ai.max_concurrent_per_user,
            settings.ai.max_concurrent_per_node,
        ));
    let (broker, hub): (Arc<dyn Broker>, Arc<Hub>) = match &settings.redis_url {
        Some(url) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
            let presence = Arc::new(ClusterPresence::new(
                redis::Client::open(url.as_str()).context("REDIS_URL")?,
                &settings.redis_channel_prefix,
                &settings.node_id,
                settings.presence_ttl,
            ));
            let remote = RemoteSink::new(
                out_tx,
                &settings.redis_channel_prefix,
                &settings.node_id,
                presence,
            );
            let hub = Arc::new(Hub::start(
                db.clone(),
                metrics.clone(),
                Some(tx),
                Some(remote.clone()),
            ));
            let broker = RedisBroker::start(
                url,
                &settings.redis_channel_prefix,
                &settings.node_id,
                settings.redis_sharded_pubsub,
                hub.clone(),
                rx,
                remote,
                out_rx,
                generations.clone(),
            )
            .context("REDIS_URL")?;
            (Arc::new(broker), hub)
        }
        None => {
            let hub = Arc::new(Hub::start(db.clone(), metrics.clone(), None, None));
            (Arc::new(LocalBroker::new(hub.clone())), hub)
        }
    };
    let chats = ChatService::new(db.clone(), broker.clone());
    let ai = crate::ai::build_provider(&settings.ai)?;
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
        broker.clone(),
        ai.clone(),
    )?;
    let limits = Arc::new(crate::limits::EdgeLimits::new(settings.limits.clone()));
    Ok(AppState {
        settings,
        db,
        auth,
        broker,
        hub,
        chats,
        metrics,
        dev_secret,
        known_users: Arc::new(DashMap::new()),
        ai,
        generations,
        videos,
        limits,
    })
}

fn http_server(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
    let workers = state.settings.workers;
    let nodelay = state.settings.tcp_nodelay;
    let shutdown_timeout = state.settings.shutdown_timeout.as_secs();
    let header_timeout = state.settings.limits.header_timeout;
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let settings = data.settings.clone();
        let origins = settings.cors_allowed_origins.clone();
        let cors = Cors::default()
            .allowed_origin_fn(move |origin, _| {
                origin
                    .to_str()
                    .is_ok_and(|o| origins.iter().any(|a| a == o))
            })
            .allow_any_method()
            .allow_any_header()
            .expose_headers([
                "x-request-id",
                "x-vercel-ai-data-stream",
                "x-vercel-ai-ui-message-stream",
            ])
            .supports_credentials()
            .block_on_origin_mismatch(false)
            .max_age(3600);
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(settings.max_json_bytes))
            .wrap(
                ErrorHandlers::new()
                    .handler(StatusCode::NOT_FOUND, json_detail)
                    .handler(StatusCode::METHOD_NOT_ALLOWED, json_detail),
            )
            .wrap(cors)
            .wrap(
                DefaultHeaders::new()
                    .add(("x-content-type-options", "nosniff"))
                    .add(("x-frame-options", "DENY"))
                    .add(("referrer-policy", "no-referrer")),
            )
            .wrap(from_fn(crate::limits::guard))
            .wrap(from_fn(crate::metrics::track))
            .configure(crate::routes::configure)
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(serde_json::json!({"detail": "Not Found"}))
            }))
    })
    .workers(workers)
    // Small frames (tokens, acks) must not wait for the peer's delayed ACK (Nagle).
    .tcp_nodelay(nodelay)
    .shutdown_timeout(shutdown_timeout)
    // A client must send a request's head within this time (408 after it).
    .client_request_timeout(header_timeout)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Gives actix's bare 404/405 responses FastAPI's `{"detail": …}` body; JSON errors pass as is.
fn json_detail<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
        _ => "Not Found",
    };
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status).json(serde_json::json!({"detail": detail}));
    if let Some(allow) = old.headers().get(header::ALLOW) {
        new.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body(),
    ))
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
