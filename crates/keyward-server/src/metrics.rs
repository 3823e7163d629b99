//! Prometheus metrics, one registry per server (no globals, so tests in one process do not mix).

use std::sync::Arc;

use keyward_core::KeyCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
    webhook_attempts: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    verb: &'static str,
    table: &'static str,
}

/// What is read at scrape time: the verification cache's counters and the statement counts.
struct ScrapeTime {
    cache: Arc<KeyCache>,
}

impl std::fmt::Debug for ScrapeTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeTime")
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.cache.stats();
        let counters = [
            (
                "key_cache_hits",
                "Verifications answered from the key cache",
                stats.hits,
            ),
            (
                "key_cache_misses",
                "Verifications that read the key from the database (absent, or cache not serving)",
                stats.misses,
            ),
            (
                "key_cache_invalidations",
                "Invalidations of the key cache: key changes from this instance or another, and clears",
                stats.invalidations,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "key_cache_entries",
                "Keys held by the key cache",
                stats.entries as i64,
            ),
            (
                "key_cache_serving",
                "1 while the key cache answers (it follows every instance's key changes), else 0",
                i64::from(self.cache.is_serving()),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let statements = keyward_store::statement_counts();
        let mut family = encoder.encode_descriptor(
            "db_statements",
            "SQL statements this process ran, by verb and first table",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for line in statements {
            let labels = StatementLabels {
                verb: line.verb,
                table: line.table,
            };
            ConstCounter::new(line.count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(cache: Arc<KeyCache>) -> Self {
        let mut registry = Registry::with_prefix("keyward");
        registry.register_collector(Box::new(ScrapeTime { cache }));
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
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by what they led to: delivered (2xx), retrying (another attempt is scheduled), failed (the last attempt failed)",
            webhook_attempts.clone(),
        );
        Self {
            registry,
            webhook_attempts,
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

    /// One webhook attempt, recorded: `delivered`, `retrying` or `failed`.
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_attempts
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
