//! Keyward storage: the SQL implementations of the `keyward-core` store traits.
//!
//! [`connect`] opens the database named by a URL (`sqlite://FILE` or `postgres://…`), applies
//! the migrations and returns the [`Store`] behind an `Arc<dyn Store>`. Only this crate knows
//! SQL. The implementation (`sql.rs`) is written once and compiled for each backend
//! ([`SqliteStore`], [`PgStore`]), so both answer the same to the letter.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::store::{Store, StoreError};

pub mod feed;
mod postgres;
mod sqlite;
mod statements;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use statements::{statement_counts, StatementCount};

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections open at once, per instance.
    pub max_connections: u32,
    /// How long a request waits for a connection (or a new one to open) before it fails with
    /// `unavailable`.
    pub connect_timeout: Duration,
    /// Longest a statement may run (PostgreSQL `statement_timeout`; SQLite's busy timeout).
    pub statement_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Pool options for every pool of either backend: at most `max_connections`, waiting at most
/// `acquire_timeout` for one, and a connection is pinged before use only when it has been idle
/// for [`PING_WHEN_IDLE_FOR`].
///
/// sqlx's default pings every connection it hands out, and pings it again when it comes back
/// (that one is not configurable). On PostgreSQL each ping is a round trip to the server, so a
/// request's one statement cost three; on SQLite each is a message to the connection's thread
/// and back, about 20 µs of the 180 that `/v1/auth/me` with a token took (BENCHMARKS.md). A
/// connection that was in use within the last second passed the ping on its return; one that
/// has sat idle, for example across a database restart, is still tested and replaced when
/// dead. A connection that dies within the second after its last use fails the next statement
/// on it (answered 503 `unavailable`), and the ping on its return closes it.
pub(crate) fn pool_options<DB: sqlx::Database>(
    max_connections: u32,
    acquire_timeout: Duration,
) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Opens the database at `url` and migrates it.
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::of_url(url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::connect(url, settings).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(PgStore::connect(url, settings).await?)),
        None => Err(StoreError::Other(format!(
            "database_url: unsupported scheme in {:?}; use sqlite://FILE or postgres://…",
            redact_url(url)
        ))),
    }
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn map_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.constraint().unwrap_or("unique").to_owned())
        }
        sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Other(error.to_string()),
    }
}

/// Database error codes that mean "cannot serve now", not "this request is wrong":
/// PostgreSQL connection exceptions (class 08), shutdowns and terminated backends (57P0x),
/// statement timeouts (57014), too many connections (53300); SQLite busy (5) and locked (6).
fn is_unavailable_code(code: Option<&str>) -> bool {
    match code {
        Some(code) => {
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(code, "57014" | "53300" | "5" | "6")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/keyward"),
            "postgres://app:***@db:5432/keyward"
        );
        assert_eq!(redact_url("sqlite://keyward.db"), "sqlite://keyward.db");
    }
}
