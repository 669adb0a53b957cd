//! Sharded pub/sub on a Redis Cluster, for the subscriber: one RESP3 connection per master, and
//! each channel `SSUBSCRIBE`d on the master that serves its slot, as `CLUSTER SLOTS` said when
//! the feed connected.
//!
//! Nothing here repairs itself. A lost connection to any master, a channel whose slot moved
//! (Redis answers `MOVED`, or unsubscribes the channel itself with a `sunsubscribe` push) or a
//! master that is not reachable ends the feed; the subscriber then connects again, reads the
//! slots afresh (after a failover they name the promoted replica), follows every channel again
//! and makes the rooms catch up from the database — the same path as a single Redis that
//! restarted. That keeps one rule for every kind of Redis: while the feed is up, every channel
//! is followed on the shard that serves it.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, PushInfo, RedisResult, Value};
use tokio::sync::mpsc;

use super::endpoint::{resp3, Endpoint};

/// The slots a master serves.
struct Range {
    first: u16,
    last: u16,
    master: (String, u16),
}

/// The subscriber's connections to a Redis Cluster's masters.
pub struct ShardFeed {
    /// Who serves which slots, read when the feed connected.
    slots: Vec<Range>,
    /// A connection per master followed so far, by address.
    masters: HashMap<(String, u16), MultiplexedConnection>,
    /// How to reach a master: the first seed's settings (password, database), RESP3.
    template: ConnectionInfo,
    /// Where every master's push messages go.
    pushes: mpsc::UnboundedSender<PushInfo>,
}

impl ShardFeed {
    /// Reads the cluster's slots through `redis`; push messages of every master the feed
    /// connects to will go to `pushes`.
    pub async fn connect(
        redis: &Endpoint,
        seed: &str,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> RedisResult<ShardFeed> {
        let mut commands = redis.commands().await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut commands)
            .await?;
        Ok(ShardFeed {
            slots: ranges(&reply),
            masters: HashMap::new(),
            template: resp3(seed.into_connection_info()?),
            pushes,
        })
    }

    /// The connection of the master serving each of `channels` (connecting to masters not
    /// followed yet), for their `SSUBSCRIBE`/`SUNSUBSCRIBE`.
    pub async fn masters_of(
        &mut self,
        channels: &[String],
    ) -> RedisResult<Vec<(MultiplexedConnection, String)>> {
        let mut out = Vec::with_capacity(channels.len());
        for channel in channels {
            out.push((self.master_of(channel).await?, channel.clone()));
        }
        Ok(out)
    }

    /// The connection to the master serving `channel`'s slot, made on first use.
    async fn master_of(&mut self, channel: &str) -> RedisResult<MultiplexedConnection> {
        let slot = slot(channel.as_bytes());
        let Some(range) = self
            .slots
            .iter()
            .find(|r| (r.first..=r.last).contains(&slot))
        else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "no master serves the channel's slot",
            )));
        };
        if let Some(conn) = self.masters.get(&range.master) {
            return Ok(conn.clone());
        }
        let (host, port) = range.master.clone();
        let info = self
            .template
            .clone()
            .set_addr(ConnectionAddr::Tcp(host.clone(), port));
        let config = redis::AsyncConnectionConfig::new().set_push_sender(self.pushes.clone());
        let conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.masters.insert((host, port), conn.clone());
        Ok(conn)
    }
}

/// The slot ranges and their masters in a `CLUSTER SLOTS` reply.
fn ranges(reply: &Value) -> Vec<Range> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(fields) = entry else {
                return None;
            };
            let number = |v: &Value| redis::from_redis_value_ref::<u16>(v).ok();
            let (first, last) = (number(fields.first()?)?, number(fields.get(1)?)?);
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = redis::from_redis_value_ref::<String>(master.first()?).ok()?;
            let port = number(master.get(1)?)?;
            Some(Range {
                first,
                last,
                master: (host, port),
            })
        })
        .collect()
}

/// The cluster slot of a key or channel: CRC16 (XMODEM) of its `{hash tag}` if it has a
/// non-empty one, else of the whole name, modulo 16,384.
pub fn slot(name: &[u8]) -> u16 {
    let tagged = name.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(name)) % 16_384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % 16_384);
        assert_eq!(slot(b"echo:{room:x}"), slot(b"room:x"));
    }
}
