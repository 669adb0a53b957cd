//! `RoomSupervisor`: creates a `ChatRoom` on a chat's first local subscriber, stops it when the
//! last one leaves, and replaces a room whose actor died (logging it). Every join and leave goes
//! through it, so it alone decides a room's lifetime.
//!
//! The supervisor and its rooms hold each other's addresses, a cycle inside `realtime` on
//! purpose: the supervisor starts and stops rooms ([`StopRoom`]), and a room tells it when its
//! chat was deleted (`RoomClosed`).

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use uuid::Uuid;

use super::messages::{Join, Leave, RoomClosed};
use super::peers::Peers;
use super::room::ChatRoom;
use crate::broker::{Interest, Topic};
use crate::db::Db;
use crate::metrics::Metrics;

/// Supervises this node's rooms.
pub struct RoomSupervisor {
    /// Live rooms by chat, shared with the router so deliveries skip the supervisor.
    rooms: Arc<DashMap<Uuid, Addr<ChatRoom>>>,
    /// Sessions joined per room.
    sessions: HashMap<Uuid, usize>,
    db: Db,
    metrics: Arc<Metrics>,
    /// The thread rooms run on, apart from the HTTP workers.
    arbiter: ArbiterHandle,
    /// Tells a cross-node broker which rooms this node follows.
    interest: Option<Interest>,
    /// The other nodes, for the rooms' presence and the events they make themselves.
    peers: Option<Arc<dyn Peers>>,
}

impl RoomSupervisor {
    /// A supervisor filling `rooms`, running rooms on `arbiter`.
    pub fn new(
        rooms: Arc<DashMap<Uuid, Addr<ChatRoom>>>,
        db: Db,
        metrics: Arc<Metrics>,
        arbiter: ArbiterHandle,
        interest: Option<Interest>,
        peers: Option<Arc<dyn Peers>>,
    ) -> Self {
        RoomSupervisor {
            rooms,
            sessions: HashMap::new(),
            db,
            metrics,
            arbiter,
            interest,
            peers,
        }
    }

    fn tell_interest(&self, chat_id: Uuid, wanted: bool) {
        if let Some(tx) = &self.interest {
            let _ = tx.send((Topic::Room(chat_id), wanted));
        }
    }

    fn room(&mut self, chat_id: Uuid, me: Addr<Self>) -> Addr<ChatRoom> {
        if let Some(addr) = self.rooms.get(&chat_id) {
            if addr.connected() {
                return addr.clone();
            }
            tracing::error!(%chat_id, "room actor died; starting a new one");
        }
        let db = self.db.clone();
        let metrics = self.metrics.clone();
        let peers = self.peers.clone();
        let addr = ChatRoom::start_in_arbiter(&self.arbiter, move |_| {
            ChatRoom::new(chat_id, db, metrics, me, peers)
        });
        if self.rooms.insert(chat_id, addr.clone()).is_none() {
            self.tell_interest(chat_id, true);
        }
        addr
    }
}

impl Actor for RoomSupervisor {
    type Context = Context<Self>;
}

impl Handler<Join> for RoomSupervisor {
    type Result = MessageResult<Join>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        let room = self.room(msg.chat_id, ctx.address());
        *self.sessions.entry(msg.chat_id).or_insert(0) += 1;
        room.do_send(msg);
        MessageResult(room)
    }
}

impl Handler<Leave> for RoomSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        let chat_id = msg.chat_id;
        let Some(n) = self.sessions.get_mut(&chat_id) else {
            return;
        };
        *n = n.saturating_sub(1);
        let empty = *n == 0;
        let Some(room) = self.rooms.get(&chat_id).map(|r| r.clone()) else {
            return;
        };
        room.do_send(msg);
        if empty {
            // Joins arriving later create a fresh room; this one stops after the Leave.
            self.sessions.remove(&chat_id);
            self.rooms.remove(&chat_id);
            self.tell_interest(chat_id, false);
            room.do_send(StopRoom);
        }
    }
}

impl Handler<RoomClosed> for RoomSupervisor {
    type Result = ();

    fn handle(&mut self, msg: RoomClosed, _: &mut Context<Self>) {
        self.sessions.remove(&msg.chat_id);
        if let Some((_, room)) = self.rooms.remove(&msg.chat_id) {
            self.tell_interest(msg.chat_id, false);
            room.do_send(StopRoom);
        }
    }
}

/// RoomSupervisor → ChatRoom: stop now (no members left).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRoom;

impl Handler<StopRoom> for ChatRoom {
    type Result = ();

    fn handle(&mut self, _: StopRoom, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
