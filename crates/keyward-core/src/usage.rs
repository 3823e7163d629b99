//! Metering: usage events, the bounded queue they travel through, the batch writer that rolls
//! them up into per-day counters, and the report read back from those counters.
//!
//! The request path only calls [`UsageService::record`], a `try_send` on a bounded queue: it
//! never waits for the database, and when the queue is full the event is dropped and the call
//! says so (the server counts drops in `/metrics`). [`UsageService::run`] drains the queue once a
//! second, or sooner when a batch is full, sums the events per `(tenant, key, UTC day)` and adds
//! the sums to the stored counters ([`crate::store::UsageStore::add_usage`], additive upserts).
//! On shutdown [`UsageService::run`] drains and writes what is left before it returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex, Notify};

use crate::clock::{Clock, Timestamp};
use crate::error::CoreResult;
use crate::ids::{KeyId, TenantId};
use crate::store::{Store, UsageDayRecord, UsageDelta};
use keyward_proto::{UsageDay, UsageResponse};

pub const SECONDS_PER_DAY: i64 = 86_400;
/// The longest report: 90 days.
pub const MAX_USAGE_DAYS: u32 = 90;

/// How a metered request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// Verify answered `VALID` (the gateway: the upstream answered below 400).
    Succeeded,
    /// Any refusal (the gateway: also an upstream 4xx/5xx or no answer).
    Failed,
}

/// One metered request, as it completed.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    pub at: Timestamp,
    pub outcome: UsageOutcome,
    /// The HTTP status answered (kept in the event for the gateway; not rolled up yet).
    pub status: u16,
    pub duration_ms: u64,
}

#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// Events the queue holds before new ones are dropped.
    pub queue_capacity: usize,
    /// A batch is written as soon as this many events wait.
    pub batch_size: usize,
    /// A batch is written at least this often.
    pub flush_interval: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            batch_size: 1_000,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// The queue was full: the event was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDropped;

pub struct UsageService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: UsageSettings,
    sender: mpsc::Sender<UsageEvent>,
    /// Held by whoever drains: the writer task, or a final flush.
    queue: Mutex<Queue>,
    batch_ready: Notify,
}

struct Queue {
    receiver: mpsc::Receiver<UsageEvent>,
    /// Sums a failed write left behind, retried with the next batch.
    unwritten: HashMap<(TenantId, KeyId, i64), UsageDelta>,
}

impl UsageService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: UsageSettings) -> Self {
        let (sender, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        Self {
            store,
            clock,
            settings,
            sender,
            queue: Mutex::new(Queue {
                receiver,
                unwritten: HashMap::new(),
            }),
            batch_ready: Notify::new(),
        }
    }

    /// Queues a completed request, stamped with the clock's now. Never waits: a full queue
    /// drops the event and answers [`UsageDropped`], which the caller must count.
    pub fn record(
        &self,
        tenant_id: &TenantId,
        key_id: &KeyId,
        outcome: UsageOutcome,
        status: u16,
        duration: Duration,
    ) -> Result<(), UsageDropped> {
        let event = UsageEvent {
            tenant_id: tenant_id.clone(),
            key_id: key_id.clone(),
            at: self.clock.now(),
            outcome,
            status,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        };
        self.sender.try_send(event).map_err(|_| UsageDropped)?;
        let waiting = self.sender.max_capacity() - self.sender.capacity();
        if waiting >= self.settings.batch_size {
            self.batch_ready.notify_one();
        }
        Ok(())
    }

    /// Drains the queue and writes the sums; how many events it took. On a database failure
    /// the sums stay in memory for the next call.
    pub async fn flush(&self) -> CoreResult<usize> {
        let mut queue = self.queue.lock().await;
        let mut taken = 0;
        while let Ok(event) = queue.receiver.try_recv() {
            taken += 1;
            let day = event.at.seconds().div_euclid(SECONDS_PER_DAY);
            let delta = queue
                .unwritten
                .entry((event.tenant_id.clone(), event.key_id.clone(), day))
                .or_insert_with(|| UsageDelta {
                    tenant_id: event.tenant_id,
                    key_id: event.key_id,
                    day,
                    total: 0,
                    succeeded: 0,
                    failed: 0,
                    duration_ms_sum: 0,
                    completed: 0,
                });
            delta.total += 1;
            delta.completed += 1;
            match event.outcome {
                UsageOutcome::Succeeded => delta.succeeded += 1,
                UsageOutcome::Failed => delta.failed += 1,
            }
            delta.duration_ms_sum += i64::try_from(event.duration_ms).unwrap_or(i64::MAX);
        }
        if queue.unwritten.is_empty() {
            return Ok(taken);
        }
        let deltas: Vec<UsageDelta> = queue.unwritten.values().cloned().collect();
        self.store.add_usage(&deltas).await?;
        queue.unwritten.clear();
        Ok(taken)
    }

