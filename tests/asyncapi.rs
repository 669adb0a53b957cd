//! `GET /asyncapi.json`: the AsyncAPI 3.0 document of the WebSocket protocol, generated from
//! the frame types (src/realtime/frames.rs).
//!
//! - It is served, equal to the library's, and linked from `/docs`.
//! - The AsyncAPI initiative's parser (`@asyncapi/parser`, pinned in tests/node, installed with
//!   `npm ci` like the AI SDK tests' packages) accepts it, and rejects broken copies of it.
//! - PROTOCOL.md names every frame type it has, its frame tables list exactly those types, and
//!   its examples validate against it.
//! - The validator every WebSocket test runs on every frame it reads
//!   (tests/common/frame_schema.rs) refuses unknown types, missing, extra and ill-typed fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::frame_schema::{client_frames, server_frames, FrameSchemas};
use common::node::{ensure_node_packages, node_dir};
use common::{spawn_app, Backend};
use serde_json::{json, Value};

/// Runs tests/node/validate-asyncapi.mjs on `doc`: its exit code and report.
async fn parse_with_asyncapi_parser(doc: &Value) -> (Option<i32>, Value) {
    ensure_node_packages();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), doc.to_string()).expect("write the document");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(node_dir().join("validate-asyncapi.mjs"))
            .arg(file.path())
            .current_dir(node_dir())
            .output(),
    )
    .await
    .expect("the parser finished in time")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the parser script printed no report ({e}):\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

async fn served_document() -> Value {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app.get("/asyncapi.json", None).await;
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    res.json().await.expect("the document is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_and_linked_from_the_docs_page() {
    let app = spawn_app(Backend::Sqlite).await;
    let served: Value = app
        .get("/asyncapi.json", None)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(&served, echo::routes::asyncapi::document());
    assert_eq!(served["asyncapi"], "3.0.0");
    assert_eq!(served["channels"]["ws"]["address"], "/ws");
    let html = app.get("/docs", None).await.text().await.expect("docs");
    assert!(html.contains(r#"href="/asyncapi.json""#), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asyncapi_parser_accepts_the_document_and_rejects_broken_ones() {
    let doc = served_document().await;
    let (code, report) = parse_with_asyncapi_parser(&doc).await;
    assert_eq!(
        code,
        Some(0),
        "the parser rejected /asyncapi.json: {report:#}"
    );
    assert_eq!(report["valid"], true);
    assert_eq!(report["version"], "3.0.0");
    assert_eq!(report["channels"], json!(["/ws"]));
    let client = client_frames().types().len();
    let server = server_frames().types().len();
    assert_eq!(
        report["operations"],
        json!([
            {"id": "receiveClientFrames", "action": "receive", "messages": client},
            {"id": "sendServerFrames", "action": "send", "messages": server},
        ])
    );
    assert_eq!(
        report["messages"].as_array().map(Vec::len),
        Some(client + server)
    );

    // The same parser must refuse documents that are not valid AsyncAPI 3.0.
    // Each with a word its error diagnostic names (in the message or the path).
    let mut breakages: Vec<(&str, &str, Value)> = Vec::new();
    let mut d = doc.clone();
    d.as_object_mut().expect("object").remove("info");
    breakages.push(("no info", "info", d));
    let mut d = doc.clone();
    d["operations"]["sendServerFrames"]["action"] = json!("publish");
    breakages.push(("an AsyncAPI 2 action", "action", d));
    let mut d = doc.clone();
    d["channels"]["ws"]["messages"]["Ghost"] = json!({"$ref": "#/components/messages/Ghost"});
    breakages.push(("a reference to a missing message", "Ghost", d));
    let mut d = doc.clone();
    d["components"]["schemas"]["WelcomeFrame"]["properties"]["protocol"]["type"] = json!("integr");
    breakages.push(("a payload schema with an unknown type", "protocol.type", d));
    let mut d = doc.clone();
    d["asyncapi"] = json!("3.0.7");
    breakages.push(("an unknown AsyncAPI version", "3.0.7", d));
    for (what, word, broken) in breakages {
        let (code, report) = parse_with_asyncapi_parser(&broken).await;
        assert_eq!(code, Some(3), "{what}: the parser accepted it: {report:#}");
        assert_eq!(report["valid"], false, "{what}");
        let named = report["diagnostics"].as_array().is_some_and(|d| {
            d.iter().any(|d| {
                d["severity"] == "error" && format!("{} {}", d["message"], d["path"]).contains(word)
            })
        });
        assert!(
            named,
            "{what}: no error diagnostic names {word:?}: {report:#}"
        );
    }
}

fn protocol_md() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md")
}

/// PROTOCOL.md's text between the headings `from` and `to`.
fn section<'a>(doc: &'a str, from: &str, to: &str) -> &'a str {
    let start = doc.find(from).unwrap_or_else(|| panic!("no {from:?}"));
    let end = doc[start..].find(to).map_or(doc.len(), |i| start + i);
    &doc[start..end]
}

