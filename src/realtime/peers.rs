//! The other nodes, as this node's rooms see them. A room delivers the events it makes itself
//! (presence, typing) locally and hands them to [`Peers`] for the other nodes, keeps the
//! cluster's record of who is online in it current, and reads who is online elsewhere. The
//! cluster layer (`crate::cluster`) implements it over Redis; a single node has none.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::broker::{Event, Topic};

/// Cross-node presence and the room-made events other nodes need.
pub trait Peers: Send + Sync + 'static {
    /// Sends an event a room made (and already delivered here) to the other nodes following
    /// `topic`.
    fn send(&self, topic: Topic, event: &Event);
    /// Records this node's online users in a room (none: this node has none there).
    fn set_online(&self, chat_id: Uuid, users: Vec<Uuid>)
        -> BoxFuture<'static, Result<(), String>>;
    /// Users online in the room on other live nodes; `None` when that cannot be read now.
    fn online_elsewhere(&self, chat_id: Uuid) -> BoxFuture<'static, Option<HashSet<Uuid>>>;
    /// How often a room reads who is online elsewhere (users of a node that went silent leave
    /// within about this long).
    fn refresh_every(&self) -> Duration;
}
