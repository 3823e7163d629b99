//! Keyward's domain: everything that decides, nothing that speaks HTTP or SQL.
//!
//! - Validated types: [`Email`], [`KeyName`], [`Scope`], [`Scopes`], [`KeyMeta`]… each built only
//!   through `parse`, so a value of the type is valid by construction.
//! - Secrets: [`Password`], [`ApiKeySecret`], [`RefreshToken`] redact themselves in `Debug`.
//! - [`KeyFormat`]: generation and offline checking (prefix, alphabet, length, CRC32) of API keys.
//! - [`PasswordHasher`]: argon2id off the async runtime with bounded concurrency.
//! - [`TokenSigner`]: EdDSA access tokens and the JWKS.
//! - The services, [`AccountService`], [`KeyService`] and [`DeviceService`] (the RFC 8628
//!   device grant, with its parsed [`UserCode`]), over the [`store`] traits that
//!   `keyward-store` implements for each database.
//! - [`UsageService`]: metering through a bounded queue and a batch writer into per-day
//!   counters, and the usage report.
//! - [`WebhookService`] (events queued as delivery rows, `webhooks`) and [`LeakService`]
//!   (reported keys revoked, `leaks`).
//! - [`Clock`]: every "now" comes from here, so tests move time instead of sleeping.

mod accounts;
pub mod audit;
mod clock;
mod device;
mod error;
mod hashing;
mod ids;
mod jwt;
mod keycache;
mod keyformat;
mod keys;
mod leaks;
pub mod policy;
mod profiles;
mod secret;
pub mod store;
mod usage;
mod validate;
pub mod webhooks;

pub use accounts::{
    AccountService, Authenticated, IssuedTokens, RegisterInput, Registered, SessionConfig,
};
pub use clock::{Clock, SystemClock, TestClock, Timestamp};
pub use device::{
    DeviceAuthorization, DevicePollError, DeviceService, DeviceSettings, PendingDevice, UserCode,
    DEVICE_KEY_NAME, FAILED_APPROVALS_WINDOW_SECONDS, MAX_FAILED_APPROVALS, SLOW_DOWN_SECONDS,
    USER_CODE_ALPHABET,
};
pub use error::{AuthFailure, CoreError, CoreResult};
pub use hashing::{sha256, PasswordHasher, PasswordHasherConfig, TokenHash};
pub use ids::{AuditEventId, DeliveryId, KeyId, SessionId, TenantId, UserId, WebhookId};
pub use jwt::{rotate_signing_key, AccessClaims, TokenSigner, RETIRED_KEY_GRACE_SECONDS};
pub use keycache::{KeyCache, KeyCacheStats, Preload, VerifiedKey};
pub use keyformat::{KeyAlphabet, KeyFormat, KeyFormatError};
pub use keys::{
    AuthenticatedKey, Charge, KeyService, KeySettings, KeyUpdateInput, NewKeyInput, Verification,
    LAST_USED_RESOLUTION_SECONDS,
};
pub use leaks::{LeakService, LeakSource};
pub use profiles::Profile;
pub use secret::{AccessToken, ApiKeySecret, DeviceCode, Password, RefreshToken};
pub use usage::{
    date_of_day, InFlight, UsageDropped, UsageEvent, UsageOutcome, UsageService, UsageSettings,
    MAX_USAGE_DAYS, SECONDS_PER_DAY,
};
pub use validate::{
    Description, Email, ExpiresInDays, KeyMeta, KeyName, Scope, Scopes, TenantName, UserName,
};
pub use webhooks::{EventType, WebhookService};
