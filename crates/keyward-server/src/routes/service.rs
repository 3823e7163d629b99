//! Service endpoints: health, readiness, metrics, OpenAPI, JWKS, and the 404/405 fallbacks.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use keyward_proto::{paths, ErrorCode, HealthResponse, JwkSet, Problem};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
        .route(paths::OPENAPI, get(openapi))
        .route(paths::JWKS, get(jwks))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = HealthResponse)))]
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses((status = 200, body = HealthResponse), (status = 503, description = "unavailable", body = Problem)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<HealthResponse>> {
    state.store.ping().await.map_err(|error| ApiError {
        cause: Some(error.to_string()),
        ..ApiError::new(ErrorCode::Unavailable, "The database is unreachable.")
    })?;
    Ok(Json(HealthResponse {
        status: "ok".into(),
    }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

/// Public keys of the access-token signing keys (RFC 7517), for offline verification.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "service", responses((status = 200, body = JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> Json<JwkSet> {
    Json(state.accounts.signer().jwks())
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No such route; see /openapi.json.")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This route does not accept this method; see /openapi.json.",
    )
}
