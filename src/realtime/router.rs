//! The router: this node's delivery end of the broker ([`Delivery`]). Room events go straight
//! to the chat's `ChatRoom` (if any session here subscribed to it); user-feed events go to that
//! user's sessions. It also knows every session, to close them all at shutdown, and tells the
//! broker which topics this node follows ([`Interest`]).

use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use uuid::Uuid;

use super::messages::Deliver;
use super::outbound::Outbound;
use super::peers::Peers;
use super::room::ChatRoom;
use super::supervisor::RoomSupervisor;
use crate::ai::RoomWatch;
use crate::broker::{Delivery, Event, Interest, Topic};
use crate::db::Db;
use crate::metrics::Metrics;

/// Close code when the node shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Local rooms, feeds and sessions.
pub struct Router {
    /// Rooms with local sessions, by chat.
    rooms: Arc<DashMap<Uuid, Addr<ChatRoom>>>,
    /// The supervisor that owns the rooms.
    supervisor: Addr<RoomSupervisor>,
    /// Each user's local sessions (their feed), by user then session.
    feeds: DashMap<Uuid, Vec<(Uuid, Outbound)>>,
    /// Every local session, for shutdown.
    sessions: DashMap<Uuid, Outbound>,
    metrics: Arc<Metrics>,
    /// Tells a cross-node broker which topics this node needs (`None` with the local broker).
    interest: Option<Interest>,
}

impl Router {
    /// Starts the supervisor (and the arbiter rooms run on). Call inside an actix system.
    /// `interest` (with a cross-node broker) learns which topics this node follows; `peers`
    /// (in a cluster) are the other nodes, for the rooms' presence.
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        interest: Option<Interest>,
        peers: Option<Arc<dyn Peers>>,
    ) -> Router {
        let rooms = Arc::new(DashMap::new());
        let arbiter = Arbiter::new().handle();
        let sup_rooms = rooms.clone();
        let sup_metrics = metrics.clone();
        let sup_interest = interest.clone();
        let supervisor = RoomSupervisor::start_in_arbiter(&arbiter.clone(), move |_| {
            RoomSupervisor::new(sup_rooms, db, sup_metrics, arbiter, sup_interest, peers)
        });
        Router {
            rooms,
            supervisor,
            feeds: DashMap::new(),
            sessions: DashMap::new(),
            metrics,
            interest,
        }
    }

    /// The room supervisor.
    pub fn supervisor(&self) -> &Addr<RoomSupervisor> {
        &self.supervisor
    }

    /// True when a session on this node is subscribed to the chat's room.
    pub fn room_is_watched(&self, chat_id: Uuid) -> bool {
        self.rooms.contains_key(&chat_id)
    }

    /// Hands an event to the local subscribers of `topic`.
    pub fn deliver(&self, topic: Topic, event: Arc<Event>) {
        match topic {
            Topic::Room(chat_id) => {
                if let Some(room) = self.rooms.get(&chat_id) {
                    room.do_send(Deliver { event });
                }
            }
            Topic::User(user_id) => {
                if let Some(sessions) = self.feeds.get(&user_id) {
                    let frame = event.encode();
                    for (_, out) in sessions.iter() {
                        out.send(frame.clone());
                    }
                    self.metrics
                        .ws_frames_out
                        .with_label_values(&[event.kind()])
                        .inc_by(sessions.len() as u64);
                }
            }
        }
    }

    /// Registers a session and subscribes it to its user's feed.
    pub fn register(&self, session_id: Uuid, user_id: Uuid, out: Outbound) {
        self.sessions.insert(session_id, out.clone());
        let mut feed = self.feeds.entry(user_id).or_default();
        feed.push((session_id, out));
        if feed.len() == 1 {
            if let Some(tx) = &self.interest {
                let _ = tx.send((Topic::User(user_id), true));
            }
        }
        drop(feed);
        self.metrics.ws_sessions.inc();
    }

    /// Forgets a session.
    pub fn unregister(&self, session_id: Uuid, user_id: Uuid) {
        if self.sessions.remove(&session_id).is_some() {
            self.metrics.ws_sessions.dec();
        }
        let empty = match self.feeds.get_mut(&user_id) {
            Some(mut v) => {
                v.retain(|(id, _)| *id != session_id);
                v.is_empty()
            }
            None => false,
        };
        if empty
            && self
                .feeds
                .remove_if(&user_id, |_, v| v.is_empty())
                .is_some()
        {
            if let Some(tx) = &self.interest {
                let _ = tx.send((Topic::User(user_id), false));
            }
        }
    }

    /// Calls `f` with every local session's id and queue (for the heartbeat).
    pub fn for_each_session(&self, mut f: impl FnMut(Uuid, &Outbound)) {
        for entry in self.sessions.iter() {
            f(*entry.key(), entry.value());
        }
    }

    /// Number of local sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Closes every local session with 1001 (after what is already queued for it).
    pub fn shutdown(&self) {
        for entry in self.sessions.iter() {
            entry
                .value()
                .close(CLOSE_GOING_AWAY, "server shutting down");
        }
    }
}

impl Delivery for Router {
    fn deliver(&self, topic: Topic, event: Arc<Event>) {
        Router::deliver(self, topic, event);
    }

    /// Asks every local room to read messages it may have missed from the database (after the
    /// cross-node broker reconnects).
    fn catch_up(&self) {
        for room in self.rooms.iter() {
            room.value().do_send(super::messages::CatchUp);
        }
    }
}

impl RoomWatch for Router {
    fn is_watched(&self, chat_id: Uuid) -> bool {
        self.room_is_watched(chat_id)
    }
}
