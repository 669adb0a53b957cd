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
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{unix_nanos, Target};
use crate::plan::Plan;
use crate::progress::{with_ticker, Progress};
use crate::stats::{fmt_us, svg_chart, LatencySink, LatencyStats, LocalBatch, Summary};
use crate::ws::{
    await_setup, join_or_abort, plan_checks, wait_start, AiOpts, Ctx, Phase, Spec, Ws, WsConfig,
    SESSIONS_CLOSE_TIMEOUT,
};

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

impl AiCounters {
    /// Every counter under its name in the summary (`in_flight` is a gauge, not among them).
    fn named(&self) -> [(&'static str, &AtomicU64); 28] {
        [
            ("prompts_sent", &self.prompts_sent),
            ("prompts_acked", &self.prompts_acked),
            ("prompt_errors", &self.prompt_errors),
            ("prompt_rate_limited", &self.prompt_rate_limited),
            ("prompt_timeouts", &self.prompt_timeouts),
            ("generations_started", &self.generations_started),
            ("generations_finished", &self.generations_finished),
            ("generations_failed", &self.generations_failed),
            ("finish_not_stop", &self.finish_not_stop),
            ("tokens_received", &self.tokens_received),
            ("tokens_in_finished", &self.tokens_in_finished),
            ("tokens_unstamped", &self.tokens_unstamped),
            ("tokens_unknown_generation", &self.tokens_unknown_generation),
            ("index_duplicates", &self.index_duplicates),
            ("index_out_of_order", &self.index_out_of_order),
            ("index_missing", &self.index_missing),
            ("snapshots", &self.snapshots),
            ("watcher_finished", &self.watcher_finished),
            ("watcher_failed", &self.watcher_failed),
            ("watcher_streams_ok", &self.watcher_streams_ok),
            ("watcher_streams_bad", &self.watcher_streams_bad),
            ("watcher_count_mismatch", &self.watcher_count_mismatch),
            ("watcher_expected_mismatch", &self.watcher_expected_mismatch),
            ("watcher_text_mismatch", &self.watcher_text_mismatch),
            ("watchers_disagree", &self.watchers_disagree),
            ("direct_ok", &self.direct_ok),
            ("direct_failed", &self.direct_failed),
            ("direct_tokens", &self.direct_tokens),
        ]
    }
}

/// What the watchers of one generation saw (first finished watcher sets the reference).
struct GenAgg {
    hash: u64,
    count: u64,
}

/// What the sessions of an `ai` run share.
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

impl AiShared {
    fn new(ctx: Arc<Ctx>, opts: AiOpts, rooms: usize, prompt_timeout: Duration) -> Self {
        Self {
            ctx,
            opts,
            c: AiCounters::default(),
            token_latency: LatencySink::new(),
            ttft: LatencySink::new(),
            started_latency: LatencySink::new(),
            direct_ttft: LatencySink::new(),
            direct_token: LatencySink::new(),
            gens: Mutex::new(HashMap::new()),
            room_gens: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            room_tokens: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            prompt_timeout,
        }
    }

    /// Checks a watcher's finished stream: every index in order, as many tokens as `usage`
    /// says (and `--tokens` when given), the text equal to the stored reply. Counts the
    /// verdict; a failed stream is described in the error samples.
    fn judge(&self, st: &Stream, usage_tokens: Option<u64>, stored: Option<&Stored>) {
        let c = &self.c;
        let mut ok = !st.bad;
        if usage_tokens != Some(st.count) {
            c.watcher_count_mismatch.fetch_add(1, Ordering::Relaxed);
            ok = false;
        }
        if let Some(expect) = self.opts.tokens {
            if st.count != expect as u64 {
                c.watcher_expected_mismatch.fetch_add(1, Ordering::Relaxed);
                ok = false;
            }
        }
        let text_ok = stored.is_some_and(|m| fnv(FNV_OFFSET, m.content.as_bytes()) == st.hash);
        if !text_ok {
            c.watcher_text_mismatch.fetch_add(1, Ordering::Relaxed);
            ok = false;
        }
        if ok {
            c.watcher_streams_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            c.watcher_streams_bad.fetch_add(1, Ordering::Relaxed);
            self.ctx.errors.add(format!(
                "watcher stream failed a check: {} tokens, usage {:?}, expected {:?}, text matches {text_ok}",
                st.count, usage_tokens, self.opts.tokens
            ));
        }
    }

