//! `echo-load ws`: the WebSocket session plumbing every scenario uses (configuration, counters,
//! opening and closing sessions, the start barrier) and the scenarios `idle`, `fanout` and
//! `churn`; `drive` runs them (and `ai`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use crate::common::{unix_nanos, ErrorSamples, Minter, Target};
use crate::plan::Plan;
use crate::progress::{with_ticker, Progress};
use crate::stats::{LatencySink, LocalBatch, Summary};

/// A client WebSocket session.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Time allowed for one session's connect + welcome + subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for a graceful close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The server's documented per-session rate limit (frames/s).
const SERVER_RATE_LIMIT: f64 = 20.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WsScenario {
    /// Hold N subscribed sessions open for --duration
    Idle,
    /// Senders in every room publish at --rate msgs/s total; everyone measures delivery
    Fanout,
    /// Workers loop connect → welcome → subscribe → close
    Churn,
    /// Chat owners prompt AI replies; every member watches the tokens (see ai.rs)
    Ai,
}

impl WsScenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Fanout => "fanout",
            Self::Churn => "churn",
            Self::Ai => "ai",
        }
    }
}

/// Options of the `ai` scenario.
#[derive(Clone, Debug)]
pub struct AiOpts {
    /// Chats, each with one prompter (its owner).
    pub replies: usize,
    /// Sessions per chat (distinct users), the prompter included.
    pub watchers: usize,
    /// Expected tokens per reply (checked when set).
    pub tokens: Option<usize>,
    /// The provider's tokens/s, for timeouts and the default ramp.
    pub token_rate: f64,
    /// Spread of the first prompts.
    pub ramp: Duration,
    /// Direct calls to the mock for a TTFT baseline.
    pub direct_samples: usize,
    pub mock: Option<Target>,
}

pub struct WsConfig {
    pub scenario: WsScenario,
    pub target: Target,
    pub secret: Vec<u8>,
    pub plan: Option<PathBuf>,
    pub sessions: usize,
    pub room_size: usize,
    pub senders: usize,
    pub rate: f64,
    pub duration: Duration,
    pub drain: Duration,
    pub concurrency: usize,
    pub source_ips: Vec<IpAddr>,
    pub process_index: u32,
    pub process_count: u32,
    pub seed_concurrency: usize,
    pub connect_concurrency: usize,
    pub setup_timeout: Duration,
    pub start_at: Option<u64>,
    pub progress: bool,
    pub out: PathBuf,
    pub params: serde_json::Value,
    pub ai: AiOpts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Setup,
    Run,
    Drain,
    Stop,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) setup_done: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) alive: AtomicU64,
    pub(crate) fail_tcp: AtomicU64,
    pub(crate) fail_upgrade: AtomicU64,
    pub(crate) fail_welcome: AtomicU64,
    pub(crate) fail_subscribe: AtomicU64,
    pub(crate) fail_timeout: AtomicU64,
    pub(crate) closed_by_server: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) foreign_messages: AtomicU64,
    pub(crate) error_frames: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) other_frames: AtomicU64,
    pub(crate) seq_duplicates: AtomicU64,
    pub(crate) seq_out_of_order: AtomicU64,
    pub(crate) seq_missing: AtomicU64,
    pub(crate) cycles_ok: AtomicU64,
    pub(crate) cycles_failed: AtomicU64,
    pub(crate) close_unclean: AtomicU64,
    pub(crate) close_codes: Mutex<BTreeMap<u16, u64>>,
}

impl Counters {
    pub(crate) fn failed_setup(&self) -> u64 {
        self.fail_tcp.load(Ordering::Relaxed)
            + self.fail_upgrade.load(Ordering::Relaxed)
            + self.fail_welcome.load(Ordering::Relaxed)
            + self.fail_subscribe.load(Ordering::Relaxed)
            + self.fail_timeout.load(Ordering::Relaxed)
    }

    pub(crate) fn close_code(&self, code: u16) {
        if let Ok(mut m) = self.close_codes.lock() {
            *m.entry(code).or_insert(0) += 1;
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) target: Target,
    pub(crate) minter: Minter,
    pub(crate) ws_config: WebSocketConfig,
    pub(crate) source_ips: Vec<IpAddr>,
    pub(crate) connect_sem: Semaphore,
    pub(crate) c: Counters,
    pub(crate) errors: ErrorSamples,
    pub(crate) setup_latency: Arc<LatencySink>,
    pub(crate) delivery_latency: Arc<LatencySink>,
    pub(crate) cycle_latency: Arc<LatencySink>,
    pub(crate) room_acks: Vec<AtomicU64>,
    pub(crate) room_subscribed: Vec<AtomicU64>,
    /// The first `welcome` frame seen (reported in the summary).
    pub(crate) welcome: Mutex<Option<serde_json::Value>>,
}

impl Ctx {
    /// The context of a run's sessions: the target, token minting, the WebSocket limits, at
    /// most `--connect-concurrency` handshakes at once, and counters for `rooms` rooms.
    pub(crate) fn new(cfg: &WsConfig, minter: Minter, rooms: usize) -> Self {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(4 << 20))
            .max_frame_size(Some(4 << 20));
        Self {
            target: cfg.target.clone(),
            minter,
            ws_config,
            source_ips: cfg.source_ips.clone(),
            connect_sem: Semaphore::new(cfg.connect_concurrency.max(1)),
            c: Counters::default(),
            errors: ErrorSamples::default(),
            setup_latency: LatencySink::new(),
            delivery_latency: LatencySink::new(),
            cycle_latency: LatencySink::new(),
            room_acks: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            room_subscribed: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            welcome: Mutex::new(None),
        }
    }

