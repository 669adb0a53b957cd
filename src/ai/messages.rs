//! Messages to the `Generation` actor, and the updates it streams to REST readers.

use actix::prelude::*;

use super::{FinishReason, Usage};

/// WebSocket `cancel` (through the registry) → Generation: stop now, keeping what was generated.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CancelGeneration;

/// Generation → its REST readers: what happened next to the reply.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamUpdate {
    /// The next token.
    Delta(String),
    /// The reply was stored and is complete (or was cancelled).
    Finished {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The reply failed; the message is safe to show.
    Failed {
        /// What went wrong.
        error: String,
    },
}
