//! In-flight AI replies across nodes.
//!
//! The node running a reply keeps a copy of it in Redis: which node runs it and every token so
//! far. The copy is written in the same `MULTI` as the event's `PUBLISH`, so a node that starts
//! following the room after a token went out still finds that token in the copy, and one that
//! was already following gets it live; the room drops what a snapshot already held. Another
//! node reads the copy to send `generation_snapshot`, and asks the running node, on that node's
//! control channel, to cancel.
//!
//! Keys (the `{room:…}` hash tag keeps a room's keys and channel on one cluster slot):
//! - `{prefix}:gens:{room:<chat>}` — hash, generation id → [`RemoteGeneration`] (JSON);
//! - `{prefix}:gen:{room:<chat>}:<generation>` — hash, token index → delta;
//! - `{prefix}:gen:<generation>` — [`RemoteGeneration`], to find a reply's chat by its id.
//!
//! Every token renews the keys' expiry; a node that dies mid-reply leaves a copy that other
//! nodes ignore as soon as its heartbeat lapses and Redis drops within [`COPY_TTL_SECS`].

use std::collections::HashMap;
use std::sync::Arc;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::presence::ClusterPresence;
use crate::ai::registry::Snapshot;
use crate::realtime::event::Event;

/// How long a reply's copy outlives its last token.
pub const COPY_TTL_SECS: i64 = 120;

/// Where an in-flight reply runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteGeneration {
    /// The node running it.
    pub node: String,
    /// Its chat.
    pub chat_id: Uuid,
    /// The id its stored message will have.
    pub message_id: Uuid,
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

fn locate_key(prefix: &str, generation_id: Uuid) -> String {
    format!("{prefix}:gen:{generation_id}")
}

/// The channel a node listens on for [`Control`] requests.
pub fn control_channel(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:control:{{node:{node_id}}}")
}

/// The commands that keep the copy of a reply current, for an event this node publishes:
/// `None` for events that are not about a reply.
pub fn mirror(prefix: &str, node_id: &str, event: &Event) -> Option<redis::Pipeline> {
    let mut pipe = redis::pipe();
    match event {
        Event::GenerationStarted {
            chat_id,
            generation_id,
            message_id,
            ..
        } => {
            let record = serde_json::to_string(&RemoteGeneration {
                node: node_id.to_string(),
                chat_id: *chat_id,
                message_id: *message_id,
            })
            .ok()?;
            let index = index_key(prefix, *chat_id);
            pipe.hset(&index, generation_id.to_string(), &record)
                .ignore()
                .expire(&index, COPY_TTL_SECS)
                .ignore()
                .set_ex(
                    locate_key(prefix, *generation_id),
                    &record,
                    COPY_TTL_SECS as u64,
                )
                .ignore()
                .del(tokens_key(prefix, *chat_id, *generation_id))
                .ignore();
        }
        Event::Token {
            chat_id,
            generation_id,
            index,
            delta,
        } => {
            let tokens = tokens_key(prefix, *chat_id, *generation_id);
            pipe.hset(&tokens, *index, delta)
                .ignore()
                .expire(&tokens, COPY_TTL_SECS)
                .ignore()
                .expire(index_key(prefix, *chat_id), COPY_TTL_SECS)
                .ignore()
                .expire(locate_key(prefix, *generation_id), COPY_TTL_SECS)
                .ignore();
        }
        Event::GenerationFinished {
            chat_id,
            generation_id,
            ..
        }
        | Event::GenerationFailed {
            chat_id,
            generation_id,
            ..
        } => {
            pipe.hdel(index_key(prefix, *chat_id), generation_id.to_string())
                .ignore()
                .del(tokens_key(prefix, *chat_id, *generation_id))
                .ignore()
                .del(locate_key(prefix, *generation_id))
                .ignore();
        }
        _ => return None,
    }
    Some(pipe)
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
pub struct ClusterGenerations {
    prefix: String,
    node_id: String,
    presence: Arc<ClusterPresence>,
}

impl ClusterGenerations {
    /// Copies under `prefix`, as seen from `node_id`.
    pub fn new(prefix: &str, node_id: &str, presence: Arc<ClusterPresence>) -> Self {
        ClusterGenerations {
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            presence,
        }
    }

    /// The chat's replies running on other live nodes, with their text so far.
    pub async fn snapshots(&self, chat_id: Uuid) -> redis::RedisResult<Vec<Snapshot>> {
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
            if record.node == self.node_id || !self.presence.is_alive(&record.node).await? {
                continue;
            }
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

    /// Where a reply runs, if it runs on another live node.
    pub async fn locate(
        &self,
        generation_id: Uuid,
    ) -> redis::RedisResult<Option<RemoteGeneration>> {
        let mut c = self.presence.conn().await?;
        let record: Option<String> = c.get(locate_key(&self.prefix, generation_id)).await?;
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
