//! Keyward storage: the SQL implementations of the `keyward-core` store traits.
//!
//! [`connect`] opens the database named by a URL, applies the migrations and returns the
//! [`Store`] behind an `Arc<dyn Store>`. Only this crate knows SQL. Today it holds
//! [`SqliteStore`]; PostgreSQL joins it behind the same traits.

use std::sync::Arc;

use keyward_core::store::{Store, StoreError};

mod sqlite;

pub use sqlite::SqliteStore;

/// Opens the database at `url` (`sqlite://path`, created if missing) and migrates it.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Err(StoreError::Other(
            "database_url: PostgreSQL is not supported by this build yet; use sqlite://FILE".into(),
        ))
    } else {
        Err(StoreError::Other(format!(
            "database_url: unsupported scheme in {:?}; use sqlite://FILE",
            redact_url(url)
        )))
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
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Other(error.to_string()),
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
