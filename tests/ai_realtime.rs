//! AI replies seen over WebSocket: `prompt`, `cancel`, token fan-out to every watcher,
//! snapshots for late subscribers, REST callers going away, and many replies at once; the
//! provider is a real OpenAI-compatible server started by the test; on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ai::{body_text, post_stream, spawn_ai_app, stored, v4_body, wait_for_reply};
use common::openai_mock::{MockOpenAi, Reply, Step};
use common::ws::WsClient;
use common::{Backend, TestApp, TestUser};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// A chat owned by `owner` with `members` added.
async fn chat_with(app: &TestApp, owner: &TestUser, members: &[&TestUser]) -> String {
    let chat = app.create_chat(&owner.token, "ai room").await;
    let id = chat["id"].as_str().unwrap().to_string();
    for m in members {
        app.touch(&m.token).await;
        app.add_member(&owner.token, &id, m.id).await;
    }
    id
}

/// What a watcher saw of one generation.
#[derive(Debug, Default)]
struct Seen {
    snapshot: Option<Value>,
    tokens: Vec<(u64, String)>,
    /// `message` events seen meanwhile.
    messages: Vec<Value>,
    end: Value,
}

impl Seen {
    /// Snapshot text plus every token after it.
    fn text(&self) -> String {
        let mut text = self
            .snapshot
            .as_ref()
            .map(|s| s["text"].as_str().unwrap().to_string())
            .unwrap_or_default();
        for (_, d) in &self.tokens {
            text.push_str(d);
        }
        text
    }
}

/// Reads until the generation ends (`generation_finished` or `generation_failed`).
async fn watch(c: &mut WsClient, generation_id: Option<&str>) -> Seen {
    let mut seen = Seen::default();
    loop {
        let f = c.next().await;
        let mine = generation_id.is_none_or(|g| f["generation_id"] == g);
        match f["type"].as_str() {
            Some("generation_snapshot") if mine => seen.snapshot = Some(f),
            Some("token") if mine => seen.tokens.push((
                f["index"].as_u64().unwrap(),
                f["delta"].as_str().unwrap().to_string(),
            )),
            Some("message") => seen.messages.push(f),
            Some("generation_finished" | "generation_failed") if mine => {
                seen.end = f;
                return seen;
            }
            _ => {}
        }
    }
}

async fn a_prompt_streams_identical_tokens_to_every_watcher_and_stores_the_reply(backend: Backend) {
    let reply = Reply::numbered(40, Duration::from_millis(5));
    let mock = MockOpenAi::start(Step::Reply(reply.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    let mut b = WsClient::connect(&app, &bob.token).await;
    a.subscribe(&chat).await;
    b.subscribe(&chat).await;

    let ack = a
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": "Count"}),
            "p1",
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1);
    let generation_id = ack["generation_id"]
        .as_str()
        .expect("generation_id")
        .to_string();

    let mut seen = Vec::new();
    for c in [&mut a, &mut b] {
        let user_msg = c.next_of("message").await;
        assert_eq!(user_msg["message"]["content"], "Count");
        let started = c.next_of("generation_started").await;
        assert_eq!(started["generation_id"], generation_id.as_str());
        assert_eq!(started["chat_id"], chat.as_str());
        assert_eq!(started["model"], "mock-model");
        let s = watch(c, Some(&generation_id)).await;
        assert_eq!(s.end["type"], "generation_finished", "{}", s.end);
        assert_eq!(s.end["message"]["id"], started["message_id"]);
        seen.push(s);
    }
    let indexes: Vec<u64> = seen[0].tokens.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, (0..40).collect::<Vec<u64>>());
    assert_eq!(
        seen[0].tokens, seen[1].tokens,
        "both watchers saw the same tokens"
    );
    let end = &seen[0].end;
    assert_eq!(end["finish_reason"], "stop");
    assert_eq!(end["message"]["content"], reply.text());
    assert_eq!(end["message"]["seq"], 2);
    assert_eq!(end["message"]["role"], "assistant");
    assert_eq!(end["message"]["is_from_ai"], true);
    assert_eq!(end["message"]["user_id"], Value::Null);
    assert_eq!(
        end["usage"],
        json!({"prompt_tokens": 17, "completion_tokens": 40, "total_tokens": 57})
    );
    assert_eq!(seen[0].text(), reply.text());
    // The stored reply is also published as a `message`, before `generation_finished`.
    for s in &seen {
        assert_eq!(s.messages.len(), 1, "{:?}", s.messages);
        assert_eq!(s.messages[0]["message"]["seq"], 2);
        assert_eq!(s.messages[0]["message"]["id"], s.end["message"]["id"]);
    }
    let msgs = stored(&app, &chat).await;
    assert_eq!(msgs[1].content, reply.text());
    assert_eq!(msgs[1].finish_reason.as_deref(), Some("stop"));
}

