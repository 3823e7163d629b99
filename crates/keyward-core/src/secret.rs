//! Secrets as types that never print themselves.

use rand::distributions::{Alphanumeric, DistString};

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// The secret itself: only where it is hashed, verified or sent to its owner.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type!(
    /// A password that passed the length and common-password rules ([`Password::parse`]), or one
    /// presented at login ([`Password::presented`]).
    Password
);
secret_type!(
    /// A full API key, as presented or as just generated.
    ApiKeySecret
);
secret_type!(
    /// A signed JWT access token.
    AccessToken
);
secret_type!(
    /// An opaque refresh token: `kwr_` and 43 base62 characters (~256 bits).
    RefreshToken
);
secret_type!(
    /// The device code of the device authorization grant: `kwd_` and 43 base62 characters
    /// (~256 bits), stored only as its SHA-256.
    DeviceCode
);

impl Password {
    /// A password presented at login: not checked against the rules, only hashed and compared.
    pub fn presented(value: String) -> Self {
        Self(value)
    }

    pub(crate) fn new_unchecked(value: String) -> Self {
        Self(value)
    }
}

impl ApiKeySecret {
    pub fn presented(value: String) -> Self {
        Self(value)
    }

    pub(crate) fn new_unchecked(value: String) -> Self {
        Self(value)
    }
}

impl AccessToken {
    pub fn new(value: String) -> Self {
        Self(value)
    }
}

impl DeviceCode {
    pub fn generate() -> Self {
        Self(format!(
            "kwd_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 43)
        ))
    }

    pub fn presented(value: String) -> Self {
        Self(value)
    }
}

impl RefreshToken {
    pub fn generate() -> Self {
        Self(format!(
            "kwr_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 43)
        ))
    }

    pub fn presented(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_redact_in_debug() {
        let token = RefreshToken::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
        let password = Password::presented("correct horse battery".into());
        assert_eq!(format!("{password:?}"), "Password([redacted])");
        let key = ApiKeySecret::presented("kw_secretsecret".into());
        assert!(!format!("{key:?}").contains("secretsecret"));
    }
}
