//! A real OpenAI-compatible HTTP server for tests: `POST /v1/chat/completions` streams
//! `chat.completion.chunk` events over SSE (then a usage chunk and `data: [DONE]`), and
//! `POST /v1/audio/transcriptions` answers `verbose_json`. Each request takes the next step of
//! a script (a status error, a reply, a reply that breaks or stalls part-way), so the
//! production async-openai client can be tested against every failure it must handle.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

/// What the server does with one chat completion request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answers this HTTP status with an OpenAI error body, before any event.
    Status(u16),
    /// Streams the reply completely.
    Reply(Reply),
    /// Streams these tokens, then breaks the connection without finishing.
    BreakAfter(Reply),
    /// Streams these tokens, then sends nothing more while keeping the connection open.
    StallAfter(Reply),
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The text deltas, in order.
    pub tokens: Vec<String>,
    /// Pause before each token.
    pub delay: Duration,
    /// `prompt_tokens` reported in the usage chunk.
    pub prompt_tokens: u32,
    /// `finish_reason` of the last choice chunk.
    pub finish_reason: &'static str,
}

impl Reply {
    /// A reply of `tokens` with no pauses, 17 prompt tokens, finishing with `stop`.
    pub fn of(tokens: &[&str]) -> Reply {
        Reply {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            delay: Duration::ZERO,
            prompt_tokens: 17,
            finish_reason: "stop",
        }
    }

    /// `n` tokens `t0 `, `t1 `, … paced `delay` apart.
    pub fn numbered(n: usize, delay: Duration) -> Reply {
        Reply {
            tokens: (0..n).map(|i| format!("t{i} ")).collect(),
            delay,
            prompt_tokens: 17,
            finish_reason: "stop",
        }
    }

    /// The whole text.
    pub fn text(&self) -> String {
        self.tokens.concat()
    }
}

struct Shared {
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    requests: Mutex<Vec<Value>>,
    transcriptions: Mutex<Vec<Bytes>>,
}

/// A running mock server.
pub struct MockOpenAi {
    /// `http://127.0.0.1:<port>/v1`, for `OPENAI_BASE_URL`.
    pub base_url: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl MockOpenAi {
    /// Starts a server whose requests take `default` unless a scripted step is queued.
    pub fn start(default: Step) -> MockOpenAi {
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            requests: Mutex::new(Vec::new()),
            transcriptions: Mutex::new(Vec::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let data = web::Data::from(shared.clone());
        std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                        .route("/v1/chat/completions", web::post().to(completions))
                        .route("/v1/audio/transcriptions", web::post().to(transcriptions))
                })
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("bind mock");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).expect("report port");
                let _ = server.await;
            });
        });
        let (port, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("mock server started");
        MockOpenAi {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            shared,
            handle,
        }
    }

    /// Queues steps taken by the next requests, in order, before the default.
    pub fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.shared.script.lock().expect("script").extend(steps);
    }

    /// Every chat completion request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// Every transcription request body (multipart) received so far.
    pub fn transcription_bodies(&self) -> Vec<Bytes> {
        self.shared
            .transcriptions
            .lock()
            .expect("transcriptions")
            .clone()
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn chunk(delta: Value, finish_reason: Option<&str>) -> Bytes {
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "mock-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    Bytes::from(format!("data: {body}\n\n"))
}

fn usage_chunk(prompt: u32, completion: u32) -> Bytes {
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "mock-model",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    });
    Bytes::from(format!("data: {body}\n\n"))
}

enum Item {
    Data(Bytes),
    Wait(Duration),
    Break,
    Stall,
}

async fn completions(shared: web::Data<Shared>, body: web::Json<Value>) -> HttpResponse {
    shared.requests.lock().expect("requests").push(body.0);
    let step = {
        let next = shared.script.lock().expect("script").pop_front();
        next.unwrap_or_else(|| shared.default.lock().expect("default").clone())
    };
    let (reply, end) = match step {
        Step::Status(code) => {
            let status = actix_web::http::StatusCode::from_u16(code).expect("status");
            return HttpResponse::build(status).json(json!({"error": {
                "message": format!("scripted {code}"), "type": "server_error",
                "param": null, "code": null}}));
        }
        Step::Reply(r) => (r, None),
        Step::BreakAfter(r) => (r, Some(Item::Break)),
        Step::StallAfter(r) => (r, Some(Item::Stall)),
    };
    let mut items = vec![Item::Data(chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    for t in &reply.tokens {
        if !reply.delay.is_zero() {
            items.push(Item::Wait(reply.delay));
        }
        items.push(Item::Data(chunk(json!({"content": t}), None)));
    }
    match end {
        Some(end) => {
            // Let what came before reach the client first.
            items.push(Item::Wait(Duration::from_millis(100)));
            items.push(end);
        }
        None => {
            items.push(Item::Data(chunk(json!({}), Some(reply.finish_reason))));
            items.push(Item::Data(usage_chunk(
                reply.prompt_tokens,
                reply.tokens.len() as u32,
            )));
            items.push(Item::Data(Bytes::from_static(b"data: [DONE]\n\n")));
        }
    }
    let body = stream::iter(items)
        .then(|item| async move {
            match item {
                Item::Data(b) => Some(Ok(b)),
                Item::Wait(d) => {
                    tokio::time::sleep(d).await;
                    None
                }
                Item::Break => Some(Err(std::io::Error::other("scripted break"))),
                Item::Stall => {
                    futures_util::future::pending::<()>().await;
                    None
                }
            }
        })
        .filter_map(|x| async move { x });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

async fn transcriptions(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    shared
        .transcriptions
        .lock()
        .expect("transcriptions")
        .push(body);
    HttpResponse::Ok().json(json!({
        "task": "transcribe",
        "language": "english",
        "duration": 4.5,
        "text": " Hello there. General Kenobi.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0.0, "end": 2.0, "text": " Hello there.",
             "tokens": [1, 2], "temperature": 0.0, "avg_logprob": -0.1,
             "compression_ratio": 1.0, "no_speech_prob": 0.0},
            {"id": 1, "seek": 0, "start": 2.0, "end": 4.5, "text": " General Kenobi.",
             "tokens": [3, 4], "temperature": 0.0, "avg_logprob": -0.1,
             "compression_ratio": 1.0, "no_speech_prob": 0.0}
        ],
        "usage": {"type": "duration", "seconds": 5}
    }))
}