async fn prompt_and_cancel_refuse_what_they_must(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&["ok"])));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let (alice, mallory) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    let e = a
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": "x"}),
            "p",
        )
        .await;
    assert_eq!(e["code"], "bad_request", "not subscribed: {e}");
    a.subscribe(&chat).await;
    let e = a
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": ""}),
            "p2",
        )
        .await;
    assert_eq!(e["code"], "bad_request", "empty: {e}");
    let e = a
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": "x", "model": "gpt-9"}),
            "p3",
        )
        .await;
    assert_eq!(e["code"], "bad_request", "unknown model: {e}");
    let e = a
        .request(
            json!({"type": "cancel", "generation_id": uuid::Uuid::new_v4()}),
            "c",
        )
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    assert!(stored(&app, &chat).await.is_empty());

    // Someone outside the chat cannot cancel its reply.
    let slow = Reply::numbered(100, Duration::from_millis(20));
    mock.script([Step::Reply(slow)]);
    let ack = a
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": "go"}),
            "p4",
        )
        .await;
    let generation_id = ack["generation_id"].clone();
    app.touch(&mallory.token).await;
    let mut m = WsClient::connect(&app, &mallory.token).await;
    let e = m
        .request(
            json!({"type": "cancel", "generation_id": generation_id}),
            "c2",
        )
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    let ack = a
        .request(
            json!({"type": "cancel", "generation_id": generation_id}),
            "c3",
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

async fn cancel_stops_the_reply_and_stores_what_was_generated(backend: Backend) {
    let full = Reply::numbered(200, Duration::from_millis(20));
    let mock = MockOpenAi::start(Step::Reply(full.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    a.subscribe(&chat).await;
    let ack = a
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": "Go on"}),
            "p",
        )
        .await;
    let generation_id = ack["generation_id"].as_str().unwrap().to_string();
    let mut tokens = Vec::new();
    while tokens.len() < 3 {
        let t = a.next_of("token").await;
        tokens.push(t["delta"].as_str().unwrap().to_string());
    }
    a.send(json!({"type": "cancel", "id": "c", "generation_id": generation_id}))
        .await;
    let mut acked = false;
    let end = loop {
        let f = a.next().await;
        match f["type"].as_str() {
            Some("ack") if f["id"] == "c" => acked = true,
            Some("token") => tokens.push(f["delta"].as_str().unwrap().to_string()),
            Some("generation_finished") => break f,
            Some("generation_failed") => panic!("cancel is not a failure: {f}"),
            _ => {}
        }
    };
    let acked = acked || a.next_of("ack").await["id"] == "c";
    assert!(acked, "cancel is acknowledged");
    assert_eq!(end["finish_reason"], "cancelled");
    let content = end["message"]["content"].as_str().unwrap();
    assert_eq!(
        content,
        tokens.concat(),
        "the stored reply is exactly what was streamed"
    );
    assert!(
        tokens.len() < 200,
        "it stopped early ({} tokens)",
        tokens.len()
    );
    assert!(full.text().starts_with(content));
    assert_eq!(end["usage"]["completion_tokens"], tokens.len());
    let reply = wait_for_reply(&app, &chat).await;
    assert_eq!(reply.content, content);
    assert_eq!(reply.finish_reason.as_deref(), Some("cancelled"));
}

/// Starts `POST /chat` as `user`, reads until the first token, and drops the connection.
async fn start_and_hang_up(app: &TestApp, user: &TestUser, chat: &str) {
    let res = post_stream(app, "/chat", &user.token, &v4_body(chat, "Tell me a story")).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\n0:") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a token in time")
            .expect("the stream is open")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
}

async fn a_rest_caller_hanging_up_with_nobody_watching_cancels_the_reply(backend: Backend) {
    let full = Reply::numbered(200, Duration::from_millis(20));
    let mock = MockOpenAi::start(Step::Reply(full.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    start_and_hang_up(&app, &alice, &chat).await;
    let reply = wait_for_reply(&app, &chat).await;
    assert_eq!(reply.finish_reason.as_deref(), Some("cancelled"));
    assert!(!reply.content.is_empty());
    assert!(reply.content.len() < full.text().len(), "{}", reply.content);
    assert!(full.text().starts_with(&reply.content));
}

async fn a_rest_caller_hanging_up_while_someone_watches_lets_the_reply_finish(backend: Backend) {
    let full = Reply::numbered(60, Duration::from_millis(10));
    let mock = MockOpenAi::start(Step::Reply(full.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let mut b = WsClient::connect(&app, &bob.token).await;
    b.subscribe(&chat).await;
    start_and_hang_up(&app, &alice, &chat).await;
    let seen = watch(&mut b, None).await;
    assert_eq!(seen.end["type"], "generation_finished");
    assert_eq!(seen.end["finish_reason"], "stop");
    assert_eq!(seen.end["message"]["content"], full.text());
    assert_eq!(seen.text(), full.text());
    let reply = wait_for_reply(&app, &chat).await;
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
}

async fn a_late_subscriber_gets_a_snapshot_then_the_rest(backend: Backend) {
    let full = Reply::numbered(40, Duration::from_millis(30));
    let mock = MockOpenAi::start(Step::Reply(full.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&app, &alice, &[&bob]).await;
    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&chat, "Count slowly")).await;
    let rest = tokio::spawn(body_text(res));
    let chat_id = uuid::Uuid::parse_str(&chat).unwrap();
    for _ in 0..300 {
        let gens = app.state.generations.in_chat(chat_id);
        if gens.first().is_some_and(|g| g.snapshot().index >= 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut b = WsClient::connect(&app, &bob.token).await;
    b.send(json!({"type": "subscribe", "id": "s", "chat_id": chat}))
        .await;
    // The snapshot comes before `subscribed`.
    let mut snapshot = None;
    loop {
        let f = b.next().await;
        match f["type"].as_str() {
            Some("generation_snapshot") => snapshot = Some(f),
            Some("subscribed") => break,
            Some("token") => panic!("a token before subscribed: {f}"),
            _ => {}
        }
    }
    let snapshot = snapshot.expect("a generation_snapshot before subscribed");
    let k = snapshot["index"].as_i64().unwrap();
    assert!(k >= 5, "{snapshot}");
    assert_eq!(snapshot["chat_id"], chat.as_str());
    let mut seen = watch(&mut b, snapshot["generation_id"].as_str()).await;
    seen.snapshot = Some(snapshot);
    let indexes: Vec<u64> = seen.tokens.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indexes,
        ((k as u64 + 1)..40).collect::<Vec<u64>>(),
        "tokens continue right after the snapshot"
    );
    assert_eq!(seen.end["type"], "generation_finished");
    assert_eq!(seen.text(), full.text());
    assert_eq!(seen.end["message"]["content"], full.text());
    rest.await.unwrap();
}

async fn a_hundred_concurrent_replies_on_one_node_all_complete_and_are_stored(backend: Backend) {
    let reply = Reply::numbered(20, Duration::from_millis(10));
    let mock = MockOpenAi::start(Step::Reply(reply.clone()));
    let app = spawn_ai_app(
        backend,
        &mock,
        &[
            ("AI_MAX_CONCURRENT_PER_NODE", "200"),
            ("AI_MAX_CONCURRENT_PER_USER", "100"),
            ("DATABASE_POOL_SIZE", "16"),
        ],
    )
    .await;
    let alice = TestUser::new();
    let mut chats = Vec::new();
    for _ in 0..100 {
        chats.push(chat_with(&app, &alice, &[]).await);
    }
    let runs = chats.iter().map(|chat| {
        let app = &app;
        let token = alice.token.clone();
        async move {
            let res = post_stream(app, "/chat?protocol=text", &token, &v4_body(chat, "Go")).await;
            assert_eq!(res.status(), 200);
            body_text(res).await
        }
    });
    let bodies = futures_util::future::join_all(runs).await;
    for body in &bodies {
        assert_eq!(body, &reply.text());
    }
    assert_eq!(mock.requests().len(), 100);
    for chat in &chats {
        let msgs = stored(&app, chat).await;
        assert_eq!(msgs.len(), 2, "{chat}");
        assert_eq!(msgs[1].content, reply.text());
        assert_eq!(msgs[1].finish_reason.as_deref(), Some("stop"));
    }
    assert_eq!(app.state.generations.in_flight(), 0);
}

async fn a_node_shutting_down_stores_its_in_flight_replies_as_cancelled(backend: Backend) {
    let full = Reply::numbered(200, Duration::from_millis(20));
    let mock = MockOpenAi::start(Step::Reply(full.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = chat_with(&app, &alice, &[]).await;
    let mut a = WsClient::connect(&app, &alice.token).await;
    a.subscribe(&chat).await;
    a.request(
        json!({"type": "prompt", "chat_id": chat, "content": "Go"}),
        "p",
    )
    .await;
    for _ in 0..3 {
        a.next_of("token").await;
    }
    let url = app.database_url.clone();
    app.stop().await;
    // The watcher hears how the reply ended before the node closes its socket.
    let mut finished = None;
    let code = loop {
        match a.next_or_close().await {
            Ok(f) if f["type"] == "generation_finished" => finished = Some(f),
            Ok(_) => {}
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(1001));
    let finished = finished.expect("generation_finished before the close");
    assert_eq!(finished["finish_reason"], "cancelled");
    let again = common::spawn_on_database(&url, &[]).await;
    let reply = stored(&again, &chat)
        .await
        .pop()
        .expect("the reply was stored");
    assert!(reply.is_from_ai);
    assert_eq!(reply.finish_reason.as_deref(), Some("cancelled"));
    assert_eq!(
        reply.content,
        finished["message"]["content"].as_str().unwrap()
    );
    assert!(full.text().starts_with(&reply.content) && !reply.content.is_empty());
}

on_both_backends!(
    a_prompt_streams_identical_tokens_to_every_watcher_and_stores_the_reply,
    prompt_and_cancel_refuse_what_they_must,
    cancel_stops_the_reply_and_stores_what_was_generated,
    a_rest_caller_hanging_up_with_nobody_watching_cancels_the_reply,
    a_rest_caller_hanging_up_while_someone_watches_lets_the_reply_finish,
    a_late_subscriber_gets_a_snapshot_then_the_rest,
    a_hundred_concurrent_replies_on_one_node_all_complete_and_are_stored,
    a_node_shutting_down_stores_its_in_flight_replies_as_cancelled,
);
