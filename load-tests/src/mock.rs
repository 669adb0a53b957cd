//! `echo-load openai-mock`: a small OpenAI-compatible streaming server for benchmarks.
//!
//! `POST /v1/chat/completions` answers a `text/event-stream` of `chat.completion.chunk`
//! events: a role chunk, then `--tokens` content chunks paced at `--rate` tokens/s (the first
//! one `--first-token-ms` after the request), a finish chunk, a usage chunk and
//! `data: [DONE]`. Every content delta is `"<unix_nanos>|"`, the wall-clock time at which the
//! chunk was written, so a client on the same machine can measure emit-to-receive latency.
//! `GET /health` and `GET /v1/models` answer small JSON bodies.
//!
//! A hand-written HTTP/1.1 server on tokio (keep-alive, chunked responses; request bodies by
//! `content-length` or chunked): no new dependencies. It binds loopback only and exits by
//! itself after `--duration` seconds (or on SIGINT/SIGTERM), printing a JSON summary.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{unix_nanos, unix_secs};
use crate::stats::{fmt_us, LatencySink, LatencyStats, LocalBatch};

/// Longest request head / body accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle keep-alive connections are closed after this.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(90);

pub struct MockConfig {
    pub host: IpAddr,
    pub port: u16,
    pub tokens: usize,
    /// Tokens per second per stream; 0 = as fast as possible.
    pub rate: f64,
    pub first_token: Duration,
    pub duration: Duration,
    pub progress: bool,
    pub out: Option<PathBuf>,
}

#[derive(Default)]
struct MockCounters {
    connections: AtomicU64,
    requests: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_aborted: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
    tokens: AtomicU64,
    bad_requests: AtomicU64,
}

struct MockState {
    cfg: MockConfig,
    c: MockCounters,
    /// How late each token was written compared with its schedule (µs): the mock's own
    /// saturation (a busy machine shows up here first).
    emit_lag: Arc<LatencySink>,
    seq: AtomicU64,
}

pub async fn run(cfg: MockConfig) -> Result<serde_json::Value> {
    if !cfg.host.is_loopback() {
        bail!(
            "refusing to bind {}: the mock listens on loopback addresses only",
            cfg.host
        );
    }
    if !(cfg.rate.is_finite() && cfg.rate >= 0.0) {
        bail!("--rate must be a non-negative number");
    }
    crate::common::raise_nofile();
    let listener = listen(SocketAddr::new(cfg.host, cfg.port))?;
    let local = listener.local_addr()?;
    let deadline = tokio::time::Instant::now() + cfg.duration;
    let st = Arc::new(MockState {
        cfg,
        c: MockCounters::default(),
        emit_lag: LatencySink::new(),
        seq: AtomicU64::new(0),
    });
    eprintln!(
        "openai-mock listening on http://{local}/v1 ({} tokens at {}/s, first token after {:?}, exits in {:?})",
        st.cfg.tokens, st.cfg.rate, st.cfg.first_token, st.cfg.duration
    );
    let t0 = Instant::now();
    let reason = serve(&st, &listener, deadline, t0).await;
    let summary = exit_summary(&st, local, reason, t0);
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(out) = &st.cfg.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, format!("{text}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(summary)
}

/// A listening socket on `addr` (address reuse on, backlog 4096).
fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(sock.listen(4096)?)
}

/// Accepts connections until `deadline`, SIGINT or SIGTERM, with a status line every 5 s;
/// returns why it stopped.
async fn serve(
    st: &Arc<MockState>,
    listener: &tokio::net::TcpListener,
    deadline: tokio::time::Instant,
    t0: Instant,
) -> &'static str {
    let mut status = tokio::time::interval(Duration::from_secs(5));
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut line = StatusLine {
        t0,
        last_tokens: 0,
        last_t: Instant::now(),
    };
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break "duration elapsed",
            _ = tokio::signal::ctrl_c() => break "SIGINT",
            _ = async {
                match sigterm.as_mut() {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => break "SIGTERM",
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    st.c.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(st.clone(), stream));
                }
                Err(e) => {
                    eprintln!("openai-mock: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = status.tick() => {
                if st.cfg.progress {
                    line.print(st);
                }
            }
        }
    }
}

