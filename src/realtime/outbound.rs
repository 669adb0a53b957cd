//! A session's bounded outbound queue, measured in bytes. Rooms push shared, pre-serialised
//! frames here and never wait: a queue that would grow past its bound kills the session with
//! 4008 instead of slowing anyone else. The socket's own task ([`super::socket`]) drains it,
//! several frames per write; there is no channel and no task of the queue's own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Close code for a client that cannot keep up.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Bytes an item counts against a session's bound besides its payload: its header and its
/// place in a queue (a control frame in the outbound queue, a client message waiting for the
/// session).
pub(super) const ITEM_COST: usize = 64;
/// How long `send_wait` waits for room in the queue before declaring the client too slow.
const SEND_WAIT_LIMIT: Duration = Duration::from_secs(10);

/// One item of the queue.
pub(super) enum Out {
    /// A text frame.
    Frame(ByteString),
    /// A ping control frame (empty payload).
    Ping,
    /// A pong answering the client's ping.
    Pong(bytes::Bytes),
    /// The close frame; nothing after it is sent.
    Close(u16, &'static str),
}

impl Out {
    /// Bytes it counts against the session's bound while queued.
    pub(super) fn cost(&self) -> usize {
        match self {
            Out::Frame(frame) => frame.len(),
            Out::Ping => ITEM_COST,
            Out::Pong(p) => ITEM_COST + p.len(),
            Out::Close(..) => 0,
        }
    }
}

struct Inner {
    queue: Mutex<VecDeque<Out>>,
    /// Bytes of frames queued and not yet accepted by the socket.
    queued: AtomicUsize,
    /// The bound on `queued`.
    limit: usize,
    /// Set once the session is being torn down; later frames are dropped.
    dead: AtomicBool,
    /// The close code a kill asked for (0: not killed).
    kill_code: AtomicU16,
    /// The socket task, woken when there is something to write or a kill.
    waker: AtomicWaker,
    /// Wakes `send_wait` callers when the socket made room.
    drained: Notify,
    /// When the client was last heard from, in milliseconds since [`epoch`].
    heard: AtomicU64,
    /// Bytes of the client's own messages handed to the session and not yet taken up by it
    /// (the other direction, under the same bound).
    inbox: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The instant `heard` counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Adds `len` to `counter` unless that takes it past `limit`; an item always fits when
/// nothing is counted yet (so one item larger than the bound still goes through).
fn take_within(counter: &AtomicUsize, len: usize, limit: usize) -> bool {
    let before = counter.fetch_add(len, Ordering::AcqRel);
    if before > 0 && before + len > limit {
        counter.fetch_sub(len, Ordering::AcqRel);
        return false;
    }
    true
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Handle to one session's outbound queue. Cheap to clone; rooms and feeds hold clones.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

impl Outbound {
    /// An empty queue bounded at `limit` bytes; the socket task drains it.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Outbound {
        Outbound {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::new()),
                queued: AtomicUsize::new(0),
                limit,
                dead: AtomicBool::new(false),
                kill_code: AtomicU16::new(0),
                waker: AtomicWaker::new(),
                drained: Notify::new(),
                heard: AtomicU64::new(now_ms()),
                inbox: AtomicUsize::new(0),
                metrics,
            }),
        }
    }

    /// Queues a frame without waiting. Returns false if the session is dead or was just killed
    /// for exceeding its bound.
    pub fn send(&self, frame: ByteString) -> bool {
        let len = frame.len();
        // A single frame larger than the bound still goes through when the queue is empty.
        let queued = self.queue(Out::Frame(frame));
        if queued {
            self.inner.metrics.ws_bytes_out.inc_by(len as u64);
        }
        queued
    }

    /// Queues a frame, first waiting for the socket to make room (for replays, which may be
    /// larger than the bound in total but are paced by the client's own reading).
    pub async fn send_wait(&self, frame: ByteString) -> bool {
        let deadline = tokio::time::Instant::now() + SEND_WAIT_LIMIT;
        loop {
            if self.is_dead() {
                return false;
            }
            let notified = self.inner.drained.notified();
            let queued = self.inner.queued.load(Ordering::Acquire);
            if queued == 0 || queued + frame.len() <= self.inner.limit {
                return self.send(frame);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.kill(CLOSE_SLOW_CONSUMER);
                return false;
            }
        }
    }

    /// Queues a WebSocket ping control frame (counted against the bound like any frame).
    pub fn ping(&self) {
        self.queue(Out::Ping);
    }

    /// Queues a pong answering the client's ping. It counts against the bound: a client that
    /// pings and never reads is closed with 4008 like any other that does not read.
    pub fn pong(&self, payload: bytes::Bytes) {
        self.queue(Out::Pong(payload));
    }

    /// Queues `item` if its cost fits the bound (see [`Outbound::reserve`]).
    fn queue(&self, item: Out) -> bool {
        if !self.reserve(item.cost()) {
            return false;
        }
        self.lock().push_back(item);
        self.inner.waker.wake();
        true
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Out>> {
        // A panic while holding the lock cannot leave the queue half-changed (push and pop
        // only), so a poisoned lock is still usable.
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accounts `len` bytes to the queue, or kills the session (4008) when they do not fit.
    fn reserve(&self, len: usize) -> bool {
        let inner = &self.inner;
        if inner.dead.load(Ordering::Relaxed) {
            return false;
        }
        if !take_within(&inner.queued, len, inner.limit) {
            self.kill_slow();
            return false;
        }
        inner.metrics.ws_queue_bytes.add(len as i64);
        true
    }

    /// Closes after everything already queued is sent.
    pub fn close(&self, code: u16, reason: &'static str) {
        if !self.inner.dead.swap(true, Ordering::AcqRel) {
            self.lock().push_back(Out::Close(code, reason));
            self.inner.waker.wake();
        }
    }

    /// Closes now with 4008: the client cannot keep up (counted as a `slow_consumer`
    /// disconnect).
    pub fn kill_slow(&self) {
        if !self.is_dead() {
            self.inner
                .metrics
                .ws_disconnects
                .with_label_values(&["slow_consumer"])
                .inc();
        }
        self.kill(CLOSE_SLOW_CONSUMER);
    }

    /// Drops whatever is queued and closes with `code` now.
    pub fn kill(&self, code: u16) {
        if !self.inner.dead.swap(true, Ordering::AcqRel) {
            self.inner.kill_code.store(code, Ordering::Release);
            self.inner.waker.wake();
        }
    }

    /// True once the session is closing or closed.
    pub fn is_dead(&self) -> bool {
        self.inner.dead.load(Ordering::Acquire)
    }

    /// Counts `cost` bytes of a client message handed to the session, which takes its messages
    /// one at a time and may be busy with one (a replay waiting for the client to read). False
    /// when that would take the messages waiting past the bound; a message always fits when
    /// none waits.
    pub fn inbox_take(&self, cost: usize) -> bool {
        take_within(&self.inner.inbox, cost, self.inner.limit)
    }

    /// The session took up a message counted by [`Outbound::inbox_take`].
    pub fn inbox_done(&self, cost: usize) {
        let _ = self
            .inner
            .inbox
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(cost))
            });
    }

    /// The bound on the bytes queued, in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes waiting now.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// How long since the client was last heard from (see `Outbound::heard`).
    pub fn silent_for(&self) -> Duration {
        let heard = self.inner.heard.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(heard))
    }

    /// Records that something arrived from the client.
    pub(super) fn heard(&self) {
        self.inner.heard.store(now_ms(), Ordering::Relaxed);
    }

    /// The code of a kill, once one was asked for.
    pub(super) fn killed(&self) -> Option<u16> {
        match self.inner.kill_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Ready when there is something for the socket task to do: a kill, or (when it wants
    /// `items`) a queued item. Registers the task's waker first, so that nothing queued
    /// meanwhile is missed.
    pub(super) fn poll_work(&self, cx: &mut Context<'_>, items: bool) -> Poll<()> {
        self.inner.waker.register(cx.waker());
        if self.killed().is_some() || (items && !self.lock().is_empty()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Hands up to `max_items` queued items to `push`, stopping after a close; they stay
    /// accounted until [`Outbound::release`]d.
    pub(super) fn take(&self, max_items: usize, mut push: impl FnMut(Out)) {
        let mut queue = self.lock();
        for _ in 0..max_items {
            let Some(item) = queue.pop_front() else { break };
            let close = matches!(item, Out::Close(..));
            push(item);
            if close {
                break;
            }
        }
        if queue.is_empty() && queue.capacity() > 0 {
            // A quiet session holds no queue memory.
            *queue = VecDeque::new();
        }
    }

    /// The socket took `len` accounted bytes: frees them and wakes `send_wait` callers.
    pub(super) fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        self.inner.queued.fetch_sub(len, Ordering::AcqRel);
        self.inner.metrics.ws_queue_bytes.sub(len as i64);
        self.inner.drained.notify_waiters();
    }

    /// Drops everything still queued, releasing its bytes (after a kill).
    pub(super) fn discard(&self) {
        let dropped: usize = std::mem::take(&mut *self.lock())
            .iter()
            .map(Out::cost)
            .sum();
        self.release(dropped);
    }

    /// Marks the queue dead for good (the socket is gone) and releases every byte still
    /// accounted to it, queued or taken.
    pub(super) fn finish(&self) {
        self.inner.dead.store(true, Ordering::Release);
        drop(std::mem::take(&mut *self.lock()));
        let left = self.inner.queued.swap(0, Ordering::AcqRel);
        self.inner.metrics.ws_queue_bytes.sub(left as i64);
        self.inner.drained.notify_waiters();
    }
}