    /// Compares a watcher's finished stream of `gen` with the first one seen (which becomes
    /// the reference); counts a disagreement.
    fn agree(&self, gen: &str, st: &Stream) {
        if let Ok(mut g) = self.gens.lock() {
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
                    self.c.watchers_disagree.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
            }
        }
    }
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

    /// A stream not seen from its start, so not checkable.
    fn unchecked() -> Self {
        Self {
            bad: true,
            ..Self::new()
        }
    }

    /// Takes token `index`: the next one is counted and hashed; a gap is counted missing and
    /// the token still taken; a repeat or an earlier index is counted and dropped. Anything
    /// but the next index marks the stream bad.
    fn take(&mut self, index: u64, delta: &str, c: &AiCounters) {
        if index == self.next {
            self.next += 1;
        } else if index > self.next {
            c.index_missing
                .fetch_add(index - self.next, Ordering::Relaxed);
            self.bad = true;
            self.next = index + 1;
        } else {
            if index + 1 == self.next {
                c.index_duplicates.fetch_add(1, Ordering::Relaxed);
            } else {
                c.index_out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            self.bad = true;
            return;
        }
        self.count += 1;
        self.hash = fnv(self.hash, delta.as_bytes());
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

/// One session of an `ai` run: it watches its chat's replies and, when it is the chat's owner
/// (`prompter` holds its offset in the ramp), prompts again each time its reply ends.
async fn ai_session(
    sh: Arc<AiShared>,
    spec: Spec,
    prompter: Option<Duration>,
    mut phase_rx: watch::Receiver<Phase>,
) {
    let Some((mut ws, _)) = sh.ctx.open_subscribed(&spec, &phase_rx).await else {
        return;
    };
    let mut s = AiSession {
        lat: LocalBatch::new(sh.token_latency.clone()),
        sh,
        spec,
        prompter,
        streams: HashMap::new(),
        pending: None,
        next_at: None,
        scheduled: false,
        n: 0,
    };
    let mut phase = *phase_rx.borrow_and_update();
    let mut graceful = false;

    loop {
        s.follow(phase);
        if phase >= Phase::Stop {
            graceful = true;
            break;
        }
        let deadline = s.pending.as_ref().map(|p| p.deadline);
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                phase = if changed.is_err() { Phase::Stop } else { *phase_rx.borrow_and_update() };
            }
            _ = sleep_opt(s.next_at) => {
                if !s.prompt(&mut ws).await {
                    break;
                }
            }
            _ = sleep_opt(deadline) => s.timed_out(phase),
            msg = ws.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let out = s.handle_frame(t.as_str());
                        s.after(out, phase);
                    }
                    other => {
                        if s.sh.ctx.session_read_ended(other) {
                            break;
                        }
                    }
                }
            }
        }
    }
    s.forget_pending();
    let ctx = s.sh.ctx.clone();
    ctx.session_over(&s.spec, ws, &mut s.lat, graceful).await;
}

/// What one AI session keeps between frames.
struct AiSession {
    sh: Arc<AiShared>,
    spec: Spec,
    /// The prompter's first prompt is due this long after the window opens; `None` for
    /// watchers that do not prompt.
    prompter: Option<Duration>,
    /// This watcher's view of each generation it sees.
    streams: HashMap<String, Stream>,
    /// The prompter's reply in flight.
    pending: Option<Pending>,
    /// When the next prompt is due.
    next_at: Option<tokio::time::Instant>,
    /// Whether the first prompt has been scheduled.
    scheduled: bool,
    /// Prompts sent so far.
    n: u64,
    /// Token latencies (provider emit → receive).
    lat: LocalBatch,
}

impl AiSession {
    /// Schedules the first prompt when the window opens; no prompt from the drain on.
    fn follow(&mut self, phase: Phase) {
        if phase == Phase::Run && !self.scheduled {
            self.scheduled = true;
            if let Some(offset) = self.prompter {
                self.next_at = Some(tokio::time::Instant::now() + offset);
            }
        }
        if phase >= Phase::Drain {
            self.next_at = None;
        }
    }

