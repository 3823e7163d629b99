//! Key policies: a key's rate limit and its credits, and the limiter that enforces rate limits.
//!
//! Rate limits use GCRA (the generic cell rate algorithm): a key with `requests` per
//! `per_seconds` earns one request every `per_seconds / requests`, and may spend a full
//! budget at once. One instance keeps the state in memory (`governor`, in the server); several
//! instances share it in Redis or in the database, through [`KeyRateLimiter`]. Credits are
//! always spent in the database, in one conditional statement, so they are exact across
//! instances.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
pub use keyward_proto::RefillInterval;
use keyward_proto::{CreditsSpec, RateLimitSpec, RefillSpec};

use crate::clock::Timestamp;
use crate::error::CoreResult;
use crate::ids::KeyId;
use crate::store::Store;

pub const MAX_RATE_LIMIT_REQUESTS: i64 = 1_000_000;
pub const MAX_RATE_LIMIT_PER_SECONDS: i64 = 86_400;
pub const MAX_CREDITS: i64 = 1_000_000_000_000;
/// The most credits one verification may spend.
pub const MAX_COST: i64 = 1_000_000;
/// `credits.low` fires when a spend leaves less than this fraction of the reference amount.
pub const CREDITS_LOW_FRACTION_PERCENT: i64 = 10;

/// At most `requests` per `per_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: u32,
    per_seconds: u32,
}

impl RateLimit {
    pub fn parse(spec: RateLimitSpec) -> Result<Self, String> {
        let requests = u32::try_from(spec.requests)
            .ok()
            .filter(|r| (1..=MAX_RATE_LIMIT_REQUESTS).contains(&i64::from(*r)))
            .ok_or_else(|| {
                format!("requests must be an integer from 1 to {MAX_RATE_LIMIT_REQUESTS}")
            })?;
        let per_seconds = u32::try_from(spec.per_seconds)
            .ok()
            .filter(|s| (1..=MAX_RATE_LIMIT_PER_SECONDS).contains(&i64::from(*s)))
            .ok_or_else(|| {
                format!("per_seconds must be an integer from 1 to {MAX_RATE_LIMIT_PER_SECONDS}")
            })?;
        Ok(Self {
            requests,
            per_seconds,
        })
    }

    /// From the database, which only ever holds parsed values; `None` for anything else.
    pub fn from_stored(requests: Option<i64>, per_seconds: Option<i64>) -> Option<Self> {
        Self::parse(RateLimitSpec {
            requests: requests?,
            per_seconds: per_seconds?,
        })
        .ok()
    }

    pub fn requests(self) -> u32 {
        self.requests
    }

    pub fn per_seconds(self) -> u32 {
        self.per_seconds
    }

    pub fn spec(self) -> RateLimitSpec {
        RateLimitSpec {
            requests: self.requests.into(),
            per_seconds: self.per_seconds.into(),
        }
    }

    /// Microseconds between two requests at the steady rate (the GCRA emission interval).
    pub fn interval_micros(self) -> i64 {
        (i64::from(self.per_seconds) * 1_000_000 / i64::from(self.requests)).max(1)
    }

    /// Microseconds a full budget takes to earn (the GCRA burst tolerance plus one interval).
    pub fn window_micros(self) -> i64 {
        self.interval_micros() * i64::from(self.requests)
    }

    /// The GCRA step, shared by the database and by tests: with the theoretical arrival time
    /// `tat` (µs; `None` for a key not seen yet), may `cost` requests pass at `now`? The answer
    /// carries the new `tat` to store when they pass.
    pub fn step(self, tat: Option<i64>, now: i64, cost: u32) -> RateDecision {
        let interval = self.interval_micros();
        let window = self.window_micros();
        let base = tat.map_or(now, |tat| tat.max(now));
        let next = base + interval * i64::from(cost);
        if next - now <= window {
            RateDecision::passed(self, now, next)
        } else {
            RateDecision::refused(self, now, base, cost)
        }
    }
}

/// What a rate-limit check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that could pass at once now.
    pub remaining: u32,
    /// Seconds until the whole budget is back.
    pub reset_seconds: u64,
    /// When refused: seconds until this request could pass.
    pub retry_after_seconds: u64,
    /// The theoretical arrival time after this check (µs), for the stores that keep it.
    pub tat: i64,
}

