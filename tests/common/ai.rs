//! Helpers for the AI reply tests: an app wired to the mock OpenAI server, request bodies in
//! the AI SDK's shapes, and reading streamed responses and stored replies.

use std::time::Duration;

use echo::db::messages;
use echo::db::models::Message;
use futures_util::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::openai_mock::MockOpenAi;
use super::{spawn_app_with, Backend, TestApp};

/// Starts an app whose AI provider is the production OpenAI client pointed at `mock`.
pub async fn spawn_ai_app(backend: Backend, mock: &MockOpenAi, extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(&str, &str)> = vec![
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_BASE_URL", mock.base_url.as_str()),
        ("AI_MODEL", "mock-model"),
        ("AI_SYSTEM_PROMPT", "You are a test assistant."),
        ("AI_RETRY_BASE_MS", "20"),
        ("AI_IDLE_TIMEOUT_MS", "5000"),
    ];
    env.extend_from_slice(extra);
    spawn_app_with(backend, &env).await
}

/// An AI SDK 4 `useChat` body whose last message is the user's `text`.
pub fn v4_body(chat_id: &str, text: &str) -> Value {
    json!({
        "id": chat_id,
        "messages": [
            {"id": "m0", "role": "user", "content": "earlier question"},
            {"id": "m1", "role": "assistant", "content": "earlier answer"},
            {"id": format!("u-{}", Uuid::new_v4()), "role": "user", "content": text,
             "parts": [{"type": "text", "text": text}]}
        ],
        "data": {}
    })
}

/// An AI SDK 5 `useChat` body whose last message is the user's `text`.
pub fn v5_body(chat_id: &str, text: &str) -> Value {
    json!({
        "id": chat_id,
        "messages": [
            {"id": format!("u-{}", Uuid::new_v4()), "role": "user",
             "parts": [{"type": "text", "text": text}]}
        ],
        "trigger": "submit-message"
    })
}

/// POSTs `body` to `path` as `token`.
pub async fn post_stream(
    app: &TestApp,
    path: &str,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// The whole body of a streamed response, as text.
pub async fn body_text(res: reqwest::Response) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(30), res.bytes())
        .await
        .expect("stream finished in time")
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

/// Reads a streamed body until it fails or ends: the text received, and whether it failed.
pub async fn body_until_error(res: reqwest::Response) -> (String, bool) {
    let mut stream = res.bytes_stream();
    let mut text = Vec::new();
    let failed = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("stream made progress")
        {
            Some(Ok(b)) => text.extend_from_slice(&b),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    (String::from_utf8_lossy(&text).into_owned(), failed)
}

/// The chat's stored messages, in `seq` order, read from the database.
pub async fn stored(app: &TestApp, chat_id: &str) -> Vec<Message> {
    let chat_id = Uuid::parse_str(chat_id).expect("chat id");
    let mut conn = app.state.db.conn().await.expect("db");
    messages::latest(&mut conn, chat_id, 1000)
        .await
        .expect("messages")
}

/// Waits until the chat has an assistant message (and no generation in flight); returns it.
pub async fn wait_for_reply(app: &TestApp, chat_id: &str) -> Message {
    let id = Uuid::parse_str(chat_id).expect("chat id");
    for _ in 0..400 {
        let idle = app.state.generations.in_chat(id).is_empty();
        if let Some(m) = stored(app, chat_id)
            .await
            .into_iter()
            .rev()
            .find(|m| m.is_from_ai)
        {
            if idle {
                return m;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no assistant reply was stored in chat {chat_id}");
}

/// Waits until no generation is in flight on the app's node.
pub async fn wait_idle(app: &TestApp) {
    for _ in 0..400 {
        if app.state.generations.in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("generations still in flight");
}

/// The `messageId` in the first line of a data stream.
pub fn data_message_id(body: &str) -> String {
    let first = body.lines().next().expect("a first line");
    let v: Value = serde_json::from_str(first.strip_prefix("f:").expect("f: part")).expect("json");
    v["messageId"].as_str().expect("messageId").to_string()
}
