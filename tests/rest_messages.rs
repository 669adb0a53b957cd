//! `POST /messages/` and `GET /chats/{chat_id}/messages/`: shapes, ordering, pagination,
//! validation, body limits, concurrency and idempotent retries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    assert_detail, assert_utc_timestamp, assert_validation, keys, spawn_app, spawn_app_with,
    Backend, TestApp, TestUser,
};
use futures_util::future::join_all;
use serde_json::{json, Value};
use uuid::Uuid;

const MESSAGE_KEYS: [&str; 8] = [
    "chat_id",
    "content",
    "created_at",
    "id",
    "is_from_ai",
    "role",
    "seq",
    "user_id",
];

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("JSON body")
}

/// A new user (already known to the server) with a chat of their own.
async fn user_with_chat(app: &TestApp) -> (TestUser, String) {
    let user = TestUser::new();
    let chat = app.create_chat(&user.token, "messages").await;
    (user, chat["id"].as_str().unwrap().to_string())
}

async fn messages(app: &TestApp, token: &str, chat_id: &str, query: &str) -> Vec<Value> {
    let res = app
        .get(&format!("/chats/{chat_id}/messages/{query}"), Some(token))
        .await;
    assert_eq!(res.status(), 200, "GET messages {query}");
    body(res).await.as_array().expect("a list").clone()
}

fn seqs(msgs: &[Value]) -> Vec<i64> {
    msgs.iter().map(|m| m["seq"].as_i64().unwrap()).collect()
}

async fn post_raw(app: &TestApp, token: &str, content_type: &str, raw: &str) -> reqwest::Response {
    app.client
        .post(app.url("/messages/"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(raw.to_string())
        .send()
        .await
        .unwrap()
}

async fn posting_a_message_returns_it_in_full(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let res = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "Hello, world", "chat_id": chat_id}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let msg = body(res).await;
    assert_eq!(keys(&msg), MESSAGE_KEYS, "MessageResponse fields");
    Uuid::parse_str(msg["id"].as_str().unwrap()).expect("id is a UUID");
    assert_eq!(msg["chat_id"], chat_id);
    assert_eq!(msg["content"], "Hello, world");
    assert_eq!(msg["is_from_ai"], false);
    assert_eq!(msg["role"], "user");
    assert_eq!(msg["user_id"], alice.id.to_string());
    assert_eq!(msg["seq"], 1);
    assert_utc_timestamp(&msg["created_at"], "created_at");

    let listed = messages(&app, &alice.token, &chat_id, "").await;
    assert_eq!(listed, vec![msg], "the list shows the same message");
}

/// FastAPI models ignore fields they do not declare; legacy clients send some.
async fn unknown_fields_in_a_message_are_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let res = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "hi", "chat_id": chat_id, "role": "system", "extra": {"a": 1}}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let msg = body(res).await;
    assert_eq!(
        msg["role"], "user",
        "role comes from is_from_ai, not the body"
    );
    assert_eq!(keys(&msg), MESSAGE_KEYS);
}

async fn an_ai_message_is_stored_as_the_assistants(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let res = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "I am a model", "chat_id": chat_id, "is_from_ai": true}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let msg = body(res).await;
    assert_eq!(msg["is_from_ai"], true);
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["user_id"], Value::Null);
}

async fn unicode_content_is_stored_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let text = "Grüße 👋 — 你好\n\"quoted\" \\ tab\t";
    let msg = app.post_message(&alice.token, &chat_id, text).await;
    assert_eq!(msg["content"], text);
    let listed = messages(&app, &alice.token, &chat_id, "").await;
    assert_eq!(listed[0]["content"], text);
}

async fn messages_are_numbered_from_one_per_chat(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, first) = user_with_chat(&app).await;
    let second = app.create_chat(&alice.token, "other").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for expected in 1..=3 {
        let msg = app.post_message(&alice.token, &first, "x").await;
        assert_eq!(msg["seq"], expected);
    }
    let msg = app.post_message(&alice.token, &second, "y").await;
    assert_eq!(msg["seq"], 1, "each chat counts on its own");
}

