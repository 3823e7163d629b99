//! Seeds API keys straight into a migrated database, in bulk: creating a million keys through
//! the API would take an hour of HTTP calls, and the verify path does not care how a row got
//! there. Rows are what keyward itself writes (see keyward-store's `sql.rs`): one tenant and
//! one user per `KEYS_PER_USER` keys, keys stored as SHA-256 with `start`/`end`, scopes as
//! space-separated text. Multi-row `INSERT`s of literal values (every value is generated here:
//! ids, hex, digits, so nothing needs quoting beyond the fixed strings), many per transaction.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keyward_core::{sha256, KeyFormat, KeyId, TenantId, UserId};
use rand::Rng;
use sqlx::Connection;

use crate::database::{Database, Engine};

/// Active keys per seeded user: keyward's default `keys.max_per_user`, so seeded users look
/// like real ones at the limit.
pub const KEYS_PER_USER: usize = 10;

/// Rows per `INSERT` statement and statements per transaction.
const ROWS_PER_STATEMENT: usize = 500;
const STATEMENTS_PER_TRANSACTION: usize = 200;

/// The base62 alphabet of keyward's default key format, in order (spec §1).
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The seeded keys (in full, to present them) and how long it took.
pub struct Seeded {
    pub keys: Vec<String>,
    pub elapsed: Duration,
}

