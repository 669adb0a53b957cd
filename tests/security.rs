//! A hostile client at the edge: floods of pings that never read, more sockets than a user may
//! hold, request floods from one address (and lies in `X-Forwarded-For`), bodies and heads
//! that never finish, and WebSocket messages that break RFC 6455. None of it touches the
//! database's behaviour, so these run on SQLite only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::ws::WsClient;
use common::{spawn_app_with, Backend, TestApp, TestUser};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket whose receive buffer is tiny, so that a client that does not read soon leaves
/// the server with nowhere to put its frames.
async fn raw_socket(app: &TestApp, token: &str, recv_buffer: Option<u32>) -> Raw {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buffer {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let stream = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().unwrap())
        .await
        .unwrap();
    let req = format!("ws://127.0.0.1:{}/ws?token={token}", app.port)
        .into_client_request()
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    ws
}

/// Reads until the close frame (or the end), returning its code; fails after `within`.
async fn close_code_of(ws: &mut Raw, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the server did not close the socket within {within:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

/// Pings skip nothing: a ping flood is rate limited like text frames, then closed 4029.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_rate_limited_and_closed_4029() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("WS_RATE_PER_SEC", "5"), ("WS_RATE_BURST", "5")],
    )
    .await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    for _ in 0..200 {
        if ws.send(Message::Ping(vec![7u8; 16].into())).await.is_err() {
            break;
        }
    }
    assert_eq!(
        close_code_of(&mut ws, Duration::from_secs(10)).await,
        Some(4029)
    );
}

/// A client that pings fast (within its rate) and never reads: the pongs it earns count
/// against its outbound bound, so it is closed with 4008 and the server holds at most the
/// bound for it (before, the pongs queued without limit: RSS 51 → 385 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_and_never_reads_is_closed_4008_within_its_bound() {
    let bound = 16 * 1024;
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("WS_RATE_PER_SEC", "1000000"),
            ("WS_RATE_BURST", "1000000"),
            ("WS_OUTBOUND_QUEUE_BYTES", &bound.to_string()),
        ],
    )
    .await;
    let alice = TestUser::new();
    let ws = raw_socket(&app, &alice.token, Some(4096)).await;
    let (mut tx, mut rx) = ws.split();
    let payload = vec![1u8; 125];
    let started = Instant::now();
    let mut peak = 0i64;
    // Send until the server gives up on us (it then stops reading, and our sends fail or
    // block), watching how much it holds for us meanwhile.
    let flood = async {
        for i in 0..400_000u32 {
            if tx
                .send(Message::Ping(payload.clone().into()))
                .await
                .is_err()
            {
                return;
            }
            if i % 256 == 0 {
                peak = peak.max(app.state.metrics.ws_queue_bytes.get());
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), flood).await;
    assert!(
        peak <= bound as i64 + 4096,
        "the server held {peak} bytes for a client bounded at {bound}"
    );
    let read_until = tokio::time::Instant::now() + Duration::from_secs(40);
    let code = loop {
        match tokio::time::timeout_at(read_until, rx.next()).await {
            Err(_) => panic!("not closed within 40 s (after {:?})", started.elapsed()),
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break None,
        }
    };
    assert_eq!(code, Some(4008), "closed as a slow consumer");
    assert_eq!(
        app.state.metrics.ws_queue_bytes.get(),
        0,
        "nothing left queued"
    );
}

/// The cap on sockets per user: the next one is upgraded and closed at once with 4030; a slot
/// comes back when a socket closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_per_user_are_capped_with_close_4030() {
    let app = spawn_app_with(Backend::Sqlite, &[("WS_MAX_SESSIONS_PER_USER", "3")]).await;
    let alice = TestUser::new();
    let bob = TestUser::new();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(WsClient::connect(&app, &alice.token).await);
    }
    let mut fourth = raw_socket(&app, &alice.token, None).await;
    assert_eq!(
        close_code_of(&mut fourth, Duration::from_secs(10)).await,
        Some(4030)
    );
    // Another user is not affected.
    let _bob = WsClient::connect(&app, &bob.token).await;
    // Closing one gives its slot back.
    open.pop().unwrap().close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.limits.sockets_of(alice.id) > 2 {
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = WsClient::connect(&app, &alice.token).await;
    let pong = again.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
}

