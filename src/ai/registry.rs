//! The registry of in-flight generations: who may start one (concurrency limits), where each
//! one's text so far is (for snapshots and resumed streams), and how to cancel one.
//!
//! [`GenerationRegistry`] is the interface the rest of the server uses; [`LocalGenerations`]
//! keeps this node's replies in this process. Replies on other nodes are not in it: in a
//! cluster, `crate::cluster` keeps a Redis copy of every reply's progress (written with its
//! events) and counts a user's replies on every node, behind [`super::cluster::ReplyCluster`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix::Recipient;
use dashmap::DashMap;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::messages::{CancelGeneration, StreamUpdate};
use crate::broker::Event;
use crate::error::ApiError;

/// The text of an in-flight reply so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The chat.
    pub chat_id: Uuid,
    /// The generation.
    pub generation_id: Uuid,
    /// The reply's message id.
    pub message_id: Uuid,
    /// Index of the last token in `text` (-1 before the first).
    pub index: i64,
    /// Everything generated so far.
    pub text: String,
}

impl Snapshot {
    /// The `generation_snapshot` event.
    pub fn event(&self) -> Event {
        Event::GenerationSnapshot {
            chat_id: self.chat_id,
            generation_id: self.generation_id,
            index: self.index,
            text: self.text.clone(),
        }
    }
}

/// Mutable part of a live generation, under one lock so a snapshot and the updates after it
/// never overlap or leave a gap.
struct Progress {
    text: String,
    last_index: i64,
    listeners: Vec<mpsc::UnboundedSender<StreamUpdate>>,
    done: bool,
}

/// The shared view of one in-flight reply: its ids, its text so far, its REST readers, and
/// the way to cancel it. Written only by its `Generation` actor.
pub struct LiveGeneration {
    /// The generation.
    pub id: Uuid,
    /// Its chat.
    pub chat_id: Uuid,
    /// Who prompted it.
    pub user_id: Uuid,
    /// The id the stored reply will have.
    pub message_id: Uuid,
    /// The model producing it.
    pub model: String,
    /// When it started, to pick the newest of a chat.
    pub started_at: Instant,
    cancel: Recipient<CancelGeneration>,
    progress: Mutex<Progress>,
}

