//! `/console/usage`: the last 30 days of the tenant's metered requests (verify calls and
//! gateway requests): summary cards, the chart of [`super::chart`], and a key filter. The same
//! numbers as `GET /v1/usage`, read through the same `UsageService::report`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyward_core::KeyId;
use keyward_proto::display::{milliseconds, percent, thousands};
use keyward_proto::UsageResponse;
use maud::{html, Markup};
use serde::Deserialize;

use super::chart::{self, FAILED_COLOR, IN_FLIGHT_COLOR, SUCCEEDED_COLOR};
use super::layout::{self, wide_page, SignedIn};
use super::session::{purpose, require_session};
use crate::state::AppState;

pub const USAGE_PATH: &str = "/console/usage";
const DAYS: u32 = 30;

#[derive(Debug, Deserialize, Default)]
pub struct UsageQuery {
    key_id: Option<String>,
}

/// `GET /console/usage[?key_id=…]`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let session = match require_session(&state, &headers, USAGE_PATH).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let owner = keyward_core::store::Owner {
        user_id: session.auth.user_id.clone(),
        tenant_id: session.auth.tenant_id.clone(),
    };
    let keys = match state.keys.list(&owner, true).await {
        Ok(keys) => keys,
        Err(error) => return session.respond(layout::server_error(error)),
    };
    // An empty filter (the "All keys" choice) is no filter; an unknown key is not an error
    // page, just a filter that is not offered: show the whole tenant and say so.
    let wanted = query.key_id.filter(|id| !id.is_empty());
    let selected = wanted
        .as_deref()
        .and_then(|id| keys.iter().find(|key| key.id.as_str() == id));
    let unknown_filter = wanted.is_some() && selected.is_none();
    let key_id: Option<KeyId> = selected.map(|key| key.id.clone());
    let report = match state
        .usage
        .report(&owner.tenant_id, key_id.as_ref(), DAYS)
        .await
    {
        Ok(report) => report,
        Err(error) => return session.respond(layout::server_error(error)),
    };
    let options: Vec<(String, String)> = keys
        .iter()
        .map(|key| {
            let revoked = if key.revoked_at.is_some() {
                " (revoked)"
            } else {
                ""
            };
            (
                key.id.as_str().to_owned(),
                format!("{}{revoked}", key.name.as_str()),
            )
        })
        .collect();
    let logout_csrf = session.csrf(purpose::LOGOUT);
    let status = if unknown_filter {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let content = content(
        &report,
        &options,
        key_id.as_ref().map(KeyId::as_str),
        unknown_filter,
    );
    session.respond(layout::html(
        status,
        wide_page(
            "Usage",
            SignedIn {
                logout_csrf: &logout_csrf,
            },
            USAGE_PATH,
            content,
        ),
    ))
}

fn content(
    report: &UsageResponse,
    keys: &[(String, String)],
    selected: Option<&str>,
    unknown_filter: bool,
) -> Markup {
    html! {
        div.toolbar {
            h1 { "Usage" }
            form method="get" action=(USAGE_PATH) {
                div {
                    label for="key_id" { "Key" }
                    select #key_id name="key_id" {
                        option value="" selected[selected.is_none()] { "All keys" }
                        @for (id, name) in keys {
                            option value=(id) selected[selected == Some(id.as_str())] { (name) }
                        }
                    }
                }
                button.secondary type="submit" { "Show" }
            }
        }
        @if unknown_filter {
            p.notice.error role="alert" { "That key is not one of yours. Showing all keys instead." }
        }
        p.muted { "The last " (DAYS) " days, " (report.from) " to " (report.to) " (UTC). Verify calls and gateway requests made with your keys appear here within seconds." }
        div.cards {
            (stat("Executions", &thousands(report.executions)))
            (stat("Success rate", &report.success_rate.map_or("—".to_owned(), percent)))
            (stat("Avg duration", &report.avg_duration_ms.map_or("—".to_owned(), milliseconds)))
            @if report.in_flight > 0 {
                (stat("In flight", &thousands(report.in_flight)))
            }
        }
        @if report.executions == 0 {
            div.empty {
                p { strong { "No requests yet" } }
                p { "Nothing was metered in these " (DAYS) " days. Verify a key with " code { "POST /v1/keys/verify" } " or send a request through the gateway, and it shows here." }
            }
        } @else {
            div.chart-wrap { (chart::usage_chart(report)) }
            ul.legend {
                li { span.swatch style={ "background:" (SUCCEEDED_COLOR) } {} "Succeeded (" (thousands(report.succeeded)) ")" }
                li { span.swatch style={ "background:" (FAILED_COLOR) } {} "Failed (" (thousands(report.failed)) ")" }
                li { span.swatch style={ "background:" (IN_FLIGHT_COLOR) } {} "In flight (" (thousands(report.in_flight)) ")" }
            }
        }
    }
}

fn stat(name: &str, value: &str) -> Markup {
    html! {
        div.stat {
            span.name { (name) }
            span.value data-stat=(name) { (value) }
        }
    }
}
