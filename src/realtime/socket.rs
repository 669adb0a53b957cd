//! The WebSocket under a [`UserSession`]: after the `/ws` handshake, one task per connection
//! owns the TCP stream (nothing of the HTTP/1 dispatcher stays behind). It
//!
//! - reads into a buffer that exists only while a frame is partial, decodes frames with
//!   actix-http's RFC 6455 codec, joins fragmented messages (a message over the limit in total
//!   closes 1009 as soon as it is over), checks UTF-8 (1007), answers pings and takes every
//!   frame, each fragment of a message included, from the session's rate limit (4029);
//! - writes by draining the session's byte-bounded [`Outbound`] queue, many frames per
//!   vectored write, each shared frame written from the bytes every watcher shares;
//! - closes: after its own close frame it waits only for the client's (and ends the TCP
//!   connection as soon as that arrives), never longer than a short grace.
//!
//! While a socket is quiet it holds no buffer and no timer; the server's pings come from the
//! node's heartbeat ([`super::heartbeat`]), which queues them like any frame.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::net::TcpStream;
use uuid::Uuid;

use super::outbound::{Out, Outbound};
use super::protocol::{self, error_frame};
use super::session::{
    Inbound, SessionEnv, UserSession, CLOSE_INVALID_PAYLOAD, CLOSE_PROTOCOL_ERROR,
    CLOSE_RATE_LIMITED, CLOSE_TOO_LARGE,
};
use crate::limits::SocketSlot;
use crate::metrics::Metrics;

/// How long the socket may take to write what is left (queued frames and the close frame)
/// once the session is closing: a client that stalled for a while and then reads on still
/// learns why it was closed. The session's queue is freed meanwhile.
const FLUSH_GRACE: Duration = Duration::from_secs(30);
/// How long the socket waits for the client's close frame after sending its own.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Frames taken from the queue per write (two slices each: header and payload).
const FRAMES_PER_WRITE: usize = 32;
/// Bytes read at once into a fresh buffer.
const READ_CHUNK: usize = 4096;
/// Spare room in a partial frame's buffer worth reading into directly.
const MIN_DIRECT_READ: usize = 512;
/// Window over which rate-limit violations are counted towards a 4029 close.
const FLOOD_WINDOW: Duration = Duration::from_secs(5);

