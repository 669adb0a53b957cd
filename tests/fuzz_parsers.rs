//! Property-based tests of the request parsers: the WebSocket client-frame parser
//! (`realtime::protocol::parse`) and every JSON request body (`extract::parse_json_body`).
//! Arbitrary text, arbitrary JSON and near-valid bodies never panic; each gives a typed value or
//! a protocol error / a 4xx `ApiError`, and whatever is accepted keeps the input rules of
//! docs/INPUT-RULES.md. Case counts are modest so the whole file runs in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use actix_web::ResponseError;
use echo::error::ApiError;
use echo::extract::{parse_json_body, Text, Validate};
use echo::realtime::protocol::{self, Request, MAX_ID_LEN};
use echo::routes::ai::{ChatStreamRequest, StreamMessageRequest};
use echo::routes::app::DevTokenRequest;
use echo::routes::chats::{ChatWrite, MemberAdd};
use echo::routes::messages::{MessageCreate, MAX_CONTENT_CHARS};
use echo::routes::videos::{MetadataUpdate, SignedUploadRequest, UploadCompleteRequest};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// Field names the parsers know, so that generated objects reach their validation.
const KEYS: &[&str] = &[
    "type",
    "id",
    "chat_id",
    "content",
    "since_seq",
    "client_msg_id",
    "model",
    "generation_id",
    "token",
    "title",
    "user_id",
    "is_from_ai",
    "messages",
    "role",
    "parts",
    "text",
    "trigger",
    "messageId",
    "data",
    "protocol",
    "filename",
    "content_type",
    "video_id",
    "original_filename",
    "size_bytes",
    "storage_path",
    "description",
    "tags",
    "name",
];

/// Strings that matter to the parsers: control characters, UUIDs, the protocol's names.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z \\t\\n\\r\\x00-\\x1f\\x7f]{0,12}",
        Just("7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e".to_string()),
        Just("video/mp4".to_string()),
        Just("user".to_string()),
        Just("submit-message".to_string()),
        prop::sample::select(vec![
            "ping",
            "subscribe",
            "unsubscribe",
            "send",
            "prompt",
            "cancel",
            "typing",
            "jobs",
            "refresh_token",
            "text",
            "data",
            "ui",
        ])
        .prop_map(str::to_string),
    ]
}

/// Arbitrary JSON, biased towards the parsers' own field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            any::<f64>(),
            Just(3.0),
            Just(-0.0),
            Just(1e300),
            Just(2147483648.0)
        ]
        .prop_filter("JSON numbers are finite", |f| f.is_finite())
        .prop_map(Value::from),
        interesting_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(str::to_string),
            1 => any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object of known fields with arbitrary values (closer to a real body or frame).
fn near_valid_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..10).prop_map(|kv| {
        Value::Object(
            kv.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<_, _>>(),
        )
    })
}

/// The rule of docs/INPUT-RULES.md, written out independently of `Text::forbids`: no C0 control
/// character or DEL, but free text may hold tab, line feed and carriage return.
fn no_forbidden(s: &str, kind: Text) -> bool {
    let allowed = |c: char| match kind {
        Text::Free => matches!(c, '\t' | '\n' | '\r'),
        Text::Line => false,
    };
    !s.chars()
        .any(|c| (c <= '\u{1f}' || c == '\u{7f}') && !allowed(c))
}

/// The WebSocket parser's contract for one frame.
fn check_frame(text: &str) -> Result<(), TestCaseError> {
    match protocol::parse(text) {
        Ok((id, req)) => {
            prop_assert!(id.as_ref().is_none_or(|i| i.chars().count() <= MAX_ID_LEN));
            let _ = protocol::kind(&req);
            // A frame is exactly one JSON object.
            let value: Value = serde_json::from_str(text).map_err(|e| {
                TestCaseError::fail(format!("accepted a frame that is not JSON: {e}"))
            })?;
            prop_assert!(value.is_object());
            if let Request::Send { content, .. } | Request::Prompt { content, .. } = &req {
                prop_assert_eq!(Some(content.as_str()), value["content"].as_str());
            }
        }
        Err(bad) => {
            prop_assert!(!bad.message.is_empty());
            prop_assert!(bad
                .id
                .as_ref()
                .is_none_or(|i| i.chars().count() <= MAX_ID_LEN));
            // The error frame sent back is JSON with the protocol's fields.
            let frame = protocol::error_frame(&bad.id, "bad_request", &bad.message);
            let v: Value = serde_json::from_str(&frame)
                .map_err(|e| TestCaseError::fail(format!("error frame is not JSON: {e}")))?;
            prop_assert_eq!(&v["type"], "error");
        }
    }
    Ok(())
}

/// The body parser's contract for one body type: a value (which `check` then inspects) or a
/// 4xx in FastAPI's shape.
fn check_body<T: DeserializeOwned + Validate>(
    bytes: &[u8],
    check: impl FnOnce(&T) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    match parse_json_body::<T>(bytes) {
        Ok(value) => {
            let parsed: Value = serde_json::from_slice(bytes).map_err(|e| {
                TestCaseError::fail(format!("accepted a body that is not JSON: {e}"))
            })?;
            prop_assert!(parsed.is_object(), "accepted a non-object body");
            check(&value)
        }
        Err(e) => {
            let status = e.status_code().as_u16();
            prop_assert!((400..500).contains(&status), "{status}: {e:?}");
            if let ApiError::Validation(issues) = &e {
                prop_assert!(!issues.is_empty());
                for issue in issues {
                    prop_assert_eq!(issue.loc.first(), Some(&json!("body")));
                    prop_assert!(!issue.kind.is_empty() && !issue.msg.is_empty());
                }
            }
            Ok(())
        }
    }
}

