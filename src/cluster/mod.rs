//! The cluster: what makes several Echo nodes one service, over Redis. It is the top of the
//! core (only start-up knows it) and implements the interfaces the layers below define:
//!
//! - [`broker::RedisBroker`] is a [`Broker`]: events published here are delivered to this
//!   node at once and published to Redis; one subscriber connection follows the topics this
//!   node's router asks for ([`Interest`]) and delivers other nodes' events here.
//! - [`broker::RemoteSink`] is the rooms' [`Peers`]: the events rooms make themselves
//!   (presence, typing) go to the other nodes, and [`presence::ClusterPresence`] keeps who is
//!   online where, with a heartbeat per node.
//! - [`replies::RedisReplies`] is the AI layer's [`ReplyCluster`]: the Redis copy of every
//!   reply in flight, the cross-node per-user limit, and cancel requests between nodes.
//!
//! Joining takes two steps because the router and the broker need each other: [`Joining`]
//! makes the channels and the peers the router starts with, then [`Joining::start`] connects
//! the router as the broker's [`Delivery`].

pub mod broker;
pub mod endpoint;
pub mod presence;
pub mod replies;
pub mod shards;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ai::registry::GenerationRegistry;
use crate::ai::ReplyCluster;
use crate::broker::{Broker, Delivery, Interest};
use crate::config::Settings;
use crate::realtime::peers::Peers;
use broker::{Channels, RedisBroker, RemoteSink, Wiring};
use endpoint::Endpoint;
use presence::ClusterPresence;
use replies::{RedisReplies, ReplyCopies};

/// Longest a request waits on a Redis lookup (other nodes' replies, a reply's node) before
/// going on without it.
pub const REDIS_LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// How this node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `REDIS_URL`: one server, or a Redis Cluster's seed nodes separated by commas.
    pub url: String,
    /// `REDIS_CLUSTER`: `url` names a Redis Cluster.
    pub cluster: bool,
    /// `REDIS_CHANNEL_PREFIX`: isolates deployments sharing one Redis.
    pub prefix: String,
    /// This node's id (`ECHO_NODE_ID`).
    pub node_id: String,
    /// `REDIS_SHARDED_PUBSUB` (always on a Redis Cluster): `SPUBLISH`/`SSUBSCRIBE` instead of
    /// `PUBLISH`/`SUBSCRIBE`.
    pub sharded: bool,
    /// `PRESENCE_TTL_SECS`: a node silent this long counts as gone.
    pub presence_ttl: Duration,
}

impl ClusterConfig {
    /// The cluster settings, or `None` without `REDIS_URL` (a single node).
    pub fn from_settings(settings: &Settings) -> Option<ClusterConfig> {
        Some(ClusterConfig {
            url: settings.redis_url.clone()?,
            cluster: settings.redis_cluster,
            prefix: settings.redis_channel_prefix.clone(),
            node_id: settings.node_id.clone(),
            sharded: settings.redis_sharded_pubsub || settings.redis_cluster,
            presence_ttl: settings.presence_ttl,
        })
    }
}

/// A node joining the cluster, before its router exists.
pub struct Joining {
    config: ClusterConfig,
    presence: Arc<ClusterPresence>,
    remote: RemoteSink,
    interest: Interest,
    channels: Channels,
}

/// A node in the cluster: its broker, and the other nodes' replies.
pub struct Cluster {
    /// The Redis broker.
    pub broker: Arc<dyn Broker>,
    /// Replies on the other nodes.
    pub replies: Arc<dyn ReplyCluster>,
}

impl Joining {
    /// Makes the publisher queue, the interest channel and presence (nothing connects yet).
    pub fn new(config: ClusterConfig) -> anyhow::Result<Joining> {
        let redis = Endpoint::open(&config).context("REDIS_URL")?;
        let presence = Arc::new(ClusterPresence::new(
            redis,
            &config.prefix,
            &config.node_id,
            config.presence_ttl,
        ));
        let (remote, outgoing) = broker::outgoing_queue(&config, presence.clone());
        let (interest, interest_rx) = mpsc::unbounded_channel();
        Ok(Joining {
            config,
            presence,
            remote,
            interest,
            channels: Channels {
                interest: interest_rx,
                outgoing,
            },
        })
    }

    /// Where the router reports the topics this node follows.
    pub fn interest(&self) -> Interest {
        self.interest.clone()
    }

    /// The other nodes, for the rooms.
    pub fn peers(&self) -> Arc<dyn Peers> {
        Arc::new(self.remote.clone())
    }

    /// Starts the Redis tasks: other nodes' events go to `delivery`; other nodes may cancel
    /// the replies in `local`.
    pub fn start(
        self,
        delivery: Arc<dyn Delivery>,
        local: Arc<dyn GenerationRegistry>,
    ) -> anyhow::Result<Cluster> {
        let wiring = Wiring {
            delivery,
            local,
            remote: self.remote.clone(),
            channels: self.channels,
        };
        let (broker, barriers, status) =
            RedisBroker::start(&self.config, wiring).context("REDIS_URL")?;
        let replies = RedisReplies {
            copies: Arc::new(ReplyCopies::new(
                &self.config.prefix,
                &self.config.node_id,
                self.presence,
            )),
            status,
            barriers,
            remote: self.remote,
        };
        Ok(Cluster {
            broker: Arc::new(broker),
            replies: Arc::new(replies),
        })
    }
}

/// Runs a Redis lookup made on a client's behalf for at most [`REDIS_LOOKUP_WAIT`]; a failure
/// or a timeout is logged and taken as "nothing found", so an unwell Redis slows no request
/// for long.
async fn within<T>(
    what: &str,
    id: Uuid,
    lookup: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Option<T> {
    match tokio::time::timeout(REDIS_LOOKUP_WAIT, lookup).await {
        Ok(Ok(found)) => Some(found),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %id, "{what}: Redis lookup failed");
            None
        }
        Err(_) => {
            tracing::warn!(%id, "{what}: Redis lookup timed out");
            None
        }
    }
}