fn ceil_seconds(micros: i64) -> u64 {
    u64::try_from(micros.max(0))
        .unwrap_or(0)
        .div_ceil(1_000_000)
}

impl RateDecision {
    /// `cost` requests passed at `now`, leaving the theoretical arrival time at `tat`.
    pub fn passed(limit: RateLimit, now: i64, tat: i64) -> Self {
        let used = tat - now;
        let free = (limit.window_micros() - used).max(0) / limit.interval_micros();
        Self {
            allowed: true,
            limit: limit.requests,
            remaining: u32::try_from(free).unwrap_or(0).min(limit.requests),
            reset_seconds: ceil_seconds(used),
            retry_after_seconds: 0,
            tat,
        }
    }

    /// `cost` requests refused at `now` with the theoretical arrival time at `tat`.
    pub fn refused(limit: RateLimit, now: i64, tat: i64, cost: u32) -> Self {
        let interval = limit.interval_micros();
        let passes_at = tat + interval * i64::from(cost) - limit.window_micros();
        Self {
            allowed: false,
            limit: limit.requests,
            remaining: 0,
            reset_seconds: ceil_seconds(tat - now),
            retry_after_seconds: ceil_seconds(passes_at - now).max(1),
            tat,
        }
    }
}

/// Where the rate limits of keys are counted: this instance's memory, Redis, or the database.
#[async_trait]
pub trait KeyRateLimiter: Send + Sync {
    /// Counts `cost` requests of `key` against `limit`, unless that would exceed it.
    async fn check(&self, key: &KeyId, limit: RateLimit, cost: u32) -> CoreResult<RateDecision>;
    /// Forgets the state of `key` (its limit changed). Best effort.
    async fn forget(&self, key: &KeyId);
    /// Drops state that no longer limits anything; called every second.
    fn prune(&self) {}
    /// [`Self::check`] when it needs no I/O; `None` when it would.
    fn check_now(&self, _key: &KeyId, _limit: RateLimit, _cost: u32) -> Option<RateDecision> {
        None
    }
}

/// How credits refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub amount: i64,
    pub interval: RefillInterval,
}

/// A key's credits as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    pub remaining: i64,
    pub refill: Option<Refill>,
    /// The start of the refill period of the last refill (or of the setting).
    pub refilled_at: Timestamp,
    /// What `credits.low` compares with: the amount set or refilled last.
    pub reference: i64,
}

impl Credits {
    /// Parses a request's credits, set at `now`.
    pub fn parse(spec: CreditsSpec, now: Timestamp) -> Result<Self, String> {
        if !(0..=MAX_CREDITS).contains(&spec.remaining) {
            return Err(format!(
                "remaining must be an integer from 0 to {MAX_CREDITS}"
            ));
        }
        let refill = spec
            .refill
            .map(|refill| {
                if (1..=MAX_CREDITS).contains(&refill.amount) {
                    Ok(Refill {
                        amount: refill.amount,
                        interval: refill.interval,
                    })
                } else {
                    Err(format!(
                        "refill.amount must be an integer from 1 to {MAX_CREDITS}"
                    ))
                }
            })
            .transpose()?;
        let refilled_at = refill.map_or(now, |refill| period_start(refill.interval, now));
        Ok(Self {
            remaining: spec.remaining,
            refill,
            refilled_at,
            reference: refill.map_or(spec.remaining, |refill| refill.amount.max(spec.remaining)),
        })
    }

    /// What a client sees at `now`: a refill that is due shows as done.
    pub fn spec_at(&self, now: Timestamp) -> CreditsSpec {
        CreditsSpec {
            remaining: self.remaining_at(now),
            refill: self.refill.map(|refill| RefillSpec {
                amount: refill.amount,
                interval: refill.interval,
            }),
        }
    }

    pub fn remaining_at(&self, now: Timestamp) -> i64 {
        match self.refill {
            Some(refill) if self.refilled_at < period_start(refill.interval, now) => refill.amount,
            _ => self.remaining,
        }
    }
}

