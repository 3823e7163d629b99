// The SQL implementation of the store traits, written once and compiled once per backend:
// `sqlite.rs` and `postgres.rs` each `include!` this file after defining `Db` (the sqlx
// database), `DbRow`, `SqlStore { pool }` and `lock_owner`. The same SQL text runs on both
// (`$N` parameters, BIGINT seconds, no vendor functions), so the behaviour cannot drift, and
// each backend runs natively (no `Any` driver on the verification path). Multi-row batches
// write their parameters with the backend's `parameter` (`?` on SQLite: see there).

use async_trait::async_trait;
use keyward_core::policy::{
    period_start, CreditSpend, Credits, RateDecision, RateLimit, Refill, RefillInterval,
};
use keyward_core::store::KeyUpdate;
use keyward_core::store::{
    AccountStore, ApiKeyRecord, AuditStore, DeviceCodeRecord, DeviceStore, KeyStore, NewAccount,
    NewApiKey, NewDeviceCode, NewSession, Owner, Redemption, RefreshTokenRecord, SessionRecord,
    SessionStore, SessionSummary, SigningKeyRecord, SigningKeyRotation, SigningKeyStore, Store,
    StoreError, StoreResult, TenantRecord, UsageDayRecord, UsageDelta, UsageStore, UserDisabled,
    UserRecord,
};
use keyward_core::{
    Description, Email, KeyId, KeyMeta, KeyName, Scopes, SessionId, TenantId, Timestamp, TokenHash,
    UserId,
};
use sqlx::{Row, Transaction};

use crate::map_error;

/// The `api_keys` columns, as a macro so queries are `concat!`ed at compile time (no `format!`
/// on the verification path).
macro_rules! key_columns {
    () => {
        "id, tenant_id, user_id, key_hash, key_start, key_end, name, description, scopes, meta, \
         created_at, expires_at, expires_in_days, last_used_at, revoked_at, disabled_at, \
         rate_limit_requests, rate_limit_per_seconds, credits_remaining, credits_refill_amount, \
         credits_refill_interval, credits_refilled_at, credits_reference"
    };
}

/// The condition on `sessions` rows that their user is not disabled.
macro_rules! session_owner_enabled {
    () => {
        "NOT EXISTS (SELECT 1 FROM users WHERE users.id = sessions.user_id \
         AND users.disabled_at IS NOT NULL)"
    };
}

/// The condition on `api_keys` rows that their owner is not disabled: a disabled user's keys
/// do not load for verification (nor into the cache), so they answer as unknown keys until the
/// user is enabled again.
macro_rules! owner_enabled {
    () => {
        "NOT EXISTS (SELECT 1 FROM users WHERE users.id = api_keys.user_id \
         AND users.disabled_at IS NOT NULL)"
    };
}

