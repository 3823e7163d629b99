//! What every handler can reach: the services, the metrics and the config. No pool: SQL stays
//! in `keyward-store`.

use std::sync::Arc;

use keyward_core::store::Store;
use std::time::Duration;

use keyward_core::{
    AccountService, DeviceService, KeyId, KeyService, LeakService, TenantId, UsageOutcome,
    UsageService, WebhookService,
};

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub accounts: Arc<AccountService>,
    pub keys: Arc<KeyService>,
    pub device: Arc<DeviceService>,
    pub usage: Arc<UsageService>,
    pub webhooks: Arc<WebhookService>,
    pub leaks: Arc<LeakService>,
    /// Only for `/readyz`'s ping.
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// Brute-force and abuse throttles (`rate_limits`), per instance.
    pub throttles: Arc<crate::throttle::Throttles>,
}

impl AppState {
    /// Meters one completed request. Never waits; a full queue drops the event and counts it in
    /// `keyward_usage_events_dropped_total`, so no drop goes unseen. The gateway records here too.
    pub fn record_usage(
        &self,
        tenant_id: &TenantId,
        key_id: &KeyId,
        outcome: UsageOutcome,
        status: u16,
        duration: Duration,
    ) {
        if self
            .usage
            .record(tenant_id, key_id, outcome, status, duration)
            .is_err()
        {
            self.metrics.usage_event_dropped();
        }
    }
}
