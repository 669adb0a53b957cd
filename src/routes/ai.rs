//! `POST /chat` (AI SDK 4 and 5 request bodies), `POST /stream-message` and
//! `GET /chat/{chat_id}/stream`: AI replies streamed in the AI SDK's wire formats.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use super::sdk_stream::{self, Framer, WireProtocol};
use crate::ai::messages::StreamUpdate;
use crate::ai::replies::Prompt;
use crate::auth::AuthUser;
use crate::chat::{validate_content, validate_content_at};
use crate::error::{ApiError, ApiResult, ValidationIssue};
use crate::extract::{path_uuid, query_pairs, ApiJson, Validate};
use crate::state::AppState;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // Resources of their own (not `cfg.route`), so that another method is 405, not 404.
    cfg.service(web::resource("/chat").route(web::post().to(chat)))
        .service(web::resource("/stream-message").route(web::post().to(stream_message)))
        .service(web::resource("/chat/{chat_id}/stream").route(web::get().to(resume)));
}

/// One message of a `useChat` request (AI SDK 4: `content`; AI SDK 5: `parts`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct UiMessage {
    /// The client's id for the message.
    #[serde(default)]
    pub id: Option<String>,
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text (AI SDK 4): a string, or a list of parts as in `parts`; anything else is
    /// ignored.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub content: Option<Value>,
    /// The parts (`{"type":"text","text":…}` ones are read; others are ignored).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    pub parts: Option<Vec<Value>>,
}

impl UiMessage {
    /// The message's text: its `content` string, else its text parts joined.
    pub fn text(&self) -> String {
        if let Some(Value::String(s)) = &self.content {
            if !s.is_empty() {
                return s.clone();
            }
        }
        let parts = match (&self.parts, &self.content) {
            (Some(parts), _) => parts.as_slice(),
            (None, Some(Value::Array(parts))) => parts.as_slice(),
            _ => &[],
        };
        parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()
    }
}

/// `ChatStreamRequest.trigger` (documentation only).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
pub enum Trigger {
    /// A new user message.
    SubmitMessage,
    /// Regenerate the reply to the last user message.
    RegenerateMessage,
}

/// Body of `POST /chat`: the request of AI SDK 4's or 5's `useChat`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatStreamRequest {
    /// The chat's id (`useChat`'s `id`), used when `chat_id` is absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The chat's id.
    #[serde(default)]
    #[schema(
        pattern = r"^(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}|[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})(?![\s\S])"
    )]
    pub chat_id: Option<Uuid>,
    /// The conversation as the client has it; only the last message (the user's, with 1..=32000
    /// characters of text and no control characters but tab, line feed and carriage return) is
    /// new.
    #[schema(min_items = 1)]
    pub messages: Vec<UiMessage>,
    /// Extra data (AI SDK 4); ignored.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub data: Option<Value>,
    /// `submit-message` or `regenerate-message` (AI SDK 5).
    #[serde(default)]
    #[schema(value_type = Option<Trigger>)]
    pub trigger: Option<String>,
    /// The message to regenerate (AI SDK 5).
    #[serde(default, rename = "messageId")]
    pub message_id: Option<String>,
}

impl ChatStreamRequest {
    /// The chat: `chat_id`, else `id`.
    fn chat(&self) -> Result<Uuid, ValidationIssue> {
        if let Some(id) = self.chat_id {
            return Ok(id);
        }
        match &self.id {
            None => Err(ValidationIssue::new(
                vec![json!("body"), json!("chat_id")],
                "missing",
                "Field required",
            )),
            Some(raw) => Uuid::parse_str(raw).map_err(|e| {
                ValidationIssue::new(
                    vec![json!("body"), json!("id")],
                    "uuid_parsing",
                    format!("Input should be a valid UUID, {e}"),
                )
            }),
        }
    }

    /// True for AI SDK 5's shape: a `trigger`, or messages made of parts only.
    fn is_v5(&self) -> bool {
        self.trigger.is_some()
            || self
                .messages
                .last()
                .is_some_and(|m| m.parts.is_some() && m.content.is_none())
    }
}

