//! `/console/account`: who is signed in (email, name, tenant name and id), their live sessions
//! (device, signed in, last active) with sign-out of one or of all, and the password change.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use keyward_core::audit::AuditEvent;
use keyward_core::store::SessionSummary;
use keyward_core::{CoreError, Password, SessionId};
use keyward_proto::{FieldError, Secret};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, wide_page, SignedIn};
use super::session::{
    checked_post, clearing_cookies, purpose, require_session, see_other, with_cookies,
    ConsoleSession, WithCsrf, LOGIN_PATH,
};
use crate::state::AppState;

pub const ACCOUNT_PATH: &str = "/console/account";
pub const END_SESSION_PATH: &str = "/console/account/sessions/end";
pub const END_ALL_PATH: &str = "/console/account/sessions/end-all";
pub const PASSWORD_PATH: &str = "/console/account/password";
/// How many of the latest audit events the account page shows (all are at `GET /v1/audit`).
pub const AUDIT_EVENTS_SHOWN: u32 = 20;

#[derive(Debug, Deserialize, Default)]
pub struct AccountQuery {
    /// `?done=…` after a change: which notice to show.
    done: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct EndSessionForm {
    #[serde(default)]
    id: String,
    csrf: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

impl WithCsrf for EndSessionForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl WithCsrf for CsrfOnly {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl WithCsrf for PasswordForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// The password change; every field a [`Secret`], so none reaches a log or a Debug print.
#[derive(Debug, Deserialize, Default)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: Secret,
    #[serde(default)]
    new_password: Secret,
    #[serde(default)]
    confirm_password: Secret,
    csrf: Option<String>,
}

/// `GET /console/account`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AccountQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let session = match require_session(&state, &headers, ACCOUNT_PATH).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let notice = match query.done.as_deref() {
        Some("session") => Some("The session is signed out."),
        Some("password") => Some("Your password is changed. Your other sessions are signed out."),
        _ => None,
    };
    render(&state, &session, StatusCode::OK, notice, &[]).await
}

async fn render(
    state: &AppState,
    session: &ConsoleSession,
    status: StatusCode,
    notice: Option<&str>,
    password_errors: &[FieldError],
) -> Response {
    let auth = &session.auth;
    let profile = match state.accounts.profile(&auth.user_id, &auth.tenant_id).await {
        Ok(found) => found,
        Err(error) => return session.respond(layout::server_error(error)),
    };
    let sessions = match state.accounts.sessions(auth).await {
        Ok(sessions) => sessions,
        Err(error) => return session.respond(layout::server_error(error)),
    };
    let events = match state
        .accounts
        .audit_page(&auth.tenant_id, None, AUDIT_EVENTS_SHOWN)
        .await
    {
        Ok(page) => page.events,
        Err(error) => return session.respond(layout::server_error(error)),
    };
    let csrf = session.csrf(purpose::ACCOUNT);
    let logout_csrf = session.csrf(purpose::LOGOUT);
    let content = html! {
        h1 { "Account" }
        @if let Some(notice) = notice {
            p.notice.success role="status" { (notice) }
        }
        section aria-labelledby="profile-title" {
            h2 #profile-title { "Profile" }
            dl.facts {
                dt { "Email" } dd { (profile.email.as_str()) }
                @if let Some(name) = &profile.name { dt { "Name" } dd { (name) } }
                dt { "Organization" } dd { (profile.tenant.name) }
                dt { "Organization id" } dd { code { (profile.tenant.id.as_str()) } }
            }
        }
        section aria-labelledby="sessions-title" {
            h2 #sessions-title { "Sessions" }
            p.muted { "Where you are signed in. Last active is the sign-in or the latest token refresh (every 15 minutes while in use)." }
            (sessions_table(&sessions, &auth.session_id, &csrf))
            form method="post" action=(END_ALL_PATH) {
                input type="hidden" name="csrf" value=(csrf);
                div.actions { button.secondary type="submit" { "Sign out everywhere" } }
            }
        }
        section aria-labelledby="password-title" {
            h2 #password-title { "Change password" }
            (password_form(&csrf, password_errors))
        }
        section aria-labelledby="activity-title" {
            h2 #activity-title { "Security activity" }
            p.muted { "The latest security events of your organization: sign-ins, failed sign-ins, sign-outs, password changes, keys and device logins. All of them are at GET /v1/audit." }
            (audit_table(&events))
        }
    };
    session.respond(layout::html(
        status,
        wide_page(
            "Account",
            SignedIn {
                logout_csrf: &logout_csrf,
            },
            ACCOUNT_PATH,
            content,
        ),
    ))
}