    /// Sends the next prompt; false (the session dropped) when the send failed.
    async fn prompt(&mut self, ws: &mut Ws) -> bool {
        let (sh, ctx) = (&self.sh, &self.sh.ctx);
        self.next_at = None;
        self.n += 1;
        let n = self.n;
        let id = format!("p{n}");
        let frame = json!({
            "type": "prompt",
            "id": id,
            "chat_id": &*self.spec.chat_id,
            "content": format!("load prompt {n} from user {}", self.spec.user_idx),
        })
        .to_string();
        let sent_at = Instant::now();
        if let Err(e) = ws.send(Message::text(frame)).await {
            ctx.c.dropped.fetch_add(1, Ordering::Relaxed);
            ctx.errors.add(format!("prompt send failed: {e}"));
            return false;
        }
        sh.c.prompts_sent.fetch_add(1, Ordering::Relaxed);
        sh.c.in_flight.fetch_add(1, Ordering::Relaxed);
        self.pending = Some(Pending {
            id,
            sent_at,
            deadline: tokio::time::Instant::now() + sh.prompt_timeout,
            started: false,
            first_token: false,
        });
        true
    }

    /// The reply in flight did not finish in time: counted, given up, and (in the window)
    /// the next prompt is due at once.
    fn timed_out(&mut self, phase: Phase) {
        let sh = &self.sh;
        sh.c.prompt_timeouts.fetch_add(1, Ordering::Relaxed);
        sh.ctx.errors.add(format!(
            "no generation_finished within {:?} of a prompt",
            sh.prompt_timeout
        ));
        self.pending = None;
        sh.c.in_flight.fetch_sub(1, Ordering::Relaxed);
        if phase == Phase::Run {
            self.next_at = Some(tokio::time::Instant::now());
        }
    }

    /// After a frame: when the reply ended or the prompt was refused, the prompter prompts
    /// again (in the window; half a second later after a refusal).
    fn after(&mut self, out: Outcome, phase: Phase) {
        if matches!(out, Outcome::Nothing) {
            return;
        }
        self.forget_pending();
        if phase == Phase::Run && self.prompter.is_some() {
            let pause = if matches!(out, Outcome::Refused) {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            };
            self.next_at = Some(tokio::time::Instant::now() + pause);
        }
    }