impl Validate for ChatStreamRequest {
    fn validate(&self) -> Vec<ValidationIssue> {
        let mut issues = Vec::new();
        if let Err(issue) = self.chat() {
            issues.push(issue);
        }
        if self.messages.is_empty() {
            issues.push(ValidationIssue::new(
                vec![json!("body"), json!("messages")],
                "too_short",
                "List should have at least 1 item after validation, not 0",
            ));
        }
        if let Some(trigger) = &self.trigger {
            if trigger != "submit-message" && trigger != "regenerate-message" {
                issues.push(ValidationIssue::new(
                    vec![json!("body"), json!("trigger")],
                    "enum",
                    "Input should be 'submit-message' or 'regenerate-message'",
                ));
            }
        }
        issues
    }
}

/// Body of `POST /stream-message`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamMessageRequest {
    /// The user's message: 1..=32000 characters, no control characters but tab, line feed and
    /// carriage return.
    #[schema(
        min_length = 1,
        max_length = 32000,
        pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*(?![\s\S])"
    )]
    pub content: String,
    /// The chat.
    pub chat_id: Uuid,
    /// Framing of the response (default `data`).
    #[serde(default)]
    pub protocol: Option<WireProtocol>,
}

impl Validate for StreamMessageRequest {
    fn validate(&self) -> Vec<ValidationIssue> {
        let mut issues = Vec::new();
        validate_content(&mut issues, &["body", "content"], &self.content);
        issues
    }
}

/// `?protocol=` when given.
fn query_protocol(req: &HttpRequest) -> ApiResult<Option<WireProtocol>> {
    let pairs = query_pairs(req);
    let Some((_, raw)) = pairs.iter().rev().find(|(k, _)| k == "protocol") else {
        return Ok(None);
    };
    WireProtocol::parse(raw).map(Some).ok_or_else(|| {
        ApiError::invalid(
            vec![json!("query"), json!("protocol")],
            "enum",
            "Input should be 'data', 'text' or 'ui'",
        )
    })
}

/// A stable idempotency key for a client's message id, so a retried or regenerated request
/// does not store the user's message twice.
fn client_key(chat_id: Uuid, message_id: &str) -> Uuid {
    if let Ok(id) = Uuid::parse_str(message_id) {
        return id;
    }
    // FNV-1a over the chat and the id, twice with different seeds: stable across builds.
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in chat_id.as_bytes().iter().chain(message_id.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    Uuid::from_u64_pair(fnv(0), fnv(0x9e37_79b9_7f4a_7c15))
}

/// A streaming response for a reply whose updates arrive on `updates`.
fn stream_response(
    protocol: WireProtocol,
    message_id: Uuid,
    text_so_far: &str,
    updates: mpsc::UnboundedReceiver<StreamUpdate>,
) -> HttpResponse {
    let framer = Framer::new(protocol, message_id);
    let mut res = HttpResponse::Ok();
    for header in framer.headers() {
        res.insert_header(*header);
    }
    res.streaming(sdk_stream::body(framer, text_so_far, updates))
}

async fn start_stream(
    state: &AppState,
    protocol: WireProtocol,
    prompt: Prompt,
) -> ApiResult<HttpResponse> {
    let started = state.replies.start(prompt).await?;
    let updates = started.updates.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("a REST reply started without its channel"))
    })?;
    Ok(stream_response(
        protocol,
        started.generation.message_id,
        "",
        updates,
    ))
}

/// Streams an AI reply to the last (user) message of a `useChat` request.
///
/// The user message is stored (and published to the chat's room); the history comes from the
/// database. Framing: `protocol` if given, else `ui` for AI SDK 5 bodies and `data` otherwise.
#[utoipa::path(post, path = "/chat", tag = "ai", security(("bearer" = [])),
    params(("protocol" = Option<WireProtocol>, Query, description = "data | text | ui")),
    request_body = ChatStreamRequest,
    responses(
        (status = 200, description = "The reply, streamed (data stream v1, plain text, or UI message stream SSE)"),
        (status = 400, description = "Last message must be from the user"),
        (status = 404, description = "Chat not found"),
        (status = 422, description = "Invalid body or query"),
        (status = 429, description = "Too many replies in progress")))]
