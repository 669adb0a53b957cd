//! Every frame of docs/PROTOCOL.md as a Rust type: what a client sends ([`ClientFrame`]) and what
//! the server sends ([`ServerFrame`]). The AsyncAPI document (`routes::asyncapi`, served at
//! `GET /asyncapi.json`) derives its JSON Schemas from these types.
//!
//! How they are kept equal to what the server really does:
//!
//! - The shapes shared with REST (`MessageResponse`, `ChatResponse`, the video responses, a
//!   job's stages, token usage) are described here by serde "remote" definitions of the real
//!   types: a field added, removed or retyped in the real type and not here does not compile.
//! - [`ServerFrame::from`]`(Event)` and [`client_frame`] match every variant and field of
//!   [`Event`] and [`Request`]: an event or request added without its frame does not compile.
//! - Replies (`welcome`, `pong`, `ack`, `subscribed`, `unsubscribed`, `jobs`, `error`) are
//!   built as these types and serialised by `protocol::encode`; events are serialised from
//!   [`Event`]. The WebSocket tests validate every frame they receive against the document's
//!   schemas, where an unknown `type`, a missing or extra field or a wrong type fails.
//!
//! The `type` tag of each frame is written once, in the lists at the end of this file: it is
//! both the serde tag of the enums and the `const` of the schema.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ai::Usage;
use crate::api_types::{rfc3339, ChatResponse, MessageResponse};
use crate::realtime::event::{Event, PresenceState};
use crate::realtime::protocol::Request;
use crate::video::model::{Stage, StageState, StageStatus};
use crate::video::responses::{
    VideoJobResponse, VideoJobWithDetailsResponse, VideoMetadataResponse, VideoResponse,
};

// ---------------------------------------------------------------------------------------------
// Shapes shared with the REST API (API.md), as remote definitions of the real types.
// ---------------------------------------------------------------------------------------------

/// A stored chat message.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "MessageResponse")]
#[schemars(rename = "MessageResponse")]
pub struct MessageResponseDef {
    /// Message id.
    pub id: Uuid,
    /// The chat.
    pub chat_id: Uuid,
    /// The text.
    pub content: String,
    /// True for AI replies.
    pub is_from_ai: bool,
    /// Who wrote it.
    #[schemars(with = "MessageRole")]
    pub role: String,
    /// Author; null for AI and system messages.
    pub user_id: Option<Uuid>,
    /// Position in the chat, gap-free from 1.
    pub seq: i64,
    /// Stored at (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
}

/// The `role` of a message.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    /// Written by a user.
    User,
    /// An AI reply.
    Assistant,
    /// Written by the server.
    System,
}

/// A chat.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "ChatResponse")]
#[schemars(rename = "ChatResponse")]
pub struct ChatResponseDef {
    /// Chat id.
    pub id: Uuid,
    /// Title; an untitled chat is called `Chat <id>`.
    pub title: String,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
    /// Last renamed or posted to.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub updated_at: DateTime<Utc>,
}

/// Token counts of a reply, as the provider reported them.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Usage")]
#[schemars(rename = "Usage")]
pub struct UsageDef {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens of the reply.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// `join` or `leave`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "PresenceState", rename_all = "snake_case")]
#[schemars(rename = "PresenceState")]
pub enum PresenceStateDef {
    /// The user's first session joined the room.
    Join,
    /// The user's last session left the room.
    Leave,
}

/// Why a reply ended: `stop` (the model finished), `length` (the output token cap was reached)
/// or `cancelled`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished.
    Stop,
    /// The output token cap was reached.
    Length,
    /// A `cancel`, the node shutting down, or a REST caller leaving while nobody watched.
    Cancelled,
}

/// The `code` of an `error` frame (PROTOCOL.md, Error codes).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed frame, invalid field, not subscribed, unavailable model (REST 400 / 422).
    BadRequest,
    /// An invalid token, or a token for another user (REST 401).
    Unauthorized,
    /// REST only (403).
    Forbidden,
    /// The chat or reply does not exist or is not the caller's (REST 404).
    NotFound,
    /// REST only (409).
    Conflict,
    /// REST only (413).
    TooLarge,
    /// Too many frames, or too many AI replies in flight (REST 429).
    RateLimited,
    /// The database cannot serve now (REST 503).
    Unavailable,
    /// An unexpected failure (REST 500).
    Internal,
}

