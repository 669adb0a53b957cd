//! `ChatRoom`: one actor per chat with local subscribers. It knows who is online, delivers
//! `message` events in `seq` order (holding later ones while a gap is filled from the
//! database), and serialises each event once for all of its sessions. In a cluster it also
//! shares presence with the other nodes through [`Peers`], without knowing how they are reached.
//!
//! A room holds its supervisor's address and the supervisor holds the room's (see
//! `supervisor.rs`): a cycle of actor addresses inside this folder, on purpose.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::frames::{ServerFrame, SubscribedFrame, UnsubscribedFrame};
use super::messages::{Activate, CatchUp, Deliver, Join, Leave, RoomClosed, RoomNotice, Typing};
use super::outbound::Outbound;
use super::peers::Peers;
use super::protocol::encode;
use super::supervisor::RoomSupervisor;
use crate::api_types::MessageResponse;
use crate::broker::{Event, PresenceState, Topic};
use crate::db::{messages, Db};
use crate::metrics::Metrics;

/// How long a room holds messages behind a gap before reading the missing ones from the
/// database (a publisher that committed but has not published yet is usually microseconds away).
pub const GAP_FILL_AFTER: Duration = Duration::from_millis(250);

enum MemberState {
    /// Joined; frames are kept until the session's replay is sent.
    Buffering(Vec<(Option<i64>, ByteString)>),
    /// Receiving live; message seqs up to `skip_through` were in its replay.
    Live { skip_through: i64 },
}

/// Where an AI generation event belongs, for a member that joined while it streams.
#[derive(Clone, Copy)]
enum GenFrame {
    /// `generation_started`.
    Started,
    /// `token` with its index.
    Token(u64),
    /// `generation_finished` or `generation_failed`.
    Ended,
}

struct Member {
    user_id: Uuid,
    out: Outbound,
    notify: Recipient<RoomNotice>,
    state: MemberState,
    /// Generation events that arrived while buffering, in order.
    gen_buffer: Vec<(Uuid, GenFrame, ByteString)>,
    /// Per in-flight generation, the last token index its `generation_snapshot` held: tokens
    /// up to it are not sent again.
    gen_skip: HashMap<Uuid, i64>,
    /// Bytes kept for it while buffering (both buffers), bounded like its outbound queue.
    held: usize,
}

/// Counts a frame kept for a buffering member against its session's outbound bound. Past the
/// bound the session is closed as a slow consumer (4008) at once, as it would be once the frames
/// reached its queue, and nothing more is kept for it: a replay the client reads slowly cannot
/// make the room hold the chat's traffic without limit. False when the frame must not be kept.
fn hold(out: &Outbound, held: &mut usize, len: usize) -> bool {
    if out.is_dead() {
        return false;
    }
    *held += len;
    if *held > out.limit() {
        out.kill_slow();
        return false;
    }
    true
}

/// Keeps `item` (a frame of `len` bytes) in one of a buffering member's buffers if [`hold`]
/// allows it; otherwise empties that buffer, whose session is closing.
fn keep<T>(out: &Outbound, held: &mut usize, buf: &mut Vec<T>, len: usize, item: T) {
    if hold(out, held, len) {
        buf.push(item);
    } else {
        *buf = Vec::new();
    }
}

impl Member {
    /// Sends what arrived while the session was being replayed: messages past the replay in
    /// `seq` order (each once), then the other events. Returns the last `seq` sent.
    fn flush_buffered(&mut self, buffered: Vec<(Option<i64>, ByteString)>, replayed: i64) -> i64 {
        let mut seqd: Vec<(i64, ByteString)> = Vec::new();
        let mut other: Vec<ByteString> = Vec::new();
        for (seq, frame) in buffered {
            match seq {
                Some(s) if s > replayed => seqd.push((s, frame)),
                Some(_) => {}
                None => other.push(frame),
            }
        }
        seqd.sort_by_key(|(s, _)| *s);
        seqd.dedup_by_key(|(s, _)| *s);
        let mut through = replayed;
        for (s, frame) in seqd {
            self.out.send(frame);
            through = through.max(s);
        }
        for frame in other {
            self.out.send(frame);
        }
        through
    }

