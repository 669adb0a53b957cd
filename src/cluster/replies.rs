//! In-flight AI replies across nodes: the Redis copy of every reply this node runs, and the
//! [`ReplyCluster`] the AI layer asks about replies on other nodes.
//!
//! The node running a reply keeps a copy of it in Redis: which node runs it and every token so
//! far. The copy is written just before the event's `PUBLISH` on the same connection (Redis
//! runs one connection's commands in order), so a node that starts following the room after a
//! token went out still finds that token in the copy, and one that was already following gets
//! it live; the room drops what a snapshot already held. Another
//! node reads the copy to send `generation_snapshot`, and asks the running node, on that node's
//! control channel, to cancel.
//!
//! A REST client resuming a reply (`GET /chat/{id}/stream`) on another node follows the copy
//! by polling it, since it has no room to listen to: [`ReplyCopies::follow`].
//!
//! Keys, laid out for a Redis Cluster: what one pipeline touches shares one `{…}` hash tag, so
//! one slot. A room's keys and its channel share `{room:<chat>}`, so a token's copy and its
//! `SPUBLISH` go to the same shard in one pipeline, in that order; the keys that find a reply
//! by its id alone share `{gen:<generation>}`:
//! - `{prefix}:gens:{room:<chat>}` — hash, generation id → [`RemoteGeneration`] (JSON), while
//!   the reply runs;
//! - `{prefix}:gen:{room:<chat>}:<generation>` — hash, token index → delta;
//! - `{prefix}:gen:{room:<chat>}:<generation>:end` — [`RemoteEnd`], once the reply is over (read
//!   with the tokens in one `MULTI`);
//! - `{prefix}:gen:{gen:<generation>}` — [`RemoteGeneration`], to find a reply's chat by its id;
//! - `{prefix}:gen:{gen:<generation>}:end` — [`RemoteEnd`] again, for that lookup.
//!
//! Every token renews the keys' expiry; a node that dies mid-reply leaves a copy that other
//! nodes ignore as soon as its heartbeat lapses and Redis drops within [`COPY_TTL_SECS`]. An
//! ended reply's tokens and end stay [`ENDED_TTL_SECS`] for followers to read to the end.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::broker::{self, Barriers, RemoteSink, Status};
use super::presence::ClusterPresence;
use super::within;
use crate::ai::cluster::{RemoteGeneration, RemoteReply, ReplyCluster};
use crate::ai::messages::StreamUpdate;
use crate::ai::registry::{Permit, Refusal, Snapshot};
use crate::ai::{FinishReason, Usage};
use crate::broker::{Event, Topic};

/// How long a reply's copy outlives its last expiry renewal.
pub const COPY_TTL_SECS: i64 = 120;
/// The copy's expiry is renewed with every this many tokens (not each one: a token costs one
/// `HSET` next to its `PUBLISH`).
const RENEW_EVERY_TOKENS: u64 = 32;
/// How long an ended reply's tokens and end stay for followers.
pub const ENDED_TTL_SECS: i64 = 30;
/// How often a follower reads the copy.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// A follower gives up after this long, or after this many failed reads in a row.
const FOLLOW_AT_MOST: Duration = Duration::from_secs(30 * 60);
const FOLLOW_READ_FAILURES: u32 = 100;

/// How a copied reply ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteEnd {
    /// Stored, complete or cancelled.
    Finished {
        /// `stop`, `length`, `cancelled` or `error`.
        finish_reason: String,
        /// Token counts.
        usage: Usage,
    },
    /// Failed.
    Failed {
        /// What went wrong, safe to show.
        error: String,
    },
}

impl RemoteEnd {
    fn update(self) -> StreamUpdate {
        match self {
            RemoteEnd::Finished {
                finish_reason,
                usage,
            } => StreamUpdate::Finished {
                finish_reason: FinishReason::parse(&finish_reason).unwrap_or(FinishReason::Stop),
                usage,
            },
            RemoteEnd::Failed { error } => StreamUpdate::Failed { error },
        }
    }
}

/// What one node asks another on its control channel.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Cancel this generation (the asking node checked the user's membership).
    Cancel(Uuid),
}

fn index_key(prefix: &str, chat_id: Uuid) -> String {
    format!("{prefix}:gens:{{room:{chat_id}}}")
}

fn tokens_key(prefix: &str, chat_id: Uuid, generation_id: Uuid) -> String {
    format!("{prefix}:gen:{{room:{chat_id}}}:{generation_id}")
}