async fn posting_into_a_missing_chat_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _) = user_with_chat(&app).await;
    let res = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "hi", "chat_id": Uuid::new_v4()}),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "POST into missing chat").await;
    let res = app
        .get(
            &format!("/chats/{}/messages/", Uuid::new_v4()),
            Some(&alice.token),
        )
        .await;
    assert_detail(res, 404, "Chat not found", "GET messages of missing chat").await;
}

async fn the_message_list_pages_with_skip_limit_and_seq_bounds(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    for i in 1..=10 {
        app.post_message(&alice.token, &chat_id, &format!("m{i}"))
            .await;
    }
    let cases: [(&str, Vec<i64>); 9] = [
        ("", (1..=10).collect()),
        ("?limit=3", vec![1, 2, 3]),
        ("?skip=2&limit=3", vec![3, 4, 5]),
        ("?skip=8", vec![9, 10]),
        ("?skip=10", vec![]),
        ("?after_seq=7", vec![8, 9, 10]),
        ("?before_seq=4", vec![1, 2, 3]),
        ("?after_seq=2&before_seq=6", vec![3, 4, 5]),
        ("?after_seq=2&limit=2&skip=1", vec![4, 5]),
    ];
    for (query, expected) in cases {
        let got = messages(&app, &alice.token, &chat_id, query).await;
        assert_eq!(seqs(&got), expected, "GET messages{query}");
    }
    let got = messages(&app, &alice.token, &chat_id, "?limit=2").await;
    assert_eq!(got[0]["content"], "m1");
    assert_eq!(got[1]["content"], "m2");
}

async fn the_message_list_returns_fifty_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    for i in 1..=55 {
        app.post_message(&alice.token, &chat_id, &format!("m{i}"))
            .await;
    }
    let got = messages(&app, &alice.token, &chat_id, "").await;
    assert_eq!(seqs(&got), (1..=50).collect::<Vec<i64>>());
    let got = messages(&app, &alice.token, &chat_id, "?limit=100").await;
    assert_eq!(seqs(&got), (1..=55).collect::<Vec<i64>>());
    let got = messages(&app, &alice.token, &chat_id, "?after_seq=50").await;
    assert_eq!(seqs(&got), vec![51, 52, 53, 54, 55]);
}

async fn the_message_list_refuses_out_of_range_pagination(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let cases = [
        ("?limit=0", json!(["query", "limit"]), "greater_than_equal"),
        ("?limit=101", json!(["query", "limit"]), "less_than_equal"),
        ("?skip=-1", json!(["query", "skip"]), "greater_than_equal"),
        ("?skip=x", json!(["query", "skip"]), "int_parsing"),
        (
            "?after_seq=abc",
            json!(["query", "after_seq"]),
            "int_parsing",
        ),
        (
            "?before_seq=abc",
            json!(["query", "before_seq"]),
            "int_parsing",
        ),
    ];
    for (query, loc, kind) in cases {
        let res = app
            .get(
                &format!("/chats/{chat_id}/messages/{query}"),
                Some(&alice.token),
            )
            .await;
        assert_validation(res, loc, kind, query).await;
    }
}

async fn both_pagination_errors_are_reported_together(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let res = app
        .get(
            &format!("/chats/{chat_id}/messages/?skip=-1&limit=0"),
            Some(&alice.token),
        )
        .await;
    let body = assert_validation(res, json!(["query", "skip"]), "greater_than_equal", "both").await;
    let locs: Vec<&Value> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["loc"])
        .collect();
    assert!(
        locs.contains(&&json!(["query", "limit"])),
        "limit also reported: {body}"
    );
}

async fn a_message_without_content_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let res = app
        .post("/messages/", &alice.token, &json!({"chat_id": chat_id}))
        .await;
    let body = assert_validation(res, json!(["body", "content"]), "missing", "no content").await;
    assert_eq!(body["detail"][0]["msg"], "Field required");
    let res = app
        .post("/messages/", &alice.token, &json!({"content": "orphan"}))
        .await;
    assert_validation(res, json!(["body", "chat_id"]), "missing", "no chat_id").await;
    assert!(messages(&app, &alice.token, &chat_id, "").await.is_empty());
}

