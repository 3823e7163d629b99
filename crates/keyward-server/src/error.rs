//! The one error type of the HTTP layer: [`ApiError`] maps every failure to the SPEC §3 status
//! and stable code. Handlers return it; the request middleware ([`crate::middleware`]) writes
//! the problem+json body, since only it knows the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::policy::RateDecision;
use keyward_core::{AuthFailure, CoreError};
use keyward_proto::{ErrorCode, FieldError};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Option<Vec<FieldError>>,
    /// Logged with the request id on 5xx; never sent.
    pub cause: Option<String>,
    /// For 401: whether a credential was presented (and refused).
    pub credential_presented: bool,
    /// For 429: the `Retry-After` header, in seconds.
    pub retry_after_seconds: Option<u64>,
    /// For a key with a rate limit: the `RateLimit-*` headers.
    pub rate_limit: Option<Box<RateDecision>>,
}

/// What the middleware needs to write the body: carried as a response extension.
#[derive(Debug, Clone)]
pub struct ProblemParts {
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Option<Vec<FieldError>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: None,
            cause: None,
            credential_presented: false,
            retry_after_seconds: None,
            rate_limit: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            errors: Some(errors),
            ..Self::new(
                ErrorCode::ValidationFailed,
                "One or more fields are invalid; see errors.",
            )
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail)
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "The resource does not exist.")
    }

    pub fn internal(cause: impl Into<String>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                ErrorCode::Internal,
                "Something went wrong on our side; the request id identifies it in our logs.",
            )
        }
    }

    pub fn auth(failure: AuthFailure) -> Self {
        let (code, detail, presented) = match failure {
            AuthFailure::Missing => (
                ErrorCode::MissingCredentials,
                "Send an API key (Authorization: Bearer or X-API-Key) or an access token.",
                false,
            ),
            AuthFailure::InvalidToken => (
                ErrorCode::InvalidToken,
                "The token is invalid or its session has ended.",
                true,
            ),
            AuthFailure::TokenExpired => (
                ErrorCode::TokenExpired,
                "The access token has expired; refresh it.",
                true,
            ),
            AuthFailure::InvalidApiKey => (
                ErrorCode::InvalidApiKey,
                "The API key is invalid, expired or revoked.",
                true,
            ),
            AuthFailure::InvalidCredentials => (
                ErrorCode::InvalidCredentials,
                "The email or password is incorrect.",
                false,
            ),
        };
        Self {
            credential_presented: presented,
            ..Self::new(code, detail)
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::Unauthenticated(failure) => Self::auth(failure),
            CoreError::InsufficientScope => Self::new(
                ErrorCode::InsufficientScope,
                "The API key lacks a scope this operation needs.",
            ),
            CoreError::SessionRequired => Self::new(
                ErrorCode::SessionRequired,
                "This operation needs a signed-in session, not an API key.",
            ),
            CoreError::NotFound => Self::not_found(),
            CoreError::AccountDisabled => Self::new(
                ErrorCode::Forbidden,
                "This account is disabled; contact the operator of this service.",
            ),
            CoreError::EmailTaken => Self::new(
                ErrorCode::EmailTaken,
                "An account with this email already exists; log in instead.",
            ),
            CoreError::KeyLimitReached => Self::new(
                ErrorCode::KeyLimitReached,
                "You have reached the maximum number of active API keys; revoke one first.",
            ),
            CoreError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after_seconds: Some(retry_after_seconds),
                ..Self::new(
                    ErrorCode::RateLimited,
                    "Too many attempts; try again after the Retry-After delay.",
                )
            },
            CoreError::KeyRateLimited(decision) => Self {
                retry_after_seconds: Some(decision.retry_after_seconds),
                rate_limit: Some(Box::new(decision)),
                ..Self::new(
                    ErrorCode::RateLimited,
                    "This API key is over its rate limit; try again after the Retry-After delay.",
                )
            },
            CoreError::UsageExceeded => Self::new(
                ErrorCode::UsageExceeded,
                "This API key has no credits left; its owner can add credits or wait for the next refill.",
            ),
            CoreError::Overloaded {
                retry_after_seconds,
            } => Self {
                retry_after_seconds: Some(retry_after_seconds),
                ..Self::new(
                    ErrorCode::Unavailable,
                    "The server is too busy to check passwords right now; try again after the Retry-After delay.",
                )
            },
            CoreError::Validation(errors) => Self::validation(errors),
            CoreError::Unavailable(cause) => Self {
                cause: Some(cause.to_string()),
                ..Self::new(
                    ErrorCode::Unavailable,
                    "The database is unreachable; try again shortly.",
                )
            },
            CoreError::Unexpected(cause) => Self::internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(cause) = &self.cause {
            // Inside the request span: the log line carries the request id.
            tracing::error!(code = self.code.as_str(), %cause, "request failed");
        }
        let mut response = status.into_response();
        let challenge = match self.code {
            ErrorCode::InsufficientScope => Some(r#"Bearer error="insufficient_scope""#),
            _ if status == StatusCode::UNAUTHORIZED && self.credential_presented => {
                Some(r#"Bearer error="invalid_token""#)
            }
            _ if status == StatusCode::UNAUTHORIZED => Some("Bearer"),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(decision) = &self.rate_limit {
            crate::keylimits::set_headers(response.headers_mut(), decision);
        }
        response.extensions_mut().insert(ProblemParts {
            code: self.code,
            detail: self.detail,
            errors: self.errors,
        });
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Marks an error response whose body a handler wrote itself in another standard format (the
/// RFC 6749 errors of the device token endpoint): the middleware leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorBody;
