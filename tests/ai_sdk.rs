//! The Vercel AI SDK's own parsers read Echo's live streams: a Node script (tests/node) using
//! the `ai` package (5.x for the UI message stream and `useChat`'s transport, 4.x for the data
//! stream) prints what it assembled, and the test compares it with what was stored. The npm
//! packages are installed here with `npm ci` from the pinned lockfile; without Node.js or the
//! packages these tests fail (they never skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ai::{body_text, post_stream, spawn_ai_app, stored, v4_body, v5_body};
use common::node::{ensure_node_packages, node_dir};
use common::openai_mock::{MockOpenAi, Reply, Step};
use common::{Backend, TestApp, TestUser};
use serde_json::{json, Value};

const TOKENS: [&str; 4] = ["Héllo", ", \"friend\"", "!\n", "Ünïcode ✓"];

/// Runs tests/node/read-stream.mjs and returns the JSON it printed.
async fn read_with_ai_sdk(args: &[&str]) -> Value {
    ensure_node_packages();
    let script = node_dir().join("read-stream.mjs");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(&script)
            .args(args)
            .current_dir(node_dir())
            .output(),
    )
    .await
    .expect("the AI SDK script finished in time")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the AI SDK script failed ({:?}):\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad output {stdout:?}: {e}"))
}

async fn new_chat(app: &TestApp, user: &TestUser) -> String {
    app.create_chat(&user.token, "sdk").await["id"]
        .as_str()
        .expect("chat id")
        .to_string()
}

async fn the_ai_sdk_5_parsers_assemble_the_ui_message_stream(backend: Backend) {
    let reply = Reply::of(&TOKENS);
    let mock = MockOpenAi::start(Step::Reply(reply.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let body = v5_body(&chat, "Say hello").to_string();
    let url = app.url("/chat");
    let got = read_with_ai_sdk(&["ui", &url, &alice.token, &body]).await;
    let stored_reply = stored(&app, &chat).await.pop().expect("reply");
    assert_eq!(got["text"], reply.text());
    assert_eq!(got["text"], stored_reply.content.as_str());
    assert_eq!(got["messageId"], stored_reply.id.0.to_string());
    assert_eq!(got["textStates"], json!(["done"]));
    assert_eq!(got["partTypes"], json!(["step-start", "text"]));
    assert_eq!(got["errors"], json!([]));

    // A reply that breaks part-way: the SDK gets the partial text and the error part.
    mock.script([Step::BreakAfter(Reply::of(&["Partial", " answer"]))]);
    let body = v5_body(&chat, "again").to_string();
    let got = read_with_ai_sdk(&["ui", &url, &alice.token, &body]).await;
    assert_eq!(got["text"], "Partial answer");
    assert_eq!(
        got["errors"],
        json!(["The connection to the AI provider broke"])
    );
}

async fn use_chat_s_transport_sends_reads_and_resumes_replies(backend: Backend) {
    let reply = Reply::of(&TOKENS);
    let mock = MockOpenAi::start(Step::Reply(reply.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let api = app.url("/chat");
    let got = read_with_ai_sdk(&["ui-chat", &api, &alice.token, &chat, "Hi there"]).await;
    assert_eq!(got["text"], reply.text());
    let msgs = stored(&app, &chat).await;
    assert_eq!(msgs[0].content, "Hi there");
    assert_eq!(got["messageId"], msgs[1].id.0.to_string());

    // Nothing in flight: reconnectToStream gets 204 and reports no stream.
    let got = read_with_ai_sdk(&["ui-resume", &api, &alice.token, &chat]).await;
    assert_eq!(got["resumed"], false);

    // A reply in flight: the SDK's reconnect reads the text so far, then the rest.
    // Three seconds of reply: room for the SDK script to start on a loaded machine.
    let slow = Reply::numbered(75, Duration::from_millis(40));
    mock.script([Step::Reply(slow.clone())]);
    let res = post_stream(&app, "/chat", &alice.token, &v5_body(&chat, "Count")).await;
    let original = tokio::spawn(body_text(res));
    let chat_id = uuid::Uuid::parse_str(&chat).unwrap();
    for _ in 0..300 {
        let gens = app.state.generations.in_chat(chat_id);
        if gens.first().is_some_and(|g| g.snapshot().index >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = read_with_ai_sdk(&["ui-resume", &api, &alice.token, &chat]).await;
    assert_eq!(got["resumed"], true);
    assert_eq!(got["text"], slow.text());
    assert_eq!(got["textStates"], json!(["done"]));
    original.await.unwrap();
    assert_eq!(
        got["messageId"],
        stored(&app, &chat).await[3].id.0.to_string()
    );
}

async fn the_ai_sdk_4_data_stream_parser_assembles_the_data_stream(backend: Backend) {
    let reply = Reply::of(&TOKENS);
    let mock = MockOpenAi::start(Step::Reply(reply.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let url = app.url("/chat");
    let body = v4_body(&chat, "Say hello").to_string();
    let got = read_with_ai_sdk(&["data", &url, &alice.token, &body]).await;
    let stored_reply = stored(&app, &chat).await.pop().expect("reply");
    assert_eq!(got["text"], reply.text());
    assert_eq!(got["messageId"], stored_reply.id.0.to_string());
    assert_eq!(got["finishReason"], "stop");
    assert_eq!(got["stepFinishReason"], "stop");
    assert_eq!(got["isContinued"], false);
    assert_eq!(
        got["usage"],
        json!({"promptTokens": 17, "completionTokens": 4})
    );
    assert_eq!(got["errors"], json!([]));

    // `POST /stream-message` speaks the same data stream by default.
    let url = app.url("/stream-message");
    let body = json!({"content": "More", "chat_id": chat}).to_string();
    let got = read_with_ai_sdk(&["data", &url, &alice.token, &body]).await;
    assert_eq!(got["text"], reply.text());

    // A reply that breaks part-way: the partial text, then the `3:` error part.
    mock.script([Step::BreakAfter(Reply::of(&["Partial", " answer"]))]);
    let url = app.url("/chat");
    let body = v4_body(&chat, "again").to_string();
    let got = read_with_ai_sdk(&["data", &url, &alice.token, &body]).await;
    assert_eq!(got["text"], "Partial answer");
    assert_eq!(
        got["errors"],
        json!(["The connection to the AI provider broke"])
    );
    assert_eq!(got["finishReason"], Value::Null);
}

on_both_backends!(
    the_ai_sdk_5_parsers_assemble_the_ui_message_stream,
    use_chat_s_transport_sends_reads_and_resumes_replies,
    the_ai_sdk_4_data_stream_parser_assembles_the_data_stream,
);
