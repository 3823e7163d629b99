//! The storage contract. `keyward-store` implements these traits once per database; nothing in
//! this crate knows SQL.
//!
//! Rules every implementation keeps:
//! - a lookup answers `Ok(None)` only when the row is absent; a database failure is an `Err`;
//! - a unique-constraint violation is [`StoreError::Conflict`], never a generic failure;
//! - every key operation is scoped by its [`Owner`]: another user's key is simply absent;
//! - multi-row changes (registration, rotation) are one transaction.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::hashing::TokenHash;
use crate::ids::{KeyId, SessionId, TenantId, UserId};
use crate::policy::{CreditSpend, Credits, RateDecision, RateLimit};
use crate::validate::{Description, Email, KeyMeta, KeyName, Scopes};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool timed out).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint was violated; the string names what.
    #[error("conflict on {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub name: Option<String>,
    pub password_hash: String,
    pub created_at: Timestamp,
    /// Set by an operator (`keyward admin disable-user`): no sign-in, no session, no key.
    pub disabled_at: Option<Timestamp>,
}

/// What `keyward admin disable-user` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDisabled {
    pub user_id: UserId,
    /// `false` when the user was already disabled (nothing changed but the ends below).
    pub newly_disabled: bool,
    /// Sessions revoked now.
    pub sessions_revoked: u64,
    /// The user's unrevoked keys, each written to the key-change feed so that every instance
    /// drops it from its cache.
    pub keys_stopped: u64,
}

/// What `keyward admin rotate-signing-key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRotation {
    /// The new signing key's `kid`.
    pub kid: String,
    /// Keys that signed until now: they stop signing but keep verifying.
    pub retired: Vec<String>,
    /// Keys retired so long ago that every token they signed has expired: deleted.
    pub dropped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub refresh_token_hash: TokenHash,
    pub created_at: Timestamp,
    /// Absolute end of the session family, whatever its use.
    pub expires_at: Timestamp,
    /// What the session was opened from (a shortened User-Agent).
    pub device: Option<String>,
}

/// A live session as its user sees it on the account page.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: SessionId,
    pub device: Option<String>,
    pub created_at: Timestamp,
    /// The sign-in or the latest refresh: an access token lives minutes, so a session in use
    /// refreshes at least that often.
    pub last_used_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub device: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub hash: TokenHash,
    pub session_id: SessionId,
    pub spent_at: Option<Timestamp>,
}

/// Who owns a key: every key query is scoped by both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user_id: UserId,
    pub tenant_id: TenantId,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: KeyId,
    pub owner: Owner,
    pub key_hash: TokenHash,
    pub start: String,
    pub end: String,
    pub name: KeyName,
    pub description: Option<Description>,
    pub scopes: Scopes,
    pub meta: Option<KeyMeta>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Kept so that rotation can give the new key the same lifetime.
    pub expires_in_days: Option<i64>,
    pub enabled: bool,
    pub rate_limit: Option<RateLimit>,
    pub credits: Option<Credits>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: KeyId,
    pub owner: Owner,
    pub key_hash: TokenHash,
    pub start: String,
    pub end: String,
    pub name: KeyName,
    pub description: Option<Description>,
    pub scopes: Scopes,
    pub meta: Option<KeyMeta>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub expires_in_days: Option<i64>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// `false` once its owner disabled it (`PATCH`); revocation is another matter.
    pub enabled: bool,
    pub rate_limit: Option<RateLimit>,
    pub credits: Option<Credits>,
}

/// A `PATCH` of a key: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    pub name: Option<KeyName>,
    pub description: Option<Option<Description>>,
    pub meta: Option<Option<KeyMeta>>,
    pub enabled: Option<bool>,
    pub scopes: Option<Scopes>,
    pub rate_limit: Option<Option<RateLimit>>,
    pub credits: Option<Option<Credits>>,
}

