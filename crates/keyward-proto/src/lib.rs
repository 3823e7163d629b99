//! Keyward wire types: what travels over HTTP between the server and its clients.
//!
//! Everything here is plain data with serde and OpenAPI schemas: request and response bodies
//! ([`RegisterRequest`], [`KeyView`], [`VerifyResponse`]…), the RFC 9457 [`Problem`] body with its
//! stable [`ErrorCode`]s, and the route paths in [`paths`]. The server and every client crate
//! depend on this crate and on nothing of each other, so the contract lives in one place.
//!
//! Secrets in request and response bodies are [`Secret`]s: they serialize as plain strings but
//! print as `[redacted]` in `Debug`, so a logged DTO never shows a password, key or token.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod display;
pub mod paths;

mod device;
mod error;
mod webhooks;
pub use device::{
    DeviceApproveRequest, DeviceCodeRequest, DeviceCodeResponse, DeviceTokenRequest,
    DeviceTokenResponse, OAuthError, DEVICE_CODE_GRANT_TYPE,
};
pub use error::{ErrorCode, FieldError, Problem};
pub use webhooks::{
    CreateWebhookRequest, CreatedWebhook, DeliveryAttemptView, DeliveryList, DeliveryStatus,
    DeliveryView, GithubLeak, GithubLeakLabel, LeakLabel, LeakReportRequest, LeakReportResponse,
    WebhookList, WebhookView,
};

/// A string that must never be printed: passwords, API keys, access and refresh tokens.
///
/// It serializes transparently (it is on the wire as a plain string) but its `Debug` is
/// `[redacted]`, and it has no `Display`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call this only where the value is used (hashed, verified, sent).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A field that tells "absent" (`None`) from `null` (`Some(None)`). Deserialize it with
/// `#[serde(default, deserialize_with = "present")]`: serde alone reads a `null` as `None`.
pub type Nullable<T> = Option<Option<T>>;

fn present<'de, T, D>(deserializer: D) -> Result<Nullable<T>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

// ---------------------------------------------------------------- accounts and sessions

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email; `username` is accepted as a synonym.
    #[serde(default, alias = "username")]
    pub email: Option<String>,
    pub password: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: Secret,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// Revoke every session of the user, not only this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    pub current_password: Secret,
    pub new_password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantRef {
    pub id: String,
    pub name: String,
}

/// A fresh access token and refresh token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub user: UserView,
    pub tenant: TenantView,
    #[serde(flatten)]
    pub tokens: TokenPair,
    /// Present when `keys.create_on_register` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<CreatedKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Session,
    ApiKey,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthInfo {
    pub method: AuthMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub tenant: TenantRef,
    pub auth: AuthInfo,
}

// ---------------------------------------------------------------- API keys

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Absent or `null`: the key never expires; else 1–3650.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<i64>,
    /// Absent: `["admin"]` for a session, the creating key's own scopes for a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// A JSON object up to 4 KiB, returned by verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
    /// At most `requests` per `per_seconds`, on every instance together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// A budget of uses spent by verify and the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsSpec>,
}

/// A key's rate limit: at most `requests` per `per_seconds` (GCRA: the budget refills
/// steadily, and a full budget may be spent at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// 1–1 000 000.
    pub requests: i64,
    /// 1–86 400.
    pub per_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefillInterval {
    /// At 00:00 UTC every day.
    Daily,
    /// At 00:00 UTC on the 1st of every month.
    Monthly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillSpec {
    /// What `remaining` is set to at each refill: 1–1 000 000 000 000.
    pub amount: i64,
    pub interval: RefillInterval,
}

/// A key's credits: what is left, and how it refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsSpec {
    /// 0–1 000 000 000 000.
    pub remaining: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<RefillSpec>,
}

/// `PATCH /v1/keys/{id}`: every field is optional; `null` clears `description`, `meta`,
/// `rate_limit` and `credits`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<String>)]
    pub description: Nullable<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<Object>)]
    pub meta: Nullable<serde_json::Value>,
    /// `false` disables the key (verify answers `DISABLED`) until set back to `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Only a subset of the key's current scopes: scopes can be narrowed, never widened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<RateLimitSpec>)]
    pub rate_limit: Nullable<RateLimitSpec>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<CreditsSpec>)]
    pub credits: Nullable<CreditsSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// An API key as listed: never the key itself nor its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<String>,
    /// `start` + `…` + `end`.
    pub masked: String,
    pub start: String,
    pub end: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub status: KeyStatus,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
    /// `false`: disabled by its owner (verify answers `DISABLED`); `status` is unaffected.
    pub enabled: bool,
    pub rate_limit: Option<RateLimitSpec>,
    /// `remaining` as of this answer (a refill that is due is shown done).
    pub credits: Option<CreditsSpec>,
}

/// A key as created or rotated: the only time the full key is shown. On the wire it is one
/// object: the [`KeyView`] fields and `key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// The full key. It is never shown again.
    pub key: Secret,
}

