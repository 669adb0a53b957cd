//! The database: one pool over Postgres (diesel-async, native types) or SQLite (the embedded
//! default, through diesel-async's `SyncConnectionWrapper`), and one query code path for both.
//!
//! Query functions take a [`DbConn`] and return `QueryResult<T>`. Their bodies are written once
//! inside [`run!`], which compiles them against each backend's table definitions.

pub mod chats;
pub mod messages;
pub mod migrate;
pub mod models;
pub mod schema;
pub mod sql_types;
pub mod users;
pub mod videos;

use std::time::Duration;

use diesel::result::QueryResult;
use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AnsiTransactionManager, AsyncConnection, SimpleAsyncConnection};
use diesel_async::{AsyncPgConnection, TransactionManager};
use futures_util::FutureExt;

use crate::config::{DatabaseKind, Settings};

/// Machine-written text (AI replies, transcripts, generated metadata) made storable on both
/// backends: Postgres cannot hold U+0000, so each NUL becomes U+FFFD. Text from clients never
/// gets here with a NUL: it is refused with a 422 naming the field (docs/INPUT-RULES.md).
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A Postgres connection.
pub type PgConn = AsyncPgConnection;
/// A SQLite connection, run on tokio's blocking pool.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, DetachedBlocking>;

/// Runs SQLite work on tokio's blocking pool without waiting for it when the caller goes away.
///
/// diesel-async's default waits for an abandoned query with `block_in_place`, which panics on
/// actix's single-threaded runtimes (a client disconnecting mid-query would take the worker
/// down). Here the abandoned query just finishes on its blocking thread, holding its share of
/// the connection; [`SqlitePooled`] then keeps that connection out of the pool for good,
/// because diesel-async panics on a connection whose state is still shared with a running
/// query.
pub struct DetachedBlocking(tokio::runtime::Handle);

impl diesel_async::sync_connection_wrapper::SpawnBlocking for DetachedBlocking {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>,
    >
    where
        R: Send + 'static,
    {
        let handle = self.0.spawn_blocking(task);
        async move { handle.await.map_err(Box::from) }.boxed()
    }

    fn get_runtime() -> Self {
        DetachedBlocking(
            tokio::runtime::Handle::try_current()
                .unwrap_or_else(|_| fallback_runtime().handle().clone()),
        )
    }
}

/// A runtime for SQLite connections opened outside any tokio runtime (never on the serving path).
fn fallback_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("cannot start a tokio runtime for SQLite: {e}"),
        }
    })
}

/// Runs a query body against whichever backend `conn` is on; inside the body the tables of that
/// backend are in scope and `$c` is the concrete connection. Each call runs in a `db` span
/// naming the backend and the calling line.
#[macro_export]
macro_rules! run {
    ($conn:expr, |$c:ident| $body:expr) => {{
        match $conn {
            $crate::db::DbConn::Pg($c) => {
                #[allow(unused_imports)]
                use $crate::db::schema::pg::*;
                let $c: &mut $crate::db::PgConn = &mut **$c;
                let span = tracing::debug_span!(
                    "db",
                    backend = "postgres",
                    at = concat!(file!(), ":", line!())
                );
                tracing::Instrument::instrument(async { $body }, span).await
            }
            $crate::db::DbConn::Sqlite(pooled) => {
                #[allow(unused_imports)]
                use $crate::db::schema::sqlite::*;
                let span = tracing::debug_span!(
                    "db",
                    backend = "sqlite",
                    at = concat!(file!(), ":", line!())
                );
                pooled.set_busy(true);
                let $c: &mut $crate::db::SqliteConn = &mut **pooled;
                let out = tracing::Instrument::instrument(async { $body }, span).await;
                pooled.set_busy(false);
                out
            }
        }
    }};
}
pub use run;