    /// Sends the reply events that arrived while buffering: a reply's tokens only past the
    /// snapshot the session got (`snapshots`: reply → last token index in it), or when the
    /// reply's start came after that snapshot.
    fn flush_generations(&mut self, snapshots: &[(Uuid, i64)]) {
        self.gen_skip = snapshots.iter().copied().collect();
        let mut seen_start = HashSet::new();
        for (gen, kind, frame) in std::mem::take(&mut self.gen_buffer) {
            let send = match kind {
                GenFrame::Started => {
                    seen_start.insert(gen);
                    true
                }
                GenFrame::Token(i) => match self.gen_skip.get(&gen) {
                    Some(last) => i64::try_from(i).is_ok_and(|i| i > *last),
                    None => seen_start.contains(&gen),
                },
                GenFrame::Ended => {
                    self.gen_skip.remove(&gen);
                    true
                }
            };
            if send {
                self.out.send(frame);
            }
        }
    }
}

/// A chat's room on this node.
pub struct ChatRoom {
    chat_id: Uuid,
    db: Db,
    metrics: Arc<Metrics>,
    supervisor: Addr<RoomSupervisor>,
    /// Sessions by id.
    members: HashMap<Uuid, Member>,
    /// Live sessions per user, for presence.
    online: HashMap<Uuid, usize>,
    /// Highest seq delivered to live members; `None` until the first member goes live.
    cursor: Option<i64>,
    /// Messages that arrived ahead of a gap, by seq.
    pending: BTreeMap<i64, ByteString>,
    /// Scheduled gap fill, if any.
    gap_timer: Option<SpawnHandle>,
    /// The other nodes (in a cluster): they get the events this room makes itself (presence,
    /// typing) and share who is online.
    peers: Option<Arc<dyn Peers>>,
    /// Users online in this room on other (alive) nodes.
    remote_online: HashSet<Uuid>,
}

impl ChatRoom {
    /// An empty room for `chat_id`.
    pub fn new(
        chat_id: Uuid,
        db: Db,
        metrics: Arc<Metrics>,
        supervisor: Addr<RoomSupervisor>,
        peers: Option<Arc<dyn Peers>>,
    ) -> Self {
        ChatRoom {
            chat_id,
            db,
            metrics,
            supervisor,
            peers,
            remote_online: HashSet::new(),
            members: HashMap::new(),
            online: HashMap::new(),
            cursor: None,
            pending: BTreeMap::new(),
            gap_timer: None,
        }
    }

    /// Sends a frame to every member (buffering ones keep it), except `skip_user`'s sessions.
    fn broadcast(&mut self, frame: &ByteString, kind: &'static str, skip_user: Option<Uuid>) {
        let mut n = 0u64;
        for m in self.members.values_mut() {
            if Some(m.user_id) == skip_user {
                continue;
            }
            match &mut m.state {
                MemberState::Buffering(buf) => {
                    keep(&m.out, &mut m.held, buf, frame.len(), (None, frame.clone()));
                }
                MemberState::Live { .. } => {
                    m.out.send(frame.clone());
                    n += 1;
                }
            }
        }
        self.metrics
            .ws_frames_out
            .with_label_values(&[kind])
            .inc_by(n);
    }

    /// Delivers one message: to live members past their replay when `to_live` (it continues the
    /// cursor), and always into the buffers of members still being replayed.
    fn deliver_seq(&mut self, seq: i64, frame: &ByteString, to_live: bool) {
        let mut n = 0u64;
        for m in self.members.values_mut() {
            match &mut m.state {
                MemberState::Buffering(buf) => {
                    keep(
                        &m.out,
                        &mut m.held,
                        buf,
                        frame.len(),
                        (Some(seq), frame.clone()),
                    );
                }
                MemberState::Live { skip_through } => {
                    if to_live && seq > *skip_through {
                        m.out.send(frame.clone());
                        n += 1;
                    }
                }
            }
        }
        self.metrics
            .ws_frames_out
            .with_label_values(&["message"])
            .inc_by(n);
    }

