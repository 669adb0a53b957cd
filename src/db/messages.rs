//! Queries on `messages`. `append` is the only way a message is stored: it takes the chat's
//! next `seq` in the same transaction as the insert, so seqs are gap-free and unique.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::models::Message;
use super::sql_types::DbUuid;
use super::{now, run, DbConn};

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Target chat.
    pub chat_id: Uuid,
    /// Author (`None` for AI/system).
    pub user_id: Option<Uuid>,
    /// `user`, `assistant` or `system`.
    pub role: &'a str,
    /// True for AI replies.
    pub is_from_ai: bool,
    /// The text.
    pub content: &'a str,
    /// Idempotency key: a second append with the same key returns the first message.
    pub client_msg_id: Option<Uuid>,
    /// Why an AI reply ended.
    pub finish_reason: Option<&'a str>,
}

/// Outcome of [`append`].
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored message (the original one for a retried `client_msg_id`).
    pub message: Message,
    /// False when the `client_msg_id` had been stored before and nothing new was written.
    pub created: bool,
}

enum AppendError {
    Db(diesel::result::Error),
    Duplicate(Box<Message>),
}

impl From<diesel::result::Error> for AppendError {
    fn from(e: diesel::result::Error) -> Self {
        AppendError::Db(e)
    }
}

/// Stores a message with the chat's next `seq`. Fails with `NotFound` if the chat is gone.
pub async fn append(conn: &mut DbConn, new: &NewMessage<'_>) -> QueryResult<Appended> {
    append_with_id(conn, Uuid::new_v4(), new).await
}

/// As [`append`], with the message id chosen by the caller (an AI reply's id is announced in
/// `generation_started` before the reply is stored).
pub async fn append_with_id(
    conn: &mut DbConn,
    id: Uuid,
    new: &NewMessage<'_>,
) -> QueryResult<Appended> {
    // Only AI replies are stored this way: their text comes from a provider, not a client.
    let content = super::storable(new.content);
    let new = NewMessage {
        content: &content,
        ..*new
    };
    append_inner(conn, id, &new, None).await
}

/// As [`append`], only if `member` is a member of the chat (`NotFound` otherwise). The check
/// is part of the statement that takes the seq, so a post costs no extra round trip.
pub async fn append_as_member(
    conn: &mut DbConn,
    member: Uuid,
    new: &NewMessage<'_>,
) -> QueryResult<Appended> {
    append_inner(conn, Uuid::new_v4(), new, Some(member)).await
}

/// Takes the chat's next seq (locking its row until the transaction ends).
async fn take_seq(
    conn: &mut DbConn,
    chat_id: Uuid,
    member: Option<Uuid>,
    ts: chrono::DateTime<chrono::Utc>,
) -> QueryResult<i64> {
    let Some(member) = member else {
        return run!(conn, |c| diesel::update(chats::table.find(DbUuid(chat_id)))
            .set((
                chats::last_seq.eq(chats::last_seq + 1i64),
                chats::updated_at.eq(ts),
            ))
            .returning(chats::last_seq)
            .get_result::<i64>(c)
            .await);
    };
    run!(conn, |c| diesel::update(
        chats::table
            .find(DbUuid(chat_id))
            .filter(diesel::dsl::exists(
                chat_members::table
                    .filter(chat_members::chat_id.eq(DbUuid(chat_id)))
                    .filter(chat_members::user_id.eq(DbUuid(member)))
            ))
    )
    .set((
        chats::last_seq.eq(chats::last_seq + 1i64),
        chats::updated_at.eq(ts),
    ))
    .returning(chats::last_seq)
    .get_result::<i64>(c)
    .await)
}

