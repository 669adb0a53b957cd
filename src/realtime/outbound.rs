//! A session's bounded outbound queue, measured in bytes, and the task that drains it into the
//! socket. Rooms push shared, pre-serialised frames here and never wait: a queue that would
//! grow past its bound kills the session with 4008 instead of slowing anyone else.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason};
use bytestring::ByteString;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;

/// Close code for a client that cannot keep up.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// How long a normal close may wait for room in the socket before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a killed session's close frame may wait behind what the socket already holds: a
/// client that stalled for a while and then reads on still learns why it was closed. What is
/// held meanwhile is bounded (the transport's small buffer), the session's own queue is freed.
const KILL_GRACE: Duration = Duration::from_secs(30);
/// Bytes a control frame (ping, pong) counts against the bound besides its payload: its
/// header and its place in the queue.
const CONTROL_FRAME_COST: usize = 64;
/// How long `send_wait` waits for room in the queue before declaring the client too slow.
const SEND_WAIT_LIMIT: Duration = Duration::from_secs(10);

enum Out {
    Frame(ByteString),
    Ping,
    Pong(bytes::Bytes),
    Close(u16, &'static str),
}

impl Out {
    /// Bytes it counts against the session's bound while queued.
    fn cost(&self) -> usize {
        match self {
            Out::Frame(frame) => frame.len(),
            Out::Ping => CONTROL_FRAME_COST,
            Out::Pong(p) => CONTROL_FRAME_COST + p.len(),
            Out::Close(..) => 0,
        }
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Out>,
    /// Bytes of frames queued and not yet accepted by the socket.
    queued: AtomicUsize,
    /// The bound on `queued`.
    limit: usize,
    /// Set once the session is being torn down; later frames are dropped.
    dead: AtomicBool,
    /// The close code a kill asked for.
    kill_code: AtomicU16,
    /// Wakes the writer to abandon the queue.
    kill: Notify,
    /// Wakes `send_wait` callers when the writer made room.
    drained: Notify,
    metrics: Arc<Metrics>,
}

impl Inner {
    /// The socket took `len` accounted bytes: frees them and wakes `send_wait` callers.
    fn release(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
        self.metrics.ws_queue_bytes.sub(len as i64);
        self.drained.notify_waiters();
    }
}

/// Handle to one session's outbound queue. Cheap to clone; rooms and feeds hold clones.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

impl Outbound {
    /// Creates the queue and spawns its writer on the current actix arbiter.
    pub fn spawn(session: actix_ws::Session, limit: usize, metrics: Arc<Metrics>) -> Outbound {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            tx,
            queued: AtomicUsize::new(0),
            limit,
            dead: AtomicBool::new(false),
            kill_code: AtomicU16::new(0),
            kill: Notify::new(),
            drained: Notify::new(),
            metrics,
        });
        actix_rt::spawn(writer(session, rx, inner.clone()));
        Outbound { inner }
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

    /// Queues a frame, first waiting for the writer to make room (for replays, which may be
    /// larger than the bound in total but are paced by the client's own reading).
    pub async fn send_wait(&self, frame: ByteString) -> bool {
        let deadline = tokio::time::Instant::now() + SEND_WAIT_LIMIT;
        loop {
            if self.is_dead() {
                return false;
            }
            let queued = self.inner.queued.load(Ordering::Acquire);
            if queued == 0 || queued + frame.len() <= self.inner.limit {
                return self.send(frame);
            }
            let notified = self.inner.drained.notified();
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
        self.reserve(item.cost()) && self.inner.tx.send(item).is_ok()
    }

    /// Accounts `len` bytes to the queue, or kills the session (4008) when they do not fit.
    fn reserve(&self, len: usize) -> bool {
        let inner = &self.inner;
        if inner.dead.load(Ordering::Relaxed) {
            return false;
        }
        let before = inner.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > inner.limit {
            inner.queued.fetch_sub(len, Ordering::AcqRel);
            inner
                .metrics
                .ws_disconnects
                .with_label_values(&["slow_consumer"])
                .inc();
            self.kill(CLOSE_SLOW_CONSUMER);
            return false;
        }
        inner.metrics.ws_queue_bytes.add(len as i64);
        true
    }

    /// Closes after everything already queued is sent.
    pub fn close(&self, code: u16, reason: &'static str) {
        if !self.inner.dead.swap(true, Ordering::AcqRel) {
            let _ = self.inner.tx.send(Out::Close(code, reason));
        }
    }

    /// Drops whatever is queued and closes with `code` now.
    pub fn kill(&self, code: u16) {
        if !self.inner.dead.swap(true, Ordering::AcqRel) {
            self.inner.kill_code.store(code, Ordering::Release);
            self.inner.kill.notify_one();
        }
    }

    /// True once the session is closing or closed.
    pub fn is_dead(&self) -> bool {
        self.inner.dead.load(Ordering::Acquire) || self.inner.tx.is_closed()
    }

    /// Bytes waiting now.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }
}

fn reason(code: u16, text: &'static str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(text.to_string()),
    })
}

async fn writer(
    mut session: actix_ws::Session,
    mut rx: mpsc::UnboundedReceiver<Out>,
    inner: Arc<Inner>,
) {
    let mut killed = false;
    loop {
        let item = tokio::select! {
            biased;
            _ = inner.kill.notified() => { killed = true; break; }
            item = rx.recv() => item,
        };
        let Some(item) = item else { break };
        // Every write gives way to a kill: a socket that takes nothing holds the writer no
        // longer than it takes to notice.
        if let Out::Close(code, text) = item {
            let _ = tokio::time::timeout(CLOSE_GRACE, session.close(reason(code, text))).await;
            return finish(&inner, &mut rx);
        }
        let cost = item.cost();
        let write = async {
            match item {
                Out::Frame(frame) => session.text(frame).await,
                Out::Ping => session.ping(b"").await,
                Out::Pong(p) => session.pong(&p).await,
                Out::Close(..) => Ok(()),
            }
        };
        let sent = tokio::select! {
            biased;
            _ = inner.kill.notified() => None,
            r = write => Some(r.is_ok()),
        };
        inner.release(cost);
        let ok = match sent {
            Some(ok) => ok,
            None => {
                killed = true;
                break;
            }
        };
        if !ok {
            break;
        }
    }
    if killed {
        let code = inner.kill_code.load(Ordering::Acquire);
        let text = match code {
            CLOSE_SLOW_CONSUMER => "slow consumer",
            4029 => "rate limit exceeded",
            4001 => "token expired",
            1009 => "message too large",
            1007 => "invalid UTF-8 in a text message",
            1002 => "protocol error",
            _ => "closed by server",
        };
        finish(&inner, &mut rx);
        let _ = tokio::time::timeout(KILL_GRACE, session.close(reason(code, text))).await;
        return;
    }
    finish(&inner, &mut rx);
}

/// Marks the queue dead and releases the bytes still accounted to it.
fn finish(inner: &Inner, rx: &mut mpsc::UnboundedReceiver<Out>) {
    inner.dead.store(true, Ordering::Release);
    rx.close();
    let left = inner.queued.swap(0, Ordering::AcqRel);
    inner.metrics.ws_queue_bytes.sub(left as i64);
    inner.drained.notify_waiters();
}