    /// Delivers pending messages that continue the cursor; schedules a fill if a gap remains.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        let Some(mut cursor) = self.cursor else {
            return;
        };
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if seq > cursor + 1 {
                break;
            }
            let Some((seq, frame)) = self.pending.pop_first() else {
                break;
            };
            if seq == cursor + 1 {
                cursor = seq;
                self.deliver_seq(seq, &frame, true);
            } else {
                // seq <= cursor (a late catch-up or gap-fill read, or a copy from the other
                // pub/sub path): already in every live member's stream or replay. Buffering
                // members may still need it; their activation drops what the replay holds.
                self.deliver_seq(seq, &frame, false);
            }
        }
        self.cursor = Some(cursor);
        if self.pending.is_empty() {
            if let Some(h) = self.gap_timer.take() {
                ctx.cancel_future(h);
            }
        } else if self.gap_timer.is_none() {
            self.gap_timer = Some(ctx.run_later(GAP_FILL_AFTER, |room, ctx| {
                room.gap_timer = None;
                room.fill_gap(ctx);
            }));
        }
    }

    /// Reads the messages missing between the cursor and the first pending one.
    fn fill_gap(&mut self, ctx: &mut Context<Self>) {
        let (Some(cursor), Some((&first, _))) = (self.cursor, self.pending.first_key_value())
        else {
            return;
        };
        let db = self.db.clone();
        let chat_id = self.chat_id;
        let missing = first - cursor - 1;
        tracing::debug!(%chat_id, cursor, first, "filling a seq gap from the database");
        let fut = async move {
            let mut conn = db.conn().await?;
            let rows =
                messages::page(&mut conn, chat_id, 0, missing, Some(cursor), Some(first)).await?;
            Ok::<_, crate::db::DbError>(rows)
        };
        ctx.spawn(fut.into_actor(self).map(move |res, room, ctx| {
            match res {
                Ok(rows) => {
                    for m in rows {
                        let seq = m.seq;
                        let event = Event::Message {
                            chat_id,
                            message: MessageResponse::from(m),
                        };
                        room.pending.entry(seq).or_insert_with(|| event.encode());
                    }
                    // A gap the database cannot fill (a deleted row) must not stall the room.
                    if let Some((&first, _)) = room.pending.first_key_value() {
                        if room.cursor.is_some_and(|c| first > c + 1) {
                            tracing::warn!(%chat_id, first, "skipping an unfillable seq gap");
                            room.cursor = Some(first - 1);
                        }
                    }
                }
                Err(e) => tracing::warn!(%chat_id, error = %e, "gap fill failed; retrying"),
            }
            room.drain(ctx);
        }));
    }

    /// Delivers an event this room made (presence, typing) here and on the other nodes.
    fn announce(&mut self, event: Event, skip_user: Option<Uuid>) {
        if let Some(peers) = &self.peers {
            peers.send(Topic::Room(self.chat_id), &event);
            if matches!(event, Event::Presence { .. }) {
                let update = peers.set_online(self.chat_id, self.online.keys().copied().collect());
                actix_rt::spawn(async move {
                    if let Err(e) = update.await {
                        tracing::debug!(error = %e, "presence update failed");
                    }
                });
            }
        }
        let frame = event.encode();
        self.broadcast(&frame, event.kind(), skip_user);
    }

    /// Re-reads who is online on other nodes; users of nodes that went silent leave.
    fn refresh_remote(&mut self, ctx: &mut Context<Self>) {
        let Some(peers) = &self.peers else {
            return;
        };
        let chat_id = self.chat_id;
        ctx.spawn(
            peers
                .online_elsewhere(chat_id)
                .into_actor(self)
                .map(move |res, room, _| {
                    let Some(now) = res else { return };
                    let gone: Vec<Uuid> = room
                        .remote_online
                        .difference(&now)
                        .filter(|u| !room.online.contains_key(u))
                        .copied()
                        .collect();
                    room.remote_online = now;
                    for user_id in gone {
                        let frame = Event::Presence {
                            chat_id,
                            user_id,
                            state: PresenceState::Leave,
                        }
                        .encode();
                        room.broadcast(&frame, "presence", None);
                    }
                }),
        );
    }

    fn online_users(&self) -> Vec<Uuid> {
        let mut users: HashSet<Uuid> = self.online.keys().copied().collect();
        users.extend(self.remote_online.iter().copied());
        users.into_iter().collect()
    }

    /// Removes a session; announces `leave` if it was its user's last live session.
    fn remove(&mut self, session_id: Uuid) -> Option<Member> {
        let member = self.members.remove(&session_id)?;
        if matches!(member.state, MemberState::Live { .. }) {
            let last = match self.online.get_mut(&member.user_id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.online.remove(&member.user_id);
                    true
                }
                None => false,
            };
            if last {
                let event = Event::Presence {
                    chat_id: self.chat_id,
                    user_id: member.user_id,
                    state: PresenceState::Leave,
                };
                self.announce(event, None);
            }
        }
        Some(member)
    }

    /// Unsubscribes every session of `user_id` (they were removed from the chat).
    fn evict_user(&mut self, user_id: Uuid) {
        let ids: Vec<Uuid> = self
            .members
            .iter()
            .filter(|(_, m)| m.user_id == user_id)
            .map(|(id, _)| *id)
            .collect();
        let frame = unsubscribed_frame(self.chat_id);
        for id in ids {
            if let Some(m) = self.remove(id) {
                m.out.send(frame.clone());
                m.notify.do_send(RoomNotice {
                    chat_id: self.chat_id,
                });
            }
        }
    }
}

