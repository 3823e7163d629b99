//! The SQLite store: WAL mode, a small pool, every multi-row change in one transaction that
//! starts with its write (so SQLite takes the write lock first and `busy_timeout` applies).

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool};

use crate::PoolSettings;

// `Owner`, `StoreError`, `StoreResult`, `map_error` come in with `sql.rs` below.

type Db = Sqlite;
type DbRow = SqliteRow;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of every store trait.
#[derive(Clone)]
pub struct SqlStore {
    pool: SqlitePool,
}

pub type SqliteStore = SqlStore;

impl SqlStore {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn connect(url: &str, settings: &PoolSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("database_url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // SQLite has no statement timeout; the wait for the write lock is its equivalent.
            .busy_timeout(settings.statement_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {url}: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migrating {url}: {e}")))?;
        Ok(Self { pool })
    }
}

/// SQLite serializes writers: a transaction that writes holds the database's one write lock, so
/// there is nothing more to lock.
async fn lock_owner(_tx: &mut sqlx::Transaction<'static, Db>, _owner: &Owner) -> StoreResult<()> {
    Ok(())
}

include!("sql.rs");
