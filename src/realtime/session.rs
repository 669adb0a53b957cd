//! `UserSession`: one actor per WebSocket connection, the one that speaks the protocol. It
//! owns the token's expiry and the session's subscriptions; its outbound queue is shared with
//! the rooms that fan out to it. The socket under it ([`super::socket`]) hands it complete,
//! admitted messages; it parses them and hands every request to the same services REST uses
//! (the chat service, AI replies, video jobs), through the narrow [`SessionEnv`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::frames::{
    AckFrame, AckToCancel, AckToPrompt, AckToRefreshToken, AckToSend, JobsFrame, PongFrame,
    ServerFrame, SessionLimits, UnsubscribedFrame, WelcomeFrame,
};
use super::messages::{Activate, Join, Leave, RoomNotice, Typing};
use super::outbound::{Outbound, ITEM_COST};
use super::protocol::{self, encode, error_frame, Request};
use super::room::ChatRoom;
use super::router::Router;
use crate::ai::replies::Prompt;
use crate::ai::Replies;
use crate::api_types::MessageResponse;
use crate::auth::UserAuth;
use crate::broker::Event;
use crate::chat::service::PostMessage;
use crate::chat::{check_content, ChatService};
use crate::config::Settings;
use crate::error::ApiError;
use crate::limits::SocketSlot;
use crate::metrics::Metrics;
use crate::video::VideoService;

/// Close code when the token expires without `refresh_token`.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code when a client keeps flooding past its rate limit.
pub const CLOSE_RATE_LIMITED: u16 = 4029;
/// Close code for a frame or message over the size limit (RFC 6455 §7.4.1).
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Close code for a text message that is not valid UTF-8 (RFC 6455 §7.4.1).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code for any other protocol violation (RFC 6455 §7.4.1).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code when the user already holds `WS_MAX_SESSIONS_PER_USER` sockets on this node.
pub const CLOSE_TOO_MANY_SESSIONS: u16 = 4030;
/// Typing events a session may send per chat, at most one per this interval.
const TYPING_INTERVAL: Duration = Duration::from_millis(1000);

/// What a session may use: the services REST handlers use too, and this node's router.
#[derive(Clone)]
pub struct SessionEnv {
    /// Validated settings (limits, heartbeat, replay bound).
    pub settings: Arc<Settings>,
    /// This node's rooms and feeds.
    pub router: Arc<Router>,
    /// Chats and messages: subscribe's replay, `send`.
    pub chats: ChatService,
    /// AI replies: `prompt`, `cancel`, the snapshots of replies in flight.
    pub replies: Arc<Replies>,
    /// Video jobs: `jobs`.
    pub videos: VideoService,
    /// Token verification, for `refresh_token`.
    pub auth: Arc<UserAuth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// What the socket hands its session: complete, admitted client messages, and its end.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Inbound {
    /// A text message (valid UTF-8, within the size and rate limits).
    Text(ByteString),
    /// A binary message (not part of the protocol).
    Binary,
    /// The socket is closed: the session ends.
    Closed,
}

impl Inbound {
    /// Bytes it counts against the session's bound while waiting (see `Outbound::inbox_take`).
    pub fn cost(&self) -> usize {
        match self {
            Inbound::Text(text) => text.len() + ITEM_COST,
            Inbound::Binary => ITEM_COST,
            Inbound::Closed => 0,
        }
    }
}

/// One WebSocket connection.
pub struct UserSession {
    id: Uuid,
    user_id: Uuid,
    /// Token expiry, seconds since the epoch.
    exp: i64,
    env: SessionEnv,
    out: Outbound,
    /// Chats this session is subscribed to, with their rooms.
    rooms: HashMap<Uuid, Addr<ChatRoom>>,
    expiry: Option<SpawnHandle>,
    typing_sent: HashMap<Uuid, Instant>,
    /// This socket's place under the per-user cap, given back when the session ends.
    _slot: SocketSlot,
}