/// The periodic status line on stderr (token rate since the previous line).
struct StatusLine {
    t0: Instant,
    last_tokens: u64,
    last_t: Instant,
}

impl StatusLine {
    fn print(&mut self, st: &MockState) {
        let tok = st.c.tokens.load(Ordering::Relaxed);
        let dt = self.last_t.elapsed().as_secs_f64().max(1e-3);
        let (p50, p99) = st.emit_lag.p50_p99();
        eprintln!(
            "[openai-mock] {:.0}s · active streams {} (max {}) · requests {} · tokens {tok} ({:.0}/s) · emit lag p50 {} p99 {}",
            self.t0.elapsed().as_secs_f64(),
            st.c.active.load(Ordering::Relaxed),
            st.c.max_active.load(Ordering::Relaxed),
            st.c.requests.load(Ordering::Relaxed),
            (tok - self.last_tokens) as f64 / dt,
            fmt_us(p50 as f64),
            fmt_us(p99 as f64),
        );
        self.last_tokens = tok;
        self.last_t = Instant::now();
    }
}

/// The JSON summary printed when the mock exits.
fn exit_summary(st: &MockState, local: SocketAddr, reason: &str, t0: Instant) -> serde_json::Value {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = &st.c;
    json!({
        "tool": format!("echo-load {} openai-mock", env!("CARGO_PKG_VERSION")),
        "listen": format!("http://{local}/v1"),
        "stopped_because": reason,
        "uptime_secs": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "params": {
            "tokens": st.cfg.tokens,
            "rate": st.cfg.rate,
            "first_token_ms": st.cfg.first_token.as_millis() as u64,
            "duration_secs": st.cfg.duration.as_secs(),
        },
        "counters": {
            "connections": ld(&c.connections),
            "requests": ld(&c.requests),
            "bad_requests": ld(&c.bad_requests),
            "streams_started": ld(&c.streams_started),
            "streams_completed": ld(&c.streams_completed),
            "streams_aborted_by_client": ld(&c.streams_aborted),
            "streams_active_at_exit": ld(&c.active),
            "max_concurrent_streams": ld(&c.max_active),
            "tokens_emitted": ld(&c.tokens),
        },
        "emit_lag_us": LatencyStats::of(&st.emit_lag.snapshot()),
    })
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    body: Vec<u8>,
}

enum ReadOutcome {
    Request(Request),
    Closed,
    Bad(&'static str),
}

/// A step of reading a request: `Err` ends the read with that outcome (the peer closed, or the
/// request is refused).
type Step<T> = std::result::Result<T, ReadOutcome>;

/// What the request line and the headers say.
struct Head {
    method: String,
    path: String,
    http10: bool,
    content_length: Option<usize>,
    chunked: bool,
    conn_close: bool,
    conn_keep: bool,
}

impl Head {
    /// Takes note of one header line.
    fn header(&mut self, line: &str) -> Step<()> {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadOutcome::Bad("malformed header"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => match value.parse() {
                Ok(v) => self.content_length = Some(v),
                Err(_) => return Err(ReadOutcome::Bad("bad content-length")),
            },
            "transfer-encoding" => self.chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                self.conn_close = v.contains("close");
                self.conn_keep = v.contains("keep-alive");
            }
            _ => {}
        }
        Ok(())
    }

    /// HTTP/1.0 keeps the connection only when asked to, HTTP/1.1 unless asked not to.
    fn keep_alive(&self) -> bool {
        if self.http10 {
            self.conn_keep
        } else {
            !self.conn_close
        }
    }
}

async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(rd: &mut R) -> Result<ReadOutcome> {
    let mut line = Vec::new();
    let head = match read_head(rd, &mut line).await? {
        Ok(h) => h,
        Err(out) => return Ok(out),
    };
    let body = match read_body(rd, &head, &mut line).await? {
        Ok(b) => b,
        Err(out) => return Ok(out),
    };
    let keep_alive = head.keep_alive();
    Ok(ReadOutcome::Request(Request {
        method: head.method,
        path: head.path,
        keep_alive,
        body,
    }))
}

