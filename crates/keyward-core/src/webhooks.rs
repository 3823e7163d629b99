//! Webhooks (SPEC §4): a user's endpoints, the events they subscribe to, and the delivery
//! queue.
//!
//! - [`WebhookService::emit`] is how a service tells of an event ([`EventType`]): one
//!   delivery row per subscribed webhook of the owner, written like an audit event (at most
//!   [`EMIT_TIMEOUT`], a failure logged, never failing the caller). Nothing is sent here.
//! - The deliveries are rows, so they survive a restart and any instance may send them.
//!   [`WebhookService::claim_due`] leases due rows with a conditional UPDATE, so that when
//!   several instances share one database exactly one sends each attempt;
//!   [`WebhookService::finish`] records the attempt and schedules the next one
//!   ([`RETRY_DELAYS_SECONDS`], the Standard Webhooks schedule, about 24 h in all). The
//!   server's dispatcher (`keyward-server/src/webhooks.rs`) does the HTTP and the signing.
//! - [`WebhookService::scan_expiring`] emits `key.expiring` once per key, [`EXPIRY_NOTICE_DAYS`]
//!   before it expires.
//!
//! Payloads carry ids, names and times, never a secret. The signing secret is stored in the
//! clear, since the server must sign with it (SECURITY.md): it authenticates Keyward to the
//! receiver and grants nothing at Keyward.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use keyward_proto::{CreateWebhookRequest, FieldError};
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;

use crate::clock::{Clock, Timestamp};
use crate::error::{CoreError, CoreResult};
use crate::ids::{DeliveryId, KeyId, WebhookId};
use crate::store::{Owner, Store, StoreResult};

/// Webhooks a user may have.
pub const MAX_WEBHOOKS_PER_USER: u32 = 10;
/// Longest target URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// How long an event waits for its delivery rows before going on without them (logged).
pub const EMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// The waits after a failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (Standard
/// Webhooks). The first attempt is immediate, so a delivery gets 8 attempts over ~27 h.
pub const RETRY_DELAYS_SECONDS: [i64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
/// `key.expiring` fires this many days before a key expires.
pub const EXPIRY_NOTICE_DAYS: i64 = 7;
/// How long a claimed delivery stays leased to the instance that claimed it: longer than any
/// attempt (the HTTP timeout is 10 s); an instance that died meanwhile loses it after this.
pub const LEASE_SECONDS: i64 = 120;
/// Delivered and failed deliveries (with their attempts) are kept this long, then deleted.
pub const DELIVERY_RETENTION_DAYS: i64 = 30;
/// Bytes of randomness in a signing secret.
pub const SECRET_BYTES: usize = 32;

/// What happened: the `type` of a payload and the names webhooks subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    KeyCreated,
    KeyRevoked,
    KeyRotated,
    KeyExpiring,
    KeyLeaked,
    CreditsLow,
    SessionReuseDetected,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::KeyCreated,
        EventType::KeyRevoked,
        EventType::KeyRotated,
        EventType::KeyExpiring,
        EventType::KeyLeaked,
        EventType::CreditsLow,
        EventType::SessionReuseDetected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::KeyCreated => "key.created",
            EventType::KeyRevoked => "key.revoked",
            EventType::KeyRotated => "key.rotated",
            EventType::KeyExpiring => "key.expiring",
            EventType::KeyLeaked => "key.leaked",
            EventType::CreditsLow => "credits.low",
            EventType::SessionReuseDetected => "session.reuse_detected",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// A webhook's signing secret: `whsec_` and the base64 of [`SECRET_BYTES`] random bytes. Its
/// `Debug` is redacted and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// The secret as shown once to its owner, and as stored.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the bytes the base64 after `whsec_` stands for. `None` for a stored value
    /// that is not such a secret (the delivery then fails, logged).
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        let encoded = self.0.strip_prefix("whsec_").unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .filter(|bytes| !bytes.is_empty())
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// A parsed create-webhook request.
#[derive(Debug, Clone)]
pub struct NewWebhookInput {
    pub url: String,
    /// Sorted, without duplicates, at least one.
    pub events: Vec<EventType>,
}

impl NewWebhookInput {
    /// Parses every field, collecting all the errors.
    pub fn parse(request: CreateWebhookRequest) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let url = match parse_url(&request.url) {
            Ok(url) => Some(url),
            Err(message) => {
                errors.push(FieldError::new("url", message));
                None
            }
        };
        let mut events = Vec::new();
        if request.events.is_empty() {
            errors.push(FieldError::new("events", "must name at least one event"));
        }
        for name in &request.events {
            match EventType::parse(name) {
                Some(kind) => events.push(kind),
                None => {
                    let known: Vec<&str> = EventType::ALL.iter().map(|k| k.as_str()).collect();
                    errors.push(FieldError::new(
                        "events",
                        format!(
                            "{:?} is not an event; use {}",
                            crate::audit::clean_text(name, 64),
                            known.join(", ")
                        ),
                    ));
                    break;
                }
            }
        }
        events.sort();
        events.dedup();
        match url {
            Some(url) if errors.is_empty() => Ok(Self { url, events }),
            _ => Err(errors),
        }
    }
}

