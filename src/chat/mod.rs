//! The chat service: every read and change of chats, members and messages, for REST and
//! WebSocket alike. Each write is validated, authorised, committed (messages in batches, through
//! the [`Writer`]), and only then published; reads (pages, the replay of a resubscribing session) check membership here
//! too, so the two transports share every step after parsing.

pub mod content;
pub mod reads;
pub mod service;
pub mod writer;

pub use content::{check_content, validate_content, validate_content_at, MAX_CONTENT_CHARS};
pub use service::{ChatService, Replay};
pub use writer::{Writer, WriterSettings};