/// Reads one line of the request head into `line`, counting it towards the head's length.
async fn head_line<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    line: &mut Vec<u8>,
    head_len: &mut usize,
) -> Result<Step<()>> {
    line.clear();
    let n = rd.read_until(b'\n', line).await?;
    if n == 0 {
        return Ok(Err(ReadOutcome::Closed));
    }
    *head_len += n;
    if *head_len > MAX_HEAD {
        return Ok(Err(ReadOutcome::Bad("request head too large")));
    }
    Ok(Ok(()))
}

/// The request line (skipping stray empty lines between requests) and the headers.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    line: &mut Vec<u8>,
) -> Result<Step<Head>> {
    let mut head_len = 0usize;
    let request_line = loop {
        if let Err(out) = head_line(rd, line, &mut head_len).await? {
            return Ok(Err(out));
        }
        let l = String::from_utf8_lossy(line).trim().to_string();
        if !l.is_empty() {
            break l;
        }
    };
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(ReadOutcome::Bad("malformed request line")));
    };
    let mut head = Head {
        method: method.to_string(),
        path: path.to_string(),
        http10: version.eq_ignore_ascii_case("HTTP/1.0"),
        content_length: None,
        chunked: false,
        conn_close: false,
        conn_keep: false,
    };
    loop {
        if let Err(out) = head_line(rd, line, &mut head_len).await? {
            return Ok(Err(out));
        }
        let l = String::from_utf8_lossy(line);
        let l = l.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Ok(Ok(head));
        }
        if let Err(out) = head.header(l) {
            return Ok(Err(out));
        }
    }
}

/// The body: chunked, by `content-length`, or none.
async fn read_body<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    head: &Head,
    line: &mut Vec<u8>,
) -> Result<Step<Vec<u8>>> {
    if head.chunked {
        return read_chunked(rd, line).await;
    }
    let mut body = Vec::new();
    if let Some(n) = head.content_length {
        if n > MAX_BODY {
            return Ok(Err(ReadOutcome::Bad("body too large")));
        }
        body.resize(n, 0);
        rd.read_exact(&mut body).await?;
    }
    Ok(Ok(body))
}

/// A chunked body, up to and including its trailers.
async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    line: &mut Vec<u8>,
) -> Result<Step<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', line).await? == 0 {
            return Ok(Err(ReadOutcome::Closed));
        }
        let size_str = String::from_utf8_lossy(line);
        let size_str = size_str.trim().split(';').next().unwrap_or("").to_string();
        let Ok(size) = usize::from_str_radix(&size_str, 16) else {
            return Ok(Err(ReadOutcome::Bad("bad chunk size")));
        };
        if body.len() + size > MAX_BODY {
            return Ok(Err(ReadOutcome::Bad("body too large")));
        }
        if size == 0 {
            // Trailers until an empty line.
            loop {
                line.clear();
                if rd.read_until(b'\n', line).await? == 0 {
                    break;
                }
                if *line == b"\r\n" || *line == b"\n" {
                    break;
                }
            }
            return Ok(Ok(body));
        }
        let start = body.len();
        body.resize(start + size, 0);
        rd.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        rd.read_exact(&mut crlf).await?;
    }
}

async fn write_simple(
    wr: &mut (impl AsyncWriteExt + Unpin),
    status: &str,
    body: &serde_json::Value,
    keep_alive: bool,
) -> std::io::Result<()> {
    let b = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {}\r\n\r\n",
        b.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    wr.write_all(format!("{head}{b}").as_bytes()).await
}

