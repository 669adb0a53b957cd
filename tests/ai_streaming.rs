//! AI replies over REST (`POST /chat`, `POST /stream-message`, `GET /chat/{id}/stream`) in the
//! AI SDK's three wire formats, with the production OpenAI client talking to a real
//! OpenAI-compatible server started by the test; on both database backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ai::{
    body_text, body_until_error, data_message_id, post_stream, spawn_ai_app, stored, v4_body,
    v5_body, wait_for_reply, wait_idle,
};
use common::openai_mock::{MockOpenAi, Reply, Step};
use common::ws::WsClient;
use common::{assert_detail, assert_validation, spawn_app_with, Backend, TestApp, TestUser};
use serde_json::{json, Value};

const TOKENS: [&str; 3] = ["Hello", ", \"friend\"", "!\n"];
const TEXT: &str = "Hello, \"friend\"!\n";

async fn new_chat(app: &TestApp, user: &TestUser) -> String {
    app.create_chat(&user.token, "ai").await["id"]
        .as_str()
        .expect("chat id")
        .to_string()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn the_data_protocol_is_framed_byte_for_byte(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    // An AI SDK 4 body with no `protocol` gets the data stream.
    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&chat, "Say hello")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&res, "x-vercel-ai-data-stream"), Some("v1"));
    assert_eq!(header(&res, "x-vercel-ai-ui-message-stream"), None);
    let body = body_text(res).await;
    let id = data_message_id(&body);
    let usage = r#"{"promptTokens":17,"completionTokens":3}"#;
    let expected = format!(
        "f:{{\"messageId\":\"{id}\"}}\n\
         0:\"Hello\"\n\
         0:\", \\\"friend\\\"\"\n\
         0:\"!\\n\"\n\
         e:{{\"finishReason\":\"stop\",\"usage\":{usage},\"isContinued\":false}}\n\
         d:{{\"finishReason\":\"stop\",\"usage\":{usage}}}\n"
    );
    assert_eq!(body, expected);

    // Both messages are stored; the reply under the announced id, with its finish reason.
    let msgs = stored(&app, &chat).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!((msgs[0].seq, msgs[0].role.as_str()), (1, "user"));
    assert_eq!(msgs[0].content, "Say hello");
    assert_eq!(msgs[0].user_id.map(|u| u.0), Some(alice.id));
    assert_eq!((msgs[1].seq, msgs[1].role.as_str()), (2, "assistant"));
    assert_eq!(msgs[1].id.0.to_string(), id);
    assert_eq!(msgs[1].content, TEXT);
    assert!(msgs[1].is_from_ai);
    assert_eq!(msgs[1].finish_reason.as_deref(), Some("stop"));

    // The provider got the system prompt and the history from the database (not the client's
    // copy of earlier messages), streaming with usage.
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r["model"], "mock-model");
    assert_eq!(r["stream"], true);
    assert_eq!(r["stream_options"]["include_usage"], true);
    assert_eq!(
        r["messages"],
        json!([
            {"role": "system", "content": "You are a test assistant."},
            {"role": "user", "content": "Say hello"}
        ])
    );

    // The next prompt carries the stored reply as history.
    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&chat, "Again")).await;
    body_text(res).await;
    let r = &mock.requests()[1];
    let roles: Vec<&str> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(r["messages"][2]["content"], TEXT);
}