fn unsubscribed_frame(chat_id: Uuid) -> ByteString {
    encode(&ServerFrame::Unsubscribed(UnsubscribedFrame {
        id: None,
        chat_id,
    }))
}

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.ws_rooms.inc();
        if let Some(peers) = &self.peers {
            let every = peers.refresh_every();
            self.refresh_remote(ctx);
            ctx.run_interval(every, |room, ctx| room.refresh_remote(ctx));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.ws_rooms.dec();
    }
}

impl Handler<Join> for ChatRoom {
    type Result = MessageResult<Join>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        self.members.insert(
            msg.session_id,
            Member {
                user_id: msg.user_id,
                out: msg.out,
                notify: msg.notify,
                state: MemberState::Buffering(Vec::new()),
                gen_buffer: Vec::new(),
                gen_skip: HashMap::new(),
                held: 0,
            },
        );
        MessageResult(ctx.address())
    }
}

impl Handler<Leave> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.remove(msg.session_id);
    }
}

impl Handler<Activate> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Activate, ctx: &mut Context<Self>) {
        let chat_id = self.chat_id;
        let Some(member) = self.members.get_mut(&msg.session_id) else {
            return;
        };
        let user_id = member.user_id;
        let buffered = match std::mem::replace(
            &mut member.state,
            MemberState::Live {
                skip_through: msg.replayed_through,
            },
        ) {
            MemberState::Buffering(buf) => buf,
            live @ MemberState::Live { .. } => {
                member.state = live;
                return;
            }
        };
        let first_session = {
            let n = self.online.entry(user_id).or_insert(0);
            *n += 1;
            *n == 1
        };
        let subscribed = ServerFrame::Subscribed(SubscribedFrame {
            id: msg.request_id,
            chat_id,
            last_seq: msg.replayed_through,
            recovered: msg.recovered,
            online: self.online_users(),
        });
        let Some(member) = self.members.get_mut(&msg.session_id) else {
            return;
        };
        member.out.send(encode(&subscribed));
        let through = member.flush_buffered(buffered, msg.replayed_through);
        member.flush_generations(&msg.generations);
        member.state = MemberState::Live {
            skip_through: through,
        };
        if first_session {
            let event = Event::Presence {
                chat_id,
                user_id,
                state: PresenceState::Join,
            };
            self.announce(event, None);
        }
        if self.cursor.is_none() {
            self.cursor = Some(msg.replayed_through);
            self.drain(ctx);
        }
    }
}

/// Most messages a catch-up reads at once; a room further behind continues on the next one.
const CATCH_UP_BATCH: i64 = 1000;

impl Handler<CatchUp> for ChatRoom {
    type Result = ();

    fn handle(&mut self, _: CatchUp, ctx: &mut Context<Self>) {
        let Some(cursor) = self.cursor else {
            return;
        };
        let db = self.db.clone();
        let chat_id = self.chat_id;
        let fut = async move {
            let mut conn = db.conn().await?;
            messages::page(&mut conn, chat_id, 0, CATCH_UP_BATCH, Some(cursor), None)
                .await
                .map_err(crate::db::DbError::from)
        };
        ctx.spawn(fut.into_actor(self).map(move |res, room, ctx| {
            match res {
                Ok(rows) => {
                    for m in rows {
                        let seq = m.seq;
                        let event = Event::Message {
                            chat_id,
                            message: MessageResponse::from(m),
                        };
                        room.pending.entry(seq).or_insert_with(|| event.encode());
                    }
                }
                Err(e) => tracing::warn!(%chat_id, error = %e, "catch-up read failed"),
            }
            room.drain(ctx);
        }));
    }
}

