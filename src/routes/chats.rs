//! Chats CRUD and members.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api_types::{ChatDetailResponse, ChatResponse, MemberResponse, MessageResponse};
use crate::auth::AuthUser;
use crate::error::{ApiResult, ValidationIssue};
use crate::extract::{body_text, path_uuid, query_int, query_pairs, ApiJson, Page, Text, Validate};
use crate::state::AppState;

/// Longest chat title accepted.
pub const MAX_TITLE_CHARS: usize = 255;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    for base in ["/chats/", "/chats"] {
        cfg.service(
            web::resource(base)
                .route(web::get().to(list_chats))
                .route(web::post().to(create_chat)),
        );
    }
    cfg.service(
        web::resource("/chats/{chat_id}")
            .route(web::get().to(get_chat))
            .route(web::put().to(update_chat))
            .route(web::delete().to(delete_chat)),
    );
    for path in ["/chats/{chat_id}/members", "/chats/{chat_id}/members/"] {
        cfg.service(web::resource(path).route(web::post().to(add_member)));
    }
    cfg.service(
        web::resource("/chats/{chat_id}/members/{user_id}").route(web::delete().to(remove_member)),
    );
    for path in ["/chats/{chat_id}/messages/", "/chats/{chat_id}/messages"] {
        cfg.service(web::resource(path).route(web::get().to(list_messages)));
    }
}

/// Body of `POST /chats/` and `PUT /chats/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatWrite {
    /// Title: at most 255 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 255, pattern = r"^[^\x00-\x1F\x7F]*(?![\s\S])")]
    pub title: Option<String>,
}

impl Validate for ChatWrite {
    fn validate(&self) -> Vec<ValidationIssue> {
        body_text(&[("title", self.title.as_deref(), MAX_TITLE_CHARS, Text::Line)])
    }
}

/// Body of `POST /chats/{id}/members`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MemberAdd {
    /// The user to add.
    pub user_id: Uuid,
}

impl Validate for MemberAdd {}

/// Chats the caller is a member of, most recently updated first.
#[utoipa::path(get, path = "/chats/", tag = "chats", security(("bearer" = [])),
    params(("skip" = Option<i64>, Query, minimum = 0), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, body = [ChatResponse]), (status = 422, description = "Bad pagination")))]
pub async fn list_chats(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_query(&query_pairs(&req), 20)?;
    let chats = state.chats.list(user.id, page.skip, page.limit).await?;
    let body: Vec<ChatResponse> = chats.into_iter().map(ChatResponse::from).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// Creates a chat; the caller becomes its owner.
#[utoipa::path(post, path = "/chats/", tag = "chats", security(("bearer" = [])), request_body = ChatWrite,
    responses((status = 201, body = ChatDetailResponse), (status = 422, description = "Invalid body")))]
pub async fn create_chat(
    state: web::Data<AppState>,
    user: AuthUser,
    body: ApiJson<ChatWrite>,
) -> ApiResult<HttpResponse> {
    let chat = state.chats.create(user.id, body.0.title.as_deref()).await?;
    Ok(HttpResponse::Created().json(ChatDetailResponse {
        chat: chat.into(),
        messages: Vec::new(),
    }))
}

/// A chat with its latest 100 messages.
#[utoipa::path(get, path = "/chats/{chat_id}", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path)),
    responses((status = 200, body = ChatDetailResponse), (status = 404, description = "Chat not found")))]
pub async fn get_chat(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path)?;
    let (chat, messages) = state.chats.detail(user.id, chat_id).await?;
    Ok(HttpResponse::Ok().json(ChatDetailResponse {
        chat: chat.into(),
        messages: messages.into_iter().map(MessageResponse::from).collect(),
    }))
}

/// Renames a chat.
#[utoipa::path(put, path = "/chats/{chat_id}", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path)), request_body = ChatWrite,
    responses((status = 200, body = ChatResponse), (status = 404, description = "Chat not found")))]
pub async fn update_chat(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: ApiJson<ChatWrite>,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path)?;
    let chat = state
        .chats
        .rename(user.id, chat_id, body.0.title.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(ChatResponse::from(chat)))
}

/// Deletes a chat and its messages (owner only).
#[utoipa::path(delete, path = "/chats/{chat_id}", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path)),
    responses((status = 200, description = "Deleted"), (status = 403, description = "Not the owner"), (status = 404, description = "Chat not found")))]
pub async fn delete_chat(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path)?;
    state.chats.delete(user.id, chat_id).await?;
    Ok(HttpResponse::Ok().json(json!({"success": true, "message": "Chat deleted successfully"})))
}

/// Adds a member (owner only).
#[utoipa::path(post, path = "/chats/{chat_id}/members", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path)), request_body = MemberAdd,
    responses((status = 201, body = MemberResponse), (status = 403, description = "Not the owner"), (status = 404, description = "Chat or user not found"), (status = 409, description = "Already a member")))]
pub async fn add_member(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    body: ApiJson<MemberAdd>,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path)?;
    let member = state
        .chats
        .add_member(user.id, chat_id, body.0.user_id)
        .await?;
    Ok(HttpResponse::Created().json(MemberResponse::from(member)))
}

/// Removes a member (the owner, or the member themself).
#[utoipa::path(delete, path = "/chats/{chat_id}/members/{user_id}", tag = "chats", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 403, description = "Not allowed"), (status = 404, description = "Chat or member not found")))]
pub async fn remove_member(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path.0)?;
    let member = path_uuid("user_id", &path.1)?;
    state.chats.remove_member(user.id, chat_id, member).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A chat's messages in ascending `seq`.
#[utoipa::path(get, path = "/chats/{chat_id}/messages/", tag = "messages", security(("bearer" = [])),
    params(("chat_id" = Uuid, Path), ("skip" = Option<i64>, Query, minimum = 0),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100),
        ("after_seq" = Option<i64>, Query, minimum = 0), ("before_seq" = Option<i64>, Query, minimum = 0)),
    responses((status = 200, body = [MessageResponse]), (status = 404, description = "Chat not found")))]
pub async fn list_messages(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let chat_id = path_uuid("chat_id", &path)?;
    let pairs = query_pairs(&req);
    let page = Page::from_query(&pairs, 50)?;
    let after = query_int(&pairs, "after_seq", None, Some(0), None)?;
    let before = query_int(&pairs, "before_seq", None, Some(0), None)?;
    let msgs = state
        .chats
        .messages(user.id, chat_id, page.skip, page.limit, after, before)
        .await?;
    let body: Vec<MessageResponse> = msgs.into_iter().map(MessageResponse::from).collect();
    Ok(HttpResponse::Ok().json(body))
}
