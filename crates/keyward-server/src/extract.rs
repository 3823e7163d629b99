//! Extractors: the JSON body ([`ApiJson`]) with the SPEC's error answers, and the credential
//! extractors ([`Caller`], [`SessionCaller`]) that make a handler protected by its signature.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use keyward_core::store::Owner;
use keyward_core::VerifiedKey;
use keyward_core::{AuthFailure, Authenticated, Scope, Scopes};
use keyward_proto::{AuthMethod, FieldError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body that must be `application/json`, valid JSON, an object, and of the right shape;
/// else 400 `invalid_request` or 422 `validation_failed` naming the field. An oversized body is
/// 413 `payload_too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::bad_request(
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Like [`ApiJson`], but an empty body (with or without a content type) means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(ApiError::bad_request(
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// The request's media type as sent, without parameters (`application/json`): compare it
/// with `eq_ignore_ascii_case`, as media types are case-insensitive. Borrowed, not lower-cased
/// into a new string: every JSON request asks.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
}

/// `application/json` or `application/…+json`, in any case, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(mime) = media_type(headers).map(str::as_bytes) else {
        return false;
    };
    let has = |part: &[u8], at: usize| {
        mime.get(at..at + part.len())
            .is_some_and(|slice| slice.eq_ignore_ascii_case(part))
    };
    mime.eq_ignore_ascii_case(b"application/json")
        || (mime.len() >= "application/+json".len()
            && has(b"application/", 0)
            && has(b"+json", mime.len() - "+json".len()))
}

/// The whole body, within the size limit (413 `payload_too_large` past it).
pub(crate) async fn read_body(
    request: Request,
    state: &AppState,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    keyward_proto::ErrorCode::PayloadTooLarge,
                    "The request body is over the size limit.",
                )
            } else {
                ApiError::bad_request("The request body could not be read.")
            }
        })
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The common case, a well-formed object, is parsed once, straight into `T`. Only a body
    // that fails goes through a `Value` and `serde_path_to_error`, to name the bad field; so an
    // object `T` refuses here (duplicate field, say) gets the same verdict as before. A body
    // that is not an object is never taken here, because serde would accept an array as a
    // struct.
    let object = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    if object {
        if let Ok(parsed) = serde_json::from_slice::<T>(bytes) {
            return Ok(parsed);
        }
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let field = if path.is_empty() || path == "." {
            backticked(&message).unwrap_or_default()
        } else {
            path
        };
        ApiError::validation(vec![FieldError::new(field, message)])
    })
}

/// `missing field `name`` → `name`.
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

/// The `User-Agent`, which names a new session's device on the account page.
pub(crate) fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
}

/// A presented credential.
pub(crate) enum Credential<'a> {
    AccessToken(&'a str),
    ApiKey(&'a str),
}

pub(crate) fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::auth(AuthFailure::InvalidToken))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::auth(AuthFailure::InvalidToken));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(ApiError::auth(AuthFailure::Missing));
        }
        return Ok(if looks_like_jwt(token) {
            Credential::AccessToken(token)
        } else {
            Credential::ApiKey(token)
        });
    }
    if let Some(value) = headers.get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::auth(AuthFailure::InvalidApiKey))?
            .trim();
        if key.is_empty() {
            return Err(ApiError::auth(AuthFailure::Missing));
        }
        return Ok(Credential::ApiKey(key));
    }
    Err(ApiError::auth(AuthFailure::Missing))
}

/// A JWT is three dot-separated base64url parts, header and payload non-empty; the signature
/// may be empty, as in an unsecured JWT (RFC 7519 §6), which is then refused as a token
/// (`invalid_token`), not as an API key. No API key format has a dot.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let mut count = 0;
    for part in parts.by_ref() {
        count += 1;
        if count > 3 || (part.is_empty() && count < 3) {
            return false;
        }
    }
    count == 3
}

/// Whoever called: a live session or a valid API key. Taking this argument makes a handler
/// require a credential.
#[derive(Debug, Clone)]
pub enum Caller {
    Session(Authenticated),
    Key(Box<VerifiedKey>),
}

