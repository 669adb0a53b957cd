//! Queries on `messages`. [`append_batch`] and [`append_one`] are the only ways a message is
//! stored: each takes the chat's next `seq`s in the same transaction (or statement) as the
//! inserts, so seqs are gap-free and unique.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::models::Message;
use super::sql_types::DbUuid;
use super::{now, run, DbConn};

/// A message to store.
#[derive(Debug, Clone)]
pub struct Post {
    /// Its id (chosen before it is stored: an AI reply's id is announced when it starts).
    pub id: Uuid,
    /// Target chat.
    pub chat_id: Uuid,
    /// Stored only if this user is a member of the chat (`None`: no membership check).
    pub member: Option<Uuid>,
    /// Author (`None` for AI/system).
    pub user_id: Option<Uuid>,
    /// `user`, `assistant` or `system`.
    pub role: &'static str,
    /// True for AI replies.
    pub is_from_ai: bool,
    /// The text.
    pub content: String,
    /// Idempotency key: a second post with the same key returns the first message.
    pub client_msg_id: Option<Uuid>,
    /// Why an AI reply ended.
    pub finish_reason: Option<String>,
}

/// A stored post.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored message (the original one for a retried `client_msg_id`).
    pub message: Message,
    /// False when the `client_msg_id` had been stored before and nothing new was written.
    pub created: bool,
}

/// What became of one post.
#[derive(Debug, Clone)]
pub enum Posted {
    /// Stored now, or before under the same `client_msg_id`.
    Stored(Appended),
    /// The chat does not exist, or `member` is not a member of it: nothing was stored.
    NoChat,
}

impl Post {
    /// The message as stored with `seq` at `ts`.
    fn stored(&self, seq: i64, ts: chrono::DateTime<chrono::Utc>) -> Message {
        Message {
            id: DbUuid(self.id),
            chat_id: DbUuid(self.chat_id),
            seq,
            user_id: self.user_id.map(DbUuid),
            role: self.role.to_string(),
            is_from_ai: self.is_from_ai,
            content: self.content.clone(),
            client_msg_id: self.client_msg_id.map(DbUuid),
            finish_reason: self.finish_reason.clone(),
            created_at: ts,
        }
    }
}

/// Stores a batch of posts in one transaction, each chat's in consecutive `seq`s in the
/// batch's order; the outcome of each, in order. On Postgres the whole batch is one statement
/// (membership, `seq`, `client_msg_id` check and insert for every chat at once); on SQLite one
/// write transaction. Any error stores nothing of the batch.
pub async fn append_batch(conn: &mut DbConn, posts: &[Post]) -> QueryResult<Vec<Posted>> {
    match conn {
        DbConn::Pg(c) => append_batch_pg(c, posts).await,
        DbConn::Sqlite(_) => {
            conn.write_txn(async |conn: &mut DbConn| {
                let ts = now();
                let mut out = Vec::with_capacity(posts.len());
                for post in posts {
                    out.push(append_in_txn(conn, post, ts).await?);
                }
                Ok(out)
            })
            .await
        }
    }
}

/// One post in its own transaction: the chat row is locked before the `client_msg_id` check,
/// so a concurrent retry of the same key on another node is seen (the batch statement can
/// only fail on it, with a unique violation).
pub async fn append_one(conn: &mut DbConn, post: &Post) -> QueryResult<Posted> {
    let result = conn
        .write_txn(async |conn: &mut DbConn| {
            let ts = now();
            let seq = match take_seq(conn, post.chat_id, post.member, 1, ts).await {
                Err(diesel::result::Error::NotFound) => return Err(AppendError::NoChat),
                other => other?,
            };
            if let Some(existing) = find_duplicate(conn, post).await? {
                // Rolls back the seq taken.
                return Err(AppendError::Duplicate(Box::new(existing)));
            }
            insert(conn, post, seq, ts).await?;
            Ok(post.stored(seq, ts))
        })
        .await;
    match result {
        Ok(message) => Ok(Posted::Stored(Appended {
            message,
            created: true,
        })),
        Err(AppendError::Duplicate(message)) => Ok(Posted::Stored(Appended {
            message: *message,
            created: false,
        })),
        Err(AppendError::NoChat) => Ok(Posted::NoChat),
        Err(AppendError::Db(e)) => Err(e),
    }
}

enum AppendError {
    Db(diesel::result::Error),
    Duplicate(Box<Message>),
    NoChat,
}

impl From<diesel::result::Error> for AppendError {
    fn from(e: diesel::result::Error) -> Self {
        AppendError::Db(e)
    }
}

/// One post inside a write transaction that already holds the database (SQLite: `BEGIN
/// IMMEDIATE`), so checking the key before taking the seq leaves no gap.
async fn append_in_txn(
    conn: &mut DbConn,
    post: &Post,
    ts: chrono::DateTime<chrono::Utc>,
) -> QueryResult<Posted> {
    if let Some(existing) = find_duplicate(conn, post).await? {
        let may_post = match post.member {
            Some(member) => super::chats::is_member(conn, post.chat_id, member).await?,
            None => true,
        };
        return Ok(if may_post {
            Posted::Stored(Appended {
                message: existing,
                created: false,
            })
        } else {
            Posted::NoChat
        });
    }
    let seq = match take_seq(conn, post.chat_id, post.member, 1, ts).await {
        Err(diesel::result::Error::NotFound) => return Ok(Posted::NoChat),
        other => other?,
    };
    insert(conn, post, seq, ts).await?;
    Ok(Posted::Stored(Appended {
        message: post.stored(seq, ts),
        created: true,
    }))
}

