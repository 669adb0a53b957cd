//! The realtime core: one `UserSession` actor per WebSocket, one `ChatRoom` actor per chat
//! with local subscribers (under the `RoomSupervisor`), per-user feeds, and the [`router`]
//! that hands the broker's events to them. Other nodes are reached only through
//! [`peers::Peers`], which the cluster layer implements.

pub mod frames;
pub mod heartbeat;
pub mod messages;
pub mod outbound;
pub mod peers;
pub mod protocol;
pub mod room;
pub mod router;
pub mod session;
pub mod socket;
pub mod supervisor;

/// The events rooms and feeds deliver; they belong to the broker, which carries them.
pub use crate::broker::event;