impl LiveGeneration {
    /// A generation with no text yet; `caller` (if any) receives every update from the start.
    pub fn new(
        id: Uuid,
        chat_id: Uuid,
        user_id: Uuid,
        message_id: Uuid,
        model: String,
        cancel: Recipient<CancelGeneration>,
        caller: Option<mpsc::UnboundedSender<StreamUpdate>>,
    ) -> LiveGeneration {
        LiveGeneration {
            id,
            chat_id,
            user_id,
            message_id,
            model,
            started_at: Instant::now(),
            cancel,
            progress: Mutex::new(Progress {
                text: String::new(),
                last_index: -1,
                listeners: caller.into_iter().collect(),
                done: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panic while holding the lock left consistent data (every write is one push).
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The text so far.
    pub fn snapshot(&self) -> Snapshot {
        let p = self.lock();
        Snapshot {
            chat_id: self.chat_id,
            generation_id: self.id,
            message_id: self.message_id,
            index: p.last_index,
            text: p.text.clone(),
        }
    }

    /// The text so far and a receiver of every later update; `None` once the reply is over.
    pub fn attach(&self) -> Option<(Snapshot, mpsc::UnboundedReceiver<StreamUpdate>)> {
        let mut p = self.lock();
        if p.done {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        p.listeners.push(tx);
        let snapshot = Snapshot {
            chat_id: self.chat_id,
            generation_id: self.id,
            message_id: self.message_id,
            index: p.last_index,
            text: p.text.clone(),
        };
        Some((snapshot, rx))
    }

    /// Asks the generation to stop, keeping what it generated.
    pub fn cancel(&self) {
        self.cancel.do_send(CancelGeneration);
    }

    /// True while a REST reader is still connected.
    pub fn has_readers(&self) -> bool {
        self.lock().listeners.iter().any(|l| !l.is_closed())
    }

    /// Appends a token and hands it to the readers; returns its index.
    pub(crate) fn push_token(&self, delta: &str) -> u64 {
        let mut p = self.lock();
        p.text.push_str(delta);
        p.last_index += 1;
        p.listeners
            .retain(|l| l.send(StreamUpdate::Delta(delta.to_string())).is_ok());
        u64::try_from(p.last_index).unwrap_or(0)
    }

    /// The text so far and the number of tokens in it.
    pub(crate) fn text(&self) -> (String, u64) {
        let p = self.lock();
        (p.text.clone(), u64::try_from(p.last_index + 1).unwrap_or(0))
    }

    /// Marks the reply over and sends the last update to the readers.
    pub(crate) fn close(&self, last: StreamUpdate) {
        let mut p = self.lock();
        if p.done {
            return;
        }
        p.done = true;
        for l in p.listeners.drain(..) {
            let _ = l.send(last.clone());
        }
    }
}

/// Why a generation may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has this many in flight already.
    User(usize),
    /// The node has this many in flight already.
    Node(usize),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::TooManyRequests(
            match r {
                Refusal::User(n) => format!(
                    "Too many AI replies in progress for this user (at most {n} at a time); \
                     wait for one to finish"
                ),
                Refusal::Node(n) => {
                    format!("The server is generating too many AI replies ({n}); try again shortly")
                }
            }
            .into(),
        )
    }
}

/// A place in the concurrency limits, given back when dropped.
pub struct Permit {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Permit {
    /// A permit that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Permit {
        Permit {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Where in-flight generations are found.
pub trait GenerationRegistry: Send + Sync + 'static {
    /// Takes a place in the per-user and per-node limits, or says which one is full.
    fn admit(&self, user_id: Uuid) -> Result<Permit, Refusal>;
    /// Makes a started generation findable.
    fn register(&self, generation: Arc<LiveGeneration>);
    /// Forgets a generation that ended.
    fn unregister(&self, generation_id: Uuid);
    /// A generation by id.
    fn find(&self, generation_id: Uuid) -> Option<Arc<LiveGeneration>>;
    /// The chat's in-flight generations, oldest first.
    fn in_chat(&self, chat_id: Uuid) -> Vec<Arc<LiveGeneration>>;
    /// How many are in flight on this node.
    fn in_flight(&self) -> usize;
    /// Cancels every generation running on this node (shutdown).
    fn cancel_all(&self);
}

/// Cancels every local generation and waits (at most `grace`) until they are stored, so a
/// node that stops keeps what its replies had generated.
pub async fn stop_all(registry: &dyn GenerationRegistry, grace: std::time::Duration) {
    if registry.in_flight() == 0 {
        return;
    }
    tracing::info!(
        in_flight = registry.in_flight(),
        "shutting down: cancelling AI replies"
    );
    registry.cancel_all();
    let deadline = tokio::time::Instant::now() + grace;
    while registry.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Permit counts, shared with the permits so they can give their place back.
struct Counts {
    total: AtomicUsize,
    per_user: DashMap<Uuid, usize>,
}

/// The in-process registry.
pub struct LocalGenerations {
    by_id: DashMap<Uuid, Arc<LiveGeneration>>,
    by_chat: DashMap<Uuid, Vec<Uuid>>,
    counts: Arc<Counts>,
    per_user_limit: usize,
    per_node_limit: usize,
}

impl LocalGenerations {
    /// A registry enforcing the two limits.
    pub fn new(per_user_limit: usize, per_node_limit: usize) -> LocalGenerations {
        LocalGenerations {
            by_id: DashMap::new(),
            by_chat: DashMap::new(),
            counts: Arc::new(Counts {
                total: AtomicUsize::new(0),
                per_user: DashMap::new(),
            }),
            per_user_limit,
            per_node_limit,
        }
    }
}

impl GenerationRegistry for LocalGenerations {
    fn admit(&self, user_id: Uuid) -> Result<Permit, Refusal> {
        let limit = self.per_node_limit;
        self.counts
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Refusal::Node(limit))?;
        {
            let mut mine = self.counts.per_user.entry(user_id).or_insert(0);
            if *mine >= self.per_user_limit {
                drop(mine);
                self.counts.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::User(self.per_user_limit));
            }
            *mine += 1;
        }
        let counts = self.counts.clone();
        Ok(Permit::new(move || {
            counts.total.fetch_sub(1, Ordering::AcqRel);
            if let Some(mut n) = counts.per_user.get_mut(&user_id) {
                *n = n.saturating_sub(1);
            }
            counts.per_user.remove_if(&user_id, |_, n| *n == 0);
        }))
    }

    fn register(&self, generation: Arc<LiveGeneration>) {
        self.by_chat
            .entry(generation.chat_id)
            .or_default()
            .push(generation.id);
        self.by_id.insert(generation.id, generation);
    }

    fn unregister(&self, generation_id: Uuid) {
        let Some((_, g)) = self.by_id.remove(&generation_id) else {
            return;
        };
        if let Some(mut ids) = self.by_chat.get_mut(&g.chat_id) {
            ids.retain(|id| *id != generation_id);
        }
        self.by_chat.remove_if(&g.chat_id, |_, ids| ids.is_empty());
    }

    fn find(&self, generation_id: Uuid) -> Option<Arc<LiveGeneration>> {
        self.by_id.get(&generation_id).map(|g| g.clone())
    }

    fn in_chat(&self, chat_id: Uuid) -> Vec<Arc<LiveGeneration>> {
        let ids = self
            .by_chat
            .get(&chat_id)
            .map(|ids| ids.clone())
            .unwrap_or_default();
        let mut found: Vec<Arc<LiveGeneration>> =
            ids.iter().filter_map(|id| self.find(*id)).collect();
        found.sort_by_key(|g| g.started_at);
        found
    }

    fn in_flight(&self) -> usize {
        self.counts.total.load(Ordering::Acquire)
    }

    fn cancel_all(&self) {
        for g in self.by_id.iter() {
            g.value().cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_respect_both_limits_and_are_given_back_on_drop() {
        let r = LocalGenerations::new(2, 3);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = r.admit(a).unwrap();
        let _a2 = r.admit(a).unwrap();
        assert_eq!(r.admit(a).err(), Some(Refusal::User(2)));
        let _b1 = r.admit(b).unwrap();
        assert_eq!(r.admit(b).err(), Some(Refusal::Node(3)));
        drop(a1);
        assert_eq!(r.in_flight(), 2);
        assert!(r.admit(b).is_ok());
    }
}
