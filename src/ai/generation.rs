//! `Generation`: one actor per in-flight AI reply. It builds the prompt from the chat's history,
//! streams the provider's tokens to the chat's room (through the broker) and to its REST
//! readers, keeps the text so far in its [`LiveGeneration`] for late subscribers, and at the end
//! stores the reply and announces it. A cancel stops it between two tokens; so does its REST
//! caller going away while nobody else watches the chat.
//!
//! It sees only [`Replies`], a narrow environment (the database, the chat service, the broker,
//! the provider, the registry, the other nodes' replies behind a trait), as a `VideoJob` sees
//! only its `JobEnv`: no HTTP state, no sessions.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::messages::{CancelGeneration, StreamUpdate};
use super::prompt::{self, estimate_prompt_tokens};
use super::registry::{LiveGeneration, Permit};
use super::replies::Replies;
use super::{AiError, ChatChunk, ChatRequest, FinishReason, Usage};
use crate::api_types::MessageResponse;
use crate::broker::{Event, Topic};
use crate::db::messages;
use crate::error::ApiError;

/// What the stored reply says when the node stops under a generation.
const INTERRUPTED: &str = "The reply was interrupted";

/// What a new generation needs.
pub struct Launch {
    /// What the reply may use (database, chat service, broker, provider, registry).
    pub env: Arc<Replies>,
    /// The chat.
    pub chat_id: Uuid,
    /// Who prompted.
    pub user_id: Uuid,
    /// The model to ask.
    pub model: String,
    /// `seq` of the user's message: the history goes up to it.
    pub through_seq: i64,
    /// The place in the concurrency limits, held until the actor stops.
    pub permit: Permit,
    /// The REST caller's update channel, if a REST request started it.
    pub caller: Option<mpsc::UnboundedSender<StreamUpdate>>,
}

/// One in-flight reply.
pub struct Generation {
    /// The shared view (ids, text so far, readers), also in the registry.
    live: Arc<LiveGeneration>,
    env: Arc<Replies>,
    through_seq: i64,
    /// The REST caller's channel, watched to notice it going away.
    caller: Option<mpsc::UnboundedSender<StreamUpdate>>,
    /// The provider stream being consumed.
    stream: Option<SpawnHandle>,
    /// Estimated prompt tokens, for the usage of a cancelled reply.
    prompt_tokens: u32,
    /// Set once the reply is ending: later tokens and cancels are ignored.
    finishing: bool,
    /// When the actor started, for the time-to-first-token metric.
    started_at: Instant,
    /// When the history was read and the request went to the provider.
    asked_at: Option<Instant>,
    _permit: Permit,
}

impl Generation {
    /// Starts a generation on the current arbiter and registers it; returns its shared view.
    pub fn launch(launch: Launch) -> Arc<LiveGeneration> {
        let ctx = Context::<Generation>::new();
        let live = Arc::new(LiveGeneration::new(
            Uuid::new_v4(),
            launch.chat_id,
            launch.user_id,
            Uuid::new_v4(),
            launch.model,
            ctx.address().recipient(),
            launch.caller.clone(),
        ));
        launch.env.registry.register(live.clone());
        ctx.run(Generation {
            live: live.clone(),
            env: launch.env,
            through_seq: launch.through_seq,
            caller: launch.caller,
            stream: None,
            prompt_tokens: 0,
            finishing: false,
            started_at: Instant::now(),
            asked_at: None,
            _permit: launch.permit,
        });
        live
    }

    /// Records the time since `since` as the start-up stage `stage`.
    fn observe_stage(&self, stage: &str, since: Instant) {
        self.env
            .metrics
            .ai_start_seconds
            .with_label_values(&[stage])
            .observe(since.elapsed().as_secs_f64());
    }

    fn publish(&self, event: Event) {
        self.env
            .broker
            .publish(Topic::Room(self.live.chat_id), event);
    }

    /// Stops consuming the provider (dropping its stream aborts the request).
    fn stop_stream(&mut self, ctx: &mut Context<Self>) {
        self.finishing = true;
        if let Some(h) = self.stream.take() {
            ctx.cancel_future(h);
        }
    }

