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

/// The state every request reaches, behind one `Arc`: axum clones it for each middleware
/// layer and extractor of every request, and a clone must stay one atomic increment, not one
/// per service (a profile of verify showed the clones and drops of a ten-`Arc` state as the
/// most expensive thing keyward did per request, on counters every core shares).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services, the metrics and the config.
pub struct Services {
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

impl Services {
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