/// A video job's status.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting for a worker.
    Pending,
    /// Running.
    Processing,
    /// Done.
    Completed,
    /// Stopped by an error.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

/// A pipeline stage, in the order they run.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Stage", rename_all = "snake_case")]
#[schemars(rename = "Stage")]
pub enum StageDef {
    /// Duration, resolution, format, codecs, bit rate.
    Probe,
    /// The JPEG at 1 s.
    Thumbnail,
    /// The speech track.
    Audio,
    /// Speech-to-text.
    Transcription,
    /// WebVTT and SRT.
    Subtitles,
    /// Title, description, tags and show notes.
    Metadata,
    /// Everything stored.
    Finalize,
}

/// A stage's status.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "StageStatus", rename_all = "SCREAMING_SNAKE_CASE")]
#[schemars(rename = "StageStatus")]
pub enum StageStatusDef {
    /// Not started.
    Pending,
    /// Running.
    Processing,
    /// Done.
    Completed,
    /// Not needed for this video (no audio track: no transcription, no subtitles).
    Skipped,
    /// Stopped by an error.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

/// One entry of `processing_stages`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "StageState")]
#[schemars(rename = "StageState")]
pub struct StageStateDef {
    /// Where it is.
    #[serde(with = "StageStatusDef")]
    pub status: StageStatus,
    /// 0..=100 within the stage.
    pub progress: i32,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DateTime<Utc>")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DateTime<Utc>")]
    pub finished_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub error: Option<String>,
}

/// A video job without its video and metadata (the payload of `job` events).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "VideoJobResponse")]
#[schemars(rename = "VideoJobResponse")]
pub struct VideoJobResponseDef {
    /// Job id.
    pub id: i32,
    /// The video.
    pub video_id: i32,
    /// Where the job is.
    #[schemars(with = "JobStatus")]
    pub status: String,
    /// 0..=100 overall.
    #[schemars(range(min = 0, max = 100))]
    pub progress: i32,
    /// The stage running (or where it stopped); null when none.
    #[schemars(with = "Option<StageDef>")]
    pub stage: Option<String>,
    /// Each stage's state, by stage name.
    #[schemars(with = "Option<BTreeMap<String, StageStateDef>>")]
    pub processing_stages: Option<serde_json::Value>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub updated_at: DateTime<Utc>,
}

/// An uploaded video.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "VideoResponse")]
#[schemars(rename = "VideoResponse")]
pub struct VideoResponseDef {
    /// Video id.
    pub id: i32,
    /// Who uploaded it.
    pub uploader_user_id: Uuid,
    /// The client's file name.
    pub original_filename: String,
    /// The object key in storage.
    pub storage_path: String,
    /// The upload's content type.
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub updated_at: DateTime<Utc>,
}

/// What a job extracted and generated (URLs signed when sent).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "VideoMetadataResponse")]
#[schemars(rename = "VideoMetadataResponse")]
pub struct VideoMetadataResponseDef {
    /// Row id.
    pub id: i32,
    /// The job that produced it.
    pub job_id: i32,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// The whole transcript.
    pub transcript_text: Option<String>,
    /// Signed URL of the transcript JSON.
    pub transcript_file_url: Option<String>,
    /// Signed URLs of the subtitles: `{"vtt": url, "srt": url}`.
    pub subtitle_files_urls: Option<BTreeMap<String, String>>,
    /// Signed URL of the thumbnail JPEG.
    pub thumbnail_file_url: Option<String>,
    /// Duration in seconds.
    pub extracted_video_duration_seconds: Option<f64>,
    /// `1920x1080`.
    pub extracted_video_resolution: Option<String>,
    /// Container format.
    pub extracted_video_format: Option<String>,
    /// Video codec.
    pub extracted_video_codec: Option<String>,
    /// Audio codec, when there is an audio track.
    pub extracted_audio_codec: Option<String>,
    /// Overall bit rate, bits per second.
    pub extracted_bit_rate: Option<i64>,
    /// Show notes.
    pub show_notes_text: Option<String>,
    /// Created.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(with = "rfc3339")]
    #[schemars(with = "DateTime<Utc>")]
    pub updated_at: DateTime<Utc>,
}

