//! [`ChatService`]: the operations on chats, members and messages, each from its checks to
//! the event it publishes.

use std::sync::Arc;

use uuid::Uuid;

use super::reads::MembershipReader;
use super::writer::{Writer, WriterSettings};
use crate::api_types::{ChatResponse, MessageResponse};
use crate::broker::Broker;
use crate::broker::{Event, Topic};
use crate::db::messages::{self, Appended, Post, Posted};
use crate::db::models::{Chat, ChatMember, Message};
use crate::db::{chats, is_unique_violation, storable, users, Db};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Messages returned with a chat's detail.
pub const DETAIL_MESSAGES: i64 = 100;

/// Chats, members and messages. Cheap to clone.
#[derive(Clone)]
pub struct ChatService {
    db: Db,
    broker: Arc<dyn Broker>,
    writer: Writer,
    members: MembershipReader,
}

/// What a resubscribing session missed: see [`ChatService::replay`].
#[derive(Debug)]
pub struct Replay {
    /// The chat's last `seq` when it was read.
    pub last_seq: i64,
    /// The messages after the session's `since_seq`, in `seq` order.
    pub missed: Vec<Message>,
    /// False when more were missed than may be replayed (`missed` is then empty).
    pub recovered: bool,
}

/// A message to post.
#[derive(Debug, Clone)]
pub struct PostMessage {
    /// Target chat.
    pub chat_id: Uuid,
    /// The text.
    pub content: String,
    /// Stored as an assistant message when true.
    pub is_from_ai: bool,
    /// Idempotency key.
    pub client_msg_id: Option<Uuid>,
}

impl ChatService {
    /// A service over `db`, publishing to `broker`; starts the message writer's lanes on the
    /// current runtime.
    pub fn new(
        db: Db,
        broker: Arc<dyn Broker>,
        writer: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let writer = Writer::start(db.clone(), writer, metrics);
        let members = MembershipReader::start(db.clone());
        ChatService {
            db,
            broker,
            writer,
            members,
        }
    }

    /// Creates a chat owned by `user`.
    pub async fn create(&self, user: Uuid, title: Option<&str>) -> ApiResult<Chat> {
        let mut conn = self.db.conn().await?;
        Ok(chats::create(&mut conn, user, title).await?)
    }

