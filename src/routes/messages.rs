//! `POST /messages/`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api_types::MessageResponse;
use crate::auth::AuthUser;
use crate::chat::service::PostMessage;
use crate::error::{ApiResult, ValidationIssue};
use crate::extract::{ApiJson, Validate};
use crate::state::AppState;

/// The content rules are the chat service's (WebSocket requests check the same).
pub use crate::chat::{validate_content, validate_content_at, MAX_CONTENT_CHARS};

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
