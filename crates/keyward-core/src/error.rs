//! The core's small semantic error; the server maps it to status and code in one place.

use keyward_proto::FieldError;

use crate::store::StoreError;

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential was presented.
    Missing,
    /// A JWT that is malformed, badly signed, of the wrong alg/iss/aud, or of a revoked session.
    InvalidToken,
    /// A JWT past its `exp`.
    TokenExpired,
    /// An API key that is malformed, unknown, expired or revoked.
    InvalidApiKey,
    /// Login failed: unknown email or wrong password, told apart by nobody.
    InvalidCredentials,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("authentication failed: {0:?}")]
    Unauthenticated(AuthFailure),
    #[error("the credential lacks a needed scope")]
    InsufficientScope,
    #[error("this operation needs a session, not an API key")]
    SessionRequired,
    #[error("not found")]
    NotFound,
    /// The user was disabled by an operator (`keyward admin disable-user`).
    #[error("account disabled")]
    AccountDisabled,
    #[error("email already registered")]
    EmailTaken,
    #[error("active key limit reached")]
    KeyLimitReached,
    /// Too many attempts; try again after this many seconds.
    #[error("rate limited")]
    RateLimited { retry_after_seconds: u64 },
    /// An API key over its own rate limit.
    #[error("key rate limited")]
    KeyRateLimited(crate::policy::RateDecision),
    /// An API key out of credits.
    #[error("key out of credits")]
    UsageExceeded,
    /// The server is too busy for this request (the password hashing queue is full); try
    /// again after this many seconds.
    #[error("overloaded")]
    Overloaded { retry_after_seconds: u64 },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl CoreError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for CoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable(error),
            StoreError::Conflict(_) | StoreError::Other(_) => Self::Unexpected(error.to_string()),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