/// An absolute `http`/`https` URL with a host, at most [`MAX_URL_CHARS`], in its normalised
/// form. Where it points is checked at delivery time (the SSRF guard), since a name may resolve
/// elsewhere later.
fn parse_url(text: &str) -> Result<String, String> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let invalid = || "must be an absolute http:// or https:// URL".to_owned();
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid());
    }
    let url = url::Url::parse(text).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".to_owned());
    }
    let normalised = url.to_string();
    if normalised.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    Ok(normalised)
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: WebhookId,
    pub owner: Owner,
    pub url: String,
    pub events: Vec<EventType>,
    pub secret: WebhookSecret,
    pub created_at: Timestamp,
}

/// A webhook as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub owner: Owner,
    pub url: String,
    pub events: Vec<EventType>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub at: Timestamp,
    pub status_code: Option<u16>,
    /// Short and control-free; never a secret.
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event: String,
    pub state: DeliveryState,
    pub created_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
    /// Oldest first.
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event: EventType,
    /// The exact body every attempt sends (the signature covers these bytes).
    pub payload: String,
    pub created_at: Timestamp,
}

/// A delivery leased to this instance for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub url: String,
    pub secret: WebhookSecret,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts_made: u32,
    /// Proves the lease when the attempt is recorded: a delivery whose lease was lost (or
    /// whose webhook was deleted meanwhile) records nothing.
    pub lease: String,
}

