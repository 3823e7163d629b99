//! `/v1/audit`: the caller's tenant's audit log (issue 8), newest first, a page at a time.
//!
//! The SPEC has no list pagination to follow, so this takes `?limit=` (1–200, default 50) and
//! `?cursor=` (the `next_cursor` of the previous page, which is the id of its last event).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use keyward_core::audit::AuditEvent;
use keyward_core::TenantId;
use keyward_proto::{paths, AuditEventView, AuditPageResponse, Problem};

use crate::error::{ApiError, ApiResult};
use crate::extract::SessionCaller;
use crate::state::AppState;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

pub fn router() -> Router<AppState> {
    Router::new().route(paths::AUDIT, get(audit))
}

/// The security events of the caller's tenant (sign-ins, failed sign-ins, logouts, password
/// changes, key and device decisions, operator commands), newest first. Session only.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("limit" = Option<u32>, Query, description = "1–200, default 50"),
           ("cursor" = Option<String>, Query, description = "the previous page's next_cursor")),
    responses((status = 200, body = AuditPageResponse), (status = 401, body = Problem),
              (status = 403, description = "session_required", body = Problem),
              (status = 422, description = "a bad limit, or a cursor that is not one of this tenant's events", body = Problem)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    SessionCaller(session): SessionCaller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<AuditPageResponse>> {
    let (limit, cursor) = parse_query(&query)?;
    let page = state
        .accounts
        .audit_page(&session.tenant_id, cursor, limit)
        .await
        .map_err(|error| match error {
            keyward_core::CoreError::NotFound => {
                ApiError::field("cursor", "is not a cursor of this audit log")
            }
            other => other.into(),
        })?;
    Ok(Json(AuditPageResponse {
        events: page.events.iter().map(event_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn parse_query(query: &HashMap<String, String>) -> ApiResult<(u32, Option<&str>)> {
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = None;
    for (name, value) in query {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        ApiError::field(
                            "limit",
                            format!("must be an integer from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "cursor" => {
                // Checked before any lookup: an id is short and plain (a NUL byte, say, would
                // be a database error on PostgreSQL, not a 422).
                let plain = value.len() <= 64
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !plain {
                    return Err(ApiError::field(
                        "cursor",
                        "is not a cursor of this audit log",
                    ));
                }
                cursor = Some(value.as_str());
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    Ok((limit, cursor))
}

pub(crate) fn event_view(event: &AuditEvent) -> AuditEventView {
    AuditEventView {
        id: event.id.to_string(),
        event_type: event.kind.as_str().to_owned(),
        actor: event.actor.clone(),
        user_id: event.user_id.as_ref().map(ToString::to_string),
        tenant_id: event
            .tenant_id
            .as_ref()
            .map(TenantId::to_string)
            .unwrap_or_default(),
        client_address: event.client_address.clone(),
        user_agent: event.user_agent.clone(),
        key_id: event.key_id.as_ref().map(ToString::to_string),
        session_id: event.session_id.as_ref().map(ToString::to_string),
        detail: event.detail.clone(),
        created_at: event.created_at.to_rfc3339(),
    }
}
