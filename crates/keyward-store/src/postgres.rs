//! The PostgreSQL store: several Keyward instances share one database. Consistency comes from
//! the database itself: conditional updates (`… WHERE spent_at IS NULL`), row locks where a
//! count must be exact, and transactions for multi-row changes; never from an instance's memory.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{PgPool, Postgres};

use crate::PoolSettings;

// `Owner`, `StoreError`, `StoreResult`, `map_error` come in with `sql.rs` below.

type Db = Postgres;
type DbRow = PgRow;

/// How the multi-row statements of `sql.rs` write their `n`-th parameter (SQLite writes `?`).
fn parameter(n: usize) -> String {
    format!("${n}")
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL implementation of every store trait.
#[derive(Clone)]
pub struct SqlStore {
    pool: PgPool,
    /// The key-change feed's own connections (see `feed.rs`).
    feed_pool: PgPool,
    feed: std::sync::Arc<crate::feed::Feed>,
}

pub type PgStore = SqlStore;

impl SqlStore {
    /// Connects and migrates (migrations take an advisory lock, so instances starting together
    /// apply them once).
    pub async fn connect(url: &str, settings: &PoolSettings) -> StoreResult<Self> {
        let statement_timeout = settings.statement_timeout.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("database_url: {e}")))?
            .application_name("keyward")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool =
            crate::pool_options::<Postgres>(settings.max_connections, settings.connect_timeout)
                .connect_with(options)
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "connecting to {}: {e}",
                        crate::redact_url(url)
                    ))
                })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migrating {}: {e}", crate::redact_url(url))))?;
        // Lazy: it connects on the feed's first poll, with the pool's options.
        // Polls, the reporter's writes, and a rare join or prune.
        let feed_pool = crate::pool_options::<Postgres>(3, settings.connect_timeout)
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        Ok(Self {
            pool,
            feed_pool,
            feed: std::sync::Arc::new(crate::feed::Feed::default()),
        })
    }
}

/// Locks the owner's user row until the transaction ends, so that concurrent key creations for
/// one user (on any instance) count and insert one after the other.
async fn lock_owner(tx: &mut sqlx::Transaction<'static, Db>, owner: &Owner) -> StoreResult<()> {
    query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(owner.user_id.as_str())
        .execute(&mut **tx)
        .await
        .map_err(map_error)?;
    Ok(())
}

include!("sql.rs");
