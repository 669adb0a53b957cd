//! The broker: where committed events are published. The in-process broker hands them to this
//! node's rooms and feeds; a cross-node broker (Redis) would also forward them to other nodes
//! behind the same interface, so rooms and sessions never know which one runs.

pub mod generations;
pub mod presence;
pub mod redis;

use std::sync::Arc;

use futures_util::future::{self, BoxFuture, FutureExt};
use uuid::Uuid;

use crate::ai::registry::{Permit, Refusal, Snapshot};
use crate::realtime::event::{Event, Topic};
use crate::realtime::hub::Hub;
use generations::{RemoteGeneration, RemoteReply};

/// Publishes events to everyone subscribed to a topic.
pub trait Broker: Send + Sync + 'static {
    /// Delivers `event` to the topic's subscribers. Never blocks: delivery is queued.
    fn publish(&self, topic: Topic, event: Event);
    /// `in-process`, `redis`, … for `/health`.
    fn name(&self) -> &'static str;
    /// Whether cross-node delivery works now.
    fn health(&self) -> BrokerHealth {
        BrokerHealth {
            ok: true,
            message: None,
        }
    }
    /// The chat's AI replies running on other nodes, with their text so far, read once this
    /// node follows the room (so no later token can fall between the copy and the live
    /// stream). None on a single node.
    fn remote_generations(&self, _chat_id: Uuid) -> BoxFuture<'static, Vec<Snapshot>> {
        future::ready(Vec::new()).boxed()
    }
    /// Where a reply that does not run on this node runs, if it runs on another.
    fn locate_generation(
        &self,
        _generation_id: Uuid,
    ) -> BoxFuture<'static, Option<RemoteGeneration>> {
        future::ready(None).boxed()
    }
    /// Asks the node running a reply to cancel it.
    fn cancel_remote(&self, _generation_id: Uuid, _at: &RemoteGeneration) {}
    /// Takes a place in the user's limit of replies in flight across every node (`None`: no
    /// cluster, the node's own limit is the whole limit).
    fn admit_user_reply(
        &self,
        _user_id: Uuid,
        _limit: usize,
    ) -> BoxFuture<'static, Result<Option<Permit>, Refusal>> {
        future::ready(Ok(None)).boxed()
    }
    /// Follows the chat's newest reply running on another node, for a REST reader.
    fn follow_remote_reply(&self, _chat_id: Uuid) -> BoxFuture<'static, Option<RemoteReply>> {
        future::ready(None).boxed()
    }
}

/// A broker's state for `/health`.
#[derive(Debug, Clone)]
pub struct BrokerHealth {
    /// False while the broker cannot reach other nodes (local delivery still works).
    pub ok: bool,
    /// Why not, when degraded.
    pub message: Option<String>,
}

/// Delivers to this node's sessions only: the embedded default.
pub struct LocalBroker {
    hub: Arc<Hub>,
}

impl LocalBroker {
    /// A broker delivering through `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        LocalBroker { hub }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, topic: Topic, event: Event) {
        self.hub.deliver(topic, Arc::new(event));
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
