//! The public endpoints (`/`, `/health`, `/metrics`, `/openapi.json`, `/docs`), unknown routes
//! and methods, CORS and security headers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    assert_detail, assert_utc_timestamp, spawn_app, spawn_app_with, Backend, TestApp, TestUser,
};
use reqwest::Method;
use serde_json::{json, Value};

const FRONT: &str = "http://front.test";

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("JSON body")
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn the_root_says_the_api_is_running(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/", None).await;
    assert_eq!(res.status(), 200);
    let body = body(res).await;
    assert_eq!(body["message"], "Echo API is running");
    assert_eq!(body["status"], "ok");
    let version = body["version"].as_str().expect("version is a string");
    let parts: Vec<&str> = version.split(['.', '-', '+']).take(3).collect();
    assert_eq!(parts.len(), 3, "version {version} is semver");
    assert!(
        parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "version {version} is semver"
    );
}

async fn health_reports_the_database_ok(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/health", None).await;
    assert_eq!(res.status(), 200);
    let body = body(res).await;
    assert_eq!(body["status"], "ok");
    assert_utc_timestamp(&body["timestamp"], "timestamp");
    assert_eq!(body["services"]["database"]["status"], "ok", "{body}");
    for (name, service) in body["services"].as_object().expect("services map") {
        assert!(
            service["status"].is_string(),
            "service {name} has a status: {body}"
        );
    }
}

async fn metrics_count_http_requests_in_prometheus_text(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    assert_eq!(app.get("/", None).await.status(), 200);
    assert_eq!(app.get("/chats/", Some(&user.token)).await.status(), 200);
    let res = app.get("/metrics", None).await;
    assert_eq!(res.status(), 200);
    let content_type = header(&res, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "content-type {content_type}"
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains("# TYPE echo_http_requests_total counter"),
        "{text}"
    );
    let sample = text
        .lines()
        .find(|l| l.starts_with("echo_http_requests_total{"))
        .unwrap_or_else(|| panic!("no echo_http_requests_total sample in:\n{text}"));
    let count: f64 = sample
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("sample without a value: {sample}"));
    assert!(count >= 1.0, "{sample}");
}

async fn the_openapi_document_describes_the_rest_api(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/openapi.json", None).await;
    assert_eq!(res.status(), 200);
    let doc = body(res).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "openapi {version}");
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/chats/",
        "/chats/{chat_id}",
        "/chats/{chat_id}/messages/",
        "/chats/{chat_id}/members",
        "/messages/",
        "/users/me",
        "/users/{user_id}",
    ] {
        assert!(paths.contains_key(path), "missing path {path}");
    }
    assert!(paths["/chats/"].get("get").is_some() && paths["/chats/"].get("post").is_some());
    assert!(paths["/messages/"].get("post").is_some());
}

async fn the_docs_page_is_served_as_html(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get("/docs", None).await;
    assert_eq!(res.status(), 200);
    let content_type = header(&res, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "content-type {content_type}"
    );
    let html = res.text().await.unwrap();
    assert!(html.to_lowercase().contains("<html"), "an HTML page");
}

async fn an_unknown_route_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    for path in ["/nope", "/api/v2/chats", "/chats/x/y/z/w"] {
        assert_detail(app.get(path, None).await, 404, "Not Found", path).await;
        assert_detail(
            app.get(path, Some(&user.token)).await,
            404,
            "Not Found",
            path,
        )
        .await;
    }
}

async fn a_wrong_method_is_not_allowed(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    let cases = [
        (Method::PATCH, "/chats/"),
        (Method::DELETE, "/chats/"),
        (Method::PATCH, "/chats/00000000-0000-0000-0000-000000000000"),
    ];
    for (method, path) in cases {
        let case = format!("{method} {path}");
        let res = app
            .send_json(method, path, Some(&user.token), &json!({}))
            .await;
        assert_detail(res, 405, "Method Not Allowed", &case).await;
    }
}

