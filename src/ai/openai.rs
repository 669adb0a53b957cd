//! The OpenAI-compatible provider, through async-openai: streaming chat completions with usage
//! (`stream_options.include_usage`), connect and idle timeouts, and retries with backoff on
//! 429/5xx and broken connections *before the first token* only, so a reply is never repeated.

use std::collections::VecDeque;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::audio::{
    AudioInput, AudioResponseFormat, CreateTranscriptionRequest, TimestampGranularity,
};
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionResponseStream, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionStreamResponse, FinishReason as OpenAiFinish,
};
use async_openai::types::InputSource;
use async_openai::Client;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::{
    AiError, AiProvider, ChatChunk, ChatRequest, FinishReason, Role, Segment, Transcript, Usage,
};
use crate::config::AiSettings;

/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Retry policy and timeouts shared by every request.
#[derive(Debug, Clone, Copy)]
struct Policy {
    idle: Duration,
    max_retries: u32,
    retry_base: Duration,
}

impl Policy {
    /// The pause before retry number `attempt` (1-based): exponential, capped, with jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        let jitter: f64 = rand::random::<f64>() * 0.25;
        exp.mul_f64(1.0 + jitter)
    }
}

/// An OpenAI-compatible endpoint (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `AI_MODEL`).
pub struct OpenAiProvider {
    client: Client<OpenAIConfig>,
    model: String,
    transcription_model: String,
    base_url: String,
    policy: Policy,
}

impl OpenAiProvider {
    /// A client with the configured timeouts. TLS uses rustls with the ring provider.
    pub fn new(settings: &AiSettings) -> anyhow::Result<OpenAiProvider> {
        // Fails harmlessly when a provider is already installed (a second node in one process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest_openai::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.idle_timeout)
            .build()?;
        let config = OpenAIConfig::new()
            .with_api_base(settings.openai_base_url.clone())
            .with_api_key(settings.openai_api_key.clone().unwrap_or_default());
        // A plain transport: async-openai's default stack retries on its own, even where a
        // retry could repeat a reply; here retries happen only before the first token.
        let transport = async_openai::middleware::ReqwestService::new(http.clone());
        Ok(OpenAiProvider {
            client: Client::build(http, config).with_http_service(transport),
            model: settings.model.clone(),
            transcription_model: settings.transcription_model.clone(),
            base_url: settings.openai_base_url.clone(),
            policy: Policy {
                idle: settings.idle_timeout,
                max_retries: settings.max_retries,
                retry_base: settings.retry_base,
            },
        })
    }
}

/// The request async-openai sends for `request`.
fn completion_request(request: &ChatRequest) -> CreateChatCompletionRequest {
    let messages = request
        .messages
        .iter()
        .map(|m| match m.role {
            Role::System => ChatCompletionRequestMessage::System(
                ChatCompletionRequestSystemMessage::from(m.content.as_str()),
            ),
            Role::User => ChatCompletionRequestMessage::User(
                ChatCompletionRequestUserMessage::from(m.content.as_str()),
            ),
            Role::Assistant => ChatCompletionRequestMessage::Assistant(
                ChatCompletionRequestAssistantMessage::from(m.content.as_str()),
            ),
        })
        .collect();
    CreateChatCompletionRequest {
        model: request.model.clone(),
        messages,
        stream: Some(true),
        stream_options: Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        max_completion_tokens: request.max_output_tokens,
        ..Default::default()
    }
}

/// Maps async-openai's error to ours.
fn classify(e: OpenAIError) -> AiError {
    match e {
        OpenAIError::ApiError(r) => AiError::Status {
            status: r.status_code.as_u16(),
            message: r.api_error.message,
        },
        OpenAIError::Reqwest(e) if e.is_timeout() => AiError::Timeout(e.to_string()),
        OpenAIError::Reqwest(e) if e.is_connect() || e.is_request() => {
            AiError::Transport(e.to_string())
        }
        OpenAIError::Reqwest(e) => AiError::Stream(e.to_string()),
        OpenAIError::StreamError(e) => AiError::Stream(e.to_string()),
        OpenAIError::JSONDeserialize(e, _) => AiError::Invalid(e.to_string()),
        other => AiError::Invalid(other.to_string()),
    }
}

/// One streamed completion, reconnecting while no token has been passed on yet.
struct Completion {
    client: Client<OpenAIConfig>,
    request: CreateChatCompletionRequest,
    policy: Policy,
    inner: Option<ChatCompletionResponseStream>,
    /// Retries used so far.
    retries: u32,
    /// A delta has been passed on: from here on a failure is final.
    started: bool,
    deltas: u32,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    ready: VecDeque<ChatChunk>,
    done: bool,
}

impl Completion {
    /// Handles a failure: `None` when it will be retried (after the backoff), else the error.
    async fn failed(&mut self, e: AiError) -> Option<AiError> {
        self.inner = None;
        if !self.started && e.retryable() && self.retries < self.policy.max_retries {
            self.retries += 1;
            let pause = self.policy.backoff(self.retries);
            tracing::warn!(error = %e, retry = self.retries, ?pause, "AI provider failed before the first token; retrying");
            self.finish = None;
            self.usage = None;
            tokio::time::sleep(pause).await;
            return None;
        }
        self.done = true;
        Some(e)
    }

