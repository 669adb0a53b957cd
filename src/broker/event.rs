//! Events that flow through the broker to sessions. Each serialises to exactly the server→
//! client frame of docs/PROTOCOL.md, once per event, shared by every recipient.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api_types::{ChatResponse, MessageResponse};

/// A room or user-feed event, tagged with its protocol `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A persisted chat message.
    Message {
        /// The chat.
        chat_id: Uuid,
        /// The message, with its `seq`.
        message: MessageResponse,
    },
    /// A chat's title changed.
    ChatUpdated {
        /// The chat as it is now.
        chat: ChatResponse,
    },
    /// A chat was deleted; its room unsubscribes everyone.
    ChatDeleted {
        /// The chat.
        chat_id: Uuid,
    },
    /// A user was added to a chat (sent to the room and to the new member's feed).
    MemberAdded {
        /// The chat.
        chat_id: Uuid,
        /// The new member.
        user_id: Uuid,
    },
    /// A user left or was removed; their sessions are unsubscribed from the room.
    MemberRemoved {
        /// The chat.
        chat_id: Uuid,
        /// The former member.
        user_id: Uuid,
    },
    /// A user's first session joined, or last session left, a room.
    Presence {
        /// The chat.
        chat_id: Uuid,
        /// Who.
        user_id: Uuid,
        /// `join` or `leave`.
        state: PresenceState,
    },
    /// Someone is typing.
    Typing {
        /// The chat.
        chat_id: Uuid,
        /// Who.
        user_id: Uuid,
    },
    /// An AI reply started generating.
    GenerationStarted {
        /// The chat.
        chat_id: Uuid,
        /// The generation.
        generation_id: Uuid,
        /// Id the persisted reply will have.
        message_id: Uuid,
        /// Model producing it.
        model: String,
    },
    /// One token of an AI reply.
    Token {
        /// The chat.
        chat_id: Uuid,
        /// The generation.
        generation_id: Uuid,
        /// 0, 1, 2, … per generation.
        index: u64,
        /// The text delta.
        delta: String,
    },
    /// The text of an in-flight reply so far (for late subscribers).
    GenerationSnapshot {
        /// The chat.
        chat_id: Uuid,
        /// The generation.
        generation_id: Uuid,
        /// Index of the last token included.
        index: i64,
        /// All text so far.
        text: String,
    },
    /// An AI reply finished and was persisted.
    GenerationFinished {
        /// The chat.
        chat_id: Uuid,
        /// The generation.
        generation_id: Uuid,
        /// The persisted assistant message.
        message: MessageResponse,
        /// `stop`, `length`, `cancelled` or `error`.
        finish_reason: String,
        /// Token usage reported by the provider.
        usage: serde_json::Value,
    },
    /// An AI reply failed.
    GenerationFailed {
        /// The chat.
        chat_id: Uuid,
        /// The generation.
        generation_id: Uuid,
        /// What went wrong.
        error: String,
    },
    /// A video job changed (sent to its owner's feed).
    Job {
        /// The job as `VideoJobWithDetailsResponse` without `video`/`video_metadata`.
        job: serde_json::Value,
    },
}

/// Presence transitions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// First session of the user in the room.
    Join,
    /// Last session of the user left the room.
    Leave,
}

impl Event {
    /// The message's `seq`, for ordered delivery of `message` events.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Event::Message { message, .. } => Some(message.seq),
            _ => None,
        }
    }

    /// The protocol frame, serialised once.
    pub fn encode(&self) -> ByteString {
        ByteString::from(serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "event failed to serialise");
            r#"{"type":"error","code":"internal","message":"event encoding failed"}"#.into()
        }))
    }

    /// The `type` label, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Message { .. } => "message",
            Event::ChatUpdated { .. } => "chat_updated",
            Event::ChatDeleted { .. } => "chat_deleted",
            Event::MemberAdded { .. } => "member_added",
            Event::MemberRemoved { .. } => "member_removed",
            Event::Presence { .. } => "presence",
            Event::Typing { .. } => "typing",
            Event::GenerationStarted { .. } => "generation_started",
            Event::Token { .. } => "token",
            Event::GenerationSnapshot { .. } => "generation_snapshot",
            Event::GenerationFinished { .. } => "generation_finished",
            Event::GenerationFailed { .. } => "generation_failed",
            Event::Job { .. } => "job",
        }
    }
}

/// Where an event is published: a chat's room or a user's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `room:<chat_id>`.
    Room(Uuid),
    /// `user:<user_id>`.
    User(Uuid),
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topic::Room(id) => write!(f, "room:{id}"),
            Topic::User(id) => write!(f, "user:{id}"),
        }
    }
}
