//! `echo-load rest`: closed-loop HTTP/1.1 load, one keep-alive connection per
//! worker task driven through a raw hyper `SendRequest` (no pool, no per-request
//! client overhead).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::common::{ErrorSamples, Minter, Target};
use crate::http::Api;
use crate::progress::Progress;
use crate::stats::{new_hist, record, Summary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestScenario {
    /// GET / (no auth)
    Root,
    /// GET /chats/ with a Bearer token
    Chats,
    /// POST /messages/ round-robin over --chats chats created first
    Messages,
}

impl RestScenario {
    fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Chats => "chats",
            Self::Messages => "messages",
        }
    }
}

pub struct RestConfig {
    pub scenario: RestScenario,
    pub target: Target,
    pub connections: usize,
    pub duration: Duration,
    pub chats: usize,
    pub secret: Option<Vec<u8>>,
    pub progress: bool,
    pub out: std::path::PathBuf,
    pub params: serde_json::Value,
}

/// What each worker sends.
enum ReqKind {
    Get {
        uri: Uri,
        auth: Option<HeaderValue>,
    },
    PostMessage {
        uri: Uri,
        auth: HeaderValue,
        chats: Vec<String>,
    },
}

struct ReqBuilder {
    host: HeaderValue,
    kind: ReqKind,
}

impl ReqBuilder {
    fn build(&self, n: u64) -> Result<Request<Full<Bytes>>> {
        match &self.kind {
            ReqKind::Get { uri, auth } => {
                let mut b = Request::builder()
                    .method(Method::GET)
                    .uri(uri.clone())
                    .header(HOST, self.host.clone());
                if let Some(a) = auth {
                    b = b.header(AUTHORIZATION, a.clone());
                }
                Ok(b.body(Full::new(Bytes::new()))?)
            }
            ReqKind::PostMessage { uri, auth, chats } => {
                let chat = &chats[(n % chats.len() as u64) as usize];
                let body = format!(r#"{{"content":"load message {n}","chat_id":"{chat}"}}"#);
                Ok(Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .header(HOST, self.host.clone())
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(Full::new(Bytes::from(body)))?)
            }
        }
    }
}

/// Per-worker statistics: written only by its worker, read by the ticker.
struct WorkerStats {
    ok: AtomicU64,
    non2xx: AtomicU64,
    transport: AtomicU64,
    connect_errors: AtomicU64,
    reconnects: AtomicU64,
    class: [AtomicU64; 6],
    hist: Mutex<Histogram<u64>>,
}

impl WorkerStats {
    fn new() -> Self {
        Self {
            ok: AtomicU64::new(0),
            non2xx: AtomicU64::new(0),
            transport: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            class: Default::default(),
            hist: Mutex::new(new_hist()),
        }
    }
}

pub async fn run(cfg: RestConfig) -> Result<Summary> {
    crate::common::raise_nofile();
    let mut progress = Progress::new(cfg.progress);
    let mut summary = Summary::new(
        "rest",
        cfg.scenario.name(),
        &cfg.target.base,
        cfg.params.clone(),
    );

    let builder = Arc::new(setup(&cfg, &mut progress).await?);
    let started = Instant::now();
    let mut workers = Workers::spawn(&cfg, builder);
    workers.show_progress(&cfg, started, &mut progress).await;
    workers.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let stuck = workers.join().await;
    progress.finish();

    workers.record(&mut summary);
    let ok = summary.counters.get("ok").copied().unwrap_or(0);
    let bad = summary.counters.get("errors_non_2xx").copied().unwrap_or(0);
    summary.counter("requests", ok + bad);
    summary.counter("workers_stuck_at_stop", stuck);
    if stuck > 0 {
        summary.notes.push(format!(
            "{stuck} workers still had a request in flight 3 s after the end (aborted)"
        ));
    }
    summary.duration_secs = elapsed.as_secs_f64();
    summary.rate("req_per_sec", "requests");
    summary.rate("ok_per_sec", "ok");
    summary.latency("request", "request latency", &workers.histogram(), true);
    summary.errors_sample = workers.errors.snapshot();
    summary.problem_if_nonzero("errors_non_2xx", "non-2xx responses");
    summary.problem_if_nonzero("errors_transport", "transport errors");
    summary.problem_if_nonzero("connect_errors", "connect errors");
    summary.problem_if_nonzero("workers_stuck_at_stop", "requests hung at stop");
    if ok == 0 {
        summary.nothing_worked = true;
        summary
            .problems
            .push("no successful request: is the server running?".into());
    }
    summary.finish_and_write(&cfg.out)
}

/// The worker tasks of a run (one per connection) and what they share.
struct Workers {
    stats: Vec<Arc<WorkerStats>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    /// Set when the run is over.
    stop: Arc<AtomicBool>,
    errors: Arc<ErrorSamples>,
}

impl Workers {
    /// Starts `--connections` workers sending what `builder` builds.
    fn spawn(cfg: &RestConfig, builder: Arc<ReqBuilder>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(ErrorSamples::default());
        let stats: Vec<Arc<WorkerStats>> = (0..cfg.connections)
            .map(|_| Arc::new(WorkerStats::new()))
            .collect();
        let mut handles = Vec::with_capacity(cfg.connections);
        for (w, st) in stats.iter().enumerate() {
            handles.push(tokio::spawn(worker(
                w as u64,
                cfg.connections as u64,
                cfg.target.addr,
                builder.clone(),
                st.clone(),
                stop.clone(),
                errors.clone(),
            )));
        }
        Self {
            stats,
            handles,
            stop,
            errors,
        }
    }

