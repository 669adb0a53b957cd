//! Client frames of docs/PROTOCOL.md, parsed with errors that say what is wrong, and the reply
//! frames that are not room events.

use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::frames::{ErrorFrame, ServerFrame};

/// Protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request `id` accepted.
pub const MAX_ID_LEN: usize = 64;

/// A parsed client request.
#[derive(Debug)]
pub enum Request {
    /// `ping`.
    Ping,
    /// `subscribe`.
    Subscribe {
        /// The chat.
        chat_id: Uuid,
        /// Highest seq the client has.
        since_seq: Option<i64>,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// The chat.
        chat_id: Uuid,
    },
    /// `send`.
    Send {
        /// The chat.
        chat_id: Uuid,
        /// The text.
        content: String,
        /// Idempotency key.
        client_msg_id: Option<Uuid>,
    },
    /// `prompt`.
    Prompt {
        /// The chat.
        chat_id: Uuid,
        /// The user's message.
        content: String,
        /// Model override.
        model: Option<String>,
    },
    /// `cancel`.
    Cancel {
        /// The generation to stop.
        generation_id: Uuid,
    },
    /// `typing`.
    Typing {
        /// The chat.
        chat_id: Uuid,
    },
    /// `jobs`.
    Jobs,
    /// `refresh_token`.
    RefreshToken {
        /// The new token.
        token: String,
    },
}

/// A request that could not be parsed: the `id` (if it had a usable one) and why.
#[derive(Debug)]
pub struct BadRequest {
    /// The request's `id`, when readable.
    pub id: Option<String>,
    /// What was wrong.
    pub message: String,
}

#[derive(Deserialize)]
struct ChatOnly {
    chat_id: Uuid,
}

#[derive(Deserialize)]
struct SubscribeBody {
    chat_id: Uuid,
    #[serde(default)]
    since_seq: Option<i64>,
}

#[derive(Deserialize)]
struct SendBody {
    chat_id: Uuid,
    content: String,
    #[serde(default)]
    client_msg_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct PromptBody {
    chat_id: Uuid,
    content: String,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct CancelBody {
    generation_id: Uuid,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

fn fields<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            inner.replace('`', "")
        } else {
            format!("{path}: {}", inner.replace('`', ""))
        }
    })
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<(Option<String>, Request), BadRequest> {
    let bad = |id: Option<String>, message: String| BadRequest { id, message };
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(None, format!("malformed JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(bad(None, "a frame must be a JSON object".into()));
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_LEN => Some(s.clone()),
        Some(Value::String(_)) => {
            return Err(bad(
                None,
                format!("id is longer than {MAX_ID_LEN} characters"),
            ))
        }
        Some(_) => return Err(bad(None, "id must be a string".into())),
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Err(bad(id, "missing field type".into()));
    };
    let req = match kind {
        "ping" => Ok(Request::Ping),
        "subscribe" => fields::<SubscribeBody>(&value).map(|b| Request::Subscribe {
            chat_id: b.chat_id,
            since_seq: b.since_seq,
        }),
        "unsubscribe" => {
            fields::<ChatOnly>(&value).map(|b| Request::Unsubscribe { chat_id: b.chat_id })
        }
        "send" => fields::<SendBody>(&value).map(|b| Request::Send {
            chat_id: b.chat_id,
            content: b.content,
            client_msg_id: b.client_msg_id,
        }),
        "prompt" => fields::<PromptBody>(&value).map(|b| Request::Prompt {
            chat_id: b.chat_id,
            content: b.content,
            model: b.model,
        }),
        "cancel" => fields::<CancelBody>(&value).map(|b| Request::Cancel {
            generation_id: b.generation_id,
        }),
        "typing" => fields::<ChatOnly>(&value).map(|b| Request::Typing { chat_id: b.chat_id }),
        "jobs" => Ok(Request::Jobs),
        "refresh_token" => {
            fields::<TokenBody>(&value).map(|b| Request::RefreshToken { token: b.token })
        }
        other => Err(format!("unknown type {other:?}")),
    };
    match req {
        Ok(r) => Ok((id, r)),
        Err(message) => Err(bad(id, message)),
    }
}

/// The `id` of a frame that is not parsed further (one refused by the rate limit), when it
/// has a usable one.
pub fn request_id(text: &str) -> Option<String> {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
        .filter(|i| i.chars().count() <= MAX_ID_LEN)
}

/// The `type` of a request, for metrics.
pub fn kind(req: &Request) -> &'static str {
    match req {
        Request::Ping => "ping",
        Request::Subscribe { .. } => "subscribe",
        Request::Unsubscribe { .. } => "unsubscribe",
        Request::Send { .. } => "send",
        Request::Prompt { .. } => "prompt",
        Request::Cancel { .. } => "cancel",
        Request::Typing { .. } => "typing",
        Request::Jobs => "jobs",
        Request::RefreshToken { .. } => "refresh_token",
    }
}

/// A server frame as the text message that carries it.
pub fn encode(frame: &ServerFrame) -> ByteString {
    match serde_json::to_string(frame) {
        Ok(text) => ByteString::from(text),
        Err(e) => {
            // Cannot happen with these types (string keys only); said rather than hidden.
            tracing::error!(error = %e, kind = frame.kind(), "a server frame did not serialise");
            ByteString::from_static(
                r#"{"type":"error","code":"internal","message":"internal error"}"#,
            )
        }
    }
}

/// An `error` frame.
pub fn error_frame(id: &Option<String>, code: &str, message: &str) -> ByteString {
    encode(&ServerFrame::Error(ErrorFrame {
        id: id.clone(),
        code: code.to_string(),
        message: message.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_without_chat_id_names_the_field_and_keeps_the_id() {
        let err = parse(r#"{"type":"send","id":"r1","content":"x"}"#).unwrap_err();
        assert_eq!(err.id.as_deref(), Some("r1"));
        assert!(err.message.contains("chat_id"), "{}", err.message);
    }

    #[test]
    fn unknown_types_and_malformed_json_are_bad_requests() {
        assert!(parse(r#"{"type":"dance","id":"a"}"#)
            .unwrap_err()
            .message
            .contains("unknown type"));
        assert!(parse("{nope").unwrap_err().message.contains("malformed"));
    }

    #[test]
    fn a_long_id_is_refused() {
        let long = "x".repeat(65);
        let err = parse(&format!(r#"{{"type":"ping","id":"{long}"}}"#)).unwrap_err();
        assert!(err.message.contains("64"));
    }
}
