//! Queries on `chats` and `chat_members`.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::models::{Chat, ChatMember};
use super::sql_types::DbUuid;
use super::{now, run, DbConn};

/// Role of a chat's creator.
pub const ROLE_OWNER: &str = "owner";
/// Role of everyone else in a chat.
pub const ROLE_MEMBER: &str = "member";

/// Creates a chat owned by `owner`, who becomes its first member.
pub async fn create(conn: &mut DbConn, owner: Uuid, title: Option<&str>) -> QueryResult<Chat> {
    conn.write_txn(async |conn: &mut DbConn| {
        let ts = now();
        let id = Uuid::new_v4();
        let chat = run!(conn, |c| diesel::insert_into(chats::table)
            .values((
                chats::id.eq(DbUuid(id)),
                chats::owner_id.eq(DbUuid(owner)),
                chats::title.eq(title),
                chats::last_seq.eq(0i64),
                chats::created_at.eq(ts),
                chats::updated_at.eq(ts),
            ))
            .returning(chats::all_columns)
            .get_result::<Chat>(c)
            .await)?;
        insert_member(conn, id, owner, ROLE_OWNER).await?;
        Ok(chat)
    })
    .await
}

/// The chat and the caller's role in it, if the caller is a member.
pub async fn find_for_member(
    conn: &mut DbConn,
    chat_id: Uuid,
    user_id: Uuid,
) -> QueryResult<Option<(Chat, String)>> {
    run!(conn, |c| chats::table
        .inner_join(chat_members::table)
        .filter(chats::id.eq(DbUuid(chat_id)))
        .filter(chat_members::user_id.eq(DbUuid(user_id)))
        .select((chats::all_columns, chat_members::role))
        .first::<(Chat, String)>(c)
        .await
        .optional())
}

/// Loads a chat regardless of membership (internal use only).
pub async fn find(conn: &mut DbConn, chat_id: Uuid) -> QueryResult<Option<Chat>> {
    run!(conn, |c| chats::table
        .find(DbUuid(chat_id))
        .select(chats::all_columns)
        .first::<Chat>(c)
        .await
        .optional())
}

/// Chats `user_id` is a member of, most recently updated first.
pub async fn list_for_user(
    conn: &mut DbConn,
    user_id: Uuid,
    skip: i64,
    limit: i64,
) -> QueryResult<Vec<Chat>> {
    run!(conn, |c| chats::table
        .inner_join(chat_members::table)
        .filter(chat_members::user_id.eq(DbUuid(user_id)))
        .order((chats::updated_at.desc(), chats::id.desc()))
        .offset(skip)
        .limit(limit)
        .select(chats::all_columns)
        .load::<Chat>(c)
        .await)
}

/// Sets a chat's title (`None` clears it) and bumps `updated_at`.
pub async fn set_title(conn: &mut DbConn, chat_id: Uuid, title: Option<&str>) -> QueryResult<Chat> {
    let ts = now();
    run!(conn, |c| diesel::update(chats::table.find(DbUuid(chat_id)))
        .set((chats::title.eq(title), chats::updated_at.eq(ts)))
        .returning(chats::all_columns)
        .get_result::<Chat>(c)
        .await)
}

/// Deletes a chat; members and messages go with it.
pub async fn delete(conn: &mut DbConn, chat_id: Uuid) -> QueryResult<usize> {
    run!(conn, |c| diesel::delete(chats::table.find(DbUuid(chat_id)))
        .execute(c)
        .await)
}

/// Adds `user_id` to the chat with `role`.
pub async fn insert_member(
    conn: &mut DbConn,
    chat_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> QueryResult<ChatMember> {
    let ts = now();
    run!(conn, |c| diesel::insert_into(chat_members::table)
        .values((
            chat_members::chat_id.eq(DbUuid(chat_id)),
            chat_members::user_id.eq(DbUuid(user_id)),
            chat_members::role.eq(role),
            chat_members::joined_at.eq(ts),
        ))
        .returning(chat_members::all_columns)
        .get_result::<ChatMember>(c)
        .await)
}

/// Removes `user_id` from the chat; returns whether they were a member.
pub async fn remove_member(conn: &mut DbConn, chat_id: Uuid, user_id: Uuid) -> QueryResult<bool> {
    let n = run!(conn, |c| diesel::delete(
        chat_members::table
            .filter(chat_members::chat_id.eq(DbUuid(chat_id)))
            .filter(chat_members::user_id.eq(DbUuid(user_id)))
    )
    .execute(c)
    .await)?;
    Ok(n > 0)
}

/// The chat's last seq, if `user_id` is a member (`None` for a chat that does not exist or that
/// they are not in).
pub async fn last_seq_for_member(
    conn: &mut DbConn,
    chat_id: Uuid,
    user_id: Uuid,
) -> QueryResult<Option<i64>> {
    run!(conn, |c| chats::table
        .inner_join(chat_members::table)
        .filter(chats::id.eq(DbUuid(chat_id)))
        .filter(chat_members::user_id.eq(DbUuid(user_id)))
        .select(chats::last_seq)
        .first::<i64>(c)
        .await
        .optional())
}

/// [`last_seq_for_member`] for many `(chat, user)` pairs in one query, in their order.
pub async fn last_seqs_for_members(
    conn: &mut DbConn,
    pairs: &[(Uuid, Uuid)],
) -> QueryResult<Vec<Option<i64>>> {
    let chat_ids: Vec<DbUuid> = pairs.iter().map(|(c, _)| DbUuid(*c)).collect();
    let user_ids: Vec<DbUuid> = pairs.iter().map(|(_, u)| DbUuid(*u)).collect();
    // Both lists as `IN`: a superset of the pairs (chat × user), narrowed below.
    let rows: Vec<(DbUuid, DbUuid, i64)> = run!(conn, |c| chats::table
        .inner_join(chat_members::table)
        .filter(chat_members::chat_id.eq_any(chat_ids))
        .filter(chat_members::user_id.eq_any(user_ids))
        .select((
            chat_members::chat_id,
            chat_members::user_id,
            chats::last_seq
        ))
        .load::<(DbUuid, DbUuid, i64)>(c)
        .await)?;
    let found: std::collections::HashMap<(Uuid, Uuid), i64> = rows
        .into_iter()
        .map(|(c, u, seq)| ((c.0, u.0), seq))
        .collect();
    Ok(pairs.iter().map(|pair| found.get(pair).copied()).collect())
}

/// True when `user_id` is a member of the chat.
pub async fn is_member(conn: &mut DbConn, chat_id: Uuid, user_id: Uuid) -> QueryResult<bool> {
    run!(conn, |c| diesel::select(diesel::dsl::exists(
        chat_members::table
            .filter(chat_members::chat_id.eq(DbUuid(chat_id)))
            .filter(chat_members::user_id.eq(DbUuid(user_id)))
    ))
    .get_result::<bool>(c)
    .await)
}
