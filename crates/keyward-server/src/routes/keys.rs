//! `/v1/keys*`: create, list, get, revoke, rotate and verify API keys (SPEC §4).

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::{Charge, KeyId, KeyUpdateInput, NewKeyInput, Scopes, UsageOutcome};
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
) -> ApiResult<Json<VerifyResponse>> {
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
    if let (Some(key), true) = (&verification.key, verification.code != VerifyCode::NotFound) {
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
            started.elapsed(),
        );
    }
    let response = match verification.key {
        Some(key) if verification.code != VerifyCode::NotFound => VerifyResponse {
            valid: verification.code == VerifyCode::Valid,
            code: verification.code,
            key_id: Some(key.id.to_string()),
            tenant_id: Some(key.owner.tenant_id.to_string()),
            user_id: Some(key.owner.user_id.to_string()),
            scopes: Some(key.scopes.to_strings()),
            expires_at: Some(key.expires_at.map(|t| t.to_rfc3339())),
            meta: key.meta.as_ref().map(|m| m.to_value()),
            rate_limit: verification.rate_limit.map(|decision| RateLimitState {
                limit: decision.limit.into(),
                remaining: decision.remaining.into(),
                reset: i64::try_from(decision.reset_seconds).unwrap_or(i64::MAX),
            }),
            credits: verification
                .credits
                .map(|remaining| CreditsState { remaining }),
        },
        _ => VerifyResponse {
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
        },
    };
    Ok(Json(response))
}
