//! The Redis broker: events published on this node are delivered to its own sessions at once
//! (no round trip) and published to Redis for the other nodes; events from other nodes arrive
//! through one subscriber connection that follows the rooms and user feeds this node has
//! sessions for.
//!
//! Redis pub/sub is fire-and-forget, so nothing here is trusted for completeness: rooms order
//! `message` events by `seq` and fill gaps from the database, and after a reconnect every room
//! catches up from the database.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::endpoint::{resp3, Commands, Endpoint};
use super::presence::ClusterPresence;
use super::replies::{self, Control, Mirror};
use super::shards::ShardFeed;
use super::ClusterConfig;
use crate::ai::registry::GenerationRegistry;
use crate::broker::{Broker, BrokerHealth, Delivery, Event, Topic};
use crate::realtime::peers::Peers;

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one event is retried while Redis is unreachable before it is dropped.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);

/// One item for the publisher: a `PUBLISH`, and the commands that must land before it (the
/// copy of an in-flight reply): those on the reply's id slot first, then those on the room's
/// slot in one pipeline with the `PUBLISH` (one shard, one connection, so in that order).
pub struct Outgoing {
    channel: String,
    payload: String,
    with: Option<Mirror>,
}

/// What crosses Redis: the publishing node and the event.
#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    /// The publishing node, so it can skip its own events.
    n: String,
    /// The event.
    e: E,
}

/// Redis connection state, for `/health` and for readers of other nodes' replies.
#[derive(Default)]
pub(super) struct Status {
    /// The subscriber connection is up.
    pub(super) subscribed: AtomicBool,
    /// Channels whose subscription Redis confirmed on the current connection.
    pub(super) following: dashmap::DashSet<String>,
    /// The last error seen, if the broker is degraded.
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn set_error(&self, e: impl std::fmt::Display) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }

    fn clear_error(&self) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
    }
}

/// Sends events to the other nodes only: the publisher queue's entry. The broker sends every
/// event it publishes through it; the rooms ([`Peers`]) send the events they make and already
/// delivered locally (presence, typing).
#[derive(Clone)]
pub struct RemoteSink {
    tx: mpsc::UnboundedSender<Outgoing>,
    pub(super) prefix: String,
    node_id: String,
    /// Cluster-wide presence, shared by the rooms.
    pub presence: Arc<ClusterPresence>,
}

impl RemoteSink {
    /// A sink feeding the publisher queue behind `tx`.
    pub fn new(
        tx: mpsc::UnboundedSender<Outgoing>,
        prefix: &str,
        node_id: &str,
        presence: Arc<ClusterPresence>,
    ) -> Self {
        RemoteSink {
            tx,
            prefix: prefix.to_string(),
            node_id: node_id.to_string(),
            presence,
        }
    }

    /// Queues `event` for the other nodes following `topic` (with the reply copy's update, for
    /// AI reply events).
    pub fn send(&self, topic: &Topic, event: &Event) {
        let envelope = Envelope {
            n: self.node_id.clone(),
            e: event,
        };
        match serde_json::to_string(&envelope) {
            Ok(payload) => {
                let _ = self.tx.send(Outgoing {
                    channel: channel(&self.prefix, topic),
                    payload,
                    with: replies::mirror(&self.prefix, &self.node_id, event),
                });
            }
            Err(e) => tracing::error!(error = %e, "event failed to serialise for Redis"),
        }
    }

    /// Queues a control request for another node.
    pub(super) fn control(&self, node: &str, request: &Control) {
        if let Ok(payload) = serde_json::to_string(request) {
            let _ = self.tx.send(Outgoing {
                channel: replies::control_channel(&self.prefix, node),
                payload,
                with: None,
            });
        }
    }
}

impl Peers for RemoteSink {
    fn send(&self, topic: Topic, event: &Event) {
        RemoteSink::send(self, &topic, event);
    }

