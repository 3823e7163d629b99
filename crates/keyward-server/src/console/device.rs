//! `/console/device`: where a person approves a device login (the `verification_uri` of SPEC
//! §4 "Device authorization"). Enter the code (or arrive with `?user_code=`), see which client
//! asks, then Approve or Deny. Every step goes through `DeviceService`, whose failed-attempt
//! limit covers lookups and decisions alike.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use keyward_core::{CoreError, PendingDevice, UserCode};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, SignedIn};
use super::session::{
    self, login_url, origin_allowed, purpose, see_other, ConsoleSession, Resolved,
};
use crate::state::AppState;
use crate::throttle::ClientIp;

pub const DEVICE_PATH: &str = "/console/device";

#[derive(Debug, Deserialize, Default)]
pub struct DeviceQuery {
    user_code: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct DecisionForm {
    user_code: Option<String>,
    decision: Option<String>,
    csrf: Option<String>,
}

/// What a page of this flow shows.
enum View<'a> {
    /// The code entry form, maybe with an error about what was typed.
    Enter {
        typed: &'a str,
        error: Option<&'a str>,
    },
    Confirm(&'a PendingDevice),
    Approved,
    Denied,
    UnknownCode,
    RateLimited {
        retry_after_seconds: u64,
    },
}

/// `GET /console/device[?user_code=…]`: the entry form, or the confirmation of a pending code.
pub async fn show(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    query: Result<Query<DeviceQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let typed = query.user_code.unwrap_or_default();
    let session = match ConsoleSession::resolve(&state, &headers).await {
        Ok(Resolved::SignedIn(session)) => session,
        Ok(Resolved::SignedOut { cookies }) => {
            return session::with_cookies(see_other(&login_url(&return_to(&typed))), &cookies)
        }
        Err(error) => return layout::server_error(error),
    };
    if typed.trim().is_empty() {
        return render(
            &session,
            StatusCode::OK,
            View::Enter {
                typed: "",
                error: None,
            },
        );
    }
    let Ok(user_code) = UserCode::parse(&typed) else {
        return render(
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            View::Enter {
                typed: &typed,
                error: Some("That is not a device code: it has 8 letters, shown as XXXX-XXXX."),
            },
        );
    };
    let lookup = state.device.pending(&session.auth, &user_code);
    match crate::throttle::device_entry(&state, ip, lookup).await {
        Ok(pending) => render(&session, StatusCode::OK, View::Confirm(&pending)),
        Err(error) => render_error(&session, error),
    }
}

/// `POST /console/device`: Approve or Deny, after the origin and CSRF checks.
pub async fn decide(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    if !origin_allowed(&state, &headers) {
        return layout::forbidden();
    }
    let Ok(Form(form)) = form else {
        return layout::bad_form();
    };
    let typed = form.user_code.unwrap_or_default();
    let session = match ConsoleSession::resolve(&state, &headers).await {
        Ok(Resolved::SignedIn(session)) => session,
        Ok(Resolved::SignedOut { cookies }) => {
            return session::with_cookies(see_other(&login_url(&return_to(&typed))), &cookies)
        }
        Err(error) => return layout::server_error(error),
    };
    if !session.csrf_valid(purpose::DEVICE, form.csrf.as_deref()) {
        return session.respond(layout::forbidden());
    }
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => return session.respond(layout::bad_form()),
    };
    let Ok(user_code) = UserCode::parse(&typed) else {
        return render(
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            View::Enter {
                typed: &typed,
                error: Some("That is not a device code: it has 8 letters, shown as XXXX-XXXX."),
            },
        );
    };
    let decision = state.device.decide(&session.auth, &user_code, approve);
    match crate::throttle::device_entry(&state, ip, decision).await {
        Ok(()) if approve => render(&session, StatusCode::OK, View::Approved),
        Ok(()) => render(&session, StatusCode::OK, View::Denied),
        Err(error) => render_error(&session, error),
    }
}

/// The page to come back to after signing in: this one, with the code typed so far.
fn return_to(typed: &str) -> String {
    match UserCode::parse(typed) {
        Ok(code) => format!("{DEVICE_PATH}?user_code={}", code.display()),
        Err(_) => DEVICE_PATH.to_owned(),
    }
}

