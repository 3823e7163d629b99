//! Time, from one place.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn seconds(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds))
    }

    pub fn plus_days(self, days: i64) -> Self {
        self.plus_seconds(days.saturating_mul(86_400))
    }

    /// RFC 3339 UTC, second precision: `2026-11-22T10:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }
}

/// Where "now" comes from. The server uses [`SystemClock`]; tests use [`TestClock`] to reach an
/// expiry without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(time::OffsetDateTime::now_utc().unix_timestamp())
    }
}

/// The system clock plus an offset that tests can move forward.
#[derive(Debug, Default, Clone)]
pub struct TestClock {
    offset_seconds: Arc<AtomicI64>,
}

impl TestClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, seconds: i64) {
        self.offset_seconds.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        SystemClock
            .now()
            .plus_seconds(self.offset_seconds.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_795_860_000).to_rfc3339(),
            "2026-11-28T10:00:00Z"
        );
    }

    #[test]
    fn test_clock_moves_forward() {
        let clock = TestClock::new();
        let before = clock.now();
        clock.advance(86_400);
        assert!(clock.now().seconds() - before.seconds() >= 86_400);
    }
}