    /// The chat and the caller's role, or 404 when it does not exist or they are not a member.
    pub async fn get(&self, user: Uuid, chat_id: Uuid) -> ApiResult<(Chat, String)> {
        let mut conn = self.db.conn().await?;
        chats::find_for_member(&mut conn, chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))
    }

    /// The chat with its latest messages.
    pub async fn detail(&self, user: Uuid, chat_id: Uuid) -> ApiResult<(Chat, Vec<Message>)> {
        let mut conn = self.db.conn().await?;
        let (chat, _) = chats::find_for_member(&mut conn, chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))?;
        let msgs = messages::latest(&mut conn, chat_id, DETAIL_MESSAGES).await?;
        Ok((chat, msgs))
    }

    /// Chats the caller is a member of.
    pub async fn list(&self, user: Uuid, skip: i64, limit: i64) -> ApiResult<Vec<Chat>> {
        let mut conn = self.db.conn().await?;
        Ok(chats::list_for_user(&mut conn, user, skip, limit).await?)
    }

    /// Renames a chat (any member may); publishes `chat_updated`.
    pub async fn rename(&self, user: Uuid, chat_id: Uuid, title: Option<&str>) -> ApiResult<Chat> {
        let mut conn = self.db.conn().await?;
        chats::find_for_member(&mut conn, chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))?;
        let chat = chats::set_title(&mut conn, chat_id, title).await?;
        self.broker.publish(
            Topic::Room(chat_id),
            Event::ChatUpdated {
                chat: ChatResponse::from(chat.clone()),
            },
        );
        Ok(chat)
    }

    /// Deletes a chat (owner only); publishes `chat_deleted`.
    pub async fn delete(&self, user: Uuid, chat_id: Uuid) -> ApiResult<()> {
        let mut conn = self.db.conn().await?;
        let (chat, _) = chats::find_for_member(&mut conn, chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))?;
        if chat.owner_id.0 != user {
            return Err(ApiError::forbidden("Only the owner can delete this chat"));
        }
        chats::delete(&mut conn, chat_id).await?;
        self.broker
            .publish(Topic::Room(chat_id), Event::ChatDeleted { chat_id });
        Ok(())
    }

    /// Adds `member` to the chat (owner only).
    pub async fn add_member(
        &self,
        user: Uuid,
        chat_id: Uuid,
        member: Uuid,
    ) -> ApiResult<ChatMember> {
        let mut conn = self.db.conn().await?;
        let (chat, _) = chats::find_for_member(&mut conn, chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))?;
        if chat.owner_id.0 != user {
            return Err(ApiError::forbidden("Only the owner can add members"));
        }
        if users::find(&mut conn, member).await?.is_none() {
            return Err(ApiError::not_found("User not found"));
        }
        let row = match chats::insert_member(&mut conn, chat_id, member, chats::ROLE_MEMBER).await {
            Ok(row) => row,
            Err(e) if is_unique_violation(&e) => {
                return Err(ApiError::Conflict(
                    "User is already a member of this chat".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let event = Event::MemberAdded {
            chat_id,
            user_id: member,
        };
        self.broker.publish(Topic::Room(chat_id), event.clone());
        self.broker.publish(Topic::User(member), event);
        Ok(row)
    }

    /// Removes `member` (the owner may remove anyone else; a member may remove themself).
    pub async fn remove_member(&self, user: Uuid, chat_id: Uuid, member: Uuid) -> ApiResult<()> {
        let mut conn = self.db.conn().await?;
        let (chat, _) = chats::find_for_member(&mut conn, chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))?;
        if member == chat.owner_id.0 {
            return Err(ApiError::forbidden(
                "The owner cannot leave the chat; delete it instead",
            ));
        }
        if user != chat.owner_id.0 && user != member {
            return Err(ApiError::forbidden(
                "Only the owner can remove other members",
            ));
        }
        if !chats::remove_member(&mut conn, chat_id, member).await? {
            return Err(ApiError::not_found("Member not found"));
        }
        let event = Event::MemberRemoved {
            chat_id,
            user_id: member,
        };
        self.broker.publish(Topic::Room(chat_id), event.clone());
        self.broker.publish(Topic::User(member), event);
        Ok(())
    }

    /// Posts a message as `user`: membership check, the chat's next `seq` and the insert,
    /// committed with the writer's batch, then `message` to the room. A repeated
    /// `client_msg_id` stores nothing new and returns the original (published once, when it
    /// was first stored).
    pub async fn post(&self, user: Uuid, msg: PostMessage) -> ApiResult<Appended> {
        let post = Post {
            id: Uuid::new_v4(),
            chat_id: msg.chat_id,
            member: Some(user),
            user_id: if msg.is_from_ai { None } else { Some(user) },
            role: if msg.is_from_ai { "assistant" } else { "user" },
            is_from_ai: msg.is_from_ai,
            content: msg.content,
            client_msg_id: msg.client_msg_id,
            finish_reason: None,
        };
        let appended = self.write(post).await?;
        if appended.created {
            self.publish_message(&appended.message);
        }
        Ok(appended)
    }

    /// Stores an AI reply under the id announced when it started (`finish_reason` recorded),
    /// then publishes it as a `message` like any other.
    pub async fn store_reply(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        content: &str,
        finish_reason: &str,
    ) -> ApiResult<Message> {
        let post = Post {
            id: message_id,
            chat_id,
            member: None,
            user_id: None,
            role: "assistant",
            is_from_ai: true,
            // Provider text, not a client's: made storable rather than refused.
            content: storable(content).into_owned(),
            client_msg_id: None,
            finish_reason: Some(finish_reason.to_string()),
        };
        let appended = self.write(post).await?;
        self.publish_message(&appended.message);
        Ok(appended.message)
    }

    /// Stores a post through the writer; 404 when the chat is gone or not the poster's.
    async fn write(&self, post: Post) -> ApiResult<Appended> {
        match self.writer.write(post).await? {
            Posted::Stored(appended) => Ok(appended),
            Posted::NoChat => Err(ApiError::not_found("Chat not found")),
        }
    }

    /// Publishes a committed message to its room.
    pub fn publish_message(&self, message: &Message) {
        self.broker.publish(
            Topic::Room(message.chat_id.0),
            Event::Message {
                chat_id: message.chat_id.0,
                message: MessageResponse::from(message.clone()),
            },
        );
    }

    /// Whether `user` is a member of the chat (read with the other checks waiting: one query
    /// for all of them).
    pub async fn is_member(&self, user: Uuid, chat_id: Uuid) -> ApiResult<bool> {
        Ok(self
            .members
            .last_seq_for_member(chat_id, user)
            .await?
            .is_some())
    }

    /// 404 `Chat not found` unless `user` is a member of the chat.
    pub async fn check_member(&self, user: Uuid, chat_id: Uuid) -> ApiResult<()> {
        match self.is_member(user, chat_id).await? {
            true => Ok(()),
            false => Err(ApiError::not_found("Chat not found")),
        }
    }

    /// What a session subscribing with `since_seq` missed (404 unless `user` is a member): the
    /// chat's last `seq` and the messages after `since_seq`, at most `limit` of them. More than
    /// `limit` missed: none are returned and `recovered` is false (the client reloads instead).
    pub async fn replay(
        &self,
        user: Uuid,
        chat_id: Uuid,
        since_seq: Option<i64>,
        limit: i64,
    ) -> ApiResult<Replay> {
        // The membership check and the chat's last seq, read with the other subscribes
        // waiting (one query for all of them).
        let last_seq = self
            .members
            .last_seq_for_member(chat_id, user)
            .await?
            .ok_or_else(|| ApiError::not_found("Chat not found"))?;
        let mut replay = Replay {
            last_seq,
            missed: Vec::new(),
            recovered: true,
        };
        if let Some(since) = since_seq.filter(|s| *s < last_seq) {
            let since = since.max(0);
            let mut conn = self.db.conn().await?;
            // Too many missed: known from the seqs alone, without reading (and then dropping)
            // up to `limit` whole messages for every such subscribe.
            if last_seq - since > limit
                && messages::count_after(&mut conn, chat_id, since, limit + 1).await? > limit
            {
                replay.recovered = false;
                return Ok(replay);
            }
            let missed =
                messages::page(&mut conn, chat_id, 0, limit + 1, Some(since), None).await?;
            if missed.len() as i64 > limit {
                replay.recovered = false;
            } else {
                replay.missed = missed;
            }
        }
        Ok(replay)
    }

    /// A page of messages in ascending `seq` (404 unless the caller is a member).
    pub async fn messages(
        &self,
        user: Uuid,
        chat_id: Uuid,
        skip: i64,
        limit: i64,
        after_seq: Option<i64>,
        before_seq: Option<i64>,
    ) -> ApiResult<Vec<Message>> {
        let mut conn = self.db.conn().await?;
        if !chats::is_member(&mut conn, chat_id, user).await? {
            return Err(ApiError::not_found("Chat not found"));
        }
        Ok(messages::page(&mut conn, chat_id, skip, limit, after_seq, before_seq).await?)
    }
}