    /// The writer: flushes every `flush_interval` or when a batch is full, until `stop` turns
    /// true; then drains and writes what is left and returns. Start exactly one per service.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.batch_ready.notified() => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            if let Err(error) = self.flush().await {
                tracing::warn!(%error, "writing usage failed; will retry");
            }
        }
        match self.flush().await {
            Ok(events) => tracing::debug!(events, "usage flushed at shutdown"),
            Err(error) => {
                tracing::error!(%error, "final usage flush failed; these counts are lost")
            }
        }
    }

    /// The last `days` UTC days (today included) of `tenant`, or of one of its keys. The
    /// caller checks that the key is the caller's.
    pub async fn report(
        &self,
        tenant: &TenantId,
        key: Option<&KeyId>,
        days: u32,
    ) -> CoreResult<UsageResponse> {
        let days = i64::from(days.clamp(1, MAX_USAGE_DAYS));
        let to_day = self.clock.now().seconds().div_euclid(SECONDS_PER_DAY);
        let from_day = to_day - days + 1;
        let rows = self
            .store
            .usage_by_day(tenant, key, from_day, to_day)
            .await?;
        Ok(build_report(from_day, to_day, &rows))
    }
}

/// `YYYY-MM-DD` of a Unix day number.
pub fn date_of_day(day: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(day.saturating_mul(SECONDS_PER_DAY))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01".to_owned())
}

fn build_report(from_day: i64, to_day: i64, rows: &[UsageDayRecord]) -> UsageResponse {
    let by_day: HashMap<i64, &UsageDayRecord> = rows.iter().map(|row| (row.day, row)).collect();
    let empty = UsageDayRecord::default();
    let (mut total, mut succeeded, mut failed, mut duration, mut completed) = (0, 0, 0, 0, 0);
    let days = (from_day..=to_day)
        .map(|day| {
            let row = by_day.get(&day).copied().unwrap_or(&empty);
            total += row.total;
            succeeded += row.succeeded;
            failed += row.failed;
            duration += row.duration_ms_sum;
            completed += row.completed;
            UsageDay {
                date: date_of_day(day),
                total: row.total,
                succeeded: row.succeeded,
                failed: row.failed,
                in_flight: (row.total - row.completed).max(0),
            }
        })
        .collect();
    let finished = succeeded + failed;
    UsageResponse {
        from: date_of_day(from_day),
        to: date_of_day(to_day),
        executions: total,
        succeeded,
        failed,
        in_flight: (total - completed).max(0),
        success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
        avg_duration_ms: (completed > 0).then(|| duration as f64 / completed as f64),
        days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_days() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(1_795_860_000 / SECONDS_PER_DAY), "2026-11-28");
    }

    #[test]
    fn report_fills_zero_days_oldest_first() {
        let rows = [UsageDayRecord {
            day: 11,
            total: 4,
            succeeded: 3,
            failed: 1,
            duration_ms_sum: 8,
            completed: 4,
        }];
        let report = build_report(10, 12, &rows);
        assert_eq!(report.from, "1970-01-11");
        assert_eq!(report.to, "1970-01-13");
        assert_eq!(report.days.len(), 3);
        assert_eq!(report.days[0].total, 0);
        assert_eq!(report.days[1].total, 4);
        assert_eq!(report.executions, 4);
        assert_eq!(report.success_rate, Some(0.75));
        assert_eq!(report.avg_duration_ms, Some(2.0));
        let empty = build_report(10, 12, &[]);
        assert_eq!(empty.success_rate, None);
        assert_eq!(empty.avg_duration_ms, None);
    }
}
