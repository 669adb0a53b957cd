//! AI replies: the provider interface (streaming chat completions and speech-to-text), its two
//! providers (`openai`, any OpenAI-compatible endpoint; `dev`, a built-in development aid), the
//! `Generation` actor that streams one reply to its chat's room, the registry of in-flight
//! generations, and [`Replies`], the service REST and WebSocket start, cancel and resume replies
//! through. Other nodes' replies are behind [`ReplyCluster`]. (The AI SDK wire formats REST
//! callers read are HTTP framing: `routes::sdk_stream`.)

pub mod cluster;
pub mod dev;
pub mod generation;
pub mod messages;
pub mod openai;
pub mod prompt;
pub mod registry;
pub mod replies;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use cluster::{ReplyCluster, RoomWatch};
pub use replies::Replies;

use crate::config::{AiProviderKind, AiSettings};

/// Who said a prompt message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions that open the prompt.
    System,
    /// A person in the chat.
    User,
    /// An earlier AI reply.
    Assistant,
}

/// One message of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    /// Who said it.
    pub role: Role,
    /// The text.
    pub content: String,
}

/// A streaming chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model to ask.
    pub model: String,
    /// System prompt and history, oldest first; the last one is the user's new message.
    pub messages: Vec<PromptMessage>,
    /// Cap on the reply's tokens.
    pub max_output_tokens: Option<u32>,
}

/// Token counts of one completion, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens of the reply.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// Why a reply ended, as docs/PROTOCOL.md names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished.
    Stop,
    /// The token cap was reached.
    Length,
    /// Someone cancelled it (or its only reader went away).
    Cancelled,
    /// The provider failed part-way.
    Error,
}

impl FinishReason {
    /// The reason named `s` (`stop`, `length`, `cancelled`, `error`).
    pub fn parse(s: &str) -> Option<FinishReason> {
        [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Cancelled,
            FinishReason::Error,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// `stop`, `length`, `cancelled` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}

/// One item of a streamed completion: text deltas, then exactly one `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// The next piece of the reply.
    Delta(String),
    /// The reply is complete.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
}

/// A provider failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AiError {
    /// The provider answered with an HTTP error.
    #[error("provider answered HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No response, or no next event, within the idle timeout.
    #[error("provider timed out: {0}")]
    Timeout(String),
    /// The connection could not be made or broke before a response.
    #[error("provider connection failed: {0}")]
    Transport(String),
    /// The event stream broke part-way.
    #[error("provider stream broke: {0}")]
    Stream(String),
    /// The provider sent something that is not a valid response.
    #[error("invalid provider response: {0}")]
    Invalid(String),
}

impl AiError {
    /// True for failures worth retrying before the first token: 429, 5xx, timeouts and broken
    /// connections.
    pub fn retryable(&self) -> bool {
        match self {
            AiError::Status { status, .. } => *status == 429 || *status >= 500,
            AiError::Timeout(_) | AiError::Transport(_) | AiError::Stream(_) => true,
            AiError::Invalid(_) => false,
        }
    }

    /// What a client may be told (no URLs, keys or provider internals).
    pub fn public_message(&self) -> String {
        match self {
            AiError::Status { status: 429, .. } => {
                "The AI provider is rate limiting requests; try again later".into()
            }
            AiError::Status { status, .. } => {
                format!("The AI provider returned an error (HTTP {status})")
            }
            AiError::Timeout(_) => "The AI provider timed out".into(),
            AiError::Transport(_) | AiError::Stream(_) => {
                "The connection to the AI provider broke".into()
            }
            AiError::Invalid(_) => "The AI provider sent an invalid response".into(),
        }
    }
}

/// A stretch of transcribed speech.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Start, in seconds from the beginning of the audio.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// What was said.
    pub text: String,
}

/// A transcription with timed segments (`verbose_json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    /// The whole text.
    pub text: String,
    /// Detected language, when reported.
    pub language: Option<String>,
    /// Length of the audio in seconds, when reported.
    pub duration: Option<f64>,
    /// Timed segments, in order.
    pub segments: Vec<Segment>,
}

/// A source of AI replies and transcriptions.
pub trait AiProvider: Send + Sync + 'static {
    /// `openai` or `dev`.
    fn name(&self) -> &'static str;

    /// The model used when a request names none.
    fn default_model(&self) -> &str;

    /// What `/health` shows under `services.ai`.
    fn health(&self) -> serde_json::Value;

    /// Streams a completion: text deltas, then one [`ChatChunk::Done`]; an `Err` item ends it.
    /// Nothing happens until the stream is first polled; dropping it aborts the request.
    fn stream_chat(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatChunk, AiError>>;

    /// Transcribes audio (`/audio/transcriptions`, `verbose_json`) into timed segments.
    fn transcribe(
        &self,
        audio: Bytes,
        filename: String,
    ) -> BoxFuture<'static, Result<Transcript, AiError>>;
}

/// The configured provider, logging which one runs.
pub fn build_provider(settings: &AiSettings) -> anyhow::Result<Arc<dyn AiProvider>> {
    Ok(match settings.provider {
        AiProviderKind::OpenAi => {
            let provider = openai::OpenAiProvider::new(settings)?;
            tracing::info!(
                provider = "openai",
                base_url = %settings.openai_base_url,
                model = %settings.model,
                "AI replies from an OpenAI-compatible endpoint"
            );
            Arc::new(provider)
        }
        AiProviderKind::Dev => {
            tracing::warn!(
                provider = "dev",
                tokens_per_sec = settings.dev_tokens_per_sec,
                "OPENAI_API_KEY is not set: AI replies come from the built-in DEVELOPMENT provider \
                 (canned text, not a model). Set OPENAI_API_KEY to use a real one."
            );
            Arc::new(dev::DevProvider::new(settings))
        }
    })
}