impl SqlStore {
    async fn begin(&self) -> StoreResult<Transaction<'static, Db>> {
        self.pool.begin().await.map_err(map_error)
    }

    /// Records the change of the key with `key_hash` in the feed (see `feed.rs`), commits `tx`,
    /// then waits until every live peer has read it, or until none can still serve it from its
    /// cache.
    async fn commit_key_change(
        &self,
        tx: Transaction<'static, Db>,
        key_hash: &TokenHash,
    ) -> StoreResult<()> {
        self.commit_key_changes(tx, std::slice::from_ref(key_hash))
            .await
    }

    /// [`Self::commit_key_change`] for several keys (a disabled user's): one number each,
    /// taken in the one transaction, then one wait for the last. With no key it only commits.
    async fn commit_key_changes(
        &self,
        mut tx: Transaction<'static, Db>,
        key_hashes: &[TokenHash],
    ) -> StoreResult<()> {
        let mut seq: i64 = 0;
        for key_hash in key_hashes {
            seq = query_scalar(
                "UPDATE key_change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
            query("INSERT INTO key_changes (seq, key_hash, changed_at) VALUES ($1, $2, $3)")
                .bind(seq)
                .bind(&key_hash.as_bytes()[..])
                .bind(crate::feed::now_millis())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)?;
        if key_hashes.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + crate::feed::SETTLE_TIMEOUT;
        loop {
            let behind: i64 = query_scalar(
                "SELECT COUNT(*) FROM instances \
                 WHERE id <> $1 AND heartbeat_at > $2 AND seen_seq < $3",
            )
            .bind(&self.feed.instance)
            .bind(crate::feed::now_millis() - crate::feed::PEER_TTL_MILLIS)
            .bind(seq)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
            if behind == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    instances = behind,
                    "instances sharing the database did not read a key change in time; \
                     their caches have stopped serving, so the change holds everywhere"
                );
                return Ok(());
            }
            tokio::time::sleep(crate::feed::POLL_INTERVAL / 4).await;
        }
    }

    /// Adds this instance to `instances`, having read as far as the feed goes now (its cache
    /// is empty, so there is nothing older to forget).
    async fn join_feed(&self) -> StoreResult<i64> {
        self.prune_feed().await?;
        // The write first, so that SQLite takes its write lock before the read.
        let mut tx = self.feed_pool.begin().await.map_err(map_error)?;
        query("DELETE FROM instances WHERE id = $1")
            .bind(&self.feed.instance)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let seq: i64 = query_scalar("SELECT seq FROM key_change_counter WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        query("INSERT INTO instances (id, seen_seq, heartbeat_at) VALUES ($1, $2, $3)")
            .bind(&self.feed.instance)
            .bind(seq)
            .bind(crate::feed::now_millis())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(seq)
    }

    /// Deletes changes and instances older than the feed's retention (an hour): far past any
    /// lease, so no instance can still need them.
    async fn prune_feed(&self) -> StoreResult<()> {
        let cutoff = crate::feed::now_millis() - crate::feed::RETENTION_MILLIS;
        query("DELETE FROM instances WHERE heartbeat_at < $1")
            .bind(cutoff)
            .execute(&self.feed_pool)
            .await
            .map_err(map_error)?;
        query("DELETE FROM key_changes WHERE changed_at < $1")
            .bind(cutoff)
            .execute(&self.feed_pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// One poll: the hashes changed after `seen`, oldest first, with their numbers.
    async fn read_feed(&self, seen: i64) -> StoreResult<Vec<(i64, TokenHash)>> {
        query("SELECT seq, key_hash FROM key_changes WHERE seq > $1 ORDER BY seq LIMIT 1000")
            .bind(seen)
            .fetch_all(&self.feed_pool)
            .await
            .map_err(map_error)?
            .iter()
            .map(|row| Ok((get(row, "seq")?, hash(row, "key_hash")?)))
            .collect()
    }

    /// Records how far this instance has read; `false` when its row is gone (pruned after a
    /// long stall), and it must join again.
    async fn report_feed(&self, seen: i64) -> StoreResult<bool> {
        let updated = query("UPDATE instances SET seen_seq = $1, heartbeat_at = $2 WHERE id = $3")
            .bind(seen)
            .bind(crate::feed::now_millis())
            .bind(&self.feed.instance)
            .execute(&self.feed_pool)
            .await
            .map_err(map_error)?;
        Ok(updated.rows_affected() == 1)
    }

    /// Fills an empty cache with every key that is not revoked, a page at a time, so that the
    /// first verification of each needs no database. A page that raced a key change is read
    /// again; it stops when the cache is full or stops serving.
    async fn preload_keys(&self, cache: &keyward_core::KeyCache) -> StoreResult<u64> {
        use futures_util::TryStreamExt;
        use keyward_core::Preload;
        // Pages in key order, each one statement streamed as it is read: one statement for
        // every key ran into PostgreSQL's `statement_timeout` (5 s by default) with a million
        // keys on a busy machine, and a plan that sorts all rows first returned none before
        // it. `LIMIT` makes each page a range of the primary key.
        const PAGE_ROWS: i64 = 20_000;
        let sql = concat!(
            "SELECT seq, ",
            key_columns!(),
            " FROM api_keys WHERE seq > $1 AND revoked_at IS NULL AND ",
            owner_enabled!(),
            " ORDER BY seq LIMIT $2"
        );
        let (mut after, mut kept): (i64, u64) = (0, 0);
        'read: loop {
            let generation = cache.generation();
            let mut rows = query(sql).bind(after).bind(PAGE_ROWS).fetch(&self.pool);
            let mut read = 0;
            while let Some(row) = rows.try_next().await.map_err(map_error)? {
                read += 1;
                let seq: i64 = get(&row, "seq")?;
                match cache.preload(&key_from_row(&row)?, generation) {
                    Preload::Kept => kept += 1,
                    Preload::Skipped => {}
                    // This row may predate a change: read on from it, anew.
                    Preload::Raced => continue 'read,
                    Preload::Full => return Ok(kept),
                    // A lapse of the lease (a slow poll): read on from here once it serves.
                    Preload::NotServing => {
                        drop(rows);
                        while !cache.is_serving() {
                            if self.pool.is_closed() {
                                return Ok(kept);
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        continue 'read;
                    }
                }
                after = seq;
                if kept % 1_000 == 0 {
                    // Long runs of buffered rows never wait: let the polls and requests in.
                    tokio::task::yield_now().await;
                }
            }
            if read < PAGE_ROWS {
                return Ok(kept);
            }
        }
    }

    /// The feed's reader (see `feed.rs`); it ends when the pool closes.
    fn spawn_key_watch(
        &self,
        cache: std::sync::Arc<keyward_core::KeyCache>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            use crate::feed::{LEASE, POLL_INTERVAL};
            use std::sync::atomic::{AtomicBool, Ordering};
            use tokio::time::Instant;
            /// What runs beside the polls while this instance is in `instances`.
            struct Joined {
                seen: i64,
                report: tokio::sync::watch::Sender<i64>,
                rejoin: std::sync::Arc<AtomicBool>,
                tasks: [tokio::task::JoinHandle<()>; 2],
            }
            impl Drop for Joined {
                fn drop(&mut self) {
                    for task in &self.tasks {
                        task.abort();
                    }
                }
            }
            let mut joined: Option<Joined> = None;
            let mut last_success = Instant::now();
            let mut pruned = Instant::now();
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !store.pool.is_closed() {
                ticker.tick().await;
                let started = Instant::now();
                if joined
                    .as_ref()
                    .is_some_and(|joined| joined.rejoin.load(Ordering::Acquire))
                {
                    joined = None;
                }
                let Some(current) = joined.as_mut() else {
                    if let Ok(seen) = store.join_feed().await {
                        // An empty cache: whatever it held may have changed unheard.
                        cache.set_enabled(true);
                        last_success = started;
                        cache.renew_lease((started + LEASE).into_std());
                        let (report, reports) = tokio::sync::watch::channel(seen);
                        let rejoin = std::sync::Arc::new(AtomicBool::new(false));
                        let reporter =
                            tokio::spawn(store.clone().report_loop(reports, rejoin.clone()));
                        let (store, cache) = (store.clone(), cache.clone());
                        let preload = tokio::spawn(async move {
                            match store.preload_keys(&cache).await {
                                Ok(kept) => tracing::debug!(kept, "key cache preloaded"),
                                // Closed: the server is stopping.
                                Err(_) if store.pool.is_closed() => {}
                                Err(error) => {
                                    tracing::warn!(%error, "preloading the key cache failed; keys load as they are verified")
                                }
                            }
                        });
                        joined = Some(Joined {
                            seen,
                            report,
                            rejoin,
                            tasks: [reporter, preload],
                        });
                    }
                    continue;
                };
                if started.duration_since(pruned) >= crate::feed::PRUNE_INTERVAL {
                    pruned = started;
                    if let Err(error) = store.prune_feed().await {
                        tracing::debug!(%error, "pruning the key-change feed failed");
                    }
                }
                let Ok(changes) = store.read_feed(current.seen).await else {
                    continue;
                };
                if started.duration_since(last_success) > crate::feed::STALE_AFTER {
                    // Away so long that changes it never read may have been pruned.
                    cache.set_enabled(true);
                }
                for (_, hash) in &changes {
                    cache.invalidate(hash);
                }
                // Every change committed before this poll began is applied: the lease needs
                // nothing more. Peers learn how far this instance has read from the reporter,
                // whose writes may wait (SQLite's write lock) without holding up the polls.
                last_success = started;
                cache.renew_lease((started + LEASE).into_std());
                if let Some((seq, _)) = changes.last() {
                    current.seen = *seq;
                    let _ = current.report.send(*seq);
                }
            }
        })
    }

    /// Writes how far this instance has read the feed: at once after each change read, and
    /// every [`crate::feed::HEARTBEAT_INTERVAL`] anyway (the heartbeat). Sets `rejoin` and ends
    /// when this instance's row is gone (pruned after a long stall).
    async fn report_loop(
        self,
        mut seen: tokio::sync::watch::Receiver<i64>,
        rejoin: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        loop {
            tokio::select! {
                changed = seen.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(crate::feed::HEARTBEAT_INTERVAL) => {}
            }
            let at = *seen.borrow_and_update();
            if let Ok(false) = self.report_feed(at).await {
                rejoin.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
        }
    }

    /// Leaves `instances`, so that no peer waits for this instance any more.
    async fn leave_feed(&self) {
        let _ = query("DELETE FROM instances WHERE id = $1")
            .bind(&self.feed.instance)
            .execute(&self.pool)
            .await;
    }
}

/// `sqlx::query`, counted (see `statements.rs`).
fn query<'q>(
    sql: &'static str,
) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>> {
    sqlx::query(crate::statements::counted(sql))
}

/// `sqlx::query_scalar`, counted (see `statements.rs`).
fn query_scalar<'q, O>(
    sql: &'static str,
) -> sqlx::query::QueryScalar<'q, Db, O, <Db as sqlx::Database>::Arguments<'q>>
where
    (O,): for<'r> sqlx::FromRow<'r, DbRow>,
{
    sqlx::query_scalar(crate::statements::counted(sql))
}