fn sessions_table(sessions: &[SessionSummary], current: &SessionId, csrf: &str) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr { th scope="col" { "Device" } th scope="col" { "Signed in" } th scope="col" { "Last active" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for listed in sessions {
                        @let device = listed.device.as_deref().unwrap_or("Unknown device");
                        tr data-session-id=(listed.id.as_str()) {
                            td { (device) }
                            td { (super::keys::when(listed.created_at)) }
                            td { (super::keys::when(listed.last_used_at)) }
                            td {
                                @if &listed.id == current {
                                    span.status { "This browser" }
                                } @else {
                                    form method="post" action=(END_SESSION_PATH) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="id" value=(listed.id.as_str());
                                        button.secondary type="submit" aria-label={ "Sign out " (device) } { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "No events yet." }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Actor" } th scope="col" { "Address" } th scope="col" { "Client" } th scope="col" { "Details" } } }
                    tbody {
                        @for event in events {
                            tr data-audit-id=(event.id.as_str()) {
                                td { (super::keys::when(event.created_at)) }
                                td { code { (event.kind.as_str()) } }
                                td { code { (event.actor) } }
                                td { (event.client_address.as_deref().unwrap_or("—")) }
                                td { (event.user_agent.as_deref().unwrap_or("—")) }
                                td {
                                    @if let Some(key) = &event.key_id { code { (key.as_str()) } " " }
                                    @if let Some(detail) = &event.detail { (detail) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn password_form(csrf: &str, errors: &[FieldError]) -> Markup {
    let field = |id: &'static str, label: &'static str, autocomplete: &'static str| {
        let message = errors
            .iter()
            .find(|e| e.field == id)
            .map(|e| e.message.clone());
        html! {
            label for=(id) { (label) }
            input id=(id) type="password" name=(id) autocomplete=(autocomplete) required
                aria-invalid=[message.as_ref().map(|_| "true")];
            @if let Some(message) = message {
                p.field-error role="alert" { (label) " " (message) }
            }
        }
    };
    html! {
        div.narrow { form method="post" action=(PASSWORD_PATH) {
            input type="hidden" name="csrf" value=(csrf);
            (field("current_password", "Current password", "current-password"))
            (field("new_password", "New password", "new-password"))
            (field("confirm_password", "New password again", "new-password"))
            p.muted { "8 to 128 characters, not a common password. Your other sessions are signed out." }
            div.actions { button type="submit" { "Change password" } }
        } }
    }
}

/// `POST /console/account/sessions/end`: signs one of the user's other sessions out.
pub async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<EndSessionForm>, FormRejection>,
) -> Response {
    let (session, form) =
        match checked_post(&state, &headers, form, purpose::ACCOUNT, ACCOUNT_PATH).await {
            Ok(checked) => checked,
            Err(response) => return response,
        };
    let id = SessionId::from_stored(form.id);
    match state.accounts.end_session(&session.auth, &id).await {
        Ok(()) if id == session.auth.session_id => {
            with_cookies(see_other(LOGIN_PATH), &clearing_cookies(&state))
        }
        Ok(()) => session.respond(see_other(&format!("{ACCOUNT_PATH}?done=session"))),
        Err(CoreError::NotFound) => session.respond(layout::message_page(
            StatusCode::NOT_FOUND,
            "Session not found",
            "That session is not one of yours, or it has already ended.",
            (ACCOUNT_PATH, "Back to your account"),
        )),
        Err(error) => session.respond(layout::server_error(error)),
    }
}

/// `POST /console/account/sessions/end-all`: signs out every session, this one included.
pub async fn end_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let (session, _) =
        match checked_post(&state, &headers, form, purpose::ACCOUNT, ACCOUNT_PATH).await {
            Ok(checked) => checked,
            Err(response) => return response,
        };
    match state.accounts.logout(&session.auth, true).await {
        Ok(()) => with_cookies(see_other(LOGIN_PATH), &clearing_cookies(&state)),
        Err(error) => session.respond(layout::server_error(error)),
    }
}

/// `POST /console/account/password`: checks the current password, sets the new one and signs
/// the other sessions out.
#[tracing::instrument(skip_all)]
pub async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let (session, form) =
        match checked_post(&state, &headers, form, purpose::ACCOUNT, ACCOUNT_PATH).await {
            Ok(checked) => checked,
            Err(response) => return response,
        };
    if form.new_password.expose() != form.confirm_password.expose() {
        let errors = [FieldError::new(
            "confirm_password",
            "does not match the new password",
        )];
        return render(
            &state,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            &errors,
        )
        .await;
    }
    let current = Password::presented(form.current_password.into_inner());
    match state
        .accounts
        .change_password(&session.auth, &current, form.new_password.into_inner())
        .await
    {
        Ok(()) => session.respond(see_other(&format!("{ACCOUNT_PATH}?done=password"))),
        Err(CoreError::Validation(errors)) => {
            render(
                &state,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                &errors,
            )
            .await
        }
        Err(error) => session.respond(layout::server_error(error)),
    }
}
