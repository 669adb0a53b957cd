//! Queries on `users`.

use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::models::User;
use super::sql_types::DbUuid;
use super::{is_unique_violation, now, run, DbConn};

/// What the JWT says about a user, used to create or refresh their row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserClaims {
    /// `sub`.
    pub id: Uuid,
    /// `email`.
    pub email: Option<String>,
    /// `user_metadata.full_name` or `user_metadata.name`.
    pub full_name: Option<String>,
    /// `user_metadata.username`.
    pub username: Option<String>,
}

impl UserClaims {
    /// The claims with every control character dropped (a claim left empty counts as absent),
    /// so that what a user wrote into their own metadata can neither fail the upsert (Postgres
    /// refuses U+0000) nor reach other clients.
    pub fn sanitized(&self) -> UserClaims {
        let clean = |v: &Option<String>| {
            v.as_deref()
                .map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>())
                .filter(|s| !s.is_empty())
        };
        UserClaims {
            id: self.id,
            email: clean(&self.email),
            full_name: clean(&self.full_name),
            username: clean(&self.username),
        }
    }
}

/// Loads a user by id.
pub async fn find(conn: &mut DbConn, id: Uuid) -> QueryResult<Option<User>> {
    run!(conn, |c| users::table
        .find(DbUuid(id))
        .select(users::all_columns)
        .first::<User>(c)
        .await
        .optional())
}

/// True when `a` and `b` are members of at least one common chat.
pub async fn share_a_chat(conn: &mut DbConn, a: Uuid, b: Uuid) -> QueryResult<bool> {
    run!(conn, |c| {
        let (mine, theirs) = diesel::alias!(chat_members as mine, chat_members as theirs);
        diesel::select(diesel::dsl::exists(
            mine.inner_join(
                theirs.on(theirs
                    .field(chat_members::chat_id)
                    .eq(mine.field(chat_members::chat_id))),
            )
            .filter(mine.field(chat_members::user_id).eq(DbUuid(a)))
            .filter(theirs.field(chat_members::user_id).eq(DbUuid(b))),
        ))
        .get_result::<bool>(c)
        .await
    })
}

/// Creates the user's row or refreshes its email and name, from the claims without control
/// characters ([`UserClaims::sanitized`]). The username is taken from the claims, else the
/// email's local part, else `user`; made unique with a suffix on collision.
pub async fn upsert_from_claims(conn: &mut DbConn, claims: &UserClaims) -> QueryResult<User> {
    let claims = &claims.sanitized();
    let base = claims
        .username
        .clone()
        .or_else(|| {
            claims
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "user".to_string());
    let id_hex = claims.id.simple().to_string();
    let candidates = [
        base.clone(),
        format!("{base}-{}", &id_hex[..6]),
        format!("{base}-{id_hex}"),
    ];
    let mut last_err = diesel::result::Error::NotFound;
    for username in candidates {
        let ts = now();
        let result = run!(conn, |c| diesel::insert_into(users::table)
            .values((
                users::id.eq(DbUuid(claims.id)),
                users::username.eq(&username),
                users::email.eq(&claims.email),
                users::full_name.eq(&claims.full_name),
                users::is_active.eq(true),
                users::created_at.eq(ts),
                users::updated_at.eq(ts),
            ))
            .on_conflict(users::id)
            .do_update()
            .set((
                users::email.eq(&claims.email),
                users::full_name.eq(&claims.full_name),
                users::updated_at.eq(ts),
            ))
            .returning(users::all_columns)
            .get_result::<User>(c)
            .await);
        match result {
            Ok(user) => return Ok(user),
            Err(e) if is_unique_violation(&e) => last_err = e,
            Err(e) => return Err(e),
        }
    }
    Err(last_err)
}