    /// Opens a measured session once a connect slot is free (unless the run is stopping)
    /// and counts it: its setup time, connected, alive and subscribed in its room. Every
    /// attempt counts towards `setup_done`. Returns the stream and the room's last seq.
    pub(crate) async fn open_subscribed(
        &self,
        spec: &Spec,
        phase_rx: &watch::Receiver<Phase>,
    ) -> Option<(Ws, Option<i64>)> {
        let permit = self.connect_sem.acquire().await.ok()?;
        if *phase_rx.borrow() >= Phase::Stop {
            return None;
        }
        let t0 = Instant::now();
        let opened = open_with_timeout(self, spec, spec.user_idx).await;
        drop(permit);
        let Some(opened) = opened else {
            self.c.setup_done.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.setup_latency
            .record_many(&[t0.elapsed().as_micros() as u64]);
        self.c.connected.fetch_add(1, Ordering::Relaxed);
        self.c.alive.fetch_add(1, Ordering::Relaxed);
        self.room_subscribed[spec.room].fetch_add(1, Ordering::Relaxed);
        self.c.setup_done.fetch_add(1, Ordering::Relaxed);
        Some(opened)
    }

    /// The sum over rooms of `per_room` × the sessions subscribed there: how often the items
    /// counted per room should have been received, each reaching every subscriber of its room.
    pub(crate) fn expected(&self, per_room: &[AtomicU64]) -> u64 {
        per_room
            .iter()
            .zip(self.room_subscribed.iter())
            .map(|(a, s)| a.load(Ordering::Relaxed) * s.load(Ordering::Relaxed))
            .sum()
    }

    /// The summary's session counters: owned, subscribed, alive at the end, closed by the
    /// server, dropped.
    pub(crate) fn record_sessions(&self, summary: &mut Summary, owned: u64, alive_at_end: u64) {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        summary.counter("sessions_owned", owned);
        summary.counter("sessions_subscribed", ld(&self.c.connected));
        summary.counter("alive_at_end", alive_at_end);
        summary.counter("closed_by_server", ld(&self.c.closed_by_server));
        summary.counter("dropped", ld(&self.c.dropped));
    }

    /// Counts and explains a session read that was not a text frame; true when it ended the
    /// session (the server closed it, the read failed, or the connection went away).
    pub(crate) fn session_read_ended(
        &self,
        read: Option<std::result::Result<Message, WsError>>,
    ) -> bool {
        match read {
            Some(Ok(Message::Close(cf))) => {
                let code = cf.map(|f| u16::from(f.code)).unwrap_or(1005);
                self.c.closed_by_server.fetch_add(1, Ordering::Relaxed);
                self.c.close_code(code);
                self.errors
                    .add(format!("session closed by server with code {code}"));
                true
            }
            Some(Ok(_)) => false,
            Some(Err(e)) => {
                self.c.dropped.fetch_add(1, Ordering::Relaxed);
                self.errors.add(format!("session read error: {e}"));
                true
            }
            None => {
                self.c.dropped.fetch_add(1, Ordering::Relaxed);
                self.errors
                    .add("session: connection closed without close frame");
                true
            }
        }
    }

    /// Ends a measured session: flushes its latencies, counts it gone, and closes it (with a
    /// close handshake when `graceful`).
    pub(crate) async fn session_over(
        &self,
        spec: &Spec,
        mut ws: Ws,
        lat: &mut LocalBatch,
        graceful: bool,
    ) {
        lat.flush();
        self.c.alive.fetch_sub(1, Ordering::Relaxed);
        self.room_subscribed[spec.room].fetch_sub(1, Ordering::Relaxed);
        if graceful && !close_gracefully(&mut ws).await {
            self.c.close_unclean.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Source address for a connection: spread by `hint` (session index or
    /// churn cycle). With a single address nothing is bound (kernel default).
    fn pick_ip(&self, hint: usize) -> Option<IpAddr> {
        if self.source_ips.len() <= 1 || self.target.addr.is_ipv6() {
            return None;
        }
        Some(self.source_ips[hint % self.source_ips.len()])
    }
}

/// One planned session.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) user_idx: usize,
    pub(crate) user: Uuid,
    pub(crate) email: Arc<str>,
    pub(crate) room: usize,
    pub(crate) chat_id: Arc<str>,
    pub(crate) sender_period: Option<Duration>,
    pub(crate) phase_offset: f64,
}

// ---------------------------------------------------------------------------
// Frames

#[derive(Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    chat_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default)]
    last_seq: Option<i64>,
}

#[derive(Deserialize)]
struct MsgBody<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
    seq: i64,
}

#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

/// Where a session setup failed.
#[derive(Debug)]
enum Stage {
    Tcp,
    Upgrade,
    Welcome,
    Subscribe,
}

struct SetupError {
    stage: Stage,
    err: anyhow::Error,
}

fn at<T>(stage: Stage, r: Result<T>) -> std::result::Result<T, SetupError> {
    r.map_err(|err| SetupError { stage, err })
}

fn describe_ws_error(e: WsError) -> anyhow::Error {
    match e {
        WsError::Http(resp) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).to_string())
                .unwrap_or_default();
            anyhow!("upgrade refused: HTTP {} {}", resp.status(), body)
        }
        other => anyhow!(other),
    }
}

