//! `POST /messages/`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api_types::MessageResponse;
use crate::auth::AuthUser;
use crate::chat::service::PostMessage;
use crate::error::{ApiResult, ValidationIssue};
use crate::extract::{check_text, ApiJson, Text, Validate};
use crate::state::AppState;

/// Longest message accepted, in characters.
pub const MAX_CONTENT_CHARS: usize = 32_000;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/messages/", "/messages"] {
        cfg.service(web::resource(path).route(web::post().to(create_message)));
    }
}

/// Body of `POST /messages/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MessageCreate {
    /// The text: 1..=32000 characters, no control characters but tab, line feed and carriage
    /// return.
    #[schema(
        min_length = 1,
        max_length = 32000,
        pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*(?![\s\S])"
    )]
    pub content: String,
    /// Target chat.
    pub chat_id: Uuid,
    /// Store as an assistant message.
    #[serde(default)]
    pub is_from_ai: bool,
    /// Idempotency key: a retry with the same key returns the original message.
    #[serde(default)]
    #[schema(
        pattern = r"^(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}|[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})(?![\s\S])"
    )]
    pub client_msg_id: Option<Uuid>,
}

impl Validate for MessageCreate {
    fn validate(&self) -> Vec<ValidationIssue> {
        let mut issues = Vec::new();
        validate_content(&mut issues, &["body", "content"], &self.content);
        issues
    }
}

/// Content must be non-empty, at most [`MAX_CONTENT_CHARS`], and free text
/// ([`Text::Free`]: no control character but tab, line feed and carriage return). REST
/// bodies, the AI routes and the WebSocket `send` and `prompt` requests all check it here.
pub fn validate_content(issues: &mut Vec<ValidationIssue>, loc: &[&str], content: &str) {
    let loc: Vec<serde_json::Value> = loc.iter().map(|s| serde_json::json!(s)).collect();
    validate_content_at(issues, &loc, content);
}

/// [`validate_content`] at a location with index segments (`["body", "messages", 0, "content"]`).
pub fn validate_content_at(
    issues: &mut Vec<ValidationIssue>,
    loc: &[serde_json::Value],
    content: &str,
) {
    if content.is_empty() {
        issues.push(ValidationIssue::new(
            loc.to_vec(),
            "string_too_short",
            "String should have at least 1 character",
        ));
    }
    check_text(issues, loc, Some(content), MAX_CONTENT_CHARS, Text::Free);
}

/// Posts a message to a chat the caller is a member of.
#[utoipa::path(post, path = "/messages/", tag = "messages", security(("bearer" = [])), request_body = MessageCreate,
    responses((status = 201, body = MessageResponse), (status = 404, description = "Chat not found"), (status = 422, description = "Invalid body")))]
pub async fn create_message(
    state: web::Data<AppState>,
    user: AuthUser,
    body: ApiJson<MessageCreate>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let appended = state
        .chats
        .post(
            user.id,
            PostMessage {
                chat_id: body.chat_id,
                content: body.content,
                is_from_ai: body.is_from_ai,
                client_msg_id: body.client_msg_id,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(MessageResponse::from(appended.message)))
}