impl UserSession {
    /// A session for an authenticated user whose socket writes go through `out`.
    pub fn new(env: SessionEnv, user_id: Uuid, exp: i64, out: Outbound, slot: SocketSlot) -> Self {
        UserSession {
            id: Uuid::new_v4(),
            user_id,
            exp,
            env,
            out,
            rooms: HashMap::new(),
            expiry: None,
            typing_sent: HashMap::new(),
            _slot: slot,
        }
    }

    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.expiry.take() {
            ctx.cancel_future(h);
        }
        let left = self.exp - chrono::Utc::now().timestamp();
        let after = Duration::from_secs(left.max(0) as u64);
        self.expiry = Some(ctx.run_later(after, |act, ctx| {
            act.env
                .metrics
                .ws_disconnects
                .with_label_values(&["token_expired"])
                .inc();
            act.out.close(CLOSE_TOKEN_EXPIRED, "token expired");
            ctx.stop();
        }));
    }

    /// Sends a reply frame to this session.
    fn reply(&self, frame: ServerFrame) {
        self.count_out(frame.kind());
        self.out.send(encode(&frame));
    }

    fn count_out(&self, kind: &'static str) {
        self.env
            .metrics
            .ws_frames_out
            .with_label_values(&[kind])
            .inc();
    }

    fn error(&self, id: &Option<String>, code: &str, message: &str) {
        self.count_out("error");
        self.out.send(error_frame(id, code, message));
    }

    fn api_error(&self, id: &Option<String>, e: &ApiError) {
        self.error(id, e.protocol_code(), &e.public_message());
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let (id, req) = match protocol::parse(text) {
            Ok(parsed) => parsed,
            Err(bad) => {
                self.env
                    .metrics
                    .ws_frames_in
                    .with_label_values(&["invalid"])
                    .inc();
                self.error(&bad.id, "bad_request", &bad.message);
                return;
            }
        };
        self.env
            .metrics
            .ws_frames_in
            .with_label_values(&[protocol::kind(&req)])
            .inc();
        match req {
            Request::Ping => self.reply(ServerFrame::Pong(PongFrame { id })),
            Request::Subscribe { chat_id, since_seq } => {
                self.subscribe(id, chat_id, since_seq, ctx)
            }
            Request::Unsubscribe { chat_id } => {
                if self.rooms.remove(&chat_id).is_some() {
                    self.env.router.supervisor().do_send(Leave {
                        chat_id,
                        session_id: self.id,
                    });
                }
                self.reply(ServerFrame::Unsubscribed(UnsubscribedFrame { id, chat_id }));
            }
            Request::Send {
                chat_id,
                content,
                client_msg_id,
            } => self.send(id, chat_id, content, client_msg_id, ctx),
            Request::Typing { chat_id } => {
                let Some(room) = self.rooms.get(&chat_id) else {
                    self.error(&id, "bad_request", "not subscribed to this chat");
                    return;
                };
                let now = Instant::now();
                let recent = self
                    .typing_sent
                    .get(&chat_id)
                    .is_some_and(|t| now.duration_since(*t) < TYPING_INTERVAL);
                if !recent {
                    self.typing_sent.insert(chat_id, now);
                    room.do_send(Typing {
                        session_id: self.id,
                        user_id: self.user_id,
                    });
                }
            }
            Request::RefreshToken { token } => self.refresh(id, token, ctx),
            Request::Prompt {
                chat_id,
                content,
                model,
            } => self.prompt(id, chat_id, content, model, ctx),
            Request::Cancel { generation_id } => self.cancel(id, generation_id, ctx),
            Request::Jobs => {
                let (videos, user_id) = (self.env.videos.clone(), self.user_id);
                let fut = async move { videos.active_jobs(user_id).await };
                ctx.wait(fut.into_actor(self).map(move |res, act, _| match res {
                    Ok(jobs) => act.reply(ServerFrame::Jobs(JobsFrame { id, jobs })),
                    Err(e) => act.api_error(&id, &e),
                }));
            }
        }
    }

    fn subscribe(
        &mut self,
        id: Option<String>,
        chat_id: Uuid,
        since_seq: Option<i64>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(_old) = self.rooms.remove(&chat_id) {
            self.env.router.supervisor().do_send(Leave {
                chat_id,
                session_id: self.id,
            });
        }
        let env = self.env.clone();
        let (session_id, user_id, out) = (self.id, self.user_id, self.out.clone());
        let notify = ctx.address().recipient::<RoomNotice>();
        let limit = env.settings.recovery_limit;
        let fut = async move {
            // Join first: from here on the room buffers live events for us, so reading the
            // database afterwards leaves no window in which a message could be missed. A
            // buffering member sees nothing; a non-member is taken out again below.
            let room = env
                .router
                .supervisor()
                .send(Join {
                    chat_id,
                    session_id,
                    user_id,
                    out: out.clone(),
                    notify,
                })
                .await
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("room supervisor: {e}")))?;
            let replay = env.chats.replay(user_id, chat_id, since_seq, limit).await?;
            let mut through = replay.last_seq;
            for m in replay.missed {
                through = through.max(m.seq);
                let frame = Event::Message {
                    chat_id,
                    message: MessageResponse::from(m),
                }
                .encode();
                if !out.send_wait(frame).await {
                    break;
                }
            }
            // Replies being generated, here and on other nodes: their text so far, then (from
            // the room) later tokens.
            let mut generations = Vec::new();
            for snapshot in env.replies.snapshots(chat_id).await {
                generations.push((snapshot.generation_id, snapshot.index));
                if !out.send_wait(snapshot.event().encode()).await {
                    break;
                }
            }
            Ok((room, through, replay.recovered, generations))
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok((room, through, recovered, generations)) => {
                room.do_send(Activate {
                    generations,
                    session_id: act.id,
                    request_id: id,
                    replayed_through: through,
                    recovered,
                });
                act.rooms.insert(chat_id, room);
            }
            Err(e) => {
                // If the join happened before a later failure, undo it.
                act.env.router.supervisor().do_send(Leave {
                    chat_id,
                    session_id: act.id,
                });
                act.api_error(&id, &e);
            }
        }));
    }

    fn send(
        &mut self,
        id: Option<String>,
        chat_id: Uuid,
        content: String,
        client_msg_id: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        if !self.rooms.contains_key(&chat_id) {
            self.error(&id, "bad_request", "not subscribed to this chat");
            return;
        }
        if let Err(e) = check_content(&["content"], &content) {
            self.api_error(&id, &e);
            return;
        }
        let chats = self.env.chats.clone();
        let user_id = self.user_id;
        let fut = async move {
            chats
                .post(
                    user_id,
                    PostMessage {
                        chat_id,
                        content,
                        is_from_ai: false,
                        client_msg_id,
                    },
                )
                .await
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(appended) => act.reply(ServerFrame::Ack(AckFrame::Send(AckToSend {
                id,
                message_id: appended.message.id.0,
                seq: appended.message.seq,
                duplicate: !appended.created,
            }))),
            Err(e) => act.api_error(&id, &e),
        }));
    }

    /// `prompt`: stores the message like `send`, then the AI reply streams to the room.
    fn prompt(
        &mut self,
        id: Option<String>,
        chat_id: Uuid,
        content: String,
        model: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if !self.rooms.contains_key(&chat_id) {
            self.error(&id, "bad_request", "not subscribed to this chat");
            return;
        }
        if let Err(e) = check_content(&["content"], &content) {
            self.api_error(&id, &e);
            return;
        }
        let replies = self.env.replies.clone();
        let user_id = self.user_id;
        let fut = async move {
            let prompt = Prompt {
                chat_id,
                user_id,
                content,
                model,
                client_msg_id: None,
                stream_to_caller: false,
            };
            replies.start(prompt).await
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(started) => act.reply(ServerFrame::Ack(AckFrame::Prompt(AckToPrompt {
                id,
                message_id: started.user_message.message.id.0,
                seq: started.user_message.message.seq,
                generation_id: started.generation.id,
            }))),
            Err(e) => act.api_error(&id, &e),
        }));
    }

    /// `cancel`: stops a generation in a chat the user is a member of.
    fn cancel(&mut self, id: Option<String>, generation_id: Uuid, ctx: &mut Context<Self>) {
        let (replies, user_id) = (self.env.replies.clone(), self.user_id);
        let fut = async move { replies.cancel(user_id, generation_id).await };
        ctx.wait(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(()) => act.reply(ServerFrame::Ack(AckFrame::Cancel(AckToCancel {
                id,
                generation_id,
            }))),
            Err(e) => act.api_error(&id, &e),
        }));
    }

    fn refresh(&mut self, id: Option<String>, token: String, ctx: &mut Context<Self>) {
        let auth = self.env.auth.clone();
        let fut = async move { auth.authenticate(&token).await };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(user) if user.id == act.user_id => {
                act.exp = user.exp;
                act.schedule_expiry(ctx);
                act.reply(ServerFrame::Ack(AckFrame::RefreshToken(
                    AckToRefreshToken { id },
                )));
            }
            Ok(_) => act.error(&id, "unauthorized", "token is for another user"),
            Err(e) => act.api_error(&id, &e),
        }));
    }
}

