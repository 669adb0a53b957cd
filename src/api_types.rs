//! The JSON shapes of docs/API.md, shared by REST responses and WebSocket frames.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::models::{Chat, ChatMember, Message, User};

/// RFC 3339 in UTC with microseconds and `Z`, as the legacy service wrote timestamps.
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `2026-01-02T03:04:05.123456Z`.
    pub fn serialize<S: Serializer>(dt: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&dt.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// Parses any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// `UserResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    /// User id.
    pub id: Uuid,
    /// Unique handle.
    pub username: String,
    /// Email: the caller's own only; `null` in another user's profile.
    pub email: Option<String>,
    /// Display name.
    pub full_name: Option<String>,
    /// False when deactivated.
    pub is_active: bool,
}

impl UserResponse {
    /// The profile as another user sees it: everything but the email address.
    pub fn public(u: User) -> Self {
        UserResponse {
            email: None,
            ..UserResponse::from(u)
        }
    }
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id.0,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            is_active: u.is_active,
        }
    }
}

/// `ChatResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatResponse {
    /// Chat id.
    pub id: Uuid,
    /// Title; an untitled chat is called `Chat <id>`.
    pub title: String,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last renamed or posted to.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<Chat> for ChatResponse {
    fn from(c: Chat) -> Self {
        ChatResponse {
            title: c.title.unwrap_or_else(|| format!("Chat {}", c.id.0)),
            id: c.id.0,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// `ChatDetailResponse`: a chat with its latest messages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatDetailResponse {
    /// The chat.
    #[serde(flatten)]
    pub chat: ChatResponse,
    /// The latest 100 messages in `seq` order.
    pub messages: Vec<MessageResponse>,
}

/// `MessageResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    /// Message id.
    pub id: Uuid,
    /// The chat.
    pub chat_id: Uuid,
    /// The text.
    pub content: String,
    /// True for AI replies.
    pub is_from_ai: bool,
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// Author; null for AI and system messages.
    pub user_id: Option<Uuid>,
    /// Position in the chat, gap-free from 1.
    pub seq: i64,
    /// Stored at.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

impl From<Message> for MessageResponse {
    fn from(m: Message) -> Self {
        MessageResponse {
            id: m.id.0,
            chat_id: m.chat_id.0,
            content: m.content,
            is_from_ai: m.is_from_ai,
            role: m.role,
            user_id: m.user_id.map(Uuid::from),
            seq: m.seq,
            created_at: m.created_at,
        }
    }
}

/// A chat membership.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberResponse {
    /// The chat.
    pub chat_id: Uuid,
    /// The member.
    pub user_id: Uuid,
    /// `owner` or `member`.
    pub role: String,
    /// Joined at.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: DateTime<Utc>,
}

impl From<ChatMember> for MemberResponse {
    fn from(m: ChatMember) -> Self {
        MemberResponse {
            chat_id: m.chat_id.0,
            user_id: m.user_id.0,
            role: m.role,
            joined_at: m.joined_at,
        }
    }
}
