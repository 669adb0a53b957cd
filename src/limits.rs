//! Per-client limits at the HTTP edge: who the client is (its address, or the one a trusted
//! proxy forwarded), how fast one address may call the REST API and open WebSockets (429 with
//! `Retry-After`), how many sockets one user may hold, and how long a request body may take to
//! arrive (408). Every table here is bounded, so a flood of addresses cannot grow memory.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::Stream;
use uuid::Uuid;

use crate::config::limits::canonical;
pub use crate::config::limits::{parse_cidrs, Cidr, LimitSettings};

/// Addresses tracked by one rate limiter before idle ones are swept.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// The client's address: the peer's, or — when the peer is a trusted proxy — the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = canonical(peer?.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    // The rightmost entries were appended by the proxies nearest to us; walk leftwards past
    // the trusted ones. Anything unparsable stops the walk: left of it the client could write
    // whatever it liked.
    let hops = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per client address.
pub struct KeyedLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<IpAddr, Bucket>,
}

impl KeyedLimiter {
    /// `rate` per second, `burst` at once; `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<KeyedLimiter> {
        (rate > 0).then(|| KeyedLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        })
    }

    /// `Ok` when `ip` may go on; else how long until it may.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_TRACKED_ADDRESSES {
            self.sweep();
        }
        let now = Instant::now();
        let mut b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Forgets addresses whose bucket has refilled (they are as if never seen); if the table is
    /// still full, forgets everyone (fails open rather than growing).
    fn sweep(&self) {
        let refill = Duration::from_secs_f64(self.burst / self.rate);
        self.buckets.retain(|_, b| b.last.elapsed() < refill);
        if self.buckets.len() >= MAX_TRACKED_ADDRESSES {
            self.buckets.clear();
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The limits of one node, shared by the middleware and the WebSocket upgrade.
pub struct EdgeLimits {
    settings: LimitSettings,
    rest: Option<KeyedLimiter>,
    ws_connect: Option<KeyedLimiter>,
    user_sockets: Arc<DashMap<Uuid, usize>>,
    handshakes: Arc<AtomicUsize>,
}

/// A WebSocket upgrade being set up; given back when dropped.
pub struct HandshakeGuard(Arc<AtomicUsize>);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A user's place among their capped sockets; given back when dropped.
pub struct SocketSlot {
    user_id: Uuid,
    table: Option<Arc<DashMap<Uuid, usize>>>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Some(table) = &self.table {
            table.remove_if_mut(&self.user_id, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

impl EdgeLimits {
    /// Limits from settings.
    pub fn new(settings: LimitSettings) -> EdgeLimits {
        EdgeLimits {
            rest: KeyedLimiter::new(settings.rest_rate.0, settings.rest_rate.1),
            ws_connect: KeyedLimiter::new(settings.ws_connect_rate.0, settings.ws_connect_rate.1),
            user_sockets: Arc::new(DashMap::new()),
            handshakes: Arc::new(AtomicUsize::new(0)),
            settings,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.settings.exempt.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request (see [`client_ip`]).
    pub fn client_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        client_ip(peer, headers, &self.settings.trusted_proxies)
    }

    /// Takes a WebSocket upgrade from `ip` against its rate.
    pub fn check_ws_connect(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        match (ip, &self.ws_connect) {
            (Some(ip), Some(limiter)) if !self.exempt(ip) => limiter.check(ip),
            _ => Ok(()),
        }
    }

    fn check_rest(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        match (ip, &self.rest) {
            (Some(ip), Some(limiter)) if !self.exempt(ip) => limiter.check(ip),
            _ => Ok(()),
        }
    }

    /// A socket slot for `user_id`, or `None` when they already hold the most allowed.
    pub fn acquire_socket(&self, user_id: Uuid) -> Option<SocketSlot> {
        let cap = self.settings.sessions_per_user;
        if cap == 0 {
            return Some(SocketSlot {
                user_id,
                table: None,
            });
        }
        let mut held = self.user_sockets.entry(user_id).or_insert(0);
        if *held >= cap {
            return None;
        }
        *held += 1;
        Some(SocketSlot {
            user_id,
            table: Some(self.user_sockets.clone()),
        })
    }

    /// A place among the upgrades being set up, or `None` when the node already sets up
    /// `WS_MAX_PENDING_HANDSHAKES` (it is overloaded: the client should come back shortly).
    pub fn enter_handshake(&self) -> Option<HandshakeGuard> {
        let cap = self.settings.max_pending_handshakes;
        let before = self.handshakes.fetch_add(1, Ordering::AcqRel);
        let guard = HandshakeGuard(self.handshakes.clone());
        (cap == 0 || before < cap).then_some(guard)
    }

    /// Sockets `user_id` holds on this node.
    pub fn sockets_of(&self, user_id: Uuid) -> usize {
        self.user_sockets.get(&user_id).map_or(0, |n| *n)
    }
}

/// A 503 with `Retry-After` (whole seconds, at least 1) and FastAPI's `detail`: the node is
/// overloaded and sheds new work instead of slowing what it already accepted.
pub fn service_busy(retry_after: Duration) -> HttpResponse {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, secs.to_string()))
        .json(serde_json::json!({"detail": "Server busy, retry shortly"}))
}

/// A 429 with `Retry-After` (whole seconds, at least 1) and FastAPI's `detail`.
pub fn too_many_requests(retry_after: Duration) -> HttpResponse {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, secs.to_string()))
        .json(serde_json::json!({"detail": "Too many requests"}))
}

/// The edge checks of one request, for the HTTP middleware (`routes::middleware::guard`):
/// per-address REST rate (WebSocket upgrades are counted by their own route) and the request
/// body's receive deadline. `refused` is told which limit refused a request (for metrics).
pub async fn enforce(
    limits: &EdgeLimits,
    refused: impl Fn(&'static str),
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let is_ws = req.path() == "/ws";
    if !is_ws {
        let ip = limits.client_of(req.peer_addr(), req.headers());
        if let Err(wait) = limits.check_rest(ip) {
            refused("rest");
            let (http, _) = req.into_parts();
            return Ok(ServiceResponse::new(http, too_many_requests(wait)));
        }
    }
    if is_ws || !has_body(req.headers()) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let upload = is_upload(&req);
    let total = if upload {
        limits.settings.upload_timeout
    } else {
        limits.settings.body_timeout
    };
    let expired = Arc::new(AtomicBool::new(false));
    let (http, payload) = req.into_parts();
    let timed = DeadlinePayload {
        inner: payload,
        deadline: Box::pin(tokio::time::sleep(total)),
        idle_limit: limits.settings.body_idle_timeout,
        idle: Box::pin(tokio::time::sleep(limits.settings.body_idle_timeout)),
        expired: expired.clone(),
        done: false,
    };
    let req = ServiceRequest::from_parts(
        http,
        Payload::Stream {
            payload: Box::pin(timed),
        },
    );
    let res = next.call(req).await;
    if expired.load(Ordering::Acquire) {
        refused("body_timeout");
        let http = match res {
            Ok(r) => r.into_parts().0,
            Err(e) => return Err(e),
        };
        let mut timeout = HttpResponse::RequestTimeout().json(serde_json::json!({
            "detail": "The request body was not received in time"
        }));
        timeout
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(ServiceResponse::new(http, timeout));
    }
    res.map(ServiceResponse::map_into_boxed_body)
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn is_upload(req: &ServiceRequest) -> bool {
    req.path().starts_with("/files/")
        || req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/")
            })
}

/// A request body that errors once its whole-body deadline passes, or when no piece arrived
/// for `idle_limit`.
struct DeadlinePayload {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    idle_limit: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
    done: bool,
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next_idle = tokio::time::Instant::now() + this.idle_limit;
                this.idle.as_mut().reset(next_idle);
                // Even a steady trickle must finish by the deadline.
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return this.expire();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready()
                    || this.idle.as_mut().poll(cx).is_ready()
                {
                    return this.expire();
                }
                Poll::Pending
            }
        }
    }
}