/// The connection pool, cheap to clone.
#[derive(Clone)]
pub enum Db {
    /// Postgres pool.
    Pg(Pool<PgConn>),
    /// SQLite pool.
    Sqlite(Pool<SqliteConn>),
}

/// One pooled connection, returned to the pool on drop. A connection dropped inside an open
/// transaction (a cancelled request) is discarded by the pool rather than reused.
/// (The size difference is the pool object's, which lives on the caller's stack briefly.)
#[allow(clippy::large_enum_variant)]
pub enum DbConn {
    /// Postgres connection.
    Pg(Object<PgConn>),
    /// SQLite connection.
    Sqlite(SqlitePooled),
}

/// A pooled SQLite connection that knows whether a query on it was abandoned.
///
/// A query future dropped before it finished (a client went away, an extractor failed next to
/// the one querying) leaves its blocking task running with a share of the connection. Such a
/// connection must not go back to the pool: the pool's health check would find the state
/// shared and diesel-async panics on that. So every query marks the connection busy while it
/// runs, and a connection dropped while busy is detached from the pool and closed once the
/// abandoned query ends.
pub struct SqlitePooled {
    /// `None` only inside `drop`.
    conn: Option<Object<SqliteConn>>,
    busy: bool,
}

impl SqlitePooled {
    fn new(conn: Object<SqliteConn>) -> SqlitePooled {
        SqlitePooled {
            conn: Some(conn),
            busy: false,
        }
    }

    /// Marks a query as running (`true`) or finished (`false`). Used by [`run!`].
    #[doc(hidden)]
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }
}

impl std::ops::Deref for SqlitePooled {
    type Target = SqliteConn;

    fn deref(&self) -> &SqliteConn {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("the connection is taken only in drop"),
        }
    }
}

impl std::ops::DerefMut for SqlitePooled {
    fn deref_mut(&mut self) -> &mut SqliteConn {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("the connection is taken only in drop"),
        }
    }
}

impl Drop for SqlitePooled {
    fn drop(&mut self) {
        if self.busy {
            if let Some(conn) = self.conn.take() {
                tracing::debug!("SQLite query abandoned mid-flight; connection discarded");
                drop(Object::take(conn));
            }
        }
    }
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The pool is exhausted or the server cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Pool occupancy, for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStatus {
    /// Connections the pool may open.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections not in use.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// The busy timeout comes first: the statements after it may have to wait for a writer (one
/// finishing an abandoned query, say) instead of failing the new connection at once.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

impl Db {
    /// Opens the pool for the configured database (creating the SQLite file's folder).
    pub fn connect(settings: &Settings) -> anyhow::Result<Db> {
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(settings.database_timeout),
            create: Some(settings.database_timeout),
            recycle: Some(settings.database_timeout),
        };
        match settings.database_kind {
            DatabaseKind::Postgres => {
                let mut cfg = ManagerConfig::default();
                cfg.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
                let mgr = AsyncDieselConnectionManager::<PgConn>::new_with_config(
                    &settings.database_url,
                    cfg,
                );
                let pool = Pool::builder(mgr)
                    .max_size(settings.database_pool_size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()?;
                Ok(Db::Pg(pool))
            }
            DatabaseKind::Sqlite => {
                if let Some(dir) = std::path::Path::new(&settings.database_url).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)?;
                    }
                }
                let mut cfg = ManagerConfig::<SqliteConn>::default();
                cfg.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
                cfg.custom_setup = Box::new(|url| {
                    let url = url.to_string();
                    async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(SQLITE_PRAGMAS)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let mgr = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    &settings.database_url,
                    cfg,
                );
                // Most recently used first: in WAL mode a connection drops its whole page cache
                // whenever another connection wrote since its last transaction, so handing out
                // the same few connections keeps their caches, where a round robin over the
                // pool would start every transaction cold.
                let pool = Pool::builder(mgr)
                    .max_size(settings.database_pool_size)
                    .queue_mode(deadpool::managed::QueueMode::Lifo)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()?;
                Ok(Db::Sqlite(pool))
            }
        }
    }