async fn connection(st: Arc<MockState>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let req = match tokio::time::timeout(KEEP_ALIVE_IDLE, read_request(&mut rd)).await {
            Err(_) | Ok(Err(_)) | Ok(Ok(ReadOutcome::Closed)) => return,
            Ok(Ok(ReadOutcome::Bad(why))) => {
                st.c.bad_requests.fetch_add(1, Ordering::Relaxed);
                let _ = write_simple(
                    &mut wr,
                    "400 Bad Request",
                    &json!({"error": {"message": why, "type": "invalid_request_error"}}),
                    false,
                )
                .await;
                return;
            }
            Ok(Ok(ReadOutcome::Request(r))) => r,
        };
        st.c.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.path.split('?').next().unwrap_or("");
        let ok = match (req.method.as_str(), path) {
            ("POST", "/v1/chat/completions") | ("POST", "/chat/completions") => {
                completion(&st, &mut wr, &req).await
            }
            ("GET", "/health") | ("GET", "/") => write_simple(
                &mut wr,
                "200 OK",
                &json!({"status": "ok", "provider": "echo-load openai-mock"}),
                req.keep_alive,
            )
            .await
            .is_ok(),
            ("GET", "/v1/models") => write_simple(
                &mut wr,
                "200 OK",
                &json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "echo-load"}]}),
                req.keep_alive,
            )
            .await
            .is_ok(),
            _ => {
                st.c.bad_requests.fetch_add(1, Ordering::Relaxed);
                write_simple(
                    &mut wr,
                    "404 Not Found",
                    &json!({"error": {"message": format!("no route {} {}", req.method, path), "type": "invalid_request_error"}}),
                    req.keep_alive,
                )
                .await
                .is_ok()
            }
        };
        if !ok || !req.keep_alive {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

/// Answers a chat completion request with a stream; returns false when the connection must
/// be closed.
async fn completion(st: &MockState, wr: &mut (impl AsyncWriteExt + Unpin), req: &Request) -> bool {
    let t_req = tokio::time::Instant::now();
    let reply = match Reply::of(st, &req.body) {
        Ok(r) => r,
        Err(message) => {
            st.c.bad_requests.fetch_add(1, Ordering::Relaxed);
            return write_simple(
                wr,
                "400 Bad Request",
                &json!({"error": {"message": message, "type": "invalid_request_error"}}),
                req.keep_alive,
            )
            .await
            .is_ok();
        }
    };
    st.c.streams_started.fetch_add(1, Ordering::Relaxed);
    let active = st.c.active.fetch_add(1, Ordering::Relaxed) + 1;
    st.c.max_active.fetch_max(active, Ordering::Relaxed);
    let mut lag = LocalBatch::new(st.emit_lag.clone());
    let result = reply.stream(st, wr, req.keep_alive, t_req, &mut lag).await;
    lag.flush();
    st.c.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(()) => {
            st.c.streams_completed.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(_) => {
            st.c.streams_aborted.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// The streamed reply a request asks for.
struct Reply {
    /// Content chunks (tokens) to send.
    n_tokens: usize,
    /// `finish_reason` of the finish chunk.
    finish: &'static str,
    include_usage: bool,
    /// The start of every chunk's JSON: id, object, created, model.
    prefix: String,
}

impl Reply {
    /// The reply to a request body, or why the request is refused.
    fn of(st: &MockState, body: &[u8]) -> std::result::Result<Self, String> {
        let body: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        if body.get("stream").and_then(|s| s.as_bool()) != Some(true) {
            return Err("this mock only streams: set \"stream\": true".into());
        }
        let model = body
            .get("model")
            .and_then(|m| m.as_str())
            .unwrap_or("mock-model");
        let model_json = serde_json::to_string(model).unwrap_or_else(|_| "\"mock-model\"".into());
        let cap = body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
        let n_tokens = cap.map_or(st.cfg.tokens, |c| c.min(st.cfg.tokens));
        let finish = if n_tokens < st.cfg.tokens {
            "length"
        } else {
            "stop"
        };
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let id = format!("chatcmpl-mock-{}", st.seq.fetch_add(1, Ordering::Relaxed));
        let created = unix_secs();
        let prefix = format!(
            r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":{model_json},"#
        );
        Ok(Self {
            n_tokens,
            finish,
            include_usage,
            prefix,
        })
    }

    /// One server-sent event carrying a chunk whose JSON ends with `payload`, as an HTTP chunk.
    fn chunk(&self, payload: &str) -> Vec<u8> {
        let data = format!("data: {}{payload}}}\n\n", self.prefix);
        let mut out = Vec::with_capacity(data.len() + 12);
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Writes the response: head and role chunk, the tokens on schedule (their lateness
    /// recorded in `lag`), then the finish, usage and `[DONE]` events.
    async fn stream(
        &self,
        st: &MockState,
        wr: &mut (impl AsyncWriteExt + Unpin),
        keep_alive: bool,
        t_req: tokio::time::Instant,
        lag: &mut LocalBatch,
    ) -> std::io::Result<()> {
        wr.write_all(&self.head(keep_alive)).await?;
        let first = t_req + st.cfg.first_token;
        let step = if st.cfg.rate > 0.0 {
            Duration::from_secs_f64(1.0 / st.cfg.rate)
        } else {
            Duration::ZERO
        };
        for i in 0..self.n_tokens {
            let due = first + step.mul_f64(i as f64);
            // A past deadline still waits for the timer's next 1 ms tick: skip it.
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let late = tokio::time::Instant::now().saturating_duration_since(due);
            lag.record(late.as_micros() as u64);
            let payload = format!(
                r#""choices":[{{"index":0,"delta":{{"content":"{}|"}},"finish_reason":null}}]"#,
                unix_nanos()
            );
            wr.write_all(&self.chunk(&payload)).await?;
            st.c.tokens.fetch_add(1, Ordering::Relaxed);
        }
        wr.write_all(&self.tail()).await?;
        wr.flush().await
    }

    /// The response head and the role chunk.
    fn head(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n",
        );
        head.extend_from_slice(if keep_alive {
            b"connection: keep-alive\r\n\r\n"
        } else {
            b"connection: close\r\n\r\n"
        });
        head.extend_from_slice(&self.chunk(
            r#""choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#,
        ));
        head
    }

    /// The finish chunk, the usage chunk when asked for, `[DONE]` and the last HTTP chunk.
    fn tail(&self) -> Vec<u8> {
        let finish = self.finish;
        let mut tail = self.chunk(&format!(
            r#""choices":[{{"index":0,"delta":{{}},"finish_reason":"{finish}"}}]"#
        ));
        if self.include_usage {
            let prompt_tokens = 17;
            let n_tokens = self.n_tokens;
            tail.extend_from_slice(&self.chunk(&format!(
                r#""choices":[],"usage":{{"prompt_tokens":{prompt_tokens},"completion_tokens":{n_tokens},"total_tokens":{}}}"#,
                prompt_tokens + n_tokens
            )));
        }
        let done = "data: [DONE]\n\n";
        tail.extend_from_slice(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes());
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_requests() {
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /health HTTP/1.0\r\n\r\nPOST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut rd = BufReader::new(&raw[..]);
        let ReadOutcome::Request(a) = read_request(&mut rd).await.unwrap() else {
            panic!("first request")
        };
        assert_eq!(
            (a.method.as_str(), a.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        assert_eq!(a.body, b"{}");
        assert!(a.keep_alive);
        let ReadOutcome::Request(b) = read_request(&mut rd).await.unwrap() else {
            panic!("second request")
        };
        assert!(!b.keep_alive);
        let ReadOutcome::Request(c) = read_request(&mut rd).await.unwrap() else {
            panic!("third request")
        };
        assert_eq!(c.body, b"abc");
        assert!(!c.keep_alive);
        assert!(matches!(
            read_request(&mut rd).await.unwrap(),
            ReadOutcome::Closed
        ));
    }

    #[tokio::test]
    async fn streams_stamped_tokens() {
        let cfg = MockConfig {
            host: "127.0.0.1".parse().unwrap(),
            port: 0,
            tokens: 3,
            rate: 1000.0,
            first_token: Duration::from_millis(1),
            duration: Duration::from_secs(5),
            progress: false,
            out: None,
        };
        let st = MockState {
            cfg,
            c: MockCounters::default(),
            emit_lag: LatencySink::new(),
            seq: AtomicU64::new(0),
        };
        let req = Request {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            keep_alive: true,
            body: br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#.to_vec(),
        };
        let mut out = Vec::new();
        assert!(completion(&st, &mut out, &req).await);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        let events: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|l| *l != "[DONE]")
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // role, 3 tokens, finish, usage
        assert_eq!(events.len(), 6);
        for e in &events[1..4] {
            let c = e["choices"][0]["delta"]["content"].as_str().unwrap();
            let ns: u64 = c.strip_suffix('|').unwrap().parse().unwrap();
            assert!(ns > 1_600_000_000_000_000_000);
        }
        assert_eq!(events[4]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[5]["usage"]["completion_tokens"], 3);
        assert!(text.contains("data: [DONE]\n\n"));
        assert!(text.ends_with("0\r\n\r\n"));
        assert_eq!(st.c.tokens.load(Ordering::Relaxed), 3);
    }
}