/// The types the rows of a frame table name: `| [`type`](#anchor) | … |`.
fn table_types(section: &str) -> Vec<String> {
    let mut types: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| [`"))
        .filter_map(|l| l.split_once("`]").map(|(t, _)| t.to_string()))
        .collect();
    types.sort();
    types
}

#[test]
fn protocol_md_names_every_frame_type_of_the_document() {
    let doc = protocol_md();
    for (direction, schemas) in [("client", client_frames()), ("server", server_frames())] {
        for t in schemas.types() {
            assert!(
                doc.contains(&format!("`{t}`")),
                "PROTOCOL.md does not name the {direction} frame type `{t}`"
            );
        }
    }
    // Its two frame tables list exactly the document's types.
    let client = section(&doc, "## Client frames", "### ");
    assert_eq!(table_types(client), client_frames().types());
    let server = section(&doc, "## Server frames", "### ");
    assert_eq!(table_types(server), server_frames().types());
}

/// The JSON examples of a section, each block possibly holding several frames. Examples with
/// elisions (`…`) are left out.
fn examples(section: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in section.split("```json").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        for value in serde_json::Deserializer::from_str(block).into_iter::<Value>() {
            let value = value.unwrap_or_else(|e| panic!("bad example JSON ({e}):\n{block}"));
            if !value.to_string().contains('…') {
                out.push(value);
            }
        }
    }
    out
}

#[test]
fn protocol_md_examples_match_the_document() {
    let doc = protocol_md();
    let cases: [(&str, &str, &FrameSchemas, usize); 2] = [
        ("## Client frames", "## Server frames", client_frames(), 8),
        ("## Server frames", "## Error codes", server_frames(), 20),
    ];
    for (from, to, schemas, at_least) in cases {
        let frames = examples(section(&doc, from, to));
        assert!(
            frames.len() >= at_least,
            "{from}: {} examples",
            frames.len()
        );
        for frame in frames {
            if let Err(why) = schemas.validate(&frame) {
                panic!("{from}: the example {frame} does not match the document:\n{why}");
            }
        }
    }
}

#[test]
fn the_frame_validator_refuses_what_the_document_does_not_allow() {
    let schemas = server_frames();
    let id = "3b0d6c1e-5a7f-4c2b-9e1d-2f4a6b8c0d11";
    let message = json!({"id": id, "chat_id": id, "content": "Hi", "is_from_ai": false,
        "role": "user", "user_id": id, "seq": 1, "created_at": "2026-01-02T03:04:05.123456Z"});
    let good = [
        json!({"type": "pong"}),
        json!({"type": "pong", "id": "p1"}),
        json!({"type": "ack", "id": "m1", "message_id": id, "seq": 4, "duplicate": false}),
        json!({"type": "ack", "id": "a1", "message_id": id, "seq": 4, "generation_id": id}),
        json!({"type": "ack", "generation_id": id}),
        json!({"type": "ack", "id": "r1"}),
        json!({"type": "message", "chat_id": id, "message": message}),
        json!({"type": "presence", "chat_id": id, "user_id": id, "state": "join"}),
    ];
    for frame in good {
        assert_eq!(schemas.validate(&frame), Ok(()), "{frame}");
    }
    let mut extra_nested = message.clone();
    extra_nested["likes"] = json!(3);
    let mut bad_date = message.clone();
    bad_date["created_at"] = json!("yesterday");
    let bad = [
        ("no type", json!({"id": "p1"})),
        ("an unknown type", json!({"type": "dance"})),
        ("an extra field", json!({"type": "pong", "extra": 1})),
        (
            "a misspelt field",
            json!({"type": "typing", "chat_id": id, "userid": id}),
        ),
        (
            "a missing field",
            json!({"type": "presence", "chat_id": id, "user_id": id}),
        ),
        (
            "a wrong type",
            json!({"type": "token", "chat_id": id, "generation_id": id,
            "index": "0", "delta": "x"}),
        ),
        (
            "a value outside the enum",
            json!({"type": "presence", "chat_id": id,
            "user_id": id, "state": "away"}),
        ),
        ("a null id", json!({"type": "pong", "id": null})),
        (
            "an ack mixing two replies",
            json!({"type": "ack", "generation_id": id,
            "duplicate": true}),
        ),
        (
            "an extra field in a nested shape",
            json!({"type": "message", "chat_id": id, "message": extra_nested}),
        ),
        (
            "a timestamp that is not RFC 3339",
            json!({"type": "message", "chat_id": id, "message": bad_date}),
        ),
        (
            "an unknown error code",
            json!({"type": "error", "code": "oops", "message": "x"}),
        ),
        ("a client frame", json!({"type": "ping", "id": "p1"})),
    ];
    for (what, frame) in bad {
        assert!(
            schemas.validate(&frame).is_err(),
            "{what} was accepted: {frame}"
        );
    }
}
