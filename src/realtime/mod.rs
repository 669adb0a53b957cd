//! The realtime core: one `UserSession` actor per WebSocket, one `ChatRoom` actor per chat
//! with local subscribers (under the `RoomSupervisor`), and per-user feeds.

pub mod event;
pub mod frames;
pub mod hub;
pub mod messages;
pub mod outbound;
pub mod protocol;
pub mod room;
pub mod session;
pub mod supervisor;
