//! The input rules of docs/INPUT-RULES.md, on both backends: control characters in stored
//! strings are a 422 naming the field (a `bad_request` frame over WebSocket), claims with control
//! characters never break their user's requests, JSON bodies with trailing data are
//! `json_invalid`, and `/openapi.json` lists the statuses every operation can answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ws::WsClient;
use common::{assert_validation, sign, spawn_app, Backend, TestApp, TestUser, SECRET};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

const CONTROL: &str = "string_control_character";

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("JSON body")
}

/// Sends raw bytes as a JSON body.
async fn post_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    raw: &str,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(raw.to_string())
        .send()
        .await
        .expect("request")
}

async fn control_characters_in_stored_strings_are_422_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let t = &alice.token;

    // Chats: titles are single-line.
    for title in [
        "a\u{0}b",
        "bell\u{7}",
        "two\nlines",
        "tab\there",
        "del\u{7f}",
    ] {
        let res = app.post("/chats/", t, &json!({"title": title})).await;
        assert_validation(
            res,
            json!(["body", "title"]),
            CONTROL,
            &format!("title {title:?}"),
        )
        .await;
    }
    let chats: Value = body(app.get("/chats/", Some(t)).await).await;
    assert_eq!(chats, json!([]), "no chat was stored");
    let chat = app.create_chat(t, "Plans").await;
    let chat_id = chat["id"].as_str().expect("id").to_string();
    let res = app
        .send_json(
            Method::PUT,
            &format!("/chats/{chat_id}"),
            Some(t),
            &json!({"title": "x\u{0}"}),
        )
        .await;
    assert_validation(res, json!(["body", "title"]), CONTROL, "rename").await;

    // Messages: free text keeps tabs and line breaks, refuses other control characters.
    for content in ["nul\u{0}", "escape \u{1b}[31m", "backspace\u{8}", "\u{0}"] {
        let res = app
            .post(
                "/messages/",
                t,
                &json!({"content": content, "chat_id": chat_id}),
            )
            .await;
        assert_validation(
            res,
            json!(["body", "content"]),
            CONTROL,
            &format!("content {content:?}"),
        )
        .await;
    }
    let fine = "line one\nline two\r\n\tindented";
    let stored = app.post_message(t, &chat_id, fine).await;
    assert_eq!(stored["content"], fine);

    // The AI routes store the user's message.
    let res = app
        .post(
            "/stream-message",
            t,
            &json!({"content": "a\u{0}", "chat_id": chat_id}),
        )
        .await;
    assert_validation(res, json!(["body", "content"]), CONTROL, "stream-message").await;
    let res = app
        .post(
            "/chat",
            t,
            &json!({"chat_id": chat_id, "messages": [{"role": "user", "content": "hi\u{0}"}]}),
        )
        .await;
    assert_validation(
        res,
        json!(["body", "messages", 0, "content"]),
        CONTROL,
        "chat v4",
    )
    .await;
    let res = app
        .post(
            "/chat",
            t,
            &json!({"id": chat_id, "trigger": "submit-message", "messages": [
                {"role": "user", "parts": [{"type": "text", "text": "a"}, {"type": "text", "text": "\u{0}"}]}
            ]}),
        )
        .await;
    assert_validation(
        res,
        json!(["body", "messages", 0, "content"]),
        CONTROL,
        "chat v5",
    )
    .await;
    let messages: Value = body(
        app.get(&format!("/chats/{chat_id}/messages/"), Some(t))
            .await,
    )
    .await;
    assert_eq!(
        messages.as_array().map(Vec::len),
        Some(1),
        "only the fine message: {messages}"
    );

    // Video bodies: names and content types are single-line, descriptions free text.
    let res = app
        .post(
            "/api/v1/videos/signed-upload-url",
            t,
            &json!({"filename": "clip\u{0}.mp4", "content_type": "video/mp4"}),
        )
        .await;
    assert_validation(res, json!(["body", "filename"]), CONTROL, "signed filename").await;
    let res = app
        .post(
            "/api/v1/videos/signed-upload-url",
            t,
            &json!({"filename": "clip.mp4", "content_type": "video/mp4\u{0}"}),
        )
        .await;
    assert_validation(
        res,
        json!(["body", "content_type"]),
        CONTROL,
        "signed content type",
    )
    .await;
    let res = app
        .post(
            "/api/v1/videos/upload-complete",
            t,
            &json!({"video_id": 1, "original_filename": "a\u{0}", "content_type": "video/mp4", "size_bytes": 1}),
        )
        .await;
    assert_validation(
        res,
        json!(["body", "original_filename"]),
        CONTROL,
        "complete filename",
    )
    .await;
    let metadata = "/api/v1/videos/999999/metadata";
    for (field, value, loc) in [
        ("title", json!("t\u{0}"), json!(["body", "title"])),
        (
            "description",
            json!("d\u{0}"),
            json!(["body", "description"]),
        ),
        (
            "tags",
            json!(["ok", "bad\u{0}"]),
            json!(["body", "tags", 1]),
        ),
        ("tags", json!(["new\nline"]), json!(["body", "tags", 0])),
    ] {
        let res = app
            .send_json(Method::PUT, metadata, Some(t), &json!({ field: value }))
            .await;
        assert_validation(res, loc, CONTROL, &format!("metadata {field}")).await;
    }
    // A multi-line description passes validation (and then finds no such video).
    let res = app
        .send_json(
            Method::PUT,
            metadata,
            Some(t),
            &json!({"description": "one\ntwo\tthree"}),
        )
        .await;
    assert_eq!(res.status(), 404, "a multi-line description is valid");
}

