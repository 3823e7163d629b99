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
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Mutex, Notify};

use crate::clock::Clock;
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

/// What one queued event adds to its day's counters.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A request began: `total` + 1, so it shows as in flight until its [`Step::Completed`].
    Started,
    /// A started request ended.
    Completed(Completion),
    /// A request that began and ended at once (a verify call).
    Whole(Completion),
}

#[derive(Debug, Clone, Copy)]
struct Completion {
    outcome: UsageOutcome,
    /// The HTTP status answered. Travels with the event for tracing; the daily counters keep
    /// only the outcome, which is all the SPEC's report shows.
    #[allow(dead_code)]
    status: u16,
    duration_us: i64,
}

/// One metered step of a request. `day` is the UTC day the request *began*: a completion
/// lands on the same row as its start, so a request crossing midnight never leaves a day with
/// a request forever in flight.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    tenant_id: TenantId,
    key_id: KeyId,
    day: i64,
    step: Step,
}

#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// `false` meters nothing (for benchmarks and installations that bill elsewhere).
    pub enabled: bool,
    /// Events the queue holds before new ones are dropped. A request in flight holds one slot
    /// for its completion, so its end is never dropped once its start was taken.
    pub queue_capacity: usize,
    /// A batch is written as soon as this many events wait.
    pub batch_size: usize,
    /// A batch is written at least this often.
    pub flush_interval: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_capacity: 100_000,
            batch_size: 1_000,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// The queue was full: the event was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDropped;

/// A metered request that has begun (see [`UsageService::start`]). It holds a reserved queue
/// slot for its completion; [`InFlight::finish`] uses it. Dropped unfinished (the client went
/// away, the handler was cancelled), it completes as failed, so nothing stays in flight.
#[derive(Debug)]
pub struct InFlight {
    slot: Option<(mpsc::OwnedPermit<UsageEvent>, TenantId, KeyId, i64)>,
    began: Instant,
}

impl InFlight {
    /// A request not metered (metering is off, or its start was dropped).
    fn untracked() -> Self {
        Self {
            slot: None,
            began: Instant::now(),
        }
    }

    /// Records how the request ended; the duration is measured from [`UsageService::start`].
    pub fn finish(mut self, outcome: UsageOutcome, status: u16) {
        self.complete(outcome, status);
    }

