//! `echo-load ws ai`: AI replies streamed to watchers.
//!
//! `--replies` chats of `--watchers` members (distinct users) are seeded; every member opens a
//! session and subscribes. During the measurement window the owner of each chat sends a
//! WebSocket `prompt`, waits for the reply's `generation_finished` (or failure), and prompts
//! again at once, so about `--replies` replies stream concurrently. The first prompts are
//! spread over `--ramp` seconds. After the window no new prompt is sent and the run waits
//! for the replies in flight to finish.
//!
//! Against `echo-load openai-mock` every token's delta carries the time the provider wrote it
//! (`"<unix_nanos>|"`), so each watcher records provider-emit → watcher-receive latency. The
//! prompter records time to first token (prompt sent → `token` index 0). With
//! `--direct-ttft-samples` the same is measured calling the mock directly (`--mock-url`), for
//! the server's share of TTFT. Every watcher checks its token stream: indexes 0..N-1 in order,
//! N = `usage.completion_tokens` (and `--tokens` when given), concatenated deltas equal to
//! the stored reply, and the same stream as the other watchers of the reply in this process.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{unix_nanos, Target};
use crate::plan::Plan;
use crate::progress::{with_ticker, Progress};
use crate::stats::{fmt_us, svg_chart, LatencySink, LatencyStats, LocalBatch, Summary};
use crate::ws::{await_setup, open_with_timeout, wait_start, AiOpts, Ctx, Phase, Spec, WsConfig};

#[derive(Default)]
struct AiCounters {
    prompts_sent: AtomicU64,
    prompts_acked: AtomicU64,
    prompt_errors: AtomicU64,
    prompt_rate_limited: AtomicU64,
    prompt_timeouts: AtomicU64,
    in_flight: AtomicU64,
    generations_started: AtomicU64,
    generations_finished: AtomicU64,
    generations_failed: AtomicU64,
    finish_not_stop: AtomicU64,
    tokens_received: AtomicU64,
    /// Tokens of the streams that ended with `generation_finished` (what `expected_tokens` counts).
    tokens_in_finished: AtomicU64,
    tokens_unstamped: AtomicU64,
    tokens_unknown_generation: AtomicU64,
    index_duplicates: AtomicU64,
    index_out_of_order: AtomicU64,
    index_missing: AtomicU64,
    snapshots: AtomicU64,
    watcher_finished: AtomicU64,
    watcher_failed: AtomicU64,
    watcher_streams_ok: AtomicU64,
    watcher_streams_bad: AtomicU64,
    watcher_count_mismatch: AtomicU64,
    watcher_expected_mismatch: AtomicU64,
    watcher_text_mismatch: AtomicU64,
    watchers_disagree: AtomicU64,
    direct_ok: AtomicU64,
    direct_failed: AtomicU64,
    direct_tokens: AtomicU64,
}

/// What the watchers of one generation saw (first finished watcher sets the reference).
struct GenAgg {
    hash: u64,
    count: u64,
}

struct AiShared {
    ctx: Arc<Ctx>,
    opts: AiOpts,
    c: AiCounters,
    token_latency: Arc<LatencySink>,
    ttft: Arc<LatencySink>,
    started_latency: Arc<LatencySink>,
    direct_ttft: Arc<LatencySink>,
    direct_token: Arc<LatencySink>,
    gens: Mutex<HashMap<String, GenAgg>>,
    /// Per room: generations finished (seen by its prompter) and their tokens.
    room_gens: Vec<AtomicU64>,
    room_tokens: Vec<AtomicU64>,
    prompt_timeout: Duration,
}

/// A string borrowed from the frame when it has no escapes (`Option<Cow<str>>` alone
/// always allocates).
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Deserialize)]
struct AiFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(default, borrow)]
    chat_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    generation_id: Option<Text<'a>>,
    #[serde(default)]
    index: Option<i64>,
    #[serde(default, borrow)]
    delta: Option<Text<'a>>,
    #[serde(default, borrow)]
    code: Option<Text<'a>>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
}

#[derive(Deserialize)]
struct UsageBody {
    #[serde(default)]
    completion_tokens: Option<u64>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `"<unix_nanos>|…"` → nanos.
fn stamp_of(delta: &str) -> Option<u64> {
    let (n, _) = delta.split_once('|')?;
    n.parse().ok()
}

/// One watcher's view of one generation.
struct Stream {
    next: u64,
    count: u64,
    hash: u64,
    bad: bool,
}

impl Stream {
    fn new() -> Self {
        Self {
            next: 0,
            count: 0,
            hash: FNV_OFFSET,
            bad: false,
        }
    }
}

/// The prompter's reply in flight.
struct Pending {
    id: String,
    sent_at: Instant,
    deadline: tokio::time::Instant,
    started: bool,
    first_token: bool,
}

/// What a frame means for the prompter.
enum Outcome {
    Nothing,
    /// The reply ended (finished or failed): prompt again.
    Ended,
    /// The prompt itself was refused.
    Refused,
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending::<()>().await,
    }
}

