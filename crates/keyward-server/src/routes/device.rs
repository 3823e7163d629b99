//! `/v1/auth/device/*`: the device authorization grant (RFC 8628) behind `keyward login`
//! (SPEC §4).
//!
//! The code and token endpoints take JSON or form bodies, as OAuth clients send forms. The
//! token endpoint alone answers its errors in the RFC 6749 §5.2 format (`{"error": …}`, 400,
//! `application/json`), so OAuth client libraries can poll it; a failure of ours (the database
//! down) is still a problem+json 5xx.

use axum::extract::{Request, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keyward_core::{DeviceCode, UserCode};
use keyward_proto::{
    paths, DeviceApproveRequest, DeviceCodeRequest, DeviceCodeResponse, DeviceTokenRequest,
    DeviceTokenResponse, OAuthError, Problem, Secret, DEVICE_CODE_GRANT_TYPE,
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, OwnErrorBody};
use crate::extract::{media_type, parse_json, read_body, ApiJson, SessionCaller};
use crate::state::AppState;
use crate::throttle::ClientIp;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::DEVICE_CODE, post(device_code))
        .route(paths::DEVICE_TOKEN, post(device_token))
        .route(paths::DEVICE_APPROVE, post(approve))
}

/// Start a device login: a secret device code for the client, a short user code for the person.
#[utoipa::path(post, path = "/v1/auth/device/code", tag = "device",
    request_body(description = "optional; JSON or form",
        content((DeviceCodeRequest = "application/json"), (DeviceCodeRequest = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = DeviceCodeResponse), (status = 400, body = Problem),
              (status = 422, description = "client_name invalid", body = Problem),
              (status = 429, description = "rate_limited, with Retry-After", body = Problem)))]
pub async fn device_code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request: Request,
) -> ApiResult<Response> {
    state.throttles.device_code(ip)?;
    let body: DeviceCodeRequest = form_or_json(request, &state).await?;
    let started = state.device.start(body.client_name).await?;
    let response = DeviceCodeResponse {
        device_code: Secret::new(started.device_code.expose()),
        user_code: started.user_code.display(),
        verification_uri: started.verification_uri,
        verification_uri_complete: started.verification_uri_complete,
        expires_in: started.expires_in.max(0) as u64,
        interval: started.interval.max(0) as u64,
    };
    Ok(([(CACHE_CONTROL, "no-store")], Json(response)).into_response())
}

/// Poll for the key. Errors are RFC 6749 §5.2 JSON: `authorization_pending`, `slow_down`,
/// `access_denied` (also when the approving user is at the key limit), `expired_token`
/// (expired or unknown), `invalid_grant` (already redeemed), `invalid_request`,
/// `unsupported_grant_type`.
#[utoipa::path(post, path = "/v1/auth/device/token", tag = "device",
    request_body(description = "form or JSON",
        content((DeviceTokenRequest = "application/x-www-form-urlencoded"), (DeviceTokenRequest = "application/json"))),
    responses((status = 200, body = DeviceTokenResponse),
              (status = 400, description = "RFC 6749 §5.2 error (application/json)", body = OAuthError)))]
pub async fn device_token(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let body: DeviceTokenRequest = match form_or_json(request, &state).await {
        Ok(body) => body,
        Err(error) => return Ok(oauth_error("invalid_request", error.detail)),
    };
    if body
        .grant_type
        .as_deref()
        .is_some_and(|grant| grant != DEVICE_CODE_GRANT_TYPE)
    {
        return Ok(oauth_error(
            "unsupported_grant_type",
            format!("grant_type must be {DEVICE_CODE_GRANT_TYPE}"),
        ));
    }
    let Some(code) = body.device_code.filter(|code| !code.expose().is_empty()) else {
        return Ok(oauth_error("invalid_request", "device_code is required"));
    };
    match state
        .device
        .poll(&DeviceCode::presented(code.into_inner()))
        .await?
    {
        Ok((key, secret)) => Ok((
            [(CACHE_CONTROL, "no-store")],
            Json(DeviceTokenResponse {
                api_key: Secret::new(secret.expose()),
                key_id: key.id.to_string(),
                token_type: "api_key".into(),
            }),
        )
            .into_response()),
        Err(refusal) => Ok(oauth_error(refusal.code(), refusal.description())),
    }
}

/// Approve (or deny) a device login as the signed-in user; the minted key will be theirs.
/// Unknown, expired and already decided codes are 404; after 10 such failures in 10 minutes a
/// user gets 429 `rate_limited` until the oldest ages out, and so does a client address past
/// `rate_limits.device_entry_failures_per_address`.
#[utoipa::path(post, path = "/v1/auth/device/approve", tag = "device", request_body = DeviceApproveRequest,
    responses((status = 204), (status = 401, body = Problem), (status = 403, description = "session_required", body = Problem),
              (status = 404, description = "unknown, expired or already decided code", body = Problem),
              (status = 422, body = Problem), (status = 429, description = "rate_limited, with Retry-After", body = Problem)),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    SessionCaller(session): SessionCaller,
    ApiJson(request): ApiJson<DeviceApproveRequest>,
) -> ApiResult<StatusCode> {
    let user_code =
        UserCode::parse(&request.user_code).map_err(|m| ApiError::field("user_code", m))?;
    let decision = state.device.decide(&session, &user_code, request.approve);
    crate::throttle::device_entry(&state, ip, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn oauth_error(error: &str, description: impl Into<String>) -> Response {
    let mut response = (
        StatusCode::BAD_REQUEST,
        [(CACHE_CONTROL, "no-store")],
        Json(OAuthError {
            error: error.to_owned(),
            error_description: Some(description.into()),
        }),
    )
        .into_response();
    response.extensions_mut().insert(OwnErrorBody);
    response
}

/// A body sent as `application/x-www-form-urlencoded` or as JSON; an empty one is the default.
async fn form_or_json<T: DeserializeOwned + Default>(
    request: Request,
    state: &AppState,
) -> ApiResult<T> {
    let media = media_type(request.headers()).map(str::to_ascii_lowercase);
    let bytes = read_body(request, state).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => serde_urlencoded::from_bytes(&bytes)
            .map_err(|error| {
                ApiError::bad_request(format!("The form body could not be read: {error}"))
            }),
        Some("application/json") => parse_json(&bytes),
        _ => Err(ApiError::bad_request(
            "Send the body as JSON (application/json) or as a form (application/x-www-form-urlencoded).",
        )),
    }
}
