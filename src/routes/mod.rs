//! HTTP routes: thin handlers that parse, call a service, and shape the response.

pub mod ai;
pub mod app;
pub mod asyncapi;
pub mod chats;
pub mod files;
pub mod messages;
pub mod meta;
pub mod middleware;
pub mod openapi;
pub mod sdk_stream;
pub mod users;
pub mod videos;
pub mod ws;

use actix_web::web;

/// Registers every REST route. Collection paths answer with and without the trailing slash,
/// as FastAPI clients use both.
pub fn configure(cfg: &mut web::ServiceConfig) {
    meta::configure(cfg);
    users::configure(cfg);
    chats::configure(cfg);
    messages::configure(cfg);
    ws::configure(cfg);
    ai::configure(cfg);
    app::configure(cfg);
    videos::configure(cfg);
}