    async fn next_item(&mut self) -> Option<Result<ChatChunk, AiError>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some(Ok(chunk));
            }
            if self.done {
                return None;
            }
            let step = match self.inner.as_mut() {
                None => self.open().await,
                Some(inner) => match tokio::time::timeout(self.policy.idle, inner.next()).await {
                    Err(_) => Err(AiError::Timeout("the provider stopped sending".into())),
                    Ok(Some(Err(e))) => Err(classify(e)),
                    Ok(Some(Ok(chunk))) => {
                        self.take(chunk);
                        Ok(())
                    }
                    Ok(None) => self.ended(),
                },
            };
            if let Err(e) = step {
                if let Some(e) = self.failed(e).await {
                    return Some(Err(e));
                }
            }
        }
    }

    /// Sends the request and keeps its event stream (the first attempt or a retry).
    async fn open(&mut self) -> Result<(), AiError> {
        let chat = self.client.chat();
        let open = chat.create_stream(self.request.clone());
        match tokio::time::timeout(self.policy.idle, open).await {
            Ok(Ok(stream)) => {
                self.inner = Some(stream);
                Ok(())
            }
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(AiError::Timeout("no response from the provider".into())),
        }
    }

    /// Takes one streamed chunk: its text delta (first choice only: `n` is never set), its
    /// finish reason and its usage.
    fn take(&mut self, chunk: CreateChatCompletionStreamResponse) {
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage::new(u.prompt_tokens, u.completion_tokens));
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return;
        };
        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
            self.started = true;
            self.deltas = self.deltas.saturating_add(1);
            self.ready.push_back(ChatChunk::Delta(text));
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(match reason {
                OpenAiFinish::Length => FinishReason::Length,
                _ => FinishReason::Stop,
            });
        }
    }

    /// The event stream ended: the reply is done if it said how it finished, else it broke.
    fn ended(&mut self) -> Result<(), AiError> {
        self.inner = None;
        let Some(finish_reason) = self.finish else {
            return Err(AiError::Stream(
                "the stream ended before the reply did".into(),
            ));
        };
        self.done = true;
        // A server that ignores include_usage still gets a count of deltas.
        let usage = self.usage.unwrap_or_else(|| Usage::new(0, self.deltas));
        self.ready.push_back(ChatChunk::Done {
            finish_reason,
            usage,
        });
        Ok(())
    }
}

/// The part of a `verbose_json` transcription this server reads; lenient, since compatible
/// servers differ in what else they send.
#[derive(Deserialize)]
struct VerboseTranscript {
    #[serde(default)]
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    segments: Vec<VerboseSegment>,
}

#[derive(Deserialize)]
struct VerboseSegment {
    start: f64,
    end: f64,
    text: String,
}

impl AiProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    fn health(&self) -> serde_json::Value {
        json!({
            "status": "ok",
            "provider": "openai",
            "model": self.model,
            "base_url": self.base_url,
        })
    }

    fn stream_chat(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatChunk, AiError>> {
        let state = Completion {
            client: self.client.clone(),
            request: completion_request(&request),
            policy: self.policy,
            inner: None,
            retries: 0,
            started: false,
            deltas: 0,
            finish: None,
            usage: None,
            ready: VecDeque::new(),
            done: false,
        };
        stream::unfold(state, |mut state| async move {
            state.next_item().await.map(|item| (item, state))
        })
        .boxed()
    }

    fn transcribe(
        &self,
        audio: Bytes,
        filename: String,
    ) -> BoxFuture<'static, Result<Transcript, AiError>> {
        let client = self.client.clone();
        let model = self.transcription_model.clone();
        let policy = self.policy;
        Box::pin(async move {
            let request = CreateTranscriptionRequest {
                file: AudioInput {
                    source: InputSource::Bytes {
                        filename,
                        bytes: audio,
                    },
                },
                model,
                response_format: Some(AudioResponseFormat::VerboseJson),
                timestamp_granularities: Some(vec![TimestampGranularity::Segment]),
                ..Default::default()
            };
            let mut retries = 0;
            let raw = loop {
                match client
                    .audio()
                    .transcription()
                    .create_raw(request.clone())
                    .await
                {
                    Ok(raw) => break raw,
                    Err(e) => {
                        let e = classify(e);
                        if e.retryable() && retries < policy.max_retries {
                            retries += 1;
                            tracing::warn!(error = %e, retry = retries, "transcription failed; retrying");
                            tokio::time::sleep(policy.backoff(retries)).await;
                            continue;
                        }
                        return Err(e);
                    }
                }
            };
            let parsed: VerboseTranscript = serde_json::from_slice(&raw)
                .map_err(|e| AiError::Invalid(format!("transcription: {e}")))?;
            Ok(Transcript {
                text: parsed.text.trim().to_string(),
                language: parsed.language,
                duration: parsed.duration,
                segments: parsed
                    .segments
                    .into_iter()
                    .map(|s| Segment {
                        start: s.start,
                        end: s.end,
                        text: s.text.trim().to_string(),
                    })
                    .collect(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::PromptMessage;

    #[test]
    fn the_request_streams_with_usage_and_keeps_roles_in_order() {
        let r = completion_request(&ChatRequest {
            model: "m".into(),
            messages: vec![
                PromptMessage {
                    role: Role::System,
                    content: "s".into(),
                },
                PromptMessage {
                    role: Role::User,
                    content: "u".into(),
                },
                PromptMessage {
                    role: Role::Assistant,
                    content: "a".into(),
                },
            ],
            max_output_tokens: None,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let roles: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy {
            idle: Duration::from_secs(1),
            max_retries: 5,
            retry_base: Duration::from_millis(100),
        };
        assert!(p.backoff(1) >= Duration::from_millis(100));
        assert!(p.backoff(3) >= Duration::from_millis(400));
        assert!(p.backoff(20) <= MAX_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn only_429_and_5xx_statuses_are_retried() {
        let s = |status| AiError::Status {
            status,
            message: String::new(),
        };
        assert!(s(429).retryable());
        assert!(s(503).retryable());
        assert!(!s(400).retryable());
        assert!(!s(401).retryable());
    }
}
