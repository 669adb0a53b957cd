//! Rows as Rust values. Field order matches the column order in `schema.rs`, so
//! `table.select(table::all_columns)` loads them on either backend.

use super::sql_types::DbUuid;
use chrono::{DateTime, Utc};
use diesel::Queryable;

/// A `users` row.
#[derive(Debug, Clone, Queryable)]
pub struct User {
    /// The Supabase user id (`sub`).
    pub id: DbUuid,
    /// Unique handle.
    pub username: String,
    /// Email from the claims.
    pub email: Option<String>,
    /// Display name from the claims.
    pub full_name: Option<String>,
    /// False for deactivated users.
    pub is_active: bool,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A `chats` row.
#[derive(Debug, Clone, Queryable)]
pub struct Chat {
    /// Chat id.
    pub id: DbUuid,
    /// The user who created it; only they may delete it or add members.
    pub owner_id: DbUuid,
    /// Title, if one was given.
    pub title: Option<String>,
    /// Seq of the newest message (0 when empty).
    pub last_seq: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed (renamed or a message posted).
    pub updated_at: DateTime<Utc>,
}

/// A `chat_members` row.
#[derive(Debug, Clone, Queryable)]
pub struct ChatMember {
    /// The chat.
    pub chat_id: DbUuid,
    /// The member.
    pub user_id: DbUuid,
    /// `owner` or `member`.
    pub role: String,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

/// A `messages` row.
#[derive(Debug, Clone, Queryable)]
pub struct Message {
    /// Message id.
    pub id: DbUuid,
    /// The chat it belongs to.
    pub chat_id: DbUuid,
    /// Position in the chat, gap-free from 1.
    pub seq: i64,
    /// Author; `None` for AI and system messages.
    pub user_id: Option<DbUuid>,
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// True for AI replies.
    pub is_from_ai: bool,
    /// The text.
    pub content: String,
    /// Client's idempotency key.
    pub client_msg_id: Option<DbUuid>,
    /// Why an AI reply ended (`stop`, `length`, `cancelled`, `error`).
    pub finish_reason: Option<String>,
    /// Stored at.
    pub created_at: DateTime<Utc>,
}
