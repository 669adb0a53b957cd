//! Messages between the realtime actors.

use std::sync::Arc;

use actix::prelude::*;
use uuid::Uuid;

use super::outbound::Outbound;
use super::room::ChatRoom;
use crate::broker::Event;

/// Session → RoomSupervisor: add this session to a chat's room (buffering until `Activate`).
/// Answers with the room so the session can talk to it directly.
#[derive(Message)]
#[rtype(result = "Addr<ChatRoom>")]
pub struct Join {
    /// The chat.
    pub chat_id: Uuid,
    /// The joining session.
    pub session_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Its outbound queue.
    pub out: Outbound,
    /// Where the room tells the session it was unsubscribed.
    pub notify: Recipient<RoomNotice>,
}

/// Session → RoomSupervisor: remove this session from a chat's room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The chat.
    pub chat_id: Uuid,
    /// The leaving session.
    pub session_id: Uuid,
}

/// Session → ChatRoom: the replay is sent; send `subscribed` and go live.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Activate {
    /// The session.
    pub session_id: Uuid,
    /// The `id` of the client's `subscribe`, echoed in `subscribed`.
    pub request_id: Option<String>,
    /// Highest seq the client has now (from its replay or the chat's last seq).
    pub replayed_through: i64,
    /// False when the gap was over the recovery limit.
    pub recovered: bool,
    /// In-flight AI replies whose `generation_snapshot` the session was sent, with the index
    /// of the last token each held (-1 for none).
    pub generations: Vec<(Uuid, i64)>,
}

/// Router → ChatRoom: an event published to the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The event, shared.
    pub event: Arc<Event>,
}

/// Session → ChatRoom: the user is typing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Typing {
    /// The typing session (it does not get its own event back).
    pub session_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
}

/// ChatRoom → RoomSupervisor: the chat was deleted; drop the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomClosed {
    /// The chat.
    pub chat_id: Uuid,
}

/// Router → ChatRoom: the broker reconnected; read what may have been missed from the database.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatchUp;

/// ChatRoom → UserSession: the room removed this session (chat deleted, member removed).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct RoomNotice {
    /// The chat the session is no longer subscribed to.
    pub chat_id: Uuid,
}
