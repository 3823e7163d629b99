//! `/v1/auth/*` and `/v1/tenant`: accounts and sessions (SPEC §4).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::{IssuedTokens, Password, Profile, RefreshToken, RegisterInput};
use keyward_proto::{
    paths, AuthInfo, CreatedKey, LoginRequest, LogoutRequest, MeResponse, PasswordChangeRequest,
    Problem, RefreshRequest, RegisterRequest, RegisterResponse, Secret, TenantRef, TenantView,
    TokenPair,
};

use super::{key_view, tenant_view, user_view};
use crate::error::{ApiError, ApiResult};
use crate::extract::{user_agent, ApiJson, Caller, OptionalJson, SessionCaller};
use crate::state::AppState;
use crate::throttle::ClientIp;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::REGISTER, post(register))
        .route(paths::LOGIN, post(login))
        .route(paths::REFRESH, post(refresh))
        .route(paths::LOGOUT, post(logout))
        .route(paths::ME, get(me))
        .route(paths::PASSWORD, post(change_password))
        .route(paths::TENANT, get(tenant))
}

fn token_pair(tokens: IssuedTokens) -> TokenPair {
    TokenPair {
        access_token: Secret::new(tokens.access_token.expose()),
        refresh_token: Secret::new(tokens.refresh_token.expose()),
        token_type: "bearer".into(),
        expires_in: tokens.expires_in.max(0) as u64,
    }
}

/// Create a user and their tenant; the user is its owner.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 409, description = "email_taken", body = Problem),
              (status = 422, body = Problem), (status = 400, body = Problem),
              (status = 429, description = "rate_limited, with Retry-After", body = Problem),
              (status = 503, description = "unavailable: password hashing is saturated, with Retry-After", body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let input = RegisterInput::parse(request).map_err(ApiError::validation)?;
    // Counted once well-formed: a registration that would hash a password and make an account.
    state.throttles.register(ip)?;
    let registered = state.accounts.register(input, user_agent(&headers)).await?;
    let api_key = registered.api_key.map(|(key, secret)| {
        CreatedKey::new(Secret::new(secret.expose()), key_view(&state.keys, &key))
    });
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user: user_view(&Profile::new(&registered.user, registered.tenant.clone())),
            tenant: tenant_view(&registered.tenant),
            tokens: token_pair(registered.tokens),
            api_key,
        }),
    ))
}

/// Exchange email (or `username`) and password for a token pair.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "invalid_credentials", body = Problem),
              (status = 403, description = "forbidden: the right password, but an operator disabled the account", body = Problem),
              (status = 422, body = Problem),
              (status = 429, description = "rate_limited: too many failed logins for the account or address, with Retry-After", body = Problem),
              (status = 503, description = "unavailable: password hashing is saturated, with Retry-After", body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenPair>> {
    let email = request
        .email
        .ok_or_else(|| ApiError::field("email", "missing field `email` (or `username`)"))?;
    let password = Password::presented(request.password.into_inner());
    let tokens =
        crate::throttle::login(&state, ip, &email, &password, user_agent(&headers)).await?;
    Ok(Json(token_pair(tokens)))
}

/// Spend a refresh token for a new pair (rotation with reuse detection).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "invalid_token", body = Problem),
              (status = 429, description = "rate_limited, with Retry-After", body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    state.throttles.refresh(ip)?;
    let token = RefreshToken::presented(request.refresh_token.into_inner());
    Ok(Json(token_pair(state.accounts.refresh(&token).await?)))
}

/// End this session, or with `all` every session of the user.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body(content = LogoutRequest, description = "optional"),
    responses((status = 204), (status = 401, body = Problem), (status = 403, description = "session_required", body = Problem)),
    security(("bearer" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
    OptionalJson(request): OptionalJson<LogoutRequest>,
) -> ApiResult<StatusCode> {
    state
        .accounts
        .logout(&session, request.all.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who am I: the user, tenant and how this request authenticated.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth",
    responses((status = 200, body = MeResponse), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<MeResponse>> {
    let owner = caller.owner();
    let profile = state
        .accounts
        .profile(&owner.user_id, &owner.tenant_id)
        .await?;
    let (key_id, scopes) = match &caller {
        Caller::Session(_) => (None, vec!["admin".to_owned()]),
        Caller::Key(key) => (Some(key.id.to_string()), key.scopes.to_strings()),
    };
    Ok(Json(MeResponse {
        user: user_view(&profile),
        tenant: TenantRef {
            id: profile.tenant.id.to_string(),
            name: profile.tenant.name.clone(),
        },
        auth: AuthInfo {
            method: caller.method(),
            key_id,
            scopes,
        },
    }))
}

/// Change the password; every other session of the user ends.
#[utoipa::path(post, path = "/v1/auth/password", tag = "auth", request_body = PasswordChangeRequest,
    responses((status = 204), (status = 401, body = Problem), (status = 403, description = "session_required", body = Problem),
              (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
    ApiJson(request): ApiJson<PasswordChangeRequest>,
) -> ApiResult<StatusCode> {
    let current = Password::presented(request.current_password.into_inner());
    state
        .accounts
        .change_password(&session, &current, request.new_password.into_inner())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's tenant.
#[utoipa::path(get, path = "/v1/tenant", tag = "auth",
    responses((status = 200, body = TenantView), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn tenant(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TenantView>> {
    let owner = caller.owner();
    let profile = state
        .accounts
        .profile(&owner.user_id, &owner.tenant_id)
        .await?;
    Ok(Json(tenant_view(&profile.tenant)))
}
