//! API keys: minting, listing, revoking, rotating, and the verification hot path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use keyward_proto::{
    CreateKeyRequest, CreditsSpec, FieldError, KeyStatus, UpdateKeyRequest, VerifyCode,
};

use crate::audit::{self, AuditEvent, AuditKind};
use crate::clock::{Clock, Timestamp};
use crate::error::{AuthFailure, CoreError, CoreResult};
use crate::hashing::sha256;
use crate::ids::KeyId;
use crate::keycache::{CachedKey, KeyCache, VerifiedKey};
use crate::keyformat::{key_end, key_start, KeyFormat};
use crate::policy::{
    crossed_low, CreditSpend, Credits, KeyRateLimiter, MemoryRateLimiter, RateDecision, RateLimit,
    MAX_COST,
};
use crate::secret::ApiKeySecret;
use crate::store::{ApiKeyRecord, KeyUpdate, NewApiKey, Owner, Store};
use crate::validate::{Description, ExpiresInDays, KeyMeta, KeyName, Scopes};
use crate::webhooks::{credits_low_data, key_event_data, EventType, WebhookService};

/// `last_used_at` is written at most this often per key.
pub const LAST_USED_RESOLUTION_SECONDS: i64 = 60;
/// Longest grace period of a rotation: 30 days.
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub format: KeyFormat,
    pub max_per_user: u32,
    /// Keys the verification cache holds at most; 0 turns it off.
    pub cache_capacity: usize,
}

/// A parsed create-key request.
#[derive(Debug, Clone)]
pub struct NewKeyInput {
    pub name: KeyName,
    pub description: Option<Description>,
    pub expires_in_days: Option<ExpiresInDays>,
    pub scopes: Option<Scopes>,
    pub meta: Option<KeyMeta>,
    pub rate_limit: Option<RateLimit>,
    /// Checked; turned into [`Credits`] when the key is made.
    pub credits: Option<CreditsSpec>,
}

/// Checks a request's credits; the time only matters to a refill's period.
fn parse_credits(spec: CreditsSpec) -> Result<CreditsSpec, String> {
    Credits::parse(spec, Timestamp(0)).map(|_| spec)
}