/// A job with its video and metadata.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(remote = "VideoJobWithDetailsResponse")]
#[schemars(rename = "VideoJobWithDetailsResponse")]
pub struct VideoJobWithDetailsResponseDef {
    /// The job.
    #[serde(flatten, with = "VideoJobResponseDef")]
    pub job: VideoJobResponse,
    /// Its video.
    #[serde(with = "VideoResponseDef")]
    pub video: VideoResponse,
    /// What it extracted and generated so far.
    #[schemars(with = "Option<VideoMetadataResponseDef>")]
    pub video_metadata: Option<VideoMetadataResponse>,
}

// ---------------------------------------------------------------------------------------------
// Client frames.
// ---------------------------------------------------------------------------------------------

/// An application-level ping; answered at once with `pong`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PingRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
}

/// Joins a chat's room; answered with missed `message`s, `generation_snapshot`s, then
/// `subscribed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubscribeRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// The chat; the caller must be a member.
    pub chat_id: Uuid,
    /// The highest `seq` the client already has: later messages are replayed first. Negative
    /// counts as 0; omitted or null: no replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<i64>,
}

/// Leaves a chat's room; answered with `unsubscribed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UnsubscribeRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// The chat.
    pub chat_id: Uuid,
}

/// Posts a message to a subscribed chat; answered with `ack` (`message_id`, `seq`,
/// `duplicate`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SendRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// The chat.
    pub chat_id: Uuid,
    /// The text: 1 to 32 000 characters (the input rules of the REST API apply).
    #[schemars(length(min = 1, max = 32000))]
    pub content: String,
    /// Idempotency key: a repeated `send` with the same key stores nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<Uuid>,
}

/// Tells the others in a subscribed chat that the user is typing; no reply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TypingRequest {
    /// Accepted and ignored (there is no reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// The chat.
    pub chat_id: Uuid,
}

/// Posts the user's message like `send`, then starts an AI reply that streams to the room;
/// answered with `ack` (`message_id`, `seq`, `generation_id`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PromptRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// The chat.
    pub chat_id: Uuid,
    /// The user's message: 1 to 32 000 characters.
    #[schemars(length(min = 1, max = 32000))]
    pub content: String,
    /// A model other than the server's default (`AI_MODEL` or one of `AI_ALLOWED_MODELS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Stops an AI reply, keeping what was generated; answered with `ack` (`generation_id`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CancelRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// The reply, from `prompt`'s `ack` or a `generation_*` event.
    pub generation_id: Uuid,
}

/// Asks for the caller's pending and processing video jobs; answered with `jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobsRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
}

/// Extends the session with a new access token for the same user; answered with a bare `ack`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RefreshTokenRequest {
    /// Echoed in the reply (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 64))]
    pub id: Option<String>,
    /// A new JWT for the same user.
    pub token: String,
}

/// The client frame of a parsed request with its `id`. Matches every variant and field of
/// [`Request`], so a request added to the parser without a frame here does not compile.
pub fn client_frame(id: Option<String>, request: Request) -> ClientFrame {
    match request {
        Request::Ping => ClientFrame::Ping(PingRequest { id }),
        Request::Subscribe { chat_id, since_seq } => ClientFrame::Subscribe(SubscribeRequest {
            id,
            chat_id,
            since_seq,
        }),
        Request::Unsubscribe { chat_id } => {
            ClientFrame::Unsubscribe(UnsubscribeRequest { id, chat_id })
        }
        Request::Send {
            chat_id,
            content,
            client_msg_id,
        } => ClientFrame::Send(SendRequest {
            id,
            chat_id,
            content,
            client_msg_id,
        }),
        Request::Prompt {
            chat_id,
            content,
            model,
        } => ClientFrame::Prompt(PromptRequest {
            id,
            chat_id,
            content,
            model,
        }),
        Request::Cancel { generation_id } => {
            ClientFrame::Cancel(CancelRequest { id, generation_id })
        }
        Request::Typing { chat_id } => ClientFrame::Typing(TypingRequest { id, chat_id }),
        Request::Jobs => ClientFrame::Jobs(JobsRequest { id }),
        Request::RefreshToken { token } => {
            ClientFrame::RefreshToken(RefreshTokenRequest { id, token })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server frames: replies.
// ---------------------------------------------------------------------------------------------

/// The first frame of every session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WelcomeFrame {
    /// This connection.
    pub session_id: Uuid,
    /// The authenticated user.
    pub user_id: Uuid,
    /// The node serving the session (`ECHO_NODE_ID`).
    pub node_id: String,
    /// Protocol version: 1.
    pub protocol: u32,
    /// Interval of the server's WebSocket pings (`WS_HEARTBEAT_MS`).
    pub heartbeat_ms: u64,
    /// The session's limits.
    pub limits: SessionLimits,
}

/// The limits announced in `welcome`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionLimits {
    /// Largest client message, in bytes (`WS_MAX_FRAME_BYTES`).
    pub max_frame_bytes: u64,
    /// Client frames per second, sustained (`WS_RATE_PER_SEC`).
    pub rate_per_sec: u32,
    /// Client frames allowed in a burst (`WS_RATE_BURST`).
    pub rate_burst: u32,
    /// Bound of the session's outbound queue, in bytes (`WS_OUTBOUND_QUEUE_BYTES`).
    pub outbound_queue_bytes: u64,
    /// Most messages a `subscribe` replays (`WS_RECOVERY_LIMIT`).
    pub recovery_limit: i64,
}

/// The reply to `ping`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PongFrame {
    /// The `ping`'s `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
}