/// Next text frame, skipping control frames; errors on close/EOF.
async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            None => bail!("connection closed by server (EOF)"),
            Some(Err(e)) => return Err(describe_ws_error(e)),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(cf))) => {
                let (code, reason) = cf
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                bail!("closed by server: {code} {reason}")
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// TCP connect (bound to a source address), WebSocket upgrade, welcome, subscribe.
/// Returns the stream and the room's `last_seq` from `subscribed`.
async fn open_session(
    ctx: &Ctx,
    spec: &Spec,
    ip_hint: usize,
) -> std::result::Result<(Ws, Option<i64>), SetupError> {
    let stream = at(Stage::Tcp, connect_tcp(ctx, ip_hint).await)?;
    let token = at(Stage::Upgrade, ctx.minter.token(&spec.user, &spec.email))?;
    let url = ctx.target.ws_url(&token);
    let (mut ws, _resp) = at(
        Stage::Upgrade,
        tokio_tungstenite::client_async_with_config(url, stream, Some(ctx.ws_config))
            .await
            .map_err(describe_ws_error),
    )?;
    let first = at(Stage::Welcome, next_text(&mut ws).await)?;
    at(Stage::Welcome, check_welcome(ctx, &first))?;
    let last_seq = subscribe(&mut ws, spec).await?;
    Ok((ws, last_seq))
}

/// A TCP connection to the target from the source address picked by `ip_hint`.
async fn connect_tcp(ctx: &Ctx, ip_hint: usize) -> Result<TcpStream> {
    let addr = ctx.target.addr;
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = ctx.pick_ip(ip_hint) {
        defer_port_choice(&sock);
        sock.bind(std::net::SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}:0"))?;
    }
    let s = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Lets `connect()` pick the source port of a socket bound to an address with port 0
/// (`IP_BIND_ADDRESS_NO_PORT`). Without it `bind()` reserves a port on that address for every
/// destination at once: with tens of thousands of sessions per source address the kernel scans
/// an almost full port range on each bind, and the load generator, not the server, sets the
/// pace of a large setup. With it a port only has to be free towards this one server.
#[cfg(target_os = "linux")]
fn defer_port_choice(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size. Refused
    // (an old kernel), the bind still works, with the slower port search.
    let _ = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice(_: &TcpSocket) {}

/// Checks that the first frame is `welcome`; the first one seen is kept for the summary.
fn check_welcome(ctx: &Ctx, first: &str) -> Result<()> {
    let f: InFrame = serde_json::from_str(first)
        .with_context(|| format!("first frame is not JSON: {first:.200}"))?;
    if f.kind != "welcome" {
        bail!(
            "first frame is {:?}, expected welcome: {first:.200}",
            f.kind
        );
    }
    if let Ok(mut w) = ctx.welcome.lock() {
        if w.is_none() {
            *w = serde_json::from_str(first).ok();
        }
    }
    Ok(())
}

/// Subscribes to the session's room and waits for `subscribed`; returns the room's last seq
/// (the higher of `last_seq` and any message that arrived before the reply).
async fn subscribe(ws: &mut Ws, spec: &Spec) -> std::result::Result<Option<i64>, SetupError> {
    let sub = json!({"type": "subscribe", "id": "s1", "chat_id": &*spec.chat_id}).to_string();
    at(
        Stage::Subscribe,
        ws.send(Message::text(sub)).await.map_err(describe_ws_error),
    )?;
    let mut early_seq: Option<i64> = None;
    for _ in 0..10_000 {
        let text = at(Stage::Subscribe, next_text(ws).await)?;
        let f: InFrame = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(_) => continue,
        };
        match f.kind.as_ref() {
            "subscribed" if f.id.as_deref().is_none_or(|i| i == "s1") => {
                let last = match (f.last_seq, early_seq) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                return Ok(last);
            }
            "error" if f.id.as_deref().is_none_or(|i| i == "s1") => {
                return Err(SetupError {
                    stage: Stage::Subscribe,
                    err: anyhow!("subscribe refused: {text:.300}"),
                });
            }
            "message" => {
                if let Some(m) = f
                    .message
                    .and_then(|r| serde_json::from_str::<MsgBody>(r.get()).ok())
                {
                    early_seq = Some(early_seq.map_or(m.seq, |s| s.max(m.seq)));
                }
            }
            _ => {}
        }
    }
    Err(SetupError {
        stage: Stage::Subscribe,
        err: anyhow!("no `subscribed` reply among 10000 frames"),
    })
}

fn count_setup_failure(ctx: &Ctx, e: SetupError) {
    let c = match e.stage {
        Stage::Tcp => &ctx.c.fail_tcp,
        Stage::Upgrade => &ctx.c.fail_upgrade,
        Stage::Welcome => &ctx.c.fail_welcome,
        Stage::Subscribe => &ctx.c.fail_subscribe,
    };
    c.fetch_add(1, Ordering::Relaxed);
    ctx.errors.add(format!("{:?}: {:#}", e.stage, e.err));
}

/// [`open_session`] within [`SETUP_TIMEOUT`]; a failure is counted (by stage, or as a timeout) and
/// sampled.
async fn open_with_timeout(ctx: &Ctx, spec: &Spec, ip_hint: usize) -> Option<(Ws, Option<i64>)> {
    match tokio::time::timeout(SETUP_TIMEOUT, open_session(ctx, spec, ip_hint)).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            count_setup_failure(ctx, e);
            None
        }
        Err(_) => {
            ctx.c.fail_timeout.fetch_add(1, Ordering::Relaxed);
            ctx.errors
                .add(format!("session setup timed out after {SETUP_TIMEOUT:?}"));
            None
        }
    }
}