/// Rows per multi-row statement. A statement's round trip costs more than its rows, so a
/// batch of N rows runs about N / 100 statements; 100 rows stay far below SQLite's 32 766
/// parameters.
const ROWS_PER_STATEMENT: usize = 100;

/// The texts of one multi-row statement, one per row count, each built once and kept for the
/// life of the process.
type StatementTexts = [std::sync::OnceLock<&'static str>; ROWS_PER_STATEMENT];

/// The text for `rows` rows (1 to [`ROWS_PER_STATEMENT`]), made by `build` the first time.
fn statement_for(
    texts: &'static StatementTexts,
    rows: usize,
    build: fn(usize) -> String,
) -> &'static str {
    texts[rows.clamp(1, ROWS_PER_STATEMENT) - 1]
        .get_or_init(|| Box::leak(build(rows).into_boxed_str()))
}

/// `rows` cut into chunks of 100, then 10, then 1 rows: only three texts of each multi-row
/// statement ever run, so each connection prepares and keeps three, not one per row count
/// from 1 to 100 (a prepared 100-row statement holds a large program, and every connection
/// kept up to a hundred of them).
fn row_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = [ROWS_PER_STATEMENT, 10, 1]
            .into_iter()
            .find(|&size| rest.len() >= size)?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// `count` parameters numbered from `first`, written as the backend writes them (`$n` on
/// PostgreSQL, `?` on SQLite: see `parameter`), so a text using it binds each parameter once,
/// in order.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(parameter)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ts(value: Option<i64>) -> Option<Timestamp> {
    value.map(Timestamp)
}

fn get<'r, T: sqlx::Decode<'r, Db> + sqlx::Type<Db>>(
    row: &'r DbRow,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column).map_err(map_error)
}

fn hash(row: &DbRow, column: &str) -> StoreResult<TokenHash> {
    let bytes: Vec<u8> = get(row, column)?;
    TokenHash::from_slice(&bytes)
        .ok_or_else(|| StoreError::Other(format!("{column} is not 32 bytes")))
}

fn user_from_row(row: &DbRow) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: UserId::from_stored(get(row, "id")?),
        tenant_id: TenantId::from_stored(get(row, "tenant_id")?),
        email: Email::from_stored(get(row, "email")?),
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        created_at: Timestamp(get(row, "created_at")?),
        disabled_at: ts(get(row, "disabled_at")?),
    })
}

fn session_from_row(row: &DbRow) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: SessionId::from_stored(get(row, "id")?),
        user_id: UserId::from_stored(get(row, "user_id")?),
        tenant_id: TenantId::from_stored(get(row, "tenant_id")?),
        created_at: Timestamp(get(row, "created_at")?),
        expires_at: Timestamp(get(row, "expires_at")?),
        revoked_at: ts(get(row, "revoked_at")?),
        device: get(row, "device")?,
    })
}

fn key_from_row(row: &DbRow) -> StoreResult<ApiKeyRecord> {
    let description: Option<String> = get(row, "description")?;
    let meta: Option<String> = get(row, "meta")?;
    let scopes: String = get(row, "scopes")?;
    Ok(ApiKeyRecord {
        id: KeyId::from_stored(get(row, "id")?),
        owner: Owner {
            user_id: UserId::from_stored(get(row, "user_id")?),
            tenant_id: TenantId::from_stored(get(row, "tenant_id")?),
        },
        key_hash: hash(row, "key_hash")?,
        start: get(row, "key_start")?,
        end: get(row, "key_end")?,
        name: KeyName::from_stored(get(row, "name")?),
        description: description.map(Description::from_stored),
        scopes: Scopes::from_stored(&scopes),
        meta: meta.as_deref().and_then(KeyMeta::from_stored),
        created_at: Timestamp(get(row, "created_at")?),
        expires_at: ts(get(row, "expires_at")?),
        expires_in_days: get(row, "expires_in_days")?,
        last_used_at: ts(get(row, "last_used_at")?),
        revoked_at: ts(get(row, "revoked_at")?),
        enabled: get::<Option<i64>>(row, "disabled_at")?.is_none(),
        rate_limit: RateLimit::from_stored(
            get(row, "rate_limit_requests")?,
            get(row, "rate_limit_per_seconds")?,
        ),
        credits: credits_from_row(row)?,
    })
}

fn credits_from_row(row: &DbRow) -> StoreResult<Option<Credits>> {
    let Some(remaining) = get::<Option<i64>>(row, "credits_remaining")? else {
        return Ok(None);
    };
    let amount: Option<i64> = get(row, "credits_refill_amount")?;
    let interval: Option<String> = get(row, "credits_refill_interval")?;
    let refill = match (amount, interval.as_deref()) {
        (Some(amount), Some("daily")) => Some(Refill {
            amount,
            interval: RefillInterval::Daily,
        }),
        (Some(amount), Some("monthly")) => Some(Refill {
            amount,
            interval: RefillInterval::Monthly,
        }),
        _ => None,
    };
    Ok(Some(Credits {
        remaining,
        refill,
        refilled_at: Timestamp(get::<Option<i64>>(row, "credits_refilled_at")?.unwrap_or(0)),
        reference: get::<Option<i64>>(row, "credits_reference")?.unwrap_or(remaining),
    }))
}

fn interval_name(interval: RefillInterval) -> &'static str {
    match interval {
        RefillInterval::Daily => "daily",
        RefillInterval::Monthly => "monthly",
    }
}

/// The start of the refill period holding now of a key's credits, given the parameters that
/// hold the day's start and the month's.
macro_rules! refill_period {
    ($day:literal, $month:literal) => {
        concat!(
            "CASE credits_refill_interval WHEN 'daily' THEN ",
            $day,
            " ELSE ",
            $month,
            " END"
        )
    };
}

/// Whether a key's credits are due a refill: the period holding now was not refilled yet.
macro_rules! refill_due {
    ($day:literal, $month:literal) => {
        concat!(
            "(credits_refill_interval IS NOT NULL AND credits_refilled_at < ",
            refill_period!($day, $month),
            ")"
        )
    };
}

/// What a key's credits amount to now, a due refill applied.
macro_rules! credits_now {
    ($day:literal, $month:literal) => {
        concat!(
            "(CASE WHEN ",
            refill_due!($day, $month),
            " THEN credits_refill_amount ELSE credits_remaining END)"
        )
    };
}