impl DeadlinePayload {
    fn expire(&mut self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.done = true;
        self.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request body not received in time",
        )))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(s: &str) -> Vec<Cidr> {
        parse_cidrs("TEST", s).unwrap()
    }

    #[test]
    fn cidr_ranges_match_their_addresses_only() {
        let r = cidrs("10.0.0.0/8, 192.0.2.7, fd00::/8");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r[0].contains(ip("10.200.1.1")));
        assert!(!r[0].contains(ip("11.0.0.1")));
        assert!(r[1].contains(ip("192.0.2.7")));
        assert!(!r[1].contains(ip("192.0.2.8")));
        assert!(r[2].contains(ip("fd12::1")));
        assert!(r[0].contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(parse_cidrs("X", "10.0.0.0/33").is_err());
        assert!(parse_cidrs("X", "nonsense").is_err());
        assert!(cidrs("none").is_empty());
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let h = xff(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(
            client_ip(Some(peer), &h, &[]),
            Some(peer.ip()),
            "untrusted peer"
        );
        let trusted = cidrs("10.0.0.0/8");
        assert_eq!(
            client_ip(Some(peer), &h, &trusted),
            Some(client),
            "rightmost"
        );
        let chained = xff(&["203.0.113.9", "10.0.0.9"]);
        assert_eq!(
            client_ip(Some(peer), &chained, &trusted),
            Some(client),
            "past a 2nd proxy"
        );
        let garbage = xff(&["1.2.3.4, junk, 10.0.0.7"]);
        assert_eq!(
            client_ip(Some(peer), &garbage, &trusted),
            Some("10.0.0.7".parse().unwrap()),
            "an unparsable hop stops the walk"
        );
        assert_eq!(
            client_ip(Some(peer), &HeaderMap::new(), &trusted),
            Some(peer.ip())
        );
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let l = KeyedLimiter::new(1, 3).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert!(l.check(b).is_ok(), "other addresses are not affected");
        assert!(KeyedLimiter::new(0, 10).is_none(), "rate 0 disables");
    }

    #[test]
    fn the_address_table_is_bounded() {
        let l = KeyedLimiter::new(1_000_000, 1).unwrap();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(ip);
        }
        assert!(l.tracked() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn socket_slots_are_capped_per_user_and_given_back() {
        let mut s = LimitSettings::from_map(&Default::default()).unwrap();
        s.sessions_per_user = 2;
        let limits = EdgeLimits::new(s);
        let user = Uuid::new_v4();
        let a = limits.acquire_socket(user).unwrap();
        let _b = limits.acquire_socket(user).unwrap();
        assert!(limits.acquire_socket(user).is_none());
        assert!(limits.acquire_socket(Uuid::new_v4()).is_some(), "per user");
        drop(a);
        assert_eq!(limits.sockets_of(user), 1);
        assert!(limits.acquire_socket(user).is_some());
    }

    #[test]
    fn handshakes_in_setup_are_capped_and_given_back() {
        let mut s = LimitSettings::from_map(&Default::default()).unwrap();
        s.max_pending_handshakes = 2;
        let limits = EdgeLimits::new(s);
        let a = limits.enter_handshake().unwrap();
        let _b = limits.enter_handshake().unwrap();
        assert!(limits.enter_handshake().is_none(), "a third is shed");
        assert!(
            limits.enter_handshake().is_none(),
            "a refusal holds no place"
        );
        drop(a);
        assert!(
            limits.enter_handshake().is_some(),
            "a finished one frees its place"
        );
    }
}