fn room_end_key(prefix: &str, chat_id: Uuid, generation_id: Uuid) -> String {
    format!("{prefix}:gen:{{room:{chat_id}}}:{generation_id}:end")
}

fn locate_key(prefix: &str, generation_id: Uuid) -> String {
    format!("{prefix}:gen:{{gen:{generation_id}}}")
}

fn end_key(prefix: &str, generation_id: Uuid) -> String {
    format!("{prefix}:gen:{{gen:{generation_id}}}:end")
}

fn user_replies_key(prefix: &str, user_id: Uuid) -> String {
    format!("{prefix}:replies:{{user:{user_id}}}")
}

/// How long a user's reply counts live after their last new reply (a safety net: each reply
/// takes its count back when it ends).
const USER_COUNT_TTL_SECS: i64 = 3600;

/// Counts a user's replies per node and takes one more place if the total is under the limit:
/// returns the new total, or -1 when full. It touches only the key it is given (a Redis
/// Cluster refuses others): the caller names the nodes whose heartbeat lapsed, and their counts
/// are dropped. KEYS[1] the user's hash; ARGV node id, limit, TTL, then the lapsed nodes.
const ADMIT_USER_SCRIPT: &str = r"
for i = 4, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 2, #fields, 2 do
  total = total + tonumber(fields[i])
end
if total >= tonumber(ARGV[2]) then return -1 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return total + 1
";

/// The channel a node listens on for [`Control`] requests.
pub fn control_channel(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:control:{{node:{node_id}}}")
}

/// The commands that keep the copy of a reply current, for one event this node publishes: those
/// on the reply's id slot, sent first, and those on the room's slot, sent in one pipeline with
/// the event's `SPUBLISH`.
pub struct Mirror {
    /// The keys that find the reply by its id (`{gen:…}`).
    pub by_id: Option<redis::Pipeline>,
    /// The room's keys (`{room:…}`, the channel's slot).
    pub room: redis::Pipeline,
}

/// The [`Mirror`] of `event`: `None` for events that are not about a reply.
pub fn mirror(prefix: &str, node_id: &str, event: &Event) -> Option<Mirror> {
    match event {
        Event::GenerationStarted {
            chat_id,
            generation_id,
            message_id,
            ..
        } => started(prefix, node_id, *chat_id, *generation_id, *message_id),
        Event::Token {
            chat_id,
            generation_id,
            index,
            delta,
        } => {
            let tokens = tokens_key(prefix, *chat_id, *generation_id);
            let mut room = redis::pipe();
            room.hset(&tokens, *index, delta).ignore();
            if index % RENEW_EVERY_TOKENS != 0 {
                return Some(Mirror { by_id: None, room });
            }
            room.expire(&tokens, COPY_TTL_SECS)
                .ignore()
                .expire(index_key(prefix, *chat_id), COPY_TTL_SECS)
                .ignore();
            let mut by_id = redis::pipe();
            by_id
                .expire(locate_key(prefix, *generation_id), COPY_TTL_SECS)
                .ignore();
            Some(Mirror {
                by_id: Some(by_id),
                room,
            })
        }
        Event::GenerationFinished {
            chat_id,
            generation_id,
            finish_reason,
            usage,
            ..
        } => ended(
            prefix,
            *chat_id,
            *generation_id,
            &RemoteEnd::Finished {
                finish_reason: finish_reason.clone(),
                usage: serde_json::from_value(usage.clone()).unwrap_or_default(),
            },
        ),
        Event::GenerationFailed {
            chat_id,
            generation_id,
            error,
        } => ended(
            prefix,
            *chat_id,
            *generation_id,
            &RemoteEnd::Failed {
                error: error.clone(),
            },
        ),
        _ => None,
    }
}

/// The commands for a reply that started: listed as running in its room, findable by its id.
fn started(
    prefix: &str,
    node_id: &str,
    chat_id: Uuid,
    generation_id: Uuid,
    message_id: Uuid,
) -> Option<Mirror> {
    let record = serde_json::to_string(&RemoteGeneration {
        node: node_id.to_string(),
        chat_id,
        message_id,
        started_ms: chrono::Utc::now().timestamp_millis(),
    })
    .ok()?;
    let index = index_key(prefix, chat_id);
    let mut room = redis::pipe();
    room.hset(&index, generation_id.to_string(), &record)
        .ignore()
        .expire(&index, COPY_TTL_SECS)
        .ignore()
        .del(tokens_key(prefix, chat_id, generation_id))
        .ignore();
    let mut by_id = redis::pipe();
    by_id
        .set_ex(
            locate_key(prefix, generation_id),
            &record,
            COPY_TTL_SECS as u64,
        )
        .ignore();
    Some(Mirror {
        by_id: Some(by_id),
        room,
    })
}

