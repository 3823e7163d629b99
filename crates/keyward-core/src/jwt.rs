//! EdDSA (Ed25519) access tokens and the JWKS that lets other services verify them offline.
//!
//! Verification pins everything an attacker could steer: the algorithm is `EdDSA` whatever the
//! header says, the key comes only from Keyward's own key set by `kid` (header `jwk`, `jku` and
//! `x5u` are never read), `typ` must be `at+jwt`, a `crit` header is refused, and `iss`, `aud`,
//! `exp`, `nbf` are checked against the [`Clock`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyward_proto::{Jwk, JwkSet};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Timestamp};
use crate::error::{AuthFailure, CoreError, CoreResult};
use crate::ids::{SessionId, TenantId, UserId};
use crate::store::{SigningKeyRecord, Store};

/// Tolerated clock skew for `nbf` and `iat` between the issuing and the verifying instance.
const NBF_LEEWAY_SECONDS: i64 = 30;
/// An unknown `kid` reloads the key set from the store (another instance may have added a key,
/// e.g. when two start on an empty database at once), at most this often, so garbage tokens
/// cannot turn into a stream of database reads.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
const TOKEN_TYPE: &str = "at+jwt";
/// How long past the access-token lifetime a retired signing key keeps verifying: instances
/// go on signing with it until their next reload of the key set (at most
/// `sessions.signing_key_reload_seconds`, 300 s at most), and clocks may disagree a little.
pub const RETIRED_KEY_GRACE_SECONDS: i64 = 300 + NBF_LEEWAY_SECONDS;

/// The claims of a Keyward access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub tid: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: Option<i64>,
    pub exp: i64,
    pub jti: String,
}

struct KeySet {
    current_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    jwks: JwkSet,
}

pub struct TokenSigner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
    keys: RwLock<Arc<KeySet>>,
    /// `None` until the first reload, which is therefore never delayed. Held across a reload, so
    /// that requests carrying the same new `kid` meanwhile wait for it instead of being refused.
    last_reload: tokio::sync::Mutex<Option<Instant>>,
    /// Tokens whose signature has been checked, by SHA-256 of the whole token, with the `kid`
    /// that signed them: a client presents one token for many requests, and an Ed25519 check
    /// costs more than the rest of the request. Times are checked on every use all the same,
    /// and an entry counts only while its `kid` is in the key set.
    verified: RwLock<HashMap<crate::hashing::TokenHash, (String, Arc<AccessClaims>)>>,
}

/// Verified tokens remembered at most (about 300 bytes each).
const MAX_VERIFIED_TOKENS: usize = 65_536;