async fn the_ui_protocol_is_framed_byte_for_byte(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    // An AI SDK 5 body with no `protocol` gets the UI message stream.
    let res = post_stream(&app, "/chat", &alice.token, &v5_body(&chat, "Say hello")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&res, "cache-control"), Some("no-cache"));
    assert_eq!(header(&res, "x-vercel-ai-ui-message-stream"), Some("v1"));
    assert_eq!(header(&res, "x-accel-buffering"), Some("no"));
    assert_eq!(header(&res, "x-vercel-ai-data-stream"), None);
    let body = body_text(res).await;
    let reply = stored(&app, &chat).await.pop().expect("reply");
    let id = reply.id.0;
    let expected = format!(
        "data: {{\"type\":\"start\",\"messageId\":\"{id}\"}}\n\n\
         data: {{\"type\":\"start-step\"}}\n\n\
         data: {{\"type\":\"text-start\",\"id\":\"{id}\"}}\n\n\
         data: {{\"type\":\"text-delta\",\"id\":\"{id}\",\"delta\":\"Hello\"}}\n\n\
         data: {{\"type\":\"text-delta\",\"id\":\"{id}\",\"delta\":\", \\\"friend\\\"\"}}\n\n\
         data: {{\"type\":\"text-delta\",\"id\":\"{id}\",\"delta\":\"!\\n\"}}\n\n\
         data: {{\"type\":\"text-end\",\"id\":\"{id}\"}}\n\n\
         data: {{\"type\":\"finish-step\"}}\n\n\
         data: {{\"type\":\"finish\"}}\n\n\
         data: [DONE]\n\n"
    );
    assert_eq!(body, expected);
    assert_eq!(reply.content, TEXT);
    assert_eq!(stored(&app, &chat).await[0].content, "Say hello");
}

async fn the_text_protocol_is_the_plain_deltas(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    // `protocol` wins over the body's shape.
    let res = post_stream(
        &app,
        "/chat?protocol=text",
        &alice.token,
        &v5_body(&chat, "Say hello"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&res, "x-vercel-ai-data-stream"), None);
    assert_eq!(header(&res, "x-vercel-ai-ui-message-stream"), None);
    assert_eq!(body_text(res).await, TEXT);
    assert_eq!(stored(&app, &chat).await[1].content, TEXT);
}

/// A provider's text may hold a NUL, which Postgres cannot store: the reply streams as sent
/// and is stored with U+FFFD in its place, the same on both backends (never a failed reply).
async fn a_reply_with_a_nul_from_the_provider_is_stored_on_both_backends(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&["Hello", "\u{0}", " there"])));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let res = post_stream(
        &app,
        "/chat?protocol=text",
        &alice.token,
        &v5_body(&chat, "Say hello"),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(body_text(res).await, "Hello\u{0} there");
    let reply = wait_for_reply(&app, &chat).await;
    assert_eq!(reply.content, "Hello\u{FFFD} there");
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
}