fn render_error(session: &ConsoleSession, error: CoreError) -> Response {
    match error {
        CoreError::NotFound => render(session, StatusCode::NOT_FOUND, View::UnknownCode),
        CoreError::RateLimited {
            retry_after_seconds,
        } => layout::with_retry_after(
            render(
                session,
                StatusCode::TOO_MANY_REQUESTS,
                View::RateLimited {
                    retry_after_seconds,
                },
            ),
            retry_after_seconds,
        ),
        other => session.respond(layout::server_error(other)),
    }
}

fn render(session: &ConsoleSession, status: StatusCode, view: View<'_>) -> Response {
    let logout_csrf = session.csrf(purpose::LOGOUT);
    let (title, content) = content(session, view);
    session.respond(layout::html(
        status,
        layout::section_page(
            title,
            SignedIn {
                logout_csrf: &logout_csrf,
            },
            DEVICE_PATH,
            content,
        ),
    ))
}

fn content(session: &ConsoleSession, view: View<'_>) -> (&'static str, Markup) {
    match view {
        View::Enter { typed, error } => ("Approve a device", enter_form(typed, error)),
        View::Confirm(pending) => {
            let csrf = session.csrf(purpose::DEVICE);
            let code = pending.user_code.display();
            let client = pending
                .client_name
                .as_deref()
                .unwrap_or("An unnamed client");
            (
                "Approve a device",
                html! {
                    h1 { "Approve this device?" }
                    p { strong { (client) } " asks to sign in to Keyward as you." }
                    p { "Check that this code matches the one your terminal shows:" }
                    p.code-shown { (code) }
                    p.muted {
                        "Approving creates an API key named " code { "cli" }
                        " for that client. Only approve a request you started yourself."
                    }
                    form method="post" action=(DEVICE_PATH) {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="user_code" value=(code);
                        div.actions {
                            button type="submit" name="decision" value="approve" { "Approve" }
                            button.secondary type="submit" name="decision" value="deny" { "Deny" }
                        }
                    }
                },
            )
        }
        View::Approved => (
            "Device approved",
            html! {
                h1 { "Device approved" }
                p.notice.success role="status" {
                    "The device is signed in. Return to your terminal: it will finish on its own."
                }
                p.muted { "You can close this page." }
            },
        ),
        View::Denied => (
            "Request denied",
            html! {
                h1 { "Request denied" }
                p.notice.success role="status" {
                    "The request was denied; the device gets no access. If it was not you who started it, nothing more is needed."
                }
                p { a href=(DEVICE_PATH) { "Enter another code" } }
            },
        ),
        View::UnknownCode => (
            "Unknown code",
            html! {
                h1 { "This code is not valid" }
                p.notice.error role="alert" {
                    "The code is unknown, has expired, or was already used. Check it against your terminal, or start the login again there (codes last 10 minutes)."
                }
                (enter_form("", None))
            },
        ),
        View::RateLimited {
            retry_after_seconds,
        } => {
            let minutes = retry_after_seconds.div_ceil(60).max(1);
            let unit = if minutes == 1 { "minute" } else { "minutes" };
            (
                "Too many attempts",
                html! {
                    h1 { "Too many attempts" }
                    p.notice.error role="alert" {
                        "Too many wrong codes were entered. Try again in " (minutes) " " (unit) "."
                    }
                },
            )
        }
    }
}

/// The code entry form: a GET, as it only looks the code up (and `verification_uri_complete`
/// is a GET link to the same page). Approving takes the CSRF-checked POST.
fn enter_form(typed: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Approve a device" }
        @if let Some(error) = error {
            p.notice.error role="alert" { (error) }
        }
        form method="get" action=(DEVICE_PATH) {
            label for="user_code" { "Enter the code shown by your device" }
            input #user_code.code type="text" name="user_code" value=(typed)
                placeholder="XXXX-XXXX" maxlength="20" autocomplete="off"
                autocapitalize="characters" spellcheck="false" required autofocus;
            div.actions { button type="submit" { "Continue" } }
        }
    }
}
