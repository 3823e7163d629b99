//! The SQLite store: WAL mode, a small pool, every multi-row change in one transaction that
//! starts with its write (so SQLite takes the write lock first and `busy_timeout` applies).

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::PoolSettings;

// `Owner`, `StoreError`, `StoreResult`, `map_error` come in with `sql.rs` below.

type Db = Sqlite;
type DbRow = SqliteRow;

/// How the multi-row statements of `sql.rs` write their `n`-th parameter: an anonymous `?`,
/// bound by position. sqlx asks SQLite for the name of every parameter it binds, and SQLite
/// finds a named parameter (`$n`, `?n`) by scanning the statement's list of names, so binding
/// the 800 parameters of a 100-row batch cost 800 scans of up to 800 names: a tenth of the
/// server's CPU when a million keys each saw their first use (perf, issue 7). Anonymous
/// parameters have no names to scan. Texts built with it use each parameter once, in order.
fn parameter(_n: usize) -> String {
    "?".to_owned()
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Creates a missing database file empty with mode 0600 before SQLite opens it. SQLite would
/// create it 0644 less the umask, readable by every local user, and it holds key hashes,
/// password hashes and the private signing keys. SQLite gives the `-wal` and `-shm` files it
/// makes later the main file's permissions, so they are owner-only too. An empty file is a
/// valid new database. Existing files are left as their owner set them; in-memory databases
/// have no file. Failures (say a missing directory) are left for SQLite to report.
fn create_owner_only(url: &str, path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory || path.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = (url, path);
}

/// The SQLite implementation of every store trait.
#[derive(Clone)]
pub struct SqlStore {
    pool: SqlitePool,
    /// The key-change feed's own connections (see `feed.rs`).
    feed_pool: SqlitePool,
    feed: std::sync::Arc<crate::feed::Feed>,
}

pub type SqliteStore = SqlStore;

impl SqlStore {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn connect(url: &str, settings: &PoolSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("database_url: {e}")))?;
        create_owner_only(url, options.get_filename());
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // SQLite has no statement timeout; the wait for the write lock is its equivalent.
            .busy_timeout(settings.statement_timeout)
            .foreign_keys(true);
        // Turning a new database to WAL needs an exclusive lock that `busy_timeout` does not wait
        // for: instances opening one new file at once retry while it is busy.
        let deadline = std::time::Instant::now() + settings.statement_timeout;
        let pool = loop {
            match crate::pool_options::<Sqlite>(settings.max_connections, settings.connect_timeout)
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(StoreError::Unavailable(format!("opening {url}: {e}"))),
            }
        };
        // sqlx takes no lock on SQLite: instances starting on one new file would each see no
        // migration applied and apply it twice. Holding the write lock (waited for with
        // `busy_timeout`) from before the check makes them take turns.
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {url}: {e}")))?;
        MIGRATOR
            .run(&mut *tx)
            .await
            .map_err(|e| StoreError::Other(format!("migrating {url}: {e}")))?;
        tx.commit()
            .await
            .map_err(|e| StoreError::Other(format!("migrating {url}: {e}")))?;
        // Polls, the reporter's writes, and a rare join or prune.
        let feed_pool = crate::pool_options::<Sqlite>(3, settings.connect_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening {url}: {e}")))?;
        Ok(Self {
            pool,
            feed_pool,
            feed: std::sync::Arc::new(crate::feed::Feed::default()),
        })
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED, extended codes included.
fn is_busy(error: &sqlx::Error) -> bool {
    let code = match error {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse::<i32>().ok()),
        _ => None,
    };
    code.is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// SQLite serializes writers: a transaction that writes holds the database's one write lock, so
/// there is nothing more to lock.
async fn lock_owner(_tx: &mut sqlx::Transaction<'static, Db>, _owner: &Owner) -> StoreResult<()> {
    Ok(())
}

include!("sql.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_run_in_chunks_of_a_hundred_ten_and_one() {
        let rows: Vec<usize> = (0..237).collect();
        let sizes: Vec<usize> = row_chunks(&rows).map(<[usize]>::len).collect();
        assert_eq!(sizes, [100, 100, 10, 10, 10, 1, 1, 1, 1, 1, 1, 1]);
        let again: Vec<usize> = row_chunks(&rows).flatten().copied().collect();
        assert_eq!(again, rows, "every row once, in order");
        assert_eq!(row_chunks::<usize>(&[]).count(), 0);
    }

    #[test]
    fn multi_row_statements_use_anonymous_parameters() {
        assert_eq!(placeholders(3, 3), "?, ?, ?");
    }
}