async fn stream_message_posts_and_streams_in_the_asked_protocol(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let res = post_stream(
        &app,
        "/stream-message",
        &alice.token,
        &json!({"content": "one", "chat_id": chat, "protocol": "text"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(body_text(res).await, TEXT);
    // Without a protocol: the data stream.
    let res = post_stream(
        &app,
        "/stream-message",
        &alice.token,
        &json!({"content": "two", "chat_id": chat}),
    )
    .await;
    assert_eq!(header(&res, "x-vercel-ai-data-stream"), Some("v1"));
    let body = body_text(res).await;
    assert!(body.starts_with("f:{\"messageId\":"), "{body}");
    assert!(body.ends_with("}}\n") && body.contains("\nd:"), "{body}");
    let msgs = stored(&app, &chat).await;
    let contents: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["one", TEXT, "two", TEXT]);
    let seqs: Vec<i64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

async fn bad_requests_get_400_404_and_422_and_store_nothing(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let (alice, mallory) = (TestUser::new(), TestUser::new());
    app.touch(&mallory.token).await;
    let chat = new_chat(&app, &alice).await;

    let res = app
        .client
        .post(app.url("/chat"))
        .json(&v4_body(&chat, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let mut body = v4_body(&chat, "x");
    body["messages"] =
        json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]);
    let res = post_stream(&app, "/chat", &alice.token, &body).await;
    assert_detail(
        res,
        400,
        "Last message must be from the user",
        "assistant last",
    )
    .await;

    let res = post_stream(&app, "/chat", &mallory.token, &v4_body(&chat, "x")).await;
    assert_detail(res, 404, "Chat not found", "not a member").await;
    let other = uuid::Uuid::new_v4().to_string();
    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&other, "x")).await;
    assert_detail(res, 404, "Chat not found", "no such chat").await;
    let res = post_stream(
        &app,
        "/stream-message",
        &mallory.token,
        &json!({"content": "x", "chat_id": chat}),
    )
    .await;
    assert_detail(res, 404, "Chat not found", "stream-message, not a member").await;

    let res = post_stream(&app, "/chat", &alice.token, &json!({"id": chat})).await;
    assert_validation(res, json!(["body", "messages"]), "missing", "no messages").await;
    let res = post_stream(
        &app,
        "/chat",
        &alice.token,
        &json!({"id": chat, "messages": []}),
    )
    .await;
    assert_validation(
        res,
        json!(["body", "messages"]),
        "too_short",
        "empty messages",
    )
    .await;
    let res = post_stream(&app, "/chat", &alice.token, &v4_body("not-a-uuid", "x")).await;
    assert_validation(res, json!(["body", "id"]), "uuid_parsing", "bad id").await;
    let res = post_stream(
        &app,
        "/chat",
        &alice.token,
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_validation(res, json!(["body", "chat_id"]), "missing", "no chat").await;
    let res = post_stream(
        &app,
        "/chat?protocol=xml",
        &alice.token,
        &v4_body(&chat, "x"),
    )
    .await;
    assert_validation(res, json!(["query", "protocol"]), "enum", "bad protocol").await;
    let mut body = v5_body(&chat, "");
    body["messages"][0]["parts"] = json!([]);
    let res = post_stream(&app, "/chat", &alice.token, &body).await;
    assert_validation(
        res,
        json!(["body", "messages", 0, "content"]),
        "string_too_short",
        "empty text",
    )
    .await;
    let res = post_stream(
        &app,
        "/stream-message",
        &alice.token,
        &json!({"chat_id": chat}),
    )
    .await;
    assert_validation(res, json!(["body", "content"]), "missing", "no content").await;
    let res = post_stream(
        &app,
        "/stream-message",
        &alice.token,
        &json!({"content": "x", "chat_id": chat, "protocol": "xml"}),
    )
    .await;
    assert_validation(
        res,
        json!(["body", "protocol"]),
        "enum",
        "bad body protocol",
    )
    .await;

    assert!(stored(&app, &chat).await.is_empty(), "nothing was stored");
    assert!(mock.requests().is_empty(), "the provider was not called");
}

async fn failures_before_the_first_token_are_retried_with_backoff(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    mock.script([Step::Status(500), Step::Status(429), Step::Status(503)]);
    let app = spawn_ai_app(backend, &mock, &[("AI_MAX_RETRIES", "3")]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let res = post_stream(
        &app,
        "/chat?protocol=text",
        &alice.token,
        &v4_body(&chat, "q"),
    )
    .await;
    assert_eq!(body_text(res).await, TEXT, "the reply is not repeated");
    assert_eq!(mock.requests().len(), 4);
    let msgs = stored(&app, &chat).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].content, TEXT);
}

async fn a_provider_that_keeps_failing_ends_with_an_error_and_stores_no_reply(backend: Backend) {
    let mock = MockOpenAi::start(Step::Status(500));
    let app = spawn_ai_app(backend, &mock, &[("AI_MAX_RETRIES", "1")]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let mut watcher = WsClient::connect(&app, &alice.token).await;
    watcher.subscribe(&chat).await;
    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&chat, "q")).await;
    let body = body_text(res).await;
    let id = data_message_id(&body);
    assert_eq!(
        body,
        format!(
            "f:{{\"messageId\":\"{id}\"}}\n3:\"The AI provider returned an error (HTTP 500)\"\n"
        )
    );
    assert_eq!(mock.requests().len(), 2, "one retry, then give up");
    let failed = watcher.next_of("generation_failed").await;
    assert_eq!(
        failed["error"],
        "The AI provider returned an error (HTTP 500)"
    );
    wait_idle(&app).await;
    let msgs = stored(&app, &chat).await;
    assert_eq!(msgs.len(), 1, "only the user's message: {msgs:?}");
}

