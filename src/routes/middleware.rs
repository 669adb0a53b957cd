//! The HTTP edge: the middleware every request passes (`track`: metrics, request id and
//! span; `guard`: the per-address limits and body deadlines of [`crate::limits`]) and the
//! [`AuthUser`] extractor. They read the node's [`AppState`], which is why they live here, above
//! the state, and not with the metrics, limits and authentication they call.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};

use crate::auth::extract::bearer_token;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

/// The per-address limits and body deadlines ([`crate::limits::enforce`]), refusals counted in
/// the metrics.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    crate::limits::enforce(
        &state.limits,
        |limit| state.metrics.rate_limited(limit),
        req,
        next,
    )
    .await
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Records each request's route, status and latency, gives it a request id (the caller's
/// `x-request-id` if it sent one), and runs it inside a span carrying that id.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span =
        tracing::info_span!("http", id = %request_id, method = %req.method(), path = %req.path());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let mut res = tracing::Instrument::instrument(next.call(req), span.clone()).await?;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let method = res.request().method().as_str().to_string();
        let status = res.status();
        m.http_requests
            .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
            .inc();
        m.http_latency
            .with_label_values(&[method.as_str(), route.as_str()])
            .observe(start.elapsed().as_secs_f64());
        tracing::debug!(parent: &span, status = status.as_u16(), elapsed_us = start.elapsed().as_micros() as u64, "request done");
    }
    Ok(res)
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_string);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no state")))?;
            let token = token.ok_or(ApiError::Unauthorized)?;
            state.authenticate(&token).await
        })
    }
}