/// The message already stored under the post's `client_msg_id`, if it has one.
async fn find_duplicate(conn: &mut DbConn, post: &Post) -> QueryResult<Option<Message>> {
    match post.client_msg_id {
        Some(key) => find_by_client_id(conn, post.chat_id, key).await,
        None => Ok(None),
    }
}

/// Takes `n` seqs of the chat (locking its row until the transaction ends); returns the last.
/// `NotFound` when the chat is gone or `member` is not in it.
async fn take_seq(
    conn: &mut DbConn,
    chat_id: Uuid,
    member: Option<Uuid>,
    n: i64,
    ts: chrono::DateTime<chrono::Utc>,
) -> QueryResult<i64> {
    let Some(member) = member else {
        return run!(conn, |c| diesel::update(chats::table.find(DbUuid(chat_id)))
            .set((
                chats::last_seq.eq(chats::last_seq + n),
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
        chats::last_seq.eq(chats::last_seq + n),
        chats::updated_at.eq(ts),
    ))
    .returning(chats::last_seq)
    .get_result::<i64>(c)
    .await)
}

/// Inserts the post's row with `seq`.
async fn insert(
    conn: &mut DbConn,
    post: &Post,
    seq: i64,
    ts: chrono::DateTime<chrono::Utc>,
) -> QueryResult<()> {
    run!(conn, |c| diesel::insert_into(messages::table)
        .values((
            messages::id.eq(DbUuid(post.id)),
            messages::chat_id.eq(DbUuid(post.chat_id)),
            messages::seq.eq(seq),
            messages::user_id.eq(post.user_id.map(DbUuid)),
            messages::role.eq(post.role),
            messages::is_from_ai.eq(post.is_from_ai),
            messages::content.eq(&post.content),
            messages::client_msg_id.eq(post.client_msg_id.map(DbUuid)),
            messages::finish_reason.eq(post.finish_reason.as_deref()),
            messages::created_at.eq(ts),
        ))
        .execute(c)
        .await)?;
    Ok(())
}

/// The whole batch as one Postgres statement (`?` marks the binds, in [`AppendBatch`]'s order): the posts' membership (and their chats'
/// existence), each key looked up among stored messages, every chat's `last_seq` raised by
/// its number of new posts (locking its row), and the inserts, numbered in batch order.
const APPEND_BATCH_SQL: &str = "
WITH input AS (
    SELECT * FROM unnest(?::uuid[], ?::uuid[], ?::uuid[], ?::uuid[], ?::text[],
                         ?::bool[], ?::text[], ?::uuid[], ?::text[])
        WITH ORDINALITY AS t(id, chat_id, member, user_id, role, is_from_ai, content,
                             client_msg_id, finish_reason, ord)
), allowed AS (
    SELECT i.* FROM input i
    WHERE EXISTS (SELECT 1 FROM chats c WHERE c.id = i.chat_id)
      AND (i.member IS NULL OR EXISTS (
          SELECT 1 FROM chat_members m WHERE m.chat_id = i.chat_id AND m.user_id = i.member))
), dup AS (
    SELECT a.ord, m.id, m.seq FROM allowed a
    JOIN messages m ON m.chat_id = a.chat_id AND m.client_msg_id = a.client_msg_id
), fresh AS (
    SELECT a.*, row_number() OVER (PARTITION BY a.chat_id ORDER BY a.ord) AS rn,
           count(*) OVER (PARTITION BY a.chat_id) AS cnt
    FROM allowed a WHERE NOT EXISTS (SELECT 1 FROM dup d WHERE d.ord = a.ord)
), bumped AS (
    UPDATE chats c SET last_seq = c.last_seq + f.cnt, updated_at = ?
    FROM (SELECT chat_id, max(cnt) AS cnt FROM fresh GROUP BY chat_id) f
    WHERE c.id = f.chat_id
    RETURNING c.id, c.last_seq
), inserted AS (
    INSERT INTO messages (id, chat_id, seq, user_id, role, is_from_ai, content, client_msg_id,
                          finish_reason, created_at)
    SELECT f.id, f.chat_id, b.last_seq - f.cnt + f.rn, f.user_id, f.role, f.is_from_ai,
           f.content, f.client_msg_id, f.finish_reason, ?
    FROM fresh f JOIN bumped b ON b.id = f.chat_id
    RETURNING id, seq
)
SELECT f.ord, ins.seq, ins.id, false AS duplicate FROM inserted ins JOIN fresh f ON f.id = ins.id
UNION ALL
SELECT d.ord, d.seq, d.id, true AS duplicate FROM dup d";

/// [`APPEND_BATCH_SQL`] with its binds, as a query Postgres prepares once per connection
/// (diesel's `sql_query` is never cached, so every batch would be parsed and planned again).
struct AppendBatch<'a> {
    ids: Vec<Uuid>,
    chat_ids: Vec<Uuid>,
    members: Vec<Option<Uuid>>,
    user_ids: Vec<Option<Uuid>>,
    roles: Vec<&'static str>,
    from_ai: Vec<bool>,
    contents: Vec<&'a str>,
    keys: Vec<Option<Uuid>>,
    reasons: Vec<Option<&'a str>>,
    ts: chrono::DateTime<chrono::Utc>,
}