/// Close handshake, bounded; returns true when the server completed it.
pub(crate) async fn close_gracefully(ws: &mut Ws) -> bool {
    let fut = async {
        if ws.close(None).await.is_err() {
            return false;
        }
        loop {
            match ws.next().await {
                None => return true,
                Some(Err(WsError::ConnectionClosed)) => return true,
                Some(Err(_)) => return false,
                Some(Ok(_)) => continue,
            }
        }
    };
    tokio::time::timeout(CLOSE_TIMEOUT, fut)
        .await
        .unwrap_or(false)
}

async fn maybe_tick(iv: &mut Option<Interval>) {
    match iv {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

// ---------------------------------------------------------------------------
// idle / fanout session

struct SeqCheck {
    last: Option<i64>,
}

impl SeqCheck {
    /// Records `seq`; false for an immediate duplicate (same seq as the last one).
    fn see(&mut self, seq: i64, c: &Counters) -> bool {
        match self.last {
            None => self.last = Some(seq),
            Some(last) if seq == last => {
                c.seq_duplicates.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            Some(last) if seq < last => {
                c.seq_out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            Some(last) => {
                if seq > last + 1 {
                    c.seq_missing
                        .fetch_add((seq - last - 1) as u64, Ordering::Relaxed);
                }
                self.last = Some(seq);
            }
        }
        true
    }
}

/// One idle or fanout session: opens and subscribes, then (a sender, during the window) sends
/// stamped messages every period while checking and timing what its room delivers.
async fn session_task(ctx: Arc<Ctx>, spec: Spec, mut phase_rx: watch::Receiver<Phase>) {
    let Some((mut ws, last_seq)) = ctx.open_subscribed(&spec, &phase_rx).await else {
        return;
    };
    let mut seq = SeqCheck { last: last_seq };
    let mut lat = LocalBatch::new(ctx.delivery_latency.clone());
    let mut send_iv: Option<Interval> = None;
    let mut phase = *phase_rx.borrow_and_update();
    let mut n: u64 = 0;
    let mut graceful = false;

    loop {
        if phase == Phase::Run && send_iv.is_none() {
            if let Some(period) = spec.sender_period {
                let start = tokio::time::Instant::now() + period.mul_f64(spec.phase_offset);
                let mut iv = tokio::time::interval_at(start, period);
                iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
                send_iv = Some(iv);
            }
        }
        if phase >= Phase::Drain {
            send_iv = None;
        }
        if phase >= Phase::Stop {
            graceful = true;
            break;
        }
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                phase = if changed.is_err() { Phase::Stop } else { *phase_rx.borrow_and_update() };
            }
            _ = maybe_tick(&mut send_iv) => {
                n += 1;
                if !send_stamped(&ctx, &spec, &mut ws, n).await {
                    break;
                }
            }
            msg = ws.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        handle_frame(&ctx, &spec, t.as_str(), phase, &mut seq, &mut lat);
                    }
                    other => {
                        if ctx.session_read_ended(other) {
                            break;
                        }
                    }
                }
            }
        }
    }
    ctx.session_over(&spec, ws, &mut lat, graceful).await;
}

/// Sends the session's `n`th message, stamped with the time; false (the session dropped)
/// when the send failed.
async fn send_stamped(ctx: &Ctx, spec: &Spec, ws: &mut Ws, n: u64) -> bool {
    let content = format!(
        r#"{{"t":{},"u":{},"n":{}}}"#,
        unix_nanos(),
        spec.user_idx,
        n
    );
    let frame = json!({
        "type": "send",
        "id": format!("m{n}"),
        "chat_id": &*spec.chat_id,
        "content": content,
    })
    .to_string();
    if let Err(e) = ws.send(Message::text(frame)).await {
        ctx.c.dropped.fetch_add(1, Ordering::Relaxed);
        ctx.errors.add(format!("send failed: {e}"));
        return false;
    }
    ctx.c.sent.fetch_add(1, Ordering::Relaxed);
    true
}

