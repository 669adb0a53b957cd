//! The development provider: the default when no `OPENAI_API_KEY` is set. It streams a
//! deterministic, plainly labelled reply word by word at a configurable pace, so the server and
//! its UI can be run and load-tested without an account. It is not a model.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::json;

use super::prompt::estimate_prompt_tokens;
use super::{
    AiError, AiProvider, ChatChunk, ChatRequest, FinishReason, Role, Segment, Transcript, Usage,
};
use crate::config::AiSettings;

/// Characters of the user's message quoted back in a development reply.
const QUOTE_CHARS: usize = 60;
/// Seconds of audio one development transcript segment stands for.
const SEGMENT_SECS: f64 = 5.0;
/// Bytes of audio assumed per development transcript segment.
const BYTES_PER_SEGMENT: usize = 80_000;
/// Most segments a development transcript has.
const MAX_SEGMENTS: usize = 24;

/// The built-in development provider.
pub struct DevProvider {
    model: String,
    interval: Duration,
    first_token: Duration,
    reply_tokens: Option<usize>,
}

impl DevProvider {
    /// A provider paced by `AI_DEV_TOKENS_PER_SEC` and `AI_DEV_FIRST_TOKEN_MS`.
    pub fn new(settings: &AiSettings) -> DevProvider {
        DevProvider {
            model: settings.model.clone(),
            interval: Duration::from_secs_f64(1.0 / settings.dev_tokens_per_sec),
            first_token: settings.dev_first_token,
            reply_tokens: settings.dev_reply_tokens,
        }
    }

    /// The reply to `request`, split into tokens (words with their leading space).
    pub fn reply_tokens(&self, request: &ChatRequest) -> Vec<String> {
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let words = last.split_whitespace().count();
        let mut quote: String = last
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(QUOTE_CHARS)
            .collect();
        if quote.chars().count() < last.trim().chars().count() {
            quote.push('…');
        }
        let text = format!(
            "This is Echo's development provider, not an AI model. You wrote {words} {} \
             (\"{quote}\"), and this canned reply streams back word by word so the chat can be \
             tried without an account. Set OPENAI_API_KEY to get real answers.",
            if words == 1 { "word" } else { "words" }
        );
        let words: Vec<&str> = text.split(' ').collect();
        let n = self.reply_tokens.unwrap_or(words.len());
        (0..n)
            .map(|i| {
                let word = words[i % words.len()];
                if i == 0 {
                    word.to_string()
                } else {
                    format!(" {word}")
                }
            })
            .collect()
    }
}

impl AiProvider for DevProvider {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    fn health(&self) -> serde_json::Value {
        json!({
            "status": "ok",
            "provider": "dev",
            "model": self.model,
            "message": "development provider: canned replies, not an AI model (set OPENAI_API_KEY)",
        })
    }

    fn stream_chat(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatChunk, AiError>> {
        let tokens = self.reply_tokens(&request);
        let prompt_tokens = estimate_prompt_tokens(&request.messages);
        let completion = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let (first, interval) = (self.first_token, self.interval);
        let items: Vec<Result<ChatChunk, AiError>> = tokens
            .into_iter()
            .map(|t| Ok(ChatChunk::Delta(t)))
            .chain(std::iter::once(Ok(ChatChunk::Done {
                finish_reason: FinishReason::Stop,
                usage: Usage::new(prompt_tokens, completion),
            })))
            .collect();
        // Each item is due at a fixed time from the first poll, so pacing does not drift.
        stream::unfold(
            (items.into_iter(), None::<tokio::time::Instant>, 0u32),
            move |(mut items, start, i)| async move {
                let item = items.next()?;
                let t0 = start.unwrap_or_else(tokio::time::Instant::now);
                tokio::time::sleep_until(t0 + first + interval * i).await;
                Some((item, (items, Some(t0), i.saturating_add(1))))
            },
        )
        .boxed()
    }

    fn transcribe(
        &self,
        audio: Bytes,
        filename: String,
    ) -> BoxFuture<'static, Result<Transcript, AiError>> {
        Box::pin(async move {
            let n = (audio.len() / BYTES_PER_SEGMENT).clamp(1, MAX_SEGMENTS);
            let segments: Vec<Segment> = (0..n)
                .map(|i| Segment {
                    start: i as f64 * SEGMENT_SECS,
                    end: (i + 1) as f64 * SEGMENT_SECS,
                    text: format!(
                        "Development transcript of {filename}, part {} of {n}.",
                        i + 1
                    ),
                })
                .collect();
            Ok(Transcript {
                text: segments
                    .iter()
                    .map(|s| s.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                language: Some("en".into()),
                duration: Some(n as f64 * SEGMENT_SECS),
                segments,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::PromptMessage;
    use std::collections::HashMap;

    fn provider(extra: &[(&str, &str)]) -> DevProvider {
        let env: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DevProvider::new(&AiSettings::from_map(&env).unwrap())
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            model: "echo-dev".into(),
            messages: vec![PromptMessage {
                role: Role::User,
                content: text.into(),
            }],
            max_output_tokens: None,
        }
    }

    #[tokio::test]
    async fn the_reply_is_deterministic_and_ends_with_usage() {
        let p = provider(&[
            ("AI_DEV_TOKENS_PER_SEC", "1000"),
            ("AI_DEV_FIRST_TOKEN_MS", "0"),
        ]);
        let a: Vec<_> = p.stream_chat(request("hello there")).collect().await;
        let b: Vec<_> = p.stream_chat(request("hello there")).collect().await;
        assert_eq!(a, b);
        let text: String = a
            .iter()
            .filter_map(|c| match c {
                Ok(ChatChunk::Delta(d)) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert!(text.contains("development provider"), "{text}");
        assert!(text.contains("\"hello there\""), "{text}");
        match a.last() {
            Some(Ok(ChatChunk::Done { usage, .. })) => {
                assert_eq!(usage.completion_tokens as usize, a.len() - 1)
            }
            other => panic!("no Done: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_configured_length_gives_exactly_that_many_tokens() {
        let p = provider(&[
            ("AI_DEV_TOKENS_PER_SEC", "1000"),
            ("AI_DEV_FIRST_TOKEN_MS", "0"),
            ("AI_DEV_REPLY_TOKENS", "200"),
        ]);
        let all: Vec<_> = p.stream_chat(request("x")).collect().await;
        assert_eq!(all.len(), 201);
    }
}