/// What the `/ws` handshake decided, carried from the HTTP handler to the upgraded socket.
pub enum Accepted {
    /// A session for an authenticated user.
    Session(Box<SessionStart>),
    /// Upgraded only to tell a browser why (it cannot read an HTTP status): closed at once
    /// with this code and reason.
    Refused(u16, &'static str),
}

/// Everything a new session needs besides its socket.
pub struct SessionStart {
    /// The services the session uses.
    pub env: SessionEnv,
    /// The authenticated user.
    pub user_id: Uuid,
    /// The token's expiry, seconds since the epoch.
    pub exp: i64,
    /// The user's place under the per-user socket cap.
    pub slot: SocketSlot,
}

/// Drives an upgraded connection until it ends. `read_buf` holds what the client sent after
/// the handshake's head, if anything.
pub async fn serve(io: TcpStream, read_buf: BytesMut, accepted: Accepted, metrics: Arc<Metrics>) {
    let (out, session, max_bytes, limit) = match accepted {
        Accepted::Session(start) => {
            let settings = start.env.settings.clone();
            let out = Outbound::new(settings.outbound_queue_bytes, metrics.clone());
            let session_out = out.clone();
            let SessionStart {
                env,
                user_id,
                exp,
                slot,
            } = *start;
            let addr = UserSession::create(move |_| {
                UserSession::new(env, user_id, exp, session_out, slot)
            });
            let limit = RateLimit::new(settings.rate_per_sec, settings.rate_burst);
            (out, Some(addr), settings.max_frame_bytes, limit)
        }
        Accepted::Refused(code, reason) => {
            let out = Outbound::new(0, metrics.clone());
            out.close(code, reason);
            (out, None, 0, RateLimit::new(1, 1))
        }
    };
    let mut conn = Conn {
        io,
        out,
        session,
        codec: Codec::new().max_size(max_bytes),
        max_bytes,
        read: read_buf,
        partial: None,
        limit,
        batch: Batch::default(),
        metrics,
        flags: Flags::default(),
        deadline: None,
    };
    // Frames the client sent right behind its handshake; `decode` also frees the buffer the
    // HTTP dispatcher allocated when nothing is left in it.
    conn.decode();
    conn.run().await;
}

impl Drop for Conn {
    /// However the connection ends, its queue is freed and its session told.
    fn drop(&mut self) {
        self.out.finish();
        if let Some(session) = self.session.take() {
            session.do_send(Inbound::Closed);
        }
    }
}

/// A fragmented message being received.
struct Partial {
    text: bool,
    bytes: BytesMut,
    /// Bytes received so far, counted against the limit even once `refused`.
    len: usize,
    /// A fragment found the rate limit empty: the rest is read and dropped, and the whole
    /// message is refused at its last fragment.
    refused: bool,
}

#[derive(Default)]
struct Flags {
    /// The client will send nothing more (end of stream or a read error).
    eof: bool,
    /// The client's close frame arrived.
    peer_closed: bool,
    /// The client broke the protocol: nothing more is decoded.
    broken: bool,
    /// A kill was acted on.
    killed: bool,
    /// The close frame is in the batch: nothing more is taken from the queue.
    close_taken: bool,
    /// The close frame is written.
    close_sent: bool,
}

struct Conn {
    io: TcpStream,
    out: Outbound,
    session: Option<Addr<UserSession>>,
    codec: Codec,
    max_bytes: usize,
    /// Bytes read and not yet decoded; empty (no allocation) between frames.
    read: BytesMut,
    partial: Option<Partial>,
    limit: RateLimit,
    batch: Batch,
    metrics: Arc<Metrics>,
    flags: Flags,
    /// When the connection is dropped whatever happens (set once it is closing).
    deadline: Option<Instant>,
}

impl Conn {
    async fn run(&mut self) {
        loop {
            self.prepare();
            if self.flush().is_err() || self.finished() {
                return;
            }
            let reading = !self.flags.eof;
            let writing = !self.batch.is_empty();
            let waiting = !writing && !self.flags.close_taken;
            let deadline = self.deadline.map(tokio::time::Instant::from_std);
            tokio::select! {
                ready = self.io.readable(), if reading => match ready {
                    Ok(()) => self.read_some(),
                    Err(_) => self.flags.eof = true,
                },
                ready = self.io.writable(), if writing => {
                    if ready.is_err() {
                        return;
                    }
                }
                // Until a kill is acted on, a kill wakes the task even while it waits to write.
                () = poll_fn(|cx| self.out.poll_work(cx, waiting)), if !self.flags.killed => {}
                () = sleep_until(deadline), if deadline.is_some() => return,
                else => return,
            }
        }
    }

    /// Acts on a kill, takes what is queued into the batch, and keeps the deadlines.
    fn prepare(&mut self) {
        if !self.flags.killed {
            if let Some(code) = self.out.killed() {
                self.flags.killed = true;
                self.batch.keep_started(&self.out);
                self.out.discard();
                self.batch.push(close_wire(code, kill_reason(code)), 0);
                self.flags.close_taken = true;
            }
        }
        if !self.flags.close_taken && self.batch.len() < FRAMES_PER_WRITE {
            let (batch, flags) = (&mut self.batch, &mut self.flags);
            self.out.take(FRAMES_PER_WRITE - batch.len(), |item| {
                let cost = item.cost();
                if matches!(item, Out::Close(..)) {
                    flags.close_taken = true;
                }
                batch.push(wire(item), cost);
            });
        }
        if self.deadline.is_none() && self.out.is_dead() {
            self.deadline = Some(Instant::now() + FLUSH_GRACE);
        }
    }