    /// Responses so far: 2xx, other statuses, transport and connect errors.
    fn totals(&self) -> (u64, u64, u64) {
        self.stats.iter().fold((0, 0, 0), |acc, s| {
            (
                acc.0 + s.ok.load(Ordering::Relaxed),
                acc.1 + s.non2xx.load(Ordering::Relaxed),
                acc.2
                    + s.transport.load(Ordering::Relaxed)
                    + s.connect_errors.load(Ordering::Relaxed),
            )
        })
    }

    /// Shows the request rate every 250 ms until `--duration` after `started`.
    async fn show_progress(&self, cfg: &RestConfig, started: Instant, progress: &mut Progress) {
        let secs = cfg.duration.as_secs().max(1);
        progress.phase(&format!("rest {}", cfg.scenario.name()), secs, true);
        let end = started + cfg.duration;
        let mut last = (Instant::now(), 0u64);
        let mut iv = tokio::time::interval(Duration::from_millis(250));
        loop {
            iv.tick().await;
            let now = Instant::now();
            let (ok, bad, terr) = self.totals();
            let n = ok + bad;
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let rate = (n - last.1) as f64 / dt;
            last = (now, n);
            progress.update(
                now.duration_since(started).as_secs(),
                format!("{n} req · {rate:.0} req/s · non-2xx {bad} · transport errors {terr}"),
            );
            if now >= end {
                break;
            }
        }
    }

    /// Waits for the stopped workers; in-flight requests finish quickly, stragglers are
    /// aborted after a grace period. Returns how many were still running then.
    async fn join(&mut self) -> u64 {
        let grace = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(grace);
        for h in self.handles.iter_mut() {
            tokio::select! {
                _ = &mut *h => {}
                _ = &mut grace => break,
            }
        }
        let stuck = self.handles.iter().filter(|h| !h.is_finished()).count() as u64;
        for h in &self.handles {
            h.abort();
        }
        stuck
    }

    /// The summary's counters, summed over the workers.
    fn record(&self, summary: &mut Summary) {
        let mut c = |name: &str, f: &dyn Fn(&WorkerStats) -> u64| {
            summary.counter(name, self.stats.iter().map(|s| f(s)).sum());
        };
        c("ok", &|s| s.ok.load(Ordering::Relaxed));
        c("errors_non_2xx", &|s| s.non2xx.load(Ordering::Relaxed));
        c("errors_transport", &|s| s.transport.load(Ordering::Relaxed));
        c("connect_errors", &|s| {
            s.connect_errors.load(Ordering::Relaxed)
        });
        c("reconnects", &|s| s.reconnects.load(Ordering::Relaxed));
        for (i, name) in [
            "status_1xx",
            "status_2xx",
            "status_3xx",
            "status_4xx",
            "status_5xx",
            "status_other",
        ]
        .iter()
        .enumerate()
        {
            c(name, &|s| s.class[i].load(Ordering::Relaxed));
        }
    }