async fn ai_session(
    sh: Arc<AiShared>,
    spec: Spec,
    prompter: Option<Duration>,
    mut phase_rx: watch::Receiver<Phase>,
) {
    let ctx = &sh.ctx;
    let permit = match ctx.connect_sem.acquire().await {
        Ok(p) => p,
        Err(_) => return,
    };
    if *phase_rx.borrow() >= Phase::Stop {
        return;
    }
    let t0 = Instant::now();
    let opened = open_with_timeout(ctx, &spec, spec.user_idx).await;
    drop(permit);
    let Some((mut ws, _)) = opened else {
        ctx.c.setup_done.fetch_add(1, Ordering::Relaxed);
        return;
    };
    ctx.setup_latency
        .record_many(&[t0.elapsed().as_micros() as u64]);
    ctx.c.connected.fetch_add(1, Ordering::Relaxed);
    ctx.c.alive.fetch_add(1, Ordering::Relaxed);
    ctx.room_subscribed[spec.room].fetch_add(1, Ordering::Relaxed);
    ctx.c.setup_done.fetch_add(1, Ordering::Relaxed);

    let mut lat = LocalBatch::new(sh.token_latency.clone());
    let mut streams: HashMap<String, Stream> = HashMap::new();
    let mut pending: Option<Pending> = None;
    let mut next_at: Option<tokio::time::Instant> = None;
    let mut scheduled = false;
    let mut n = 0u64;
    let mut phase = *phase_rx.borrow_and_update();
    let mut graceful = false;

    loop {
        if phase == Phase::Run && !scheduled {
            scheduled = true;
            if let Some(offset) = prompter {
                next_at = Some(tokio::time::Instant::now() + offset);
            }
        }
        if phase >= Phase::Drain {
            next_at = None;
        }
        if phase >= Phase::Stop {
            graceful = true;
            break;
        }
        let deadline = pending.as_ref().map(|p| p.deadline);
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                phase = if changed.is_err() { Phase::Stop } else { *phase_rx.borrow_and_update() };
            }
            _ = sleep_opt(next_at) => {
                next_at = None;
                n += 1;
                let id = format!("p{n}");
                let frame = json!({
                    "type": "prompt",
                    "id": id,
                    "chat_id": &*spec.chat_id,
                    "content": format!("load prompt {n} from user {}", spec.user_idx),
                })
                .to_string();
                let sent_at = Instant::now();
                if let Err(e) = ws.send(Message::text(frame)).await {
                    ctx.c.dropped.fetch_add(1, Ordering::Relaxed);
                    ctx.errors.add(format!("prompt send failed: {e}"));
                    break;
                }
                sh.c.prompts_sent.fetch_add(1, Ordering::Relaxed);
                sh.c.in_flight.fetch_add(1, Ordering::Relaxed);
                pending = Some(Pending {
                    id,
                    sent_at,
                    deadline: tokio::time::Instant::now() + sh.prompt_timeout,
                    started: false,
                    first_token: false,
                });
            }
            _ = sleep_opt(deadline) => {
                sh.c.prompt_timeouts.fetch_add(1, Ordering::Relaxed);
                ctx.errors.add(format!("no generation_finished within {:?} of a prompt", sh.prompt_timeout));
                pending = None;
                sh.c.in_flight.fetch_sub(1, Ordering::Relaxed);
                if phase == Phase::Run {
                    next_at = Some(tokio::time::Instant::now());
                }
            }
            msg = ws.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let out = handle_frame(&sh, &spec, t.as_str(), &mut streams, &mut pending, &mut lat);
                        match out {
                            Outcome::Nothing => {}
                            Outcome::Ended | Outcome::Refused => {
                                if pending.take().is_some() {
                                    sh.c.in_flight.fetch_sub(1, Ordering::Relaxed);
                                }
                                if phase == Phase::Run && prompter.is_some() {
                                    let pause = if matches!(out, Outcome::Refused) {
                                        Duration::from_millis(500)
                                    } else {
                                        Duration::ZERO
                                    };
                                    next_at = Some(tokio::time::Instant::now() + pause);
                                }
                            }
                        }
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
    if pending.take().is_some() {
        sh.c.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
    ctx.session_over(&spec, ws, &mut lat, graceful).await;
}

fn handle_frame(
    sh: &AiShared,
    spec: &Spec,
    text: &str,
    streams: &mut HashMap<String, Stream>,
    pending: &mut Option<Pending>,
    lat: &mut LocalBatch,
) -> Outcome {
    let now_ns = unix_nanos();
    let ctx = &sh.ctx;
    let c = &sh.c;
    let f: AiFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(_) => {
            ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
            return Outcome::Nothing;
        }
    };
    if f.chat_id.as_deref().is_some_and(|id| id != &*spec.chat_id) {
        ctx.c.foreign_messages.fetch_add(1, Ordering::Relaxed);
        return Outcome::Nothing;
    }
    let gen = f.generation_id.as_deref().unwrap_or("");
    match &*f.kind {
        "token" => {
            c.tokens_received.fetch_add(1, Ordering::Relaxed);
            let index = f.index.unwrap_or(-1);
            let delta = f.delta.as_deref().unwrap_or("");
            match stamp_of(delta) {
                Some(ns) => lat.record(now_ns.saturating_sub(ns) / 1_000),
                None => {
                    c.tokens_unstamped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if index == 0 {
                if let Some(p) = pending.as_mut().filter(|p| !p.first_token) {
                    p.first_token = true;
                    sh.ttft
                        .record_many(&[p.sent_at.elapsed().as_micros() as u64]);
                }
            }
            let st = match streams.get_mut(gen) {
                Some(s) => s,
                None if index == 0 => streams.entry(gen.to_string()).or_insert_with(Stream::new),
                None => {
                    // A token of a generation this watcher never saw start.
                    c.tokens_unknown_generation.fetch_add(1, Ordering::Relaxed);
                    let mut s = Stream::new();
                    s.bad = true;
                    streams.entry(gen.to_string()).or_insert(s)
                }
            };
            let index = index.max(0) as u64;
            if index == st.next {
                st.next += 1;
            } else if index > st.next {
                c.index_missing
                    .fetch_add(index - st.next, Ordering::Relaxed);
                st.bad = true;
                st.next = index + 1;
            } else {
                if index + 1 == st.next {
                    c.index_duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.index_out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                st.bad = true;
                return Outcome::Nothing;
            }
            st.count += 1;
            st.hash = fnv(st.hash, delta.as_bytes());
            Outcome::Nothing
        }
        "generation_started" => {
            streams.entry(gen.to_string()).or_insert_with(Stream::new);
            if let Some(p) = pending.as_mut().filter(|p| !p.started) {
                p.started = true;
                sh.started_latency
                    .record_many(&[p.sent_at.elapsed().as_micros() as u64]);
                c.generations_started.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Nothing
        }
        "generation_snapshot" => {
            c.snapshots.fetch_add(1, Ordering::Relaxed);
            // Joined mid-reply: the stream is not checkable from the start.
            let mut s = Stream::new();
            s.bad = true;
            s.next = f.index.unwrap_or(-1).saturating_add(1).max(0) as u64;
            streams.insert(gen.to_string(), s);
            Outcome::Nothing
        }
        "generation_finished" => {
            c.watcher_finished.fetch_add(1, Ordering::Relaxed);
            let st = streams.remove(gen).unwrap_or_else(|| {
                let mut s = Stream::new();
                s.bad = true;
                s
            });
            c.tokens_in_finished.fetch_add(st.count, Ordering::Relaxed);
            let usage_tokens = f
                .usage
                .and_then(|u| serde_json::from_str::<UsageBody>(u.get()).ok())
                .and_then(|u| u.completion_tokens);
            let stored = f
                .message
                .and_then(|m| serde_json::from_str::<Stored>(m.get()).ok());
            let mut ok = !st.bad;
            if usage_tokens != Some(st.count) {
                c.watcher_count_mismatch.fetch_add(1, Ordering::Relaxed);
                ok = false;
            }
            if let Some(expect) = sh.opts.tokens {
                if st.count != expect as u64 {
                    c.watcher_expected_mismatch.fetch_add(1, Ordering::Relaxed);
                    ok = false;
                }
            }
            let text_ok = stored
                .as_ref()
                .is_some_and(|m| fnv(FNV_OFFSET, m.content.as_bytes()) == st.hash);
            if !text_ok {
                c.watcher_text_mismatch.fetch_add(1, Ordering::Relaxed);
                ok = false;
            }
            if ok {
                c.watcher_streams_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                c.watcher_streams_bad.fetch_add(1, Ordering::Relaxed);
                ctx.errors.add(format!(
                    "watcher stream failed a check: {} tokens, usage {:?}, expected {:?}, text matches {text_ok}",
                    st.count, usage_tokens, sh.opts.tokens
                ));
            }
            if let Ok(mut g) = sh.gens.lock() {
                match g.get(gen) {
                    None => {
                        g.insert(
                            gen.to_string(),
                            GenAgg {
                                hash: st.hash,
                                count: st.count,
                            },
                        );
                    }
                    Some(a) if a.hash != st.hash || a.count != st.count => {
                        c.watchers_disagree.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                }
            }
            if pending.is_some() {
                c.generations_finished.fetch_add(1, Ordering::Relaxed);
                sh.room_gens[spec.room].fetch_add(1, Ordering::Relaxed);
                sh.room_tokens[spec.room].fetch_add(usage_tokens.unwrap_or(0), Ordering::Relaxed);
                if f.finish_reason.as_deref() != Some("stop") {
                    c.finish_not_stop.fetch_add(1, Ordering::Relaxed);
                    ctx.errors.add(format!(
                        "generation finished with {:?}",
                        f.finish_reason.as_deref()
                    ));
                }
                return Outcome::Ended;
            }
            Outcome::Nothing
        }
        "generation_failed" => {
            c.watcher_failed.fetch_add(1, Ordering::Relaxed);
            streams.remove(gen);
            if pending.is_some() {
                c.generations_failed.fetch_add(1, Ordering::Relaxed);
                ctx.errors.add(format!("generation_failed: {text:.300}"));
                return Outcome::Ended;
            }
            Outcome::Nothing
        }
        "ack" => {
            if pending
                .as_ref()
                .is_some_and(|p| f.id.as_deref() == Some(p.id.as_str()))
            {
                c.prompts_acked.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Nothing
        }
        "error" => {
            ctx.c.error_frames.fetch_add(1, Ordering::Relaxed);
            if f.code.as_deref() == Some("rate_limited") {
                ctx.c.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            ctx.errors.add(format!("error frame: {text:.300}"));
            let ours = pending
                .as_ref()
                .is_some_and(|p| f.id.as_deref() == Some(p.id.as_str()));
            if ours {
                c.prompt_errors.fetch_add(1, Ordering::Relaxed);
                if f.code.as_deref() == Some("rate_limited") {
                    c.prompt_rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                return Outcome::Refused;
            }
            Outcome::Nothing
        }
        _ => {
            ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
            Outcome::Nothing
        }
    }
}

// ---------------------------------------------------------------------------
// Direct calls to the mock (TTFT baseline)

async fn direct_sample(
    sh: &AiShared,
    client: &Client<HttpConnector, Full<Bytes>>,
    mock: &Target,
    n: usize,
) -> Result<()> {
    let body = json!({
        "model": "direct",
        "messages": [{"role": "user", "content": format!("direct sample {n}")}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1/chat/completions", mock.base))
        .header(HOST, HeaderValue::from_str(&mock.authority)?)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let t0 = Instant::now();
    let resp = client.request(req).await.context("direct request")?;
    if !resp.status().is_success() {
        bail!("direct request: HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    let mut tokens = 0u64;
    let mut done = false;
    let mut lat = LocalBatch::new(sh.direct_token.clone());
    while let Some(frame) = body.frame().await {
        let frame = frame.context("direct stream")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now_ns = unix_nanos();
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            let line = String::from_utf8_lossy(&event);
            let Some(payload) = line.trim().strip_prefix("data: ") else {
                continue;
            };
            if payload == "[DONE]" {
                done = true;
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(payload).context("direct chunk")?;
            let content = v
                .pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
                .unwrap_or("");
            if content.is_empty() {
                continue;
            }
            if first {
                first = false;
                sh.direct_ttft
                    .record_many(&[t0.elapsed().as_micros() as u64]);
            }
            tokens += 1;
            if let Some(ns) = stamp_of(content) {
                lat.record(now_ns.saturating_sub(ns) / 1_000);
            }
        }
    }
    sh.c.direct_tokens.fetch_add(tokens, Ordering::Relaxed);
    if !done {
        bail!("direct stream ended without [DONE]");
    }
    if let Some(expect) = sh.opts.tokens {
        if tokens != expect as u64 {
            bail!("direct stream had {tokens} tokens, expected {expect}");
        }
    }
    Ok(())
}

/// `samples` direct calls evenly spread over the window, each in its own task.
async fn run_direct(sh: Arc<AiShared>, mock: Target, samples: usize, window: Duration) {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(conn);
    let step = window.div_f64(samples.max(1) as f64);
    let start = tokio::time::Instant::now() + step / 2;
    let mut tasks = Vec::with_capacity(samples);
    for i in 0..samples {
        tokio::time::sleep_until(start + step.mul_f64(i as f64)).await;
        let sh = sh.clone();
        let client = client.clone();
        let mock = mock.clone();
        tasks.push(tokio::spawn(async move {
            let limit = sh.prompt_timeout;
            let r = tokio::time::timeout(limit, direct_sample(&sh, &client, &mock, i)).await;
            match r {
                Ok(Ok(())) => sh.c.direct_ok.fetch_add(1, Ordering::Relaxed),
                Ok(Err(e)) => {
                    sh.ctx.errors.add(format!("direct call to the mock: {e:#}"));
                    sh.c.direct_failed.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => {
                    sh.ctx.errors.add("direct call to the mock timed out");
                    sh.c.direct_failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

// ---------------------------------------------------------------------------
// driver

fn diff_stats(server: &LatencyStats, direct: &LatencyStats) -> serde_json::Value {
    let d = |a: u64, b: u64| a as i64 - b as i64;
    json!({
        "p50": d(server.p50, direct.p50),
        "p90": d(server.p90, direct.p90),
        "p99": d(server.p99, direct.p99),
        "max": d(server.max, direct.max),
        "mean": ((server.mean - direct.mean) * 10.0).round() / 10.0,
    })
}

pub async fn run(
    cfg: &WsConfig,
    plan: &Plan,
    ctx: Arc<Ctx>,
    nofile: u64,
    progress: &mut Progress,
    summary: &mut Summary,
) -> Result<()> {
    let opts = cfg.ai.clone();
    let k = cfg.process_count as usize;
    let i = cfg.process_index as usize;
    let owned_idx: Vec<usize> = (0..plan.users.len()).filter(|x| x % k == i).collect();
    let owned = owned_idx.len() as u64;
    if owned + 256 > nofile {
        bail!(
            "this process would hold {owned} sessions but may open only {nofile} files: use more processes (--process-count)"
        );
    }
    if plan.rooms.len() != opts.replies || plan.room_size != opts.watchers {
        summary.notes.push(format!(
            "the plan has {} chats of {} (not --replies {} × --watchers {}): the plan wins",
            plan.rooms.len(),
            plan.room_size,
            opts.replies,
            opts.watchers
        ));
    }
    let reply_secs = opts.tokens.unwrap_or(200) as f64 / opts.token_rate.max(0.1);
    let prompt_timeout = Duration::from_secs_f64(reply_secs + 30.0);
    let sh = Arc::new(AiShared {
        ctx: ctx.clone(),
        opts: opts.clone(),
        c: AiCounters::default(),
        token_latency: LatencySink::new(),
        ttft: LatencySink::new(),
        started_latency: LatencySink::new(),
        direct_ttft: LatencySink::new(),
        direct_token: LatencySink::new(),
        gens: Mutex::new(HashMap::new()),
        room_gens: (0..plan.rooms.len()).map(|_| AtomicU64::new(0)).collect(),
        room_tokens: (0..plan.rooms.len()).map(|_| AtomicU64::new(0)).collect(),
        prompt_timeout,
    });
    let ramp = opts.ramp.min(cfg.duration);
    let chat_ids: Vec<Arc<str>> = plan
        .rooms
        .iter()
        .map(|r| Arc::from(r.chat_id.as_str()))
        .collect();
    let mut prompters = 0u64;
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let mut handles = Vec::with_capacity(owned_idx.len());
    for idx in owned_idx {
        let u = plan
            .users
            .get(idx)
            .with_context(|| format!("plan has no user {idx}"))?;
        let is_prompter = plan.rooms.get(u.room).is_some_and(|r| r.owner == idx);
        let offset = is_prompter.then(|| ramp.mul_f64((u.room as f64 * 0.618_033_988_75).fract()));
        if is_prompter {
            prompters += 1;
        }
        let spec = Spec {
            user_idx: idx,
            user: u.id,
            email: Arc::from(u.email.as_str()),
            room: u.room,
            chat_id: chat_ids[u.room].clone(),
            sender_period: None,
            phase_offset: 0.0,
        };
        handles.push(tokio::spawn(ai_session(
            sh.clone(),
            spec,
            offset,
            phase_rx.clone(),
        )));
    }
    summary
        .checks
        .insert("plan_sessions".into(), plan.users.len().into());
    summary
        .checks
        .insert("plan_rooms".into(), plan.rooms.len().into());
    summary.checks.insert("sessions_owned".into(), owned.into());
    summary
        .checks
        .insert("prompters_owned".into(), prompters.into());

    // Setup.
    let setup_secs = await_setup(&ctx, cfg, owned, progress, summary).await;
    wait_start(cfg, progress, summary).await;

    // Measurement: prompters loop for --duration.
    let _ = phase_tx.send(Phase::Run);
    let t_run = Instant::now();
    let direct = match (&opts.mock, opts.direct_samples) {
        (Some(mock), n) if n > 0 && cfg.process_index == 0 => Some(tokio::spawn(run_direct(
            sh.clone(),
            mock.clone(),
            n,
            cfg.duration,
        ))),
        _ => None,
    };
    let live = |sh: &AiShared| {
        let c = &sh.c;
        let (p50, p99) = sh.token_latency.p50_p99();
        let (t50, t99) = sh.ttft.p50_p99();
        format!(
            "in flight {} · prompts {} · finished {} failed {} · tokens {} · token p50 {} p99 {} · ttft p50 {} p99 {} · errors {}",
            c.in_flight.load(Ordering::Relaxed),
            c.prompts_sent.load(Ordering::Relaxed),
            c.generations_finished.load(Ordering::Relaxed),
            c.generations_failed.load(Ordering::Relaxed),
            c.tokens_received.load(Ordering::Relaxed),
            fmt_us(p50 as f64),
            fmt_us(p99 as f64),
            fmt_us(t50 as f64),
            fmt_us(t99 as f64),
            sh.ctx.c.error_frames.load(Ordering::Relaxed),
        )
    };
    progress.phase("ai", cfg.duration.as_secs().max(1), true);
    let mut max_in_flight = 0u64;
    with_ticker(progress, tokio::time::sleep(cfg.duration), || {
        max_in_flight = max_in_flight.max(sh.c.in_flight.load(Ordering::Relaxed));
        (t_run.elapsed().as_secs(), live(&sh))
    })
    .await;
    let run_secs = t_run.elapsed().as_secs_f64();

    // Drain: no new prompts; wait for the replies in flight.
    let _ = phase_tx.send(Phase::Drain);
    let drain_limit = prompt_timeout + Duration::from_secs(5);
    progress.phase("drain", drain_limit.as_secs(), true);
    let t_drain = Instant::now();
    with_ticker(
        progress,
        async {
            while sh.c.in_flight.load(Ordering::Relaxed) > 0 && t_drain.elapsed() < drain_limit {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Let the last generation_finished frames reach every watcher.
            tokio::time::sleep(Duration::from_millis(500)).await;
        },
        || (t_drain.elapsed().as_secs(), live(&sh)),
    )
    .await;
    if let Some(d) = direct {
        let _ = tokio::time::timeout(drain_limit, d).await;
    }
    let window = t_run.elapsed();
    let in_flight_left = sh.c.in_flight.load(Ordering::Relaxed);

    let expected_finished: u64 = sh
        .room_gens
        .iter()
        .zip(ctx.room_subscribed.iter())
        .map(|(g, s)| g.load(Ordering::Relaxed) * s.load(Ordering::Relaxed))
        .sum();
    let expected_tokens: u64 = sh
        .room_tokens
        .iter()
        .zip(ctx.room_subscribed.iter())
        .map(|(g, s)| g.load(Ordering::Relaxed) * s.load(Ordering::Relaxed))
        .sum();
    let alive_at_end = ctx.c.alive.load(Ordering::Relaxed);

    let _ = phase_tx.send(Phase::Stop);
    progress.phase("closing", owned, false);
    let close_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for h in handles.iter_mut() {
        if tokio::time::timeout_at(close_deadline, &mut *h)
            .await
            .is_err()
        {
            break;
        }
    }
    for h in &handles {
        h.abort();
    }

    let measured = Measured {
        owned,
        prompters,
        max_in_flight,
        in_flight_left,
        alive_at_end,
        expected_finished,
        expected_tokens,
        setup_secs,
        run_secs,
        window,
    };
    record_counts(cfg, &sh, &ctx, &measured, summary);
    let ttft = record_latencies(&sh, &ctx, summary);
    record_problems(&opts, &sh, &ctx, summary);
    write_ttft_chart(cfg, &ttft, summary);
    Ok(())
}

/// What a run measured besides the shared counters, for its summary.
#[derive(Clone, Copy)]
struct Measured {
    owned: u64,
    prompters: u64,
    max_in_flight: u64,
    in_flight_left: u64,
    alive_at_end: u64,
    expected_finished: u64,
    expected_tokens: u64,
    setup_secs: f64,
    run_secs: f64,
    window: Duration,
}

/// The summary's counters, rates and delivery checks.
fn record_counts(cfg: &WsConfig, sh: &AiShared, ctx: &Ctx, m: &Measured, summary: &mut Summary) {
    let Measured {
        owned,
        prompters,
        max_in_flight,
        in_flight_left,
        alive_at_end,
        expected_finished,
        expected_tokens,
        setup_secs,
        run_secs,
        window,
    } = *m;
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = &sh.c;
    let wc = &ctx.c;
    summary.duration_secs = window.as_secs_f64();
    summary.notes.push(format!(
        "measurement window: {run_secs:.1}s of prompting (--duration) plus {:.1}s waiting for the replies in flight; rates divide by the whole window",
        window.as_secs_f64() - run_secs
    ));
    summary.counter("sessions_owned", owned);
    summary.counter("sessions_subscribed", ld(&wc.connected));
    summary.counter("alive_at_end", alive_at_end);
    summary.counter("closed_by_server", ld(&wc.closed_by_server));
    summary.counter("dropped", ld(&wc.dropped));
    summary.counter("prompters", prompters);
    summary.counter("max_in_flight_seen", max_in_flight);
    summary.counter("in_flight_at_end", in_flight_left);
    for (name, v) in [
        ("prompts_sent", &c.prompts_sent),
        ("prompts_acked", &c.prompts_acked),
        ("prompt_errors", &c.prompt_errors),
        ("prompt_rate_limited", &c.prompt_rate_limited),
        ("prompt_timeouts", &c.prompt_timeouts),
        ("generations_started", &c.generations_started),
        ("generations_finished", &c.generations_finished),
        ("generations_failed", &c.generations_failed),
        ("finish_not_stop", &c.finish_not_stop),
        ("tokens_received", &c.tokens_received),
        ("tokens_in_finished", &c.tokens_in_finished),
        ("tokens_unstamped", &c.tokens_unstamped),
        ("tokens_unknown_generation", &c.tokens_unknown_generation),
        ("index_duplicates", &c.index_duplicates),
        ("index_out_of_order", &c.index_out_of_order),
        ("index_missing", &c.index_missing),
        ("snapshots", &c.snapshots),
        ("watcher_finished", &c.watcher_finished),
        ("watcher_failed", &c.watcher_failed),
        ("watcher_streams_ok", &c.watcher_streams_ok),
        ("watcher_streams_bad", &c.watcher_streams_bad),
        ("watcher_count_mismatch", &c.watcher_count_mismatch),
        ("watcher_expected_mismatch", &c.watcher_expected_mismatch),
        ("watcher_text_mismatch", &c.watcher_text_mismatch),
        ("watchers_disagree", &c.watchers_disagree),
        ("direct_ok", &c.direct_ok),
        ("direct_failed", &c.direct_failed),
        ("direct_tokens", &c.direct_tokens),
        ("other_frames", &wc.other_frames),
        ("foreign_frames", &wc.foreign_messages),
    ] {
        summary.counter(name, ld(v));
    }
    summary.rate("tokens_received_per_sec", "tokens_received");
    summary.rate("generations_per_sec", "generations_finished");
    summary.rate("prompts_per_sec", "prompts_sent");

    summary.checks.insert(
        "setup_secs".into(),
        json!((setup_secs * 100.0).round() / 100.0),
    );
    summary.checks.insert(
        "generations_distinct_seen".into(),
        json!(sh.gens.lock().map(|g| g.len()).unwrap_or(0)),
    );
    let streams_ok = ld(&c.watcher_streams_bad) == 0
        && ld(&c.watchers_disagree) == 0
        && ld(&c.index_duplicates) == 0
        && ld(&c.index_out_of_order) == 0
        && ld(&c.index_missing) == 0;
    summary
        .checks
        .insert("token_streams_ok".into(), json!(streams_ok));
    if cfg.process_count == 1 {
        summary
            .checks
            .insert("expected_watcher_finished".into(), json!(expected_finished));
        summary
            .checks
            .insert("expected_tokens_received".into(), json!(expected_tokens));
        let ratio = |got: u64, want: u64| {
            if want == 0 {
                0.0
            } else {
                ((got as f64 / want as f64) * 10_000.0).round() / 10_000.0
            }
        };
        summary.checks.insert(
            "finished_delivery_ratio".into(),
            json!(ratio(ld(&c.watcher_finished), expected_finished)),
        );
        summary.checks.insert(
            "token_delivery_ratio".into(),
            json!(ratio(ld(&c.tokens_in_finished), expected_tokens)),
        );
        if ld(&c.watcher_finished) < expected_finished {
            summary.problems.push(format!(
                "generation_finished delivered {} times, expected {expected_finished}",
                ld(&c.watcher_finished)
            ));
        }
        if ld(&c.tokens_in_finished) < expected_tokens {
            summary.problems.push(format!(
                "tokens delivered in finished replies {}, expected {expected_tokens}",
                ld(&c.tokens_in_finished)
            ));
        }
    }
}

/// Time to first token through Echo and directly, for the chart.
struct Ttft {
    server: Histogram<u64>,
    server_stats: LatencyStats,
    direct_stats: LatencyStats,
}

/// The summary's latency distributions and the targets they are held to.
fn record_latencies(sh: &AiShared, ctx: &Ctx, summary: &mut Summary) -> Ttft {
    let token_h = sh.token_latency.snapshot();
    let ttft_h = sh.ttft.snapshot();
    let direct_h = sh.direct_ttft.snapshot();
    let token_s = LatencyStats::of(&token_h);
    let ttft_s = LatencyStats::of(&ttft_h);
    let direct_s = LatencyStats::of(&direct_h);
    summary.latency(
        "token",
        "token latency (provider emit → watcher receive)",
        &token_h,
        true,
    );
    summary.latency(
        "ttft_server",
        "time to first token through Echo (prompt sent → token 0 received)",
        &ttft_h,
        false,
    );
    summary.latency(
        "ttft_direct",
        "time to first token calling the mock directly (request sent → first content chunk)",
        &direct_h,
        false,
    );
    summary.latency(
        "direct_token",
        "token latency calling the mock directly (emit → receive, the measuring floor)",
        &sh.direct_token.snapshot(),
        false,
    );
    summary.latency(
        "generation_started",
        "prompt sent → generation_started received",
        &sh.started_latency.snapshot(),
        false,
    );
    summary.latency(
        "setup",
        "session setup (connect → subscribed)",
        &ctx.setup_latency.snapshot(),
        false,
    );
    if !ttft_h.is_empty() && !direct_h.is_empty() {
        summary.checks.insert(
            "ttft_server_minus_direct_us".into(),
            diff_stats(&ttft_s, &direct_s),
        );
    }
    if !token_h.is_empty() {
        let mut targets = serde_json::Map::new();
        targets.insert("token_p99_le_10ms".into(), json!(token_s.p99 <= 10_000));
        if !ttft_h.is_empty() && !direct_h.is_empty() {
            targets.insert(
                "ttft_p50_added_le_5ms".into(),
                json!(ttft_s.p50 as i64 - direct_s.p50 as i64 <= 5_000),
            );
            targets.insert(
                "ttft_p99_added_le_5ms".into(),
                json!(ttft_s.p99 as i64 - direct_s.p99 as i64 <= 5_000),
            );
        }
        summary
            .checks
            .insert("targets".into(), serde_json::Value::Object(targets));
    }

    Ttft {
        server: ttft_h,
        server_stats: ttft_s,
        direct_stats: direct_s,
    }
}

/// The summary's problems and notes.
fn record_problems(opts: &AiOpts, sh: &AiShared, ctx: &Ctx, summary: &mut Summary) {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (c, wc) = (&sh.c, &ctx.c);
    for (name, what) in [
        ("closed_by_server", "sessions closed by the server"),
        ("dropped", "sessions dropped without a close frame"),
        ("prompt_errors", "prompts refused"),
        ("prompt_timeouts", "replies that did not finish in time"),
        ("generations_failed", "generations failed"),
        ("finish_not_stop", "replies finished other than with stop"),
        ("index_duplicates", "duplicate token indexes"),
        ("index_out_of_order", "token indexes out of order"),
        ("index_missing", "missing token indexes"),
        (
            "tokens_unknown_generation",
            "tokens of a generation never started",
        ),
        (
            "watcher_streams_bad",
            "watcher token streams that failed a check",
        ),
        (
            "watchers_disagree",
            "watchers that saw a different token stream",
        ),
        ("direct_failed", "direct calls to the mock failed"),
        ("in_flight_at_end", "replies still in flight at the end"),
    ] {
        summary.problem_if_nonzero(name, what);
    }
    if ld(&c.tokens_unstamped) > 0 {
        summary.notes.push(format!(
            "{} tokens carried no \"<unix_nanos>|\" stamp (is the server using echo-load openai-mock?): no latency for them",
            ld(&c.tokens_unstamped)
        ));
    }
    if opts.direct_samples > 0 && opts.mock.is_none() {
        summary
            .notes
            .push("--direct-ttft-samples needs --mock-url: no direct samples taken".into());
    }
    if ld(&wc.connected) == 0 {
        summary.nothing_worked = true;
        summary.problems.push("no session could subscribe".into());
    } else if ld(&c.tokens_received) == 0 {
        summary.nothing_worked = true;
        summary.problems.push("no token was received".into());
    }
}

/// A second chart: time to first token through Echo, the direct figures in its subtitle.
fn write_ttft_chart(cfg: &WsConfig, ttft: &Ttft, summary: &mut Summary) {
    let ttft_svg = cfg.out.with_extension("ttft.svg");
    let sub = format!(
        "server p50 {} p99 {} · direct p50 {} p99 {} (n={}) · added p50 {} p99 {}",
        fmt_us(ttft.server_stats.p50 as f64),
        fmt_us(ttft.server_stats.p99 as f64),
        fmt_us(ttft.direct_stats.p50 as f64),
        fmt_us(ttft.direct_stats.p99 as f64),
        ttft.direct_stats.count,
        fmt_signed_us(ttft.server_stats.p50 as i64 - ttft.direct_stats.p50 as i64),
        fmt_signed_us(ttft.server_stats.p99 as i64 - ttft.direct_stats.p99 as i64),
    );
    if let Some(dir) = ttft_svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).ok();
    }
    let chart = svg_chart(
        "echo-load ws ai — time to first token through Echo",
        &sub,
        &ttft.server,
    );
    match std::fs::write(&ttft_svg, chart) {
        Ok(()) => {
            summary
                .files
                .insert("svg_ttft".into(), ttft_svg.display().to_string());
        }
        Err(e) => summary
            .notes
            .push(format!("could not write {}: {e}", ttft_svg.display())),
    }
}

fn fmt_signed_us(v: i64) -> String {
    if v < 0 {
        format!("-{}", fmt_us(v.unsigned_abs() as f64))
    } else {
        format!("+{}", fmt_us(v as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_hash() {
        assert_eq!(
            stamp_of("1700000000123456789|"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(stamp_of("hello "), None);
        let whole = fnv(FNV_OFFSET, b"1|2|3|");
        let parts = fnv(fnv(fnv(FNV_OFFSET, b"1|"), b"2|"), b"3|");
        assert_eq!(whole, parts);
    }

    #[test]
    fn token_frame_parses_borrowed() {
        let t = r#"{"type":"token","chat_id":"c","generation_id":"g","index":3,"delta":"17|"}"#;
        let f: AiFrame = serde_json::from_str(t).unwrap();
        assert_eq!(&*f.kind, "token");
        assert_eq!(f.index, Some(3));
        assert!(matches!(f.delta, Some(Text(Cow::Borrowed("17|")))));
        let t = r#"{"type":"token","delta":"a\"b"}"#;
        let f: AiFrame = serde_json::from_str(t).unwrap();
        assert_eq!(f.delta.as_deref(), Some("a\"b"));
        let e = r#"{"type":"error","id":"p1","code":"rate_limited","message":"slow down"}"#;
        let f: AiFrame = serde_json::from_str(e).unwrap();
        assert_eq!(f.code.as_deref(), Some("rate_limited"));
    }
}