/// Starlette answers 405 whenever the path matches a route, whatever methods it has.
async fn a_wrong_method_on_a_single_method_route_is_not_allowed(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    let chat = "00000000-0000-0000-0000-000000000000";
    let member = "11111111-1111-1111-1111-111111111111";
    let cases = [
        (Method::GET, "/messages/".to_string()),
        (Method::GET, format!("/chats/{chat}/members")),
        (Method::GET, format!("/chats/{chat}/members/{member}")),
        (Method::POST, format!("/chats/{chat}/messages/")),
        (Method::POST, "/users/me".to_string()),
        (Method::PUT, "/".to_string()),
        (Method::POST, "/health".to_string()),
    ];
    for (method, path) in cases {
        let case = format!("{method} {path}");
        let res = app
            .send_json(method, &path, Some(&user.token), &json!({}))
            .await;
        assert_detail(res, 405, "Method Not Allowed", &case).await;
    }
}

async fn spawn_with_cors(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[("CORS_ALLOWED_ORIGINS", FRONT)]).await
}

async fn a_preflight_from_an_allowed_origin_is_granted_with_credentials(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/chats/"))
        .header("origin", FRONT)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "preflight answers {}",
        res.status()
    );
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(FRONT)
    );
    assert_eq!(
        header(&res, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = header(&res, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "allow-methods {methods}");
    let headers = header(&res, "access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(headers.contains("authorization"), "allow-headers {headers}");
}

async fn a_request_from_an_allowed_origin_can_read_the_response(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let user = TestUser::new();
    let res = app
        .client
        .get(app.url("/chats/"))
        .bearer_auth(&user.token)
        .header("origin", FRONT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(FRONT)
    );
    assert_eq!(
        header(&res, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
}

async fn another_origin_gets_no_cors_grant(backend: Backend) {
    let app = spawn_with_cors(backend).await;
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/chats/"))
        .header("origin", "http://evil.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        None,
        "preflight"
    );
    assert_eq!(
        header(&res, "access-control-allow-credentials"),
        None,
        "preflight"
    );

    let res = app
        .client
        .get(app.url("/"))
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        None,
        "simple request"
    );
}

async fn without_configured_origins_no_origin_is_granted(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/chats/"))
        .header("origin", FRONT)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "access-control-allow-origin"), None);
}

async fn responses_carry_security_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    let responses = [
        ("GET /", app.get("/", None).await),
        ("GET /chats/", app.get("/chats/", Some(&user.token)).await),
        ("401", app.get("/users/me", None).await),
        ("404", app.get("/nope", None).await),
    ];
    for (case, res) in responses {
        assert_eq!(
            header(&res, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{case}"
        );
    }
}

async fn json_responses_declare_their_content_type(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = TestUser::new();
    let responses = [
        ("GET /", app.get("/", None).await),
        ("GET /chats/", app.get("/chats/", Some(&user.token)).await),
        ("401", app.get("/users/me", None).await),
        ("404", app.get("/nope", None).await),
        ("422", app.get("/chats/?limit=0", Some(&user.token)).await),
    ];
    for (case, res) in responses {
        let content_type = header(&res, "content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{case}: {content_type}"
        );
    }
}

on_both_backends!(
    the_root_says_the_api_is_running,
    health_reports_the_database_ok,
    metrics_count_http_requests_in_prometheus_text,
    the_openapi_document_describes_the_rest_api,
    the_docs_page_is_served_as_html,
    an_unknown_route_is_not_found,
    a_wrong_method_is_not_allowed,
    a_preflight_from_an_allowed_origin_is_granted_with_credentials,
    a_request_from_an_allowed_origin_can_read_the_response,
    another_origin_gets_no_cors_grant,
    without_configured_origins_no_origin_is_granted,
    responses_carry_security_headers,
    json_responses_declare_their_content_type,
);

/// Regression tests for server bugs found while writing this suite.
mod regressions {
    use super::*;
    on_both_backends!(a_wrong_method_on_a_single_method_route_is_not_allowed,);
}