/// A key of keyward's default format (`kw_` + 32 base62 + CRC-32 as 6 base62 digits). Made
/// here rather than with `KeyFormat::generate`, which asks the OS for every character (32
/// system calls a key: minutes for a million).
pub fn default_format_key(rng: &mut impl Rng) -> String {
    let mut key = String::with_capacity(41);
    key.push_str("kw_");
    for _ in 0..32 {
        key.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    let mut crc = crc32fast::hash(key.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    key.extend(digits.iter().map(|&digit| digit as char));
    key
}

/// Writes `count` keys (and their users and tenants) into `database`, which keyward must have
/// migrated.
pub async fn seed(database: &Database, count: usize) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let format = KeyFormat::default();
    let mut rng = rand::thread_rng();
    let keys: Vec<String> = (0..count).map(|_| default_format_key(&mut rng)).collect();
    if let Some(bad) = keys.iter().find(|key| !format.matches(key)) {
        bail!("a generated key does not match keyward's default format: {bad}");
    }

    let mut connection = Connector::open(database).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut statements = Vec::new();
    let mut pending_in_transaction = 0;
    for (chunk_index, chunk) in keys.chunks(ROWS_PER_STATEMENT).enumerate() {
        // Owners first (a statement of tenants, one of users), then the keys.
        let first_key = chunk_index * ROWS_PER_STATEMENT;
        let owners: Vec<(TenantId, UserId, usize)> = (first_key..first_key + chunk.len())
            .step_by(KEYS_PER_USER)
            .map(|index| {
                (
                    TenantId::generate(),
                    UserId::generate(),
                    index / KEYS_PER_USER,
                )
            })
            .collect();
        let mut tenants = String::from("INSERT INTO tenants (id, name, created_at) VALUES ");
        let mut users = String::from(
            "INSERT INTO users (id, tenant_id, email, name, password_hash, created_at) VALUES ",
        );
        for (index, (tenant, user, number)) in owners.iter().enumerate() {
            let comma = if index == 0 { "" } else { "," };
            let _ = write!(tenants, "{comma}('{tenant}','seeded {number}',{now})");
            // The hash is not a PHC string: seeded users cannot log in, and need not.
            let _ = write!(
                users,
                "{comma}('{user}','{tenant}','seed{number}@bench.invalid',NULL,'!seeded',{now})"
            );
        }
        let mut insert_keys = String::from(
            "INSERT INTO api_keys (id, tenant_id, user_id, key_hash, key_start, key_end, name, \
             scopes, created_at) VALUES ",
        );
        for (offset, key) in chunk.iter().enumerate() {
            let (tenant, user, _) = &owners[offset / KEYS_PER_USER];
            let hash = hex(sha256(key).as_bytes());
            let blob = match database.engine {
                Engine::Sqlite => format!("X'{hash}'"),
                Engine::Postgres => format!("'\\x{hash}'::bytea"),
            };
            let comma = if offset == 0 { "" } else { "," };
            let _ = write!(
                insert_keys,
                "{comma}('{}','{tenant}','{user}',{blob},'{}','{}','seeded','admin',{now})",
                KeyId::generate(),
                stored_start(key),
                stored_end(key),
            );
        }
        statements.push(tenants);
        statements.push(users);
        statements.push(insert_keys);
        pending_in_transaction += 1;
        if pending_in_transaction == STATEMENTS_PER_TRANSACTION {
            connection.transaction(&statements).await?;
            statements.clear();
            pending_in_transaction = 0;
            eprintln!(
                "    seeded {} keys ({:.0} s)",
                (chunk_index + 1) * ROWS_PER_STATEMENT,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if !statements.is_empty() {
        connection.transaction(&statements).await?;
    }
    connection.analyze().await?;
    connection.close().await;
    Ok(Seeded {
        keys,
        elapsed: started.elapsed(),
    })
}

/// `start` as keyward stores it: the first 8 characters.
fn stored_start(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}

/// `end` as keyward stores it: the last 4 characters.
fn stored_end(key: &str) -> &str {
    key.get(key.len().saturating_sub(4)..).unwrap_or(key)
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// One connection to either engine, for plain SQL text.
enum Connector {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Connector {
    async fn open(database: &Database) -> anyhow::Result<Self> {
        let what = || format!("connect to {} to seed keys", database.describe());
        Ok(match database.engine {
            Engine::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&database.url)
                    .await
                    .with_context(what)?;
                // A bench database: losing it to a power cut costs nothing.
                sqlx::raw_sql("PRAGMA synchronous = OFF")
                    .execute(&mut connection)
                    .await
                    .context("PRAGMA synchronous = OFF")?;
                Connector::Sqlite(connection)
            }
            Engine::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&database.url)
                    .await
                    .with_context(what)?;
                sqlx::raw_sql("SET synchronous_commit = off")
                    .execute(&mut connection)
                    .await
                    .context("SET synchronous_commit = off")?;
                Connector::Postgres(connection)
            }
        })
    }

    /// Runs the statements in one transaction.
    async fn transaction(&mut self, statements: &[String]) -> anyhow::Result<()> {
        match self {
            Connector::Sqlite(connection) => {
                let mut tx = connection.begin().await.context("BEGIN")?;
                for statement in statements {
                    sqlx::raw_sql(statement)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| failed(statement))?;
                }
                tx.commit().await.context("COMMIT")?;
            }
            Connector::Postgres(connection) => {
                let mut tx = connection.begin().await.context("BEGIN")?;
                for statement in statements {
                    sqlx::raw_sql(statement)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| failed(statement))?;
                }
                tx.commit().await.context("COMMIT")?;
            }
        }
        Ok(())
    }

    /// PostgreSQL: `ANALYZE`, as after any bulk load (PostgreSQL's "Populating a Database").
    /// Until autovacuum gets to it, the planner takes the freshly filled tables for empty
    /// ones and sorts all of `api_keys` for keyward's preload, which then runs into
    /// `statement_timeout` (a run of this bench saw it). SQLite plans without statistics
    /// unless `ANALYZE` is run, which keyward's own databases never are: left as they are.
    async fn analyze(&mut self) -> anyhow::Result<()> {
        if let Connector::Postgres(connection) = self {
            sqlx::raw_sql("ANALYZE")
                .execute(connection)
                .await
                .context("ANALYZE after seeding")?;
        }
        Ok(())
    }

    async fn close(self) {
        let _ = match self {
            Connector::Sqlite(connection) => connection.close().await,
            Connector::Postgres(connection) => connection.close().await,
        };
    }
}

fn failed(statement: &str) -> String {
    format!(
        "seeding statement failed: {}…",
        statement.chars().take(160).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_keys_have_keywards_default_format() {
        let format = KeyFormat::default();
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let key = default_format_key(&mut rng);
            assert_eq!(key.len(), format.key_len());
            assert!(format.matches(&key), "{key}");
        }
    }

    #[test]
    fn a_wrong_checksum_is_not_the_default_format() {
        let key = default_format_key(&mut rand::thread_rng());
        let last = key.chars().last().expect("non-empty");
        let swapped = if last == '0' { '1' } else { '0' };
        let broken = format!("{}{swapped}", &key[..key.len() - 1]);
        assert!(!KeyFormat::default().matches(&broken));
    }

    #[test]
    fn start_end_and_hex_are_what_keyward_stores() {
        let key = "kw_abcdefghijklmnopqrstuvwxyz012345ABCDEF";
        assert_eq!(stored_start(key), "kw_abcde");
        assert_eq!(stored_end(key), "CDEF");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