async fn a_stream_that_breaks_mid_reply_fails_and_keeps_the_partial_reply(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let partial = Reply::of(&["Partial", " answer"]);
    mock.script([Step::BreakAfter(partial.clone()), Step::BreakAfter(partial)]);
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let mut watcher = WsClient::connect(&app, &alice.token).await;
    watcher.subscribe(&chat).await;

    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&chat, "q")).await;
    let body = body_text(res).await;
    let id = data_message_id(&body);
    assert_eq!(
        body,
        format!(
            "f:{{\"messageId\":\"{id}\"}}\n0:\"Partial\"\n0:\" answer\"\n\
             3:\"The connection to the AI provider broke\"\n"
        )
    );
    let started = watcher.next_of("generation_started").await;
    let mut tokens = Vec::new();
    let failed = loop {
        let f = watcher.next().await;
        match f["type"].as_str() {
            Some("token") => tokens.push(f["delta"].as_str().unwrap().to_string()),
            Some("generation_failed") => break f,
            Some("generation_finished") => panic!("a broken reply must not finish: {f}"),
            _ => {}
        }
    };
    assert_eq!(tokens, ["Partial", " answer"]);
    assert_eq!(failed["generation_id"], started["generation_id"]);
    assert_eq!(failed["error"], "The connection to the AI provider broke");
    let reply = wait_for_reply(&app, &chat).await;
    assert_eq!(reply.id.0.to_string(), id);
    assert_eq!(reply.content, "Partial answer");
    assert_eq!(reply.finish_reason.as_deref(), Some("error"));

    // The UI stream reports it as an error part; never retried after the first token.
    let res = post_stream(&app, "/chat", &alice.token, &v5_body(&chat, "again")).await;
    let body = body_text(res).await;
    assert!(
        body.ends_with(
            "data: {\"type\":\"text-delta\",\"id\":\"ID\",\"delta\":\" answer\"}\n\n\
             data: {\"type\":\"error\",\"errorText\":\"The connection to the AI provider broke\"}\n\n\
             data: [DONE]\n\n"
                .replace("ID", &stored(&app, &chat).await.pop().unwrap().id.0.to_string())
                .as_str()
        ),
        "{body}"
    );
    assert_eq!(mock.requests().len(), 2);
}

