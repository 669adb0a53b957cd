//! [`Replies`]: AI replies as a service, and the narrow environment each `Generation` gets.
//! Starting a reply is the one path shared by `POST /chat`, `POST /stream-message` and the
//! WebSocket `prompt`: authorise, take a place in the limits, store the user's message through
//! the chat service (which publishes it), then start the `Generation`. Cancelling, resuming and
//! the snapshots a late subscriber gets are here too, for REST and WebSocket alike.

use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::cluster::{ReplyCluster, RoomWatch};
use super::generation::{Generation, Launch};
use super::messages::StreamUpdate;
use super::registry::{GenerationRegistry, LiveGeneration, Permit, Refusal, Snapshot};
use super::AiProvider;
use crate::broker::Broker;
use crate::chat::service::PostMessage;
use crate::chat::ChatService;
use crate::config::AiSettings;
use crate::db::messages::Appended;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// What AI replies need, and all a `Generation` sees: no HTTP, no sessions, no whole-node state.
pub struct Replies {
    /// `AI_*` settings.
    pub settings: AiSettings,
    /// Database pool (the prompt's history).
    pub db: Db,
    /// Stores the user's message and the reply (and publishes them).
    pub chats: ChatService,
    /// Where the reply's events go (`generation_started`, `token`, …).
    pub broker: Arc<dyn Broker>,
    /// The model provider.
    pub provider: Arc<dyn AiProvider>,
    /// This node's in-flight replies and its concurrency limits.
    pub registry: Arc<dyn GenerationRegistry>,
    /// Replies on the other nodes ([`super::cluster::SingleNode`] without a cluster).
    pub cluster: Arc<dyn ReplyCluster>,
    /// Whether a chat is watched live on this node.
    pub watch: Arc<dyn RoomWatch>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

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

/// An in-flight reply followed by a REST reader: its text so far, then its updates.
pub struct Following {
    /// The id its stored message will have.
    pub message_id: Uuid,
    /// The text so far.
    pub text: String,
    /// Later tokens, then how it ended.
    pub updates: mpsc::UnboundedReceiver<StreamUpdate>,
}

impl Replies {
    /// The model to use: the configured one, or another from `AI_ALLOWED_MODELS`.
    pub fn choose_model(&self, requested: Option<&str>) -> ApiResult<String> {
        let ai = &self.settings;
        match requested {
            None => Ok(ai.model.clone()),
            Some(m) if m == ai.model || ai.allowed_models.iter().any(|a| a == m) => {
                Ok(m.to_string())
            }
            Some(m) => Err(ApiError::BadRequest(
                format!("Model {m:?} is not available on this server").into(),
            )),
        }
    }

    /// Stores the prompt and starts its reply. Must run on an actix arbiter (a request handler
    /// or an actor), where the `Generation` actor will live.
    pub async fn start(self: &Arc<Self>, prompt: Prompt) -> ApiResult<StartedReply> {
        let begun = std::time::Instant::now();
        let stage = |name: &str, since: std::time::Instant| {
            self.metrics
                .ai_start_seconds
                .with_label_values(&[name])
                .observe(since.elapsed().as_secs_f64());
        };
        let model = self.choose_model(prompt.model.as_deref())?;
        // Storing the prompt checks membership (404 for a chat the caller may not see); a
        // refusal checks it first, so that such a chat does not exist whatever the load
        // (404 before 429) while an admitted prompt costs no separate membership read.
        let refuse = |refusal: Refusal| async move {
            self.chats
                .check_member(prompt.user_id, prompt.chat_id)
                .await?;
            Err(ApiError::from(refusal))
        };
        let permit = match self.registry.admit(prompt.user_id) {
            Ok(permit) => permit,
            Err(refusal) => return refuse(refusal).await,
        };
        // In a cluster the per-user limit counts the user's replies on every node.
        let permit = match self
            .cluster
            .admit_user(prompt.user_id, self.settings.max_concurrent_per_user)
            .await
        {
            Ok(Some(cluster)) => Permit::new(move || drop((permit, cluster))),
            Ok(None) => permit,
            Err(refusal) => {
                drop(permit);
                return refuse(refusal).await;
            }
        };
        stage("admit", begun);
        let admitted = std::time::Instant::now();
        let user_message = self
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
        stage("prompt_stored", admitted);
        let (caller, updates) = if prompt.stream_to_caller {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let generation = Generation::launch(Launch {
            env: self.clone(),
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

    /// Cancels a reply in a chat `user_id` is a member of, running here or on another node
    /// (which is asked to). 404 when there is no such reply or the user may not see its chat.
    pub async fn cancel(&self, user_id: Uuid, generation_id: Uuid) -> ApiResult<()> {
        let not_found = || ApiError::not_found("Generation not found");
        let (chat_id, cancel): (Uuid, Box<dyn FnOnce() + Send>) =
            match self.registry.find(generation_id) {
                Some(live) => (live.chat_id, Box::new(move || live.cancel())),
                None => {
                    let at = self
                        .cluster
                        .locate(generation_id)
                        .await
                        .ok_or_else(not_found)?;
                    let cluster = self.cluster.clone();
                    (
                        at.chat_id,
                        Box::new(move || cluster.cancel(generation_id, &at)),
                    )
                }
            };
        if !self.chats.is_member(user_id, chat_id).await? {
            return Err(not_found());
        }
        cancel();
        Ok(())
    }

    /// The chat's replies in flight, here and on other nodes, with their text so far (for a
    /// session that subscribes while they stream). Call once the session's room buffers live
    /// events, so that every later token reaches it.
    pub async fn snapshots(&self, chat_id: Uuid) -> Vec<Snapshot> {
        let mut snapshots: Vec<Snapshot> = self
            .registry
            .in_chat(chat_id)
            .iter()
            .map(|live| live.snapshot())
            .collect();
        for remote in self.cluster.snapshots(chat_id).await {
            if !snapshots
                .iter()
                .any(|s| s.generation_id == remote.generation_id)
            {
                snapshots.push(remote);
            }
        }
        snapshots
    }

    /// The chat's newest reply in flight (here, else on another node) for a REST reader: its
    /// text so far and later updates; `None` when no reply is being generated. 404 unless
    /// `user_id` is a member.
    pub async fn resume(&self, user_id: Uuid, chat_id: Uuid) -> ApiResult<Option<Following>> {
        self.chats.check_member(user_id, chat_id).await?;
        let attached = self
            .registry
            .in_chat(chat_id)
            .iter()
            .rev()
            .find_map(|g| g.attach().map(|a| (g.message_id, a)));
        if let Some((message_id, (snapshot, updates))) = attached {
            return Ok(Some(Following {
                message_id,
                text: snapshot.text,
                updates,
            }));
        }
        // In a cluster the reply may run on another node.
        Ok(self.cluster.follow(chat_id).await.map(|remote| Following {
            message_id: remote.message_id,
            text: remote.text,
            updates: remote.updates,
        }))
    }
}