async fn ill_typed_message_fields_are_validation_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let cases = [
        (
            json!({"content": 42, "chat_id": chat_id}),
            json!(["body", "content"]),
            "string_type",
        ),
        (
            json!({"content": null, "chat_id": chat_id}),
            json!(["body", "content"]),
            "string_type",
        ),
        (
            json!({"content": "x", "chat_id": "not-a-uuid"}),
            json!(["body", "chat_id"]),
            "uuid_parsing",
        ),
        (
            json!({"content": "x", "chat_id": chat_id, "client_msg_id": "nope"}),
            json!(["body", "client_msg_id"]),
            "uuid_parsing",
        ),
        (
            json!({"content": "x", "chat_id": chat_id, "is_from_ai": "maybe"}),
            json!(["body", "is_from_ai"]),
            "bool_type",
        ),
    ];
    for (sent, loc, kind) in cases {
        let res = app.post("/messages/", &alice.token, &sent).await;
        assert_validation(res, loc, kind, &sent.to_string()).await;
    }
    assert!(
        messages(&app, &alice.token, &chat_id, "").await.is_empty(),
        "nothing stored"
    );
}

async fn malformed_json_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let raw = format!("{{\"content\": \"x\", \"chat_id\": \"{chat_id}\"");
    let res = post_raw(&app, &alice.token, "application/json", &raw).await;
    assert_eq!(res.status(), 422);
    let body = body(res).await;
    let issue = &body["detail"][0];
    assert_eq!(issue["type"], "json_invalid", "{body}");
    assert_eq!(issue["loc"][0], "body", "{body}");
    assert!(issue["msg"].is_string());
    let res = post_raw(&app, &alice.token, "application/json", "{not json}").await;
    assert_eq!(body_type(res).await, "json_invalid");
}

async fn body_type(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 422);
    let body = body(res).await;
    body["detail"][0]["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn an_empty_body_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, _) = user_with_chat(&app).await;
    let res = post_raw(&app, &alice.token, "application/json", "").await;
    let body = assert_validation(res, json!(["body"]), "missing", "empty body").await;
    assert_eq!(body["detail"][0]["msg"], "Field required");
}

async fn a_body_over_the_size_limit_is_refused_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAX_JSON_BYTES", "1024")]).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let res = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "x".repeat(4096), "chat_id": chat_id}),
        )
        .await;
    assert_eq!(res.status(), 413);
    let body = body(res).await;
    assert!(
        body["detail"].is_string(),
        "413 body is {{\"detail\": ...}}: {body}"
    );
    assert!(
        messages(&app, &alice.token, &chat_id, "").await.is_empty(),
        "nothing stored"
    );
    // A body under the limit still goes through.
    let msg = app
        .post_message(&alice.token, &chat_id, &"y".repeat(500))
        .await;
    assert_eq!(msg["seq"], 1, "the refused message took no seq");
}

async fn fifty_concurrent_posts_get_seqs_one_to_fifty(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let posts = (1..=50).map(|i| {
        let client = app.client.clone();
        let url = app.url("/messages/");
        let token = alice.token.clone();
        let chat_id = chat_id.clone();
        tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"content": format!("concurrent {i}"), "chat_id": chat_id}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201, "concurrent post {i}");
            res.json::<Value>().await.unwrap()
        })
    });
    let results: Vec<Value> = join_all(posts)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let mut got = seqs(&results);
    got.sort_unstable();
    assert_eq!(got, (1..=50).collect::<Vec<i64>>(), "no gap, no duplicate");

    let listed = messages(&app, &alice.token, &chat_id, "?limit=100").await;
    assert_eq!(seqs(&listed), (1..=50).collect::<Vec<i64>>());
    let mut contents: Vec<String> = listed
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    contents.sort();
    let mut expected: Vec<String> = (1..=50).map(|i| format!("concurrent {i}")).collect();
    expected.sort();
    assert_eq!(contents, expected, "every post stored once");
    // Each response's seq is the one stored for that content.
    for r in &results {
        let stored = &listed[(r["seq"].as_i64().unwrap() - 1) as usize];
        assert_eq!(stored["id"], r["id"]);
        assert_eq!(stored["content"], r["content"]);
    }

    let next = app
        .post_message(&alice.token, &chat_id, "after the burst")
        .await;
    assert_eq!(next["seq"], 51, "the chat's last seq is 50");
}

