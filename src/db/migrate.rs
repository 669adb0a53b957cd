//! Embedded migrations, run by `echo-server migrate` and at start-up.
//!
//! Diesel's migration harness is synchronous, so it runs on a plain thread: Postgres through
//! `AsyncConnectionWrapper` (no libpq needed) under an advisory lock, so that several nodes
//! starting at once migrate exactly once; SQLite through a plain `SqliteConnection`.

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::{DatabaseKind, Settings};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Arbitrary constant naming Echo's migration lock among Postgres advisory locks.
const MIGRATION_LOCK_KEY: i64 = 0x0045_4348_4f4d_4947; // "ECHOMIG"

/// Applies every pending migration; returns the versions applied.
pub async fn run_migrations(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let kind = settings.database_kind.clone();
    let url = settings.database_url.clone();
    if kind == DatabaseKind::Sqlite {
        if let Some(dir) = std::path::Path::new(&url).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("echo-migrate".into())
        .spawn(move || {
            let _ = tx.send(migrate_blocking(kind, &url));
        })?;
    rx.await.context("migration thread died")?
}

fn migrate_blocking(kind: DatabaseKind, url: &str) -> anyhow::Result<Vec<String>> {
    let applied = match kind {
        DatabaseKind::Postgres => {
            let mut conn =
                AsyncConnectionWrapper::<diesel_async::AsyncPgConnection>::establish(url)
                    .context("connecting to Postgres")?;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                .execute(&mut conn)?;
            let result = conn
                .run_pending_migrations(PG_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>());
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                .execute(&mut conn)?;
            result
        }
        DatabaseKind::Sqlite => {
            let mut conn =
                diesel::SqliteConnection::establish(url).context("opening the SQLite file")?;
            conn.batch_execute("PRAGMA journal_mode = WAL")?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>())
        }
    };
    applied.map_err(|e| anyhow::anyhow!("migration failed: {e}"))
}