impl NewKeyInput {
    /// Parses every field, collecting all the errors.
    pub fn parse(request: CreateKeyRequest) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut check = |field: &str, result: Result<(), String>| {
            if let Err(message) = result {
                errors.push(FieldError::new(field, message));
            }
        };
        let name = KeyName::parse(&request.name);
        check("name", name.as_ref().map(|_| ()).map_err(Clone::clone));
        let description = request
            .description
            .as_deref()
            .map(Description::parse)
            .transpose();
        check(
            "description",
            description.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let expires = request
            .expires_in_days
            .map(ExpiresInDays::parse)
            .transpose();
        check(
            "expires_in_days",
            expires.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let scopes = request.scopes.as_deref().map(Scopes::parse).transpose();
        check("scopes", scopes.as_ref().map(|_| ()).map_err(Clone::clone));
        let meta = request.meta.map(KeyMeta::parse).transpose();
        check("meta", meta.as_ref().map(|_| ()).map_err(Clone::clone));
        let rate_limit = request.rate_limit.map(RateLimit::parse).transpose();
        check(
            "rate_limit",
            rate_limit.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let credits = request.credits.map(parse_credits).transpose();
        check(
            "credits",
            credits.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        match (
            name,
            description,
            expires,
            scopes,
            meta,
            rate_limit,
            credits,
        ) {
            (
                Ok(name),
                Ok(description),
                Ok(expires_in_days),
                Ok(scopes),
                Ok(meta),
                Ok(rate_limit),
                Ok(credits),
            ) if errors.is_empty() => Ok(Self {
                name,
                description,
                expires_in_days,
                scopes,
                meta,
                rate_limit,
                credits,
            }),
            _ => Err(errors),
        }
    }
}

/// A parsed `PATCH` of a key.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdateInput {
    pub name: Option<KeyName>,
    pub description: Option<Option<Description>>,
    pub meta: Option<Option<KeyMeta>>,
    pub enabled: Option<bool>,
    pub scopes: Option<Scopes>,
    pub rate_limit: Option<Option<RateLimit>>,
    pub credits: Option<Option<CreditsSpec>>,
}

impl KeyUpdateInput {
    /// Parses every field, collecting all the errors.
    pub fn parse(request: UpdateKeyRequest) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        fn keep<T>(
            errors: &mut Vec<FieldError>,
            field: &str,
            result: Result<T, String>,
        ) -> Option<T> {
            result
                .map_err(|message| errors.push(FieldError::new(field, message)))
                .ok()
        }
        let name = request
            .name
            .map(|name| keep(&mut errors, "name", KeyName::parse(&name)));
        let description = request.description.map(|description| {
            keep(
                &mut errors,
                "description",
                description.as_deref().map(Description::parse).transpose(),
            )
        });
        let meta = request
            .meta
            .map(|meta| keep(&mut errors, "meta", meta.map(KeyMeta::parse).transpose()));
        let scopes = request
            .scopes
            .map(|scopes| keep(&mut errors, "scopes", Scopes::parse(&scopes)));
        let rate_limit = request.rate_limit.map(|limit| {
            keep(
                &mut errors,
                "rate_limit",
                limit.map(RateLimit::parse).transpose(),
            )
        });
        let credits = request.credits.map(|credits| {
            keep(
                &mut errors,
                "credits",
                credits.map(parse_credits).transpose(),
            )
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        // Every `Some(None)` left is a field that failed, and those returned above.
        Ok(Self {
            name: name.flatten(),
            description: description.flatten(),
            meta: meta.flatten(),
            enabled: request.enabled,
            scopes: scopes.flatten(),
            rate_limit: rate_limit.flatten(),
            credits: credits.flatten(),
        })
    }

    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.meta.is_none()
            && self.enabled.is_none()
            && self.scopes.is_none()
            && self.rate_limit.is_none()
            && self.credits.is_none()
    }

    /// The fields it changes, for the audit log.
    fn fields(&self) -> String {
        [
            ("name", self.name.is_some()),
            ("description", self.description.is_some()),
            ("meta", self.meta.is_some()),
            ("enabled", self.enabled.is_some()),
            ("scopes", self.scopes.is_some()),
            ("rate_limit", self.rate_limit.is_some()),
            ("credits", self.credits.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(field, _)| *field)
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// What one use of a key spends: rate-limit requests and credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub requests: u32,
    pub credits: i64,
}

impl Charge {
    /// A request to this API with the key as its credential: rate-limited, spends no credits.
    pub const API: Self = Self {
        requests: 1,
        credits: 0,
    };
    /// A request through the gateway: one request and one credit.
    pub const GATEWAY: Self = Self {
        requests: 1,
        credits: 1,
    };

    /// A verify call spending `cost` credits (default 1). A cost of 0 checks without
    /// spending anything, rate limit included.
    pub fn verify(cost: Option<i64>) -> CoreResult<Self> {
        let cost = cost.unwrap_or(1);
        if !(0..=MAX_COST).contains(&cost) {
            return Err(CoreError::field(
                "cost",
                format!("must be an integer from 0 to {MAX_COST}"),
            ));
        }
        Ok(Self {
            requests: u32::from(cost > 0),
            credits: cost,
        })
    }
}

/// A key accepted as a credential.
#[derive(Debug, Clone)]
pub struct AuthenticatedKey {
    pub key: VerifiedKey,
    /// Its rate limit after this request, when it has one.
    pub rate_limit: Option<RateDecision>,
}

/// The outcome of a verification.
#[derive(Debug, Clone)]
pub struct Verification {
    pub code: VerifyCode,
    /// The key, when one was found (whatever the code).
    pub key: Option<VerifiedKey>,
    /// The key's rate limit after this check, when it has one and the check reached it.
    pub rate_limit: Option<RateDecision>,
    /// The key's credits left after this check, when it has credits and the check reached them.
    pub credits: Option<i64>,
}

impl Verification {
    fn of(code: VerifyCode, key: Option<VerifiedKey>) -> Self {
        Self {
            code,
            key,
            rate_limit: None,
            credits: None,
        }
    }
}

pub struct KeyService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: KeySettings,
    cache: Arc<KeyCache>,
    last_used: Mutex<LastUsed>,
    limiter: Arc<dyn KeyRateLimiter>,
    /// Where key events go (`set_webhooks`); none in tools that run no dispatcher.
    webhooks: OnceLock<Arc<WebhookService>>,
}

/// Debounces `last_used_at`: verification only notes a use here; [`KeyService::flush_last_used`]
/// writes the notes in one batch.
#[derive(Default)]
struct LastUsed {
    pending: HashMap<KeyId, Timestamp>,
    written: HashMap<KeyId, Timestamp>,
}

impl KeyService {
    /// The verification cache starts disabled: [`Store::watch_key_changes`], which the server
    /// starts, enables it once it follows the key changes of every instance.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: KeySettings) -> Self {
        let cache = Arc::new(KeyCache::new(settings.cache_capacity, true));
        Self {
            store,
            clock,
            settings,
            cache,
            last_used: Mutex::new(LastUsed::default()),
            limiter: Arc::new(MemoryRateLimiter::default()),
            webhooks: OnceLock::new(),
        }
    }

    /// Counts rate limits with `limiter` instead of this instance's memory.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn KeyRateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The rate limiter, for the once-a-second pruning.
    pub fn rate_limiter(&self) -> &Arc<dyn KeyRateLimiter> {
        &self.limiter
    }

    /// Sends this service's key events (`key.created`, `key.revoked`, `key.rotated`,
    /// `credits.low`) and those of the services built on it to `webhooks`. Set once, at
    /// start-up.
    pub fn set_webhooks(&self, webhooks: Arc<WebhookService>) {
        let _ = self.webhooks.set(webhooks);
    }

    /// Queues a webhook event for `owner` (see [`WebhookService::emit`]); nothing without
    /// webhooks.
    pub async fn emit(&self, owner: &Owner, kind: EventType, data: serde_json::Value) {
        if let Some(webhooks) = self.webhooks.get() {
            webhooks.emit(owner, kind, data).await;
        }
    }

    /// The verification cache, for the store's change feed and for `/metrics`.
    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    pub fn max_per_user(&self) -> u32 {
        self.settings.max_per_user
    }

    pub fn format(&self) -> &KeyFormat {
        &self.settings.format
    }

    pub fn status(&self, key: &ApiKeyRecord) -> KeyStatus {
        status_at(key, self.clock.now())
    }

    /// A key's credits as a client sees them now (a due refill shown done).
    pub fn credits(&self, key: &ApiKeyRecord) -> Option<CreditsSpec> {
        key.credits.map(|credits| credits.spec_at(self.clock.now()))
    }

    /// Builds a new key for `owner` (not yet stored). `creator` is the calling key's scopes,
    /// `None` for a session: a key may only mint keys within its own scopes.
    pub fn prepare(
        &self,
        owner: Owner,
        creator: Option<&Scopes>,
        input: NewKeyInput,
    ) -> CoreResult<(NewApiKey, ApiKeySecret)> {
        let scopes = match (input.scopes, creator) {
            (Some(requested), Some(creator)) if !creator.grants_all(&requested) => {
                return Err(CoreError::InsufficientScope)
            }
            (Some(requested), _) => requested,
            (None, Some(creator)) => creator.clone(),
            (None, None) => Scopes::admin(),
        };
        let now = self.clock.now();
        let secret = self.settings.format.generate();
        let key = NewApiKey {
            id: KeyId::generate(),
            owner,
            key_hash: sha256(secret.expose()),
            start: key_start(secret.expose()),
            end: key_end(secret.expose()),
            name: input.name,
            description: input.description,
            scopes,
            meta: input.meta,
            created_at: now,
            expires_at: input.expires_in_days.map(|days| now.plus_days(days.days())),
            expires_in_days: input.expires_in_days.map(ExpiresInDays::days),
            enabled: true,
            rate_limit: input.rate_limit,
            credits: input
                .credits
                .map(|spec| Credits::parse(spec, now))
                .transpose()
                .map_err(|message| CoreError::field("credits", message))?,
        };
        Ok((key, secret))
    }

    #[tracing::instrument(skip_all, fields(user_id = %owner.user_id))]
    pub async fn create(
        &self,
        owner: Owner,
        creator: Option<&Scopes>,
        input: NewKeyInput,
    ) -> CoreResult<(ApiKeyRecord, ApiKeySecret)> {
        let (key, secret) = self.prepare(owner, creator, input)?;
        let record = record_of(&key);
        let now = self.clock.now();
        if !self
            .store
            .insert_key(key, self.settings.max_per_user, now)
            .await?
        {
            return Err(CoreError::KeyLimitReached);
        }
        let owner = &record.owner;
        audit::record(
            &*self.store,
            AuditEvent::new(AuditKind::KeyCreated, &owner.tenant_id, &owner.user_id, now)
                .key(&record.id),
        )
        .await;
        self.emit(
            owner,
            EventType::KeyCreated,
            key_event_data(&record.id, owner, record.name.as_str()),
        )
        .await;
        Ok((record, secret))
    }

    pub async fn list(
        &self,
        owner: &Owner,
        include_revoked: bool,
    ) -> CoreResult<Vec<ApiKeyRecord>> {
        Ok(self.store.list_keys(owner, include_revoked).await?)
    }

    pub async fn get(&self, owner: &Owner, id: &KeyId) -> CoreResult<ApiKeyRecord> {
        self.store
            .find_key(owner, id)
            .await?
            .ok_or(CoreError::NotFound)
    }

    pub async fn revoke(&self, owner: &Owner, id: &KeyId) -> CoreResult<()> {
        let now = self.clock.now();
        match self.store.revoke_key(owner, id, now).await? {
            Some(hash) => {
                self.cache.invalidate(&hash);
                audit::record(
                    &*self.store,
                    AuditEvent::new(AuditKind::KeyRevoked, &owner.tenant_id, &owner.user_id, now)
                        .key(id),
                )
                .await;
                if self.webhooks.get().is_some() {
                    // The name, for the event: the revoke statement answers only the hash.
                    let key = self.store.find_key(owner, id).await.ok().flatten();
                    let name = key.as_ref().map_or("", |key| key.name.as_str());
                    self.emit(
                        owner,
                        EventType::KeyRevoked,
                        key_event_data(id, owner, name),
                    )
                    .await;
                }
                Ok(())
            }
            None => Err(CoreError::NotFound),
        }
    }

    /// A new key with the old one's name, description, scopes and meta; the old one is revoked
    /// (grace 0) or expires after the grace period.
    #[tracing::instrument(skip_all, fields(key_id = %id))]
    pub async fn rotate(
        &self,
        owner: &Owner,
        creator: Option<&Scopes>,
        id: &KeyId,
        grace_period_seconds: i64,
    ) -> CoreResult<(ApiKeyRecord, ApiKeySecret)> {
        if !(0..=MAX_GRACE_PERIOD_SECONDS).contains(&grace_period_seconds) {
            return Err(CoreError::field(
                "grace_period_seconds",
                format!("must be an integer from 0 to {MAX_GRACE_PERIOD_SECONDS}"),
            ));
        }
        let old = self.get(owner, id).await?;
        if creator.is_some_and(|creator| !creator.grants_all(&old.scopes)) {
            return Err(CoreError::InsufficientScope);
        }
        let now = self.clock.now();
        if status_at(&old, now) != KeyStatus::Active {
            return Err(CoreError::field("id", "only an active key can be rotated"));
        }
        // The new key starts enabled only if the old one was.
        let enabled = old.enabled;
        let input = NewKeyInput {
            name: old.name.clone(),
            description: old.description.clone(),
            expires_in_days: old
                .expires_in_days
                .and_then(|d| ExpiresInDays::parse(d).ok()),
            scopes: Some(old.scopes.clone()),
            meta: old.meta.clone(),
            rate_limit: old.rate_limit,
            credits: old.credits.map(|credits| credits.spec_at(now)),
        };
        let (mut new, secret) = self.prepare(owner.clone(), None, input)?;
        new.enabled = enabled;
        let record = record_of(&new);
        let old_expires_at = (grace_period_seconds > 0).then(|| {
            let end = now.plus_seconds(grace_period_seconds);
            old.expires_at.map_or(end, |current| current.min(end))
        });
        let Some(old_hash) = self
            .store
            .rotate_key(&old.id, new, old_expires_at, now)
            .await?
        else {
            // Revoked by a concurrent request between our read and the rotation.
            return Err(CoreError::field("id", "only an active key can be rotated"));
        };
        self.cache.invalidate(&old_hash);
        let detail = match old_expires_at {
            None => format!("replaces {}, revoked", old.id),
            Some(at) => format!("replaces {}, expiring {}", old.id, at.to_rfc3339()),
        };
        audit::record(
            &*self.store,
            AuditEvent::new(AuditKind::KeyRotated, &owner.tenant_id, &owner.user_id, now)
                .key(&record.id)
                .detail(&detail),
        )
        .await;
        let mut data = key_event_data(&old.id, owner, old.name.as_str());
        data["new_key_id"] = record.id.as_str().into();
        self.emit(owner, EventType::KeyRotated, data).await;
        Ok((record, secret))
    }

    /// The verification hot path: a format check with no I/O, then the cache, else one indexed
    /// read. It never writes: a use is only noted in memory for [`Self::flush_last_used`].
    /// Policies are not applied: see [`Self::check`].
    #[tracing::instrument(skip_all)]
    pub async fn verify(&self, presented: &str, required: &Scopes) -> CoreResult<Verification> {
        let not_found = Verification::of(VerifyCode::NotFound, None);
        if !self.settings.format.matches(presented) {
            return Ok(not_found);
        }
        let hash = sha256(presented);
        let now = self.clock.now();
        // From memory, or one read that is then kept (unless a key changed meanwhile).
        let (key, entry, last_used_at) = match self.cache.get(&hash) {
            Some(entry) => (entry.verified(), Some(entry), None),
            None => {
                let generation = self.cache.generation();
                let Some(record) = self.store.find_key_by_hash(&hash).await? else {
                    return Ok(not_found);
                };
                if !record.key_hash.ct_eq(&hash) {
                    return Ok(not_found);
                }
                let entry = self.cache.insert(&hash, &record, generation);
                let last_used_at = record.last_used_at;
                (VerifiedKey::from(record), entry, last_used_at)
            }
        };
        Ok(self.conclude(key, entry, last_used_at, required, now))
    }

    /// [`Self::verify`], then the key's policies: its rate limit counts `charge.requests` and
    /// its credits spend `charge.credits`. A key with no policy costs nothing more.
    pub async fn check(
        &self,
        presented: &str,
        required: &Scopes,
        charge: Charge,
    ) -> CoreResult<Verification> {
        let verification = self.verify(presented, required).await?;
        self.enforce(verification, charge).await
    }

    /// Applies the key's rate limit, then its credits, to a valid verification.
    async fn enforce(
        &self,
        mut verification: Verification,
        charge: Charge,
    ) -> CoreResult<Verification> {
        let Some(key) = verification.key.as_ref() else {
            return Ok(verification);
        };
        if verification.code != VerifyCode::Valid {
            return Ok(verification);
        }
        if let (Some(limit), true) = (key.rate_limit, charge.requests > 0) {
            let decision = self.limiter.check(&key.id, limit, charge.requests).await?;
            verification.rate_limit = Some(decision);
            if !decision.allowed {
                verification.code = VerifyCode::RateLimited;
                return Ok(verification);
            }
        }
        if key.metered && charge.credits > 0 {
            let now = self.clock.now();
            match self
                .store
                .spend_credits(&key.id, charge.credits, now)
                .await?
            {
                CreditSpend::Spent {
                    remaining,
                    reference,
                } => {
                    verification.credits = Some(remaining);
                    if crossed_low(remaining + charge.credits, remaining, reference) {
                        self.announce_credits_low(&key.owner, &key.id, remaining);
                    }
                }
                CreditSpend::Exhausted { remaining } => {
                    verification.credits = Some(remaining);
                    verification.code = VerifyCode::UsageExceeded;
                }
                // The credits were removed since the cache read the key.
                CreditSpend::Unlimited => {}
            }
        }
        Ok(verification)
    }

    /// Queues `credits.low` in the background: the verification that crossed the line does not
    /// wait for the key's name to be read or the event to be written.
    fn announce_credits_low(&self, owner: &Owner, id: &KeyId, remaining: i64) {
        let Some(webhooks) = self.webhooks.get().cloned() else {
            return;
        };
        let (store, owner, id) = (self.store.clone(), owner.clone(), id.clone());
        tokio::spawn(async move {
            let name = match store.find_key(&owner, &id).await {
                Ok(Some(key)) => key.name.as_str().to_owned(),
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(%error, key_id = %id, "credits.low: reading the key failed");
                    return;
                }
            };
            let data = credits_low_data(&id, &owner, &name, remaining);
            webhooks.emit(&owner, EventType::CreditsLow, data).await;
        });
    }

    /// [`Self::check`] from this instance's memory only: `None` when answering would need
    /// I/O (the key is not cached, or has credits, or a rate limit counted elsewhere), or the
    /// presented string is not even of the key format. For callers that must not reach the
    /// database, such as an address throttled for failed checks.
    pub fn check_cached(
        &self,
        presented: &str,
        required: &Scopes,
        charge: Charge,
    ) -> Option<Verification> {
        if !self.settings.format.matches(presented) {
            return None;
        }
        let entry = self.cache.get(&sha256(presented))?;
        let key = entry.verified();
        let spends = key.metered && charge.credits > 0;
        let limited = key.rate_limit.is_some() && charge.requests > 0;
        if spends {
            return None;
        }
        let mut verification = self.conclude(key, Some(entry), None, required, self.clock.now());
        if let (VerifyCode::Valid, Some(key)) = (verification.code, verification.key.as_ref()) {
            if let (Some(limit), true) = (key.rate_limit, limited) {
                let decision = self.limiter.check_now(&key.id, limit, charge.requests)?;
                verification.rate_limit = Some(decision);
                if !decision.allowed {
                    verification.code = VerifyCode::RateLimited;
                }
            }
        }
        Some(verification)
    }

    /// The verdict on a found key, and its use noted when valid.
    fn conclude(
        &self,
        key: VerifiedKey,
        entry: Option<Arc<CachedKey>>,
        last_used_at: Option<Timestamp>,
        required: &Scopes,
        now: Timestamp,
    ) -> Verification {
        let code = match status(key.revoked_at, key.expires_at, now) {
            KeyStatus::Revoked => VerifyCode::Revoked,
            KeyStatus::Expired => VerifyCode::Expired,
            KeyStatus::Active if !key.enabled => VerifyCode::Disabled,
            KeyStatus::Active if !key.scopes.grants_all(required) => VerifyCode::InsufficientScope,
            KeyStatus::Active => VerifyCode::Valid,
        };
        if code == VerifyCode::Valid {
            match entry {
                // The entry keeps the once-a-minute promise for a cached key.
                Some(entry) => {
                    if entry.note_use(now, LAST_USED_RESOLUTION_SECONDS) {
                        self.queue_use(&key.id, now);
                    }
                }
                None => self.note_use(&key.id, last_used_at, now),
            }
        }
        Verification::of(code, Some(key))
    }

    /// A key presented as a credential to this API: valid (its rate limit counted), else the
    /// refusal.
    pub async fn authenticate(&self, presented: &str) -> CoreResult<AuthenticatedKey> {
        Self::accepted(
            self.check(presented, &Scopes::default(), Charge::API)
                .await?,
        )
    }

    /// The key of a valid verification (with its rate limit, if any), else `invalid_api_key`,
    /// or the rate limit or credits it ran out of.
    pub fn accepted(verification: Verification) -> CoreResult<AuthenticatedKey> {
        match (verification.code, verification.key) {
            (VerifyCode::Valid, Some(key)) => Ok(AuthenticatedKey {
                key,
                rate_limit: verification.rate_limit,
            }),
            (VerifyCode::RateLimited, Some(_)) => match verification.rate_limit {
                Some(decision) => Err(CoreError::KeyRateLimited(decision)),
                None => Err(CoreError::Unauthenticated(AuthFailure::InvalidApiKey)),
            },
            (VerifyCode::UsageExceeded, Some(_)) => Err(CoreError::UsageExceeded),
            _ => Err(CoreError::Unauthenticated(AuthFailure::InvalidApiKey)),
        }
    }

    /// Changes a key of `owner`. `creator` is the calling key's scopes (`None` for a session):
    /// a key may only change keys whose scopes it holds. Scopes may only narrow.
    #[tracing::instrument(skip_all, fields(key_id = %id))]
    pub async fn update(
        &self,
        owner: &Owner,
        creator: Option<&Scopes>,
        id: &KeyId,
        input: KeyUpdateInput,
    ) -> CoreResult<ApiKeyRecord> {
        let old = self.get(owner, id).await?;
        if creator.is_some_and(|creator| !creator.grants_all(&old.scopes)) {
            return Err(CoreError::InsufficientScope);
        }
        if old.revoked_at.is_some() {
            return Err(CoreError::field("id", "a revoked key cannot be changed"));
        }
        if let Some(scopes) = &input.scopes {
            if !old.scopes.grants_all(scopes) {
                return Err(CoreError::field(
                    "scopes",
                    "scopes can only be narrowed: every scope must already be granted by the key's own",
                ));
            }
        }
        if input.is_empty() {
            return Ok(old);
        }
        let now = self.clock.now();
        let credits = input
            .credits
            .map(|credits| credits.map(|spec| Credits::parse(spec, now)).transpose())
            .transpose()
            .map_err(|message| CoreError::field("credits", message))?;
        let update = KeyUpdate {
            name: input.name.clone(),
            description: input.description.clone(),
            meta: input.meta.clone(),
            enabled: input.enabled,
            scopes: input.scopes.clone(),
            rate_limit: input.rate_limit,
            credits,
        };
        let Some(record) = self.store.update_key(owner, id, &update, now).await? else {
            // Revoked by a concurrent request between our read and the update.
            return Err(CoreError::field("id", "a revoked key cannot be changed"));
        };
        self.cache.invalidate(&record.key_hash);
        if input.rate_limit.is_some() {
            self.limiter.forget(id).await;
        }
        audit::record(
            &*self.store,
            AuditEvent::new(AuditKind::KeyUpdated, &owner.tenant_id, &owner.user_id, now)
                .key(id)
                .detail(&format!("changed {}", input.fields())),
        )
        .await;
        Ok(record)
    }

    /// Notes a use of a key that is not cached: `written` keeps the once-a-minute promise.
    fn note_use(&self, id: &KeyId, last_used_at: Option<Timestamp>, now: Timestamp) {
        let fresh = |at: Option<Timestamp>| {
            at.is_some_and(|at| now.seconds() - at.seconds() < LAST_USED_RESOLUTION_SECONDS)
        };
        if fresh(last_used_at) {
            return;
        }
        let Ok(mut last_used) = self.last_used.lock() else {
            return;
        };
        if fresh(last_used.written.get(id).copied()) {
            return;
        }
        last_used.written.insert(id.clone(), now);
        last_used.pending.insert(id.clone(), now);
    }

    /// Queues a use of a cached key, whose entry already decided it is due.
    fn queue_use(&self, id: &KeyId, now: Timestamp) {
        if let Ok(mut last_used) = self.last_used.lock() {
            last_used.pending.insert(id.clone(), now);
        }
    }

    /// Writes the noted uses in one batch; the server calls this every second.
    pub async fn flush_last_used(&self) -> CoreResult<usize> {
        let now = self.clock.now();
        let batch: Vec<_> = {
            let Ok(mut last_used) = self.last_used.lock() else {
                return Ok(0);
            };
            last_used
                .written
                .retain(|_, at| now.seconds() - at.seconds() < LAST_USED_RESOLUTION_SECONDS);
            last_used.pending.drain().collect()
        };
        if !batch.is_empty() {
            self.store.touch_keys(&batch).await?;
        }
        Ok(batch.len())
    }
}

pub(crate) fn status_at(key: &ApiKeyRecord, now: Timestamp) -> KeyStatus {
    status(key.revoked_at, key.expires_at, now)
}

fn status(
    revoked_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> KeyStatus {
    if revoked_at.is_some() {
        KeyStatus::Revoked
    } else if expires_at.is_some_and(|at| at <= now) {
        KeyStatus::Expired
    } else {
        KeyStatus::Active
    }
}

pub(crate) fn record_of(key: &NewApiKey) -> ApiKeyRecord {
    ApiKeyRecord {
        id: key.id.clone(),
        owner: key.owner.clone(),
        key_hash: key.key_hash.clone(),
        start: key.start.clone(),
        end: key.end.clone(),
        name: key.name.clone(),
        description: key.description.clone(),
        scopes: key.scopes.clone(),
        meta: key.meta.clone(),
        created_at: key.created_at,
        expires_at: key.expires_at,
        expires_in_days: key.expires_in_days,
        last_used_at: None,
        revoked_at: None,
        enabled: key.enabled,
        rate_limit: key.rate_limit,
        credits: key.credits,
    }
}
