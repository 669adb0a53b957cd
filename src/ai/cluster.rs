//! Replies across nodes, as the AI layer sees them. In a cluster a reply runs on one node while
//! readers may be anywhere: [`ReplyCluster`] finds the text so far of replies running
//! elsewhere, where a reply runs, asks its node to cancel it, counts a user's replies on every
//! node, and follows another node's reply for a REST reader. The cluster layer
//! (`crate::cluster`) implements it over Redis; [`SingleNode`] is the answer without one.

use futures_util::future::{self, BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::messages::StreamUpdate;
use super::registry::{Permit, Refusal, Snapshot};

/// Where an in-flight reply runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteGeneration {
    /// The node running it.
    pub node: String,
    /// Its chat.
    pub chat_id: Uuid,
    /// The id its stored message will have.
    pub message_id: Uuid,
    /// When it started (unix ms), to pick a chat's newest.
    #[serde(default)]
    pub started_ms: i64,
}

/// A reply on another node, followed for a REST reader: its text so far, then updates.
pub struct RemoteReply {
    /// The id its stored message will have.
    pub message_id: Uuid,
    /// The text so far.
    pub text: String,
    /// Later tokens, then how it ended.
    pub updates: mpsc::UnboundedReceiver<StreamUpdate>,
}

/// The other nodes' replies. Every lookup is bounded in time; a failed one finds nothing.
pub trait ReplyCluster: Send + Sync + 'static {
    /// The chat's replies running on other nodes, with their text so far, read once this node
    /// follows the room (so no later token can fall between the copy and the live stream).
    fn snapshots(&self, _chat_id: Uuid) -> BoxFuture<'static, Vec<Snapshot>> {
        future::ready(Vec::new()).boxed()
    }
    /// Where a reply that does not run on this node runs, if it runs on another.
    fn locate(&self, _generation_id: Uuid) -> BoxFuture<'static, Option<RemoteGeneration>> {
        future::ready(None).boxed()
    }
    /// Asks the node running a reply to cancel it.
    fn cancel(&self, _generation_id: Uuid, _at: &RemoteGeneration) {}
    /// Takes a place in the user's limit of replies in flight across every node (`None`: no
    /// cluster, the node's own limit is the whole limit).
    fn admit_user(
        &self,
        _user_id: Uuid,
        _limit: usize,
    ) -> BoxFuture<'static, Result<Option<Permit>, Refusal>> {
        future::ready(Ok(None)).boxed()
    }
    /// Follows the chat's newest reply running on another node, for a REST reader.
    fn follow(&self, _chat_id: Uuid) -> BoxFuture<'static, Option<RemoteReply>> {
        future::ready(None).boxed()
    }
}

/// One node alone: no reply runs anywhere else.
pub struct SingleNode;

impl ReplyCluster for SingleNode {}

/// Whether anyone on this node watches a chat live (its room has subscribers). Implemented by
/// the realtime router; a reply whose REST caller left keeps running while its chat is watched.
pub trait RoomWatch: Send + Sync + 'static {
    /// True when a session on this node is subscribed to the chat's room.
    fn is_watched(&self, chat_id: Uuid) -> bool;
}