impl TokenSigner {
    /// Loads the signing keys from the store, generating and storing the first one when there is
    /// none. Several instances starting at once may each add one; all are valid, and each signs
    /// with the newest.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        issuer: String,
        audience: String,
        ttl_seconds: i64,
    ) -> CoreResult<Self> {
        let mut records = store.signing_keys().await?;
        if !records.iter().any(|key| key.retired_at.is_none()) {
            store.insert_signing_key(generate_key(clock.now())?).await?;
            records = store.signing_keys().await?;
        }
        let keys = build_key_set(&records, clock.now(), ttl_seconds)?;
        Ok(Self {
            store,
            clock,
            issuer,
            audience,
            ttl_seconds,
            keys: RwLock::new(Arc::new(keys)),
            last_reload: tokio::sync::Mutex::new(None),
            verified: RwLock::default(),
        })
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    fn key_set(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn jwks(&self) -> JwkSet {
        self.key_set().jwks.clone()
    }

    /// Signs an access token for this session.
    pub fn issue(
        &self,
        user: &UserId,
        tenant: &TenantId,
        session: &SessionId,
    ) -> CoreResult<String> {
        let keys = self.key_set();
        let now = self.clock.now().seconds();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            tid: tenant.to_string(),
            sid: session.to_string(),
            iat: now,
            nbf: Some(now),
            exp: now + self.ttl_seconds,
            jti: {
                use rand::distributions::{Alphanumeric, DistString};
                Alphanumeric.sample_string(&mut rand::thread_rng(), 22)
            },
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.current_kid.clone());
        header.typ = Some(TOKEN_TYPE.into());
        jsonwebtoken::encode(&header, &claims, &keys.encoding)
            .map_err(|e| CoreError::Unexpected(format!("signing an access token: {e}")))
    }

    /// Checks signature, algorithm, type, issuer, audience and times. The session's revocation is
    /// the caller's check ([`crate::AccountService::authenticate_access_token`]).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, AuthFailure> {
        let digest = crate::hashing::sha256(token);
        let remembered = self
            .verified
            .read()
            .ok()
            .and_then(|verified| verified.get(&digest).cloned());
        let claims = match remembered {
            Some((kid, claims)) if self.key_set().decoding.contains_key(&kid) => {
                AccessClaims::clone(&claims)
            }
            _ => {
                let (kid, claims) = self.check_signature(token).await?;
                self.remember(digest, kid, &claims);
                claims
            }
        };

        let now = self.clock.now().seconds();
        if claims.nbf.is_some_and(|nbf| nbf > now + NBF_LEEWAY_SECONDS)
            || claims.iat > now + NBF_LEEWAY_SECONDS
        {
            return Err(AuthFailure::InvalidToken);
        }
        if now >= claims.exp {
            return Err(AuthFailure::TokenExpired);
        }
        Ok(claims)
    }

    /// Header, signature and the claims that never change (iss, aud): the `kid` and the claims.
    async fn check_signature(&self, token: &str) -> Result<(String, AccessClaims), AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::InvalidToken)?;
        if header.alg != Algorithm::EdDSA
            || header.typ.as_deref() != Some(TOKEN_TYPE)
            || has_critical_extensions(token)
        {
            return Err(AuthFailure::InvalidToken);
        }
        let kid = header.kid.ok_or(AuthFailure::InvalidToken)?;
        let mut keys = self.key_set();
        if !keys.decoding.contains_key(&kid) {
            keys = self.reload_for_unknown_kid(&kid).await;
        }
        let key = keys.decoding.get(&kid).ok_or(AuthFailure::InvalidToken)?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Times are checked by `verify`, on every use, against our Clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map_err(|_| AuthFailure::InvalidToken)?
            .claims;
        Ok((kid, claims))
    }

    fn remember(&self, digest: crate::hashing::TokenHash, kid: String, claims: &AccessClaims) {
        let now = self.clock.now().seconds();
        if claims.exp <= now {
            return;
        }
        let Ok(mut verified) = self.verified.write() else {
            return;
        };
        if verified.len() >= MAX_VERIFIED_TOKENS {
            verified.retain(|_, (_, claims)| claims.exp > now);
        }
        if verified.len() >= MAX_VERIFIED_TOKENS {
            let victim = verified.keys().next().cloned();
            if let Some(victim) = victim {
                verified.remove(&victim);
            }
        }
        verified.insert(digest, (kid, Arc::new(claims.clone())));
    }

    async fn reload_for_unknown_kid(&self, kid: &str) -> Arc<KeySet> {
        let mut last = self.last_reload.lock().await;
        // The reload we may have waited for may have brought the key.
        let keys = self.key_set();
        if keys.decoding.contains_key(kid) || last.is_some_and(|at| at.elapsed() < RELOAD_INTERVAL)
        {
            return keys;
        }
        *last = Some(Instant::now());
        match self.load_key_set().await {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%error, "reloading signing keys failed");
                self.key_set()
            }
        }
    }

    /// Reads the key set from the store and makes it current. The server calls this
    /// periodically, so a key another instance added appears in this instance's JWKS (for
    /// offline verifiers) even before a token signed with it arrives here.
    pub async fn reload(&self) -> CoreResult<()> {
        self.load_key_set().await.map(|_| ())
    }

    async fn load_key_set(&self) -> CoreResult<Arc<KeySet>> {
        let records = self.store.signing_keys().await?;
        let fresh = Arc::new(build_key_set(&records, self.clock.now(), self.ttl_seconds)?);
        if let Ok(mut keys) = self.keys.write() {
            *keys = fresh.clone();
        }
        Ok(fresh)
    }
}