impl Caller {
    pub fn owner(&self) -> Owner {
        match self {
            Self::Session(session) => Owner {
                user_id: session.user_id.clone(),
                tenant_id: session.tenant_id.clone(),
            },
            Self::Key(key) => key.owner.clone(),
        }
    }

    /// The calling key's scopes; `None` for a session, which may do everything.
    pub fn key_scopes(&self) -> Option<&Scopes> {
        match self {
            Self::Session(_) => None,
            Self::Key(key) => Some(&key.scopes),
        }
    }

    pub fn method(&self) -> AuthMethod {
        match self {
            Self::Session(_) => AuthMethod::Session,
            Self::Key(_) => AuthMethod::ApiKey,
        }
    }

    /// 403 `insufficient_scope` unless the caller holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        match self.key_scopes() {
            None => Ok(()),
            Some(scopes) => {
                let needed = Scope::parse(scope).map_err(ApiError::internal)?;
                if scopes.grants(&needed) {
                    Ok(())
                } else {
                    Err(keyward_core::CoreError::InsufficientScope.into())
                }
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = match credential(&parts.headers)? {
            Credential::AccessToken(token) => {
                Caller::Session(state.accounts.authenticate_access_token(token).await?)
            }
            Credential::ApiKey(key) => {
                // Bad keys count against the address as failed verify calls do.
                let ip = crate::throttle::client_ip_of(parts, &state.config.trusted_proxies);
                let record = match state.throttles.check_verify(ip) {
                    Ok(()) => state.keys.authenticate(key).await,
                    // Blocked: only keys held in memory are still checked (see verify).
                    Err(limited) => keyward_core::KeyService::accepted(
                        state
                            .keys
                            .check_cached(key, &Scopes::default(), keyward_core::Charge::API)
                            .ok_or(limited)?,
                    ),
                };
                state
                    .metrics
                    .verification(if record.is_ok() { "valid" } else { "invalid" });
                if let Err(keyward_core::CoreError::Unauthenticated(_)) = &record {
                    if let Some(seconds) = state.throttles.verify_failed(ip) {
                        return Err(crate::throttle::limited(seconds).into());
                    }
                }
                let accepted = record?;
                if let (Some(decision), Some(slot)) = (
                    accepted.rate_limit,
                    parts.extensions.get::<crate::keylimits::Slot>(),
                ) {
                    slot.set(decision);
                }
                Caller::Key(Box::new(accepted.key))
            }
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// A caller that must be a session: an API key gets 403 `session_required`.
#[derive(Debug, Clone)]
pub struct SessionCaller(pub Authenticated);

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Session(session) => Ok(Self(session)),
            Caller::Key(_) => Err(keyward_core::CoreError::SessionRequired.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_json_media_types() {
        let json = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=utf-8"));
        assert!(json(" application/json "));
        assert!(json("application/problem+json"));
        assert!(json("APPLICATION/VND.API+JSON;v=1"));
        assert!(
            json("application/+json"),
            "as before: any application/…+json"
        );
        assert!(!json("text/json"));
        assert!(!json("application/jsonx"));
        assert!(!json("application/x-www-form-urlencoded"));
        assert!(!json("text/plain+json"));
        assert!(!json(""));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn tells_jwts_from_keys() {
        assert!(looks_like_jwt("aaa.bbb.ccc"));
        assert!(!looks_like_jwt("kw_abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(looks_like_jwt("a.b."), "an unsecured JWT is still a JWT");
        assert!(!looks_like_jwt(".b.c"));
    }

    #[test]
    fn names_the_field_of_a_shape_error() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            name: String,
            days: Option<i64>,
        }
        let field = |json: &str| {
            parse_json::<Body>(json.as_bytes())
                .unwrap_err()
                .errors
                .unwrap()[0]
                .field
                .clone()
        };
        assert_eq!(field(r#"{}"#), "name");
        assert_eq!(field(r#"{"name": 5}"#), "name");
        assert_eq!(field(r#"{"name": "a", "days": "x"}"#), "days");
        assert_eq!(field(r#"{"name": "a", "extra": 1}"#), "extra");
        assert_eq!(
            parse_json::<Body>(b"[1]").unwrap_err().code,
            keyward_proto::ErrorCode::InvalidRequest
        );
        assert_eq!(
            parse_json::<Body>(b"{nope").unwrap_err().code,
            keyward_proto::ErrorCode::InvalidRequest
        );
        // An array has the struct's fields in order, which serde alone would accept.
        assert_eq!(
            parse_json::<Body>(br#"["a", 1]"#).unwrap_err().code,
            keyward_proto::ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn a_good_object_parses_the_same_on_either_path() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Body {
            name: String,
            days: Option<i64>,
        }
        let parsed = parse_json::<Body>(b" \n{\"name\": \"a\", \"days\": 3}").unwrap();
        assert_eq!(
            parsed,
            Body {
                name: "a".into(),
                days: Some(3)
            }
        );
        // serde refuses a repeated field; the slow path keeps the last, as before.
        let repeated = parse_json::<Body>(br#"{"name": "a", "name": "b"}"#).unwrap();
        assert_eq!(repeated.name, "b");
    }

    mod properties {
        use super::*;
        use axum::http::HeaderValue;
        use proptest::prelude::*;

        /// Tokens made of JWT-ish pieces: base64url runs, dots, spaces.
        fn tokenish() -> impl Strategy<Value = String> {
            "([A-Za-z0-9_-]{0,6}[. ]?){0,6}|\\PC{0,40}"
        }

        fn kind(headers: &HeaderMap) -> Result<(&'static str, String), ()> {
            match credential(headers) {
                Ok(Credential::AccessToken(token)) => Ok(("token", token.to_owned())),
                Ok(Credential::ApiKey(key)) => Ok(("key", key.to_owned())),
                Err(_) => Err(()),
            }
        }

        proptest! {
            #[test]
            fn looks_like_jwt_iff_three_parts_with_header_and_payload(token in tokenish()) {
                let parts: Vec<&str> = token.split('.').collect();
                let expected = parts.len() == 3 && !parts[0].is_empty() && !parts[1].is_empty();
                prop_assert_eq!(looks_like_jwt(&token), expected);
            }

            #[test]
            fn a_bearer_credential_is_a_token_iff_it_looks_like_a_jwt(token in tokenish(), scheme in "Bearer|bearer|BEARER|Basic|Token") {
                let Ok(value) = HeaderValue::from_str(&format!("{scheme} {token}")) else {
                    return Ok(());
                };
                let mut headers = HeaderMap::new();
                headers.insert(AUTHORIZATION, value);
                let trimmed = token.trim();
                match kind(&headers) {
                    Ok((kind, presented)) => {
                        prop_assert!(scheme.eq_ignore_ascii_case("bearer"));
                        prop_assert_eq!(presented.as_str(), trimmed);
                        prop_assert_eq!(kind, if looks_like_jwt(trimmed) { "token" } else { "key" });
                    }
                    // Refused: another scheme, nothing after it, or bytes that are not visible ASCII.
                    Err(()) => prop_assert!(
                        !scheme.eq_ignore_ascii_case("bearer")
                            || trimmed.is_empty()
                            || headers[AUTHORIZATION].to_str().is_err()
                    ),
                }
            }

            #[test]
            fn credential_never_panics_on_arbitrary_header_bytes(
                authorization in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60)),
                api_key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60)),
            ) {
                let mut headers = HeaderMap::new();
                if let Some(Ok(value)) = authorization.map(|bytes| HeaderValue::from_bytes(&bytes)) {
                    headers.insert(AUTHORIZATION, value);
                }
                if let Some(Ok(value)) = api_key.map(|bytes| HeaderValue::from_bytes(&bytes)) {
                    headers.insert("x-api-key", value);
                }
                // Authorization wins when both are there; a presented credential is never empty.
                if let Ok((_, presented)) = kind(&headers) {
                    prop_assert!(!presented.is_empty());
                    prop_assert_eq!(presented.trim(), presented.as_str());
                }
                if headers.is_empty() {
                    prop_assert!(kind(&headers).is_err());
                }
            }
        }
    }
}
