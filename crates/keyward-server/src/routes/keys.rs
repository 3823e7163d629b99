//! `/v1/keys*`: create, list, get, revoke, rotate and verify API keys (SPEC §4).

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::{
    Charge, KeyId, KeyMeta, KeyUpdateInput, NewKeyInput, Scopes, Timestamp, UsageOutcome,
};
use keyward_proto::{
    paths, CreateKeyRequest, CreatedKey, CreditsState, KeyList, KeyView, Problem, RateLimitState,
    RotateKeyRequest, Secret, UpdateKeyRequest, VerifyCode, VerifyRequest, VerifyResponse,
};

use super::key_view;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Caller, OptionalJson};
use crate::state::AppState;
use crate::throttle::ClientIp;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::KEYS, post(create).get(list))
        .route(paths::KEYS_VERIFY, post(verify))
        .route(paths::KEY, get(get_one).delete(revoke).patch(update))
        .route(paths::KEY_ROTATE, post(rotate))
}

fn created(
    state: &AppState,
    key: &keyward_core::store::ApiKeyRecord,
    secret: &keyward_core::ApiKeySecret,
) -> CreatedKey {
    CreatedKey::new(Secret::new(secret.expose()), key_view(&state.keys, key))
}

/// Mint a key. The full key is in this response only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 401, body = Problem), (status = 403, description = "insufficient_scope", body = Problem),
              (status = 409, description = "key_limit_reached", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    caller.require("write")?;
    let input = NewKeyInput::parse(request).map_err(ApiError::validation)?;
    let (key, secret) = state
        .keys
        .create(caller.owner(), caller.key_scopes(), input)
        .await?;
    Ok((StatusCode::CREATED, Json(created(&state, &key, &secret))))
}

/// The caller's keys, newest first; revoked ones only with `include_revoked=true`.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(("include_revoked" = Option<bool>, Query, description = "also list revoked keys")),
    responses((status = 200, body = KeyList), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<KeyList>> {
    caller.require("read")?;
    let mut include_revoked = false;
    for (name, value) in &query {
        match name.as_str() {
            "include_revoked" => {
                include_revoked = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::field("include_revoked", "must be true or false")),
                }
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    let keys = state.keys.list(&caller.owner(), include_revoked).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(|key| key_view(&state.keys, key)).collect(),
    }))
}

/// One key, revoked ones included.
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    caller.require("read")?;
    let key = state
        .keys
        .get(&caller.owner(), &KeyId::from_stored(id))
        .await?;
    Ok(Json(key_view(&state.keys, &key)))
}

/// Change a key: rename, describe, meta, enable or disable, narrow its scopes, set or clear
/// its rate limit and credits. Applies on every instance from the very next request.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    request_body = UpdateKeyRequest,
    responses((status = 200, body = KeyView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, description = "insufficient_scope", body = Problem), (status = 404, body = Problem),
              (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateKeyRequest>,
) -> ApiResult<Json<KeyView>> {
    caller.require("write")?;
    let input = KeyUpdateInput::parse(request).map_err(ApiError::validation)?;
    let key = state
        .keys
        .update(
            &caller.owner(),
            caller.key_scopes(),
            &KeyId::from_stored(id),
            input,
        )
        .await?;
    Ok(Json(key_view(&state.keys, &key)))
}

/// Revoke a key: refused from the very next request on.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require("write")?;
    state
        .keys
        .revoke(&caller.owner(), &KeyId::from_stored(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a key with a new one (new id, same name, scopes and meta).
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path)),
    request_body(content = RotateKeyRequest, description = "optional"),
    responses((status = 201, body = CreatedKey), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<RotateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    caller.require("write")?;
    let (key, secret) = state
        .keys
        .rotate(
            &caller.owner(),
            caller.key_scopes(),
            &KeyId::from_stored(id),
            request.grace_period_seconds.unwrap_or(0),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created(&state, &key, &secret))))
}

/// Check a key (no other credential needed). A found key's check is metered (`/v1/usage`).
#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 400, body = Problem), (status = 422, body = Problem),
              (status = 429, description = "rate_limited: too many failed checks from this address, with Retry-After", body = Problem)))]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> ApiResult<Response> {
    let required = match request.scopes.as_deref() {
        Some(scopes) => Scopes::parse(scopes).map_err(|m| ApiError::field("scopes", m))?,
        None => Scopes::default(),
    };
    let started = Instant::now();
    let charge = Charge::verify(request.cost)?;
    let verification = match state.throttles.check_verify(ip) {
        Ok(()) => {
            state
                .keys
                .check(request.key.expose(), &required, charge)
                .await?
        }
        // An address blocked for failed checks still gets answers on the keys this instance
        // holds in memory (no database read): a platform's backend that relays one
        // customer's bad keys must not stop verifying every other customer's.
        Err(limited) => state
            .keys
            .check_cached(request.key.expose(), &required, charge)
            .ok_or(limited)?,
    };
    state.metrics.verification(verification.code.as_str());
    // A live key that lacks a scope, or is held back by its owner's policy, is not a guess:
    // it costs nothing.
    if !matches!(
        verification.code,
        VerifyCode::Valid
            | VerifyCode::InsufficientScope
            | VerifyCode::Disabled
            | VerifyCode::RateLimited
            | VerifyCode::UsageExceeded
    ) {
        if let Some(seconds) = state.throttles.verify_failed(ip) {
            return Err(crate::throttle::limited(seconds).into());
        }
    }
    let found = verification
        .key
        .as_ref()
        .filter(|_| verification.code != VerifyCode::NotFound);
    let elapsed = started.elapsed();
    let answer = match found {
        Some(key) => VerifyAnswer {
            valid: verification.code == VerifyCode::Valid,
            code: verification.code,
            key_id: Some(key.id.as_str()),
            tenant_id: Some(key.owner.tenant_id.as_str()),
            user_id: Some(key.owner.user_id.as_str()),
            scopes: Some(ScopeList(&key.scopes)),
            expires_at: Some(key.expires_at.map(Rfc3339)),
            meta: key.meta.as_deref().map(KeyMeta::as_map),
            rate_limit: verification.rate_limit.map(|decision| RateLimitState {
                limit: decision.limit.into(),
                remaining: decision.remaining.into(),
                reset: i64::try_from(decision.reset_seconds).unwrap_or(i64::MAX),
            }),
            credits: verification
                .credits
                .map(|remaining| CreditsState { remaining }),
        },
        None => VerifyAnswer::not_found(),
    };
    let body = answer.to_json()?;
    if let Some(key) = found {
        let outcome = if verification.code == VerifyCode::Valid {
            UsageOutcome::Succeeded
        } else {
            UsageOutcome::Failed
        };
        state.record_usage(
            &key.owner.tenant_id,
            &key.id,
            outcome,
            StatusCode::OK.as_u16(),
            elapsed,
        );
    }
    Ok(body)
}