/// RFC 6455 §7.4.1: a text message that is not UTF-8 closes with 1007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    let bad = vec![b'{', 0xC3, 0x28, b'}'];
    ws.send(Message::Frame(Frame::message(
        bad,
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        close_code_of(&mut ws, Duration::from_secs(10)).await,
        Some(1007)
    );
}

/// A message sent in fragments, each under the frame limit but together over it, closes with
/// 1009 (message too big), like a single oversized frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_over_the_limit_closes_with_1009() {
    let app = spawn_app_with(Backend::Sqlite, &[("WS_MAX_FRAME_BYTES", "1024")]).await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    let piece = vec![b' '; 600];
    ws.send(Message::Frame(Frame::message(
        piece.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    for _ in 0..3 {
        let _ = ws
            .send(Message::Frame(Frame::message(
                piece.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await;
    }
    assert_eq!(
        close_code_of(&mut ws, Duration::from_secs(10)).await,
        Some(1009)
    );
}

/// Sends `text` as one message in `pieces` fragments, the last one final when `finish`; stops
/// quietly once the server has closed. Returns the fragments sent.
async fn send_in_fragments(ws: &mut Raw, text: &str, pieces: usize, finish: bool) -> usize {
    let bytes = text.as_bytes();
    assert!(bytes.len() >= pieces, "{text:?} splits into {pieces}");
    let cut = |i: usize| i * bytes.len() / pieces;
    for i in 0..pieces {
        let op = if i == 0 { Data::Text } else { Data::Continue };
        let fin = finish && i + 1 == pieces;
        let frame = Frame::message(bytes[cut(i)..cut(i + 1)].to_vec(), OpCode::Data(op), fin);
        if ws.send(Message::Frame(frame)).await.is_err() {
            return i;
        }
    }
    pieces
}

/// The next text frame the server sends, as JSON.
async fn next_json(ws: &mut Raw) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Every fragment of a message takes one from the rate limit: a message in a few fragments
/// goes through, one in more fragments than the bucket holds is refused whole with
/// `rate_limited` (nothing of it is handled), and a flood of fragments closes 4029, as a flood
/// of messages would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_count_against_the_rate_limit() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("WS_RATE_PER_SEC", "1"), ("WS_RATE_BURST", "10")],
    )
    .await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let ping = r#"{"type":"ping","id":"fragmented"}"#;
    assert_eq!(send_in_fragments(&mut ws, ping, 3, true).await, 3);
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], "fragmented");

    // 7 tokens left: 11 charged fragments leave 4 refused, fewer than the 10 that close.
    assert_eq!(send_in_fragments(&mut ws, ping, 12, true).await, 12);
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited");

    let flood = "x".repeat(200);
    send_in_fragments(&mut ws, &flood, 100, false).await;
    assert_eq!(
        close_code_of(&mut ws, Duration::from_secs(5)).await,
        Some(4029)
    );
}

/// The sum of the node's `/metrics` samples named `name` whose labels contain `label`.
async fn metric(app: &TestApp, name: &str, label: &str) -> u64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn rooms_open(app: &TestApp) -> u64 {
    metric(app, "echo_ws_rooms", "").await
}

async fn slow_consumer_closes(app: &TestApp) -> u64 {
    metric(app, "echo_ws_disconnects_total", "reason=\"slow_consumer\"").await
}

async fn error_frames_sent(app: &TestApp) -> u64 {
    metric(app, "echo_ws_frames_out_total", "type=\"error\"").await
}

/// A member removed from a chat leaves its room for good: once nobody else is subscribed, the
/// room stops (it used to stay counted, and so open, until the chat was deleted: two accounts
/// adding and removing each other could pile up rooms without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_frees_the_room_once_nobody_watches() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut chats = Vec::new();
    for _ in 0..3 {
        let chat = app.create_chat(&alice.token, "room").await;
        let id = chat["id"].as_str().unwrap().to_string();
        app.touch(&bob.token).await;
        app.add_member(&alice.token, &id, bob.id).await;
        chats.push(id);
    }
    let mut b = WsClient::connect(&app, &bob.token).await;
    for chat in &chats {
        b.subscribe(chat).await;
    }
    assert_eq!(rooms_open(&app).await, 3);
    for chat in &chats {
        let res = app
            .delete(&format!("/chats/{chat}/members/{}", bob.id), &alice.token)
            .await;
        assert_eq!(res.status(), 204);
        assert_eq!(b.next_of("unsubscribed").await["chat_id"], *chat);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while rooms_open(&app).await != 0 {
        assert!(
            Instant::now() < deadline,
            "{} rooms still open with nobody in them",
            rooms_open(&app).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The session is still usable, and subscribing again (after being added back) works.
    app.add_member(&alice.token, &chats[0], bob.id).await;
    b.subscribe(&chats[0]).await;
    assert_eq!(rooms_open(&app).await, 1);
}

/// A socket with a tiny receive buffer that subscribes to `chat` from its start and never
/// reads: once the chat's history is larger than the socket buffers and the outbound queue,
/// its replay stalls, waiting for the client.
async fn stalled_replay(app: &TestApp, token: &str, chat: &str) -> Raw {
    let mut ws = raw_socket(app, token, Some(4096)).await;
    let subscribe = json!({"type": "subscribe", "id": "s", "chat_id": chat, "since_seq": 0});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws
}

/// While a subscriber's replay waits for it to read, its room keeps the chat's new messages
/// for it, but no more than its outbound bound: past it the session is closed 4008 at once
/// (before, the room kept everything until the replay ended, up to ten seconds a frame). Both
/// when the stalled subscriber is alone in the room and when another member watches live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_replay_cannot_make_its_room_hold_the_chat_without_limit() {
    for someone_live in [false, true] {
        let app = spawn_app_with(Backend::Sqlite, &[("WS_OUTBOUND_QUEUE_BYTES", "65536")]).await;
        let (alice, bob) = (TestUser::new(), TestUser::new());
        let chat = app.create_chat(&alice.token, "busy").await;
        let chat = chat["id"].as_str().unwrap().to_string();
        app.touch(&bob.token).await;
        app.add_member(&alice.token, &chat, bob.id).await;
        let big = "h".repeat(30_000);
        for _ in 0..100 {
            app.post_message(&alice.token, &chat, &big).await;
        }
        let mut live = WsClient::connect(&app, &alice.token).await;
        if someone_live {
            live.subscribe(&chat).await;
        }
        // Bob asks for all of it and never reads: the replay stalls on his full socket.
        let _ws = stalled_replay(&app, &bob.token, &chat).await;
        assert_eq!(
            slow_consumer_closes(&app).await,
            0,
            "closed before any live traffic"
        );

        for _ in 0..5 {
            app.post_message(&alice.token, &chat, &big).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while slow_consumer_closes(&app).await == 0 {
            assert!(
                Instant::now() < deadline,
                "someone live: {someone_live}: the room still holds 150 KB for a 64 KiB session"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if someone_live {
            // The live member got every message and stays subscribed.
            for _ in 0..5 {
                assert_eq!(live.next_of("message").await["message"]["content"], big);
            }
        }
    }
}

/// A session takes its client's messages one at a time; while it is busy (here with a replay
/// the client does not read) the messages that wait for it are bounded like its outbound
/// queue. Past that they are refused with `rate_limited` instead of piling up in memory, to be
/// handled long after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_busy_session_are_bounded() {
    let app = spawn_app_with(Backend::Sqlite, &[("WS_OUTBOUND_QUEUE_BYTES", "262144")]).await;
    let alice = TestUser::new();
    let chat = app.create_chat(&alice.token, "history").await;
    let chat = chat["id"].as_str().unwrap().to_string();
    let big = "h".repeat(30_000);
    for _ in 0..200 {
        app.post_message(&alice.token, &chat, &big).await;
    }
    // 6 MB of history, more than the socket buffers and the queue hold: the replay stalls.
    let mut ws = stalled_replay(&app, &alice.token, &chat).await;
    let before = error_frames_sent(&app).await;
    let pad = "p".repeat(60_000);
    for i in 0..30 {
        let ping = json!({"type": "ping", "id": format!("p{i}"), "pad": pad});
        if ws.send(Message::text(ping.to_string())).await.is_err() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while error_frames_sent(&app).await == before {
        assert!(
            Instant::now() < deadline,
            "1.8 MB of requests were taken in behind a stalled replay, none refused"
        );

        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per-address REST limit: 429 with `Retry-After` and FastAPI's `detail`; loopback is exempt
/// by default, so the test makes nobody exempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requests_from_one_address_are_limited_with_429_and_retry_after() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_EXEMPT", "none"),
            ("IP_REST_RATE_PER_SEC", "1"),
            ("IP_REST_BURST", "5"),
        ],
    )
    .await;
    for i in 0..5 {
        assert_eq!(app.get("/", None).await.status(), 200, "request {i}");
    }
    let res = app.get("/", None).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "Too many requests"})
    );
    // Lying about the address does not help when no proxy is trusted.
    let res = app
        .client
        .get(app.url("/"))
        .header("x-forwarded-for", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "X-Forwarded-For from an untrusted peer");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get("/", None).await.status(), 200, "the bucket refills");
}

/// Behind a trusted proxy, each forwarded client has its own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_EXEMPT", "none"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("IP_REST_RATE_PER_SEC", "1"),
            ("IP_REST_BURST", "3"),
        ],
    )
    .await;
    let from = |ip: &'static str| {
        app.client
            .get(app.url("/"))
            .header("x-forwarded-for", ip)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(
        from("203.0.113.2").await.unwrap().status(),
        200,
        "another client behind the same proxy"
    );
}

