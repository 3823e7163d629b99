//! The device authorization grant (RFC 8628), which `keyward login` uses: the CLI asks for a
//! pair of codes, a signed-in person approves the short [`UserCode`] in a browser, and the CLI,
//! polling with the secret [`DeviceCode`], receives a fresh API key named `cli`.
//!
//! Every decision that must hold across instances is the database's: the poll interval
//! ([`DeviceStore::record_device_poll`]), single redemption
//! ([`DeviceStore::redeem_device_code`]) and the count of failed approvals.
//!
//! [`DeviceStore::record_device_poll`]: crate::store::DeviceStore::record_device_poll
//! [`DeviceStore::redeem_device_code`]: crate::store::DeviceStore::redeem_device_code

use std::sync::Arc;

use rand::Rng;

use crate::audit::{self, AuditEvent, AuditKind};
use crate::clock::{Clock, Timestamp};
use crate::error::{CoreError, CoreResult};
use crate::hashing::sha256;
use crate::keys::{record_of, KeyService, NewKeyInput};
use crate::secret::{ApiKeySecret, DeviceCode};
use crate::store::{ApiKeyRecord, NewDeviceCode, Owner, Redemption, Store, StoreError};
use crate::validate::{Description, KeyName};
use crate::Authenticated;

/// The user-code alphabet of RFC 8628 §6.1: consonants only, so no word is spelled and no
/// character is mistaken for another (no vowels, no `Y`, no digits).
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters in a user code: 20^8 ≈ 2^34.6 codes.
pub const USER_CODE_LENGTH: usize = 8;
/// RFC 8628 §3.5: each `slow_down` adds this to the code's interval.
pub const SLOW_DOWN_SECONDS: i64 = 5;
/// Failed approvals a user may make per window before answering 429.
pub const MAX_FAILED_APPROVALS: u32 = 10;
pub const FAILED_APPROVALS_WINDOW_SECONDS: i64 = 600;
/// How long an expired or redeemed code is kept (so a late poll still answers precisely).
const FORGET_AFTER_SECONDS: i64 = 3600;
/// The name of the key a device login mints.
pub const DEVICE_KEY_NAME: &str = "cli";

/// A user code: 8 characters of [`USER_CODE_ALPHABET`], shown `XXXX-XXXX`, accepted in any
/// case, with or without the dash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserCode(String);

impl UserCode {
    /// Accepts `bcdf-ghjk`, `BCDFGHJK`, ` BCDF-GHJK `; refuses anything else.
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        let without_dash = match trimmed.char_indices().nth(4) {
            Some((4, '-')) if trimmed.len() == USER_CODE_LENGTH + 1 => {
                format!("{}{}", &trimmed[..4], &trimmed[5..])
            }
            _ => trimmed.to_owned(),
        };
        let normalised = without_dash.to_ascii_uppercase();
        if normalised.len() == USER_CODE_LENGTH
            && normalised.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))
        {
            Ok(Self(normalised))
        } else {
            Err(format!(
                "must be {USER_CODE_LENGTH} letters from {} (as XXXX-XXXX)",
                std::str::from_utf8(USER_CODE_ALPHABET).unwrap_or_default()
            ))
        }
    }

    /// A fresh code from the thread's CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        Self(
            (0..USER_CODE_LENGTH)
                .map(|_| char::from(USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())]))
                .collect(),
        )
    }

    /// The stored form: 8 upper-case characters, no dash.
    pub fn normalised(&self) -> &str {
        &self.0
    }

    /// As shown to people: `XXXX-XXXX`.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..4], &self.0[4..])
    }
}

/// A device login waiting for its person, as the console's confirmation page shows it.
#[derive(Debug, Clone)]
pub struct PendingDevice {
    pub user_code: UserCode,
    /// Who asks, as the client named itself (e.g. `keyward CLI on HOST`); untrusted text.
    pub client_name: Option<String>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub code_ttl_seconds: i64,
    pub interval_seconds: i64,
    /// `<public_url>/console/device`.
    pub verification_uri: String,
}