async fn a_stalled_provider_times_out_and_the_text_stream_aborts(backend: Backend) {
    let mock = MockOpenAi::start(Step::StallAfter(Reply::of(&["Stuck"])));
    let app = spawn_ai_app(backend, &mock, &[("AI_IDLE_TIMEOUT_MS", "400")]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let res = post_stream(
        &app,
        "/chat?protocol=text",
        &alice.token,
        &v4_body(&chat, "q"),
    )
    .await;
    let (text, failed) = body_until_error(res).await;
    assert_eq!(text, "Stuck");
    assert!(
        failed,
        "a failed plain-text stream is aborted, not ended cleanly"
    );
    let reply = wait_for_reply(&app, &chat).await;
    assert_eq!(reply.content, "Stuck");
    assert_eq!(reply.finish_reason.as_deref(), Some("error"));
}

async fn resume_answers_204_when_idle_and_replays_an_in_flight_reply(backend: Backend) {
    let reply = Reply::numbered(30, Duration::from_millis(40));
    let mock = MockOpenAi::start(Step::Reply(reply.clone()));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let (alice, mallory) = (TestUser::new(), TestUser::new());
    app.touch(&mallory.token).await;
    let chat = new_chat(&app, &alice).await;
    let path = format!("/chat/{chat}/stream");
    let res = app.get(&path, Some(&alice.token)).await;
    assert_eq!(res.status(), 204);
    assert_detail(
        app.get(&path, Some(&mallory.token)).await,
        404,
        "Chat not found",
        "resume",
    )
    .await;

    let res = post_stream(&app, "/chat", &alice.token, &v5_body(&chat, "q")).await;
    let original = tokio::spawn(body_text(res));
    let chat_id = uuid::Uuid::parse_str(&chat).unwrap();
    for _ in 0..200 {
        let gens = app.state.generations.in_chat(chat_id);
        if gens.first().is_some_and(|g| g.snapshot().index >= 4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = app.get(&path, Some(&alice.token)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-vercel-ai-ui-message-stream"), Some("v1"));
    let resumed = body_text(res).await;
    let original = original.await.unwrap();
    let text_of = |sse: &str| -> String {
        sse.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|p| p["type"] == "text-delta")
            .map(|p| p["delta"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(text_of(&resumed), reply.text());
    assert_eq!(text_of(&original), reply.text());
    let first_delta = resumed
        .split("\n\n")
        .nth(3)
        .and_then(|e| e.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .expect("a first delta");
    assert!(
        first_delta["delta"]
            .as_str()
            .unwrap()
            .starts_with("t0 t1 t2 t3 t4 "),
        "the resumed stream starts with the text so far: {first_delta}"
    );
    // Same message in both, ending the same way.
    let start_of = |sse: &str| sse.split("\n\n").next().unwrap().to_string();
    assert_eq!(start_of(&resumed), start_of(&original));
    assert!(resumed.ends_with("data: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n"));
    let res = app.get(&path, Some(&alice.token)).await;
    assert_eq!(res.status(), 204, "nothing in flight any more");
}

async fn concurrency_limits_answer_429_over_rest_and_rate_limited_over_websocket(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::numbered(40, Duration::from_millis(50))));
    let app = spawn_ai_app(
        backend,
        &mock,
        &[
            ("AI_MAX_CONCURRENT_PER_USER", "1"),
            ("AI_MAX_CONCURRENT_PER_NODE", "2"),
        ],
    )
    .await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let (a_chat, b_chat, c_chat) = (
        new_chat(&app, &alice).await,
        new_chat(&app, &bob).await,
        new_chat(&app, &carol).await,
    );
    let first = post_stream(&app, "/chat", &alice.token, &v4_body(&a_chat, "1")).await;
    assert_eq!(first.status(), 200);
    let res = post_stream(&app, "/chat", &alice.token, &v4_body(&a_chat, "2")).await;
    assert_eq!(res.status(), 429);
    let detail: Value = res.json().await.unwrap();
    assert!(
        detail["detail"].as_str().unwrap().contains("this user"),
        "{detail}"
    );
    let mut ws = WsClient::connect(&app, &alice.token).await;
    ws.subscribe(&a_chat).await;
    let e = ws
        .request(
            json!({"type": "prompt", "chat_id": a_chat, "content": "3"}),
            "p",
        )
        .await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("rate_limited")),
        "{e}"
    );

    let second = post_stream(&app, "/chat", &bob.token, &v4_body(&b_chat, "1")).await;
    assert_eq!(second.status(), 200);
    let res = post_stream(&app, "/chat", &carol.token, &v4_body(&c_chat, "1")).await;
    assert_eq!(res.status(), 429, "the node is full");
    // A chat the caller may not see does not exist, whatever the load (404 before 429).
    let res = post_stream(&app, "/chat", &carol.token, &v4_body(&a_chat, "peek")).await;
    assert_eq!(res.status(), 404, "another user's chat, node full");
    // Refused prompts store nothing.
    assert_eq!(stored(&app, &a_chat).await.len(), 1);
    assert!(stored(&app, &c_chat).await.is_empty());
    // Places come back when replies end.
    body_text(first).await;
    body_text(second).await;
    wait_idle(&app).await;
    // Admitted, then refused by the prompt's own membership check: 404, and the place taken
    // for it comes back (Carol's limit is one reply).
    let res = post_stream(&app, "/chat", &carol.token, &v4_body(&b_chat, "peek")).await;
    assert_eq!(res.status(), 404, "another user's chat, node idle");
    assert!(stored(&app, &b_chat)
        .await
        .iter()
        .all(|m| m.content != "peek"));
    let res = post_stream(&app, "/chat", &carol.token, &v4_body(&c_chat, "again")).await;
    assert_eq!(res.status(), 200);
    body_text(res).await;
}

async fn the_dev_provider_is_the_default_and_says_so_in_health(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("AI_DEV_TOKENS_PER_SEC", "2000"),
            ("AI_DEV_FIRST_TOKEN_MS", "0"),
        ],
    )
    .await;
    let health: Value = app.get("/health", None).await.json().await.unwrap();
    let ai = &health["services"]["ai"];
    assert_eq!(ai["status"], "ok");
    assert_eq!(ai["provider"], "dev");
    assert!(
        ai["message"].as_str().unwrap().contains("development"),
        "{ai}"
    );
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let res = post_stream(
        &app,
        "/chat?protocol=text",
        &alice.token,
        &v4_body(&chat, "What is Echo?"),
    )
    .await;
    let text = body_text(res).await;
    assert!(text.contains("development provider"), "{text}");
    assert!(text.contains("\"What is Echo?\""), "{text}");
    let again = post_stream(
        &app,
        "/chat?protocol=text",
        &alice.token,
        &v4_body(&chat, "What is Echo?"),
    )
    .await;
    assert_eq!(body_text(again).await, text, "deterministic");
    assert_eq!(stored(&app, &chat).await[1].content, text);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("echo_ai_generations_total")
                && l.contains("outcome=\"stop\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
    assert!(metrics.contains("echo_ai_time_to_first_token_seconds_count"));
    assert!(metrics.contains("echo_ai_tokens_total"));
}

async fn a_retried_or_regenerated_message_is_stored_once(backend: Backend) {
    let mock = MockOpenAi::start(Step::Reply(Reply::of(&TOKENS)));
    let app = spawn_ai_app(backend, &mock, &[]).await;
    let alice = TestUser::new();
    let chat = new_chat(&app, &alice).await;
    let mut body = v5_body(&chat, "Once");
    body_text(post_stream(&app, "/chat", &alice.token, &body).await).await;
    // useChat's regenerate sends the same user message (same id) again.
    body["trigger"] = json!("regenerate-message");
    body_text(post_stream(&app, "/chat", &alice.token, &body).await).await;
    let msgs = stored(&app, &chat).await;
    let roles: Vec<&str> = msgs.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "assistant"]);
    // The new reply answers the user's message, not the reply it replaces.
    let r = &mock.requests()[1];
    assert_eq!(r["messages"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["messages"][1]["content"], "Once");
}

on_both_backends!(
    the_data_protocol_is_framed_byte_for_byte,
    the_ui_protocol_is_framed_byte_for_byte,
    the_text_protocol_is_the_plain_deltas,
    a_reply_with_a_nul_from_the_provider_is_stored_on_both_backends,
    stream_message_posts_and_streams_in_the_asked_protocol,
    bad_requests_get_400_404_and_422_and_store_nothing,
    failures_before_the_first_token_are_retried_with_backoff,
    a_provider_that_keeps_failing_ends_with_an_error_and_stores_no_reply,
    a_stream_that_breaks_mid_reply_fails_and_keeps_the_partial_reply,
    a_stalled_provider_times_out_and_the_text_stream_aborts,
    resume_answers_204_when_idle_and_replays_an_in_flight_reply,
    concurrency_limits_answer_429_over_rest_and_rate_limited_over_websocket,
    the_dev_provider_is_the_default_and_says_so_in_health,
    a_retried_or_regenerated_message_is_stored_once,
);

#[tokio::test]
async fn transcription_asks_for_verbose_json_and_returns_timed_segments() {
    use echo::ai::AiProvider;
    let mock = MockOpenAi::start(Step::Status(500));
    let env: std::collections::HashMap<String, String> = [
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_BASE_URL", mock.base_url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = echo::config::AiSettings::from_map(&env).unwrap();
    let provider = echo::ai::openai::OpenAiProvider::new(&settings).unwrap();
    let audio = bytes::Bytes::from(vec![7u8; 2048]);
    let t = provider
        .transcribe(audio, "clip.wav".into())
        .await
        .expect("transcription");
    assert_eq!(t.text, "Hello there. General Kenobi.");
    assert_eq!(t.duration, Some(4.5));
    let segs: Vec<(f64, f64, &str)> = t
        .segments
        .iter()
        .map(|s| (s.start, s.end, s.text.as_str()))
        .collect();
    assert_eq!(
        segs,
        [(0.0, 2.0, "Hello there."), (2.0, 4.5, "General Kenobi.")]
    );
    let bodies = mock.transcription_bodies();
    assert_eq!(bodies.len(), 1);
    let body = String::from_utf8_lossy(&bodies[0]);
    assert!(body.contains("verbose_json"), "response_format");
    assert!(body.contains("whisper-1"), "model");
    assert!(body.contains("filename=\"clip.wav\""), "file part");
}
