//! The Vercel AI SDK's wire formats, so `useChat` front ends read replies unchanged:
//! `data` (data stream v1, AI SDK 4), `text` (plain deltas) and `ui` (UI message stream v1 over
//! SSE, AI SDK 5+). Each part is serialised from a struct, so keys keep docs/API.md's order and no
//! part carries a key docs/API.md does not list.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ai::messages::StreamUpdate;
use crate::ai::{FinishReason, Usage};

/// Updates sent in one HTTP chunk at most, when several are waiting.
const MAX_BATCH: usize = 64;

/// Which framing a streaming response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WireProtocol {
    /// AI SDK data stream v1 (`f:`, `0:`, `e:`, `d:`, `3:` lines).
    Data,
    /// Plain text deltas.
    Text,
    /// AI SDK UI message stream v1 (SSE).
    Ui,
}

impl WireProtocol {
    /// Parses a `protocol` value.
    pub fn parse(raw: &str) -> Option<WireProtocol> {
        match raw {
            "data" => Some(WireProtocol::Data),
            "text" => Some(WireProtocol::Text),
            "ui" => Some(WireProtocol::Ui),
            _ => None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataStart<'a> {
    message_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataFinishStep<'a> {
    finish_reason: &'a str,
    usage: &'a DataUsage,
    is_continued: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataFinishMessage<'a> {
    finish_reason: &'a str,
    usage: &'a DataUsage,
}

/// A UI message stream part.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum UiPart<'a> {
    Start {
        #[serde(rename = "messageId")]
        message_id: &'a str,
    },
    StartStep,
    TextStart {
        id: &'a str,
    },
    TextDelta {
        id: &'a str,
        delta: &'a str,
    },
    TextEnd {
        id: &'a str,
    },
    FinishStep,
    Finish,
    Error {
        #[serde(rename = "errorText")]
        error_text: &'a str,
    },
}

/// The AI SDK's name for why a reply ended.
fn sdk_finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "other",
        FinishReason::Error => "error",
    }
}

fn json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs of strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Frames one reply in one protocol.
#[derive(Debug, Clone)]
pub struct Framer {
    protocol: WireProtocol,
    /// The reply's message id, also the id of its one text part.
    message_id: String,
}

impl Framer {
    /// A framer for the reply stored as `message_id`.
    pub fn new(protocol: WireProtocol, message_id: Uuid) -> Framer {
        Framer {
            protocol,
            message_id: message_id.to_string(),
        }
    }

    /// The response headers docs/API.md lists for the protocol.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self.protocol {
            WireProtocol::Data => &[
                ("content-type", "text/plain; charset=utf-8"),
                ("x-vercel-ai-data-stream", "v1"),
            ],
            WireProtocol::Text => &[("content-type", "text/plain; charset=utf-8")],
            WireProtocol::Ui => &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-vercel-ai-ui-message-stream", "v1"),
                ("x-accel-buffering", "no"),
            ],
        }
    }

    fn sse(out: &mut BytesMut, part: &UiPart<'_>) {
        out.put_slice(b"data: ");
        out.put_slice(json(part).as_bytes());
        out.put_slice(b"\n\n");
    }

    /// What opens the stream.
    pub fn start(&self, out: &mut BytesMut) {
        match self.protocol {
            WireProtocol::Data => {
                out.put_slice(b"f:");
                out.put_slice(
                    json(&DataStart {
                        message_id: &self.message_id,
                    })
                    .as_bytes(),
                );
                out.put_u8(b'\n');
            }
            WireProtocol::Text => {}
            WireProtocol::Ui => {
                let id = self.message_id.as_str();
                Self::sse(out, &UiPart::Start { message_id: id });
                Self::sse(out, &UiPart::StartStep);
                Self::sse(out, &UiPart::TextStart { id });
            }
        }
    }

    /// One text delta.
    pub fn delta(&self, out: &mut BytesMut, text: &str) {
        match self.protocol {
            WireProtocol::Data => {
                out.put_slice(b"0:");
                out.put_slice(json(&text).as_bytes());
                out.put_u8(b'\n');
            }
            WireProtocol::Text => out.put_slice(text.as_bytes()),
            WireProtocol::Ui => Self::sse(
                out,
                &UiPart::TextDelta {
                    id: &self.message_id,
                    delta: text,
                },
            ),
        }
    }

    /// What closes a complete (or cancelled) reply.
    pub fn finish(&self, out: &mut BytesMut, reason: FinishReason, usage: Usage) {
        match self.protocol {
            WireProtocol::Data => {
                let usage = DataUsage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                };
                let finish_reason = sdk_finish_reason(reason);
                out.put_slice(b"e:");
                out.put_slice(
                    json(&DataFinishStep {
                        finish_reason,
                        usage: &usage,
                        is_continued: false,
                    })
                    .as_bytes(),
                );
                out.put_slice(b"\nd:");
                out.put_slice(
                    json(&DataFinishMessage {
                        finish_reason,
                        usage: &usage,
                    })
                    .as_bytes(),
                );
                out.put_u8(b'\n');
            }
            WireProtocol::Text => {}
            WireProtocol::Ui => {
                Self::sse(
                    out,
                    &UiPart::TextEnd {
                        id: &self.message_id,
                    },
                );
                Self::sse(out, &UiPart::FinishStep);
                Self::sse(out, &UiPart::Finish);
                out.put_slice(b"data: [DONE]\n\n");
            }
        }
    }

    /// What reports a failure; `false` when the protocol cannot say it (plain text), in which
    /// case the response is aborted instead.
    pub fn error(&self, out: &mut BytesMut, message: &str) -> bool {
        match self.protocol {
            WireProtocol::Data => {
                out.put_slice(b"3:");
                out.put_slice(json(&message).as_bytes());
                out.put_u8(b'\n');
                true
            }
            WireProtocol::Text => false,
            WireProtocol::Ui => {
                Self::sse(
                    out,
                    &UiPart::Error {
                        error_text: message,
                    },
                );
                out.put_slice(b"data: [DONE]\n\n");
                true
            }
        }
    }
}