/// A request succeeded. Its fields depend on the request: `send`, `prompt`, `cancel` or
/// `refresh_token`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AckFrame {
    /// The reply to `send`.
    Send(AckToSend),
    /// The reply to `prompt`.
    Prompt(AckToPrompt),
    /// The reply to `cancel`.
    Cancel(AckToCancel),
    /// The reply to `refresh_token`.
    RefreshToken(AckToRefreshToken),
}

/// The `ack` of a `send`, sent after the message's transaction committed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AckToSend {
    /// The request's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// The stored message (the original one when `duplicate`).
    pub message_id: Uuid,
    /// Its `seq`.
    pub seq: i64,
    /// True when `client_msg_id` had been stored before.
    pub duplicate: bool,
}

/// The `ack` of a `prompt`: the stored user message and the reply that started.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AckToPrompt {
    /// The request's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// The stored user message.
    pub message_id: Uuid,
    /// Its `seq`.
    pub seq: i64,
    /// The AI reply.
    pub generation_id: Uuid,
}

/// The `ack` of a `cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AckToCancel {
    /// The request's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// The reply being stopped.
    pub generation_id: Uuid,
}

/// The `ack` of a `refresh_token`: the session's expiry moved to the new token's.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AckToRefreshToken {
    /// The request's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
}

/// The reply to `subscribe`, after the replay: from here on every `message` of the chat with
/// a `seq` above `last_seq` follows.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubscribedFrame {
    /// The `subscribe`'s `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// The chat.
    pub chat_id: Uuid,
    /// The `seq` the client is now up to date with; 0 for a chat without messages.
    pub last_seq: i64,
    /// False when more than `recovery_limit` messages were missing: nothing was replayed.
    pub recovered: bool,
    /// Users with at least one session in this room, on any node.
    pub online: Vec<Uuid>,
}

/// The reply to `unsubscribe`; also sent (without `id`) when the user is removed from the chat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UnsubscribedFrame {
    /// The `unsubscribe`'s `id`; absent when the server unsubscribed the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// The chat the session no longer follows.
    pub chat_id: Uuid,
}

/// The reply to `jobs`: the caller's pending and processing video jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobsFrame {
    /// The request's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// At most 100 jobs, each with its `video` and `video_metadata`.
    #[schemars(with = "Vec<VideoJobWithDetailsResponseDef>")]
    pub jobs: Vec<VideoJobWithDetailsResponse>,
}

/// A request failed, or a frame was refused. Never closes the connection by itself.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorFrame {
    /// The failed request's `id`, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub id: Option<String>,
    /// One of the error codes.
    #[schemars(with = "ErrorCode")]
    pub code: String,
    /// What went wrong, for people; names the field for invalid fields.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Server frames: events (the frames of [`Event`]).
// ---------------------------------------------------------------------------------------------

/// A message was stored in a subscribed chat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MessageEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The stored message.
    #[serde(with = "MessageResponseDef")]
    pub message: MessageResponse,
}

