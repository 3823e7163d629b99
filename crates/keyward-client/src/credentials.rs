//! [`Credentials`]: what a client presents, and what a caller may save between runs.

use keyward_proto::{Secret, TokenPair};

/// The credentials a [`Client`](crate::Client) holds.
///
/// Its fields are those of the CLI's `credentials.json` (SPEC §5) minus `url`, so saving a
/// client's state is [`Client::credentials`](crate::Client::credentials) and restoring it is
/// [`ClientBuilder::credentials`](crate::ClientBuilder::credentials). Every field is a
/// [`Secret`]: `Debug` shows `[redacted]`, never the value.
///
/// A request presents the access token when there is one, else the API key, as
/// `Authorization: Bearer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A long-lived API key (`kw_…`).
    pub api_key: Option<Secret>,
    /// A session's short-lived access token (a JWT).
    pub access_token: Option<Secret>,
    /// The session's refresh token: spent by [`Client::refresh`](crate::Client::refresh) for a
    /// new pair, and on `token_expired`.
    pub refresh_token: Option<Secret>,
}

impl Credentials {
    /// The credential a request presents: the access token, else the API key.
    pub(crate) fn bearer(&self) -> Option<Bearer> {
        match (&self.access_token, &self.api_key) {
            (Some(token), _) => Some(Bearer::AccessToken(token.clone())),
            (None, Some(key)) => Some(Bearer::ApiKey(key.clone())),
            (None, None) => None,
        }
    }

    /// Keeps a freshly issued pair, replacing the previous one.
    pub(crate) fn store_tokens(&mut self, tokens: &TokenPair) {
        self.access_token = Some(tokens.access_token.clone());
        self.refresh_token = Some(tokens.refresh_token.clone());
    }
}

/// A credential as sent on one request.
pub(crate) enum Bearer {
    AccessToken(Secret),
    ApiKey(Secret),
}

impl Bearer {
    pub(crate) fn expose(&self) -> &str {
        match self {
            Self::AccessToken(secret) | Self::ApiKey(secret) => secret.expose(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_wins_over_the_api_key() {
        let mut credentials = Credentials {
            api_key: Some(Secret::new("kw_key")),
            ..Credentials::default()
        };
        assert!(matches!(credentials.bearer(), Some(Bearer::ApiKey(_))));
        credentials.access_token = Some(Secret::new("a.b.c"));
        let bearer = credentials.bearer();
        assert!(matches!(bearer, Some(Bearer::AccessToken(_))));
        assert_eq!(
            bearer.map(|b| b.expose().to_owned()).as_deref(),
            Some("a.b.c")
        );
        assert!(Credentials::default().bearer().is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let credentials = Credentials {
            api_key: Some(Secret::new("kw_topsecretkey")),
            access_token: Some(Secret::new("header.payload.signature")),
            refresh_token: Some(Secret::new("refreshvalue")),
        };
        let debug = format!("{credentials:?}");
        for secret in ["topsecret", "payload", "refreshvalue"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("[redacted]"), "{debug}");
    }
}
