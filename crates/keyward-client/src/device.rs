//! The device authorization grant (RFC 8628) as the CLI uses it: [`DevicePoll`], the answers
//! of the token endpoint as values. The wire types are `keyward_proto`'s.

use keyward_proto::{DeviceTokenResponse, OAuthError};

/// One poll of `POST /v1/auth/device/token`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DevicePoll {
    /// The user approved: here is the key (a key named `cli`, shown this once).
    Approved(DeviceTokenResponse),
    /// `authorization_pending`: poll again after the interval.
    Pending,
    /// `slow_down`: poll again, with the interval 5 seconds longer.
    SlowDown,
    /// `access_denied`: the user refused.
    Denied,
    /// `expired_token`: the codes expired (or are unknown); start again.
    Expired,
    /// Any other OAuth error, e.g. `invalid_grant` for a code already redeemed.
    Failed {
        /// The OAuth `error` value.
        error: String,
        /// Its `error_description`, when the server sent one.
        description: Option<String>,
    },
}

impl DevicePoll {
    /// The poll result a 400 body in the format of RFC 6749 §5.2 stands for, or `None` when
    /// the body is not one.
    pub(crate) fn from_oauth_error(body: &[u8]) -> Option<Self> {
        let error: OAuthError = serde_json::from_slice(body).ok()?;
        Some(match error.error.as_str() {
            "authorization_pending" => Self::Pending,
            "slow_down" => Self::SlowDown,
            "access_denied" => Self::Denied,
            "expired_token" => Self::Expired,
            _ => Self::Failed {
                error: error.error,
                description: error.error_description,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_become_poll_results() {
        let poll = |body: &str| DevicePoll::from_oauth_error(body.as_bytes());
        assert!(matches!(
            poll(r#"{"error":"authorization_pending"}"#),
            Some(DevicePoll::Pending)
        ));
        assert!(matches!(
            poll(r#"{"error":"slow_down"}"#),
            Some(DevicePoll::SlowDown)
        ));
        assert!(matches!(
            poll(r#"{"error":"access_denied"}"#),
            Some(DevicePoll::Denied)
        ));
        assert!(matches!(
            poll(r#"{"error":"expired_token"}"#),
            Some(DevicePoll::Expired)
        ));
        assert!(matches!(
            poll(r#"{"error":"invalid_grant","error_description":"used"}"#),
            Some(DevicePoll::Failed { error, description: Some(_) }) if error == "invalid_grant"
        ));
        assert!(poll(r#"{"code":"validation_failed"}"#).is_none());
    }
}