    /// The request latencies of all workers.
    fn histogram(&self) -> Histogram<u64> {
        let mut hist = new_hist();
        for s in &self.stats {
            if let Ok(h) = s.hist.lock() {
                let _ = hist.add(&*h);
            }
        }
        hist
    }
}

/// Scenario setup: tokens, user upsert, chats for the `messages` scenario.
async fn setup(cfg: &RestConfig, progress: &mut Progress) -> Result<ReqBuilder> {
    let host = HeaderValue::from_str(&cfg.target.authority)?;
    let need_auth = cfg.scenario != RestScenario::Root;
    let mut token = None;
    if need_auth {
        let secret = cfg.secret.as_ref().ok_or_else(|| {
            anyhow!(
                "the {:?} scenario needs --secret or --secret-file",
                cfg.scenario
            )
        })?;
        let minter = Minter::new(secret, cfg.duration.as_secs() + 3600);
        let user = Uuid::new_v4();
        let email = format!(
            "load-rest-{}@load.echo.test",
            &user.simple().to_string()[..8]
        );
        let tok = minter.token(&user, &email)?;
        let api = Api::new(&cfg.target, 16);
        api.call(Method::GET, "/users/me", Some(&tok), None, &[200])
            .await
            .context("upserting the load user (GET /users/me)")?;
        token = Some(tok);
    }
    let auth = match &token {
        Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}"))?),
        None => None,
    };
    let kind = match cfg.scenario {
        RestScenario::Root => ReqKind::Get {
            uri: Uri::from_static("/"),
            auth: None,
        },
        RestScenario::Chats => {
            // The user owns --chats chats so the listing has rows to return.
            let tok = token.clone().unwrap_or_default();
            create_chats(cfg, &tok, progress).await?;
            ReqKind::Get {
                uri: Uri::from_static("/chats/"),
                auth,
            }
        }
        RestScenario::Messages => {
            let tok = token.clone().unwrap_or_default();
            let chats = create_chats(cfg, &tok, progress).await?;
            ReqKind::PostMessage {
                uri: Uri::from_static("/messages/"),
                auth: auth.context("no token")?,
                chats,
            }
        }
    };
    Ok(ReqBuilder { host, kind })
}

/// Create `--chats` chats owned by the load user (bounded concurrency 16).
async fn create_chats(cfg: &RestConfig, tok: &str, progress: &mut Progress) -> Result<Vec<String>> {
    use futures_util::StreamExt;
    let api = Api::new(&cfg.target, 16);
    let n = cfg.chats.max(1);
    progress.phase("chats", n as u64, false);
    let done = std::sync::atomic::AtomicU64::new(0);
    let fut = futures_util::stream::iter(0..n)
        .map(|i| {
            let api = &api;
            let done = &done;
            async move {
                let (_, v) = api
                    .call(
                        Method::POST,
                        "/chats/",
                        Some(tok),
                        Some(&json!({ "title": format!("load chat {i}") })),
                        &[200, 201],
                    )
                    .await
                    .context("creating chats for the scenario")?;
                let id = v
                    .get("id")
                    .and_then(|x| x.as_str())
                    .context("POST /chats/ response has no string `id`")?
                    .to_string();
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(id)
            }
        })
        .buffered(16)
        .collect::<Vec<_>>();
    let ids = crate::progress::with_ticker(progress, fut, || {
        let d = done.load(Ordering::Relaxed);
        (d, format!("created {d}/{n} chats"))
    })
    .await;
    ids.into_iter().collect()
}

async fn connect(addr: std::net::SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send_one(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<StatusCode> {
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

async fn worker(
    w: u64,
    workers: u64,
    addr: std::net::SocketAddr,
    builder: Arc<ReqBuilder>,
    st: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    errors: Arc<ErrorSamples>,
) {
    let mut n = w;
    let mut reported = 0u32;
    let mut report = |msg: String| {
        if reported < 5 {
            reported += 1;
            errors.add(msg);
        }
    };
    'outer: while !stop.load(Ordering::Relaxed) {
        let mut sender = match connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                st.connect_errors.fetch_add(1, Ordering::Relaxed);
                report(format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            if sender.ready().await.is_err() {
                // The server closed the keep-alive connection between requests.
                st.reconnects.fetch_add(1, Ordering::Relaxed);
                continue 'outer;
            }
            let req = match builder.build(n) {
                Ok(r) => r,
                Err(e) => {
                    report(format!("building request: {e:#}"));
                    break 'outer;
                }
            };
            n += workers;
            let t0 = Instant::now();
            match send_one(&mut sender, req).await {
                Ok(status) => {
                    let us = t0.elapsed().as_micros() as u64;
                    if let Ok(mut h) = st.hist.lock() {
                        record(&mut h, us);
                    }
                    let class = (status.as_u16() / 100) as usize;
                    st.class[if (1..=5).contains(&class) {
                        class - 1
                    } else {
                        5
                    }]
                    .fetch_add(1, Ordering::Relaxed);
                    if status.is_success() {
                        st.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        st.non2xx.fetch_add(1, Ordering::Relaxed);
                        report(format!("HTTP {status}"));
                    }
                }
                Err(e) => {
                    st.transport.fetch_add(1, Ordering::Relaxed);
                    report(format!("{e:#}"));
                    continue 'outer;
                }
            }
        }
    }
}