/// The answer of `verify`: the fields of [`VerifyResponse`] in its order (a test holds the two
/// to the same JSON), written from the verified key without copying it. Building a
/// `VerifyResponse` cost a dozen allocations per verify (ids, scopes and meta copied into new
/// strings, then serialized and dropped) on the path issue 7 measures against the HTTP floor.
#[derive(serde::Serialize)]
struct VerifyAnswer<'a> {
    valid: bool,
    code: VerifyCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<ScopeList<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<Rfc3339>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimitState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<CreditsState>,
}

impl VerifyAnswer<'_> {
    fn not_found() -> Self {
        Self {
            valid: false,
            code: VerifyCode::NotFound,
            key_id: None,
            tenant_id: None,
            user_id: None,
            scopes: None,
            expires_at: None,
            meta: None,
            rate_limit: None,
            credits: None,
        }
    }

    /// The 200 answer, serialized once into a buffer the size of a typical answer.
    fn to_json(&self) -> ApiResult<Response> {
        let mut body = Vec::with_capacity(320);
        serde_json::to_writer(&mut body, self)
            .map_err(|error| ApiError::internal(format!("writing a verify answer: {error}")))?;
        Ok((
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response())
    }
}

/// Scopes as a JSON array of their names.
struct ScopeList<'a>(&'a Scopes);

impl serde::Serialize for ScopeList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|scope| scope.as_str()))
    }
}

/// A time as the API writes it (`2026-11-23T03:21:00Z`).
struct Rfc3339(Timestamp);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed answer and the SPEC's response type write the same JSON, byte for byte.
    #[test]
    fn the_verify_answer_is_a_verify_response() {
        let scopes = Scopes::parse(&["read".to_owned(), "write:billing".to_owned()]).unwrap();
        let meta =
            KeyMeta::parse(serde_json::json!({"plan": "pro", "quote": "a \"b\"\n"})).unwrap();
        let expires = Timestamp(1_795_000_000);
        for (expires_at, meta, limits) in [(Some(expires), Some(&meta), true), (None, None, false)]
        {
            let answer = VerifyAnswer {
                valid: true,
                code: VerifyCode::Valid,
                key_id: Some("key_0123456789abcdefghijklmn"),
                tenant_id: Some("ten_0123456789abcdefghijklmn"),
                user_id: Some("usr_0123456789abcdefghijklmn"),
                scopes: Some(ScopeList(&scopes)),
                expires_at: Some(expires_at.map(Rfc3339)),
                meta: meta.map(KeyMeta::as_map),
                rate_limit: limits.then_some(RateLimitState {
                    limit: 10,
                    remaining: 3,
                    reset: 7,
                }),
                credits: limits.then_some(CreditsState { remaining: 99 }),
            };
            let response = VerifyResponse {
                valid: true,
                code: VerifyCode::Valid,
                key_id: Some("key_0123456789abcdefghijklmn".to_owned()),
                tenant_id: Some("ten_0123456789abcdefghijklmn".to_owned()),
                user_id: Some("usr_0123456789abcdefghijklmn".to_owned()),
                scopes: Some(scopes.to_strings()),
                expires_at: Some(expires_at.map(Timestamp::to_rfc3339)),
                meta: meta.map(KeyMeta::to_value),
                rate_limit: answer.rate_limit,
                credits: answer.credits,
            };
            assert_eq!(
                serde_json::to_string(&answer).unwrap(),
                serde_json::to_string(&response).unwrap()
            );
        }
        let unknown = VerifyResponse {
            valid: false,
            code: VerifyCode::NotFound,
            key_id: None,
            tenant_id: None,
            user_id: None,
            scopes: None,
            expires_at: None,
            meta: None,
            rate_limit: None,
            credits: None,
        };
        assert_eq!(
            serde_json::to_string(&VerifyAnswer::not_found()).unwrap(),
            serde_json::to_string(&unknown).unwrap()
        );
    }
}
