//! `GET /ws`: authenticates (header or `?token=`), checks the browser's `Origin`, upgrades, and
//! starts a `UserSession` actor on the socket.

use actix::{Actor, AsyncContext};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::extract::bearer_token;
use crate::error::{ApiError, ApiResult};
use crate::extract::query_pairs;
use crate::limits::too_many_requests;
use crate::realtime::outbound::Outbound;
use crate::realtime::session::{UserSession, CLOSE_TOO_MANY_SESSIONS};
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

/// WebSocket upgrade (docs/PROTOCOL.md).
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
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
    let token = token.ok_or(ApiError::Unauthorized)?;
    let user = state.authenticate(&token).await?;
    let (response, session, stream) =
        actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL])
            .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade: {e}").into()))?;
    let Some(slot) = state.limits.acquire_socket(user.id) else {
        // Upgraded, so that a browser learns why (it cannot read an HTTP status): closed at
        // once with a code of its own.
        state.metrics.rate_limited("ws_sessions_per_user");
        actix_rt::spawn(async move {
            let _ = session
                .clone()
                .close(Some(actix_ws::CloseReason {
                    code: actix_ws::CloseCode::from(CLOSE_TOO_MANY_SESSIONS),
                    description: Some("too many sessions for this user".into()),
                }))
                .await;
        });
        return Ok(response);
    };
    let settings = &state.settings;
    let stream = stream
        .max_frame_size(settings.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(settings.max_frame_bytes);
    let out = Outbound::spawn(
        session,
        settings.outbound_queue_bytes,
        state.metrics.clone(),
    );
    let env = state.session_env();
    UserSession::create(move |ctx| {
        ctx.add_stream(stream);
        UserSession::new(env, user.id, user.exp, out, slot)
    });
    Ok(response)
}
