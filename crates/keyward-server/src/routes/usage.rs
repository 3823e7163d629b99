//! `/v1/usage`: the caller's tenant's metered requests per UTC day (SPEC §4 "Usage").

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use keyward_core::{KeyId, MAX_USAGE_DAYS};
use keyward_proto::{paths, Problem, UsageResponse};

use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;
use crate::state::AppState;

const DEFAULT_DAYS: u32 = 30;

pub fn router() -> Router<AppState> {
    Router::new().route(paths::USAGE, get(usage))
}

/// Metered requests (verify calls, gateway requests) of the caller's tenant, or of one of the
/// caller's keys, over the last `days` UTC days, today included.
#[utoipa::path(get, path = "/v1/usage", tag = "usage",
    params(("days" = Option<u32>, Query, description = "1–90, default 30"),
           ("key_id" = Option<String>, Query, description = "only this key of the caller")),
    responses((status = 200, body = UsageResponse), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, description = "key_id is not the caller's key", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<UsageResponse>> {
    caller.require("read")?;
    let (days, key_id) = parse_query(&query)?;
    let owner = caller.owner();
    if let Some(key_id) = &key_id {
        // Another user's key is absent: 404, as everywhere else.
        state.keys.get(&owner, key_id).await?;
    }
    let report = state
        .usage
        .report(&owner.tenant_id, key_id.as_ref(), days)
        .await?;
    Ok(Json(report))
}

fn parse_query(query: &HashMap<String, String>) -> ApiResult<(u32, Option<KeyId>)> {
    let mut days = DEFAULT_DAYS;
    let mut key_id = None;
    for (name, value) in query {
        match name.as_str() {
            "days" => {
                days = value
                    .parse::<u32>()
                    .ok()
                    .filter(|days| (1..=MAX_USAGE_DAYS).contains(days))
                    .ok_or_else(|| {
                        ApiError::field(
                            "days",
                            format!("must be an integer from 1 to {MAX_USAGE_DAYS}"),
                        )
                    })?;
            }
            "key_id" => key_id = Some(KeyId::from_stored(value.clone())),
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    Ok((days, key_id))
}
