//! Where the cluster's Redis is: one server, or a Redis Cluster (`REDIS_CLUSTER`, or a
//! `REDIS_URL` that lists several seed nodes).
//!
//! Everything else in the cluster layer talks to Redis through [`Commands`], which is the
//! connection manager of one server or the `redis` crate's cluster connection (it routes each
//! command to the master of its key's slot and follows slot moves and failovers). The keys and
//! channels are laid out for a cluster: whatever one pipeline or script touches shares one
//! `{…}` hash tag, so it lives on one slot.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::ClusterConfig;

/// The Redis a node joins.
#[derive(Clone)]
pub enum Endpoint {
    /// One Redis server.
    Single(redis::Client),
    /// A Redis Cluster, reached through its seed nodes.
    Cluster {
        /// The command client (boxed: it is much larger than a single server's).
        client: Box<ClusterClient>,
        /// The seed nodes, for the subscriber's connections to the masters.
        seeds: Vec<String>,
    },
}

impl Endpoint {
    /// The endpoint `config` names; nothing connects yet.
    pub fn open(config: &ClusterConfig) -> RedisResult<Endpoint> {
        if !config.cluster {
            return Ok(Endpoint::Single(redis::Client::open(config.url.as_str())?));
        }
        let seeds = seeds(&config.url);
        let client = Box::new(ClusterClientBuilder::new(seeds.clone()).build()?);
        Ok(Endpoint::Cluster { client, seeds })
    }

    /// A connection for commands, shared by cloning; it reconnects by itself.
    pub async fn commands(&self) -> RedisResult<Commands> {
        match self {
            Endpoint::Single(client) => {
                Ok(Commands::Single(client.get_connection_manager().await?))
            }
            Endpoint::Cluster { client, .. } => {
                Ok(Commands::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// `info` speaking RESP3, whose push messages carry sharded pub/sub.
pub fn resp3(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// The seed URLs of a comma-separated `REDIS_URL` (`host:port` gets `redis://`).
fn seeds(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("redis://{s}")
            }
        })
        .collect()
}

/// A command connection to the endpoint, whichever kind it is.
#[derive(Clone)]
pub enum Commands {
    /// One server, through the reconnecting connection manager.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to its slot's master.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_take_urls_or_host_port_pairs() {
        assert_eq!(
            seeds("redis://a:7000, b:7001,,redis://c:7002"),
            ["redis://a:7000", "redis://b:7001", "redis://c:7002"]
        );
    }
}