/// Why a plain-text stream was aborted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamAborted(pub String);

struct BodyState {
    framer: Framer,
    /// What to send first (the opening parts and any text so far).
    head: Option<Bytes>,
    updates: mpsc::UnboundedReceiver<StreamUpdate>,
    waiting: VecDeque<StreamUpdate>,
    over: bool,
}

/// The response body: the opening parts, `text_so_far` (a resumed reply), then every update
/// until the reply ends. Waiting updates are sent together in one chunk.
pub fn body(
    framer: Framer,
    text_so_far: &str,
    updates: mpsc::UnboundedReceiver<StreamUpdate>,
) -> impl Stream<Item = Result<Bytes, StreamAborted>> + 'static {
    let mut head = BytesMut::new();
    framer.start(&mut head);
    if !text_so_far.is_empty() {
        framer.delta(&mut head, text_so_far);
    }
    let state = BodyState {
        framer,
        head: Some(head.freeze()),
        updates,
        waiting: VecDeque::new(),
        over: false,
    };
    stream::unfold(state, |mut st| async move {
        if let Some(head) = st.head.take() {
            if !head.is_empty() {
                return Some((Ok(head), st));
            }
        }
        if st.over {
            return None;
        }
        if st.waiting.is_empty() {
            let first = st.updates.recv().await.unwrap_or(StreamUpdate::Failed {
                error: "The reply was interrupted".into(),
            });
            st.waiting.push_back(first);
            while st.waiting.len() < MAX_BATCH {
                match st.updates.try_recv() {
                    Ok(u) => st.waiting.push_back(u),
                    Err(_) => break,
                }
            }
        }
        let mut out = BytesMut::new();
        while let Some(update) = st.waiting.pop_front() {
            match update {
                StreamUpdate::Delta(d) => st.framer.delta(&mut out, &d),
                StreamUpdate::Finished {
                    finish_reason,
                    usage,
                } => {
                    st.framer.finish(&mut out, finish_reason, usage);
                    st.over = true;
                    break;
                }
                StreamUpdate::Failed { error } => {
                    st.over = true;
                    if !st.framer.error(&mut out, &error) {
                        if out.is_empty() {
                            return Some((Err(StreamAborted(error)), st));
                        }
                        // Send the text that came before the failure, then abort.
                        st.waiting.push_front(StreamUpdate::Failed { error });
                        st.over = false;
                    }
                    break;
                }
            }
        }
        Some((Ok(out.freeze()), st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn run(protocol: WireProtocol, updates: Vec<StreamUpdate>) -> Vec<Result<Bytes, String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        for u in updates {
            tx.send(u).unwrap();
        }
        drop(tx);
        body(Framer::new(protocol, Uuid::nil()), "", rx)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    fn text(chunks: &[Result<Bytes, String>]) -> String {
        chunks
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn data_frames_escape_json_and_close_with_e_and_d() {
        let out = run(
            WireProtocol::Data,
            vec![
                StreamUpdate::Delta("a \"q\"\n".into()),
                StreamUpdate::Finished {
                    finish_reason: FinishReason::Stop,
                    usage: Usage::new(3, 1),
                },
            ],
        )
        .await;
        let id = Uuid::nil();
        assert_eq!(
            text(&out),
            format!(
                "f:{{\"messageId\":\"{id}\"}}\n0:\"a \\\"q\\\"\\n\"\n\
                 e:{{\"finishReason\":\"stop\",\"usage\":{{\"promptTokens\":3,\"completionTokens\":1}},\"isContinued\":false}}\n\
                 d:{{\"finishReason\":\"stop\",\"usage\":{{\"promptTokens\":3,\"completionTokens\":1}}}}\n"
            )
        );
    }

    #[tokio::test]
    async fn a_failed_text_stream_sends_its_text_then_aborts() {
        let out = run(
            WireProtocol::Text,
            vec![
                StreamUpdate::Delta("partial".into()),
                StreamUpdate::Failed {
                    error: "broke".into(),
                },
            ],
        )
        .await;
        assert_eq!(text(&out), "partial");
        assert_eq!(out.last().unwrap().as_ref().unwrap_err(), "broke");
    }

    #[tokio::test]
    async fn a_ui_error_is_an_error_part_then_done() {
        let out = run(
            WireProtocol::Ui,
            vec![StreamUpdate::Failed {
                error: "nope".into(),
            }],
        )
        .await;
        assert!(text(&out)
            .ends_with("data: {\"type\":\"error\",\"errorText\":\"nope\"}\n\ndata: [DONE]\n\n"));
    }
}