/// A subscribed chat was renamed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChatUpdatedEvent {
    /// The chat as it is now.
    #[serde(with = "ChatResponseDef")]
    pub chat: ChatResponse,
}

/// A subscribed chat was deleted; every session is unsubscribed from it at once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChatDeletedEvent {
    /// The chat.
    pub chat_id: Uuid,
}

/// Someone was added to a subscribed chat, or the user was added to a chat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberAddedEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The new member.
    pub user_id: Uuid,
}

/// Someone left or was removed from a subscribed chat, or the user was.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MemberRemovedEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The former member.
    pub user_id: Uuid,
}

/// A user's first session in a room (on any node) subscribed, or their last one left.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PresenceEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// Who.
    pub user_id: Uuid,
    /// `join` or `leave`.
    #[serde(with = "PresenceStateDef")]
    pub state: PresenceState,
}

/// Someone else is typing in a subscribed chat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TypingEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The typist.
    pub user_id: Uuid,
}

/// An AI reply started in a subscribed chat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GenerationStartedEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The reply in flight.
    pub generation_id: Uuid,
    /// The `id` the stored reply will have.
    pub message_id: Uuid,
    /// The model producing it.
    pub model: String,
}

/// One piece of an AI reply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TokenEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The reply.
    pub generation_id: Uuid,
    /// 0, 1, 2, … within the reply.
    pub index: u64,
    /// The text to append.
    pub delta: String,
}

/// The text of an in-flight AI reply so far, sent during `subscribe` before `subscribed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GenerationSnapshotEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The reply.
    pub generation_id: Uuid,
    /// Index of the last token included in `text`; -1 when no token has arrived yet.
    #[schemars(range(min = -1))]
    pub index: i64,
    /// All the reply's text so far.
    pub text: String,
}

/// An AI reply ended and was stored.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GenerationFinishedEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The reply.
    pub generation_id: Uuid,
    /// The stored assistant message.
    #[serde(with = "MessageResponseDef")]
    pub message: MessageResponse,
    /// `stop`, `length` or `cancelled`.
    #[schemars(with = "FinishReason")]
    pub finish_reason: String,
    /// The provider's token counts (for a cancelled reply: the estimated prompt and the tokens
    /// received).
    #[schemars(with = "UsageDef")]
    pub usage: serde_json::Value,
}

/// An AI reply failed; text generated before the failure was stored first as a `message`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GenerationFailedEvent {
    /// The chat.
    pub chat_id: Uuid,
    /// The reply.
    pub generation_id: Uuid,
    /// Why, safe to show.
    pub error: String,
}

/// One of the user's video jobs changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobEvent {
    /// The job, without its video and metadata.
    #[schemars(with = "VideoJobResponseDef")]
    pub job: serde_json::Value,
}