/// Per-address WebSocket upgrade limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_from_one_address_are_limited() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_EXEMPT", "none"),
            ("IP_WS_CONNECT_RATE_PER_SEC", "1"),
            ("IP_WS_CONNECT_BURST", "2"),
        ],
    )
    .await;
    let alice = TestUser::new();
    let _a = WsClient::connect(&app, &alice.token).await;
    let _b = WsClient::connect(&app, &alice.token).await;
    match WsClient::try_connect(&app, &alice.token, None).await {
        common::ws::Connect::Refused(status) => assert_eq!(status, 429),
        common::ws::Connect::Open(_) => panic!("a third upgrade within the second was accepted"),
    }
}

/// Sends `head` (and `body`) on a raw connection and returns what the server answers, or
/// fails after `within`.
async fn raw_exchange(
    app: &TestApp,
    head: &str,
    body: &[u8],
    trickle: bool,
    within: Duration,
) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let read = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {
                assert!(
                    started.elapsed() < within,
                    "no answer within {within:?}: the server is still waiting"
                );
                if trickle {
                    // One more byte of a chunked body that never ends.
                    let _ = s.write_all(b"1\r\nx\r\n").await;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A `Content-Length` body that never completes gets 408 at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_gets_408() {
    let app = spawn_app_with(Backend::Sqlite, &[("HTTP_BODY_TIMEOUT_MS", "1000")]).await;
    let alice = TestUser::new();
    let head = format!(
        "POST /chats/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        alice.token
    );
    let answer = raw_exchange(&app, &head, b"{\"title\":", false, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer}");
}

/// A chunked body that trickles on for ever gets 408 at the deadline, not minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_that_never_ends_gets_408() {
    let app = spawn_app_with(Backend::Sqlite, &[("HTTP_BODY_TIMEOUT_MS", "1000")]).await;
    let alice = TestUser::new();
    let head = format!(
        "POST /chats/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        alice.token
    );
    let answer = raw_exchange(&app, &head, b"1\r\n{\r\n", true, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer}");
    // A body that arrives in time is untouched.
    let ok = app.create_chat(&alice.token, "in time").await;
    assert_eq!(ok["title"], "in time");
}

/// An upload may take long, but not stall: no byte for the idle limit gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_gets_408_after_the_idle_limit() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("HTTP_BODY_TIMEOUT_MS", "1000"),
            ("HTTP_BODY_IDLE_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let alice = TestUser::new();
    app.touch(&alice.token).await;
    let head = format!(
        "POST /api/v1/videos/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n",
        alice.token
    );
    let started = Instant::now();
    let answer = raw_exchange(
        &app,
        &head,
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\n",
        false,
        Duration::from_secs(8),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "uploads are held to the idle limit, not the JSON body deadline"
    );
}

/// A request head that never completes gets 408 (slowloris).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_completes_gets_408() {
    let app = spawn_app_with(Backend::Sqlite, &[("HTTP_HEADER_TIMEOUT_MS", "1000")]).await;
    let answer = raw_exchange(
        &app,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b"",
        false,
        Duration::from_secs(8),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer}");
}