/// `keyward admin rotate-signing-key`: adds a new signing key and retires the current ones.
/// Running instances sign with the new key from their next reload of the key set; a retired
/// key keeps verifying (and stays in the JWKS) for `access_token_ttl_seconds` +
/// [`RETIRED_KEY_GRACE_SECONDS`] after its retirement, by when every token it signed has
/// expired. Keys retired longer ago than that are deleted here.
pub async fn rotate_signing_key(
    store: &dyn Store,
    now: Timestamp,
    access_token_ttl_seconds: i64,
) -> CoreResult<crate::store::SigningKeyRotation> {
    let key = generate_key(now)?;
    let drop_before = now.plus_seconds(-(access_token_ttl_seconds + RETIRED_KEY_GRACE_SECONDS));
    Ok(store.rotate_signing_key(key, drop_before).await?)
}

/// RFC 7515 §4.1.11: a header's `crit` names extensions the verifier must understand, or
/// refuse the token; Keyward understands none (e.g. the unencoded payload of RFC 7797, which
/// would change what the signature covers). jsonwebtoken does not look at `crit`, so a token
/// carrying it would otherwise be verified as if the extension were absent.
fn has_critical_extensions(token: &str) -> bool {
    let segment = token.split('.').next().unwrap_or_default();
    match URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Map<_, _>>(&bytes).ok())
    {
        Some(header) => header.contains_key("crit"),
        None => true,
    }
}

fn generate_key(now: Timestamp) -> CoreResult<SigningKeyRecord> {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = signing.verifying_key().to_bytes();
    Ok(SigningKeyRecord {
        kid: URL_SAFE_NO_PAD
            .encode(&crate::hashing::sha256(&URL_SAFE_NO_PAD.encode(public)).as_bytes()[..12]),
        private_key: signing.to_bytes().to_vec(),
        public_key: public.to_vec(),
        created_at: now,
        retired_at: None,
    })
}

/// The keys that verify at `now`: every active key, and each retired one until every token
/// it can have signed has expired.
fn build_key_set(
    records: &[SigningKeyRecord],
    now: Timestamp,
    ttl_seconds: i64,
) -> CoreResult<KeySet> {
    let mut decoding = HashMap::new();
    let mut jwks = Vec::new();
    let verifies = |record: &SigningKeyRecord| {
        record.retired_at.is_none_or(|retired| {
            now.seconds() < retired.seconds() + ttl_seconds + RETIRED_KEY_GRACE_SECONDS
        })
    };
    for record in records.iter().filter(|record| verifies(record)) {
        let x = URL_SAFE_NO_PAD.encode(&record.public_key);
        let key = DecodingKey::from_ed_components(&x)
            .map_err(|e| CoreError::Unexpected(format!("stored public key {}: {e}", record.kid)))?;
        decoding.insert(record.kid.clone(), key);
        jwks.push(Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x,
            kid: record.kid.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        });
    }
    let current = records
        .iter()
        .filter(|key| key.retired_at.is_none())
        .max_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.kid.cmp(&b.kid))
        })
        .ok_or_else(|| CoreError::Unexpected("no active signing key".into()))?;
    let seed: [u8; 32] = current
        .private_key
        .as_slice()
        .try_into()
        .map_err(|_| CoreError::Unexpected("stored signing key is not 32 bytes".into()))?;
    let der = SigningKey::from_bytes(&seed)
        .to_pkcs8_der()
        .map_err(|e| CoreError::Unexpected(format!("encoding the signing key: {e}")))?;
    Ok(KeySet {
        current_kid: current.kid.clone(),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding,
        jwks: JwkSet { keys: jwks },
    })
}
