//! The RFC 9457 problem body and the stable error codes of SPEC §3.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable machine-readable error codes. Clients branch on these, never on `title` or `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    MissingCredentials,
    InvalidToken,
    TokenExpired,
    InvalidApiKey,
    InvalidCredentials,
    InsufficientScope,
    SessionRequired,
    Forbidden,
    NotFound,
    EmailTaken,
    KeyLimitReached,
    MethodNotAllowed,
    PayloadTooLarge,
    ValidationFailed,
    RateLimited,
    UsageExceeded,
    Internal,
    BadGateway,
    GatewayTimeout,
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status this code is always answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::MissingCredentials
            | Self::InvalidToken
            | Self::TokenExpired
            | Self::InvalidApiKey
            | Self::InvalidCredentials => 401,
            Self::InsufficientScope | Self::SessionRequired | Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::EmailTaken | Self::KeyLimitReached => 409,
            Self::PayloadTooLarge => 413,
            Self::ValidationFailed => 422,
            Self::RateLimited | Self::UsageExceeded => 429,
            Self::Internal => 500,
            Self::BadGateway => 502,
            Self::Unavailable => 503,
            Self::GatewayTimeout => 504,
        }
    }

    /// The short human title of the problem body.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidRequest => "Invalid request",
            Self::MissingCredentials => "Missing credentials",
            Self::InvalidToken => "Invalid token",
            Self::TokenExpired => "Token expired",
            Self::InvalidApiKey => "Invalid API Key",
            Self::InvalidCredentials => "Invalid credentials",
            Self::InsufficientScope => "Insufficient scope",
            Self::SessionRequired => "Session required",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::EmailTaken => "Email taken",
            Self::KeyLimitReached => "Key limit reached",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PayloadTooLarge => "Payload too large",
            Self::ValidationFailed => "Validation failed",
            Self::RateLimited => "Rate limited",
            Self::UsageExceeded => "Usage exceeded",
            Self::Internal => "Internal error",
            Self::BadGateway => "Bad gateway",
            Self::GatewayTimeout => "Gateway timeout",
            Self::Unavailable => "Service unavailable",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InsufficientScope => "insufficient_scope",
            Self::SessionRequired => "session_required",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::EmailTaken => "email_taken",
            Self::KeyLimitReached => "key_limit_reached",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValidationFailed => "validation_failed",
            Self::RateLimited => "rate_limited",
            Self::UsageExceeded => "usage_exceeded",
            Self::Internal => "internal",
            Self::BadGateway => "bad_gateway",
            Self::GatewayTimeout => "gateway_timeout",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One invalid field of a 422 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 `application/problem+json` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the `code` says what happened.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: u16,
    pub title: String,
    pub code: ErrorCode,
    pub detail: String,
    /// Equal to the `X-Request-Id` response header.
    pub request_id: String,
    /// Present on 422 `validation_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_strings() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidApiKey,
            ErrorCode::KeyLimitReached,
            ErrorCode::ValidationFailed,
            ErrorCode::Unavailable,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::InvalidApiKey.title(), "Invalid API Key");
        assert_eq!(ErrorCode::InvalidToken.title(), "Invalid token");
        assert_eq!(ErrorCode::KeyLimitReached.status(), 409);
    }
}