    /// Writes as much of the batch as the socket takes now. `Err` when the socket failed.
    fn flush(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let n = self.batch.slices(&mut slices);
            match self.io.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    let done = self.batch.advance(written);
                    self.out.release(done.cost);
                    if done.close {
                        self.close_sent();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The close frame is out: the connection ends once the client's close arrives, or after
    /// a short grace.
    fn close_sent(&mut self) {
        self.flags.close_sent = true;
        let grace = Instant::now() + CLOSE_GRACE;
        self.deadline = Some(self.deadline.map_or(grace, |d| d.min(grace)));
    }

    /// True when nothing is left to do: the close handshake is complete (or cannot complete),
    /// or the client is gone.
    fn finished(&self) -> bool {
        let f = &self.flags;
        f.eof || (f.close_sent && (f.peer_closed || f.broken))
    }

    fn read_some(&mut self) {
        let read = if self.read.capacity() - self.read.len() >= MIN_DIRECT_READ {
            self.io.try_read_buf(&mut self.read)
        } else {
            let mut chunk = [0u8; READ_CHUNK];
            self.io.try_read(&mut chunk).inspect(|&n| {
                self.read.extend_from_slice(&chunk[..n]);
            })
        };
        match read {
            Ok(0) => self.flags.eof = true,
            Ok(_) => {
                self.out.heard();
                self.decode();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.flags.eof = true,
        }
    }

    /// Decodes and handles every complete frame in the read buffer.
    fn decode(&mut self) {
        while !self.flags.broken {
            if declared_len(&self.read).is_some_and(|len| len > self.max_bytes as u64) {
                // Refused from its header: an oversized frame is never buffered.
                self.fail(ProtocolError::Overflow);
                break;
            }
            match self.codec.decode(&mut self.read) {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) => break,
                Err(e) => self.fail(e),
            }
        }
        if self.flags.broken {
            self.read.clear();
        }
        if self.read.is_empty() {
            // No frame is partial: the socket holds no read buffer.
            self.read = BytesMut::new();
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        // Once the session is closing only the client's close frame matters.
        let open = !self.out.is_dead();
        match frame {
            Frame::Text(bytes) if open => self.message(true, bytes),
            Frame::Binary(bytes) if open => self.message(false, bytes),
            Frame::Continuation(item) if open => self.continuation(item),
            // Control frames count like any other: a ping flood is rate limited, and the
            // pongs it earns count against the outbound bound.
            Frame::Ping(payload) if open && self.admit(None) => self.out.pong(payload),
            Frame::Pong(_) if open => {
                self.admit(None);
            }
            Frame::Close(_) => {
                self.flags.peer_closed = true;
                self.out.close(1000, "bye");
            }
            _ => {}
        }
    }

    /// A fragment of a message: joined with the others, measured in total against the limit
    /// (1009 as soon as it is over), handled as one message after the last. Every fragment
    /// takes one from the rate limit, so a message sent in many tiny fragments costs what as
    /// many messages would; one refused fragment refuses the whole message.
    fn continuation(&mut self, item: Item) {
        let (first, last, bytes) = match item {
            Item::FirstText(b) => (Some(true), false, b),
            Item::FirstBinary(b) => (Some(false), false, b),
            Item::Continue(b) => (None, false, b),
            Item::Last(b) => (None, true, b),
        };
        if let Some(text) = first {
            self.partial = Some(Partial {
                text,
                bytes: BytesMut::new(),
                len: 0,
                refused: false,
            });
        }
        let max = self.max_bytes;
        let Some(p) = self.partial.as_mut() else {
            return self.fail(ProtocolError::ContinuationNotStarted);
        };
        p.len += bytes.len();
        if p.len > max {
            return self.fail(ProtocolError::Overflow);
        }
        if !p.refused {
            p.bytes.extend_from_slice(&bytes);
        }
        if !last {
            // The last fragment's share is taken when the whole message is handled.
            if !self.admit(None) {
                if let Some(p) = self.partial.as_mut() {
                    p.refused = true;
                    p.bytes = BytesMut::new();
                }
            }
            return;
        }
        let Some(p) = self.partial.take() else { return };
        if !p.refused {
            return self.message(p.text, p.bytes.freeze());
        }
        if p.text && !self.out.is_dead() {
            self.rate_limited(&None);
        }
    }

    /// A complete message from the client.
    fn message(&mut self, text: bool, bytes: Bytes) {
        if !text {
            if self.admit(None) {
                self.forward(Inbound::Binary);
            }
            return;
        }
        let Ok(text) = ByteString::try_from(bytes) else {
            return self.fail_with(CLOSE_INVALID_PAYLOAD, "invalid_utf8");
        };
        if self.admit(Some(&text)) {
            self.forward(Inbound::Text(text));
        }
    }

    /// Hands a message to the session, unless too many of the client's messages already wait
    /// for it: then a text message is answered with `rate_limited` and a binary one dropped.
    fn forward(&self, msg: Inbound) {
        let Some(session) = &self.session else { return };
        if !self.out.inbox_take(msg.cost()) {
            if let Inbound::Text(text) = &msg {
                self.refuse(
                    &protocol::request_id(text),
                    "too many requests waiting for an answer; wait for them",
                );
            }
            return;
        }
        session.do_send(msg);
    }

    /// Takes one frame from the rate limit. False when the frame must be dropped: it was
    /// answered with `rate_limited` (text messages only; the text gives the request id), or
    /// the session is closing with 4029 because the client kept flooding (after the errors
    /// already queued).
    fn admit(&mut self, text: Option<&str>) -> bool {
        let Err(close) = self.limit.take() else {
            return true;
        };
        if close {
            self.disconnected("rate_limited");
            self.out.close(CLOSE_RATE_LIMITED, "rate limit exceeded");
        } else if let Some(text) = text {
            self.rate_limited(&protocol::request_id(text));
        }
        false
    }

    /// Answers a text message the rate limit refused with `error` `rate_limited`.
    fn rate_limited(&self, id: &Option<String>) {
        self.refuse(id, "too many frames; slow down");
    }

    /// Answers a refused text message with `error` `rate_limited` and `message`.
    fn refuse(&self, id: &Option<String>, message: &str) {
        self.metrics
            .ws_frames_out
            .with_label_values(&["error"])
            .inc();
        self.out.send(error_frame(id, "rate_limited", message));
    }

    /// Fails the connection for a protocol error (RFC 6455 §7.1.7).
    fn fail(&mut self, e: ProtocolError) {
        let (code, reason) = match e {
            ProtocolError::Overflow => (CLOSE_TOO_LARGE, "too_large"),
            _ => (CLOSE_PROTOCOL_ERROR, "protocol_error"),
        };
        tracing::debug!(error = %e, code, "websocket protocol error");
        self.fail_with(code, reason);
    }

    fn fail_with(&mut self, code: u16, reason: &'static str) {
        self.disconnected(reason);
        self.flags.broken = true;
        self.partial = None;
        self.out.kill(code);
    }

    fn disconnected(&self, reason: &'static str) {
        self.metrics
            .ws_disconnects
            .with_label_values(&[reason])
            .inc();
    }
}

/// Sleeps until `deadline` (never, without one; the branch is disabled then).
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The payload length the frame header at the start of `buf` declares, once enough of the
/// header is there.
fn declared_len(buf: &[u8]) -> Option<u64> {
    match *buf.get(1)? & 0x7f {
        126 => buf
            .get(2..4)
            .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf
            .get(2..10)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes),
        n => Some(u64::from(n)),
    }
}

/// The reason sent with a kill's close code.
fn kill_reason(code: u16) -> &'static str {
    match code {
        super::outbound::CLOSE_SLOW_CONSUMER => "slow consumer",
        CLOSE_RATE_LIMITED => "rate limit exceeded",
        CLOSE_TOO_LARGE => "message too large",
        CLOSE_INVALID_PAYLOAD => "invalid UTF-8 in a text message",
        CLOSE_PROTOCOL_ERROR => "protocol error",
        _ => "closed by server",
    }
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One server frame on the wire: its header (server frames are not masked) and its payload,
/// shared with every other session the same frame goes to.
struct Wire {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
    /// Bytes it counts against the queue's bound until written.
    cost: usize,
    close: bool,
}

impl Wire {
    fn new(opcode: u8, payload: Bytes) -> Wire {
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        let len = payload.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Wire {
            head,
            head_len,
            payload,
            cost: 0,
            close: opcode == OP_CLOSE,
        }
    }

    fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }
}

fn wire(item: Out) -> Wire {
    match item {
        Out::Frame(frame) => Wire::new(OP_TEXT, frame.into_bytes()),
        Out::Ping => Wire::new(OP_PING, Bytes::new()),
        Out::Pong(payload) => Wire::new(OP_PONG, payload),
        Out::Close(code, reason) => close_wire(code, reason),
    }
}

fn close_wire(code: u16, reason: &str) -> Wire {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    Wire::new(OP_CLOSE, Bytes::from(payload))
}

/// What a write completed.
#[derive(Default)]
struct Written {
    /// Accounted bytes of the frames written in full.
    cost: usize,
    /// The close frame was among them.
    close: bool,
}

/// Frames taken from the queue and not yet written in full.
#[derive(Default)]
struct Batch {
    frames: std::collections::VecDeque<Wire>,
    /// Bytes of the first frame already written.
    started: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn push(&mut self, mut frame: Wire, cost: usize) {
        frame.cost = cost;
        self.frames.push_back(frame);
    }