/// The commands for a reply that ended: no longer listed as running, its tokens and its end
/// kept a little while for followers.
fn ended(prefix: &str, chat_id: Uuid, generation_id: Uuid, end: &RemoteEnd) -> Option<Mirror> {
    let end = serde_json::to_string(end).ok()?;
    let mut room = redis::pipe();
    room.hdel(index_key(prefix, chat_id), generation_id.to_string())
        .ignore()
        .expire(tokens_key(prefix, chat_id, generation_id), ENDED_TTL_SECS)
        .ignore()
        .set_ex(
            room_end_key(prefix, chat_id, generation_id),
            &end,
            ENDED_TTL_SECS as u64,
        )
        .ignore();
    let mut by_id = redis::pipe();
    by_id
        .expire(locate_key(prefix, generation_id), ENDED_TTL_SECS)
        .ignore()
        .set_ex(end_key(prefix, generation_id), &end, ENDED_TTL_SECS as u64)
        .ignore();
    Some(Mirror {
        by_id: Some(by_id),
        room,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

/// The text so far of a copied reply: tokens `0..=index` with no gap (a token lost while Redis
/// was away ends the snapshot there; later ones still arrive live).
fn assemble(mut tokens: Vec<(u64, String)>) -> (i64, String) {
    tokens.sort_unstable_by_key(|(i, _)| *i);
    let mut text = String::new();
    let mut last = -1_i64;
    for (i, delta) in tokens {
        if i64::try_from(i).ok() != Some(last + 1) {
            break;
        }
        text.push_str(&delta);
        last += 1;
    }
    (last, text)
}

/// Reads other nodes' replies from their copies in Redis (on presence's connection, which also
/// says which nodes are alive).
pub struct ReplyCopies {
    prefix: String,
    node_id: String,
    presence: Arc<ClusterPresence>,
}

impl ReplyCopies {
    /// Copies under `prefix`, as seen from `node_id`.
    pub fn new(prefix: &str, node_id: &str, presence: Arc<ClusterPresence>) -> Self {
        ReplyCopies {
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            presence,
        }
    }

    /// The chat's replies running on other live nodes, oldest first.
    async fn running_elsewhere(
        &self,
        chat_id: Uuid,
    ) -> redis::RedisResult<Vec<(Uuid, RemoteGeneration)>> {
        let mut c = self.presence.conn().await?;
        let index: HashMap<String, String> = c.hgetall(index_key(&self.prefix, chat_id)).await?;
        let mut out = Vec::new();
        for (id, record) in index {
            let (Ok(generation_id), Ok(record)) = (
                Uuid::parse_str(&id),
                serde_json::from_str::<RemoteGeneration>(&record),
            ) else {
                continue;
            };
            if record.node != self.node_id && self.presence.is_alive(&record.node).await? {
                out.push((generation_id, record));
            }
        }
        out.sort_by_key(|(_, r)| r.started_ms);
        Ok(out)
    }

    /// The chat's replies running on other live nodes, with their text so far.
    pub async fn snapshots(&self, chat_id: Uuid) -> redis::RedisResult<Vec<Snapshot>> {
        let mut c = self.presence.conn().await?;
        let mut out = Vec::new();
        for (generation_id, record) in self.running_elsewhere(chat_id).await? {
            let tokens: Vec<(u64, String)> = c
                .hgetall(tokens_key(&self.prefix, chat_id, generation_id))
                .await?;
            let (index, text) = assemble(tokens);
            out.push(Snapshot {
                chat_id,
                generation_id,
                message_id: record.message_id,
                index,
                text,
            });
        }
        Ok(out)
    }

    /// Follows the chat's newest reply running on another node for a REST reader: its text so
    /// far, then its later tokens and its end, read from the copy every `FOLLOW_EVERY` until
    /// it ends, its node goes away or the reader leaves.
    pub async fn follow(self: Arc<Self>, chat_id: Uuid) -> redis::RedisResult<Option<RemoteReply>> {
        let Some(snapshot) = self.snapshots(chat_id).await?.pop() else {
            return Ok(None);
        };
        let (tx, updates) = mpsc::unbounded_channel();
        let (generation_id, from) = (snapshot.generation_id, snapshot.index);
        actix_rt::spawn(async move { self.poll(chat_id, generation_id, from, tx).await });
        Ok(Some(RemoteReply {
            message_id: snapshot.message_id,
            text: snapshot.text,
            updates,
        }))
    }

    /// One read of a copy: its tokens, its end if it ended, and where it runs (`None` once its
    /// record is gone). The tokens and the end are read in one `MULTI` on the room's slot, so an
    /// end comes with every token written before it; the record (on the id's slot) is read
    /// only while the reply has not ended.
    async fn read(
        &self,
        chat_id: Uuid,
        generation_id: Uuid,
    ) -> redis::RedisResult<(
        Vec<(u64, String)>,
        Option<RemoteEnd>,
        Option<RemoteGeneration>,
    )> {
        let mut c = self.presence.conn().await?;
        let (tokens, end): (Vec<(u64, String)>, Option<String>) = redis::pipe()
            .atomic()
            .hgetall(tokens_key(&self.prefix, chat_id, generation_id))
            .get(room_end_key(&self.prefix, chat_id, generation_id))
            .query_async(&mut c)
            .await?;
        if end.is_some() {
            return Ok((tokens, parse_json(end), None));
        }
        let record: Option<String> = c.get(locate_key(&self.prefix, generation_id)).await?;
        Ok((tokens, None, parse_json(record)))
    }

    async fn poll(
        &self,
        chat_id: Uuid,
        generation_id: Uuid,
        mut last: i64,
        tx: mpsc::UnboundedSender<StreamUpdate>,
    ) {
        let deadline = tokio::time::Instant::now() + FOLLOW_AT_MOST;
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        let mut failures = 0;
        let gone = |why: &str| StreamUpdate::Failed {
            error: format!("The reply could not be followed to its end: {why}"),
        };
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let (mut tokens, end, record) = match self.read(chat_id, generation_id).await {
                Ok(read) => {
                    failures = 0;
                    read
                }
                Err(e) => {
                    failures += 1;
                    if failures >= FOLLOW_READ_FAILURES {
                        tracing::warn!(error = %e, %generation_id, "lost the copy of a reply");
                        let _ = tx.send(gone("its copy is unreadable"));
                        return;
                    }
                    continue;
                }
            };
            tokens.sort_unstable_by_key(|(i, _)| *i);
            for (i, delta) in tokens {
                if i64::try_from(i).ok() == Some(last + 1) {
                    last += 1;
                    let _ = tx.send(StreamUpdate::Delta(delta));
                }
            }
            if let Some(end) = end {
                let _ = tx.send(end.update());
                return;
            }
            let alive = match &record {
                Some(r) => self.presence.is_alive(&r.node).await.unwrap_or(true),
                None => false,
            };
            if !alive {
                let _ = tx.send(gone("the node generating it went away"));
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = tx.send(gone("it ran too long"));
                return;
            }
        }
    }

    /// Takes a place in the user's cluster-wide limit of replies in flight; the permit gives it
    /// back when dropped. Without Redis the node's own limit still holds, so an unreachable
    /// Redis admits (and says so in the log) rather than refusing every reply.
    pub async fn admit_user(&self, user_id: Uuid, limit: usize) -> Result<Option<Permit>, Refusal> {
        let key = user_replies_key(&self.prefix, user_id);
        let taken = async {
            let mut c = self.presence.conn().await?;
            let counts: HashMap<String, i64> = c.hgetall(&key).await?;
            let mut script = redis::cmd("EVAL");
            script
                .arg(ADMIT_USER_SCRIPT)
                .arg(1)
                .arg(&key)
                .arg(&self.node_id)
                .arg(limit)
                .arg(USER_COUNT_TTL_SECS);
            for node in counts.keys().filter(|n| **n != self.node_id) {
                if !self.presence.is_alive(node).await? {
                    script.arg(node);
                }
            }
            script.query_async::<i64>(&mut c).await
        };
        let taken = async {
            tokio::time::timeout(super::REDIS_LOOKUP_WAIT, taken)
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))?
        };
        match taken.await {
            Ok(n) if n < 0 => Err(Refusal::User(limit)),
            Ok(_) => {
                let presence = self.presence.clone();
                let node = self.node_id.clone();
                Ok(Some(Permit::new(move || {
                    let give_back = async move {
                        let mut c = presence.conn().await?;
                        c.hincr::<_, _, _, i64>(&key, &node, -1).await.map(drop)
                    };
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => {
                            rt.spawn(async move {
                                if let Err(e) = give_back.await {
                                    tracing::warn!(error = %e, "could not give back a reply's place");
                                }
                            });
                        }
                        Err(_) => tracing::warn!("no runtime to give back a reply's place"),
                    }
                })))
            }
            Err(e) => {
                tracing::warn!(error = %e, %user_id, "cluster-wide reply limit unchecked");
                Ok(None)
            }
        }
    }

    /// Where a reply runs, if it runs on another live node.
    pub async fn locate(
        &self,
        generation_id: Uuid,
    ) -> redis::RedisResult<Option<RemoteGeneration>> {
        let mut c = self.presence.conn().await?;
        let (record, end): (Option<String>, Option<String>) = redis::pipe()
            .get(locate_key(&self.prefix, generation_id))
            .get(end_key(&self.prefix, generation_id))
            .query_async(&mut c)
            .await?;
        if end.is_some() {
            return Ok(None);
        }
        let Some(record) = record.and_then(|r| serde_json::from_str::<RemoteGeneration>(&r).ok())
        else {
            return Ok(None);
        };
        if record.node == self.node_id || !self.presence.is_alive(&record.node).await? {
            return Ok(None);
        }
        Ok(Some(record))
    }
}

