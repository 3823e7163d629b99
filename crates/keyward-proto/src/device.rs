//! The device authorization grant (RFC 8628): the wire types of `/v1/auth/device/*`.
//!
//! The request bodies accept unknown fields (unlike the rest of the API): OAuth client libraries
//! send `client_id` and `scope`, which Keyward does not use.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;

/// The `grant_type` of a device token request (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `POST /v1/auth/device/code`, as JSON or form; the body may be empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeviceCodeRequest {
    /// Shown to the person approving, e.g. `keyward-cli on laptop`; 1–100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceCodeResponse {
    /// The secret the client polls with; never shown to the person.
    pub device_code: Secret,
    /// What the person types: `XXXX-XXXX` from `BCDFGHJKLMNPQRSTVWXZ`.
    pub user_code: String,
    /// `<public_url>/console/device`.
    pub verification_uri: String,
    /// `verification_uri` with `?user_code=XXXX-XXXX`.
    pub verification_uri_complete: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds the client waits between polls.
    pub interval: u64,
}

/// `POST /v1/auth/device/token`, as form (`application/x-www-form-urlencoded`) or JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeviceTokenRequest {
    /// Required; absent answers `invalid_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_code: Option<Secret>,
    /// When present, must be `urn:ietf:params:oauth:grant-type:device_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
}

/// The answer to a poll once the person approved: a fresh API key named `cli`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceTokenResponse {
    /// The full key. It is never shown again.
    pub api_key: Secret,
    pub key_id: String,
    /// Always `api_key`.
    pub token_type: String,
}

/// `POST /v1/auth/device/approve` (session only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceApproveRequest {
    /// As shown by the CLI, any case, with or without the dash.
    pub user_code: String,
    /// `true` approves, `false` denies.
    pub approve: bool,
}

/// An RFC 6749 §5.2 error: the token endpoint's only error format (status 400,
/// `application/json`), so OAuth client libraries understand it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    /// `authorization_pending`, `slow_down`, `access_denied`, `expired_token`, `invalid_grant`,
    /// `invalid_request` or `unsupported_grant_type`.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}
