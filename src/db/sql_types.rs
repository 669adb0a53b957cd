//! Column types per backend, so that `schema.rs` can declare every table once.
//!
//! Postgres uses its native types. SQLite has no uuid, timestamptz, jsonb or array types, so
//! the `sqlite` module defines same-named types stored as text, with conversions to the same
//! Rust types (`uuid::Uuid`, `DateTime<Utc>`, `serde_json::Value`, `Vec<String>`).

/// Postgres column types: the native ones.
pub mod pg {
    pub use diesel::sql_types::{Jsonb, Uuid};
    /// `timestamptz` (named apart from diesel's so `table!` adds no interval arithmetic).
    pub type Instant = diesel::sql_types::Timestamptz;
    /// `text[]`.
    pub type TextArray = diesel::sql_types::Array<diesel::sql_types::Text>;
}

/// SQLite column types: text storage with typed conversions.
pub mod sqlite {
    /// RFC 3339 timestamp stored as text.
    pub type Instant = diesel::sql_types::TimestamptzSqlite;
    /// JSON stored as text.
    pub type Jsonb = diesel::sql_types::Json;

    /// A UUID stored as its hyphenated text form.
    #[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId, Debug, Clone, Copy)]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct Uuid;

    /// A list of strings stored as a JSON array.
    #[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId, Debug, Clone, Copy)]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct TextArray;
}

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{Array, Text};
use diesel::sqlite::{Sqlite, SqliteValue};

/// A UUID column value on either backend (native `uuid` on Postgres, text on SQLite).
/// Diesel's coherence rules keep `uuid::Uuid` itself from binding to a custom SQLite type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Uuid)]
#[diesel(sql_type = sqlite::Uuid)]
pub struct DbUuid(pub uuid::Uuid);

impl From<uuid::Uuid> for DbUuid {
    fn from(u: uuid::Uuid) -> Self {
        DbUuid(u)
    }
}

impl From<DbUuid> for uuid::Uuid {
    fn from(u: DbUuid) -> Self {
        u.0
    }
}

impl ToSql<diesel::sql_types::Uuid, Pg> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        ToSql::<diesel::sql_types::Uuid, Pg>::to_sql(&self.0, out)
    }
}

impl FromSql<diesel::sql_types::Uuid, Pg> for DbUuid {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <uuid::Uuid as FromSql<diesel::sql_types::Uuid, Pg>>::from_sql(value).map(DbUuid)
    }
}

impl ToSql<sqlite::Uuid, Sqlite> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(IsNull::No)
    }
}

impl FromSql<sqlite::Uuid, Sqlite> for DbUuid {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let s = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(DbUuid(uuid::Uuid::parse_str(&s)?))
    }
}

/// A list of strings on either backend (`text[]` on Postgres, a JSON array on SQLite).
#[derive(Debug, Clone, PartialEq, Eq, Default, AsExpression, FromSqlRow)]
#[diesel(sql_type = Array<Text>)]
#[diesel(sql_type = sqlite::TextArray)]
pub struct DbStrings(pub Vec<String>);

impl ToSql<Array<Text>, Pg> for DbStrings {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        ToSql::<Array<Text>, Pg>::to_sql(&self.0, out)
    }
}

impl FromSql<Array<Text>, Pg> for DbStrings {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <Vec<String> as FromSql<Array<Text>, Pg>>::from_sql(value).map(DbStrings)
    }
}

impl ToSql<sqlite::TextArray, Sqlite> for DbStrings {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(serde_json::to_string(&self.0)?);
        Ok(IsNull::No)
    }
}

impl FromSql<sqlite::TextArray, Sqlite> for DbStrings {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let s = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(DbStrings(serde_json::from_str(&s)?))
    }
}