/// A key that has just been claimed for its `key.expiring` notice.
#[derive(Debug, Clone)]
pub struct ExpiringKey {
    pub id: KeyId,
    pub owner: Owner,
    pub name: String,
    pub expires_at: Timestamp,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Inserts the webhook unless its owner already has `max_per_user`; `false` then.
    async fn insert_webhook(&self, webhook: NewWebhook, max_per_user: u32) -> StoreResult<bool>;
    /// Oldest first.
    async fn list_webhooks(&self, owner: &Owner) -> StoreResult<Vec<WebhookRecord>>;
    async fn find_webhook(
        &self,
        owner: &Owner,
        id: &WebhookId,
    ) -> StoreResult<Option<WebhookRecord>>;
    /// Deletes the webhook and its deliveries; `false` when it is not the owner's.
    async fn delete_webhook(&self, owner: &Owner, id: &WebhookId) -> StoreResult<bool>;
    /// The owner's webhooks that subscribe to `event`.
    async fn subscribed_webhooks(
        &self,
        owner: &Owner,
        event: EventType,
    ) -> StoreResult<Vec<WebhookId>>;
    /// Queues deliveries, due at once.
    async fn insert_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<()>;
    /// The webhook's deliveries with their attempts, newest first, at most `limit`.
    async fn list_deliveries(
        &self,
        webhook: &WebhookId,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Leases up to `limit` pending deliveries due at `now` whose lease (if any) has run out,
    /// until `lease_until`, under `lease`. Of instances claiming at once, each row goes to one.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        lease: &str,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records `attempt` and moves the delivery to `state` (due again at `next_attempt_at`
    /// when pending), if `lease` still holds it; `false` when it did not.
    async fn record_attempt(
        &self,
        delivery: &DeliveryId,
        lease: &str,
        attempt: &AttemptRecord,
        state: DeliveryState,
        next_attempt_at: Option<Timestamp>,
    ) -> StoreResult<bool>;
    /// Deletes delivered and failed deliveries created before `before`, with their attempts;
    /// how many.
    async fn prune_deliveries(&self, before: Timestamp) -> StoreResult<u64>;
    /// Keys neither revoked nor expired at `now` that expire by `until`, of owners with a
    /// webhook subscribed to `key.expiring`, not yet noticed: each is marked noticed (at `now`) and returned, once across
    /// every instance. At most `limit`.
    async fn claim_expiring_keys(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExpiringKey>>;
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered; 2xx is delivered.
    Answered { status: u16, duration_ms: i64 },
    /// No answer: connection refused, timeout, a refused target (SSRF guard)…
    Failed { error: String, duration_ms: i64 },
}

pub struct WebhookService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl WebhookService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new webhook; its secret is in this answer only.
    #[tracing::instrument(skip_all, fields(user_id = %owner.user_id))]
    pub async fn create(
        &self,
        owner: Owner,
        input: NewWebhookInput,
    ) -> CoreResult<(WebhookRecord, WebhookSecret)> {
        let secret = WebhookSecret::generate();
        let webhook = NewWebhook {
            id: WebhookId::generate(),
            owner,
            url: input.url,
            events: input.events,
            secret: secret.clone(),
            created_at: self.clock.now(),
        };
        let record = WebhookRecord {
            id: webhook.id.clone(),
            owner: webhook.owner.clone(),
            url: webhook.url.clone(),
            events: webhook.events.clone(),
            created_at: webhook.created_at,
        };
        if !self
            .store
            .insert_webhook(webhook, MAX_WEBHOOKS_PER_USER)
            .await?
        {
            return Err(CoreError::field(
                "url",
                format!(
                    "you already have {MAX_WEBHOOKS_PER_USER} webhooks, the most a user may \
                     have; delete one first"
                ),
            ));
        }
        Ok((record, secret))
    }

    pub async fn list(&self, owner: &Owner) -> CoreResult<Vec<WebhookRecord>> {
        Ok(self.store.list_webhooks(owner).await?)
    }

    /// Deletes the webhook; its pending deliveries are never sent.
    pub async fn delete(&self, owner: &Owner, id: &WebhookId) -> CoreResult<()> {
        if self.store.delete_webhook(owner, id).await? {
            Ok(())
        } else {
            Err(CoreError::NotFound)
        }
    }

    /// The owner's webhook's deliveries, newest first.
    pub async fn deliveries(
        &self,
        owner: &Owner,
        id: &WebhookId,
        limit: u32,
    ) -> CoreResult<Vec<DeliveryRecord>> {
        if self.store.find_webhook(owner, id).await?.is_none() {
            return Err(CoreError::NotFound);
        }
        Ok(self.store.list_deliveries(id, limit).await?)
    }

    /// Queues `kind` for every webhook of `owner` that subscribes to it, with `data` (ids,
    /// never secrets) as the payload's `data`. Never fails its caller and waits at most
    /// [`EMIT_TIMEOUT`]: a failure is logged at `error` with the event.
    pub async fn emit(&self, owner: &Owner, kind: EventType, data: serde_json::Value) {
        let now = self.clock.now();
        let outcome = tokio::time::timeout(EMIT_TIMEOUT, self.queue(owner, kind, data, now)).await;
        let error = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        tracing::error!(
            %error,
            event = kind.as_str(),
            tenant_id = %owner.tenant_id,
            user_id = %owner.user_id,
            "queueing a webhook event failed; it will not be delivered"
        );
    }

    async fn queue(
        &self,
        owner: &Owner,
        kind: EventType,
        data: serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let webhooks = self.store.subscribed_webhooks(owner, kind).await?;
        if webhooks.is_empty() {
            return Ok(());
        }
        let payload = serde_json::json!({
            "type": kind.as_str(),
            "timestamp": now.to_rfc3339(),
            "data": data,
        })
        .to_string();
        let deliveries: Vec<NewDelivery> = webhooks
            .into_iter()
            .map(|webhook_id| NewDelivery {
                id: DeliveryId::generate(),
                webhook_id,
                event: kind,
                payload: payload.clone(),
                created_at: now,
            })
            .collect();
        self.store.insert_deliveries(&deliveries).await
    }

    /// Leases up to `limit` due deliveries to this instance for one attempt each.
    pub async fn claim_due(&self, limit: u32) -> CoreResult<Vec<ClaimedDelivery>> {
        let now = self.clock.now();
        let lease = format!(
            "lease_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
        );
        Ok(self
            .store
            .claim_deliveries(now, now.plus_seconds(LEASE_SECONDS), &lease, limit)
            .await?)
    }

    /// Records an attempt and decides what follows: delivered on 2xx; else the next attempt
    /// of the schedule, or failed after the last. The attempt's time is `at`.
    pub async fn finish(
        &self,
        delivery: &ClaimedDelivery,
        at: Timestamp,
        outcome: AttemptOutcome,
    ) -> CoreResult<DeliveryState> {
        let (attempt, delivered) = match outcome {
            AttemptOutcome::Answered {
                status,
                duration_ms,
            } => (
                AttemptRecord {
                    at,
                    status_code: Some(status),
                    error: (!(200..300).contains(&status))
                        .then(|| format!("the receiver answered {status}")),
                    duration_ms,
                },
                (200..300).contains(&status),
            ),
            AttemptOutcome::Failed { error, duration_ms } => (
                AttemptRecord {
                    at,
                    status_code: None,
                    error: Some(crate::audit::clean_text(&error, 200)),
                    duration_ms,
                },
                false,
            ),
        };
        let (state, next) = next_step(delivered, delivery.attempts_made, self.clock.now());
        self.store
            .record_attempt(&delivery.id, &delivery.lease, &attempt, state, next)
            .await?;
        Ok(state)
    }

    /// Deletes finished deliveries older than [`DELIVERY_RETENTION_DAYS`].
    pub async fn prune(&self) -> CoreResult<u64> {
        let before = self.clock.now().plus_days(-DELIVERY_RETENTION_DAYS);
        Ok(self.store.prune_deliveries(before).await?)
    }

    /// Emits `key.expiring` for keys that expire within [`EXPIRY_NOTICE_DAYS`], once each.
    pub async fn scan_expiring(&self) -> CoreResult<usize> {
        let now = self.clock.now();
        let keys = self
            .store
            .claim_expiring_keys(now, now.plus_days(EXPIRY_NOTICE_DAYS), 100)
            .await?;
        for key in &keys {
            self.emit(
                &key.owner,
                EventType::KeyExpiring,
                serde_json::json!({
                    "key_id": key.id.as_str(),
                    "tenant_id": key.owner.tenant_id.as_str(),
                    "user_id": key.owner.user_id.as_str(),
                    "name": key.name,
                    "expires_at": key.expires_at.to_rfc3339(),
                }),
            )
            .await;
        }
        Ok(keys.len())
    }
}

/// After an attempt (the `attempts_made + 1`th): the delivery's state and, when pending, when
/// the next attempt is due.
pub fn next_step(
    delivered: bool,
    attempts_made: u32,
    now: Timestamp,
) -> (DeliveryState, Option<Timestamp>) {
    if delivered {
        return (DeliveryState::Delivered, None);
    }
    match RETRY_DELAYS_SECONDS.get(attempts_made as usize) {
        Some(delay) => (DeliveryState::Pending, Some(now.plus_seconds(*delay))),
        None => (DeliveryState::Failed, None),
    }
}

/// The data of a key event: ids and the name, never the key.
pub fn key_event_data(key_id: &KeyId, owner: &Owner, name: &str) -> serde_json::Value {
    serde_json::json!({
        "key_id": key_id.as_str(),
        "tenant_id": owner.tenant_id.as_str(),
        "user_id": owner.user_id.as_str(),
        "name": name,
    })
}

/// The data of `credits.low`: the key, and the credits it has left.
pub fn credits_low_data(
    key_id: &KeyId,
    owner: &Owner,
    name: &str,
    remaining: i64,
) -> serde_json::Value {
    let mut data = key_event_data(key_id, owner, name);
    data["remaining"] = remaining.into();
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, events: &[&str]) -> CreateWebhookRequest {
        CreateWebhookRequest {
            url: url.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn event_names_round_trip() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("key.deleted"), None);
    }

