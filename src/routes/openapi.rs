//! The OpenAPI 3.1 document, generated from the handlers' annotations and types.
//!
//! Each handler documents its own outcomes (200, 404, 409, …); `ErrorResponses` then adds the
//! statuses every operation of a kind can answer, so that the document lists everything the
//! server may send (a schema fuzzer checks it in `scripts/test`):
//!
//! - every operation: 408 (the request did not arrive in time), 429 (rate limited) and 500;
//! - an authenticated one: 401 (missing or invalid token) and 503 (the database is
//!   unavailable: the caller's row is upserted on every request);
//! - with a request body: 400 (the body could not be read), 413 (over the size limit);
//! - authenticated with parameters or a body: 422 (FastAPI's validation error list).
//!
//! Error answers have FastAPI's shapes: `HTTPError` (`{"detail": "…"}`) and
//! `HTTPValidationError` (`{"detail": [{"loc", "msg", "type"}]}`).

use utoipa::openapi::encoding::EncodingBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes;

/// Every REST operation of Echo.
#[derive(OpenApi)]
#[openapi(
    info(title = "Echo API", description = "Chats, messages, AI replies and video jobs; legacy-compatible with the FastAPI service."),
    paths(
        routes::meta::root, routes::meta::health, routes::meta::metrics, routes::meta::openapi,
        routes::users::me, routes::users::get_user,
        routes::chats::list_chats, routes::chats::create_chat, routes::chats::get_chat,
        routes::chats::update_chat, routes::chats::delete_chat, routes::chats::add_member,
        routes::chats::remove_member, routes::chats::list_messages,
        routes::messages::create_message,
        routes::ai::chat, routes::ai::stream_message, routes::ai::resume,
        routes::videos::test_upload, routes::videos::upload_video,
        routes::videos::signed_upload_url, routes::videos::upload_complete,
        routes::videos::get_video, routes::videos::update_metadata, routes::videos::get_job,
        routes::videos::list_jobs, routes::videos::cancel_job, routes::videos::my_videos,
        routes::videos::my_jobs, routes::files::get_file, routes::files::put_file,
    ),
    modifiers(&BearerAuth, &ErrorResponses, &VideoPart)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds the statuses common to every operation of a kind, and FastAPI's error bodies to the
/// error answers (see the module documentation).
struct ErrorResponses;

/// Schema of `{"detail": "…"}`.
const HTTP_ERROR: &str = "HTTPError";
/// Schema of one entry of a 422 `detail` list.
const VALIDATION_ERROR: &str = "ValidationError";
/// Schema of a 422 body.
const HTTP_VALIDATION_ERROR: &str = "HTTPValidationError";

impl ErrorResponses {
    fn add_schemas(openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            HTTP_ERROR.to_string(),
            ObjectBuilder::new()
                .description(Some("An error, as FastAPI's HTTPException answers it."))
                .property(
                    "detail",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("What went wrong.")),
                )
                .required("detail")
                .into(),
        );
        let loc_item = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Integer));
        components.schemas.insert(
            VALIDATION_ERROR.to_string(),
            ObjectBuilder::new()
                .property(
                    "loc",
                    ArrayBuilder::new().items(loc_item).description(Some(
                        "Where: `[\"body\", \"title\"]`, `[\"query\", \"limit\"]`, `[\"path\", \"chat_id\"]`.",
                    )),
                )
                .required("loc")
                .property("msg", ObjectBuilder::new().schema_type(Type::String))
                .required("msg")
                .property(
                    "type",
                    ObjectBuilder::new().schema_type(Type::String).description(Some(
                        "`missing`, `json_invalid`, `string_too_long`, `string_control_character`, …",
                    )),
                )
                .required("type")
                .into(),
        );
        components.schemas.insert(
            HTTP_VALIDATION_ERROR.to_string(),
            ObjectBuilder::new()
                .description(Some("A validation error, as FastAPI answers 422."))
                .property(
                    "detail",
                    ArrayBuilder::new().items(Ref::from_schema_name(VALIDATION_ERROR)),
                )
                .required("detail")
                .into(),
        );
    }

    /// Adds `code` with `description` unless the operation documents it already.
    fn ensure(op: &mut Operation, code: &str, description: &str) {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| ResponseBuilder::new().description(description).into());
    }

    fn document(op: &mut Operation) {
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
        let has_body = op.request_body.is_some();
        Self::ensure(op, "408", "The request did not arrive in time");
        Self::ensure(op, "429", "Too many requests; retry later");
        Self::ensure(op, "500", "Internal error");
        if secured {
            Self::ensure(op, "401", "Missing or invalid bearer token");
            Self::ensure(op, "503", "The database is unavailable");
        }
        if has_body {
            Self::ensure(op, "400", "The body could not be read");
            Self::ensure(op, "413", "The body is over the size limit");
        }
        if secured && (has_params || has_body) {
            Self::ensure(op, "422", "Invalid parameters or body");
        }
        // Every error answer of an operation is FastAPI-shaped (the handlers that answer
        // something else declare its content themselves).
        for (code, response) in op.responses.responses.iter_mut() {
            let utoipa::openapi::RefOr::T(response) = response else {
                continue;
            };
            if !response.content.is_empty() || !(code.starts_with('4') || code.starts_with('5')) {
                continue;
            }
            let schema = if code == "422" {
                HTTP_VALIDATION_ERROR
            } else {
                HTTP_ERROR
            };
            response.content.insert(
                "application/json".to_string(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            );
        }
    }
}

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        Self::add_schemas(openapi);
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                Self::document(op);
            }
        }
    }
}

/// The video upload's `file` part must be a `video/*` one (annotations cannot say so).
struct VideoPart;

impl Modify for VideoPart {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let content = openapi
            .paths
            .paths
            .get_mut("/api/v1/videos/upload")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
            .and_then(|body| body.content.get_mut("multipart/form-data"));
        if let Some(content) = content {
            content.encoding.insert(
                "file".to_string(),
                EncodingBuilder::new().content_type(Some("video/*")).build(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{FREE_PATTERN, LINE_PATTERN, UUID_PATTERN};
    use crate::routes::videos::{PART_NAME_PATTERN, VIDEO_TYPE_PATTERN};
    use serde_json::Value;

    fn patterns(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("pattern", Value::String(p)) => out.push(p.clone()),
                        _ => patterns(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| patterns(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_pattern_of_the_document_is_one_the_server_applies() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let mut found = Vec::new();
        patterns(&doc, &mut found);
        let known = [
            LINE_PATTERN,
            FREE_PATTERN,
            UUID_PATTERN,
            VIDEO_TYPE_PATTERN,
            PART_NAME_PATTERN,
        ];
        assert!(found.len() >= 10, "{found:?}");
        for p in &found {
            assert!(known.contains(&p.as_str()), "unknown pattern {p}");
        }
        let schemas = &doc["components"]["schemas"];
        let pattern =
            |schema: &str, field: &str| schemas[schema]["properties"][field]["pattern"].clone();
        assert_eq!(pattern("ChatWrite", "title"), LINE_PATTERN);
        assert_eq!(pattern("MessageCreate", "content"), FREE_PATTERN);
        assert_eq!(pattern("MessageCreate", "client_msg_id"), UUID_PATTERN);
        assert_eq!(pattern("MetadataUpdate", "description"), FREE_PATTERN);
        assert_eq!(pattern("MetadataUpdate", "title"), LINE_PATTERN);
        assert_eq!(
            pattern("SignedUploadRequest", "content_type"),
            VIDEO_TYPE_PATTERN
        );
    }
}