/// What `POST /v1/auth/device/code` answers.
#[derive(Debug)]
pub struct DeviceAuthorization {
    pub device_code: DeviceCode,
    pub user_code: UserCode,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// Why a poll does not (yet) get a key: the RFC 8628 §3.5 / RFC 6749 §5.2 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePollError {
    AuthorizationPending,
    SlowDown,
    AccessDenied,
    /// The approving user is at `keys.max_per_user`: answered as `access_denied` with a
    /// description, since no key can be issued.
    KeyLimitReached,
    /// Expired, or unknown.
    ExpiredToken,
    /// Already redeemed.
    InvalidGrant,
}

impl DevicePollError {
    pub fn code(self) -> &'static str {
        match self {
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::AccessDenied | Self::KeyLimitReached => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::InvalidGrant => "invalid_grant",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::AuthorizationPending => "The user has not approved this request yet.",
            Self::SlowDown => "Polling too fast; the interval grew by 5 seconds.",
            Self::AccessDenied => "The user denied this request.",
            Self::KeyLimitReached => {
                "The approving user has reached the key limit (keys.max_per_user); revoke a key and log in again."
            }
            Self::ExpiredToken => "The device code is unknown or has expired; start again.",
            Self::InvalidGrant => "The device code has already been used.",
        }
    }
}

pub struct DeviceService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyService>,
    settings: DeviceSettings,
}