pub async fn chat(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: ApiJson<ChatStreamRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let protocol = query_protocol(&req)?.unwrap_or(if body.is_v5() {
        WireProtocol::Ui
    } else {
        WireProtocol::Data
    });
    let chat_id = body
        .chat()
        .map_err(|issue| ApiError::Validation(vec![issue]))?;
    let index = body.messages.len().saturating_sub(1);
    let Some(last) = body.messages.last() else {
        return Err(ApiError::invalid(
            vec![json!("body"), json!("messages")],
            "too_short",
            "List should have at least 1 item after validation, not 0",
        ));
    };
    if last.role != "user" {
        return Err(ApiError::BadRequest(
            "Last message must be from the user".into(),
        ));
    }
    let content = last.text();
    let loc = [
        json!("body"),
        json!("messages"),
        json!(index),
        json!("content"),
    ];
    let mut issues = Vec::new();
    validate_content_at(&mut issues, &loc, &content);
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    let prompt = Prompt {
        chat_id,
        user_id: user.id,
        client_msg_id: last.id.as_deref().map(|id| client_key(chat_id, id)),
        content,
        model: None,
        stream_to_caller: true,
    };
    start_stream(&state, protocol, prompt).await
}

/// Posts a message and streams the AI reply to it (`protocol` in the body or query; default
/// `data`).
#[utoipa::path(post, path = "/stream-message", tag = "ai", security(("bearer" = [])),
    params(("protocol" = Option<WireProtocol>, Query, description = "data | text | ui")),
    request_body = StreamMessageRequest,
    responses(
        (status = 200, description = "The reply, streamed"),
        (status = 404, description = "Chat not found"),
        (status = 422, description = "Invalid body"),
        (status = 429, description = "Too many replies in progress")))]
pub async fn stream_message(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: ApiJson<StreamMessageRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let protocol = match body.protocol {
        Some(p) => p,
        None => query_protocol(&req)?.unwrap_or(WireProtocol::Data),
    };
    let prompt = Prompt {
        chat_id: body.chat_id,
        user_id: user.id,
        content: body.content,
        model: None,
        client_msg_id: None,
        stream_to_caller: true,
    };
    start_stream(&state, protocol, prompt).await
}

/// Resumes the chat's in-flight reply as a UI message stream: the text so far, then live.
#[utoipa::path(get, path = "/chat/{chat_id}/stream", tag = "ai", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path)),
    responses(
        (status = 200, description = "UI message stream (SSE) of the newest in-flight reply"),
        (status = 204, description = "No reply is being generated"),
        (status = 404, description = "Chat not found")))]
pub async fn resume(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path)?;
    match state.replies.resume(user.id, chat_id).await? {
        Some(reply) => Ok(stream_response(
            WireProtocol::Ui,
            reply.message_id,
            &reply.text,
            reply.updates,
        )),
        None => Ok(HttpResponse::NoContent().finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_are_stable_and_differ_per_chat_and_id() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(client_key(a, "m1"), client_key(a, "m1"));
        assert_ne!(client_key(a, "m1"), client_key(a, "m2"));
        assert_ne!(client_key(a, "m1"), client_key(b, "m1"));
        let u = Uuid::new_v4();
        assert_eq!(client_key(a, &u.to_string()), u);
    }

    #[test]
    fn text_comes_from_content_or_text_parts() {
        let v4: UiMessage =
            serde_json::from_value(json!({"role": "user", "content": "hi"})).unwrap();
        assert_eq!(v4.text(), "hi");
        let v5: UiMessage = serde_json::from_value(json!({"role": "user", "parts": [
            {"type": "step-start"}, {"type": "text", "text": "a"}, {"type": "text", "text": "b"}
        ]}))
        .unwrap();
        assert_eq!(v5.text(), "ab");
    }
}