/// A multipart body with one `file` part whose headers are written as given.
fn multipart(filename: &str, content_type: &str) -> (String, Vec<u8>) {
    let boundary = "XyZboundaryZyX";
    let mut out = Vec::new();
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"");
    out.extend_from_slice(filename.as_bytes());
    out.extend_from_slice(b"\"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(format!("\r\n\r\nhello\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

async fn upload_names_with_control_characters_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let send = |filename: &'static str, content_type: &'static str| {
        let (ct, raw) = multipart(filename, content_type);
        app.client
            .post(app.url("/test/upload"))
            .bearer_auth(&alice.token)
            .header("content-type", ct)
            .body(raw)
            .send()
    };
    // A tab is the one control character HTTP lets through in a header.
    let res = send("a\tb.txt", "text/plain").await.expect("upload");
    assert_validation(
        res,
        json!(["body", "file", "filename"]),
        CONTROL,
        "tab in filename",
    )
    .await;
    // Other control bytes never make it into a name: the part is refused as malformed.
    for name in ["nul\u{0}.txt", "esc\u{1b}.txt"] {
        let res = send(name, "text/plain").await.expect("upload");
        let status = res.status().as_u16();
        assert!(
            status == 400 || status == 422,
            "{name:?}: {status} {}",
            res.text().await.unwrap_or_default()
        );
    }
    let res = send("fine.txt", "text/plain").await.expect("upload");
    assert_eq!(res.status(), 200, "a plain name is stored");
}