    /// Drops the reply in flight, if any, from the in-flight count.
    fn forget_pending(&mut self) {
        if self.pending.take().is_some() {
            self.sh.c.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes one text frame into account; what it means for the prompter.
    fn handle_frame(&mut self, text: &str) -> Outcome {
        let now_ns = unix_nanos();
        let ctx = &self.sh.ctx;
        let f: AiFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(_) => {
                ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
                return Outcome::Nothing;
            }
        };
        if f.chat_id
            .as_deref()
            .is_some_and(|id| id != &*self.spec.chat_id)
        {
            ctx.c.foreign_messages.fetch_add(1, Ordering::Relaxed);
            return Outcome::Nothing;
        }
        let gen = f.generation_id.as_deref().unwrap_or("");
        match &*f.kind {
            "token" => self.on_token(&f, gen, now_ns),
            "generation_started" => self.on_started(gen),
            "generation_snapshot" => self.on_snapshot(&f, gen),
            "generation_finished" => return self.on_finished(&f, gen),
            "generation_failed" => return self.on_failed(gen, text),
            "ack" => self.on_ack(&f),
            "error" => return self.on_error(&f, text),
            _ => {
                ctx.c.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        Outcome::Nothing
    }

    /// `token`: its latency from the stamp, the prompter's time to first token, and the
    /// generation's stream check.
    fn on_token(&mut self, f: &AiFrame, gen: &str, now_ns: u64) {
        let c = &self.sh.c;
        c.tokens_received.fetch_add(1, Ordering::Relaxed);
        let index = f.index.unwrap_or(-1);
        let delta = f.delta.as_deref().unwrap_or("");
        match stamp_of(delta) {
            Some(ns) => self.lat.record(now_ns.saturating_sub(ns) / 1_000),
            None => {
                c.tokens_unstamped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if index == 0 {
            if let Some(p) = self.pending.as_mut().filter(|p| !p.first_token) {
                p.first_token = true;
                self.sh
                    .ttft
                    .record_many(&[p.sent_at.elapsed().as_micros() as u64]);
            }
        }
        let st = match self.streams.get_mut(gen) {
            Some(s) => s,
            None if index == 0 => self
                .streams
                .entry(gen.to_string())
                .or_insert_with(Stream::new),
            None => {
                // A token of a generation this watcher never saw start.
                c.tokens_unknown_generation.fetch_add(1, Ordering::Relaxed);
                self.streams
                    .entry(gen.to_string())
                    .or_insert_with(Stream::unchecked)
            }
        };
        st.take(index.max(0) as u64, delta, c);
    }

    /// `generation_started`: a new stream; for the prompter, prompt → started latency.
    fn on_started(&mut self, gen: &str) {
        self.streams
            .entry(gen.to_string())
            .or_insert_with(Stream::new);
        if let Some(p) = self.pending.as_mut().filter(|p| !p.started) {
            p.started = true;
            self.sh
                .started_latency
                .record_many(&[p.sent_at.elapsed().as_micros() as u64]);
            self.sh
                .c
                .generations_started
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `generation_snapshot`: joined mid-reply, so the stream is not checkable from the start.
    fn on_snapshot(&mut self, f: &AiFrame, gen: &str) {
        self.sh.c.snapshots.fetch_add(1, Ordering::Relaxed);
        let mut s = Stream::unchecked();
        s.next = f.index.unwrap_or(-1).saturating_add(1).max(0) as u64;
        self.streams.insert(gen.to_string(), s);
    }

    /// `generation_finished`: the stream is judged and compared with the other watchers';
    /// for the prompter the reply ended.
    fn on_finished(&mut self, f: &AiFrame, gen: &str) -> Outcome {
        let (sh, c) = (&self.sh, &self.sh.c);
        c.watcher_finished.fetch_add(1, Ordering::Relaxed);
        let st = self.streams.remove(gen).unwrap_or_else(Stream::unchecked);
        c.tokens_in_finished.fetch_add(st.count, Ordering::Relaxed);
        let usage_tokens = f
            .usage
            .and_then(|u| serde_json::from_str::<UsageBody>(u.get()).ok())
            .and_then(|u| u.completion_tokens);
        let stored = f
            .message
            .and_then(|m| serde_json::from_str::<Stored>(m.get()).ok());
        sh.judge(&st, usage_tokens, stored.as_ref());
        sh.agree(gen, &st);
        if self.pending.is_none() {
            return Outcome::Nothing;
        }
        c.generations_finished.fetch_add(1, Ordering::Relaxed);
        sh.room_gens[self.spec.room].fetch_add(1, Ordering::Relaxed);
        sh.room_tokens[self.spec.room].fetch_add(usage_tokens.unwrap_or(0), Ordering::Relaxed);
        if f.finish_reason.as_deref() != Some("stop") {
            c.finish_not_stop.fetch_add(1, Ordering::Relaxed);
            sh.ctx.errors.add(format!(
                "generation finished with {:?}",
                f.finish_reason.as_deref()
            ));
        }
        Outcome::Ended
    }

    /// `generation_failed`: the stream is dropped; for the prompter the reply ended.
    fn on_failed(&mut self, gen: &str, text: &str) -> Outcome {
        self.sh.c.watcher_failed.fetch_add(1, Ordering::Relaxed);
        self.streams.remove(gen);
        if self.pending.is_some() {
            self.sh.c.generations_failed.fetch_add(1, Ordering::Relaxed);
            self.sh
                .ctx
                .errors
                .add(format!("generation_failed: {text:.300}"));
            return Outcome::Ended;
        }
        Outcome::Nothing
    }

    /// Whether the frame answers the prompt in flight.
    fn answers_prompt(&self, f: &AiFrame) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| f.id.as_deref() == Some(p.id.as_str()))
    }

    /// `ack`: the prompt in flight was accepted.
    fn on_ack(&mut self, f: &AiFrame) {
        if self.answers_prompt(f) {
            self.sh.c.prompts_acked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `error`: counted and sampled; when it answers the prompt in flight, it was refused.
    fn on_error(&mut self, f: &AiFrame, text: &str) -> Outcome {
        let (c, ctx) = (&self.sh.c, &self.sh.ctx);
        ctx.c.error_frames.fetch_add(1, Ordering::Relaxed);
        if f.code.as_deref() == Some("rate_limited") {
            ctx.c.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        ctx.errors.add(format!("error frame: {text:.300}"));
        if self.answers_prompt(f) {
            c.prompt_errors.fetch_add(1, Ordering::Relaxed);
            if f.code.as_deref() == Some("rate_limited") {
                c.prompt_rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            return Outcome::Refused;
        }
        Outcome::Nothing
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

/// The `ai` scenario (see the module documentation).
pub async fn run(
    cfg: &WsConfig,
    plan: &Plan,
    ctx: Arc<Ctx>,
    nofile: u64,
    progress: &mut Progress,
    summary: &mut Summary,
) -> Result<()> {
    let opts = cfg.ai.clone();
    let owned_idx = owned_sessions(cfg, plan, nofile, summary)?;
    let owned = owned_idx.len() as u64;
    let reply_secs = opts.tokens.unwrap_or(200) as f64 / opts.token_rate.max(0.1);
    let prompt_timeout = Duration::from_secs_f64(reply_secs + 30.0);
    let rooms = plan.rooms.len();
    let sh = Arc::new(AiShared::new(
        ctx.clone(),
        opts.clone(),
        rooms,
        prompt_timeout,
    ));
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (mut handles, prompters) = spawn_sessions(cfg, plan, &sh, owned_idx, &phase_rx)?;
    plan_checks(summary, plan, owned);
    summary
        .checks
        .insert("prompters_owned".into(), prompters.into());

    // Setup.
    let setup_secs = await_setup(&ctx, cfg, owned, progress, summary).await;
    wait_start(cfg, progress, summary).await;

    // Measurement: prompters loop for --duration.
    let _ = phase_tx.send(Phase::Run);
    let t_run = Instant::now();
    let direct = start_direct(cfg, &sh);
    let max_in_flight = prompt_window(cfg, &sh, t_run, progress).await;
    let run_secs = t_run.elapsed().as_secs_f64();

    // Drain: no new prompts; wait for the replies in flight.
    let _ = phase_tx.send(Phase::Drain);
    let drain_limit = prompt_timeout + Duration::from_secs(5);
    drain(&sh, drain_limit, progress).await;
    if let Some(d) = direct {
        let _ = tokio::time::timeout(drain_limit, d).await;
    }
    let window = t_run.elapsed();
    let measured = Measured {
        owned,
        prompters,
        max_in_flight,
        in_flight_left: sh.c.in_flight.load(Ordering::Relaxed),
        alive_at_end: ctx.c.alive.load(Ordering::Relaxed),
        expected_finished: ctx.expected(&sh.room_gens),
        expected_tokens: ctx.expected(&sh.room_tokens),
        setup_secs,
        run_secs,
        window,
    };

    let _ = phase_tx.send(Phase::Stop);
    progress.phase("closing", owned, false);
    let close_deadline = tokio::time::Instant::now() + SESSIONS_CLOSE_TIMEOUT;
    join_or_abort(&mut handles, close_deadline, |_| {}).await;

    record_counts(&sh, &ctx, &measured, summary);
    record_checks(cfg, &sh, &measured, summary);
    let ttft = record_latencies(&sh, &ctx, summary);
    record_problems(&opts, &sh, &ctx, summary);
    write_ttft_chart(cfg, &ttft, summary);
    Ok(())
}

/// With `--direct-ttft-samples` and `--mock-url`, the first process's direct calls to the mock
/// over the window.
fn start_direct(cfg: &WsConfig, sh: &Arc<AiShared>) -> Option<JoinHandle<()>> {
    match (&cfg.ai.mock, cfg.ai.direct_samples) {
        (Some(mock), n) if n > 0 && cfg.process_index == 0 => Some(tokio::spawn(run_direct(
            sh.clone(),
            mock.clone(),
            n,
            cfg.duration,
        ))),
        _ => None,
    }
}

/// The users of the plan this process runs a session for (index ≡ I mod K), when it may open
/// enough files; a note when the plan's shape differs from the options.
fn owned_sessions(
    cfg: &WsConfig,
    plan: &Plan,
    nofile: u64,
    summary: &mut Summary,
) -> Result<Vec<usize>> {
    let opts = &cfg.ai;
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
    Ok(owned_idx)
}

/// Starts a session for every owned user; each chat's owner prompts, its first prompt at a
/// golden-ratio offset within `--ramp`. Returns the tasks and the number of prompters.
fn spawn_sessions(
    cfg: &WsConfig,
    plan: &Plan,
    sh: &Arc<AiShared>,
    owned_idx: Vec<usize>,
    phase_rx: &watch::Receiver<Phase>,
) -> Result<(Vec<JoinHandle<()>>, u64)> {
    let ramp = cfg.ai.ramp.min(cfg.duration);
    let chat_ids: Vec<Arc<str>> = plan
        .rooms
        .iter()
        .map(|r| Arc::from(r.chat_id.as_str()))
        .collect();
    let mut prompters = 0u64;
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
    Ok((handles, prompters))
}

/// The live status line: replies in flight, prompts, outcomes, tokens, latencies, errors.
fn live_line(sh: &AiShared) -> String {
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
}

/// Waits out `--duration` from `t_run` while the prompters prompt; returns the most replies
/// seen in flight at once.
async fn prompt_window(
    cfg: &WsConfig,
    sh: &AiShared,
    t_run: Instant,
    progress: &mut Progress,
) -> u64 {
    progress.phase("ai", cfg.duration.as_secs().max(1), true);
    let mut max_in_flight = 0u64;
    with_ticker(progress, tokio::time::sleep(cfg.duration), || {
        max_in_flight = max_in_flight.max(sh.c.in_flight.load(Ordering::Relaxed));
        (t_run.elapsed().as_secs(), live_line(sh))
    })
    .await;
    max_in_flight
}

/// Waits (at most `limit`) for the replies in flight to finish, then half a second for the
/// last `generation_finished` frames to reach every watcher.
async fn drain(sh: &AiShared, limit: Duration, progress: &mut Progress) {
    progress.phase("drain", limit.as_secs(), true);
    let t_drain = Instant::now();
    with_ticker(
        progress,
        async {
            while sh.c.in_flight.load(Ordering::Relaxed) > 0 && t_drain.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Let the last generation_finished frames reach every watcher.
            tokio::time::sleep(Duration::from_millis(500)).await;
        },
        || (t_drain.elapsed().as_secs(), live_line(sh)),
    )
    .await;
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

/// The summary's window, counters and rates.
fn record_counts(sh: &AiShared, ctx: &Ctx, m: &Measured, summary: &mut Summary) {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let wc = &ctx.c;
    summary.duration_secs = m.window.as_secs_f64();
    summary.notes.push(format!(
        "measurement window: {:.1}s of prompting (--duration) plus {:.1}s waiting for the replies in flight; rates divide by the whole window",
        m.run_secs,
        m.window.as_secs_f64() - m.run_secs
    ));
    ctx.record_sessions(summary, m.owned, m.alive_at_end);
    summary.counter("prompters", m.prompters);
    summary.counter("max_in_flight_seen", m.max_in_flight);
    summary.counter("in_flight_at_end", m.in_flight_left);
    for (name, v) in sh.c.named() {
        summary.counter(name, ld(v));
    }
    summary.counter("other_frames", ld(&wc.other_frames));
    summary.counter("foreign_frames", ld(&wc.foreign_messages));
    summary.rate("tokens_received_per_sec", "tokens_received");
    summary.rate("generations_per_sec", "generations_finished");
    summary.rate("prompts_per_sec", "prompts_sent");
}

/// The summary's delivery checks: setup time, distinct replies, the token streams, and in a
/// single-process run what was delivered against what was expected.
fn record_checks(cfg: &WsConfig, sh: &AiShared, m: &Measured, summary: &mut Summary) {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = &sh.c;
    let (expected_finished, expected_tokens) = (m.expected_finished, m.expected_tokens);
    summary.checks.insert(
        "setup_secs".into(),
        json!((m.setup_secs * 100.0).round() / 100.0),
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
    if cfg.process_count != 1 {
        return;
    }
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
