//! The webhook dispatcher: each instance runs one [`Dispatcher`], which leases due deliveries
//! from the database (`WebhookService::claim_due`, one instance per attempt), signs them the
//! Standard Webhooks way and POSTs them, and records every attempt with its outcome
//! (`WebhookService::finish`, which schedules the retries).
//!
//! The HTTP client is hyper-util's legacy client over `hyper-rustls`, as the gateway's: it
//! follows no redirects and reads no `HTTP(S)_PROXY` variables, both of which would let a
//! target the SSRF guard refused be reached anyway (reqwest does both by default). The guard
//! ([`is_public`]) checks an address literal before connecting, and the connector's resolver
//! ([`GuardedResolver`]) drops every resolved address that is not public, so a name that
//! resolves elsewhere between the check and the connection (DNS rebinding) gains nothing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keyward_core::webhooks::{AttemptOutcome, ClaimedDelivery, DeliveryState};
use keyward_core::{Timestamp, WebhookService};
use sha2::Sha256;
use tokio::sync::watch;

use crate::config::WebhookSettings;
use crate::metrics::Metrics;

/// Deliveries leased (and sent concurrently) at a time.
pub const BATCH: u32 = 16;
/// The `key.expiring` scan runs every this many polls (every 30 s by default).
pub const EXPIRY_SCAN_EVERY_POLLS: u64 = 30;
/// Old finished deliveries are deleted every this many polls (every 10 minutes by default).
pub const PRUNE_EVERY_POLLS: u64 = 600;

const REFUSED: &str = "refused: the target is not a public address \
                       (webhooks.allow_private_targets is off)";

type DeliveryClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Body>;

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's bytes.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Whether a webhook may reach `ip` with `webhooks.allow_private_targets` off: not loopback,
/// private, link-local, unspecified, shared (CGNAT), benchmarking, documentation, broadcast,
/// multicast or reserved; IPv6 unique-local and link-local neither, and IPv4 addresses
/// embedded in IPv6 (mapped, NAT64) are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (b & 0xc0) == 64)
                || (a == 198 && (b & 0xfe) == 18)
                || (a == 192 && b == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let octets = v6.octets();
                let embedded =
                    std::net::Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
                return is_public(IpAddr::V4(embedded));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00
                || (segments[0] & 0xffc0) == 0xfe80
                || (segments[0] == 0x2001 && segments[1] == 0x0db8))
        }
    }
}

/// The connector's resolver: the system's, keeping only the addresses a webhook may reach.
#[derive(Clone)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    REFUSED,
                ));
            }
            Ok(addresses.into_iter())
        })
    }
}

/// Sends the deliveries due, on this instance.
#[derive(Clone)]
pub struct Dispatcher {
    service: Arc<WebhookService>,
    metrics: Arc<Metrics>,
    client: DeliveryClient,
    allow_private: bool,
    timeout: Duration,
    poll_interval: Duration,
}

