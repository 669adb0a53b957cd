//! The harness itself: an app starts on each backend and serves an authenticated round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{spawn_app, Backend, TestUser};

async fn a_user_creates_a_chat_and_posts_a_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = app.create_chat(&alice.token, "hello").await;
    let chat_id = chat["id"].as_str().unwrap();
    let msg = app.post_message(&alice.token, chat_id, "hi there").await;
    assert_eq!(msg["seq"], 1);
    assert_eq!(msg["user_id"], alice.id.to_string());
    let list: serde_json::Value = app
        .get(&format!("/chats/{chat_id}/messages/"), Some(&alice.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["content"], "hi there");
}

on_both_backends!(a_user_creates_a_chat_and_posts_a_message);
