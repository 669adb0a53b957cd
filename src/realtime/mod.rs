//! The realtime core: one `UserSession` actor per WebSocket, one `ChatRoom` actor per chat
//! with local subscribers (under the `RoomSupervisor`), and per-user feeds.

pub mod event;
pub mod hub;