/// The start of the refill period holding `now`: 00:00 UTC of its day, or of the 1st of its
/// month.
pub fn period_start(interval: RefillInterval, now: Timestamp) -> Timestamp {
    let day = now.seconds().div_euclid(86_400) * 86_400;
    match interval {
        RefillInterval::Daily => Timestamp(day),
        RefillInterval::Monthly => {
            let date = time::OffsetDateTime::from_unix_timestamp(day)
                .map(|t| t.date())
                .unwrap_or(time::Date::MIN);
            let first = date.replace_day(1).unwrap_or(date);
            Timestamp(first.midnight().assume_utc().unix_timestamp())
        }
    }
}

/// The outcome of spending credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditSpend {
    /// Spent; this many are left.
    Spent { remaining: i64, reference: i64 },
    /// Not enough left; nothing was spent.
    Exhausted { remaining: i64 },
    /// The key has no credits (any more): nothing to spend.
    Unlimited,
}

/// Whether a spend from `before` to `after` crossed under the `credits.low` line.
pub fn crossed_low(before: i64, after: i64, reference: i64) -> bool {
    let line = |value: i64| {
        value.saturating_mul(100) < reference.saturating_mul(CREDITS_LOW_FRACTION_PERCENT)
    };
    reference > 0 && !line(before) && line(after)
}

/// This instance's memory: `governor`'s keyed GCRA, one limiter per distinct limit (a
/// deployment has few), keyed by key id. Right for one instance; several instances each
/// keep their own count, which is why they share Redis or the database instead.
#[derive(Default)]
pub struct MemoryRateLimiter {
    limiters: std::sync::RwLock<HashMap<RateLimit, Arc<KeyedLimiter>>>,
}

type KeyedLimiter = governor::RateLimiter<
    KeyId,
    governor::state::keyed::DefaultKeyedStateStore<KeyId>,
    governor::clock::DefaultClock,
    governor::middleware::StateInformationMiddleware,
>;

impl MemoryRateLimiter {
    fn limiter(&self, limit: RateLimit) -> Arc<KeyedLimiter> {
        if let Some(found) = self
            .limiters
            .read()
            .ok()
            .and_then(|limiters| limiters.get(&limit).cloned())
        {
            return found;
        }
        let quota = governor::Quota::with_period(std::time::Duration::from_micros(
            u64::try_from(limit.interval_micros()).unwrap_or(1),
        ))
        .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(limit.requests).unwrap_or(NonZeroU32::MIN));
        let made = Arc::new(
            governor::RateLimiter::keyed(quota)
                .with_middleware::<governor::middleware::StateInformationMiddleware>(),
        );
        match self.limiters.write() {
            Ok(mut limiters) => limiters.entry(limit).or_insert(made).clone(),
            Err(_) => made,
        }
    }

    /// The check itself, which needs no I/O.
    pub fn count(&self, key: &KeyId, limit: RateLimit, cost: u32) -> RateDecision {
        use governor::clock::Clock as _;
        let Some(cost) = NonZeroU32::new(cost) else {
            return RateDecision::passed(limit, 0, 0);
        };
        let limiter = self.limiter(limit);
        let interval = limit.interval_micros();
        match limiter.check_key_n(key, cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = i64::from(limit.requests - remaining.min(limit.requests)) * interval;
                RateDecision::passed(limit, 0, used)
            }
            Ok(Err(not_until)) => {
                let clock = governor::clock::DefaultClock::default();
                let wait = not_until.wait_time_from(clock.now());
                let wait_micros = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2);
                // The budget is back one window after the earliest a request could pass.
                let tat = wait_micros + limit.window_micros() - interval * i64::from(cost.get());
                RateDecision::refused(limit, 0, tat, cost.get())
            }
            // More than the whole budget at once: it can never pass.
            Err(_) => RateDecision::refused(limit, 0, limit.window_micros(), cost.get()),
        }
    }
}

#[async_trait]
impl KeyRateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &KeyId, limit: RateLimit, cost: u32) -> CoreResult<RateDecision> {
        Ok(self.count(key, limit, cost))
    }

    async fn forget(&self, _key: &KeyId) {
        // A changed limit is another limiter: the old state is pruned once idle.
    }

    fn prune(&self) {
        if let Ok(limiters) = self.limiters.read() {
            for limiter in limiters.values() {
                limiter.retain_recent();
            }
        }
    }

    fn check_now(&self, key: &KeyId, limit: RateLimit, cost: u32) -> Option<RateDecision> {
        Some(self.count(key, limit, cost))
    }
}

