//! A pooled keep-alive HTTP/1 client for setup traffic (seeding users, rooms,
//! members), with bounded retries on transient failures.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::Target;

const ATTEMPTS: u32 = 5;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    target: Target,
}

impl Api {
    pub fn new(target: &Target, pool: usize) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Self {
            client,
            target: target.clone(),
        }
    }

    /// One attempt. Returns the status and the whole body.
    pub async fn once(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let uri = format!("{}{}", self.target.base, path);
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, HeaderValue::from_str(&self.target.authority)?);
        if let Some(t) = token {
            b = b.header(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}"))?,
            );
        }
        let payload = match body {
            Some(v) => {
                b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let req = b.body(Full::new(payload))?;
        let fut = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("request timed out after {REQUEST_TIMEOUT:?}"))?
    }

    /// Call with retries (transport errors, 429, 5xx); `ok` lists the accepted
    /// statuses. Returns the parsed JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
        ok: &[u16],
    ) -> Result<(StatusCode, serde_json::Value)> {
        let mut last_err = anyhow!("no attempt made");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let ms = (100u64 << attempt).min(2_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match self.once(method.clone(), path, token, body).await {
                Ok((st, bytes)) if ok.contains(&st.as_u16()) => {
                    let v = if bytes.is_empty() {
                        serde_json::Value::Null
                    } else {
                        serde_json::from_slice(&bytes)
                            .with_context(|| format!("{method} {path}: response is not JSON"))?
                    };
                    return Ok((st, v));
                }
                Ok((st, bytes)) => {
                    let snippet =
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
                    let e = anyhow!("{method} {path} -> {st}: {snippet}");
                    if st == StatusCode::TOO_MANY_REQUESTS || st.is_server_error() {
                        last_err = e;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => last_err = e.context(format!("{method} {path}")),
            }
        }
        bail!("{last_err:#} (after {ATTEMPTS} attempts)")
    }
}