    /// Takes a connection from the pool, waiting at most the configured timeout.
    pub async fn conn(&self) -> Result<DbConn, DbError> {
        let map = |e: PoolError| DbError::Unavailable(e.to_string());
        Ok(match self {
            Db::Pg(p) => DbConn::Pg(p.get().await.map_err(map)?),
            Db::Sqlite(p) => DbConn::Sqlite(SqlitePooled::new(p.get().await.map_err(map)?)),
        })
    }

    /// `postgres` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Current pool occupancy.
    pub fn status(&self) -> PoolStatus {
        let s = match self {
            Db::Pg(p) => p.status(),
            Db::Sqlite(p) => p.status(),
        };
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    /// Runs `SELECT 1` within `timeout`; `/health` reports the outcome.
    pub async fn ping(&self, timeout: Duration) -> Result<(), DbError> {
        let fut = async {
            let mut conn = self.conn().await?;
            conn.ping().await?;
            Ok::<_, DbError>(())
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| DbError::Unavailable("timed out".into()))?
    }

    /// Closes the pool: idle connections are dropped, new requests fail fast.
    pub fn close(&self) {
        match self {
            Db::Pg(p) => p.close(),
            Db::Sqlite(p) => p.close(),
        }
    }
}

impl DbConn {
    async fn ping(&mut self) -> QueryResult<()> {
        run!(self, |c| c.batch_execute("SELECT 1").await)
    }

    /// Opens a write transaction. SQLite takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// concurrent writers queue on the busy timeout instead of failing to upgrade a read lock.
    async fn begin_write(&mut self) -> QueryResult<()> {
        match self {
            DbConn::Pg(c) => AnsiTransactionManager::begin_transaction(&mut **c).await,
            DbConn::Sqlite(c) => {
                c.set_busy(true);
                let out = c
                    .spawn_blocking(|conn| {
                        diesel::connection::AnsiTransactionManager::begin_transaction_sql(
                            conn,
                            "BEGIN IMMEDIATE",
                        )
                    })
                    .await;
                c.set_busy(false);
                out
            }
        }
    }

    async fn commit(&mut self) -> QueryResult<()> {
        match self {
            DbConn::Pg(c) => AnsiTransactionManager::commit_transaction(&mut **c).await,
            DbConn::Sqlite(c) => {
                c.set_busy(true);
                let out = <SqliteConn as AsyncConnection>::TransactionManager::commit_transaction(
                    &mut **c,
                )
                .await;
                c.set_busy(false);
                out
            }
        }
    }

    async fn rollback(&mut self) -> QueryResult<()> {
        match self {
            DbConn::Pg(c) => AnsiTransactionManager::rollback_transaction(&mut **c).await,
            DbConn::Sqlite(c) => {
                c.set_busy(true);
                let out =
                    <SqliteConn as AsyncConnection>::TransactionManager::rollback_transaction(
                        &mut **c,
                    )
                    .await;
                c.set_busy(false);
                out
            }
        }
    }

    /// Runs `f` in a write transaction: committed when it returns `Ok`, rolled back on `Err`.
    pub async fn write_txn<T, E>(
        &mut self,
        f: impl AsyncFnOnce(&mut DbConn) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        self.begin_write().await?;
        match f(self).await {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = self.rollback().await {
                    tracing::warn!(error = %rollback, "rollback failed; connection discarded");
                }
                Err(e)
            }
        }
    }
}