impl Dispatcher {
    pub fn new(
        service: Arc<WebhookService>,
        metrics: Arc<Metrics>,
        settings: &WebhookSettings,
    ) -> Self {
        let timeout = Duration::from_secs(settings.timeout_seconds);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: settings.allow_private_targets,
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            service,
            metrics,
            client,
            allow_private: settings.allow_private_targets,
            timeout,
            poll_interval: Duration::from_millis(settings.poll_interval_ms),
        }
    }

    /// Polls until `stop` turns true; the attempts in flight then finish (each within the
    /// timeout) and are recorded before this returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if polls % EXPIRY_SCAN_EVERY_POLLS == 0 {
                if let Err(error) = self.service.scan_expiring().await {
                    tracing::warn!(%error, "scanning for expiring keys failed; will retry");
                }
            }
            if polls % PRUNE_EVERY_POLLS == PRUNE_EVERY_POLLS / 2 {
                if let Err(error) = self.service.prune().await {
                    tracing::warn!(%error, "deleting old webhook deliveries failed; will retry");
                }
            }
            polls = polls.wrapping_add(1);
            self.send_due().await;
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Leases and sends due deliveries, a batch at a time, until none is due.
    pub async fn send_due(&self) {
        loop {
            let claimed = match self.service.claim_due(BATCH).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "reading due webhook deliveries failed; will retry");
                    return;
                }
            };
            let count = claimed.len();
            let mut attempts = tokio::task::JoinSet::new();
            for delivery in claimed {
                let this = self.clone();
                attempts.spawn(async move { this.deliver(delivery).await });
            }
            while attempts.join_next().await.is_some() {}
            if count < BATCH as usize {
                return;
            }
        }
    }

    async fn deliver(&self, delivery: ClaimedDelivery) {
        let at = self.service.now();
        let outcome = self.attempt(&delivery, at).await;
        match self.service.finish(&delivery, at, outcome).await {
            Ok(state) => {
                self.metrics.webhook_attempt(match state {
                    DeliveryState::Delivered => "delivered",
                    DeliveryState::Pending => "retrying",
                    DeliveryState::Failed => "failed",
                });
                tracing::debug!(
                    delivery_id = %delivery.id,
                    webhook_id = %delivery.webhook_id,
                    state = state.as_str(),
                    "webhook attempt recorded"
                );
            }
            Err(error) => tracing::warn!(
                %error,
                delivery_id = %delivery.id,
                "recording a webhook attempt failed; the delivery is retried when its lease ends"
            ),
        }
    }

    async fn attempt(&self, delivery: &ClaimedDelivery, at: Timestamp) -> AttemptOutcome {
        let started = Instant::now();
        let failed = |error: String| AttemptOutcome::Failed {
            error,
            duration_ms: elapsed_ms(started),
        };
        let Ok(url) = url::Url::parse(&delivery.url) else {
            return failed("the webhook's URL is not valid".into());
        };
        if let Err(reason) = self.check_target(&url).await {
            return failed(reason);
        }
        let signed = delivery
            .secret
            .key_bytes()
            .and_then(|key| signature(&key, delivery.id.as_str(), at.seconds(), &delivery.payload));
        let Some(signed) = signed else {
            tracing::error!(webhook_id = %delivery.webhook_id, "a webhook's stored secret is unreadable");
            return failed("the webhook's secret is unreadable".into());
        };
        let request = axum::http::Request::post(url.as_str())
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .header(
                axum::http::header::USER_AGENT,
                concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", delivery.id.as_str())
            .header("webhook-timestamp", at.seconds().to_string())
            .header("webhook-signature", signed)
            .body(Body::from(delivery.payload.clone()));
        let Ok(request) = request else {
            return failed("the webhook's URL is not valid".into());
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => failed(format!("no answer within {} s", self.timeout.as_secs())),
            Ok(Err(error)) => failed(describe(&error)),
            Ok(Ok(response)) => AttemptOutcome::Answered {
                status: response.status().as_u16(),
                duration_ms: elapsed_ms(started),
            },
        }
    }

    /// The SSRF guard, before connecting: an address literal, or every address a name
    /// resolves to now, must be public (the resolver checks again at connection time).
    async fn check_target(&self, url: &url::Url) -> Result<(), String> {
        if self.allow_private {
            return Ok(());
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) if is_public(IpAddr::V4(ip)) => Ok(()),
            Some(url::Host::Ipv6(ip)) if is_public(IpAddr::V6(ip)) => Ok(()),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Err(REFUSED.into()),
            Some(url::Host::Domain(name)) => {
                let port = url.port_or_known_default().unwrap_or(443);
                let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|_| {
                        format!(
                            "cannot resolve {}",
                            keyward_core::audit::clean_text(name, 100)
                        )
                    })?
                    .collect();
                if addresses.iter().any(|address| is_public(address.ip())) {
                    Ok(())
                } else {
                    Err(REFUSED.into())
                }
            }
            None => Err("the webhook's URL has no host".into()),
        }
    }
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// The innermost cause of a client error ("connection refused"), which says more than
/// hyper's outer "client error (Connect)".
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{error}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's test vectors.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signed = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