/// Every body type against the same input; accepted values keep the input rules.
fn check_every_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    let line = |s: &Option<String>, max: usize| {
        s.as_ref()
            .is_none_or(|s| no_forbidden(s, Text::Line) && s.chars().count() <= max)
    };
    check_body::<ChatWrite>(bytes, |b| {
        prop_assert!(line(&b.title, 255));
        Ok(())
    })?;
    check_body::<MemberAdd>(bytes, |_| Ok(()))?;
    check_body::<MessageCreate>(bytes, |b| {
        let n = b.content.chars().count();
        prop_assert!((1..=MAX_CONTENT_CHARS).contains(&n));
        prop_assert!(no_forbidden(&b.content, Text::Free));
        Ok(())
    })?;
    check_body::<StreamMessageRequest>(bytes, |b| {
        prop_assert!(!b.content.is_empty() && no_forbidden(&b.content, Text::Free));
        Ok(())
    })?;
    check_body::<ChatStreamRequest>(bytes, |b| {
        prop_assert!(!b.messages.is_empty());
        Ok(())
    })?;
    check_body::<SignedUploadRequest>(bytes, |b| {
        prop_assert!(no_forbidden(&b.filename, Text::Line));
        prop_assert!(no_forbidden(&b.content_type, Text::Line));
        Ok(())
    })?;
    check_body::<UploadCompleteRequest>(bytes, |b| {
        prop_assert!(b.size_bytes >= 0);
        prop_assert!(no_forbidden(&b.original_filename, Text::Line));
        Ok(())
    })?;
    check_body::<MetadataUpdate>(bytes, |b| {
        prop_assert!(line(&b.title, 255));
        prop_assert!(b
            .description
            .as_ref()
            .is_none_or(|d| no_forbidden(d, Text::Free)));
        let tags = b.tags.as_deref().unwrap_or_default();
        prop_assert!(tags.len() <= 50);
        prop_assert!(tags
            .iter()
            .all(|t| no_forbidden(t, Text::Line) && t.chars().count() <= 64));
        Ok(())
    })?;
    check_body::<DevTokenRequest>(bytes, |b| {
        prop_assert!(line(&b.name, 64));
        Ok(())
    })?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_frame_is_a_request_or_a_protocol_error(text in any::<String>()) {
        check_frame(&text)?;
    }

    #[test]
    fn any_bytes_as_a_frame_are_a_request_or_a_protocol_error(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_frame(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn any_json_frame_is_a_request_or_a_protocol_error(value in json_value()) {
        check_frame(&value.to_string())?;
    }

    #[test]
    fn frames_with_known_fields_are_a_request_or_a_protocol_error(mut value in near_valid_object(), kind in interesting_string()) {
        value["type"] = json!(kind);
        check_frame(&value.to_string())?;
    }

    #[test]
    fn a_frame_with_trailing_data_is_refused(value in near_valid_object(), ws in "[ \\t\\r\\n]{0,3}", tail in "[^ \\t\\r\\n]\\PC{0,8}") {
        let text = format!("{value}{ws}{tail}");
        prop_assert!(protocol::parse(&text).is_err(), "accepted {text:?}");
    }

    #[test]
    fn any_bytes_as_a_body_are_a_value_or_a_4xx(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        check_every_body(&bytes)?;
    }

    #[test]
    fn any_json_body_is_a_value_or_a_4xx(value in json_value()) {
        check_every_body(value.to_string().as_bytes())?;
    }

    #[test]
    fn bodies_with_known_fields_are_a_value_or_a_4xx(value in near_valid_object()) {
        check_every_body(value.to_string().as_bytes())?;
    }

    #[test]
    fn a_body_with_trailing_data_is_json_invalid(value in near_valid_object(), ws in "[ \\t\\r\\n]{0,3}", tail in "[^ \\t\\r\\n]\\PC{0,8}") {
        let raw = format!("{value}{ws}{tail}");
        match parse_json_body::<ChatWrite>(raw.as_bytes()) {
            Err(ApiError::Validation(issues)) => prop_assert_eq!(issues[0].kind.as_str(), "json_invalid"),
            other => prop_assert!(false, "{raw:?} gave {other:?}"),
        }
    }

    #[test]
    fn valid_message_bodies_are_accepted_exactly_when_the_content_keeps_the_rule(content in "\\PC{0,4}[\\x00-\\x1f\\x7f]?\\PC{0,4}") {
        let raw = json!({"content": content, "chat_id": "7f9c0b5e-0d7c-4a43-9a8e-4b1f2a3c4d5e"}).to_string();
        let ok = !content.is_empty() && no_forbidden(&content, Text::Free);
        match parse_json_body::<MessageCreate>(raw.as_bytes()) {
            Ok(b) => prop_assert!(ok && b.content == content),
            Err(ApiError::Validation(issues)) => {
                prop_assert!(!ok);
                prop_assert_eq!(&issues[0].loc, &vec![json!("body"), json!("content")]);
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}