impl Actor for UserSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let settings = &self.env.settings;
        self.env
            .router
            .register(self.id, self.user_id, self.out.clone());
        self.reply(ServerFrame::Welcome(WelcomeFrame {
            session_id: self.id,
            user_id: self.user_id,
            node_id: settings.node_id.clone(),
            protocol: protocol::PROTOCOL_VERSION,
            heartbeat_ms: settings.heartbeat_interval.as_millis() as u64,
            limits: SessionLimits {
                max_frame_bytes: settings.max_frame_bytes as u64,
                rate_per_sec: settings.rate_per_sec,
                rate_burst: settings.rate_burst,
                outbound_queue_bytes: settings.outbound_queue_bytes as u64,
                recovery_limit: settings.recovery_limit,
            },
        }));
        self.schedule_expiry(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for chat_id in self.rooms.keys() {
            self.env.router.supervisor().do_send(Leave {
                chat_id: *chat_id,
                session_id: self.id,
            });
        }
        self.env.router.unregister(self.id, self.user_id);
        // Anything still queued is sent before the normal close.
        self.out.close(1000, "bye");
    }
}

impl Handler<RoomNotice> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: RoomNotice, _: &mut Context<Self>) {
        // The room already dropped this session; the supervisor still counts it, and a room
        // it counts is never stopped.
        if self.rooms.remove(&msg.chat_id).is_some() {
            self.env.router.supervisor().do_send(Leave {
                chat_id: msg.chat_id,
                session_id: self.id,
            });
        }
    }
}

impl Handler<Inbound> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        self.out.inbox_done(msg.cost());
        match msg {
            Inbound::Text(text) => self.handle_text(&text, ctx),
            Inbound::Binary => self.error(&None, "bad_request", "binary frames are not supported"),
            Inbound::Closed => ctx.stop(),
        }
    }
}
