//! Who is online in a room across the cluster. Each node keeps, per room, the list of its own
//! online users in a Redis hash field named after the node, and refreshes a heartbeat key that
//! expires after the presence TTL. A node whose heartbeat expired (it crashed) no longer
//! counts: the rooms that saw its users announce their `leave` within one TTL.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::endpoint::{Commands, Endpoint};

/// How long a room's presence hash outlives its last update.
const ROOM_KEY_TTL_SECS: i64 = 24 * 3600;

/// Cluster-wide presence through Redis.
pub struct ClusterPresence {
    redis: Endpoint,
    conn: OnceCell<Commands>,
    prefix: String,
    node_id: String,
    /// A node silent for this long is considered gone.
    pub ttl: Duration,
}

impl ClusterPresence {
    /// Presence for `node_id` under the channel prefix `prefix`.
    pub fn new(redis: Endpoint, prefix: &str, node_id: &str, ttl: Duration) -> Self {
        ClusterPresence {
            redis,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            ttl,
        }
    }

    /// The shared command connection (reconnects by itself).
    pub(super) async fn conn(&self) -> redis::RedisResult<Commands> {
        self.conn
            .get_or_try_init(|| self.redis.commands())
            .await
            .cloned()
    }

    fn room_key(&self, chat_id: Uuid) -> String {
        format!("{}:presence:{{room:{chat_id}}}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// Marks this node alive for one more TTL.
    pub async fn heartbeat(&self) -> redis::RedisResult<()> {
        let mut c = self.conn().await?;
        let secs = self.ttl.as_secs().max(1);
        c.set_ex::<_, _, ()>(self.node_key(&self.node_id), 1, secs)
            .await
    }

    /// Records this node's online users in a room (none: the field is removed).
    pub async fn set_room(&self, chat_id: Uuid, users: Vec<Uuid>) -> redis::RedisResult<()> {
        let mut c = self.conn().await?;
        let key = self.room_key(chat_id);
        if users.is_empty() {
            c.hdel::<_, _, ()>(&key, &self.node_id).await
        } else {
            let list: Vec<String> = users.iter().map(Uuid::to_string).collect();
            let value = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
            redis::pipe()
                .hset(&key, &self.node_id, value)
                .ignore()
                .expire(&key, ROOM_KEY_TTL_SECS)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        }
    }

    /// The endpoint, for connections of their own (publisher, subscriber).
    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.redis
    }

    /// Whether `node` sent a heartbeat within the TTL.
    pub async fn is_alive(&self, node: &str) -> redis::RedisResult<bool> {
        let mut c = self.conn().await?;
        c.exists(self.node_key(node)).await
    }

    /// Users online in the room on other nodes that are alive.
    pub async fn others(&self, chat_id: Uuid) -> redis::RedisResult<HashSet<Uuid>> {
        let mut c = self.conn().await?;
        let fields: HashMap<String, String> = c.hgetall(self.room_key(chat_id)).await?;
        let others: Vec<(String, String)> = fields
            .into_iter()
            .filter(|(node, _)| *node != self.node_id)
            .collect();
        // One liveness check per other node, all in flight at once (one round trip, not one
        // per node).
        let checks = others.iter().map(|(node, _)| {
            let mut c = c.clone();
            let key = self.node_key(node);
            async move { c.exists::<_, bool>(key).await }
        });
        let alive = futures_util::future::try_join_all(checks).await?;
        let mut users = HashSet::new();
        for ((_, list), alive) in others.iter().zip(alive) {
            if !alive {
                continue;
            }
            if let Ok(ids) = serde_json::from_str::<Vec<Uuid>>(list) {
                users.extend(ids);
            }
        }
        Ok(users)
    }
}