/// RFC 6455 §4.2.2: a handshake with a version this server does not speak is refused with 426
/// and `Sec-WebSocket-Version: 13` (the version it does speak), not a bare 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_websocket_version_is_answered_426_with_version_13() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let alice = TestUser::new();
    let head = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        alice.token
    );
    let answer = raw_exchange(&app, &head, b"", false, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "answer: {answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13\r\n"),
        "answer: {answer}"
    );
}

/// RFC 6455 §7.1.1: once the close handshake is done the server ends the TCP connection at
/// once (it used to linger for about a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_close_handshake_the_server_ends_tcp_at_once() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    ws.send(Message::Close(None)).await.unwrap();
    let started = Instant::now();
    let mut code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Some(Ok(Message::Close(frame)))) => code = frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break,
        }
    }
    assert_eq!(code, Some(1000), "the server answered the close");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "TCP ended {:?} after the close",
        started.elapsed()
    );
}

/// A frame whose header declares more than the limit is refused (1009) from its header alone:
/// the server does not wait for, nor buffer, the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_declaring_a_huge_length_closes_1009_before_its_payload() {
    let app = spawn_app_with(Backend::Sqlite, &[("WS_MAX_FRAME_BYTES", "1024")]).await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    let mut head = vec![0x81, 0xFF];
    head.extend_from_slice(&(1u64 << 40).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    head.extend_from_slice(b"only the start");
    match ws.get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp.write_all(&head).await.unwrap(),
        _ => unreachable!("plain TCP"),
    }
    assert_eq!(
        close_code_of(&mut ws, Duration::from_secs(5)).await,
        Some(1009)
    );
}