    fn complete(&mut self, outcome: UsageOutcome, status: u16) {
        if let Some((permit, tenant_id, key_id, day)) = self.slot.take() {
            permit.send(UsageEvent {
                tenant_id,
                key_id,
                day,
                step: Step::Completed(Completion {
                    outcome,
                    status,
                    duration_us: micros(self.began.elapsed()),
                }),
            });
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // 499: nginx's "client closed request"; only for tracing, see [`Completion::status`].
        self.complete(UsageOutcome::Failed, 499);
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

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

    fn today(&self) -> i64 {
        self.clock.now().seconds().div_euclid(SECONDS_PER_DAY)
    }

    /// Queues a request that began and ended at once (a verify call), dated by the clock's
    /// now. Never waits: a full queue drops the event and answers [`UsageDropped`], which the
    /// caller must count.
    pub fn record(
        &self,
        tenant_id: &TenantId,
        key_id: &KeyId,
        outcome: UsageOutcome,
        status: u16,
        duration: Duration,
    ) -> Result<(), UsageDropped> {
        if !self.settings.enabled {
            return Ok(());
        }
        let event = UsageEvent {
            tenant_id: tenant_id.clone(),
            key_id: key_id.clone(),
            day: self.today(),
            step: Step::Whole(Completion {
                outcome,
                status,
                duration_us: micros(duration),
            }),
        };
        self.sender.try_send(event).map_err(|_| UsageDropped)?;
        self.nudge();
        Ok(())
    }

    /// Queues the start of a longer request (a gateway request), which shows as in flight
    /// until the returned [`InFlight`] finishes or is dropped. Never waits: when the queue has
    /// no room for both the start and the completion, neither is queued and the answer is
    /// [`UsageDropped`], so the counters never hold a start without its end.
    pub fn start(&self, tenant_id: &TenantId, key_id: &KeyId) -> Result<InFlight, UsageDropped> {
        if !self.settings.enabled {
            return Ok(InFlight::untracked());
        }
        let completion = self
            .sender
            .clone()
            .try_reserve_owned()
            .map_err(|_| UsageDropped)?;
        let day = self.today();
        self.sender
            .try_send(UsageEvent {
                tenant_id: tenant_id.clone(),
                key_id: key_id.clone(),
                day,
                step: Step::Started,
            })
            .map_err(|_| UsageDropped)?;
        self.nudge();
        Ok(InFlight {
            slot: Some((completion, tenant_id.clone(), key_id.clone(), day)),
            began: Instant::now(),
        })
    }

    /// Wakes the writer when a full batch waits.
    fn nudge(&self) {
        let waiting = self.sender.max_capacity() - self.sender.capacity();
        if waiting >= self.settings.batch_size {
            self.batch_ready.notify_one();
        }
    }

    /// Drains the queue and writes the sums; how many events it took. On a database failure
    /// the sums stay in memory for the next call.
    pub async fn flush(&self) -> CoreResult<usize> {
        let mut queue = self.queue.lock().await;
        let taken = Self::absorb(&mut queue);
        if queue.unwritten.is_empty() {
            return Ok(taken);
        }
        let deltas: Vec<UsageDelta> = queue.unwritten.values().cloned().collect();
        self.store.add_usage(&deltas).await?;
        queue.unwritten.clear();
        Ok(taken)
    }

    /// Drains the queue into the per-key sums, writing nothing: how many events it took.
    pub async fn take_waiting(&self) -> usize {
        Self::absorb(&mut *self.queue.lock().await)
    }

    fn absorb(queue: &mut Queue) -> usize {
        let mut taken = 0;
        while let Ok(event) = queue.receiver.try_recv() {
            taken += 1;
            let delta = queue
                .unwritten
                .entry((event.tenant_id.clone(), event.key_id.clone(), event.day))
                .or_insert_with(|| UsageDelta {
                    tenant_id: event.tenant_id,
                    key_id: event.key_id,
                    day: event.day,
                    total: 0,
                    succeeded: 0,
                    failed: 0,
                    duration_us_sum: 0,
                    completed: 0,
                });
            let completion = match event.step {
                Step::Started => {
                    delta.total += 1;
                    continue;
                }
                Step::Completed(completion) => completion,
                Step::Whole(completion) => {
                    delta.total += 1;
                    completion
                }
            };
            delta.completed += 1;
            match completion.outcome {
                UsageOutcome::Succeeded => delta.succeeded += 1,
                UsageOutcome::Failed => delta.failed += 1,
            }
            delta.duration_us_sum = delta.duration_us_sum.saturating_add(completion.duration_us);
        }
        taken
    }

    /// The writer, until `stop` turns true: every `flush_interval` it writes the sums; when a
    /// batch waits it only folds the queue into the sums, so the queue never fills and the
    /// database sees one row per key and day per interval, however busy the key. Then it
    /// drains and writes what is left and returns. Start exactly one per service.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let write = tokio::select! {
                _ = tick.tick() => true,
                () = self.batch_ready.notified() => false,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            if !write {
                self.take_waiting().await;
                continue;
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
            duration += row.duration_us_sum;
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
        avg_duration_ms: (completed > 0).then(|| duration as f64 / completed as f64 / 1000.0),
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
            total: 5,
            succeeded: 3,
            failed: 1,
            duration_us_sum: 8_000,
            completed: 4,
        }];
        let report = build_report(10, 12, &rows);
        assert_eq!(report.from, "1970-01-11");
        assert_eq!(report.to, "1970-01-13");
        assert_eq!(report.days.len(), 3);
        assert_eq!(report.days[0].total, 0);
        assert_eq!(report.days[1].total, 5);
        assert_eq!(report.days[1].in_flight, 1);
        assert_eq!(report.executions, 5);
        assert_eq!(report.in_flight, 1);
        assert_eq!(report.success_rate, Some(0.75));
        assert_eq!(report.avg_duration_ms, Some(2.0));
        let empty = build_report(10, 12, &[]);
        assert_eq!(empty.success_rate, None);
        assert_eq!(empty.avg_duration_ms, None);
    }
}
