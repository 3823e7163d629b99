//! The key-change feed: how an instance's verification cache hears of the key changes other
//! instances make in the same database, on either backend, with nothing but SQL.
//!
//! - Every key change (revoke, rotate) takes the next number of the one-row counter
//!   `key_change_counter` and writes it with the key's hash to `key_changes`, in its own
//!   transaction. The counter's row lock (PostgreSQL) or the single writer (SQLite) makes the
//!   numbers commit in order, so "everything up to N" is a meaningful point.
//! - Each instance has a row in `instances` (`seen_seq`, `heartbeat_at`). It polls
//!   `key_changes` every [`POLL_INTERVAL`], invalidates what changed, and records how far it has
//!   read. Each successful poll renews its cache's lease to [`LEASE`] after the poll began.
//!   The feed has connections of its own and writes its reports from a task of their own, so
//!   neither a busy pool nor a wait for SQLite's write lock can starve the polls (a starved
//!   poll would let the lease run out, and verification fall back to the database when the
//!   database is busiest).
//! - A change is answered only when every live peer has read past it, or after
//!   [`SETTLE_TIMEOUT`] (longer than [`LEASE`]), when a peer that has not read it can no longer
//!   serve from its cache. So a revoked key is refused by every instance from the very next
//!   request, and no verification ever waits on the feed.

use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString};

/// How often an instance reads `key_changes`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a successful poll lets the cache serve.
pub const LEASE: Duration = Duration::from_secs(1);
/// How long a key change waits for peers to read it; past [`LEASE`], so a peer that has not
/// read it has stopped serving from its cache by then.
pub const SETTLE_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How often an instance writes its heartbeat when nothing changes.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A peer whose heartbeat is older is not waited for. Generous, so that clocks that disagree
/// by less than this cost nothing; a peer waited for in vain costs [`SETTLE_TIMEOUT`] once.
pub const PEER_TTL_MILLIS: i64 = 30_000;
/// `key_changes` rows and `instances` rows older than this are deleted.
pub const RETENTION_MILLIS: i64 = 3_600_000;
/// A reader away longer than this forgets its whole cache on return: changes it never read
/// may have been pruned meanwhile.
pub const STALE_AFTER: Duration = Duration::from_secs(1_800);
/// How often each instance deletes them.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// This instance's name in `instances`.
#[derive(Debug)]
pub struct Feed {
    pub instance: String,
}

impl Default for Feed {
    /// A new instance, with a random name.
    fn default() -> Self {
        Self {
            instance: format!(
                "ins_{}",
                Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
            ),
        }
    }
}

/// Wall-clock milliseconds, for heartbeats (compared across instances only against
/// [`PEER_TTL_MILLIS`]).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