async fn append_inner(
    conn: &mut DbConn,
    id: Uuid,
    new: &NewMessage<'_>,
    member: Option<Uuid>,
) -> QueryResult<Appended> {
    let result = conn
        .write_txn(async |conn: &mut DbConn| {
            let ts = now();
            // Taking the seq first locks the chat row, so the duplicate check below sees every
            // committed retry of the same client_msg_id.
            let seq = take_seq(conn, new.chat_id, member, ts).await?;
            if let Some(key) = new.client_msg_id {
                if let Some(existing) = find_by_client_id(conn, new.chat_id, key).await? {
                    // Rolls back the seq we took.
                    return Err(AppendError::Duplicate(Box::new(existing)));
                }
            }
            let message = run!(conn, |c| diesel::insert_into(messages::table)
                .values((
                    messages::id.eq(DbUuid(id)),
                    messages::chat_id.eq(DbUuid(new.chat_id)),
                    messages::seq.eq(seq),
                    messages::user_id.eq(new.user_id.map(DbUuid)),
                    messages::role.eq(new.role),
                    messages::is_from_ai.eq(new.is_from_ai),
                    messages::content.eq(new.content),
                    messages::client_msg_id.eq(new.client_msg_id.map(DbUuid)),
                    messages::finish_reason.eq(new.finish_reason),
                    messages::created_at.eq(ts),
                ))
                .returning(messages::all_columns)
                .get_result::<Message>(c)
                .await)?;
            Ok(message)
        })
        .await;
    match result {
        Ok(message) => Ok(Appended {
            message,
            created: true,
        }),
        Err(AppendError::Duplicate(message)) => Ok(Appended {
            message: *message,
            created: false,
        }),
        Err(AppendError::Db(e)) => Err(e),
    }
}

/// The message stored under a client's idempotency key, if any.
pub async fn find_by_client_id(
    conn: &mut DbConn,
    chat_id: Uuid,
    client_msg_id: Uuid,
) -> QueryResult<Option<Message>> {
    run!(conn, |c| messages::table
        .filter(messages::chat_id.eq(DbUuid(chat_id)))
        .filter(messages::client_msg_id.eq(DbUuid(client_msg_id)))
        .select(messages::all_columns)
        .first::<Message>(c)
        .await
        .optional())
}

/// A page of a chat's messages in ascending `seq`, optionally bounded by seqs (exclusive).
pub async fn page(
    conn: &mut DbConn,
    chat_id: Uuid,
    skip: i64,
    limit: i64,
    after_seq: Option<i64>,
    before_seq: Option<i64>,
) -> QueryResult<Vec<Message>> {
    run!(conn, |c| {
        let mut q = messages::table
            .filter(messages::chat_id.eq(DbUuid(chat_id)))
            .select(messages::all_columns)
            .into_boxed();
        if let Some(after) = after_seq {
            q = q.filter(messages::seq.gt(after));
        }
        if let Some(before) = before_seq {
            q = q.filter(messages::seq.lt(before));
        }
        q.order(messages::seq.asc())
            .offset(skip)
            .limit(limit)
            .load::<Message>(c)
            .await
    })
}

/// The newest `limit` messages of a chat, in ascending `seq`.
pub async fn latest(conn: &mut DbConn, chat_id: Uuid, limit: i64) -> QueryResult<Vec<Message>> {
    let mut newest_first = run!(conn, |c| messages::table
        .filter(messages::chat_id.eq(DbUuid(chat_id)))
        .order(messages::seq.desc())
        .limit(limit)
        .select(messages::all_columns)
        .load::<Message>(c)
        .await)?;
    newest_first.reverse();
    Ok(newest_first)
}

/// The newest `limit` messages of a chat with `seq <= through_seq`, in ascending `seq` (the
/// history an AI reply to message `through_seq` is based on).
pub async fn history_through(
    conn: &mut DbConn,
    chat_id: Uuid,
    through_seq: i64,
    limit: i64,
) -> QueryResult<Vec<Message>> {
    let mut newest_first = run!(conn, |c| messages::table
        .filter(messages::chat_id.eq(DbUuid(chat_id)))
        .filter(messages::seq.le(through_seq))
        .order(messages::seq.desc())
        .limit(limit)
        .select(messages::all_columns)
        .load::<Message>(c)
        .await)?;
    newest_first.reverse();
    Ok(newest_first)
}