    /// Fills `slices` with what is left to write; returns how many it used.
    fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut skip = self.started;
        for frame in &self.frames {
            if n + 2 > slices.len() {
                break;
            }
            for part in [frame.head(), &frame.payload[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
            }
        }
        n
    }

    /// Records `n` more bytes written.
    fn advance(&mut self, n: usize) -> Written {
        let mut done = Written::default();
        let mut left = self.started + n;
        while let Some(front) = self.frames.front() {
            if left < front.len() {
                break;
            }
            left -= front.len();
            done.cost += front.cost;
            done.close |= front.close;
            self.frames.pop_front();
        }
        self.started = left;
        if self.frames.is_empty() {
            // A quiet socket holds no batch memory.
            self.frames = Default::default();
        }
        done
    }

    /// After a kill: keeps only a frame already partly written (it must be finished for the
    /// stream to stay well-formed) and releases the others' bytes.
    fn keep_started(&mut self, out: &Outbound) {
        let keep = usize::from(self.started > 0);
        let dropped: usize = self.frames.drain(keep..).map(|f| f.cost).sum();
        out.release(dropped);
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Frames refused within the current flood window, and when it started.
    refused: u32,
    window_start: Instant,
}

impl RateLimit {
    fn new(rate: u32, burst: u32) -> Self {
        let now = Instant::now();
        RateLimit {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            refused: 0,
            window_start: now,
        }
    }

