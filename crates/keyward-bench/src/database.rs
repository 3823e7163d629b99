//! The databases keyward runs on in a bench: a fresh SQLite file in a temporary directory, or a
//! fresh PostgreSQL database (`kwbench_<random>`) created on the server named by
//! `KEYWARD_BENCH_POSTGRES_URL` and dropped when this value is dropped, also on failure, so a
//! run never leaves databases behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::distributions::{Alphanumeric, DistString};
use sqlx::Connection;

/// Where the PostgreSQL databases are created unless `KEYWARD_BENCH_POSTGRES_URL` says.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        }
    }
}

/// A database made for one server (or two sharing it); removed on drop.
pub struct Database {
    pub engine: Engine,
    /// What keyward's `--database-url` gets.
    pub url: String,
    /// PostgreSQL: the administrative URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
    _directory: Option<tempfile::TempDir>,
}

impl Database {
    pub async fn create(engine: Engine) -> anyhow::Result<Self> {
        match engine {
            Engine::Sqlite => {
                let directory = tempfile::Builder::new()
                    .prefix("keyward-bench-")
                    .tempdir()
                    .context("create a temporary directory for the database")?;
                let url = format!("sqlite://{}", directory.path().join("bench.db").display());
                Ok(Self {
                    engine,
                    url,
                    postgres: None,
                    _directory: Some(directory),
                })
            }
            Engine::Postgres => {
                let admin = std::env::var("KEYWARD_BENCH_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
                let name = format!(
                    "kwbench_{}",
                    Alphanumeric
                        .sample_string(&mut rand::thread_rng(), 12)
                        .to_lowercase()
                );
                let mut connection =
                    sqlx::PgConnection::connect(&admin).await.with_context(|| {
                        format!(
                            "connect to PostgreSQL at {} (set KEYWARD_BENCH_POSTGRES_URL, or \
                             run with --backend sqlite)",
                            redact(&admin)
                        )
                    })?;
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut connection)
                    .await
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                let _ = connection.close().await;
                let url = database_url(&admin, &name)?;
                Ok(Self {
                    engine,
                    url,
                    postgres: Some((admin, name)),
                    _directory: None,
                })
            }
        }
    }

    /// Runs `keyward migrate` on it, so it has the server's schema before seeding.
    pub fn migrate(&self, binary: &Path) -> anyhow::Result<()> {
        let output = Command::new(binary)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .arg("migrate")
            .arg("--database-url")
            .arg(&self.url)
            .output()
            .with_context(|| format!("run {} migrate", binary.display()))?;
        if !output.status.success() {
            bail!(
                "keyward migrate failed with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The database's name, for the report.
    pub fn describe(&self) -> String {
        match &self.postgres {
            Some((admin, name)) => format!("PostgreSQL database {name} on {}", redact(admin)),
            None => "SQLite file in a temporary directory".into(),
        }
    }
}

impl Drop for Database {
    /// Drops the PostgreSQL database. Drop cannot wait on the bench's runtime, so this uses a
    /// thread of its own with a small runtime; `WITH (FORCE)` ends sessions still open.
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        let dropped = name.clone();
        let worker = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::PgConnection::connect(&admin),
                )
                .await
                .context("connect: timed out")??;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {dropped} WITH (FORCE)"))
                    .execute(&mut connection)
                    .await?;
                let _ = connection.close().await;
                Ok(())
            })
        });
        match worker.join() {
            Ok(Ok(())) => eprintln!("  dropped the PostgreSQL database {name}"),
            Ok(Err(error)) => eprintln!(
                "keyward-bench: WARNING: could not drop the PostgreSQL database {name} \
                 ({error:#}); drop it by hand"
            ),
            Err(_) => eprintln!(
                "keyward-bench: WARNING: dropping the PostgreSQL database {name} panicked; \
                 drop it by hand"
            ),
        }
    }
}

/// `admin` with its database name replaced by `name` (the query string, if any, kept).
fn database_url(admin: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    let authority_start = base
        .find("://")
        .map(|at| at + 3)
        .with_context(|| format!("{} is not a URL", redact(admin)))?;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user_info = &rest[..at];
            let user = user_info.split(':').next().unwrap_or("");
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{}{user}{hidden}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_replaces_the_admin_one() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "kwbench_x").ok(),
            Some("postgres://postgres@127.0.0.1:5432/kwbench_x".into())
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "kwbench_x").ok(),
            Some("postgres://u:p@h/kwbench_x?sslmode=disable".into())
        );
        assert_eq!(
            database_url("postgres://h:5432", "kwbench_x").ok(),
            Some("postgres://h:5432/kwbench_x".into())
        );
        assert!(database_url("nonsense", "x").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
    }
}
