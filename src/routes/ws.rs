//! `GET /ws`: authenticates (header or `?token=`), checks the browser's `Origin` and the
//! handshake, and answers `101` with what the upgraded socket needs; the socket and its
//! `UserSession` actor start once the server's upgrade hook has written that answer.

use actix_http::ws;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::extract::bearer_token;
use crate::error::{ApiError, ApiResult};
use crate::extract::query_pairs;
use crate::limits::{service_busy, too_many_requests};
use crate::realtime::session::CLOSE_TOO_MANY_SESSIONS;
use crate::realtime::socket::{Accepted, SessionStart};
use crate::state::AppState;

/// The subprotocol accepted when offered.
pub const SUBPROTOCOL: &str = "echo.v1";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ws").route(web::get().to(upgrade)));
}

/// True when a browser page from `origin` may open a socket: same host as the request, or
/// listed in `CORS_ALLOWED_ORIGINS` (when that is set).
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return true; // not a browser
    };
    if allowed.is_empty() {
        return true;
    }
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let host = req.connection_info().host().to_string();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host))
}

/// WebSocket upgrade (docs/PROTOCOL.md). A valid one is answered `101` carrying what the
/// socket needs ([`Accepted`]) in the response's extensions: the server's upgrade hook
/// (`startup`) writes the `101` and hands the connection to [`crate::realtime::socket`].
pub async fn upgrade(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if !origin_allowed(&req, &state.settings.cors_allowed_origins) {
        return Err(ApiError::forbidden("Origin not allowed"));
    }
    let token = bearer_token(&req).map(str::to_string).or_else(|| {
        query_pairs(&req)
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    });
    let ip = state.limits.client_of(req.peer_addr(), req.headers());
    if let Err(wait) = state.limits.check_ws_connect(ip) {
        state.metrics.rate_limited("ws_connect");
        return Ok(too_many_requests(wait));
    }
    // An overloaded node refuses new sockets at once, with a hint, rather than timing out
    // the sessions it already holds.
    let Some(_setup) = state
        .limits
        .enter_handshake()
        .filter(|_| !pool_swamped(&state))
    else {
        state.metrics.rate_limited("ws_overloaded");
        return Ok(service_busy(OVERLOAD_RETRY_AFTER));
    };
    let token = token.ok_or(ApiError::Unauthorized)?;
    let user = state.authenticate(&token).await?;
    let mut response = match ws::handshake(req.head()) {
        Ok(response) => response,
        Err(e) => return Ok(handshake_refused(e)),
    };
    if let Some(protocol) = select_protocol(&req) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let accepted = match state.limits.acquire_socket(user.id) {
        Some(slot) => Accepted::Session(Box::new(SessionStart {
            env: state.session_env(),
            user_id: user.id,
            exp: user.exp,
            slot,
        })),
        None => {
            // Upgraded, so that a browser learns why (it cannot read an HTTP status): closed at
            // once with a code of its own.
            state.metrics.rate_limited("ws_sessions_per_user");
            Accepted::Refused(CLOSE_TOO_MANY_SESSIONS, "too many sessions for this user")
        }
    };
    let mut response = HttpResponse::from(response.finish().map_into_boxed_body());
    response.extensions_mut().insert(accepted);
    Ok(response)
}

/// `Retry-After` of an upgrade refused because the node is overloaded.
const OVERLOAD_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// Requests waiting for a database connection, per pooled connection, past which new sockets
/// are refused (each needs the database to start).
const POOL_WAITERS_PER_CONNECTION: usize = 8;

/// True when the database pool's wait queue is so long that a new session would only add to
/// the timeouts of those already waiting.
fn pool_swamped(state: &AppState) -> bool {
    let pool = state.db.status();
    pool.waiting > pool.max_size.max(1) * POOL_WAITERS_PER_CONNECTION
}

/// `SUBPROTOCOL` when the client offers it.
fn select_protocol(req: &HttpRequest) -> Option<&'static str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
        .then_some(SUBPROTOCOL)
}

/// The answer to a request that is not a valid WebSocket handshake (RFC 6455 §4.2.2): 426
/// with `Sec-WebSocket-Version: 13` for a version this server does not speak, 400 (or 405)
/// otherwise, with the same `detail` body as every other refusal.
fn handshake_refused(e: ws::HandshakeError) -> HttpResponse {
    let plain: actix_http::Response<actix_http::body::BoxBody> = e.into();
    let mut res = HttpResponse::build(plain.status());
    for (name, value) in plain.headers() {
        res.insert_header((name.clone(), value.clone()));
    }
    if matches!(
        e,
        ws::HandshakeError::UnsupportedVersion | ws::HandshakeError::NoVersionHeader
    ) {
        res.insert_header((header::SEC_WEBSOCKET_VERSION, "13"));
    }
    res.json(serde_json::json!({"detail": format!("not a WebSocket upgrade: {e}")}))
}