impl DeviceService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: Arc<KeyService>,
        settings: DeviceSettings,
    ) -> Self {
        Self {
            store,
            clock,
            keys,
            settings,
        }
    }

    /// Issues a device code and a user code. `client_name` is shown to the person approving.
    #[tracing::instrument(skip_all)]
    pub async fn start(&self, client_name: Option<String>) -> CoreResult<DeviceAuthorization> {
        if let Some(name) = &client_name {
            let length = name.chars().count();
            if !(1..=100).contains(&length) || name.chars().any(char::is_control) {
                return Err(CoreError::field(
                    "client_name",
                    "must be 1 to 100 characters, without control characters",
                ));
            }
        }
        let now = self.clock.now();
        // A user code collides with a live one about once in 10^10 draws: retry a few times.
        for _ in 0..5 {
            let device_code = DeviceCode::generate();
            let user_code = UserCode::generate();
            let code = NewDeviceCode {
                device_code_hash: sha256(device_code.expose()),
                user_code: user_code.normalised().to_owned(),
                client_name: client_name.clone(),
                created_at: now,
                expires_at: now.plus_seconds(self.settings.code_ttl_seconds),
                interval_seconds: self.settings.interval_seconds,
            };
            match self
                .store
                .insert_device_code(code, FORGET_AFTER_SECONDS)
                .await
            {
                Ok(()) => {
                    let verification_uri = self.settings.verification_uri.clone();
                    return Ok(DeviceAuthorization {
                        verification_uri_complete: format!(
                            "{verification_uri}?user_code={}",
                            user_code.display()
                        ),
                        verification_uri,
                        device_code,
                        user_code,
                        expires_in: self.settings.code_ttl_seconds,
                        interval: self.settings.interval_seconds,
                    });
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(CoreError::Unexpected(
            "no free user code after 5 draws".into(),
        ))
    }

    /// One poll of the token endpoint: the key once approved (minted now, so its plaintext is
    /// never stored), else why not.
    #[tracing::instrument(skip_all)]
    pub async fn poll(
        &self,
        device_code: &DeviceCode,
    ) -> CoreResult<Result<(ApiKeyRecord, ApiKeySecret), DevicePollError>> {
        let hash = sha256(device_code.expose());
        let Some(code) = self.store.find_device_code(&hash).await? else {
            return Ok(Err(DevicePollError::ExpiredToken));
        };
        let now = self.clock.now();
        if code.redeemed_at.is_some() {
            return Ok(Err(DevicePollError::InvalidGrant));
        }
        if code.expires_at <= now {
            return Ok(Err(DevicePollError::ExpiredToken));
        }
        if code.denied_at.is_some() {
            return Ok(Err(DevicePollError::AccessDenied));
        }
        let Some(owner) = code.approved_by else {
            // Pending: only now does the pace matter (RFC 8628 §3.5 `slow_down` means "still
            // pending, and slower").
            return Ok(Err(
                if self
                    .store
                    .record_device_poll(&hash, now, SLOW_DOWN_SECONDS)
                    .await?
                {
                    DevicePollError::AuthorizationPending
                } else {
                    DevicePollError::SlowDown
                },
            ));
        };
        let description = code
            .client_name
            .as_deref()
            .map(|name| format!("Created by device login from {name}"))
            .and_then(|text| Description::parse(&text).ok());
        let input = NewKeyInput {
            name: KeyName::from_stored(DEVICE_KEY_NAME.into()),
            description,
            expires_in_days: None,
            scopes: None,
            meta: None,
            rate_limit: None,
            credits: None,
        };
        let (key, secret) = self.keys.prepare(owner, None, input)?;
        let record = record_of(&key);
        match self
            .store
            .redeem_device_code(&hash, key, self.keys.max_per_user(), now)
            .await?
        {
            Redemption::Redeemed => {
                let owner = &record.owner;
                audit::record(
                    &*self.store,
                    AuditEvent::new(AuditKind::KeyCreated, &owner.tenant_id, &owner.user_id, now)
                        .key(&record.id)
                        .detail("device login"),
                )
                .await;
                self.keys
                    .emit(
                        owner,
                        crate::webhooks::EventType::KeyCreated,
                        crate::webhooks::key_event_data(&record.id, owner, record.name.as_str()),
                    )
                    .await;
                Ok(Ok((record, secret)))
            }
            Redemption::NotRedeemable => Ok(Err(DevicePollError::InvalidGrant)),
            Redemption::KeyLimitReached => Ok(Err(DevicePollError::KeyLimitReached)),
        }
    }

    /// The pending, unexpired code `user_code`, for `auth`'s user to confirm (the console shows
    /// its `client_name` before Approve and Deny). A lookup is a guess like an approval: unknown,
    /// expired and already decided codes are `NotFound` and count toward the same limit, past
    /// which it is `RateLimited`.
    #[tracing::instrument(skip_all, fields(user_id = %auth.user_id))]
    pub async fn pending(
        &self,
        auth: &Authenticated,
        user_code: &UserCode,
    ) -> CoreResult<PendingDevice> {
        let now = self.clock.now();
        self.check_failed_approvals(auth, now).await?;
        match self
            .store
            .find_device_code_by_user_code(user_code.normalised())
            .await?
        {
            Some(code)
                if code.expires_at > now
                    && code.approved_at.is_none()
                    && code.denied_at.is_none() =>
            {
                Ok(PendingDevice {
                    user_code: user_code.clone(),
                    client_name: code.client_name,
                    expires_at: code.expires_at,
                })
            }
            _ => {
                self.record_failure(auth, now).await?;
                Err(CoreError::NotFound)
            }
        }
    }

    /// `RateLimited` once the user has failed [`MAX_FAILED_APPROVALS`] times in the window.
    async fn check_failed_approvals(&self, auth: &Authenticated, now: Timestamp) -> CoreResult<()> {
        let window_start = now.plus_seconds(-FAILED_APPROVALS_WINDOW_SECONDS);
        let (failures, oldest) = self
            .store
            .device_approval_failures(&auth.user_id, window_start.plus_seconds(1))
            .await?;
        if failures >= MAX_FAILED_APPROVALS {
            let free_at = oldest.map_or(now.plus_seconds(FAILED_APPROVALS_WINDOW_SECONDS), |at| {
                at.plus_seconds(FAILED_APPROVALS_WINDOW_SECONDS)
            });
            return Err(CoreError::RateLimited {
                retry_after_seconds: (free_at.seconds() - now.seconds()).max(1) as u64,
            });
        }
        Ok(())
    }

    async fn record_failure(&self, auth: &Authenticated, now: Timestamp) -> CoreResult<()> {
        let window_start = now.plus_seconds(-FAILED_APPROVALS_WINDOW_SECONDS);
        self.store
            .record_device_approval_failure(&auth.user_id, now, window_start)
            .await?;
        Ok(())
    }

    /// Approves or denies the pending code `user_code` as `auth`'s user. Unknown, expired and
    /// already decided codes are all `NotFound`; each such failure counts toward the user's
    /// limit of [`MAX_FAILED_APPROVALS`] per [`FAILED_APPROVALS_WINDOW_SECONDS`], past which
    /// every attempt is `RateLimited`, so user codes cannot be guessed.
    #[tracing::instrument(skip_all, fields(user_id = %auth.user_id))]
    pub async fn decide(
        &self,
        auth: &Authenticated,
        user_code: &UserCode,
        approve: bool,
    ) -> CoreResult<()> {
        let now = self.clock.now();
        self.check_failed_approvals(auth, now).await?;
        let owner = Owner {
            user_id: auth.user_id.clone(),
            tenant_id: auth.tenant_id.clone(),
        };
        if self
            .store
            .decide_device_code(user_code.normalised(), approve.then_some(&owner), now)
            .await?
        {
            let kind = if approve {
                AuditKind::DeviceApproved
            } else {
                AuditKind::DeviceDenied
            };
            audit::record(
                &*self.store,
                AuditEvent::new(kind, &auth.tenant_id, &auth.user_id, now)
                    .session(&auth.session_id),
            )
            .await;
            return Ok(());
        }
        self.record_failure(auth, now).await?;
        Err(CoreError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_any_case_with_or_without_the_dash() {
        for input in [
            "BCDF-GHJK",
            "bcdf-ghjk",
            "BCDFGHJK",
            "bcdfghjk",
            " BcDf-gHjK\n",
        ] {
            let code = UserCode::parse(input).unwrap();
            assert_eq!(code.normalised(), "BCDFGHJK");
            assert_eq!(code.display(), "BCDF-GHJK");
        }
    }

    #[test]
    fn refuses_what_is_not_a_code() {
        for input in [
            "",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "ABCD-EFGH",
            "BCDF-GHJ1",
            "BCD-FGHJK",
            "BCDF--GHJK",
            "BCDF GHJK",
            "BCDFGHJK-",
            "ＢCDF-GHJK",
            "bcdf-ghjé",
        ] {
            assert!(UserCode::parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn generated_codes_are_valid_and_differ() {
        let a = UserCode::generate();
        let b = UserCode::generate();
        assert_ne!(a, b);
        assert_eq!(UserCode::parse(&a.display()).unwrap(), a);
    }

    fn code_chars() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(USER_CODE_ALPHABET.to_vec()), 8)
            .prop_map(|bytes| String::from_utf8(bytes).unwrap())
    }

    proptest! {
        #[test]
        fn every_spelling_normalises_to_one_code(
            code in code_chars(),
            lower in proptest::collection::vec(any::<bool>(), 8),
            dash in any::<bool>(),
        ) {
            let spelled: String = code
                .chars()
                .zip(&lower)
                .map(|(c, &lower)| if lower { c.to_ascii_lowercase() } else { c })
                .collect();
            let spelled = if dash {
                format!("{}-{}", &spelled[..4], &spelled[4..])
            } else {
                spelled
            };
            let parsed = UserCode::parse(&spelled).unwrap();
            prop_assert_eq!(parsed.normalised(), code.as_str());
            prop_assert_eq!(UserCode::parse(&parsed.display()).unwrap(), parsed);
        }

        #[test]
        fn parse_never_panics_and_accepts_only_the_alphabet(input in "\\PC{0,12}") {
            if let Ok(code) = UserCode::parse(&input) {
                prop_assert_eq!(code.normalised().len(), USER_CODE_LENGTH);
                prop_assert!(code.normalised().bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
            }
        }

        #[test]
        fn a_character_outside_the_alphabet_is_refused(
            code in code_chars(),
            position in 0usize..8,
            bad in "[AEIOUY0-9!_ ]",
        ) {
            let mut chars: Vec<char> = code.chars().collect();
            chars[position] = bad.chars().next().unwrap();
            let code: String = chars.into_iter().collect();
            prop_assert!(UserCode::parse(&code).is_err());
        }
    }
}
