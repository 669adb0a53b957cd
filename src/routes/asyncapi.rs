//! The AsyncAPI 3.0 document of the WebSocket protocol (PROTOCOL.md), served at
//! `GET /asyncapi.json`.
//!
//! Its schemas are generated from the frame types of [`crate::realtime::frames`]: one message
//! per frame type, whose payload requires `type` as a `const` and every other field the frame
//! always carries, and allows no other field (`additionalProperties: false`, on the shapes
//! nested in frames too). The operations say who sends what: the server `receive`s the client
//! frames and `send`s the server frames on the one channel, `/ws`.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::realtime::frames::{ClientFrame, FrameInfo, ServerFrame};
use crate::realtime::protocol::PROTOCOL_VERSION;

/// Where the schemas live in the document.
const SCHEMAS: &str = "#/components/schemas/";
/// The id of the one channel.
const CHANNEL: &str = "ws";
/// The operation in which the server receives the client's frames.
pub const RECEIVE_OPERATION: &str = "receiveClientFrames";
/// The operation in which the server sends its frames.
pub const SEND_OPERATION: &str = "sendServerFrames";
/// Frames that answer a request carry its `id`.
const REPLIES: [&str; 6] = ["pong", "ack", "subscribed", "unsubscribed", "jobs", "error"];

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// The document (built once).
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// `GET /asyncapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// A frame placed in the document: its message's name and whether it is a client's request.
struct Placed {
    info: FrameInfo,
    client: bool,
}

fn build() -> Value {
    let frames = placed_frames();
    let (payloads, schemas) = frame_schemas(&frames);
    let catalogue = Catalogue::of(&frames, &payloads, &schemas);
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Echo realtime protocol",
            "version": PROTOCOL_VERSION.to_string(),
            "description": "The WebSocket protocol of Echo (`GET /ws`): chat rooms, messages, AI replies streamed token by token, and video job progress. Every frame, both ways, is one JSON object in one UTF-8 text message, with a string field `type`. Generated from the server's frame types; docs/PROTOCOL.md in the repository is the prose version (ordering, limits, close codes).",
        },
        "defaultContentType": "application/json",
        "channels": { CHANNEL: channel(catalogue.channel_messages) },
        "operations": operations(catalogue.received, catalogue.sent),
        "components": components(catalogue.messages, schemas),
    })
}

/// Every frame, client frames first.
fn placed_frames() -> Vec<Placed> {
    ClientFrame::list()
        .into_iter()
        .map(|info| Placed { info, client: true })
        .chain(ServerFrame::list().into_iter().map(|info| Placed {
            info,
            client: false,
        }))
        .collect()
}

/// Each frame's payload reference by message name, and every schema they use (tagged with
/// their `type`, closed to unknown fields).
fn frame_schemas(frames: &[Placed]) -> (Map<String, Value>, Map<String, Value>) {
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .for_serialize()
        .into_generator();
    let mut payloads = Map::new();
    for frame in frames {
        let reference = (frame.info.schema)(&mut generator).to_value();
        payloads.insert(frame.info.name.to_string(), reference);
    }
    let mut schemas = generator.take_definitions(true);
    for frame in frames {
        add_tag(&mut schemas, frame.info.name, frame.info.tag);
    }
    for schema in schemas.values_mut() {
        close_objects(schema);
    }
    (payloads, schemas)
}

/// The messages of the document and where each is listed.
struct Catalogue {
    /// `components.messages`.
    messages: Map<String, Value>,
    /// The channel's references to them.
    channel_messages: Map<String, Value>,
    /// The client frames (the `receive` operation's messages).
    received: Vec<Value>,
    /// The server frames (the `send` operation's messages).
    sent: Vec<Value>,
}