    fn set_online(
        &self,
        chat_id: Uuid,
        users: Vec<Uuid>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let presence = self.presence.clone();
        async move {
            presence
                .set_room(chat_id, users)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn online_elsewhere(&self, chat_id: Uuid) -> BoxFuture<'static, Option<HashSet<Uuid>>> {
        let presence = self.presence.clone();
        async move { presence.others(chat_id).await.ok() }.boxed()
    }

    fn refresh_every(&self) -> Duration {
        (self.presence.ttl / 3).max(Duration::from_millis(200))
    }
}

/// Cross-node fan-out through Redis pub/sub.
pub struct RedisBroker {
    delivery: Arc<dyn Delivery>,
    remote: RemoteSink,
    status: Arc<Status>,
}

/// What the subscriber answers: once every change of interest queued before a barrier is in
/// effect, the barrier's sender hears back.
pub(super) type Barriers = mpsc::UnboundedSender<oneshot::Sender<()>>;

/// A topic's Redis channel. The `{…}` hash tag keeps each topic on one cluster slot, so the
/// names also suit sharded pub/sub.
pub fn channel(prefix: &str, topic: &Topic) -> String {
    format!("{prefix}:{{{topic}}}")
}

fn topic_of(prefix: &str, channel: &str) -> Option<Topic> {
    let inner = channel
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')?;
    let (kind, id) = inner.split_once(':')?;
    let id = uuid::Uuid::parse_str(id).ok()?;
    match kind {
        "room" => Some(Topic::Room(id)),
        "user" => Some(Topic::User(id)),
        _ => None,
    }
}

/// The ends of the channels between the node and the Redis tasks, made before the router
/// exists (it needs `interest`) and consumed when the broker starts.
pub(super) struct Channels {
    /// Receives the router's changes of interest.
    pub(super) interest: mpsc::UnboundedReceiver<(Topic, bool)>,
    /// Receives what the [`RemoteSink`] queues.
    pub(super) outgoing: mpsc::UnboundedReceiver<Outgoing>,
}

/// What [`RedisBroker::start`] connects.
pub(super) struct Wiring {
    /// Where events from other nodes are delivered.
    pub(super) delivery: Arc<dyn Delivery>,
    /// This node's replies, which other nodes may ask to cancel.
    pub(super) local: Arc<dyn GenerationRegistry>,
    /// The publisher queue's entry.
    pub(super) remote: RemoteSink,
    /// The channel ends the tasks read.
    pub(super) channels: Channels,
}

/// A new publisher queue: the sink that feeds it and the receiving end for the publisher.
pub(super) fn outgoing_queue(
    config: &ClusterConfig,
    presence: Arc<ClusterPresence>,
) -> (RemoteSink, mpsc::UnboundedReceiver<Outgoing>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = RemoteSink::new(tx, &config.prefix, &config.node_id, presence);
    (sink, rx)
}

impl RedisBroker {
    /// Starts the heartbeat, publisher and subscriber tasks on the current actix arbiter;
    /// returns the broker and the subscriber's barrier queue (for readers of other nodes'
    /// replies) with its status.
    pub(super) fn start(
        config: &ClusterConfig,
        wiring: Wiring,
    ) -> anyhow::Result<(RedisBroker, Barriers, Arc<Status>)> {
        let Wiring {
            delivery,
            local,
            remote,
            channels,
        } = wiring;
        let redis = remote.presence.endpoint().clone();
        let status = Arc::new(Status::default());
        let presence = remote.presence.clone();
        let (barriers, barrier_rx) = mpsc::unbounded_channel();
        actix_rt::spawn(async move {
            let mut tick =
                tokio::time::interval((presence.ttl / 3).max(Duration::from_millis(200)));
            loop {
                tick.tick().await;
                if let Err(e) = presence.heartbeat().await {
                    tracing::debug!(error = %e, "presence heartbeat failed");
                }
            }
        });
        let sharded = config.sharded;
        actix_rt::spawn(publisher(
            redis.clone(),
            sharded,
            channels.outgoing,
            status.clone(),
        ));
        actix_rt::spawn(subscriber(
            redis,
            sharded,
            Subscriber {
                prefix: config.prefix.clone(),
                node_id: config.node_id.clone(),
                delivery: delivery.clone(),
                local,
                status: status.clone(),
            },
            channels.interest,
            barrier_rx,
        ));
        let broker = RedisBroker {
            delivery,
            remote,
            status: status.clone(),
        };
        Ok((broker, barriers, status))
    }
}

/// Waits until the subscriber follows every topic this node gained interest in so far.
pub(super) async fn settled(barriers: &Barriers) {
    let (done, wait) = oneshot::channel();
    if barriers.send(done).is_ok() {
        let _ = wait.await;
    }
}

impl Broker for RedisBroker {
    fn publish(&self, topic: Topic, event: Event) {
        self.remote.send(&topic, &event);
        self.delivery.deliver(topic, Arc::new(event));
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn health(&self) -> BrokerHealth {
        let error = self.status.last_error.lock().ok().and_then(|g| g.clone());
        BrokerHealth {
            ok: self.status.subscribed.load(Ordering::Acquire) && error.is_none(),
            message: error,
        }
    }
}

/// Publishes queued events in order. The connection manager reconnects by itself; an event
/// that cannot be published is dropped (local sessions already have it, remote rooms fill the
/// gap from the database).
async fn publisher(
    redis: Endpoint,
    sharded: bool,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    status: Arc<Status>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut conn = loop {
        match redis.commands().await {
            Ok(c) => break c,
            Err(e) => {
                status.set_error(format!("publisher: {e}"));
                tracing::warn!(error = %e, "Redis publisher cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    while let Some(Outgoing {
        channel,
        payload,
        with,
    }) = rx.recv().await
    {
        // Retried in order while Redis is away (the connection manager reconnects on the next
        // command); given up after PUBLISH_RETRY_FOR so memory cannot grow without bound.
        let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        loop {
            match publish(&mut conn, sharded, &channel, &payload, with.as_ref()).await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    status.set_error(format!("publish: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    status.set_error(format!("publish: {e}"));
                    tracing::warn!(error = %e, %channel, "Redis publish failed; event dropped");
                    break;
                }
            }
        }
    }
}

/// Sends one [`Outgoing`]: the mirror's id-slot commands, then its room-slot commands with the
/// `PUBLISH` in one pipeline.
async fn publish(
    conn: &mut Commands,
    sharded: bool,
    channel: &str,
    payload: &str,
    with: Option<&Mirror>,
) -> redis::RedisResult<()> {
    let mut publish = redis::cmd(if sharded { "SPUBLISH" } else { "PUBLISH" });
    publish.arg(channel).arg(payload);
    let Some(mirror) = with else {
        return publish.exec_async(conn).await;
    };
    if let Some(by_id) = &mirror.by_id {
        by_id.exec_async(conn).await?;
    }
    let mut pipe = mirror.room.clone();
    pipe.add_command(publish).ignore().exec_async(conn).await
}

/// What the subscriber hands incoming messages to.
struct Subscriber {
    prefix: String,
    node_id: String,
    delivery: Arc<dyn Delivery>,
    local: Arc<dyn GenerationRegistry>,
    status: Arc<Status>,
}

impl Subscriber {
    fn on_message(&self, channel: &str, payload: &str, control: &str) {
        if channel == control {
            match serde_json::from_str::<Control>(payload) {
                Ok(Control::Cancel(id)) => match self.local.find(id) {
                    Some(live) => live.cancel(),
                    None => tracing::debug!(generation_id = %id, "cancel for a reply not here"),
                },
                Err(e) => tracing::warn!(error = %e, "undecodable control request"),
            }
            return;
        }
        let Some(topic) = topic_of(&self.prefix, channel) else {
            return;
        };
        match serde_json::from_str::<Envelope<Event>>(payload) {
            Ok(env) if env.n == self.node_id => {}
            Ok(env) => self.delivery.deliver(topic, Arc::new(env.e)),
            Err(e) => tracing::warn!(error = %e, "undecodable event from Redis"),
        }
    }
}

/// The subscriber's connection: classic pub/sub on a dedicated connection; sharded pub/sub
/// (`SSUBSCRIBE`) on a RESP3 connection to one server, whose messages arrive as push frames; or
/// sharded pub/sub on a Redis Cluster, a RESP3 connection per master ([`ShardFeed`]).
enum Feed {
    Classic {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Sharded {
        conn: redis::aio::MultiplexedConnection,
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
    Cluster {
        shards: ShardFeed,
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

/// What the feed brings.
enum Incoming {
    /// A message: channel and payload.
    Message(String, String),
    /// Redis stopped following this channel (a shard gives up a channel whose slot moved; or
    /// the confirmation of an unsubscribe of ours).
    Dropped(String),
    /// The connection (to one shard, on a cluster) is lost.
    Lost,
}

/// How many `SSUBSCRIBE`s are in flight at once when a feed follows many channels.
const SUBSCRIBES_IN_FLIGHT: usize = 64;

impl Feed {
    async fn connect(redis: &Endpoint, sharded: bool) -> redis::RedisResult<Feed> {
        let (tx, pushes) = mpsc::unbounded_channel();
        let client = match redis {
            Endpoint::Cluster { seeds, .. } => {
                let seed = seeds.first().map(String::as_str).unwrap_or_default();
                let shards = ShardFeed::connect(redis, seed, tx).await?;
                return Ok(Feed::Cluster { shards, pushes });
            }
            Endpoint::Single(client) => client,
        };
        if !sharded {
            let (sink, stream) = client.get_async_pubsub().await?.split();
            return Ok(Feed::Classic { sink, stream });
        }
        let info = resp3(client.get_connection_info().clone());
        let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
        let conn = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Feed::Sharded { conn, pushes })
    }

    /// Starts (`on`) or stops following `channels`. Sharded channels are (un)subscribed one
    /// per command, a few dozen at a time: on a cluster each goes to its own shard.
    async fn follow(&mut self, channels: &[String], on: bool) -> redis::RedisResult<()> {
        let targets = match self {
            Feed::Classic { sink, .. } if on => return sink.subscribe(channels).await,
            Feed::Classic { sink, .. } => return sink.unsubscribe(channels).await,
            Feed::Sharded { conn, .. } => channels
                .iter()
                .map(|channel| (conn.clone(), channel.clone()))
                .collect(),
            Feed::Cluster { shards, .. } => shards.masters_of(channels).await?,
        };
        let command = if on { "SSUBSCRIBE" } else { "SUNSUBSCRIBE" };
        futures_util::stream::iter(targets)
            .map(|(mut conn, channel)| async move {
                redis::cmd(command).arg(channel).exec_async(&mut conn).await
            })
            .buffer_unordered(SUBSCRIBES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// What comes next from Redis.
    async fn next(&mut self) -> Incoming {
        loop {
            let pushes = match self {
                Feed::Classic { stream, .. } => {
                    let Some(msg) = stream.next().await else {
                        return Incoming::Lost;
                    };
                    if let Ok(payload) = msg.get_payload::<String>() {
                        return Incoming::Message(msg.get_channel_name().to_string(), payload);
                    }
                    continue;
                }
                Feed::Sharded { pushes, .. } | Feed::Cluster { pushes, .. } => pushes,
            };
            let Some(push) = pushes.recv().await else {
                return Incoming::Lost;
            };
            let text = |i: usize| {
                push.data
                    .get(i)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            match push.kind {
                redis::PushKind::Disconnection => return Incoming::Lost,
                redis::PushKind::SMessage => {
                    if let (Some(channel), Some(payload)) = (text(0), text(1)) {
                        return Incoming::Message(channel, payload);
                    }
                }
                redis::PushKind::SUnsubscribe => {
                    if let Some(channel) = text(0) {
                        return Incoming::Dropped(channel);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Starts or stops following a topic's channel, if that changes the wanted set.
async fn follow(
    feed: &mut Feed,
    wanted: &mut HashSet<String>,
    status: &Status,
    channel: String,
    on: bool,
) -> redis::RedisResult<()> {
    if !apply(wanted, channel.clone(), on) {
        return Ok(());
    }
    if !on {
        status.following.remove(&channel);
    }
    feed.follow(std::slice::from_ref(&channel), on).await?;
    if on {
        status.following.insert(channel);
    }
    Ok(())
}

/// Keeps one pub/sub connection subscribed to the topics this node has sessions for (and to
/// its own control channel), delivers what other nodes publish, and after a reconnect makes
/// every room catch up from the database.
async fn subscriber(
    redis: Endpoint,
    sharded: bool,
    me: Subscriber,
    interest: mpsc::UnboundedReceiver<(Topic, bool)>,
    barriers: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let control = replies::control_channel(&me.prefix, &me.node_id);
    let mut sub = Subscription {
        wanted: HashSet::from([control.clone()]),
        control,
        me,
        interest,
        barriers,
    };
    let mut backoff = Duration::from_millis(100);
    let mut reconnecting = false;
    loop {
        let mut feed = match Feed::connect(&redis, sharded).await {
            Ok(feed) => feed,
            Err(e) => {
                sub.while_away(format!("subscriber: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Err(e) = sub.resume(&mut feed).await {
            sub.me.status.set_error(format!("resubscribe: {e}"));
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        if reconnecting {
            tracing::info!("Redis is back: rooms catch up from the database");
            sub.me.delivery.catch_up();
        }
        reconnecting = true;
        if sub.serve(&mut feed).await == Served::Closed {
            return;
        }
        let status = &sub.me.status;
        status.subscribed.store(false, Ordering::Release);
        status.following.clear();
        status.set_error("connection to Redis lost");
        tracing::warn!("Redis subscriber connection lost; reconnecting");
    }
}

/// How serving one connection ended.
#[derive(PartialEq)]
enum Served {
    /// The connection was lost, or a (un)subscribe on it failed: reconnect.
    Lost,
    /// The broker was dropped: stop.
    Closed,
}

/// The subscriber's state across connections: the channels it wants and its inputs.
struct Subscription {
    me: Subscriber,
    /// This node's control channel.
    control: String,
    /// Every channel this node should follow.
    wanted: HashSet<String>,
    interest: mpsc::UnboundedReceiver<(Topic, bool)>,
    barriers: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
}

impl Subscription {
    /// Redis is unreachable: says so in the status, keeps the interest set current and
    /// releases barrier waiters (nobody waits on Redis).
    fn while_away(&mut self, error: String) {
        let status = &self.me.status;
        status.subscribed.store(false, Ordering::Release);
        status.following.clear();
        status.set_error(error);
        while let Ok((topic, on)) = self.interest.try_recv() {
            apply(&mut self.wanted, channel(&self.me.prefix, &topic), on);
        }
        while let Ok(done) = self.barriers.try_recv() {
            let _ = done.send(());
        }
    }

    /// Follows every wanted channel on a new connection.
    async fn resume(&mut self, feed: &mut Feed) -> redis::RedisResult<()> {
        let current: Vec<String> = self.wanted.iter().cloned().collect();
        if !current.is_empty() {
            feed.follow(&current, true).await?;
        }
        let status = &self.me.status;
        for ch in current {
            status.following.insert(ch);
        }
        status.subscribed.store(true, Ordering::Release);
        status.clear_error();
        Ok(())
    }

    /// Delivers messages and applies interest changes and barriers until the connection
    /// fails or the broker is dropped.
    async fn serve(&mut self, feed: &mut Feed) -> Served {
        loop {
            tokio::select! {
                incoming = feed.next() => match incoming {
                    Incoming::Message(channel, payload) => {
                        self.me.on_message(&channel, &payload, &self.control);
                    }
                    // A channel still wanted that Redis stopped following: its slot moved.
                    Incoming::Dropped(channel) if self.wanted.contains(&channel) => {
                        tracing::warn!(%channel, "Redis dropped a channel; following again");
                        return Served::Lost;
                    }
                    Incoming::Dropped(_) => {}
                    Incoming::Lost => return Served::Lost,
                },
                change = self.interest.recv() => {
                    let Some((topic, on)) = change else { return Served::Closed };
                    let ch = channel(&self.me.prefix, &topic);
                    let followed =
                        follow(feed, &mut self.wanted, &self.me.status, ch, on).await;
                    if let Err(e) = followed {
                        tracing::warn!(error = %e, "Redis (un)subscribe failed; reconnecting");
                        return Served::Lost;
                    }
                }
                barrier = self.barriers.recv() => {
                    let Some(done) = barrier else { return Served::Closed };
                    // Changes of interest queued before the barrier take effect first.
                    let applied = self.apply_queued(feed).await;
                    let _ = done.send(());
                    if let Err(e) = applied {
                        tracing::warn!(error = %e, "Redis (un)subscribe failed; reconnecting");
                        return Served::Lost;
                    }
                }
            }
        }
    }

    /// Applies every interest change already queued.
    async fn apply_queued(&mut self, feed: &mut Feed) -> redis::RedisResult<()> {
        while let Ok((topic, on)) = self.interest.try_recv() {
            let ch = channel(&self.me.prefix, &topic);
            follow(feed, &mut self.wanted, &self.me.status, ch, on).await?;
        }
        Ok(())
    }
}

/// Updates the wanted set; true when it changed.
fn apply(wanted: &mut HashSet<String>, channel: String, on: bool) -> bool {
    if on {
        wanted.insert(channel)
    } else {
        wanted.remove(&channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_to_topics() {
        let id = uuid::Uuid::new_v4();
        for t in [Topic::Room(id), Topic::User(id)] {
            assert_eq!(topic_of("echo", &channel("echo", &t)), Some(t));
        }
        assert_eq!(topic_of("other", &channel("echo", &Topic::Room(id))), None);
    }
}
