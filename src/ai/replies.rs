//! Starting an AI reply: the one path shared by `POST /chat`, `POST /stream-message` and the
//! WebSocket `prompt`. Authorise, take a place in the limits, store the user's message (which
//! publishes it), then start the `Generation`.

use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::generation::{Generation, Launch};
use super::messages::StreamUpdate;
use super::registry::{LiveGeneration, Permit};
use crate::chat::service::PostMessage;
use crate::db::messages::Appended;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A user's message that asks for a reply.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The chat.
    pub chat_id: Uuid,
    /// Who asks.
    pub user_id: Uuid,
    /// The message.
    pub content: String,
    /// A model other than the default, if allowed.
    pub model: Option<String>,
    /// Idempotency key of the user's message.
    pub client_msg_id: Option<Uuid>,
    /// True when the caller reads the reply itself (a REST stream).
    pub stream_to_caller: bool,
}

/// A reply that has started.
pub struct StartedReply {
    /// The stored user message (the original one for a repeated `client_msg_id`).
    pub user_message: Appended,
    /// The generation.
    pub generation: Arc<LiveGeneration>,
    /// Every update of the reply, when the caller asked to read it.
    pub updates: Option<mpsc::UnboundedReceiver<StreamUpdate>>,
}

/// The model to use: the configured one, or another from `AI_ALLOWED_MODELS`.
pub fn choose_model(state: &AppState, requested: Option<&str>) -> ApiResult<String> {
    let ai = &state.settings.ai;
    match requested {
        None => Ok(ai.model.clone()),
        Some(m) if m == ai.model || ai.allowed_models.iter().any(|a| a == m) => Ok(m.to_string()),
        Some(m) => Err(ApiError::BadRequest(
            format!("Model {m:?} is not available on this server").into(),
        )),
    }
}

/// Stores the prompt and starts its reply. Must run on an actix arbiter (a request handler or
/// an actor), where the `Generation` actor will live.
pub async fn start(state: &AppState, prompt: Prompt) -> ApiResult<StartedReply> {
    let model = choose_model(state, prompt.model.as_deref())?;
    // 404 before 429: a chat the caller may not see does not exist, whatever the load.
    state.chats.get(prompt.user_id, prompt.chat_id).await?;
    let permit = state.generations.admit(prompt.user_id)?;
    // In a cluster the per-user limit counts the user's replies on every node.
    let permit = match state
        .broker
        .admit_user_reply(prompt.user_id, state.settings.ai.max_concurrent_per_user)
        .await?
    {
        Some(cluster) => Permit::new(move || drop((permit, cluster))),
        None => permit,
    };
    let user_message = state
        .chats
        .post(
            prompt.user_id,
            PostMessage {
                chat_id: prompt.chat_id,
                content: prompt.content,
                is_from_ai: false,
                client_msg_id: prompt.client_msg_id,
            },
        )
        .await?;
    let (caller, updates) = if prompt.stream_to_caller {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let generation = Generation::launch(Launch {
        state: state.clone(),
        chat_id: prompt.chat_id,
        user_id: prompt.user_id,
        model,
        through_seq: user_message.message.seq,
        permit,
        caller,
    });
    Ok(StartedReply {
        user_message,
        generation,
        updates,
    })
}
