//! `/v1/webhooks*` (SPEC §4 "Webhooks"): a user's webhooks and their deliveries. Session only,
//! like the audit log: a webhook carries a signing secret and says where events go, which is
//! the account owner's business, not an API key's. Another user's webhook is 404.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keyward_core::store::Owner;
use keyward_core::webhooks::{DeliveryRecord, DeliveryState, NewWebhookInput, WebhookRecord};
use keyward_core::WebhookId;
use keyward_proto::{
    paths, CreateWebhookRequest, CreatedWebhook, DeliveryAttemptView, DeliveryList, DeliveryStatus,
    DeliveryView, Problem, Secret, WebhookList, WebhookView,
};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, SessionCaller};
use crate::state::AppState;

pub const DEFAULT_DELIVERIES: u32 = 50;
pub const MAX_DELIVERIES: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::WEBHOOKS, post(create).get(list))
        .route(paths::WEBHOOK, delete(remove))
        .route(paths::WEBHOOK_DELIVERIES, get(deliveries))
}

fn owner(session: &keyward_core::Authenticated) -> Owner {
    Owner {
        user_id: session.user_id.clone(),
        tenant_id: session.tenant_id.clone(),
    }
}

fn view(webhook: &WebhookRecord) -> WebhookView {
    WebhookView {
        id: webhook.id.to_string(),
        url: webhook.url.clone(),
        events: webhook
            .events
            .iter()
            .map(|event| event.as_str().to_owned())
            .collect(),
        created_at: webhook.created_at.to_rfc3339(),
    }
}

fn delivery_view(delivery: &DeliveryRecord) -> DeliveryView {
    DeliveryView {
        id: delivery.id.to_string(),
        event: delivery.event.clone(),
        status: match delivery.state {
            DeliveryState::Pending => DeliveryStatus::Pending,
            DeliveryState::Delivered => DeliveryStatus::Delivered,
            DeliveryState::Failed => DeliveryStatus::Failed,
        },
        created_at: delivery.created_at.to_rfc3339(),
        next_attempt_at: delivery.next_attempt_at.map(|at| at.to_rfc3339()),
        attempts: delivery
            .attempts
            .iter()
            .map(|attempt| DeliveryAttemptView {
                at: attempt.at.to_rfc3339(),
                status_code: attempt.status_code,
                error: attempt.error.clone(),
                duration_ms: attempt.duration_ms,
            })
            .collect(),
    }
}

/// Create a webhook. Its signing secret is in this answer only. A user may have 10; the 11th
/// is 422 `validation_failed` on `url`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhookRequest,
    responses((status = 201, body = CreatedWebhook), (status = 401, body = Problem),
              (status = 403, description = "session_required", body = Problem),
              (status = 422, description = "a bad url or event, or the webhook limit", body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
    ApiJson(request): ApiJson<CreateWebhookRequest>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let input = NewWebhookInput::parse(request).map_err(ApiError::validation)?;
    let (webhook, secret) = state.webhooks.create(owner(&session), input).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            view: view(&webhook),
            secret: Secret::new(secret.expose()),
        }),
    ))
}

/// The caller's webhooks, oldest first, without their secrets.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 401, body = Problem),
              (status = 403, description = "session_required", body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
) -> ApiResult<Json<WebhookList>> {
    let webhooks = state.webhooks.list(&owner(&session)).await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.iter().map(view).collect(),
    }))
}

/// Delete a webhook; its pending deliveries are never sent.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem),
              (status = 403, description = "session_required", body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .webhooks
        .delete(&owner(&session), &WebhookId::from_stored(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's deliveries, newest first, each with its attempts (oldest first).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), ("limit" = Option<u32>, Query, description = "1–100, default 50")),
    responses((status = 200, body = DeliveryList), (status = 401, body = Problem),
              (status = 403, description = "session_required", body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<DeliveryList>> {
    let mut limit = DEFAULT_DELIVERIES;
    for (name, value) in &query {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|limit| (1..=MAX_DELIVERIES).contains(limit))
                    .ok_or_else(|| {
                        ApiError::field(
                            "limit",
                            format!("must be an integer from 1 to {MAX_DELIVERIES}"),
                        )
                    })?;
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    let deliveries = state
        .webhooks
        .deliveries(&owner(&session), &WebhookId::from_stored(id), limit)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.iter().map(delivery_view).collect(),
    }))
}