impl CreatedKey {
    pub fn new(key: Secret, view: KeyView) -> Self {
        Self { view, key }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// 0 (default): the old key is revoked at once; else it expires after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub key: Secret,
    /// Scopes the key must hold (the `read` ⊂ `write` ⊂ `admin` hierarchy applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Credits this check spends (default 1; 0 checks without spending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    NotFound,
    Expired,
    Revoked,
    InsufficientScope,
    Disabled,
    RateLimited,
    UsageExceeded,
}

impl VerifyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::NotFound => "NOT_FOUND",
            Self::Expired => "EXPIRED",
            Self::Revoked => "REVOKED",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
            Self::Disabled => "DISABLED",
            Self::RateLimited => "RATE_LIMITED",
            Self::UsageExceeded => "USAGE_EXCEEDED",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub code: VerifyCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Present (possibly `null`: never expires) whenever the key was found.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub expires_at: Nullable<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
    /// When the key has a rate limit and the check reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitState>,
    /// When the key has credits and the check reached them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsState>,
}

/// A rate limit as a check left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitState {
    /// `requests` of the key's rate limit.
    pub limit: i64,
    /// Requests that could be made at once now.
    pub remaining: i64,
    /// Seconds until the whole budget is back (as the `RateLimit-Reset` header).
    pub reset: i64,
}

/// Credits as a check left them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreditsState {
    pub remaining: i64,
}

// ---------------------------------------------------------------- usage

/// `GET /v1/usage`: the caller's tenant (or one of the caller's keys) over the last `days` UTC
/// days, today included.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    /// First day, `YYYY-MM-DD` (UTC).
    pub from: String,
    /// Last day (today), `YYYY-MM-DD` (UTC).
    pub to: String,
    /// Every metered request, in flight ones included.
    pub executions: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub in_flight: i64,
    /// succeeded / (succeeded + failed), 0–1; `null` when nothing completed.
    pub success_rate: Option<f64>,
    /// Over completed requests; `null` when nothing completed.
    pub avg_duration_ms: Option<f64>,
    /// Oldest first, one per day, zero days included.
    pub days: Vec<UsageDay>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub in_flight: i64,
}

// ---------------------------------------------------------------- service

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
}

/// One public key of `/.well-known/jwks.json` (RFC 8037 OKP key).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One audit-log entry of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    /// `aud_…`; also the cursor of the page after it.
    pub id: String,
    /// `user.registered`, `login.succeeded`, `login.failed`, `session.refresh_reuse_detected`,
    /// `session.logout`, `user.password_changed`, `key.created`, `key.rotated`, `key.revoked`,
    /// `device.approved`, `device.denied`, `user.disabled`, `user.enabled`, `key.leaked`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The user who acted (`usr_…`), `operator` for the operator's commands, or
    /// `leak_report` for a leak report (`key.leaked`).
    pub actor: String,
    /// The user the event is about.
    pub user_id: Option<String>,
    pub tenant_id: String,
    /// The client's address (`trusted_proxies` applied); `null` for operator commands.
    pub client_address: Option<String>,
    /// The client's `User-Agent`, at most 256 characters, control characters replaced by `?`.
    pub user_agent: Option<String>,
    pub key_id: Option<String>,
    pub session_id: Option<String>,
    /// A short note, e.g. which key a rotation replaced.
    pub detail: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// `GET /v1/audit`: a page of the caller's tenant's audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPageResponse {
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted_and_serializes_plain() {
        let secret = Secret::new("hunter2hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            "\"hunter2hunter2\""
        );
        let request = RefreshRequest {
            refresh_token: secret,
        };
        assert!(!format!("{request:?}").contains("hunter2"));
    }

    #[test]
    fn verify_expires_at_tells_null_from_absent() {
        let found: VerifyResponse =
            serde_json::from_str(r#"{"valid": true, "code": "VALID", "expires_at": null}"#)
                .unwrap();
        assert_eq!(found.expires_at, Some(None));
        let missing: VerifyResponse =
            serde_json::from_str(r#"{"valid": false, "code": "NOT_FOUND"}"#).unwrap();
        assert_eq!(missing.expires_at, None);
        let json = serde_json::to_value(&found).unwrap();
        assert!(json.as_object().unwrap().contains_key("expires_at"));
    }

    #[test]
    fn unset_request_fields_are_not_sent() {
        let json = serde_json::to_value(CreateKeyRequest {
            name: "ci".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"name": "ci"}));
    }

    #[test]
    fn a_patch_tells_null_from_absent() {
        let patch: UpdateKeyRequest =
            serde_json::from_value(serde_json::json!({"rate_limit": null, "enabled": false}))
                .unwrap();
        assert_eq!(patch.rate_limit, Some(None));
        assert_eq!(patch.credits, None);
        assert_eq!(patch.enabled, Some(false));
        let json = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rate_limit": null, "enabled": false})
        );
        assert!(
            serde_json::from_value::<UpdateKeyRequest>(serde_json::json!({"id": "x"})).is_err()
        );
    }

    #[test]
    fn created_key_flattens_to_one_object() {
        let view = KeyView {
            id: "key_1".into(),
            name: "ci".into(),
            description: None,
            scopes: vec!["read".into()],
            masked: "kw_abcde…wxyz".into(),
            start: "kw_abcde".into(),
            end: "wxyz".into(),
            created_at: "2026-11-22T10:00:00Z".into(),
            expires_at: None,
            last_used_at: None,
            status: KeyStatus::Active,
            meta: None,
            enabled: true,
            rate_limit: None,
            credits: None,
        };
        let json = serde_json::to_value(CreatedKey::new(Secret::new("kw_x"), view)).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 16);
        assert_eq!(json["id"], "key_1");
        assert_eq!(json["key"], "kw_x");
        assert_eq!(json["status"], "active");
        assert!(json["last_used_at"].is_null());
    }
}
