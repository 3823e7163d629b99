//! [`Error`]: everything a call can fail with.

use std::error::Error as _;
use std::fmt;
use std::path::PathBuf;

use keyward_proto::{ErrorCode, FieldError};
use serde::Deserialize;

/// What a [`Client`](crate::Client) call returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
///
/// Branch on [`Error::Api`]'s `code` (or [`Error::has_code`]), never on `message`: codes are the
/// stable part of the contract (SPEC §3), messages are for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an RFC 9457 problem body.
    #[error("{code} ({status}): {message}{request}", request = RequestIdSuffix(request_id.as_deref()))]
    Api {
        /// The HTTP status, e.g. `401`.
        status: u16,
        /// The stable error code, e.g. `invalid_api_key` (see [`ErrorCode`]). Kept as the string
        /// the server sent, so a code newer than this crate still reaches the caller.
        code: String,
        /// The problem's `detail`: a sentence for people.
        message: String,
        /// The request id, equal to the response's `X-Request-Id` header (`req_…`).
        request_id: Option<String>,
        /// The invalid fields of a 422 `validation_failed`; empty otherwise.
        errors: Vec<FieldError>,
    },
    /// The request did not complete: connection refused, timeout, TLS… The message names
    /// the URL that failed.
    #[error("{}", TransportMessage(.0))]
    Transport(#[from] reqwest::Error),
    /// The server answered, but not with the JSON this crate expected (e.g. an HTML error page
    /// from a proxy in front of Keyward).
    #[error("could not decode the {status} response: {source}")]
    Decode {
        /// The HTTP status of the undecodable response.
        status: u16,
        /// The `X-Request-Id` header, when there was one.
        request_id: Option<String>,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The base URL given to the [`ClientBuilder`](crate::ClientBuilder) cannot be used.
    #[error("invalid base url {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key id that cannot name a resource (empty, `.` or `..`): refused before sending, since
    /// it would otherwise address another route.
    #[error("invalid key id {0:?}")]
    InvalidKeyId(String),
    /// The credentials file could not be read or written.
    #[error("cannot use the credentials file {}: {source}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not the JSON it should be.
    #[error(
        "the credentials file {} is corrupt ({source}): delete it, then run `keyward login`",
        path.display()
    )]
    CorruptCredentialsFile {
        /// The file.
        path: PathBuf,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// [`Client::refresh`](crate::Client::refresh) was called on a client that holds no
    /// refresh token.
    #[error("the client holds no refresh token: register or log in first")]
    NoRefreshToken,
}

impl Error {
    /// The HTTP status of an answer the server gave, if it gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport(error) => error.status().map(|status| status.as_u16()),
            _ => None,
        }
    }

    /// The stable error code of an [`Error::Api`], e.g. `Some("token_expired")`.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether this is an [`Error::Api`] with `code`.
    pub fn has_code(&self, code: ErrorCode) -> bool {
        self.code() == Some(code.as_str())
    }

    /// The request id of an answer the server gave, for support requests and log searches.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api { request_id, .. } | Self::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Builds the error for a non-2xx answer from its status, `X-Request-Id` header and body.
    pub(crate) fn from_response(
        status: u16,
        header_request_id: Option<String>,
        body: &[u8],
    ) -> Self {
        match serde_json::from_slice::<ProblemBody>(body) {
            Ok(problem) => Self::Api {
                status,
                code: problem.code,
                message: problem.detail.or(problem.title).unwrap_or_default(),
                request_id: problem.request_id.or(header_request_id),
                errors: problem.errors.unwrap_or_default(),
            },
            Err(source) => Self::Decode {
                status,
                request_id: header_request_id,
                source,
            },
        }
    }
}

/// The fields of [`keyward_proto::Problem`] this crate reads, with `code` as a plain string
/// and everything but `code` optional: a code added to the server after this crate was built,
/// or a problem body missing a field, still becomes an [`Error::Api`] rather than a decode
/// failure that would hide the server's answer.
#[derive(Deserialize)]
struct ProblemBody {
    code: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    errors: Option<Vec<FieldError>>,
}

/// `request to <url> failed: <what reqwest says>: <its deepest cause>`: reqwest's own message
/// ("error sending request") hides the useful part in its source chain.
struct TransportMessage<'a>(&'a reqwest::Error);

impl fmt::Display for TransportMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        match error.url() {
            Some(url) => write!(f, "request to {url} failed")?,
            None => f.write_str("request failed")?,
        }
        let mut cause = error.source();
        let mut deepest = None;
        while let Some(inner) = cause {
            deepest = Some(inner);
            cause = inner.source();
        }
        match deepest {
            Some(deepest) => write!(f, ": {deepest}"),
            None if error.is_timeout() => f.write_str(": timed out"),
            None => Ok(()),
        }
    }
}

/// ` [request req_…]`, or nothing when the id is unknown.
struct RequestIdSuffix<'a>(Option<&'a str>);

impl fmt::Display for RequestIdSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " [request {id}]"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_proto::Problem;

    fn problem(code: ErrorCode, detail: &str) -> Vec<u8> {
        serde_json::to_vec(&Problem {
            type_: "about:blank".into(),
            status: code.status(),
            title: code.title().into(),
            code,
            detail: detail.into(),
            request_id: "req_abc123".into(),
            errors: None,
        })
        .unwrap()
    }

    #[test]
    fn api_error_displays_code_status_detail_and_request_id() {
        let body = problem(
            ErrorCode::InvalidApiKey,
            "The API key is invalid, expired or revoked.",
        );
        let error = Error::from_response(401, Some("req_header".into()), &body);
        assert_eq!(
            error.to_string(),
            "invalid_api_key (401): The API key is invalid, expired or revoked. [request req_abc123]"
        );
        assert_eq!(error.status(), Some(401));
        assert_eq!(error.code(), Some("invalid_api_key"));
        assert!(error.has_code(ErrorCode::InvalidApiKey));
        assert!(!error.has_code(ErrorCode::InvalidToken));
        assert_eq!(error.request_id(), Some("req_abc123"));
    }

    #[test]
    fn validation_errors_are_kept() {
        let body = serde_json::json!({
            "type": "about:blank", "status": 422, "title": "Validation failed",
            "code": "validation_failed", "detail": "The request is invalid.",
            "request_id": "req_1", "errors": [{"field": "name", "message": "too long"}],
        });
        let error = Error::from_response(422, None, body.to_string().as_bytes());
        let Error::Api { errors, .. } = error else {
            panic!("expected an API error, got {error:?}");
        };
        assert_eq!(errors, vec![FieldError::new("name", "too long")]);
    }

    #[test]
    fn an_unknown_code_is_still_an_api_error() {
        let body = br#"{"status": 418, "code": "teapot", "detail": "Short and stout."}"#;
        let error = Error::from_response(418, Some("req_h".into()), body);
        assert_eq!(error.code(), Some("teapot"));
        assert_eq!(
            error.request_id(),
            Some("req_h"),
            "falls back to the header"
        );
        assert_eq!(
            error.to_string(),
            "teapot (418): Short and stout. [request req_h]"
        );
    }

    #[test]
    fn a_body_that_is_not_a_problem_is_a_decode_error_with_the_status() {
        let error = Error::from_response(502, None, b"<html>Bad Gateway</html>");
        assert!(
            matches!(error, Error::Decode { status: 502, .. }),
            "{error:?}"
        );
        assert_eq!(error.code(), None);
        assert_eq!(error.status(), Some(502));
        assert!(error
            .to_string()
            .starts_with("could not decode the 502 response"));
    }
}
