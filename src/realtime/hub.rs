//! Local delivery of published events.

use std::sync::Arc;

use super::event::{Event, Topic};

/// This node's rooms and user feeds.
#[derive(Default)]
pub struct Hub {}

impl Hub {
    /// Hands an event to the local subscribers of `topic`.
    pub fn deliver(&self, _topic: Topic, _event: Arc<Event>) {}

    /// Closes every local session (1001) before the node stops.
    pub fn shutdown(&self) {}
}