/// [`ReplyCluster`] over Redis: the copies, the subscriber's state (to read a copy only once
/// this node follows the room) and the publisher queue (for control requests).
pub struct RedisReplies {
    pub(super) copies: Arc<ReplyCopies>,
    pub(super) status: Arc<Status>,
    pub(super) barriers: Barriers,
    pub(super) remote: RemoteSink,
}

impl ReplyCluster for RedisReplies {
    fn snapshots(&self, chat_id: Uuid) -> BoxFuture<'static, Vec<Snapshot>> {
        // With the subscriber down no barrier can pass: no remote replies are known then.
        if !self.status.subscribed.load(Ordering::Acquire) {
            return futures_util::future::ready(Vec::new()).boxed();
        }
        let copies = self.copies.clone();
        let barriers = self.barriers.clone();
        let following = self
            .status
            .following
            .contains(&broker::channel(&self.remote.prefix, &Topic::Room(chat_id)));
        async move {
            // Following the room's channel first: a token published from here on arrives
            // live, and one published before is in the copy read next. A room this node
            // already follows needs no wait.
            let read = async {
                if !following {
                    broker::settled(&barriers).await;
                }
                copies.snapshots(chat_id).await
            };
            within("other nodes' replies", chat_id, read)
                .await
                .unwrap_or_default()
        }
        .boxed()
    }

    fn locate(&self, generation_id: Uuid) -> BoxFuture<'static, Option<RemoteGeneration>> {
        let copies = self.copies.clone();
        async move {
            within(
                "a reply's node",
                generation_id,
                copies.locate(generation_id),
            )
            .await
            .flatten()
        }
        .boxed()
    }

    fn cancel(&self, generation_id: Uuid, at: &RemoteGeneration) {
        self.remote
            .control(&at.node, &Control::Cancel(generation_id));
    }

    fn admit_user(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> BoxFuture<'static, Result<Option<Permit>, Refusal>> {
        let copies = self.copies.clone();
        async move { copies.admit_user(user_id, limit).await }.boxed()
    }

    fn follow(&self, chat_id: Uuid) -> BoxFuture<'static, Option<RemoteReply>> {
        let copies = self.copies.clone();
        async move {
            within("other nodes' replies", chat_id, copies.follow(chat_id))
                .await
                .flatten()
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_stops_at_the_first_missing_token() {
        let tokens = vec![
            (2, "c".to_string()),
            (0, "a".to_string()),
            (1, "b".to_string()),
            (4, "e".to_string()),
        ];
        assert_eq!(assemble(tokens), (2, "abc".to_string()));
        assert_eq!(assemble(Vec::new()), (-1, String::new()));
        assert_eq!(assemble(vec![(1, "b".to_string())]), (-1, String::new()));
    }

    #[test]
    fn only_reply_events_are_mirrored() {
        let chat_id = Uuid::new_v4();
        let token = Event::Token {
            chat_id,
            generation_id: Uuid::new_v4(),
            index: 0,
            delta: "hi".into(),
        };
        assert!(mirror("echo", "a", &token).is_some());
        let typing = Event::Typing {
            chat_id,
            user_id: Uuid::new_v4(),
        };
        assert!(mirror("echo", "a", &typing).is_none());
    }

    #[test]
    fn control_requests_round_trip() {
        let id = Uuid::new_v4();
        let wire = serde_json::to_string(&Control::Cancel(id)).unwrap();
        assert_eq!(wire, format!("{{\"cancel\":\"{id}\"}}"));
        assert_eq!(
            serde_json::from_str::<Control>(&wire).unwrap(),
            Control::Cancel(id)
        );
    }
}