    #[test]
    fn secrets_are_standard_webhooks_secrets_and_redact() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(secret.key_bytes().map(|b| b.len()), Some(SECRET_BYTES));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
        assert_ne!(WebhookSecret::generate(), secret);
    }

    #[test]
    fn urls_and_events_are_parsed() {
        let input = NewWebhookInput::parse(request(
            "https://example.com/hooks",
            &["key.revoked", "key.created", "key.revoked"],
        ))
        .unwrap();
        assert_eq!(input.url, "https://example.com/hooks");
        assert_eq!(input.events, [EventType::KeyCreated, EventType::KeyRevoked]);
        for bad in [
            "",
            "example.com/hooks",
            "ftp://example.com/",
            "https://",
            "https://user:pass@example.com/",
            "https://exa mple.com/",
            "javascript:alert(1)",
        ] {
            let errors = NewWebhookInput::parse(request(bad, &["key.created"])).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].field, "url", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(NewWebhookInput::parse(request(&long, &["key.created"])).is_err());
        let errors = NewWebhookInput::parse(request("https://example.com", &[])).unwrap_err();
        assert_eq!(errors[0].field, "events");
        let errors =
            NewWebhookInput::parse(request("nope", &["key.created", "key.nope"])).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "events"]);
    }

    #[test]
    fn the_schedule_retries_for_a_day_then_fails() {
        let now = Timestamp(1_000);
        assert_eq!(next_step(true, 3, now), (DeliveryState::Delivered, None));
        assert_eq!(
            next_step(false, 0, now),
            (DeliveryState::Pending, Some(Timestamp(1_005)))
        );
        assert_eq!(
            next_step(false, 1, now),
            (DeliveryState::Pending, Some(Timestamp(1_300)))
        );
        assert_eq!(
            next_step(false, 6, now),
            (DeliveryState::Pending, Some(Timestamp(37_000)))
        );
        assert_eq!(next_step(false, 7, now), (DeliveryState::Failed, None));
        let total: i64 = RETRY_DELAYS_SECONDS.iter().sum();
        assert!(total >= 86_400, "{total}");
    }
}
