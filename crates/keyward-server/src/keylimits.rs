//! Where the rate limits of API keys are counted, and the `RateLimit-*` headers.
//!
//! `keys.rate_limit_store` picks the counter (SPEC §4 "Key policies"):
//! - `memory`: this instance's memory (`governor`), one operation with no I/O;
//! - `redis`: one Lua script in Redis (`redis_url`), shared by every instance;
//! - `database`: one conditional upsert in the shared database;
//! - `auto` (the default): `redis` when `redis_url` is set, else `database` on PostgreSQL
//!   (instances may share it), else `memory` (SQLite has one instance).
//!
//! All three run GCRA with the same parameters, and the shared ones count each request
//! atomically, so several instances together never exceed a limit.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use keyward_core::policy::{
    KeyRateLimiter, MemoryRateLimiter, RateDecision, RateLimit, StoreRateLimiter,
};
use keyward_core::store::Store;
use keyward_core::{CoreError, CoreResult, KeyId};

/// Where key rate limits are counted (`keys.rate_limit_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStore {
    Auto,
    Memory,
    Redis,
    Database,
}

/// The limiter `store` and the settings call for. `redis` needs `redis_url` (checked when the
/// configuration loads).
pub async fn limiter(
    choice: RateLimitStore,
    redis_url: Option<&str>,
    database_url: &str,
    store: Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn KeyRateLimiter>> {
    let shared_database =
        keyward_store::Backend::of_url(database_url) == Some(keyward_store::Backend::Postgres);
    let choice = match (choice, redis_url) {
        (RateLimitStore::Auto, Some(_)) => RateLimitStore::Redis,
        (RateLimitStore::Auto, None) if shared_database => RateLimitStore::Database,
        (RateLimitStore::Auto, None) => RateLimitStore::Memory,
        (choice, _) => choice,
    };
    Ok(match (choice, redis_url) {
        (RateLimitStore::Redis, Some(url)) => Arc::new(RedisRateLimiter::connect(url).await?),
        (RateLimitStore::Redis, None) => {
            anyhow::bail!("keys.rate_limit_store: \"redis\" needs redis_url")
        }
        (RateLimitStore::Database, _) => Arc::new(StoreRateLimiter::new(store)),
        _ => Arc::new(MemoryRateLimiter::default()),
    })
}

/// GCRA in one script, so that a check and its count are one atomic step for every instance.
/// The time is Redis's own (`TIME`), so instances' clocks do not matter. KEYS[1] holds the
/// theoretical arrival time in µs; ARGV: interval µs × cost, window µs. Answers
/// `{passed (0/1), tat, now}`.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local step = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + step
if next - now > window then
  return {0, tat, now}
end
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000) + 1000)
return {1, next, now}
";

/// Rate limits counted in Redis.
pub struct RedisRateLimiter {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
}

impl RedisRateLimiter {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|error| {
            anyhow::anyhow!("redis_url: {error} (expected redis://host:port/db)")
        })?;
        let connection = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|error| anyhow::anyhow!("redis_url: cannot connect to Redis: {error}"))?;
        Ok(Self {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
        })
    }

    fn key(key: &KeyId) -> String {
        format!("keyward:rl:{key}")
    }
}

#[async_trait]
impl KeyRateLimiter for RedisRateLimiter {
    async fn check(&self, key: &KeyId, limit: RateLimit, cost: u32) -> CoreResult<RateDecision> {
        let step = limit.interval_micros() * i64::from(cost);
        let mut connection = self.connection.clone();
        let (passed, tat, now): (i64, i64, i64) = self
            .script
            .key(Self::key(key))
            .arg(step)
            .arg(limit.window_micros())
            .invoke_async(&mut connection)
            .await
            .map_err(|error| {
                CoreError::Unavailable(keyward_core::store::StoreError::Unavailable(format!(
                    "redis: {error}"
                )))
            })?;
        Ok(if passed == 1 {
            RateDecision::passed(limit, now, tat)
        } else {
            RateDecision::refused(limit, now, tat, cost)
        })
    }

    async fn forget(&self, key: &KeyId) {
        let mut connection = self.connection.clone();
        let deleted: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(Self::key(key))
            .query_async(&mut connection)
            .await;
        if let Err(error) = deleted {
            tracing::warn!(%error, key_id = %key, "could not reset the rate limit of a changed key in Redis");
        }
    }
}

/// The headers of a response to a key with a rate limit (IETF draft "RateLimit header fields").
pub fn set_headers(headers: &mut HeaderMap, decision: &RateDecision) {
    const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    headers.insert(LIMIT, HeaderValue::from(decision.limit));
    headers.insert(REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RESET, HeaderValue::from(decision.reset_seconds));
}

/// Where the `Caller` extractor leaves a key's rate limit for [`headers`] to write.
#[derive(Clone, Default)]
pub struct Slot(Arc<std::sync::OnceLock<RateDecision>>);

impl Slot {
    pub fn set(&self, decision: RateDecision) {
        let _ = self.0.set(decision);
    }
}

/// Writes the `RateLimit-*` headers of a successful answer to a key with a rate limit. Only a
/// request that presents a key in a header pays for the slot.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let presents_key = request.headers().contains_key("x-api-key")
        || request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| !value.contains('.'));
    if !presents_key {
        return next.run(request).await;
    }
    let slot = Slot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(decision) = slot.0.get() {
        if !response.headers().contains_key("ratelimit-limit") {
            set_headers(response.headers_mut(), decision);
        }
    }
    response
}
