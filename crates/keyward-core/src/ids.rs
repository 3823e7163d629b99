//! Typed, prefixed, opaque identifiers.

use rand::distributions::{Alphanumeric, DistString};

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id: the prefix and 24 base62 characters (~143 bits).
            pub fn generate() -> Self {
                Self(format!(
                    "{}{}",
                    $prefix,
                    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
                ))
            }

            /// An id as read from storage or a trusted token. Ids are opaque: no check beyond
            /// the prefix, so a malformed id simply matches nothing.
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(UserId, "usr_");
id_type!(TenantId, "ten_");
id_type!(KeyId, "key_");
id_type!(SessionId, "ses_");
id_type!(AuditEventId, "aud_");
id_type!(WebhookId, "whk_");
id_type!(DeliveryId, "msg_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_differ() {
        let a = KeyId::generate();
        let b = KeyId::generate();
        assert!(a.as_str().starts_with("key_"));
        assert_eq!(a.as_str().len(), 28);
        assert_ne!(a, b);
        assert!(UserId::generate().as_str().starts_with("usr_"));
        assert!(TenantId::generate().as_str().starts_with("ten_"));
        assert!(SessionId::generate().as_str().starts_with("ses_"));
    }
}
