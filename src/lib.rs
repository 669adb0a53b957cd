//! Echo: an actor-based realtime server for chats, AI replies and video jobs.
//!
//! `main.rs` only parses the command line; everything else lives here, so that the integration
//! tests build the very application the binary runs, through [`startup::Application`]. (The
//! load generator, `load-tests/`, is a separate crate that does not depend on this library: it
//! only speaks HTTP and WebSocket to a running server.)
//!
//! The modules form layers, each importing only its own layer or those below: `LAYERS` in
//! `tests/layers.rs` states the order (and the test checks it); docs/ARCHITECTURE.md explains
//! it.

pub mod ai;
pub mod api_types;
pub mod auth;
pub mod broker;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod realtime;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod video;
