//! `GET /`, `/health`, `/metrics`, `/openapi.json`, `/asyncapi.json` and the docs page.

use actix_web::{web, HttpResponse};
use serde_json::json;
use utoipa::OpenApi;

use crate::state::AppState;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(root)))
        .service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/metrics").route(web::get().to(metrics)))
        .service(web::resource("/openapi.json").route(web::get().to(openapi)))
        .service(
            web::resource("/asyncapi.json").route(web::get().to(crate::routes::asyncapi::serve)),
        )
        .service(web::resource("/docs").route(web::get().to(docs)));
}

/// Liveness banner of the legacy service.
#[utoipa::path(get, path = "/", tag = "meta", responses((status = 200, description = "Running", body = serde_json::Value)))]
pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "message": "Echo API is running",
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Dependency health: 200 when every service answers, 503 naming the one that does not.
#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, description = "All services ok", body = serde_json::Value),
        (status = 503, description = "A service failed (the same report, naming it)", body = serde_json::Value)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let database = match state.db.ping(state.settings.database_timeout).await {
        Ok(()) => json!({"status": "ok", "backend": state.db.backend_name()}),
        Err(e) => {
            json!({"status": "error", "backend": state.db.backend_name(), "message": e.to_string()})
        }
    };
    let bh = state.broker.health();
    let broker = if bh.ok {
        json!({"status": "ok", "kind": state.broker.name()})
    } else {
        json!({"status": "degraded", "kind": state.broker.name(),
            "message": bh.message.unwrap_or_else(|| "connecting".into())})
    };
    let storage = crate::storage::health(
        state.videos.storage().as_ref(),
        state.settings.database_timeout,
    )
    .await;
    let ok = database["status"] == "ok"
        && storage["status"] == "ok"
        && (bh.ok || !state.settings.redis_strict_health);
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "timestamp": timestamp,
        "node_id": state.settings.node_id,
        "services": {"database": database, "broker": broker, "storage": storage, "ai": state.ai.health()},
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.observe_pool(state.db.status());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI document", body = serde_json::Value)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::ApiDoc::openapi())
}

/// A small self-contained page listing every operation of the OpenAPI document.
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("docs.html"))
}