/// A client frame as raw bytes: FIN, RSV bits and opcode in `first`, masked (as a client must)
/// unless `masked` is false.
fn raw_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mut out = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        let key = [0x37, 0xFA, 0x21, 0x3D];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// RFC 6455 §5 and §7.4: frames that break the framing rules are protocol errors. Each one
/// closes its socket with 1002 and ends the TCP connection; none of them disturbs the node, whose
/// next client is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_rfc_6455_close_with_1002() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let alice = TestUser::new();
    let close = |code: u16| code.to_be_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unmasked client frame", raw_frame(0x81, b"{}", false)),
        ("RSV1 without an extension", raw_frame(0xC1, b"{}", true)),
        ("a fragmented ping", raw_frame(0x09, b"x", true)),
        (
            "a continuation with nothing to continue",
            raw_frame(0x80, b"x", true),
        ),
        (
            "a new text message inside a fragmented one",
            [raw_frame(0x01, b"ab", true), raw_frame(0x81, b"cd", true)].concat(),
        ),
        ("reserved data opcode 3", raw_frame(0x83, b"", true)),
        ("reserved control opcode 11", raw_frame(0x8B, b"", true)),
        (
            "a close frame with a one-byte body",
            raw_frame(0x88, &[3], true),
        ),
        (
            "close code 1005 (never sent)",
            raw_frame(0x88, &close(1005), true),
        ),
        (
            "close code 999 (below the range)",
            raw_frame(0x88, &close(999), true),
        ),
        (
            "close code 5000 (above the range)",
            raw_frame(0x88, &close(5000), true),
        ),
    ];
    for (what, bytes) in cases {
        let mut ws = raw_socket(&app, &alice.token, None).await;
        match ws.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp.write_all(&bytes).await.unwrap(),
            _ => unreachable!("plain TCP"),
        }
        assert_eq!(
            close_code_of(&mut ws, Duration::from_secs(5)).await,
            Some(1002),
            "{what}"
        );
        let ended = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
        assert!(
            matches!(ended, Ok(None | Some(Err(_)))),
            "{what}: the connection stayed open"
        );
    }
    let mut ws = WsClient::connect(&app, &alice.token).await;
    let pong = ws.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
}

/// The node's heartbeat: a client that answers nothing (it does not read, so it sends no
/// pong) is closed with 1000 `heartbeat timeout` once silent for the interval + the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_heartbeat_timeout() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("WS_HEARTBEAT_MS", "200"), ("WS_CLIENT_TIMEOUT_MS", "200")],
    )
    .await;
    let alice = TestUser::new();
    let mut ws = raw_socket(&app, &alice.token, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("not closed"),
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break None,
        }
    };
    assert!(pings >= 1, "the server pinged first");
    assert_eq!(code, Some(1000));
}

/// An overloaded node sheds new sockets at once with 503 and `Retry-After`, instead of letting
/// them queue behind the setups it is already doing; the place frees once a setup ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_refuses_new_sockets_with_503_and_retry_after() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let app = spawn_app_with(Backend::Sqlite, &[("WS_MAX_PENDING_HANDSHAKES", "1")]).await;
    // Another writer holds the database, so the first upgrade waits in its setup (storing its
    // user's row) and fills the node's one place.
    let path = app.database_url.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut c = diesel::SqliteConnection::establish(&path).unwrap();
        c.batch_execute("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        c.batch_execute("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let waiting = TestUser::new();
    let port = app.port;
    let first =
        tokio::spawn(async move { WsClient::try_connect_port(port, &waiting.token, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let other = TestUser::new();
    let head = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        other.token
    );
    let answer = raw_exchange(&app, &head, b"", false, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 2"),
        "{answer}"
    );

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    match first.await.unwrap() {
        common::ws::Connect::Open(_) => {}
        common::ws::Connect::Refused(status) => panic!("the waiting upgrade failed: {status}"),
    }
    match WsClient::try_connect(&app, &other.token, None).await {
        common::ws::Connect::Open(_) => {}
        common::ws::Connect::Refused(status) => panic!("the place was not freed: {status}"),
    }
}