impl Handler<Typing> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Typing, _: &mut Context<Self>) {
        let live = self
            .members
            .get(&msg.session_id)
            .is_some_and(|m| matches!(m.state, MemberState::Live { .. }));
        if live {
            let event = Event::Typing {
                chat_id: self.chat_id,
                user_id: msg.user_id,
            };
            self.announce(event, Some(msg.user_id));
        }
    }
}

impl Handler<Deliver> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        // A bug in fan-out must not take the room (and its members' subscriptions) down.
        let chat_id = self.chat_id;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.deliver(msg, ctx);
        }));
        if outcome.is_err() {
            tracing::error!(%chat_id, "room recovered from a panic while delivering an event");
        }
    }
}

impl ChatRoom {
    fn deliver(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let event = msg.event;
        if let Some(seq) = event.seq() {
            if self.cursor.is_none_or(|c| seq > c) {
                let frame = self.pending.entry(seq).or_insert_with(|| event.encode());
                if self.cursor.is_none() {
                    // Nobody is live yet: the room keeps the message for its members, who are
                    // all still being replayed, and it counts against each one's bound.
                    let len = frame.len();
                    for m in self.members.values_mut() {
                        hold(&m.out, &mut m.held, len);
                    }
                }
            }
            self.drain(ctx);
            return;
        }
        let frame = event.encode();
        match &*event {
            Event::ChatDeleted { chat_id } => {
                self.broadcast(&frame, "chat_deleted", None);
                let sessions: Vec<Uuid> = self.members.keys().copied().collect();
                for id in sessions {
                    if let Some(m) = self.members.remove(&id) {
                        m.notify.do_send(RoomNotice { chat_id: *chat_id });
                    }
                }
                self.online.clear();
                self.supervisor.do_send(RoomClosed { chat_id: *chat_id });
            }
            Event::Presence { user_id, state, .. } => {
                // From another node: keep the cluster-wide online list current.
                match state {
                    PresenceState::Join => {
                        self.remote_online.insert(*user_id);
                    }
                    PresenceState::Leave => {
                        self.remote_online.remove(user_id);
                        self.refresh_remote(ctx);
                    }
                }
                self.broadcast(&frame, "presence", None);
            }
            Event::Typing { user_id, .. } => {
                // From another node: the typist's own sessions here do not get it back.
                let user_id = *user_id;
                self.broadcast(&frame, "typing", Some(user_id));
            }
            Event::MemberRemoved { user_id, .. } => {
                let user_id = *user_id;
                self.evict_user(user_id);
                self.broadcast(&frame, "member_removed", None);
            }
            Event::GenerationStarted { .. }
            | Event::Token { .. }
            | Event::GenerationFinished { .. }
            | Event::GenerationFailed { .. } => self.deliver_generation(&event, &frame),
            other => {
                let kind = other.kind();
                self.broadcast(&frame, kind, None);
            }
        }
    }
}

impl ChatRoom {
    /// Delivers an AI generation event: buffering members keep it, tagged, until they go live;
    /// live members get it unless it is a token their snapshot already held.
    fn deliver_generation(&mut self, event: &Event, frame: &ByteString) {
        let (gen, kind) = match event {
            Event::GenerationStarted { generation_id, .. } => (*generation_id, GenFrame::Started),
            Event::Token {
                generation_id,
                index,
                ..
            } => (*generation_id, GenFrame::Token(*index)),
            Event::GenerationFinished { generation_id, .. }
            | Event::GenerationFailed { generation_id, .. } => (*generation_id, GenFrame::Ended),
            _ => return,
        };
        let mut n = 0u64;
        for m in self.members.values_mut() {
            if let MemberState::Buffering(_) = m.state {
                let item = (gen, kind, frame.clone());
                keep(&m.out, &mut m.held, &mut m.gen_buffer, frame.len(), item);
                continue;
            }
            let covered = match kind {
                GenFrame::Token(i) => m
                    .gen_skip
                    .get(&gen)
                    .is_some_and(|last| i64::try_from(i).is_ok_and(|i| i <= *last)),
                GenFrame::Started => false,
                GenFrame::Ended => {
                    m.gen_skip.remove(&gen);
                    false
                }
            };
            if !covered {
                m.out.send(frame.clone());
                n += 1;
            }
        }
        self.metrics
            .ws_frames_out
            .with_label_values(&[event.kind()])
            .inc_by(n);
    }
}