impl Catalogue {
    fn of(
        frames: &[Placed],
        payloads: &Map<String, Value>,
        schemas: &Map<String, Value>,
    ) -> Catalogue {
        let mut catalogue = Catalogue {
            messages: Map::new(),
            channel_messages: Map::new(),
            received: Vec::new(),
            sent: Vec::new(),
        };
        for frame in frames {
            let FrameInfo { tag, name, .. } = frame.info;
            let description = schemas
                .get(name)
                .and_then(|s| s.get("description"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut message = json!({
                "name": tag,
                "title": if frame.client { format!("{tag} (client)") } else { tag.to_string() },
                "summary": first_sentence(description),
                "contentType": "application/json",
                "payload": payloads.get(name).cloned().unwrap_or(Value::Null),
            });
            if frame.client || REPLIES.contains(&tag) {
                message["correlationId"] = json!({"$ref": "#/components/correlationIds/requestId"});
            }
            catalogue.messages.insert(name.to_string(), message);
            catalogue.channel_messages.insert(
                name.to_string(),
                json!({"$ref": format!("#/components/messages/{name}")}),
            );
            let in_channel = json!({"$ref": format!("#/channels/{CHANNEL}/messages/{name}")});
            if frame.client {
                catalogue.received.push(in_channel);
            } else {
                catalogue.sent.push(in_channel);
            }
        }
        catalogue
    }
}

/// The one channel: the WebSocket session, with its upgrade request's binding.
fn channel(messages: Map<String, Value>) -> Value {
    json!({
        "address": "/ws",
        "title": "WebSocket session",
        "description": "One WebSocket per tab or device. The server's first frame is `welcome`; the session then receives its user's feed (`job`, `member_added`, `member_removed`) and the events of the chats it subscribes to.",
        "messages": messages,
        "bindings": {
            "ws": {
                "method": "GET",
                "query": {
                    "type": "object",
                    "properties": {
                        "token": {"type": "string", "description": "The access token (JWT), for browsers; `Authorization: Bearer` is read first."}
                    }
                },
                "headers": {
                    "type": "object",
                    "properties": {
                        "Authorization": {"type": "string", "description": "`Bearer <jwt>`."},
                        "Sec-WebSocket-Protocol": {"type": "string", "description": "Optional; `echo.v1` is selected when offered."}
                    }
                },
                "bindingVersion": "0.1.0"
            }
        }
    })
}

/// The client's requests (`receive`) and the server's frames (`send`).
fn operations(received: Vec<Value>, sent: Vec<Value>) -> Value {
    let security = json!([
        {"$ref": "#/components/securitySchemes/bearer"},
        {"$ref": "#/components/securitySchemes/queryToken"}
    ]);
    json!({
        RECEIVE_OPERATION: {
            "action": "receive",
            "channel": {"$ref": format!("#/channels/{CHANNEL}")},
            "title": "Client frames",
            "summary": "The requests a client sends. A malformed one is answered with `error` `bad_request`; unknown fields are ignored by the server.",
            "security": security,
            "messages": received,
        },
        SEND_OPERATION: {
            "action": "send",
            "channel": {"$ref": format!("#/channels/{CHANNEL}")},
            "title": "Server frames",
            "summary": "Replies to requests (carrying the request's `id`) and events.",
            "security": security,
            "messages": sent,
        }
    })
}

/// The messages, schemas, correlation id and security schemes.
fn components(messages: Map<String, Value>, schemas: Map<String, Value>) -> Value {
    json!({
        "messages": messages,
        "schemas": schemas,
        "correlationIds": {
            "requestId": {
                "description": "A request's optional `id` (a string of at most 64 characters), echoed in its reply.",
                "location": "$message.payload#/id"
            }
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "The access token of the REST API, in `Authorization: Bearer` on the upgrade request."
            },
            "queryToken": {
                "type": "httpApiKey",
                "name": "token",
                "in": "query",
                "description": "The same token in the `token` query parameter (browsers cannot set headers on a WebSocket)."
            }
        }
    })
}

/// Adds `type: {const: tag}` to the frame schema `name` (to each alternative of a union).
fn add_tag(schemas: &mut Map<String, Value>, name: &str, tag: &str) {
    let alternatives: Vec<String> = match schemas.get(name) {
        Some(schema) => ["anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .filter_map(reference_of)
            .filter_map(|r| r.strip_prefix(SCHEMAS))
            .map(str::to_string)
            .collect(),
        None => return,
    };
    if !alternatives.is_empty() {
        for alt in alternatives {
            add_tag(schemas, &alt, tag);
        }
        return;
    }
    let Some(Value::Object(schema)) = schemas.get_mut(name) else {
        return;
    };
    let mut properties = Map::new();
    properties.insert(
        "type".into(),
        json!({"type": "string", "const": tag, "description": "The frame's type."}),
    );
    if let Some(Value::Object(fields)) = schema.remove("properties") {
        properties.extend(fields);
    }
    schema.insert("properties".into(), Value::Object(properties));
    let mut required = vec![Value::from("type")];
    if let Some(Value::Array(fields)) = schema.remove("required") {
        required.extend(fields);
    }
    schema.insert("required".into(), Value::Array(required));
    schema.insert("type".into(), json!("object"));
}

/// The schema a subschema refers to: `{"$ref": …}`, or `{"allOf": [{"$ref": …}], …}` as
/// draft 7 writes a reference with a description.
fn reference_of(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .or_else(|| schema.get("allOf")?.as_array()?.first()?.get("$ref"))
        .and_then(Value::as_str)
}

/// Sets `additionalProperties: false` on every object schema with `properties` that does not
/// say otherwise, so that an unknown or misspelt field fails validation.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            let is_object_schema = obj.get("properties").is_some_and(Value::is_object)
                && obj.get("type").and_then(Value::as_str) == Some("object");
            if is_object_schema && !obj.contains_key("additionalProperties") {
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            for value in obj.values_mut() {
                close_objects(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The first sentence of a description (a message's summary).
fn first_sentence(text: &str) -> String {
    let text = text
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .replace('\n', " ");
    match text.find(". ") {
        Some(end) => text[..=end].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of<'a>(doc: &'a Value, message: &str) -> &'a Value {
        let reference = doc["components"]["messages"][message]["payload"]["$ref"]
            .as_str()
            .unwrap();
        &doc["components"]["schemas"][reference.strip_prefix(SCHEMAS).unwrap()]
    }

    #[test]
    fn every_frame_is_a_message_whose_payload_requires_its_type() {
        let doc = document();
        assert_eq!(doc["asyncapi"], "3.0.0");
        let messages = doc["components"]["messages"].as_object().unwrap();
        assert_eq!(
            messages.len(),
            ClientFrame::list().len() + ServerFrame::list().len()
        );
        let welcome = schema_of(doc, "WelcomeFrame");
        assert_eq!(welcome["properties"]["type"]["const"], "welcome");
        assert_eq!(welcome["required"][0], "type");
        assert_eq!(welcome["additionalProperties"], false);
        assert_eq!(
            doc["components"]["schemas"]["SessionLimits"]["additionalProperties"],
            false
        );
        let ack = schema_of(doc, "AckFrame");
        assert_eq!(ack["anyOf"].as_array().unwrap().len(), 4);
        let send_ack = &doc["components"]["schemas"]["AckToSend"];
        assert_eq!(send_ack["properties"]["type"]["const"], "ack");
        assert_eq!(
            doc["operations"][SEND_OPERATION]["messages"]
                .as_array()
                .unwrap()
                .len(),
            ServerFrame::list().len()
        );
    }

    #[test]
    fn summaries_are_first_sentences() {
        assert_eq!(first_sentence("One. Two."), "One.");
        assert_eq!(first_sentence("One\nline.\n\nMore."), "One line.");
    }
}
