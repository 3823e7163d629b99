//! What every handler can reach: the services, the metrics and the config. No pool: SQL stays
//! in `keyward-store`.

use std::sync::Arc;

use keyward_core::store::Store;
use keyward_core::{AccountService, DeviceService, KeyService};

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub accounts: Arc<AccountService>,
    pub keys: Arc<KeyService>,
    pub device: Arc<DeviceService>,
    /// Only for `/readyz`'s ping.
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
}