fn handle_frame(
    ctx: &Ctx,
    spec: &Spec,
    text: &str,
    phase: Phase,
    seq: &mut SeqCheck,
    lat: &mut LocalBatch,
) {
    let now = unix_nanos();
    let f: InFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(_) => {
            ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let measuring = matches!(phase, Phase::Run | Phase::Drain);
    match f.kind.as_ref() {
        "message" => {
            let body = f
                .message
                .and_then(|r| serde_json::from_str::<MsgBody>(r.get()).ok());
            let Some(m) = body else {
                ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if f.chat_id.as_deref().is_some_and(|c| c != &*spec.chat_id) {
                ctx.c.foreign_messages.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let fresh = seq.see(m.seq, &ctx.c);
            match serde_json::from_str::<Stamp>(&m.content) {
                Ok(st) if measuring && fresh => {
                    ctx.c.delivered.fetch_add(1, Ordering::Relaxed);
                    lat.record(now.saturating_sub(st.t) / 1_000);
                }
                Ok(_) => {}
                Err(_) => {
                    ctx.c.foreign_messages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        "ack" => {
            ctx.c.acked.fetch_add(1, Ordering::Relaxed);
            ctx.room_acks[spec.room].fetch_add(1, Ordering::Relaxed);
        }
        "error" => {
            ctx.c.error_frames.fetch_add(1, Ordering::Relaxed);
            if f.code.as_deref() == Some("rate_limited") {
                ctx.c.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            ctx.errors.add(format!("error frame: {text:.300}"));
        }
        _ => {
            ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------
// churn worker

async fn churn_worker(
    ctx: Arc<Ctx>,
    spec: Spec,
    worker: usize,
    workers: usize,
    stop: watch::Receiver<Phase>,
) {
    let mut cycle = 0usize;
    while *stop.borrow() < Phase::Stop {
        let t0 = Instant::now();
        // Rotate source addresses across cycles and workers.
        let hint = worker.wrapping_add(cycle.wrapping_mul(workers));
        cycle += 1;
        match open_with_timeout(&ctx, &spec, hint).await {
            Some((mut ws, _)) => {
                let setup = t0.elapsed().as_micros() as u64;
                let clean = close_gracefully(&mut ws).await;
                drop(ws);
                if !clean {
                    ctx.c.close_unclean.fetch_add(1, Ordering::Relaxed);
                }
                if *stop.borrow() >= Phase::Stop {
                    break;
                }
                ctx.setup_latency.record_many(&[setup]);
                ctx.cycle_latency
                    .record_many(&[t0.elapsed().as_micros() as u64]);
                ctx.c.cycles_ok.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                ctx.c.cycles_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Messages per second each sender sends (fanout with a positive rate).
pub(crate) fn per_sender_rate(cfg: &WsConfig, plan: &Plan) -> Option<f64> {
    let total: usize = plan
        .rooms
        .iter()
        .map(|r| r.members.len().min(cfg.senders))
        .sum();
    (cfg.scenario == WsScenario::Fanout && cfg.rate > 0.0 && total > 0)
        .then(|| cfg.rate / total as f64)
}

fn specs_for(
    cfg: &WsConfig,
    plan: &Plan,
    indices: impl Iterator<Item = usize>,
) -> Result<Vec<Spec>> {
    // Senders: the first `--senders` members of every room; the total rate is
    // spread evenly over all senders of the plan (all processes together).
    let senders_per_room = cfg.senders;
    let period = per_sender_rate(cfg, plan).map(|per| Duration::from_secs_f64(1.0 / per));
    let chat_ids: Vec<Arc<str>> = plan
        .rooms
        .iter()
        .map(|r| Arc::from(r.chat_id.as_str()))
        .collect();
    let mut out = Vec::new();
    for idx in indices {
        let u = plan
            .users
            .get(idx)
            .with_context(|| format!("plan has no user {idx}"))?;
        let sender = plan.position_in_room(idx) < senders_per_room;
        out.push(Spec {
            user_idx: idx,
            user: u.id,
            email: Arc::from(u.email.as_str()),
            room: u.room,
            chat_id: chat_ids[u.room].clone(),
            sender_period: if sender { period } else { None },
            // Golden-ratio spread of send phases so senders do not tick together.
            phase_offset: (idx as f64 * 0.618_033_988_75).fract(),
        });
    }
    Ok(out)
}

/// Waits until every owned session finished setup or `--setup-timeout` passed, showing progress;
/// notes a timeout in the summary. Returns the seconds it took.
pub(crate) async fn await_setup(
    ctx: &Ctx,
    cfg: &WsConfig,
    owned: u64,
    progress: &mut Progress,
    summary: &mut Summary,
) -> f64 {
    progress.phase("connect", owned, false);
    let t_setup = Instant::now();
    let setup_deadline = t_setup + cfg.setup_timeout;
    let c = &ctx.c;
    let fut = async {
        while c.setup_done.load(Ordering::Relaxed) < owned && Instant::now() < setup_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    with_ticker(progress, fut, || {
        let d = c.setup_done.load(Ordering::Relaxed);
        let ok = c.connected.load(Ordering::Relaxed);
        let el = t_setup.elapsed().as_secs_f64().max(1e-3);
        (
            d,
            format!(
                "subscribed {ok} · failed {} · {:.0} sessions/s",
                c.failed_setup(),
                ok as f64 / el
            ),
        )
    })
    .await;
    let setup_secs = t_setup.elapsed().as_secs_f64();
    if c.setup_done.load(Ordering::Relaxed) < owned {
        summary.notes.push(format!(
            "setup timeout: only {} of {owned} sessions finished setup within {:?}",
            c.setup_done.load(Ordering::Relaxed),
            cfg.setup_timeout
        ));
    }
    setup_secs
}

pub(crate) async fn wait_start(cfg: &WsConfig, progress: &mut Progress, summary: &mut Summary) {
    if let Some(at) = cfg.start_at {
        let now = crate::common::unix_secs();
        if at > now {
            progress.phase("waiting", at - now, true);
            let t0 = Instant::now();
            with_ticker(progress, crate::common::sleep_until_unix(at), || {
                (
                    t0.elapsed().as_secs(),
                    format!("synchronised start at unix time {at}"),
                )
            })
            .await;
        } else {
            summary.notes.push(format!(
                "--start-at {at} had already passed when setup finished"
            ));
        }
    }
}

/// Time the sessions get to close gracefully at the end of a run.
pub(crate) const SESSIONS_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for the tasks in order until `deadline`, telling `joined` how many have ended so far,
/// then aborts whatever is left.
pub(crate) async fn join_or_abort(
    handles: &mut [JoinHandle<()>],
    deadline: tokio::time::Instant,
    mut joined: impl FnMut(u64),
) {
    let mut n = 0u64;
    for h in handles.iter_mut() {
        if tokio::time::timeout_at(deadline, &mut *h).await.is_err() {
            break;
        }
        n += 1;
        joined(n);
    }
    for h in handles.iter() {
        h.abort();
    }
}

/// The summary's facts about the plan and this process's share of its sessions.
pub(crate) fn plan_checks(summary: &mut Summary, plan: &Plan, owned: u64) {
    summary
        .checks
        .insert("plan_sessions".into(), plan.users.len().into());
    summary
        .checks
        .insert("plan_rooms".into(), plan.rooms.len().into());
    summary.checks.insert("sessions_owned".into(), owned.into());
}

/// The `idle` and `fanout` scenarios: every owned session subscribes, the senders send during
/// the window (fanout), then everything closes.
pub(crate) async fn run_sessions(
    cfg: &WsConfig,
    plan: &Plan,
    ctx: Arc<Ctx>,
    nofile: u64,
    progress: &mut Progress,
    summary: &mut Summary,
) -> Result<()> {
    let k = cfg.process_count as usize;
    let i = cfg.process_index as usize;
    let specs = specs_for(cfg, plan, (0..plan.users.len()).filter(|x| x % k == i))?;
    let owned = specs.len() as u64;
    if owned + 128 > nofile {
        bail!(
            "this process would hold {owned} sessions but may open only {nofile} files: use more processes (--process-count)"
        );
    }
    let n_senders = specs.iter().filter(|s| s.sender_period.is_some()).count();
    warn_sender_rate(&specs, progress, summary);
    plan_checks(summary, plan, owned);
    summary
        .checks
        .insert("senders_owned".into(), n_senders.into());

    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let mut handles = Vec::with_capacity(specs.len());
    for s in specs {
        handles.push(tokio::spawn(session_task(ctx.clone(), s, phase_rx.clone())));
    }

    // Setup: connect + subscribe everything we own (bounded by --setup-timeout).
    let setup_secs = await_setup(&ctx, cfg, owned, progress, summary).await;
    let connected_at_start = ctx.c.connected.load(Ordering::Relaxed);
    wait_start(cfg, progress, summary).await;

    // Measurement window.
    let _ = phase_tx.send(Phase::Run);
    let t_run = Instant::now();
    watch_window(cfg, &ctx, connected_at_start, t_run, progress).await;
    let window = t_run.elapsed();
    let alive_at_end = ctx.c.alive.load(Ordering::Relaxed);
    if cfg.scenario == WsScenario::Fanout && !cfg.drain.is_zero() {
        let _ = phase_tx.send(Phase::Drain);
        drain(cfg, &ctx, progress).await;
    }
    // Expected deliveries (meaningful in single-process runs only).
    let expected = ctx.expected(&ctx.room_acks);

    let _ = phase_tx.send(Phase::Stop);
    progress.phase("closing", owned, false);
    let close_deadline = tokio::time::Instant::now() + SESSIONS_CLOSE_TIMEOUT;
    join_or_abort(&mut handles, close_deadline, |closed| {
        if closed.is_multiple_of(256) {
            progress.update(closed, String::new());
        }
    })
    .await;

    let run = SessionsRun {
        owned,
        alive_at_end,
        window,
        setup_secs,
        connected_at_start,
        expected,
    };
    record_sessions(cfg, &ctx, &run, summary);
    Ok(())
}

/// Warns (on screen and in the notes) when the senders would exceed the server's rate limit.
fn warn_sender_rate(specs: &[Spec], progress: &mut Progress, summary: &mut Summary) {
    if let Some(p) = specs.iter().find_map(|s| s.sender_period) {
        let per = 1.0 / p.as_secs_f64();
        if per > SERVER_RATE_LIMIT {
            let msg = format!(
                "per-sender rate {per:.1}/s exceeds the server's {SERVER_RATE_LIMIT}/s session limit: expect rate_limited errors; add rooms or --senders"
            );
            progress.println(&format!("warning: {msg}"));
            summary.notes.push(msg);
        }
    }
}

/// Waits out the measurement window started at `t_run`, showing the sessions alive (idle) or
/// what is sent and delivered (fanout).
async fn watch_window(
    cfg: &WsConfig,
    ctx: &Ctx,
    connected_at_start: u64,
    t_run: Instant,
    progress: &mut Progress,
) {
    let secs = cfg.duration.as_secs().max(1);
    progress.phase(cfg.scenario.name(), secs, true);
    let scenario = cfg.scenario;
    let c = &ctx.c;
    let fut = tokio::time::sleep(cfg.duration);
    let mut last = (Instant::now(), 0u64);
    with_ticker(progress, fut, || {
        let el = t_run.elapsed().as_secs();
        let alive = c.alive.load(Ordering::Relaxed);
        let msg = if scenario == WsScenario::Fanout {
            fanout_status(ctx, alive, &mut last)
        } else {
            format!(
                "alive {alive}/{connected_at_start} · closed by server {} · dropped {}",
                c.closed_by_server.load(Ordering::Relaxed),
                c.dropped.load(Ordering::Relaxed)
            )
        };
        (el, msg)
    })
    .await;
}

/// The fanout status line; `last` holds the time and the deliveries of the previous one.
fn fanout_status(ctx: &Ctx, alive: u64, last: &mut (Instant, u64)) -> String {
    let c = &ctx.c;
    let d = c.delivered.load(Ordering::Relaxed);
    let now = Instant::now();
    let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
    let rate = (d.saturating_sub(last.1)) as f64 / dt;
    *last = (now, d);
    let (p50, p99) = ctx.delivery_latency.p50_p99();
    format!(
        "alive {alive} · sent {} acked {} · delivered {d} ({rate:.0}/s) · latency p50 {} p99 {} · seq dup/ooo/missing {}/{}/{} · errors {}",
        c.sent.load(Ordering::Relaxed),
        c.acked.load(Ordering::Relaxed),
        crate::stats::fmt_us(p50 as f64),
        crate::stats::fmt_us(p99 as f64),
        c.seq_duplicates.load(Ordering::Relaxed),
        c.seq_out_of_order.load(Ordering::Relaxed),
        c.seq_missing.load(Ordering::Relaxed),
        c.error_frames.load(Ordering::Relaxed),
    )
}

/// Fanout: keeps receiving for `--drain` after the senders stopped.
async fn drain(cfg: &WsConfig, ctx: &Ctx, progress: &mut Progress) {
    progress.phase("drain", cfg.drain.as_secs().max(1), true);
    let t = Instant::now();
    let c = &ctx.c;
    with_ticker(progress, tokio::time::sleep(cfg.drain), || {
        (
            t.elapsed().as_secs(),
            format!("delivered {}", c.delivered.load(Ordering::Relaxed)),
        )
    })
    .await;
}

/// What an idle or fanout run measured besides the shared counters, for its summary.
struct SessionsRun {
    owned: u64,
    alive_at_end: u64,
    /// Length of the measurement window.
    window: Duration,
    setup_secs: f64,
    /// Sessions subscribed when the setup ended.
    connected_at_start: u64,
    /// Deliveries expected from the acknowledged messages.
    expected: u64,
}

/// The summary of an idle or fanout run.
fn record_sessions(cfg: &WsConfig, ctx: &Ctx, run: &SessionsRun, summary: &mut Summary) {
    let c = &ctx.c;
    summary.duration_secs = run.window.as_secs_f64();
    ctx.record_sessions(summary, run.owned, run.alive_at_end);
    summary.problem_if_nonzero("closed_by_server", "sessions closed by the server");
    summary.problem_if_nonzero("dropped", "sessions dropped without a close frame");
    if c.connected.load(Ordering::Relaxed) == 0 {
        summary.nothing_worked = true;
        summary.problems.push("no session could subscribe".into());
    }
    summary.checks.insert(
        "setup_secs".into(),
        json!((run.setup_secs * 100.0).round() / 100.0),
    );
    summary.checks.insert(
        "setup_sessions_per_sec".into(),
        json!(((run.connected_at_start as f64 / run.setup_secs.max(1e-3)) * 10.0).round() / 10.0),
    );
    let setup_h = ctx.setup_latency.snapshot();
    if cfg.scenario == WsScenario::Fanout {
        record_fanout(cfg, ctx, run.expected, &setup_h, summary);
    } else {
        summary.latency(
            "setup",
            "session setup (connect → subscribed)",
            &setup_h,
            true,
        );
    }
}

/// The fanout part of the summary: messages, seq checks, delivery against `expected`.
fn record_fanout(
    cfg: &WsConfig,
    ctx: &Ctx,
    expected: u64,
    setup_h: &Histogram<u64>,
    summary: &mut Summary,
) {
    let c = &ctx.c;
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    summary.counter("sent", ld(&c.sent));
    summary.counter("acked", ld(&c.acked));
    summary.counter("delivered", ld(&c.delivered));
    summary.counter("foreign_messages", ld(&c.foreign_messages));
    summary.counter("seq_duplicates", ld(&c.seq_duplicates));
    summary.counter("seq_out_of_order", ld(&c.seq_out_of_order));
    summary.counter("seq_missing", ld(&c.seq_missing));
    summary.counter("other_frames", ld(&c.other_frames));
    summary.rate("delivered_per_sec", "delivered");
    summary.rate("sent_per_sec", "sent");
    summary.rate("acked_per_sec", "acked");
    let seq_ok = ld(&c.seq_duplicates) == 0 && ld(&c.seq_out_of_order) == 0;
    summary.checks.insert("seq_order_ok".into(), json!(seq_ok));
    if cfg.process_count == 1 {
        summary
            .checks
            .insert("expected_deliveries".into(), json!(expected));
        let ratio = if expected > 0 {
            ld(&c.delivered) as f64 / expected as f64
        } else {
            0.0
        };
        summary.checks.insert(
            "delivery_ratio".into(),
            json!((ratio * 10_000.0).round() / 10_000.0),
        );
    }
    summary.latency(
        "delivery",
        "send-to-receive latency",
        &ctx.delivery_latency.snapshot(),
        true,
    );
    summary.latency(
        "setup",
        "session setup (connect → subscribed)",
        setup_h,
        false,
    );
    summary.problem_if_nonzero("seq_duplicates", "duplicate messages (same seq twice)");
    summary.problem_if_nonzero("seq_out_of_order", "messages out of seq order");
    summary.problem_if_nonzero("seq_missing", "seq gaps (missing messages)");
    if cfg.process_count == 1 && expected > 0 && ld(&c.delivered) < expected {
        summary.problems.push(format!(
            "delivered {} of {expected} expected messages",
            ld(&c.delivered)
        ));
    }
    if ld(&c.delivered) == 0 {
        summary.nothing_worked = true;
        summary.problems.push("no message was delivered".into());
    }
}

/// The `churn` scenario: `--concurrency` workers loop connect → subscribe → close for
/// `--duration`.
pub(crate) async fn run_churn(
    cfg: &WsConfig,
    plan: &Plan,
    ctx: Arc<Ctx>,
    nofile: u64,
    progress: &mut Progress,
    summary: &mut Summary,
) -> Result<()> {
    let k = cfg.process_count as usize;
    let i = cfg.process_index as usize;
    let workers = cfg.concurrency.max(1);
    let users = plan.users.len();
    let specs = specs_for(
        cfg,
        plan,
        (0..workers).filter(|w| w % k == i).map(|w| w % users),
    )?;
    let owned = specs.len() as u64;
    if owned * 2 + 128 > nofile {
        bail!("--concurrency {owned} is too high for this process's {nofile} open files");
    }
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let t_run = Instant::now();
    let mut handles = Vec::new();
    let n_specs = specs.len();
    for (w, s) in specs.into_iter().enumerate() {
        handles.push(tokio::spawn(churn_worker(
            ctx.clone(),
            s,
            w,
            n_specs,
            phase_rx.clone(),
        )));
    }
    watch_churn(cfg, &ctx, t_run, progress).await;
    let window = t_run.elapsed();
    let ok_at_end = ctx.c.cycles_ok.load(Ordering::Relaxed);
    let failed_at_end = ctx.c.cycles_failed.load(Ordering::Relaxed);
    let _ = phase_tx.send(Phase::Stop);
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT + CLOSE_TIMEOUT;
    join_or_abort(&mut handles, deadline, |_| {}).await;

    summary.duration_secs = window.as_secs_f64();
    summary.counter("workers_owned", owned);
    summary.counter("sessions", ok_at_end);
    summary.counter("failures", failed_at_end);
    summary.rate("sessions_per_sec", "sessions");
    summary.rate("failures_per_sec", "failures");
    summary.latency(
        "setup",
        "session setup (connect → subscribed)",
        &ctx.setup_latency.snapshot(),
        true,
    );
    summary.latency(
        "cycle",
        "full cycle (connect → close handshake done)",
        &ctx.cycle_latency.snapshot(),
        false,
    );
    summary.problem_if_nonzero("failures", "failed cycles");
    if ok_at_end == 0 {
        summary.nothing_worked = true;
        summary
            .problems
            .push("no session completed: is the server running?".into());
    }
    Ok(())
}

/// Waits out the churn window started at `t_run`, showing the cycle rate.
async fn watch_churn(cfg: &WsConfig, ctx: &Ctx, t_run: Instant, progress: &mut Progress) {
    progress.phase("churn", cfg.duration.as_secs().max(1), true);
    let c = &ctx.c;
    let mut last = (Instant::now(), 0u64);
    with_ticker(progress, tokio::time::sleep(cfg.duration), || {
        let ok = c.cycles_ok.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = ok.saturating_sub(last.1) as f64 / dt;
        last = (now, ok);
        (
            t_run.elapsed().as_secs(),
            format!(
                "sessions {ok} ({rate:.0}/s) · failed {} · unclean closes {}",
                c.cycles_failed.load(Ordering::Relaxed),
                c.close_unclean.load(Ordering::Relaxed)
            ),
        )
    })
    .await;
}