/// True when `e` is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// The current time at the database's precision (microseconds), so both backends agree.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::BigInt;
    use diesel::IntoSql;
    use diesel_async::RunQueryDsl;
    use std::collections::HashMap;

    /// Counts to five million in SQLite: long enough (hundreds of ms) to abandon half-way.
    const SLOW_QUERY: &str = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r \
         WHERE i < 5000000) SELECT count(*) FROM r";

    async fn one_connection_pool(dir: &std::path::Path) -> Db {
        pool_of(dir, 1).await
    }

    async fn pool_of(dir: &std::path::Path, size: usize) -> Db {
        let env: HashMap<String, String> = [
            (
                "DATABASE_URL".to_string(),
                dir.join("echo.db").display().to_string(),
            ),
            ("DATABASE_POOL_SIZE".to_string(), size.to_string()),
        ]
        .into_iter()
        .collect();
        let settings = Settings::from_map(&env).unwrap();
        Db::connect(&settings).unwrap()
    }

    async fn select_one(db: &Db) -> Result<i64, DbError> {
        let mut conn = db.conn().await?;
        let conn = &mut conn;
        Ok(run!(conn, |c| diesel::select(1_i64.into_sql::<BigInt>())
            .get_result::<i64>(c)
            .await)?)
    }

    // Regression: a request whose query future was dropped (an extractor failing next to the
    // one querying) handed the still-shared connection back to the pool, and the next request
    // to check it out panicked inside diesel-async's health check.
    #[tokio::test]
    async fn a_query_abandoned_mid_flight_does_not_break_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let db = one_connection_pool(dir.path()).await;
        assert_eq!(select_one(&db).await.unwrap(), 1);

        let abandoned = async {
            let mut conn = db.conn().await?;
            let conn = &mut conn;
            Ok::<_, DbError>(run!(conn, |c| c.batch_execute(SLOW_QUERY).await)?)
        };
        let outcome = tokio::time::timeout(Duration::from_millis(30), abandoned).await;
        assert!(outcome.is_err(), "the slow query should still be running");

        // The pool holds one connection: the next checkout is the one just abandoned (or a
        // fresh one replacing it). Either way it answers, and so does the one after.
        assert_eq!(select_one(&db).await.unwrap(), 1);
        assert_eq!(select_one(&db).await.unwrap(), 1);
    }

    // Regression: while one connection was still switching a new database file to WAL (its
    // request had gone away, the switch went on), the next connection's own switch failed at
    // once, before its busy timeout was set, and the request answered 503.
    #[tokio::test]
    async fn a_new_connection_waits_for_a_lock_instead_of_failing() {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("echo.db").display().to_string();
        let mut holder = diesel::SqliteConnection::establish(&path).unwrap();
        holder.batch_execute("BEGIN EXCLUSIVE").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            holder.batch_execute("COMMIT").unwrap();
        });
        let db = pool_of(dir.path(), 1).await;
        assert_eq!(select_one(&db).await.unwrap(), 1);
        release.join().unwrap();
    }

    #[tokio::test]
    async fn a_transaction_abandoned_mid_flight_is_rolled_back_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let db = one_connection_pool(dir.path()).await;
        {
            let mut conn = db.conn().await.unwrap();
            let conn = &mut conn;
            run!(conn, |c| c
                .batch_execute("CREATE TABLE t (x INTEGER)")
                .await)
            .unwrap();
        }
        let abandoned = async {
            let mut conn = db.conn().await?;
            conn.write_txn(async |conn: &mut DbConn| {
                run!(conn, |c| c.batch_execute("INSERT INTO t VALUES (1)").await)?;
                run!(conn, |c| c.batch_execute(SLOW_QUERY).await)?;
                Ok::<_, DbError>(())
            })
            .await
        };
        let outcome = tokio::time::timeout(Duration::from_millis(30), abandoned).await;
        assert!(outcome.is_err(), "the slow query should still be running");

        let mut conn = db.conn().await.unwrap();
        let conn = &mut conn;
        let rows: i64 = run!(conn, |c| diesel::sql_query("SELECT count(*) AS n FROM t")
            .get_result::<Count>(c)
            .await)
        .unwrap()
        .n;
        assert_eq!(
            rows, 0,
            "the abandoned transaction's insert must not be committed"
        );
    }

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
}