    /// Stores the reply, announces it, and stops.
    fn finish(&mut self, finish_reason: FinishReason, usage: Usage, ctx: &mut Context<Self>) {
        self.stop_stream(ctx);
        let (text, _) = self.live.text();
        let chats = self.env.chats.clone();
        let (chat_id, message_id) = (self.live.chat_id, self.live.message_id);
        let store = async move {
            chats
                .store_reply(chat_id, message_id, &text, finish_reason.as_str())
                .await
        };
        ctx.spawn(store.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(message) => {
                    act.outcome(finish_reason.as_str());
                    act.publish(Event::GenerationFinished {
                        chat_id,
                        generation_id: act.live.id,
                        message: MessageResponse::from(message),
                        finish_reason: finish_reason.as_str().to_string(),
                        usage: serde_json::to_value(usage).unwrap_or_default(),
                    });
                    act.live.close(StreamUpdate::Finished {
                        finish_reason,
                        usage,
                    });
                }
                Err(e) => {
                    tracing::error!(%chat_id, generation = %act.live.id, error = %e, "storing an AI reply failed");
                    act.announce_failure("The reply could not be stored".into());
                }
            }
            ctx.stop();
        }));
    }

    /// Ends with an error: the partial reply (if any) is stored with `finish_reason: error`.
    fn fail(&mut self, public: String, ctx: &mut Context<Self>) {
        self.stop_stream(ctx);
        let (text, _) = self.live.text();
        if text.is_empty() {
            self.announce_failure(public);
            ctx.stop();
            return;
        }
        let chats = self.env.chats.clone();
        let (chat_id, message_id) = (self.live.chat_id, self.live.message_id);
        let store = async move {
            chats
                .store_reply(chat_id, message_id, &text, FinishReason::Error.as_str())
                .await
        };
        ctx.spawn(store.into_actor(self).map(move |res, act, ctx| {
            if let Err(e) = res {
                tracing::error!(%chat_id, error = %e, "storing a partial AI reply failed");
            }
            act.announce_failure(public);
            ctx.stop();
        }));
    }

    fn outcome(&self, outcome: &str) {
        self.env
            .metrics
            .ai_generations_total
            .with_label_values(&[outcome])
            .inc();
    }

    fn announce_failure(&mut self, error: String) {
        self.outcome("failed");
        self.publish(Event::GenerationFailed {
            chat_id: self.live.chat_id,
            generation_id: self.live.id,
            error: error.clone(),
        });
        self.live.close(StreamUpdate::Failed { error });
    }

    fn cancel(&mut self, ctx: &mut Context<Self>) {
        if self.finishing {
            return;
        }
        let (_, tokens) = self.live.text();
        let usage = Usage::new(
            self.prompt_tokens,
            u32::try_from(tokens).unwrap_or(u32::MAX),
        );
        tracing::info!(generation = %self.live.id, tokens, "AI reply cancelled");
        self.finish(FinishReason::Cancelled, usage, ctx);
    }

    /// The REST caller went away: cancel unless someone else still watches the reply.
    fn caller_gone(&mut self, ctx: &mut Context<Self>) {
        if self.finishing {
            return;
        }
        let watched = self.live.has_readers() || self.env.watch.is_watched(self.live.chat_id);
        if watched {
            tracing::debug!(generation = %self.live.id, "REST caller left; the room still watches");
        } else {
            tracing::info!(generation = %self.live.id, "REST caller left and nobody watches; cancelling");
            self.cancel(ctx);
        }
    }
}

impl Actor for Generation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.env.metrics.ai_generations.inc();
        self.publish(Event::GenerationStarted {
            chat_id: self.live.chat_id,
            generation_id: self.live.id,
            message_id: self.live.message_id,
            model: self.live.model.clone(),
        });
        if let Some(caller) = self.caller.clone() {
            let gone = async move { caller.closed().await };
            ctx.spawn(
                gone.into_actor(self)
                    .map(|(), act, ctx| act.caller_gone(ctx)),
            );
        }
        let db = self.env.db.clone();
        let env = self.env.clone();
        let (chat_id, through) = (self.live.chat_id, self.through_seq);
        let history = async move {
            let mut conn = db.conn().await?;
            let history =
                messages::history_through(&mut conn, chat_id, through, prompt::HISTORY_LIMIT)
                    .await?;
            Ok::<_, ApiError>(prompt::build(
                &env.settings.system_prompt,
                &history,
                env.settings.context_token_budget,
            ))
        };
        ctx.spawn(history.into_actor(self).map(|res, act, ctx| {
            if act.finishing {
                return;
            }
            match res {
                Ok(messages) => {
                    act.observe_stage("history", act.started_at);
                    act.asked_at = Some(Instant::now());
                    act.prompt_tokens = estimate_prompt_tokens(&messages);
                    let request = ChatRequest {
                        model: act.live.model.clone(),
                        messages,
                        max_output_tokens: act.env.settings.max_output_tokens,
                    };
                    let stream = act.env.provider.stream_chat(request);
                    act.stream = Some(ctx.add_stream(stream));
                }
                Err(e) => {
                    tracing::error!(generation = %act.live.id, error = %e, "loading the history failed");
                    act.fail("The chat history could not be read".into(), ctx);
                }
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.env.metrics.ai_generations.dec();
        // Normally already closed; this covers an actor stopped by its arbiter shutting down.
        self.live.close(StreamUpdate::Failed {
            error: INTERRUPTED.into(),
        });
        self.env.registry.unregister(self.live.id);
    }
}

impl StreamHandler<Result<ChatChunk, AiError>> for Generation {
    fn handle(&mut self, item: Result<ChatChunk, AiError>, ctx: &mut Context<Self>) {
        if self.finishing {
            return;
        }
        match item {
            Ok(ChatChunk::Delta(delta)) => {
                let index = self.live.push_token(&delta);
                let metrics = &self.env.metrics;
                metrics.ai_tokens.inc();
                if index == 0 {
                    metrics
                        .ai_first_token
                        .observe(self.started_at.elapsed().as_secs_f64());
                    if let Some(asked) = self.asked_at {
                        self.observe_stage("provider", asked);
                    }
                }
                self.publish(Event::Token {
                    chat_id: self.live.chat_id,
                    generation_id: self.live.id,
                    index,
                    delta,
                });
            }
            Ok(ChatChunk::Done {
                finish_reason,
                usage,
            }) => self.finish(finish_reason, usage, ctx),
            Err(e) => {
                tracing::warn!(generation = %self.live.id, error = %e, "AI provider failed");
                self.fail(e.public_message(), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // Providers always end with Done or an error; anything else is a broken stream.
        if !self.finishing {
            self.fail(
                AiError::Stream("ended without a finish".into()).public_message(),
                ctx,
            );
        }
    }
}

impl Handler<CancelGeneration> for Generation {
    type Result = ();

    fn handle(&mut self, _: CancelGeneration, ctx: &mut Context<Self>) {
        self.cancel(ctx);
    }
}
