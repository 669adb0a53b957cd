//! The OpenAPI 3.1 document, generated from the handlers' annotations and types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    modifiers(&BearerAuth)
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
