//! Echo: an actor-based realtime server for chats, AI replies and video jobs.
//!
//! `main.rs` only parses the command line; everything else lives here so that the tests and
//! the load generator build the same application through [`startup::Application`].

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod ai;
pub mod api_types;
pub mod asyncapi;
pub mod auth;
pub mod broker;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod realtime;
pub mod routes;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod video;