async fn insert_session(
    tx: &mut Transaction<'static, Db>,
    session: &NewSession,
) -> StoreResult<()> {
    query(
        "INSERT INTO sessions (id, user_id, tenant_id, created_at, expires_at, device) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(session.id.as_str())
    .bind(session.user_id.as_str())
    .bind(session.tenant_id.as_str())
    .bind(session.created_at.seconds())
    .bind(session.expires_at.seconds())
    .bind(session.device.as_deref())
    .execute(&mut **tx)
    .await
    .map_err(map_error)?;
    query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
        .bind(&session.refresh_token_hash.as_bytes()[..])
        .bind(session.id.as_str())
        .bind(session.created_at.seconds())
        .execute(&mut **tx)
        .await
        .map_err(map_error)?;
    Ok(())
}

/// Inserts `key` when its owner has fewer than `max_active` live keys (`None`: no limit).
async fn insert_key_row(
    tx: &mut Transaction<'static, Db>,
    key: &NewApiKey,
    max_active: Option<u32>,
    now: Timestamp,
) -> StoreResult<bool> {
    let sql = concat!(
        "INSERT INTO api_keys (",
        key_columns!(),
        ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, NULL, $16, \
                  $17, $18, $19, $20, $21, $22, $23 \
         WHERE $14 IS NULL OR (SELECT COUNT(*) FROM api_keys WHERE user_id = $3 AND tenant_id = $2 \
               AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $15)) < $14"
    );
    let result = query(sql)
        .bind(key.id.as_str())
        .bind(key.owner.tenant_id.as_str())
        .bind(key.owner.user_id.as_str())
        .bind(&key.key_hash.as_bytes()[..])
        .bind(&key.start)
        .bind(&key.end)
        .bind(key.name.as_str())
        .bind(key.description.as_ref().map(Description::as_str))
        .bind(key.scopes.to_stored())
        .bind(key.meta.as_ref().map(KeyMeta::to_stored))
        .bind(key.created_at.seconds())
        .bind(key.expires_at.map(Timestamp::seconds))
        .bind(key.expires_in_days)
        .bind(max_active.map(i64::from))
        .bind(now.seconds())
        .bind((!key.enabled).then_some(now.seconds()))
        .bind(key.rate_limit.map(|limit| i64::from(limit.requests())))
        .bind(key.rate_limit.map(|limit| i64::from(limit.per_seconds())))
        .bind(key.credits.map(|credits| credits.remaining))
        .bind(
            key.credits
                .and_then(|c| c.refill)
                .map(|refill| refill.amount),
        )
        .bind(
            key.credits
                .and_then(|c| c.refill)
                .map(|refill| interval_name(refill.interval)),
        )
        .bind(key.credits.map(|credits| credits.refilled_at.seconds()))
        .bind(key.credits.map(|credits| credits.reference))
        .execute(&mut **tx)
        .await
        .map_err(map_error)?;
    Ok(result.rows_affected() == 1)
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(&self, account: NewAccount) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account.tenant.id.as_str())
            .bind(&account.tenant.name)
            .bind(account.tenant.created_at.seconds())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let user = &account.user;
        query(
            "INSERT INTO users (id, tenant_id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(user.tenant_id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(&user.password_hash)
        .bind(user.created_at.seconds())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        insert_session(&mut tx, &account.session).await?;
        if let Some(key) = &account.api_key {
            insert_key_row(&mut tx, key, None, user.created_at).await?;
        }
        tx.commit().await.map_err(map_error)
    }

    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>> {
        query("SELECT * FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn find_user(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        query("SELECT * FROM users WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn find_profile(
        &self,
        user: &UserId,
        tenant: &TenantId,
    ) -> StoreResult<Option<(UserRecord, TenantRecord)>> {
        let row = query(
            "SELECT users.*, tenants.name AS tenant_name, tenants.created_at AS tenant_created_at \
             FROM users JOIN tenants ON tenants.id = users.tenant_id \
             WHERE users.id = $1 AND users.tenant_id = $2",
        )
        .bind(user.as_str())
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.map(|row| {
            let user = user_from_row(&row)?;
            let tenant = TenantRecord {
                id: user.tenant_id.clone(),
                name: get(&row, "tenant_name")?,
                created_at: Timestamp(get(&row, "tenant_created_at")?),
            };
            Ok((user, tenant))
        })
        .transpose()
    }

    async fn change_password(
        &self,
        user: &UserId,
        password_hash: &str,
        keep_session: &SessionId,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
        )
        .bind(now.seconds())
        .bind(user.as_str())
        .bind(keep_session.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)
    }

    async fn upgrade_password_hash(
        &self,
        user: &UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool> {
        let updated =
            query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                .bind(new_hash)
                .bind(user.as_str())
                .bind(old_hash)
                .execute(&self.pool)
                .await
                .map_err(map_error)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn disable_user(
        &self,
        email: &Email,
        now: Timestamp,
    ) -> StoreResult<Option<UserDisabled>> {
        // The write first: it takes SQLite's write lock, and on PostgreSQL the user's row lock,
        // which a key creation for this user (`lock_owner`) waits for.
        let mut tx = self.begin().await?;
        let newly_disabled =
            query("UPDATE users SET disabled_at = $1 WHERE email = $2 AND disabled_at IS NULL")
                .bind(now.seconds())
                .bind(email.as_str())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?
                .rows_affected()
                == 1;
        let user_id: Option<String> = query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        let sessions_revoked =
            query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(now.seconds())
                .bind(&user_id)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?
                .rows_affected();
        // Every key that an instance may hold in its cache: each becomes a change in the feed,
        // so every instance drops it, and reloading it finds the owner disabled.
        let key_hashes =
            query("SELECT key_hash FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(&user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_error)?
                .iter()
                .map(|row| hash(row, "key_hash"))
                .collect::<StoreResult<Vec<_>>>()?;
        self.commit_key_changes(tx, &key_hashes).await?;
        Ok(Some(UserDisabled {
            user_id: UserId::from_stored(user_id),
            newly_disabled,
            sessions_revoked,
            keys_stopped: key_hashes.len() as u64,
        }))
    }

    async fn enable_user(&self, email: &Email) -> StoreResult<Option<bool>> {
        // No key change to announce: no instance holds a disabled user's key (none loads),
        // and the caches keep no "absent" entries, so the keys load again on their next use.
        let enabled = query(
            "UPDATE users SET disabled_at = NULL WHERE email = $1 AND disabled_at IS NOT NULL",
        )
        .bind(email.as_str())
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        if enabled.rows_affected() == 1 {
            return Ok(Some(true));
        }
        let user_id: Option<String> = query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(user_id.map(|_| false))
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_session(&mut tx, &session).await?;
        tx.commit().await.map_err(map_error)
    }

    async fn find_session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        // A disabled user's session is absent, even one opened by a login that raced the
        // disabling (which revokes the sessions it sees).
        query(concat!(
            "SELECT * FROM sessions WHERE id = $1 AND ",
            session_owner_enabled!()
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn find_refresh_token(
        &self,
        token: &TokenHash,
    ) -> StoreResult<Option<(RefreshTokenRecord, SessionRecord)>> {
        let row = query(concat!(
            "SELECT refresh_tokens.token_hash, refresh_tokens.spent_at, sessions.* \
             FROM refresh_tokens JOIN sessions ON sessions.id = refresh_tokens.session_id \
             WHERE refresh_tokens.token_hash = $1 AND ",
            session_owner_enabled!()
        ))
        .bind(&token.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.map(|row| {
            let session = session_from_row(&row)?;
            let token = RefreshTokenRecord {
                hash: hash(&row, "token_hash")?,
                session_id: session.id.clone(),
                spent_at: ts(get(&row, "spent_at")?),
            };
            Ok((token, session))
        })
        .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        new: &TokenHash,
        session: &SessionId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let spent = query(
            "UPDATE refresh_tokens SET spent_at = $1 WHERE token_hash = $2 AND session_id = $3 AND spent_at IS NULL",
        )
        .bind(now.seconds())
        .bind(&old.as_bytes()[..])
        .bind(session.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        if spent.rows_affected() != 1 {
            return Ok(false);
        }
        query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&new.as_bytes()[..])
        .bind(session.as_str())
        .bind(now.seconds())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(true)
    }

    async fn revoke_session(&self, id: &SessionId, now: Timestamp) -> StoreResult<()> {
        query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now.seconds())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn revoke_user_sessions(&self, user: &UserId, now: Timestamp) -> StoreResult<()> {
        query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now.seconds())
            .bind(user.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn list_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionSummary>> {
        // The newest refresh token of a session was issued at its last sign-in or refresh.
        let rows = query(
            "SELECT s.id, s.device, s.created_at, \
             CAST(COALESCE(MAX(r.created_at), s.created_at) AS BIGINT) AS last_used_at \
             FROM sessions s LEFT JOIN refresh_tokens r ON r.session_id = s.id \
             WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
             GROUP BY s.id, s.device, s.created_at \
             ORDER BY last_used_at DESC, s.created_at DESC",
        )
        .bind(user.as_str())
        .bind(now.seconds())
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(SessionSummary {
                    id: SessionId::from_stored(get(row, "id")?),
                    device: get(row, "device")?,
                    created_at: Timestamp(get(row, "created_at")?),
                    last_used_at: Timestamp(get(row, "last_used_at")?),
                })
            })
            .collect()
    }

    async fn revoke_user_session(
        &self,
        user: &UserId,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now.seconds())
        .bind(id.as_str())
        .bind(user.as_str())
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert_key(
        &self,
        key: NewApiKey,
        max_active: u32,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The count-and-insert is one statement; the owner lock makes it exact on a database
        // whose concurrent transactions would otherwise both see the old count.
        lock_owner(&mut tx, &key.owner).await?;
        let inserted = insert_key_row(&mut tx, &key, Some(max_active), now).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(inserted)
    }

    async fn list_keys(
        &self,
        owner: &Owner,
        include_revoked: bool,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        let sql = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE user_id = $1 AND tenant_id = $2 \
             AND ($3 OR revoked_at IS NULL) ORDER BY seq DESC"
        );
        query(sql)
            .bind(owner.user_id.as_str())
            .bind(owner.tenant_id.as_str())
            .bind(include_revoked)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn find_key(&self, owner: &Owner, id: &KeyId) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE id = $1 AND user_id = $2 AND tenant_id = $3"
        );
        query(sql)
            .bind(id.as_str())
            .bind(owner.user_id.as_str())
            .bind(owner.tenant_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn find_key_by_hash(&self, key_hash: &TokenHash) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE key_hash = $1 AND ",
            owner_enabled!()
        );
        query(sql)
            .bind(&key_hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn revoke_key(
        &self,
        owner: &Owner,
        id: &KeyId,
        now: Timestamp,
    ) -> StoreResult<Option<TokenHash>> {
        let mut tx = self.begin().await?;
        let revoked = query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 AND user_id = $3 AND tenant_id = $4 RETURNING key_hash",
        )
        .bind(now.seconds())
        .bind(id.as_str())
        .bind(owner.user_id.as_str())
        .bind(owner.tenant_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_error)?;
        let Some(row) = revoked else {
            return Ok(None);
        };
        let key_hash = hash(&row, "key_hash")?;
        self.commit_key_change(tx, &key_hash).await?;
        Ok(Some(key_hash))
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: NewApiKey,
        old_expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<Option<TokenHash>> {
        let mut tx = self.begin().await?;
        let ended = query(
            "UPDATE api_keys SET \
               revoked_at = CASE WHEN $1 IS NULL THEN $2 ELSE revoked_at END, \
               expires_at = COALESCE($1, expires_at) \
             WHERE id = $3 AND user_id = $4 AND tenant_id = $5 \
               AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
             RETURNING key_hash",
        )
        .bind(old_expires_at.map(Timestamp::seconds))
        .bind(now.seconds())
        .bind(old.as_str())
        .bind(new.owner.user_id.as_str())
        .bind(new.owner.tenant_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_error)?;
        let Some(row) = ended else {
            return Ok(None);
        };
        let old_hash = hash(&row, "key_hash")?;
        insert_key_row(&mut tx, &new, None, now).await?;
        self.commit_key_change(tx, &old_hash).await?;
        Ok(Some(old_hash))
    }

    async fn touch_keys(&self, uses: &[(KeyId, Timestamp)]) -> StoreResult<()> {
        static TEXTS: StatementTexts = [const { std::sync::OnceLock::new() }; ROWS_PER_STATEMENT];
        fn build(rows: usize) -> String {
            // The database, not each instance's memory, keeps the once-a-minute promise: two
            // instances noting the same first use write it once.
            format!(
                "UPDATE api_keys SET last_used_at = {} \
                 WHERE (last_used_at IS NULL OR last_used_at <= {}) AND id IN ({})",
                parameter(1),
                parameter(2),
                placeholders(3, rows)
            )
        }
        let mut tx = self.begin().await?;
        for chunk in row_chunks(uses) {
            // The chunk's latest use stands for all of it: they were noted within one flush
            // interval (a second) of each other.
            let at = chunk
                .iter()
                .map(|(_, at)| *at)
                .max()
                .unwrap_or(Timestamp(0));
            let mut statement = query(statement_for(&TEXTS, chunk.len(), build))
                .bind(at.seconds())
                .bind(at.seconds() - keyward_core::LAST_USED_RESOLUTION_SECONDS);
            for (id, _) in chunk {
                statement = statement.bind(id.as_str());
            }
            statement.execute(&mut *tx).await.map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    async fn update_key(
        &self,
        owner: &Owner,
        id: &KeyId,
        update: &KeyUpdate,
        now: Timestamp,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = concat!(
            "UPDATE api_keys SET \
               name = COALESCE($4, name), \
               description = CASE WHEN $5 THEN $6 ELSE description END, \
               meta = CASE WHEN $7 THEN $8 ELSE meta END, \
               disabled_at = CASE WHEN $9 IS NULL THEN disabled_at WHEN $9 THEN NULL \
                                  ELSE COALESCE(disabled_at, $10) END, \
               scopes = COALESCE($11, scopes), \
               rate_limit_requests = CASE WHEN $12 THEN $13 ELSE rate_limit_requests END, \
               rate_limit_per_seconds = CASE WHEN $12 THEN $14 ELSE rate_limit_per_seconds END, \
               credits_remaining = CASE WHEN $15 THEN $16 ELSE credits_remaining END, \
               credits_refill_amount = CASE WHEN $15 THEN $17 ELSE credits_refill_amount END, \
               credits_refill_interval = CASE WHEN $15 THEN $18 ELSE credits_refill_interval END, \
               credits_refilled_at = CASE WHEN $15 THEN $19 ELSE credits_refilled_at END, \
               credits_reference = CASE WHEN $15 THEN $20 ELSE credits_reference END \
             WHERE id = $1 AND user_id = $2 AND tenant_id = $3 AND revoked_at IS NULL \
             RETURNING ",
            key_columns!()
        );
        let rate_limit = update.rate_limit.flatten();
        let credits = update.credits.flatten();
        let refill = credits.and_then(|credits| credits.refill);
        let mut tx = self.begin().await?;
        let row = query(sql)
            .bind(id.as_str())
            .bind(owner.user_id.as_str())
            .bind(owner.tenant_id.as_str())
            .bind(update.name.as_ref().map(KeyName::as_str))
            .bind(update.description.is_some())
            .bind(
                update
                    .description
                    .as_ref()
                    .and_then(|d| d.as_ref().map(Description::as_str)),
            )
            .bind(update.meta.is_some())
            .bind(
                update
                    .meta
                    .as_ref()
                    .and_then(|m| m.as_ref().map(KeyMeta::to_stored)),
            )
            .bind(update.enabled)
            .bind(now.seconds())
            .bind(update.scopes.as_ref().map(Scopes::to_stored))
            .bind(update.rate_limit.is_some())
            .bind(rate_limit.map(|limit| i64::from(limit.requests())))
            .bind(rate_limit.map(|limit| i64::from(limit.per_seconds())))
            .bind(update.credits.is_some())
            .bind(credits.map(|credits| credits.remaining))
            .bind(refill.map(|refill| refill.amount))
            .bind(refill.map(|refill| interval_name(refill.interval)))
            .bind(credits.map(|credits| credits.refilled_at.seconds()))
            .bind(credits.map(|credits| credits.reference))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = key_from_row(&row)?;
        if update.rate_limit.is_some() {
            query("DELETE FROM key_rate_limits WHERE key_id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        self.commit_key_change(tx, &record.key_hash).await?;
        Ok(Some(record))
    }

    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: i64,
        now: Timestamp,
    ) -> StoreResult<CreditSpend> {
        let sql = concat!(
            "UPDATE api_keys SET credits_remaining = ",
            credits_now!("$3", "$4"),
            " - $2, credits_refilled_at = CASE WHEN ",
            refill_due!("$3", "$4"),
            " THEN ",
            refill_period!("$3", "$4"),
            " ELSE credits_refilled_at END \
             WHERE id = $1 AND credits_remaining IS NOT NULL AND ",
            credits_now!("$3", "$4"),
            " >= $2 RETURNING credits_remaining, credits_reference"
        );
        let day = period_start(RefillInterval::Daily, now).seconds();
        let month = period_start(RefillInterval::Monthly, now).seconds();
        let spent = query(sql)
            .bind(id.as_str())
            .bind(cost)
            .bind(day)
            .bind(month)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        if let Some(row) = spent {
            let remaining: i64 = get(&row, "credits_remaining")?;
            let reference: Option<i64> = get(&row, "credits_reference")?;
            return Ok(CreditSpend::Spent {
                remaining,
                reference: reference.unwrap_or(remaining + cost),
            });
        }
        let sql = concat!(
            "SELECT ",
            credits_now!("$2", "$3"),
            " AS credits FROM api_keys WHERE id = $1"
        );
        let left: Option<Option<i64>> = query_scalar(sql)
            .bind(id.as_str())
            .bind(day)
            .bind(month)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(match left.flatten() {
            Some(remaining) => CreditSpend::Exhausted { remaining },
            None => CreditSpend::Unlimited,
        })
    }

    async fn take_rate_limit(
        &self,
        id: &KeyId,
        limit: RateLimit,
        cost: u32,
        now_micros: i64,
    ) -> StoreResult<RateDecision> {
        let step = limit.interval_micros() * i64::from(cost);
        if step > limit.window_micros() {
            // More than the whole budget at once can never pass.
            return Ok(RateDecision::refused(limit, now_micros, now_micros, cost));
        }
        // The GCRA step in one statement: a new key starts at `now`, a known one at its
        // theoretical arrival time or `now`, whichever is later; the requests pass when
        // the new time is within one window of `now`.
        let passed: Option<i64> = query_scalar(
            "INSERT INTO key_rate_limits (key_id, tat) VALUES ($1, $2 + $3) \
             ON CONFLICT (key_id) DO UPDATE SET tat = \
               (CASE WHEN key_rate_limits.tat > $2 THEN key_rate_limits.tat ELSE $2 END) + $3 \
             WHERE (CASE WHEN key_rate_limits.tat > $2 THEN key_rate_limits.tat ELSE $2 END) \
                   + $3 - $2 <= $4 \
             RETURNING tat",
        )
        .bind(id.as_str())
        .bind(now_micros)
        .bind(step)
        .bind(limit.window_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        if let Some(tat) = passed {
            return Ok(RateDecision::passed(limit, now_micros, tat));
        }
        let tat: Option<i64> = query_scalar("SELECT tat FROM key_rate_limits WHERE key_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(RateDecision::refused(
            limit,
            now_micros,
            tat.unwrap_or(now_micros).max(now_micros),
            cost,
        ))
    }

    async fn forget_rate_limit(&self, id: &KeyId) -> StoreResult<()> {
        query("DELETE FROM key_rate_limits WHERE key_id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }
}

fn device_code_from_row(row: &DbRow) -> StoreResult<DeviceCodeRecord> {
    let user_id: Option<String> = get(row, "user_id")?;
    let tenant_id: Option<String> = get(row, "tenant_id")?;
    let approved_at = ts(get(row, "approved_at")?);
    Ok(DeviceCodeRecord {
        user_code: get(row, "user_code")?,
        client_name: get(row, "client_name")?,
        created_at: Timestamp(get(row, "created_at")?),
        expires_at: Timestamp(get(row, "expires_at")?),
        interval_seconds: get(row, "interval_seconds")?,
        last_polled_at: ts(get(row, "last_polled_at")?),
        approved_by: match (approved_at, user_id, tenant_id) {
            (Some(_), Some(user_id), Some(tenant_id)) => Some(Owner {
                user_id: UserId::from_stored(user_id),
                tenant_id: TenantId::from_stored(tenant_id),
            }),
            _ => None,
        },
        approved_at,
        denied_at: ts(get(row, "denied_at")?),
        redeemed_at: ts(get(row, "redeemed_at")?),
    })
}

#[async_trait]
impl DeviceStore for SqlStore {
    async fn insert_device_code(
        &self,
        code: NewDeviceCode,
        forget_after_seconds: i64,
    ) -> StoreResult<()> {
        query("DELETE FROM device_codes WHERE expires_at <= $1")
            .bind(code.created_at.seconds() - forget_after_seconds)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        query(
            "INSERT INTO device_codes (device_code_hash, user_code, client_name, created_at, expires_at, interval_seconds) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&code.device_code_hash.as_bytes()[..])
        .bind(&code.user_code)
        .bind(code.client_name.as_deref())
        .bind(code.created_at.seconds())
        .bind(code.expires_at.seconds())
        .bind(code.interval_seconds)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn find_device_code(&self, hash: &TokenHash) -> StoreResult<Option<DeviceCodeRecord>> {
        query(
            "SELECT user_code, client_name, created_at, expires_at, interval_seconds, last_polled_at, \
             user_id, tenant_id, approved_at, denied_at, redeemed_at \
             FROM device_codes WHERE device_code_hash = $1",
        )
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?
        .as_ref()
        .map(device_code_from_row)
        .transpose()
    }

    async fn find_device_code_by_user_code(
        &self,
        user_code: &str,
    ) -> StoreResult<Option<DeviceCodeRecord>> {
        query(
            "SELECT user_code, client_name, created_at, expires_at, interval_seconds, last_polled_at, \
             user_id, tenant_id, approved_at, denied_at, redeemed_at \
             FROM device_codes WHERE user_code = $1",
        )
        .bind(user_code)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?
        .as_ref()
        .map(device_code_from_row)
        .transpose()
    }

    async fn record_device_poll(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        slow_down_seconds: i64,
    ) -> StoreResult<bool> {
        // Each statement is atomic: of two polls racing past the interval, the second sees the
        // first's `last_polled_at` (PostgreSQL re-checks the condition on the locked row).
        let on_time = query(
            "UPDATE device_codes SET last_polled_at = $1 WHERE device_code_hash = $2 \
             AND (last_polled_at IS NULL OR last_polled_at <= $1 - interval_seconds)",
        )
        .bind(now.seconds())
        .bind(&hash.as_bytes()[..])
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        if on_time.rows_affected() == 1 {
            return Ok(true);
        }
        query(
            "UPDATE device_codes SET last_polled_at = $1, interval_seconds = interval_seconds + $2 \
             WHERE device_code_hash = $3",
        )
        .bind(now.seconds())
        .bind(slow_down_seconds)
        .bind(&hash.as_bytes()[..])
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(false)
    }

    async fn decide_device_code(
        &self,
        user_code: &str,
        approver: Option<&Owner>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let result = match approver {
            Some(owner) => query(
                "UPDATE device_codes SET approved_at = $1, user_id = $2, tenant_id = $3 \
                 WHERE user_code = $4 AND expires_at > $1 AND approved_at IS NULL AND denied_at IS NULL",
            )
            .bind(now.seconds())
            .bind(owner.user_id.as_str())
            .bind(owner.tenant_id.as_str())
            .bind(user_code)
            .execute(&self.pool)
            .await,
            None => query(
                "UPDATE device_codes SET denied_at = $1 \
                 WHERE user_code = $2 AND expires_at > $1 AND approved_at IS NULL AND denied_at IS NULL",
            )
            .bind(now.seconds())
            .bind(user_code)
            .execute(&self.pool)
            .await,
        }
        .map_err(map_error)?;
        Ok(result.rows_affected() == 1)
    }

    async fn redeem_device_code(
        &self,
        hash: &TokenHash,
        key: NewApiKey,
        max_active: u32,
        now: Timestamp,
    ) -> StoreResult<Redemption> {
        // The write comes first: it takes SQLite's write lock, and on PostgreSQL it locks the
        // row, so a racing redemption waits, re-checks `redeemed_at IS NULL` and changes nothing.
        let mut tx = self.begin().await?;
        let redeemed = query(
            "UPDATE device_codes SET redeemed_at = $1, key_id = $2 \
             WHERE device_code_hash = $3 AND approved_at IS NOT NULL AND denied_at IS NULL \
             AND redeemed_at IS NULL AND expires_at > $1 AND user_id = $4 AND tenant_id = $5",
        )
        .bind(now.seconds())
        .bind(key.id.as_str())
        .bind(&hash.as_bytes()[..])
        .bind(key.owner.user_id.as_str())
        .bind(key.owner.tenant_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        if redeemed.rows_affected() != 1 {
            return Ok(Redemption::NotRedeemable);
        }
        lock_owner(&mut tx, &key.owner).await?;
        if !insert_key_row(&mut tx, &key, Some(max_active), now).await? {
            // Dropping the transaction rolls the redemption back: the code stays approved.
            return Ok(Redemption::KeyLimitReached);
        }
        tx.commit().await.map_err(map_error)?;
        Ok(Redemption::Redeemed)
    }

    async fn device_approval_failures(
        &self,
        user: &UserId,
        since: Timestamp,
    ) -> StoreResult<(u32, Option<Timestamp>)> {
        let row = query(
            "SELECT COUNT(*) AS failures, MIN(failed_at) AS oldest FROM device_approval_failures \
             WHERE user_id = $1 AND failed_at >= $2",
        )
        .bind(user.as_str())
        .bind(since.seconds())
        .fetch_one(&self.pool)
        .await
        .map_err(map_error)?;
        let failures: i64 = get(&row, "failures")?;
        Ok((
            u32::try_from(failures).unwrap_or(u32::MAX),
            ts(get(&row, "oldest")?),
        ))
    }

    async fn record_device_approval_failure(
        &self,
        user: &UserId,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<()> {
        query("INSERT INTO device_approval_failures (user_id, failed_at) VALUES ($1, $2)")
            .bind(user.as_str())
            .bind(now.seconds())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        query("DELETE FROM device_approval_failures WHERE user_id = $1 AND failed_at < $2")
            .bind(user.as_str())
            .bind(forget_before.seconds())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }
}

#[async_trait]
impl SigningKeyStore for SqlStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = query("SELECT kid, private_key, public_key, created_at, retired_at FROM signing_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(SigningKeyRecord {
                    kid: get(row, "kid")?,
                    private_key: get(row, "private_key")?,
                    public_key: get(row, "public_key")?,
                    created_at: Timestamp(get(row, "created_at")?),
                    retired_at: ts(get(row, "retired_at")?),
                })
            })
            .collect()
    }

    async fn insert_signing_key(&self, key: SigningKeyRecord) -> StoreResult<()> {
        query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at, retired_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at.seconds())
        .bind(key.retired_at.map(Timestamp::seconds))
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        drop_retired_before: Timestamp,
    ) -> StoreResult<SigningKeyRotation> {
        let kids = |rows: Vec<DbRow>| -> StoreResult<Vec<String>> {
            rows.iter().map(|row| get(row, "kid")).collect()
        };
        let mut tx = self.begin().await?;
        let retired =
            query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid")
                .bind(key.created_at.seconds())
                .fetch_all(&mut *tx)
                .await
                .map_err(map_error)?;
        query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at, retired_at) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at.seconds())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        let dropped = query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1 RETURNING kid",
        )
        .bind(drop_retired_before.seconds())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(SigningKeyRotation {
            kid: key.kid,
            retired: kids(retired)?,
            dropped: kids(dropped)?,
        })
    }
}

/// The per-day sums of `usage_daily`; `CAST` because PostgreSQL's `SUM(BIGINT)` is NUMERIC.
macro_rules! usage_sums {
    () => {
        "SELECT day, CAST(SUM(total) AS BIGINT) AS total, \
         CAST(SUM(succeeded) AS BIGINT) AS succeeded, CAST(SUM(failed) AS BIGINT) AS failed, \
         CAST(SUM(duration_us_sum) AS BIGINT) AS duration_us_sum, \
         CAST(SUM(completed) AS BIGINT) AS completed \
         FROM usage_daily WHERE tenant_id = $1 AND day >= $2 AND day <= $3 "
    };
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn add_usage(&self, deltas: &[UsageDelta]) -> StoreResult<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        // One order for every writer, so two instances upserting the same rows cannot deadlock.
        let mut sorted: Vec<&UsageDelta> = deltas.iter().collect();
        sorted.sort_by(|a, b| {
            (a.tenant_id.as_str(), a.key_id.as_str(), a.day).cmp(&(
                b.tenant_id.as_str(),
                b.key_id.as_str(),
                b.day,
            ))
        });
        static TEXTS: StatementTexts = [const { std::sync::OnceLock::new() }; ROWS_PER_STATEMENT];
        fn build(rows: usize) -> String {
            let values: Vec<String> = (0..rows)
                .map(|row| format!("({})", placeholders(row * 8 + 1, 8)))
                .collect();
            format!(
                "INSERT INTO usage_daily \
                 (tenant_id, key_id, day, total, succeeded, failed, duration_us_sum, completed) \
                 VALUES {} \
                 ON CONFLICT (tenant_id, key_id, day) DO UPDATE SET \
                 total = usage_daily.total + excluded.total, \
                 succeeded = usage_daily.succeeded + excluded.succeeded, \
                 failed = usage_daily.failed + excluded.failed, \
                 duration_us_sum = usage_daily.duration_us_sum + excluded.duration_us_sum, \
                 completed = usage_daily.completed + excluded.completed",
                values.join(", ")
            )
        }
        // Each (tenant, key, day) once per call (the writer sums per key), as PostgreSQL
        // requires of the rows of one upsert.
        let mut tx = self.begin().await?;
        for chunk in row_chunks(&sorted) {
            let mut statement = query(statement_for(&TEXTS, chunk.len(), build));
            for delta in chunk {
                statement = statement
                    .bind(delta.tenant_id.as_str())
                    .bind(delta.key_id.as_str())
                    .bind(delta.day)
                    .bind(delta.total)
                    .bind(delta.succeeded)
                    .bind(delta.failed)
                    .bind(delta.duration_us_sum)
                    .bind(delta.completed);
            }
            statement.execute(&mut *tx).await.map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    async fn usage_by_day(
        &self,
        tenant: &TenantId,
        key: Option<&KeyId>,
        from_day: i64,
        to_day: i64,
    ) -> StoreResult<Vec<UsageDayRecord>> {
        let query = match key {
            Some(key) => query(concat!(
                usage_sums!(),
                "AND key_id = $4 GROUP BY day ORDER BY day"
            ))
            .bind(tenant.as_str())
            .bind(from_day)
            .bind(to_day)
            .bind(key.as_str()),
            None => query(concat!(usage_sums!(), "GROUP BY day ORDER BY day"))
                .bind(tenant.as_str())
                .bind(from_day)
                .bind(to_day),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(UsageDayRecord {
                    day: get(row, "day")?,
                    total: get(row, "total")?,
                    succeeded: get(row, "succeeded")?,
                    failed: get(row, "failed")?,
                    duration_us_sum: get(row, "duration_us_sum")?,
                    completed: get(row, "completed")?,
                })
            })
            .collect()
    }
}

fn audit_event_from_row(row: &DbRow) -> StoreResult<keyward_core::audit::AuditEvent> {
    use keyward_core::audit::{AuditEvent, AuditKind};
    let kind: String = get(row, "event")?;
    let key_id: Option<String> = get(row, "key_id")?;
    let session_id: Option<String> = get(row, "session_id")?;
    let tenant_id: Option<String> = get(row, "tenant_id")?;
    let user_id: Option<String> = get(row, "user_id")?;
    Ok(AuditEvent {
        id: keyward_core::AuditEventId::from_stored(get(row, "id")?),
        tenant_id: tenant_id.map(TenantId::from_stored),
        actor: get(row, "actor")?,
        user_id: user_id.map(UserId::from_stored),
        kind: AuditKind::parse(&kind)
            .ok_or_else(|| StoreError::Other(format!("unknown audit event type {kind:?}")))?,
        client_address: get(row, "client_address")?,
        user_agent: get(row, "user_agent")?,
        key_id: key_id.map(KeyId::from_stored),
        session_id: session_id.map(SessionId::from_stored),
        detail: get(row, "detail")?,
        created_at: Timestamp(get(row, "created_at")?),
    })
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record_audit_event(&self, event: &keyward_core::audit::AuditEvent) -> StoreResult<()> {
        query(
            "INSERT INTO audit_events (id, tenant_id, actor, user_id, event, client_address, \
             user_agent, key_id, session_id, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(event.id.as_str())
        .bind(event.tenant_id.as_ref().map(TenantId::as_str))
        .bind(&event.actor)
        .bind(event.user_id.as_ref().map(UserId::as_str))
        .bind(event.kind.as_str())
        .bind(event.client_address.as_deref())
        .bind(event.user_agent.as_deref())
        .bind(event.key_id.as_ref().map(KeyId::as_str))
        .bind(event.session_id.as_ref().map(SessionId::as_str))
        .bind(event.detail.as_deref())
        .bind(event.created_at.seconds())
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn list_audit_events(
        &self,
        tenant: &TenantId,
        before: Option<&str>,
        limit: u32,
    ) -> StoreResult<Option<Vec<keyward_core::audit::AuditEvent>>> {
        // The cursor is an event id, looked up within the tenant: another tenant's id, or a
        // made-up one, matches nothing.
        let before_seq: i64 = match before {
            None => i64::MAX,
            Some(id) => {
                let seq: Option<i64> =
                    query_scalar("SELECT seq FROM audit_events WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.as_str())
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_error)?;
                match seq {
                    Some(seq) => seq,
                    None => return Ok(None),
                }
            }
        };
        let rows = query(
            "SELECT id, tenant_id, actor, user_id, event, client_address, user_agent, key_id, \
             session_id, detail, created_at FROM audit_events \
             WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(before_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(audit_event_from_row)
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn close(&self) {
        self.leave_feed().await;
        self.feed_pool.close().await;
        self.pool.close().await;
    }

    fn watch_key_changes(
        &self,
        cache: std::sync::Arc<keyward_core::KeyCache>,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_key_watch(cache)
    }
}

// Webhooks: their own file, the same rules.
include!("sql_webhooks.rs");