/// The database: one conditional upsert per check (`KeyStore::take_rate_limit`), exact across
/// every instance that shares it.
pub struct StoreRateLimiter {
    store: Arc<dyn Store>,
}

impl StoreRateLimiter {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// Microseconds since the Unix epoch, from the system clock.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[async_trait]
impl KeyRateLimiter for StoreRateLimiter {
    async fn check(&self, key: &KeyId, limit: RateLimit, cost: u32) -> CoreResult<RateDecision> {
        Ok(self
            .store
            .take_rate_limit(key, limit, cost, now_micros())
            .await?)
    }

    async fn forget(&self, key: &KeyId) {
        if let Err(error) = self.store.forget_rate_limit(key).await {
            tracing::warn!(%error, key_id = %key, "could not reset the rate limit of a changed key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: i64, per_seconds: i64) -> RateLimit {
        RateLimit::parse(RateLimitSpec {
            requests,
            per_seconds,
        })
        .unwrap()
    }

    #[test]
    fn bounds_are_checked() {
        assert!(RateLimit::parse(RateLimitSpec {
            requests: 0,
            per_seconds: 1
        })
        .is_err());
        assert!(RateLimit::parse(RateLimitSpec {
            requests: 1,
            per_seconds: 0
        })
        .is_err());
        assert!(RateLimit::parse(RateLimitSpec {
            requests: 1_000_001,
            per_seconds: 1
        })
        .is_err());
        assert!(RateLimit::parse(RateLimitSpec {
            requests: 5,
            per_seconds: 86_401
        })
        .is_err());
        assert!(RateLimit::parse(RateLimitSpec {
            requests: -1,
            per_seconds: 5
        })
        .is_err());
        assert_eq!(limit(10, 60).requests(), 10);
    }

    #[test]
    fn gcra_lets_a_full_budget_through_then_one_per_interval() {
        let limit = limit(5, 10);
        let now = 1_000_000_000;
        let mut tat = None;
        for expected_remaining in (0..5).rev() {
            let decision = limit.step(tat, now, 1);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = Some(decision.tat);
        }
        let refused = limit.step(tat, now, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_seconds, 2);
        assert_eq!(refused.reset_seconds, 10);
        // One interval later, exactly one more passes.
        let later = now + 2_000_000;
        let decision = limit.step(tat, later, 1);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 0);
        assert!(!limit.step(Some(decision.tat), later, 1).allowed);
    }

    #[test]
    fn a_cost_over_the_budget_never_passes() {
        let limit = limit(3, 1);
        assert!(!limit.step(None, 0, 4).allowed);
        assert!(limit.step(None, 0, 3).allowed);
    }

    #[test]
    fn periods_start_at_midnight_and_on_the_first() {
        // 2026-11-22T10:00:00Z
        let now = Timestamp(1_795_341_600);
        assert_eq!(
            period_start(RefillInterval::Daily, now).to_rfc3339(),
            "2026-11-22T00:00:00Z"
        );
        assert_eq!(
            period_start(RefillInterval::Monthly, now).to_rfc3339(),
            "2026-11-01T00:00:00Z"
        );
    }

    #[test]
    fn a_due_refill_shows_as_done() {
        let now = Timestamp(1_795_341_600);
        let spec = CreditsSpec {
            remaining: 3,
            refill: Some(RefillSpec {
                amount: 100,
                interval: RefillInterval::Daily,
            }),
        };
        let credits = Credits::parse(spec, now).unwrap();
        assert_eq!(credits.remaining_at(now), 3);
        assert_eq!(credits.remaining_at(now.plus_seconds(14 * 3600)), 100);
        assert!(Credits::parse(
            CreditsSpec {
                remaining: -1,
                refill: None
            },
            now
        )
        .is_err());
    }

    #[test]
    fn low_fires_once_when_crossing_ten_percent() {
        assert!(crossed_low(10, 9, 100));
        assert!(!crossed_low(9, 8, 100));
        assert!(!crossed_low(11, 10, 100));
        assert!(!crossed_low(5, 4, 0));
    }
}