    /// `Ok` when the frame may be handled; `Err(true)` when the client should be closed.
    fn take(&mut self) -> Result<(), bool> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if now.duration_since(self.window_start) > FLOOD_WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        Err(f64::from(self.refused) > self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_use_the_shortest_length_encoding() {
        let short = Wire::new(OP_TEXT, Bytes::from_static(b"hi"));
        assert_eq!(short.head(), &[0x81, 2]);
        let mid = Wire::new(OP_TEXT, Bytes::from(vec![b'x'; 300]));
        assert_eq!(mid.head(), &[0x81, 126, 1, 44]);
        let long = Wire::new(OP_TEXT, Bytes::from(vec![b'x'; 70_000]));
        assert_eq!(long.head()[..2], [0x81, 127]);
        assert_eq!(long.len(), 10 + 70_000);
        let close = close_wire(4008, "slow consumer");
        assert!(close.close);
        assert_eq!(&close.payload[..2], &4008u16.to_be_bytes());
    }

    #[test]
    fn a_declared_length_is_read_before_the_payload_arrives() {
        assert_eq!(declared_len(&[0x81]), None);
        assert_eq!(declared_len(&[0x81, 0x85]), Some(5));
        assert_eq!(declared_len(&[0x81, 0xFE, 0x01]), None);
        assert_eq!(declared_len(&[0x81, 0xFE, 0x01, 0x00]), Some(256));
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(declared_len(&huge), Some(1 << 40));
    }

    #[test]
    fn a_batch_resumes_a_partial_write_where_it_stopped() {
        let mut batch = Batch::default();
        batch.push(Wire::new(OP_TEXT, Bytes::from_static(b"abc")), 3);
        batch.push(Wire::new(OP_PING, Bytes::new()), 64);
        {
            let mut slices = [IoSlice::new(&[]); 4];
            assert_eq!(
                batch.slices(&mut slices),
                3,
                "the ping has no payload slice"
            );
        }
        assert_eq!(batch.advance(3).cost, 0);
        {
            let mut slices = [IoSlice::new(&[]); 4];
            assert_eq!(batch.slices(&mut slices), 2);
            assert_eq!(&*slices[0], b"bc");
        }
        let done = batch.advance(4);
        assert_eq!(done.cost, 67);
        assert!(batch.is_empty());
    }
}