async fn a_control_character_over_websocket_is_a_bad_request_frame(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = app.create_chat(&alice.token, "ws").await;
    let chat_id = chat["id"].as_str().expect("id").to_string();
    let mut ws = WsClient::connect(&app, &alice.token).await;
    ws.subscribe(&chat_id).await;
    for kind in ["send", "prompt"] {
        let reply = ws
            .request(
                json!({"type": kind, "chat_id": chat_id, "content": "nul\u{0}"}),
                kind,
            )
            .await;
        assert_eq!(reply["type"], "error", "{kind}: {reply}");
        assert_eq!(reply["code"], "bad_request", "{kind}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("content") && message.contains("control"),
            "{kind}: {reply}"
        );
    }
    let reply = ws
        .request(
            json!({"type": "send", "chat_id": chat_id, "content": "a\nb\tc"}),
            "ok",
        )
        .await;
    assert_eq!(
        reply["type"], "ack",
        "tabs and line breaks are fine: {reply}"
    );
    // A frame with trailing data after its JSON object is not accepted.
    ws.send_raw(&format!(
        r#"{{"type":"send","id":"t1","chat_id":"{chat_id}","content":"x"}} garbage"#
    ))
    .await;
    let reply = ws.next_of("error").await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    ws.send_raw(r#"{"type":"ping","id":"p1"}{"type":"ping","id":"p2"}"#)
        .await;
    let reply = ws.next_of("error").await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    let messages: Value = body(
        app.get(&format!("/chats/{chat_id}/messages/"), Some(&alice.token))
            .await,
    )
    .await;
    assert_eq!(
        messages.as_array().map(Vec::len),
        Some(1),
        "only the ack'd message: {messages}"
    );
    ws.close().await;
}

fn token_with_claims(sub: Uuid, email: &str, full_name: &str, username: &str) -> String {
    let claims = json!({
        "sub": sub.to_string(),
        "aud": "authenticated",
        "exp": chrono::Utc::now().timestamp() + 3600,
        "email": email,
        "user_metadata": {"full_name": full_name, "username": username},
    });
    sign(
        Algorithm::HS256,
        None,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

async fn claims_with_control_characters_never_break_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = Uuid::new_v4();
    let token = token_with_claims(
        id,
        "ann\u{0}@example.test",
        "Ann\u{0} Lee\u{7}",
        "ann\u{0}\u{1b}x",
    );
    let res = app.get("/users/me", Some(&token)).await;
    assert_eq!(res.status(), 200, "GET /users/me");
    let me = body(res).await;
    assert_eq!(me["email"], "ann@example.test", "{me}");
    assert_eq!(me["full_name"], "Ann Lee", "{me}");
    assert_eq!(me["username"], "annx", "{me}");
    let res = app.post("/chats/", &token, &json!({"title": "mine"})).await;
    assert_eq!(res.status(), 201, "the user can work");
    // Claims that are nothing but control characters are as good as absent.
    let other = token_with_claims(Uuid::new_v4(), "\u{0}", "\u{0}\u{1}", "\u{0}");
    let res = app.get("/users/me", Some(&other)).await;
    assert_eq!(res.status(), 200);
    let me = body(res).await;
    assert_eq!(me["email"], Value::Null, "{me}");
    assert_eq!(me["full_name"], Value::Null, "{me}");
    assert_eq!(me["username"], "user", "{me}");
    // The WebSocket authenticates the same way.
    let mut ws = WsClient::connect(&app, &token).await;
    let pong = ws.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong", "{pong}");
    ws.close().await;
}

async fn json_with_trailing_data_is_json_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let t = &alice.token;
    for raw in [
        r#"{"title":"a"}{"title":"b"}"#,
        r#"{"title":"a"} garbage"#,
        r#"{"title":"a"}]"#,
        "{} 1",
    ] {
        let res = post_raw(&app, Method::POST, "/chats/", t, raw).await;
        assert_eq!(res.status(), 422, "{raw}");
        let b = body(res).await;
        assert_eq!(b["detail"][0]["type"], "json_invalid", "{raw}: {b}");
        assert_eq!(b["detail"][0]["loc"][0], "body", "{raw}: {b}");
    }
    let chats: Value = body(app.get("/chats/", Some(t)).await).await;
    assert_eq!(chats, json!([]), "nothing was created");
    // Whitespace after the value is fine.
    let res = post_raw(
        &app,
        Method::POST,
        "/chats/",
        t,
        "{\"title\":\"a\"} \r\n\t ",
    )
    .await;
    assert_eq!(res.status(), 201);
    let chat_id = body(res).await["id"].as_str().expect("id").to_string();
    let cases = [
        (
            Method::PUT,
            format!("/chats/{chat_id}"),
            r#"{"title":"b"} x"#.to_string(),
        ),
        (
            Method::POST,
            "/messages/".into(),
            format!(r#"{{"content":"a","chat_id":"{chat_id}"}}{{}}"#),
        ),
        (
            Method::POST,
            "/stream-message".into(),
            format!(r#"{{"content":"a","chat_id":"{chat_id}"}} x"#),
        ),
        (
            Method::POST,
            "/chat".into(),
            format!(r#"{{"chat_id":"{chat_id}","messages":[{{"role":"user","content":"a"}}]}} []"#),
        ),
    ];
    for (method, path, raw) in cases {
        let res = post_raw(&app, method.clone(), &path, t, &raw).await;
        assert_eq!(res.status(), 422, "{method} {path} {raw}");
        let b = body(res).await;
        assert_eq!(b["detail"][0]["type"], "json_invalid", "{path}: {b}");
    }
    let messages: Value = body(
        app.get(&format!("/chats/{chat_id}/messages/"), Some(t))
            .await,
    )
    .await;
    assert_eq!(messages, json!([]), "no message was stored");
}

async fn a_body_that_is_not_an_object_is_a_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let chat = app.create_chat(&alice.token, "c").await;
    let chat_id = chat["id"].as_str().expect("id").to_string();
    // serde alone reads a struct from the array of its fields: `["x"]` was a chat titled x.
    for raw in ["[]", r#"["x"]"#, "null", "7", r#""title""#] {
        let res = post_raw(
            &app,
            Method::PUT,
            &format!("/chats/{chat_id}"),
            &alice.token,
            raw,
        )
        .await;
        assert_validation(res, json!(["body"]), "model_attributes_type", raw).await;
    }
    let res = post_raw(
        &app,
        Method::POST,
        "/messages/",
        &alice.token,
        &format!(r#"["hi", "{chat_id}"]"#),
    )
    .await;
    assert_validation(
        res,
        json!(["body"]),
        "model_attributes_type",
        "message as an array",
    )
    .await;
}

async fn integers_may_be_written_as_integral_floats(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    // Integers may be written as floats without a fraction, as pydantic allows; `1.5` may not.
    for (size, status) in [("3.0", 404), ("1e3", 404), ("1.5", 422)] {
        let raw = format!(
            r#"{{"video_id": 999999.0, "original_filename": "a.mp4", "content_type": "video/mp4", "size_bytes": {size}}}"#
        );
        let res = post_raw(
            &app,
            Method::POST,
            "/api/v1/videos/upload-complete",
            &alice.token,
            &raw,
        )
        .await;
        assert_eq!(res.status(), status, "size_bytes {size}");
    }
}

async fn every_rest_path_answers_405_to_another_method(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let cases = [
        (Method::GET, "/chat", "POST"),
        (Method::TRACE, "/stream-message", "POST"),
        (
            Method::PUT,
            "/chat/00000000-0000-0000-0000-000000000000/stream",
            "GET",
        ),
        (Method::GET, "/test/upload", "POST"),
        (Method::GET, "/api/v1/videos/upload", "POST"),
        (Method::GET, "/api/v1/videos/signed-upload-url", "POST"),
        (Method::DELETE, "/api/v1/videos/upload-complete", "POST"),
        (Method::PUT, "/api/v1/videos/jobs/1", "GET"),
        (Method::POST, "/api/v1/videos/1", "GET"),
        (Method::GET, "/api/v1/videos/1/metadata", "PUT"),
        (Method::GET, "/api/v1/jobs/1/cancel", "POST"),
        (Method::POST, "/api/v1/jobs/", "GET"),
        (Method::DELETE, "/users/me/videos", "GET"),
        (Method::POST, "/users/me/jobs", "GET"),
    ];
    for (method, path, allow) in cases {
        let res = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&alice.token)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 405, "{method} {path}");
        let allowed = res
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(
            body(res).await,
            json!({"detail": "Method Not Allowed"}),
            "{method} {path}"
        );
    }
    // The routes themselves still answer.
    let res = app.get("/api/v1/videos/abc", Some(&alice.token)).await;
    assert_validation(res, json!(["path", "video_id"]), "int_parsing", "video id").await;
    assert_eq!(
        app.get("/users/me/jobs", Some(&alice.token)).await.status(),
        200
    );
}

async fn an_upload_with_a_malformed_part_after_the_file_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = TestUser::new();
    let boundary = "XyZboundaryZyX";
    let mut raw = Vec::new();
    raw.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    raw.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n");
    raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhello\r\n");
    raw.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    // A control byte in a part header: not HTTP.
    raw.extend_from_slice(b"Content-Disposition: form-data; name=\"x\x1e\"\r\n\r\nv\r\n");
    raw.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let res = app
        .client
        .post(app.url("/test/upload"))
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(raw)
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 400, "{:?}", res.text().await);
    // Well-formed extra parts, before or after the file, are skipped.
    let mut raw = Vec::new();
    for (name, filename) in [("note", None), ("file", Some("b.txt")), ("other", None)] {
        raw.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        raw.extend_from_slice(
            format!("Content-Disposition: {disposition}\r\n\r\nv\r\n").as_bytes(),
        );
    }
    raw.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let res = app
        .client
        .post(app.url("/test/upload"))
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(raw)
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await["filename"], "b.txt");
}

