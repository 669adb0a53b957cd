//! The broker: where committed events are published, and how they reach this node's
//! subscribers. [`LocalBroker`] hands each event straight to this node's [`Delivery`] (the
//! realtime router); the Redis broker (`crate::cluster`) also forwards it to the other nodes
//! and delivers theirs here. Both sit behind [`Broker`], so the services that publish and the
//! rooms that deliver never know which one runs.
//!
//! The broker owns the [`Event`]s it carries and the [`Topic`]s they go to; it knows nothing of
//! rooms or sessions: the layer above implements [`Delivery`] and says, through an
//! [`Interest`] channel, which topics this node follows.

pub mod event;

use std::sync::Arc;

pub use event::{Event, PresenceState, Topic};

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
}

/// A broker's state for `/health`.
#[derive(Debug, Clone)]
pub struct BrokerHealth {
    /// False while the broker cannot reach other nodes (local delivery still works).
    pub ok: bool,
    /// Why not, when degraded.
    pub message: Option<String>,
}

/// This node's receiving end of the broker, implemented by the realtime router.
pub trait Delivery: Send + Sync + 'static {
    /// Hands an event to this node's subscribers of `topic` (none: it is dropped).
    fn deliver(&self, topic: Topic, event: Arc<Event>);
    /// Events may have been lost between nodes (the link was down): every local room reads
    /// what it missed from the database.
    fn catch_up(&self);
}

/// Which topics this node follows: the realtime layer sends `(topic, true)` when a topic gains
/// its first local subscriber and `(topic, false)` when it loses its last, so that a cross-node
/// broker subscribes to exactly those. The local broker needs none.
pub type Interest = tokio::sync::mpsc::UnboundedSender<(Topic, bool)>;

/// Delivers to this node's sessions only: the embedded default.
pub struct LocalBroker {
    delivery: Arc<dyn Delivery>,
}

impl LocalBroker {
    /// A broker delivering through `delivery`.
    pub fn new(delivery: Arc<dyn Delivery>) -> Self {
        LocalBroker { delivery }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, topic: Topic, event: Event) {
        self.delivery.deliver(topic, Arc::new(event));
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
