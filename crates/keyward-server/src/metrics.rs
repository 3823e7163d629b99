//! Prometheus metrics, one registry per server (no globals, so tests in one process do not mix).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    verifications: Family<OutcomeLabels, Counter>,
    usage_events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.1 ms … ~3.3 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        let verifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            durations.clone(),
        );
        registry.register(
            "key_verifications",
            "API key verifications by outcome (VALID, NOT_FOUND, EXPIRED, REVOKED, INSUFFICIENT_SCOPE; valid/invalid for keys presented as credentials)",
            verifications.clone(),
        );
        let usage_events_dropped = Counter::default();
        registry.register(
            "usage_events_dropped",
            "Usage events dropped because the metering queue was full",
            usage_events_dropped.clone(),
        );
        Self {
            registry,
            usage_events_dropped,
            requests,
            durations,
            verifications,
        }
    }

    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn verification(&self, outcome: &'static str) {
        self.verifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn usage_event_dropped(&self) {
        self.usage_events_dropped.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