/// The statuses `/openapi.json` lists for `method path`.
fn documented(doc: &Value, method: &str, path: &str) -> Vec<String> {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let mut codes: Vec<String> = op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    codes.sort();
    codes
}

async fn the_openapi_document_lists_the_error_statuses(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc = body(app.get("/openapi.json", None).await).await;
    let expect = |method: &str, path: &str, wanted: &[&str]| {
        let codes = documented(&doc, method, path);
        for w in wanted {
            assert!(
                codes.iter().any(|c| c == w),
                "{method} {path} lacks {w}: {codes:?}"
            );
        }
    };
    expect(
        "get",
        "/chats/",
        &["200", "401", "408", "422", "429", "503"],
    );
    expect("post", "/chats/", &["201", "401", "413", "422", "429"]);
    expect("get", "/chats/{chat_id}", &["200", "401", "404", "422"]);
    expect(
        "delete",
        "/chats/{chat_id}/members/{user_id}",
        &["204", "401", "403", "404", "422"],
    );
    expect("post", "/messages/", &["201", "401", "404", "413", "422"]);
    expect("get", "/users/me", &["200", "401", "503"]);
    expect(
        "get",
        "/api/v1/videos/{video_id}",
        &["200", "401", "404", "422"],
    );
    expect(
        "post",
        "/chat",
        &["200", "400", "401", "404", "413", "422", "429"],
    );
    expect("get", "/", &["200", "429"]);
    // Every authenticated operation documents 401, and every error answer has FastAPI's shape.
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                let codes = documented(&doc, method, path);
                assert!(
                    codes.iter().any(|c| c == "401"),
                    "{method} {path}: {codes:?}"
                );
            }
            let responses = op["responses"].as_object().expect("responses");
            if let Some(r) = responses.get("422") {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/HTTPValidationError",
                    "{method} {path} 422"
                );
            }
            if let Some(r) = responses.get("401") {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/HTTPError",
                    "{method} {path} 401"
                );
            }
        }
    }
}

on_both_backends!(
    control_characters_in_stored_strings_are_422_naming_the_field,
    upload_names_with_control_characters_are_refused,
    a_control_character_over_websocket_is_a_bad_request_frame,
    claims_with_control_characters_never_break_requests,
    json_with_trailing_data_is_json_invalid,
    the_openapi_document_lists_the_error_statuses,
    a_body_that_is_not_an_object_is_a_validation_error,
    integers_may_be_written_as_integral_floats,
    every_rest_path_answers_405_to_another_method,
    an_upload_with_a_malformed_part_after_the_file_is_refused,
);