async fn a_retried_client_msg_id_stores_the_message_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let key = Uuid::new_v4();
    let sent = json!({"content": "exactly once", "chat_id": chat_id, "client_msg_id": key});
    let first = app.post("/messages/", &alice.token, &sent).await;
    assert_eq!(first.status(), 201);
    let first = body(first).await;
    assert_eq!(keys(&first), MESSAGE_KEYS, "client_msg_id is not echoed");
    let retry = app.post("/messages/", &alice.token, &sent).await;
    assert!(
        retry.status().is_success(),
        "retry answers {}",
        retry.status()
    );
    let retry = body(retry).await;
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["seq"], first["seq"]);
    assert_eq!(retry["content"], "exactly once");
    assert_eq!(messages(&app, &alice.token, &chat_id, "").await.len(), 1);

    let other = app
        .post(
            "/messages/",
            &alice.token,
            &json!({"content": "exactly once", "chat_id": chat_id, "client_msg_id": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(other.status(), 201);
    let other = body(other).await;
    assert_ne!(other["id"], first["id"]);
    assert_eq!(other["seq"], 2, "the retry took no seq");
    assert_eq!(messages(&app, &alice.token, &chat_id, "").await.len(), 2);
}

async fn ten_concurrent_posts_with_one_client_msg_id_store_one_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let key = Uuid::new_v4();
    let posts = (0..10).map(|_| {
        let client = app.client.clone();
        let url = app.url("/messages/");
        let token = alice.token.clone();
        let sent = json!({"content": "once", "chat_id": chat_id, "client_msg_id": key});
        tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(token)
                .json(&sent)
                .send()
                .await
                .unwrap();
            assert!(
                res.status().is_success(),
                "concurrent retry answers {}",
                res.status()
            );
            res.json::<Value>().await.unwrap()
        })
    });
    let results: Vec<Value> = join_all(posts)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    for r in &results {
        assert_eq!(
            r["id"], results[0]["id"],
            "every answer is the same message"
        );
        assert_eq!(r["seq"], 1);
    }
    let listed = messages(&app, &alice.token, &chat_id, "").await;
    assert_eq!(listed.len(), 1, "stored exactly once");
    assert_eq!(listed[0]["id"], results[0]["id"]);
    let next = app.post_message(&alice.token, &chat_id, "next").await;
    assert_eq!(next["seq"], 2, "no seq was lost to the retries");
}

async fn a_member_posts_into_a_shared_chat_under_their_own_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, chat_id) = user_with_chat(&app).await;
    let bob = TestUser::new();
    app.touch(&bob.token).await;
    app.add_member(&alice.token, &chat_id, bob.id).await;
    app.post_message(&alice.token, &chat_id, "from alice").await;
    app.post_message(&bob.token, &chat_id, "from bob").await;
    let listed = messages(&app, &bob.token, &chat_id, "").await;
    let authors: Vec<&Value> = listed.iter().map(|m| &m["user_id"]).collect();
    assert_eq!(authors, [&json!(alice.id), &json!(bob.id)]);
    assert_eq!(seqs(&listed), vec![1, 2]);
}

on_both_backends!(
    posting_a_message_returns_it_in_full,
    unknown_fields_in_a_message_are_ignored,
    an_ai_message_is_stored_as_the_assistants,
    unicode_content_is_stored_unchanged,
    messages_are_numbered_from_one_per_chat,
    posting_into_a_missing_chat_is_not_found,
    the_message_list_pages_with_skip_limit_and_seq_bounds,
    the_message_list_returns_fifty_by_default,
    the_message_list_refuses_out_of_range_pagination,
    both_pagination_errors_are_reported_together,
    a_message_without_content_is_a_validation_error,
    ill_typed_message_fields_are_validation_errors,
    malformed_json_is_a_validation_error,
    an_empty_body_is_a_validation_error,
    a_body_over_the_size_limit_is_refused_and_nothing_is_stored,
    fifty_concurrent_posts_get_seqs_one_to_fifty,
    a_retried_client_msg_id_stores_the_message_once,
    ten_concurrent_posts_with_one_client_msg_id_store_one_message,
    a_member_posts_into_a_shared_chat_under_their_own_name,
);