impl<'a> AppendBatch<'a> {
    /// The batch's columns, borrowing the posts' texts (not copying them).
    fn of(posts: &'a [Post], ts: chrono::DateTime<chrono::Utc>) -> AppendBatch<'a> {
        AppendBatch {
            ids: posts.iter().map(|p| p.id).collect(),
            chat_ids: posts.iter().map(|p| p.chat_id).collect(),
            members: posts.iter().map(|p| p.member).collect(),
            user_ids: posts.iter().map(|p| p.user_id).collect(),
            roles: posts.iter().map(|p| p.role).collect(),
            from_ai: posts.iter().map(|p| p.is_from_ai).collect(),
            contents: posts.iter().map(|p| p.content.as_str()).collect(),
            keys: posts.iter().map(|p| p.client_msg_id).collect(),
            reasons: posts.iter().map(|p| p.finish_reason.as_deref()).collect(),
            ts,
        }
    }
}

impl diesel::query_builder::QueryId for AppendBatch<'_> {
    type QueryId = AppendBatch<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for AppendBatch<'_> {
    type SqlType = (
        diesel::sql_types::BigInt,
        diesel::sql_types::BigInt,
        diesel::sql_types::Uuid,
        diesel::sql_types::Bool,
    );
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for AppendBatch<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
        let mut pieces = APPEND_BATCH_SQL.split('?');
        let mut sql = |out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>| {
            out.push_sql(pieces.next().unwrap_or_default());
        };
        sql(&mut out);
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        sql(&mut out);
        out.push_bind_param::<Array<SqlUuid>, _>(&self.chat_ids)?;
        sql(&mut out);
        out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.members)?;
        sql(&mut out);
        out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.user_ids)?;
        sql(&mut out);
        out.push_bind_param::<Array<Text>, _>(&self.roles)?;
        sql(&mut out);
        out.push_bind_param::<Array<Bool>, _>(&self.from_ai)?;
        sql(&mut out);
        out.push_bind_param::<Array<Text>, _>(&self.contents)?;
        sql(&mut out);
        out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.keys)?;
        sql(&mut out);
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.reasons)?;
        sql(&mut out);
        out.push_bind_param::<Timestamptz, _>(&self.ts)?;
        sql(&mut out);
        out.push_bind_param::<Timestamptz, _>(&self.ts)?;
        sql(&mut out);
        Ok(())
    }
}

async fn append_batch_pg(c: &mut super::PgConn, posts: &[Post]) -> QueryResult<Vec<Posted>> {
    let ts = now();
    let rows: Vec<(i64, i64, Uuid, bool)> = AppendBatch::of(posts, ts).load(c).await?;
    let mut out = vec![Posted::NoChat; posts.len()];
    let mut duplicates = Vec::new();
    for (ord, seq, id, duplicate) in rows {
        let Some(i) = usize::try_from(ord - 1).ok().filter(|i| *i < posts.len()) else {
            continue;
        };
        if duplicate {
            duplicates.push((i, id));
        } else {
            out[i] = Posted::Stored(Appended {
                message: posts[i].stored(seq, ts),
                created: true,
            });
        }
    }
    if !duplicates.is_empty() {
        let ids: Vec<DbUuid> = duplicates.iter().map(|(_, id)| DbUuid(*id)).collect();
        let found: Vec<Message> = {
            use super::schema::pg::messages;
            messages::table
                .filter(messages::id.eq_any(ids))
                .select(messages::all_columns)
                .load::<Message>(c)
                .await?
        };
        for (i, id) in duplicates {
            if let Some(message) = found.iter().find(|m| m.id.0 == id) {
                out[i] = Posted::Stored(Appended {
                    message: message.clone(),
                    created: false,
                });
            }
        }
    }
    Ok(out)
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

/// How many messages of a chat come after `after_seq`, counting at most `cap`: a read of
/// `seq`s only, for deciding whether a replay fits before reading any content.
pub async fn count_after(
    conn: &mut DbConn,
    chat_id: Uuid,
    after_seq: i64,
    cap: i64,
) -> QueryResult<i64> {
    let seqs = run!(conn, |c| messages::table
        .filter(messages::chat_id.eq(DbUuid(chat_id)))
        .filter(messages::seq.gt(after_seq))
        .order(messages::seq.asc())
        .limit(cap)
        .select(messages::seq)
        .load::<i64>(c)
        .await)?;
    Ok(seqs.len() as i64)
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