impl From<Event> for ServerFrame {
    /// The frame of an event. Matches every variant and field of [`Event`], so an event added
    /// without a frame here does not compile.
    fn from(event: Event) -> ServerFrame {
        match event {
            Event::Message { chat_id, message } => {
                ServerFrame::Message(MessageEvent { chat_id, message })
            }
            Event::ChatUpdated { chat } => ServerFrame::ChatUpdated(ChatUpdatedEvent { chat }),
            Event::ChatDeleted { chat_id } => {
                ServerFrame::ChatDeleted(ChatDeletedEvent { chat_id })
            }
            Event::MemberAdded { chat_id, user_id } => {
                ServerFrame::MemberAdded(MemberAddedEvent { chat_id, user_id })
            }
            Event::MemberRemoved { chat_id, user_id } => {
                ServerFrame::MemberRemoved(MemberRemovedEvent { chat_id, user_id })
            }
            Event::Presence {
                chat_id,
                user_id,
                state,
            } => ServerFrame::Presence(PresenceEvent {
                chat_id,
                user_id,
                state,
            }),
            Event::Typing { chat_id, user_id } => {
                ServerFrame::Typing(TypingEvent { chat_id, user_id })
            }
            Event::GenerationStarted {
                chat_id,
                generation_id,
                message_id,
                model,
            } => ServerFrame::GenerationStarted(GenerationStartedEvent {
                chat_id,
                generation_id,
                message_id,
                model,
            }),
            Event::Token {
                chat_id,
                generation_id,
                index,
                delta,
            } => ServerFrame::Token(TokenEvent {
                chat_id,
                generation_id,
                index,
                delta,
            }),
            Event::GenerationSnapshot {
                chat_id,
                generation_id,
                index,
                text,
            } => ServerFrame::GenerationSnapshot(GenerationSnapshotEvent {
                chat_id,
                generation_id,
                index,
                text,
            }),
            Event::GenerationFinished {
                chat_id,
                generation_id,
                message,
                finish_reason,
                usage,
            } => ServerFrame::GenerationFinished(GenerationFinishedEvent {
                chat_id,
                generation_id,
                message,
                finish_reason,
                usage,
            }),
            Event::GenerationFailed {
                chat_id,
                generation_id,
                error,
            } => ServerFrame::GenerationFailed(GenerationFailedEvent {
                chat_id,
                generation_id,
                error,
            }),
            Event::Job { job } => ServerFrame::Job(JobEvent { job }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The frame lists: each frame's `type` tag, written once.
// ---------------------------------------------------------------------------------------------

/// A frame type of the protocol: its `type` tag and its schema.
pub trait Frame: JsonSchema {
    /// The frame's `type`.
    const TYPE: &'static str;
}

/// One entry of a frame list, for the AsyncAPI document.
#[derive(Clone, Copy)]
pub struct FrameInfo {
    /// The `type` tag.
    pub tag: &'static str,
    /// The Rust type's name: the message's and the schema's name in the document.
    pub name: &'static str,
    /// Adds the payload's schema (without `type`) to a generator, returning its `$ref`.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

macro_rules! frame_list {
    ($(#[$meta:meta])* $list:ident { $($tag:literal => $variant:ident($ty:ident),)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum $list {
            $(#[doc = concat!("`", $tag, "`.")] #[serde(rename = $tag)] $variant($ty),)*
        }

        $(impl Frame for $ty {
            const TYPE: &'static str = $tag;
        })*

        impl $list {
            /// The frame's `type`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($list::$variant(_) => $tag,)*
                }
            }

            /// Every frame of the list, in PROTOCOL.md's order.
            pub fn list() -> Vec<FrameInfo> {
                vec![$(FrameInfo {
                    tag: $tag,
                    name: stringify!($ty),
                    schema: schemars::SchemaGenerator::subschema_for::<$ty>,
                },)*]
            }
        }
    };
}

frame_list! {
    /// A frame the client sends.
    ClientFrame {
        "ping" => Ping(PingRequest),
        "subscribe" => Subscribe(SubscribeRequest),
        "unsubscribe" => Unsubscribe(UnsubscribeRequest),
        "send" => Send(SendRequest),
        "typing" => Typing(TypingRequest),
        "prompt" => Prompt(PromptRequest),
        "cancel" => Cancel(CancelRequest),
        "jobs" => Jobs(JobsRequest),
        "refresh_token" => RefreshToken(RefreshTokenRequest),
    }
}

frame_list! {
    /// A frame the server sends.
    ServerFrame {
        "welcome" => Welcome(WelcomeFrame),
        "pong" => Pong(PongFrame),
        "ack" => Ack(AckFrame),
        "subscribed" => Subscribed(SubscribedFrame),
        "unsubscribed" => Unsubscribed(UnsubscribedFrame),
        "jobs" => Jobs(JobsFrame),
        "error" => Error(ErrorFrame),
        "message" => Message(MessageEvent),
        "chat_updated" => ChatUpdated(ChatUpdatedEvent),
        "chat_deleted" => ChatDeleted(ChatDeletedEvent),
        "member_added" => MemberAdded(MemberAddedEvent),
        "member_removed" => MemberRemoved(MemberRemovedEvent),
        "presence" => Presence(PresenceEvent),
        "typing" => Typing(TypingEvent),
        "generation_started" => GenerationStarted(GenerationStartedEvent),
        "token" => Token(TokenEvent),
        "generation_snapshot" => GenerationSnapshot(GenerationSnapshotEvent),
        "generation_finished" => GenerationFinished(GenerationFinishedEvent),
        "generation_failed" => GenerationFailed(GenerationFailedEvent),
        "job" => Job(JobEvent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::protocol;
    use serde_json::{json, Value};

    fn message() -> MessageResponse {
        MessageResponse {
            id: Uuid::new_v4(),
            chat_id: Uuid::new_v4(),
            content: "Hello!".into(),
            is_from_ai: false,
            role: "user".into(),
            user_id: Some(Uuid::new_v4()),
            seq: 42,
            created_at: Utc::now(),
        }
    }

    /// Every event serialises exactly as its frame does.
    #[test]
    fn events_and_their_frames_serialise_alike() {
        let (chat, user, generation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let events = vec![
            Event::Message {
                chat_id: chat,
                message: message(),
            },
            Event::ChatUpdated {
                chat: ChatResponse {
                    id: chat,
                    title: "Trip".into(),
                    created_at: Utc::now(),
                    updated_at: Utc::now(),
                },
            },
            Event::ChatDeleted { chat_id: chat },
            Event::MemberAdded {
                chat_id: chat,
                user_id: user,
            },
            Event::MemberRemoved {
                chat_id: chat,
                user_id: user,
            },
            Event::Presence {
                chat_id: chat,
                user_id: user,
                state: PresenceState::Leave,
            },
            Event::Typing {
                chat_id: chat,
                user_id: user,
            },
            Event::GenerationStarted {
                chat_id: chat,
                generation_id: generation,
                message_id: Uuid::new_v4(),
                model: "m".into(),
            },
            Event::Token {
                chat_id: chat,
                generation_id: generation,
                index: 3,
                delta: "x".into(),
            },
            Event::GenerationSnapshot {
                chat_id: chat,
                generation_id: generation,
                index: -1,
                text: String::new(),
            },
            Event::GenerationFinished {
                chat_id: chat,
                generation_id: generation,
                message: message(),
                finish_reason: "stop".into(),
                usage: json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
            },
            Event::GenerationFailed {
                chat_id: chat,
                generation_id: generation,
                error: "The AI provider timed out".into(),
            },
            Event::Job {
                job: json!({"id": 7}),
            },
        ];
        for event in events {
            let expected: Value = serde_json::from_str(&event.encode()).unwrap();
            let kind = event.kind();
            let frame = ServerFrame::from(event);
            assert_eq!(frame.kind(), kind);
            assert_eq!(serde_json::to_value(&frame).unwrap(), expected);
        }
    }

    /// The examples of PROTOCOL.md's client frames parse, and their frames serialise back to
    /// them.
    #[test]
    fn parsed_requests_and_their_frames_agree() {
        let chat = "3b0d6c1e-5a7f-4c2b-9e1d-2f4a6b8c0d11";
        let examples = [
            json!({"type": "ping", "id": "p1"}),
            json!({"type": "subscribe", "id": "s1", "chat_id": chat, "since_seq": 41}),
            json!({"type": "unsubscribe", "id": "u1", "chat_id": chat}),
            json!({"type": "send", "id": "m1", "chat_id": chat, "content": "Hello!",
                   "client_msg_id": "0d9c7b52-8f0e-4e51-a8c1-6a1f3e5b7c90"}),
            json!({"type": "typing", "chat_id": chat}),
            json!({"type": "prompt", "id": "a1", "chat_id": chat, "content": "Sum up",
                   "model": "gpt-4o-mini"}),
            json!({"type": "cancel", "id": "c1", "generation_id": chat}),
            json!({"type": "jobs", "id": "j1"}),
            json!({"type": "refresh_token", "id": "r1", "token": "eyJ"}),
        ];
        assert_eq!(examples.len(), ClientFrame::list().len());
        for example in examples {
            let (id, request) = protocol::parse(&example.to_string()).unwrap();
            let kind = protocol::kind(&request);
            let frame = client_frame(id, request);
            assert_eq!(frame.kind(), kind);
            assert_eq!(serde_json::to_value(&frame).unwrap(), example);
            let back: ClientFrame = serde_json::from_value(example.clone()).unwrap();
            assert_eq!(back.kind(), kind, "{example}");
        }
    }

    #[test]
    fn an_ack_serialises_with_its_tag() {
        let frame = ServerFrame::Ack(AckFrame::Cancel(AckToCancel {
            id: Some("c1".into()),
            generation_id: Uuid::nil(),
        }));
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type": "ack", "id": "c1", "generation_id": Uuid::nil()})
        );
    }
}
