//! Validates WebSocket frames against the AsyncAPI document (`GET /asyncapi.json`, built here
//! in-process from the library: the same value the server serves). [`super::ws::WsClient`]
//! checks every frame it reads, so every WebSocket test also checks that what the server sends
//! is what the document says: an unknown `type`, a missing required field, an extra field or a
//! wrong type fails the test with the frame printed.

use std::collections::HashMap;
use std::sync::OnceLock;

use echo::routes::asyncapi::{RECEIVE_OPERATION, SEND_OPERATION};
use jsonschema::Validator;
use serde_json::{json, Value};

/// Which side sends a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client frames (the server's `receive` operation).
    Client,
    /// Server frames (the server's `send` operation).
    Server,
}

/// The validators of one direction, by `type`.
pub struct FrameSchemas {
    by_type: HashMap<String, Vec<(String, Validator)>>,
}

impl FrameSchemas {
    /// The validators of `direction`'s frames, built from `doc`.
    pub fn from_document(doc: &Value, direction: Direction) -> FrameSchemas {
        let operation = match direction {
            Direction::Client => RECEIVE_OPERATION,
            Direction::Server => SEND_OPERATION,
        };
        let refs = doc["operations"][operation]["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("operation {operation} lists no messages"));
        let mut by_type: HashMap<String, Vec<(String, Validator)>> = HashMap::new();
        for r in refs {
            let name = r["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .expect("a message reference");
            let message = &doc["components"]["messages"][name];
            let payload = &message["payload"];
            assert!(payload.is_object(), "message {name} has no payload");
            let schema = json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "allOf": [payload],
                "components": {"schemas": doc["components"]["schemas"].clone()},
            });
            let validator = jsonschema::draft7::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("the schema of {name} does not compile: {e}"));
            let tags = type_consts(doc, payload);
            assert!(!tags.is_empty(), "message {name} has no `type` const");
            for tag in tags {
                by_type
                    .entry(tag)
                    .or_default()
                    .push((name.to_string(), validator.clone()));
            }
        }
        FrameSchemas { by_type }
    }

    /// The `type`s of this direction.
    pub fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.by_type.keys().cloned().collect();
        types.sort();
        types
    }

    /// Checks `frame` against the schema of the message its `type` names; `Err` says why.
    pub fn validate(&self, frame: &Value) -> Result<(), String> {
        let Some(kind) = frame.get("type").and_then(Value::as_str) else {
            return Err("the frame has no string `type`".into());
        };
        let Some(candidates) = self.by_type.get(kind) else {
            return Err(format!("no message of the document has type {kind:?}"));
        };
        let mut problems = Vec::new();
        for (name, validator) in candidates {
            let errors: Vec<String> = validator
                .iter_errors(frame)
                .map(|e| format!("{e} (at {})", e.instance_path()))
                .collect();
            if errors.is_empty() {
                return Ok(());
            }
            problems.push(format!("{name}: {}", errors.join("; ")));
        }
        Err(problems.join("\n"))
    }
}

/// The `type` consts a payload schema allows (through references and unions).
fn type_consts(doc: &Value, schema: &Value) -> Vec<String> {
    let schema = resolve(doc, schema);
    if let Some(tag) = schema["properties"]["type"]["const"].as_str() {
        return vec![tag.to_string()];
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| schema[*k].as_array())
        .flatten()
        .flat_map(|alt| type_consts(doc, alt))
        .collect()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(
            doc,
            doc.pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("unresolved {r}")),
        ),
        None => schema,
    }
}

/// The server frames' validators, built once per test process from the library's document.
pub fn server_frames() -> &'static FrameSchemas {
    static SCHEMAS: OnceLock<FrameSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        FrameSchemas::from_document(echo::routes::asyncapi::document(), Direction::Server)
    })
}

/// The client frames' validators.
pub fn client_frames() -> &'static FrameSchemas {
    static SCHEMAS: OnceLock<FrameSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        FrameSchemas::from_document(echo::routes::asyncapi::document(), Direction::Client)
    })
}

/// Panics, printing the frame, unless `frame` is a server frame the document describes.
pub fn check_server_frame(frame: &Value) {
    if let Err(why) = server_frames().validate(frame) {
        panic!("the server sent a frame that /asyncapi.json does not allow:\n{frame}\n{why}");
    }
}