/// What a new account is made of, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub user: UserRecord,
    pub tenant: TenantRecord,
    pub session: NewSession,
    pub api_key: Option<NewApiKey>,
}

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// The Ed25519 seed (32 bytes). Signing keys are not user secrets to hash: every instance
    /// must be able to sign with them, which is why they live in the shared database.
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Conflict(`email`) when the email is taken.
    async fn create_account(&self, account: NewAccount) -> StoreResult<()>;
    async fn find_user_by_email(&self, email: &Email) -> StoreResult<Option<UserRecord>>;
    async fn find_user(&self, id: &UserId) -> StoreResult<Option<UserRecord>>;
    /// A user and its tenant, in one read (the first `GET /v1/auth/me` or `/v1/tenant` of the
    /// user on an instance; `AccountService::profile` remembers it).
    async fn find_profile(
        &self,
        user: &UserId,
        tenant: &TenantId,
    ) -> StoreResult<Option<(UserRecord, TenantRecord)>>;
    /// Sets the hash and revokes every other session of the user, in one transaction.
    async fn change_password(
        &self,
        user: &UserId,
        password_hash: &str,
        keep_session: &SessionId,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Replaces the hash of `user` with a stronger one of the same password, only if it is
    /// still `old_hash` (a password change in between wins). `false` when it was not.
    async fn upgrade_password_hash(
        &self,
        user: &UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool>;
    /// Disables the user with this email, revokes all their sessions and records a key change
    /// for each of their unrevoked keys, in one transaction; answers once every live instance
    /// has read those changes (as a revocation does). `None` when no user has this email.
    async fn disable_user(
        &self,
        email: &Email,
        now: Timestamp,
    ) -> StoreResult<Option<UserDisabled>>;
    /// Enables the user with this email again: `Some(true)` when they were disabled,
    /// `Some(false)` when they were not, `None` when no user has this email. Their keys load
    /// again on their next use; ended sessions stay ended.
    async fn enable_user(&self, email: &Email) -> StoreResult<Option<bool>>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;
    async fn find_session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
    /// A refresh token and its session, in one read.
    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<(RefreshTokenRecord, SessionRecord)>>;
    /// Marks `old` spent and stores `new` for the same session, atomically. `false` when `old`
    /// was already spent: of two racing refreshes exactly one gets `true`.
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        new: &TokenHash,
        session: &SessionId,
        now: Timestamp,
    ) -> StoreResult<bool>;
    async fn revoke_session(&self, id: &SessionId, now: Timestamp) -> StoreResult<()>;
    async fn revoke_user_sessions(&self, user: &UserId, now: Timestamp) -> StoreResult<()>;
    /// `user`'s sessions neither revoked nor expired at `now`, most recently used first.
    async fn list_sessions(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionSummary>>;
    /// Revokes `id` if it is a live session of `user`; `false` otherwise.
    async fn revoke_user_session(
        &self,
        user: &UserId,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<bool>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts the key unless its owner already has `max_active` keys that are neither revoked
    /// nor expired at `now`; `false` then. The check and the insert are one statement.
    async fn insert_key(
        &self,
        key: NewApiKey,
        max_active: u32,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Newest first.
    async fn list_keys(
        &self,
        owner: &Owner,
        include_revoked: bool,
    ) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn find_key(&self, owner: &Owner, id: &KeyId) -> StoreResult<Option<ApiKeyRecord>>;
    /// The verification lookup: by hash, any owner.
    async fn find_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKeyRecord>>;
    /// The revoked key's hash; `None` when no such key of this owner exists. Revoking a revoked
    /// key keeps the first time. Other instances hear of it through [`Store::watch_key_changes`].
    async fn revoke_key(
        &self,
        owner: &Owner,
        id: &KeyId,
        now: Timestamp,
    ) -> StoreResult<Option<TokenHash>>;
    /// Inserts `new` and ends `old` (revoked at `now` when `old_expires_at` is `None`, else
    /// expiring then), atomically, and answers the old key's hash. `None` when `old` is not an
    /// active key of this owner.
    async fn rotate_key(
        &self,
        old: &KeyId,
        new: NewApiKey,
        old_expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<Option<TokenHash>>;
    /// Records uses, batched: each `(key, when)` sets `last_used_at`.
    async fn touch_keys(&self, uses: &[(KeyId, Timestamp)]) -> StoreResult<()>;
    /// Applies `update` to a key of this owner that is not revoked, atomically, and tells
    /// every instance (like a revocation). `None` when there is no such key.
    async fn update_key(
        &self,
        owner: &Owner,
        id: &KeyId,
        update: &KeyUpdate,
        now: Timestamp,
    ) -> StoreResult<Option<ApiKeyRecord>>;
    /// Spends `cost` credits of a key in one conditional statement, first refilling them when
    /// the period holding `now` has not been refilled yet. Exact across instances.
    async fn spend_credits(
        &self,
        id: &KeyId,
        cost: i64,
        now: Timestamp,
    ) -> StoreResult<CreditSpend>;
    /// The GCRA step of the database rate limiter: stores the key's new theoretical arrival
    /// time when `cost` requests pass at `now_micros`, in one statement; answers the decision.
    async fn take_rate_limit(
        &self,
        id: &KeyId,
        limit: RateLimit,
        cost: u32,
        now_micros: i64,
    ) -> StoreResult<RateDecision>;
    /// Forgets a key's rate-limit state (its limit changed).
    async fn forget_rate_limit(&self, id: &KeyId) -> StoreResult<()>;
}

/// A device authorization (RFC 8628) as first stored.
#[derive(Debug, Clone)]
pub struct NewDeviceCode {
    pub device_code_hash: TokenHash,
    /// Normalised: 8 characters, no dash.
    pub user_code: String,
    pub client_name: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub interval_seconds: i64,
}

#[derive(Debug, Clone)]
pub struct DeviceCodeRecord {
    pub user_code: String,
    pub client_name: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub interval_seconds: i64,
    pub last_polled_at: Option<Timestamp>,
    /// Who approved it, when approved.
    pub approved_by: Option<Owner>,
    pub approved_at: Option<Timestamp>,
    pub denied_at: Option<Timestamp>,
    pub redeemed_at: Option<Timestamp>,
}

/// What a redemption did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// The code is now redeemed and the key stored, in one transaction.
    Redeemed,
    /// The code was not an approved, unexpired, unredeemed one (another poll won the race).
    NotRedeemable,
    /// The approving user is at the key limit; nothing changed.
    KeyLimitReached,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Conflict when the user code is taken (the caller draws another). Also deletes codes that
    /// expired over `forget_after_seconds` ago.
    async fn insert_device_code(
        &self,
        code: NewDeviceCode,
        forget_after_seconds: i64,
    ) -> StoreResult<()>;
    async fn find_device_code(&self, hash: &TokenHash) -> StoreResult<Option<DeviceCodeRecord>>;
    /// The code whose user code is `user_code` (normalised), whatever its state: for the
    /// console's confirmation page, which shows who asks.
    async fn find_device_code_by_user_code(
        &self,
        user_code: &str,
    ) -> StoreResult<Option<DeviceCodeRecord>>;
    /// Notes a poll at `now`. `true` when it came at least the code's interval after the last
    /// one (or is the first); else `false`, and the interval grows by `slow_down_seconds`.
    /// Decided by the database, so it holds across instances.
    async fn record_device_poll(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        slow_down_seconds: i64,
    ) -> StoreResult<bool>;
    /// Approves (`Some(owner)`) or denies (`None`) the pending, unexpired code `user_code`.
    /// `false` when there is no such code (unknown, expired or already decided).
    async fn decide_device_code(
        &self,
        user_code: &str,
        approver: Option<&Owner>,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Marks the approved code redeemed and inserts `key` (within `max_active`), atomically: of
    /// two racing redemptions exactly one gets [`Redemption::Redeemed`].
    async fn redeem_device_code(
        &self,
        hash: &TokenHash,
        key: NewApiKey,
        max_active: u32,
        now: Timestamp,
    ) -> StoreResult<Redemption>;
    /// Failed approvals of `user` at or after `since`: how many, and the oldest.
    async fn device_approval_failures(
        &self,
        user: &UserId,
        since: Timestamp,
    ) -> StoreResult<(u32, Option<Timestamp>)>;
    /// Records a failed approval, and forgets the user's failures before `forget_before`.
    async fn record_device_approval_failure(
        &self,
        user: &UserId,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<()>;
}

#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    async fn insert_signing_key(&self, key: SigningKeyRecord) -> StoreResult<()>;
    /// In one transaction: retires every signing key not yet retired (at `key.created_at`),
    /// inserts `key` (the one instances sign with from their next reload), and deletes keys
    /// retired before `drop_retired_before`.
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        drop_retired_before: Timestamp,
    ) -> StoreResult<SigningKeyRotation>;
}

/// What a batch adds to one `(tenant, key, day)` usage counter row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    /// The UTC day: Unix seconds / 86 400.
    pub day: i64,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub duration_us_sum: i64,
    pub completed: i64,
}

/// One day's counters, summed over the keys asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDayRecord {
    pub day: i64,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub duration_us_sum: i64,
    pub completed: i64,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds each delta to its row (created when missing), in one transaction. Additive, so
    /// instances writing the same rows at once never lose counts.
    async fn add_usage(&self, deltas: &[UsageDelta]) -> StoreResult<()>;
    /// The tenant's counters for days `from_day..=to_day` (only days with a row), oldest
    /// first; only `key`'s when given.
    async fn usage_by_day(
        &self,
        tenant: &TenantId,
        key: Option<&KeyId>,
        from_day: i64,
        to_day: i64,
    ) -> StoreResult<Vec<UsageDayRecord>>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit_event(&self, event: &crate::audit::AuditEvent) -> StoreResult<()>;
    /// `tenant`'s events older than the event `before` (all when `None`), newest first, at most
    /// `limit`. `None` when `before` is not an event of this tenant.
    async fn list_audit_events(
        &self,
        tenant: &TenantId,
        before: Option<&str>,
        limit: u32,
    ) -> StoreResult<Option<Vec<crate::audit::AuditEvent>>>;
}

/// Everything a Keyward server needs from its database.
#[async_trait]
pub trait Store:
    AccountStore
    + AuditStore
    + SessionStore
    + KeyStore
    + DeviceStore
    + SigningKeyStore
    + UsageStore
    + crate::webhooks::WebhookStore
    + Send
    + Sync
    + 'static
{
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Keeps `cache` in step with the key changes any instance makes in this database, until
    /// the store closes: it enables the cache once it follows the changes, invalidates each
    /// changed key, and renews the cache's lease only while it keeps up. Other instances may
    /// share the database (on either backend), so the cache serves nothing without this.
    fn watch_key_changes(
        &self,
        cache: std::sync::Arc<crate::keycache::KeyCache>,
    ) -> tokio::task::JoinHandle<()>;
    /// Closes the connections (at shutdown); every later call fails as `Unavailable`.
    async fn close(&self);
}
