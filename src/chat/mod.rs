//! The chat service: every change to chats, members and messages, for REST and WebSocket alike.
//! Each write is validated, authorised, committed, and only then published.

pub mod service;

pub use service::ChatService;
