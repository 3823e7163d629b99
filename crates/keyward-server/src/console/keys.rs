//! `/console/api-keys`: the signed-in user's keys. A table (name, masked key, scopes, created,
//! last used, expires, status) with a Revoke button per active key; a Create dialog; the
//! Save-your-key dialog that shows a new key exactly once; the revoke confirmation.
//!
//! Dialogs are `<dialog open>` rendered by the server, so every step works without script.
//! A new key appears in the body of the POST answer only (never in a URL, never again), and
//! every console answer is `Cache-Control: no-store`, so it stays in no cache or history.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use keyward_core::store::{ApiKeyRecord, Owner};
use keyward_core::{CoreError, KeyId, KeyUpdateInput, NewKeyInput};
use keyward_proto::{CreateKeyRequest, FieldError, KeyStatus};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, wide_page, SignedIn};
use super::session::{checked_post, purpose, require_session, see_other, ConsoleSession, WithCsrf};
use crate::state::AppState;

pub const KEYS_PATH: &str = "/console/api-keys";
pub const REVOKE_PATH: &str = "/console/api-keys/revoke";
pub const ENABLED_PATH: &str = "/console/api-keys/enabled";

/// The expiry choices of the Create dialog, in days; `None` is "No expiry".
const EXPIRY_CHOICES: [(Option<i64>, &str); 6] = [
    (Some(7), "7 days"),
    (Some(30), "30 days"),
    (Some(90), "90 days"),
    (Some(180), "180 days"),
    (Some(365), "365 days"),
    (None, "No expiry"),
];
const SCOPE_CHOICES: [(&str, &str); 3] = [
    ("read", "Read: GET requests"),
    ("write", "Write: read, and changes"),
    ("admin", "Admin: everything, your full access"),
];

#[derive(Debug, Deserialize, Default)]
pub struct KeysQuery {
    /// `?create` opens the Create dialog.
    create: Option<String>,
    /// `?revoke=ID` opens the confirmation for that key.
    revoke: Option<String>,
    /// `?revoked=ID` says that key was revoked.
    revoked: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// Days, or `never`.
    #[serde(default)]
    expires: String,
    #[serde(default)]
    scope: String,
    csrf: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RevokeForm {
    #[serde(default)]
    id: String,
    csrf: Option<String>,
}

impl WithCsrf for CreateForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct EnabledForm {
    #[serde(default)]
    id: String,
    /// `true` or `false`.
    #[serde(default)]
    enabled: String,
    csrf: Option<String>,
}

impl WithCsrf for EnabledForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl WithCsrf for RevokeForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// What the page shows over the table.
enum Dialog<'a> {
    None,
    Create {
        form: &'a CreateForm,
        errors: &'a [FieldError],
        /// The per-user limit was reached.
        limit: Option<u32>,
    },
    /// The new key, shown this once.
    Created {
        key: &'a ApiKeyRecord,
        secret: &'a str,
    },
    Revoke(&'a ApiKeyRecord),
}

fn owner(session: &ConsoleSession) -> Owner {
    Owner {
        user_id: session.auth.user_id.clone(),
        tenant_id: session.auth.tenant_id.clone(),
    }
}

/// `GET /console/api-keys[?create][?revoke=ID][?revoked=ID]`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<KeysQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let session = match require_session(&state, &headers, KEYS_PATH).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let keys = match state.keys.list(&owner(&session), true).await {
        Ok(keys) => keys,
        Err(error) => return session.respond(layout::server_error(error)),
    };
    let empty = CreateForm {
        scope: "admin".into(),
        ..CreateForm::default()
    };
    let find = |id: &Option<String>| {
        id.as_deref()
            .and_then(|id| keys.iter().find(|key| key.id.as_str() == id))
    };
    let (status, dialog) = if let Some(id) = &query.revoke {
        match find(&Some(id.clone())) {
            Some(key) if key.revoked_at.is_none() => (StatusCode::OK, Dialog::Revoke(key)),
            _ => (StatusCode::NOT_FOUND, Dialog::None),
        }
    } else if query.create.is_some() {
        (
            StatusCode::OK,
            Dialog::Create {
                form: &empty,
                errors: &[],
                limit: None,
            },
        )
    } else {
        (StatusCode::OK, Dialog::None)
    };
    let notice = match (&query.revoke, find(&query.revoked)) {
        (Some(_), _) if status == StatusCode::NOT_FOUND => Some(Notice::Error(
            "That key does not exist or is already revoked.",
        )),
        (_, Some(key)) => Some(Notice::Revoked(key.name.as_str())),
        _ => None,
    };
    render(&state, &session, status, &keys, dialog, notice)
}

/// `POST /console/api-keys`: creates a key and shows it once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Response {
    let (session, form) = match checked_post(&state, &headers, form, purpose::KEYS, KEYS_PATH).await
    {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let owner = owner(&session);
    let input = parse(&form);
    let created = match input {
        Ok(input) => state.keys.create(owner.clone(), None, input).await,
        Err(errors) => {
            return render_create_error(
                &state,
                &session,
                &form,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors,
                None,
            )
            .await
        }
    };
    match created {
        Ok((key, secret)) => {
            let keys = match state.keys.list(&owner, true).await {
                Ok(keys) => keys,
                Err(error) => return session.respond(layout::server_error(error)),
            };
            render(
                &state,
                &session,
                StatusCode::CREATED,
                &keys,
                Dialog::Created {
                    key: &key,
                    secret: secret.expose(),
                },
                None,
            )
        }
        Err(CoreError::KeyLimitReached) => {
            let limit = state.config.settings.keys.max_per_user;
            render_create_error(
                &state,
                &session,
                &form,
                StatusCode::CONFLICT,
                &[],
                Some(limit),
            )
            .await
        }
        Err(CoreError::Validation(errors)) => {
            render_create_error(
                &state,
                &session,
                &form,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors,
                None,
            )
            .await
        }
        Err(error) => session.respond(layout::server_error(error)),
    }
}

async fn render_create_error(
    state: &AppState,
    session: &ConsoleSession,
    form: &CreateForm,
    status: StatusCode,
    errors: &[FieldError],
    limit: Option<u32>,
) -> Response {
    match state.keys.list(&owner(session), true).await {
        Ok(keys) => render(
            state,
            session,
            status,
            &keys,
            Dialog::Create {
                form,
                errors,
                limit,
            },
            None,
        ),
        Err(error) => session.respond(layout::server_error(error)),
    }
}

/// The form as the API's create request, so the console and the API validate alike.
fn parse(form: &CreateForm) -> Result<NewKeyInput, Vec<FieldError>> {
    let mut errors = Vec::new();
    let expires_in_days = match form.expires.as_str() {
        "" | "never" => None,
        days => match days.parse::<i64>() {
            Ok(days) => Some(days),
            Err(_) => {
                errors.push(FieldError::new(
                    "expires_in_days",
                    "choose one of the offered durations",
                ));
                None
            }
        },
    };
    let scope = match form.scope.as_str() {
        "" => "admin",
        scope if SCOPE_CHOICES.iter().any(|(value, _)| *value == scope) => scope,
        _ => {
            errors.push(FieldError::new("scopes", "choose read, write or admin"));
            "admin"
        }
    };
    let description = form.description.trim();
    let request = CreateKeyRequest {
        name: form.name.trim().to_owned(),
        description: (!description.is_empty()).then(|| description.to_owned()),
        expires_in_days,
        scopes: Some(vec![scope.to_owned()]),
        ..CreateKeyRequest::default()
    };
    let parsed = NewKeyInput::parse(request);
    match (parsed, errors.is_empty()) {
        (Ok(input), true) => Ok(input),
        (Ok(_), false) => Err(errors),
        (Err(mut more), _) => {
            more.extend(errors);
            Err(more)
        }
    }
}

/// `POST /console/api-keys/revoke`: revokes after the confirmation.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let (session, form) = match checked_post(&state, &headers, form, purpose::KEYS, KEYS_PATH).await
    {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let id = KeyId::from_stored(form.id.clone());
    match state.keys.revoke(&owner(&session), &id).await {
        Ok(()) => session.respond(see_other(&format!(
            "{KEYS_PATH}?revoked={}",
            encode(id.as_str())
        ))),
        Err(CoreError::NotFound) => session.respond(see_other(&format!(
            "{KEYS_PATH}?revoke={}",
            encode(id.as_str())
        ))),
        Err(error) => session.respond(layout::server_error(error)),
    }
}

/// `POST /console/api-keys/enabled`: disables a key without revoking it, or enables it again.
pub async fn set_enabled(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<EnabledForm>, FormRejection>,
) -> Response {
    let (session, form) = match checked_post(&state, &headers, form, purpose::KEYS, KEYS_PATH).await
    {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return session.respond(layout::bad_form()),
    };
    let id = KeyId::from_stored(form.id.clone());
    let input = KeyUpdateInput {
        enabled: Some(enabled),
        ..KeyUpdateInput::default()
    };
    match state.keys.update(&owner(&session), None, &id, input).await {
        // A missing or revoked key: the table, as it is now, says why.
        Ok(_) | Err(CoreError::NotFound | CoreError::Validation(_)) => {
            session.respond(see_other(KEYS_PATH))
        }
        Err(error) => session.respond(layout::server_error(error)),
    }
}

/// Key ids are `key_` + base62; anything else is percent-encoded so a URL stays a URL.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

enum Notice<'a> {
    Revoked(&'a str),
    Error(&'a str),
}

fn render(
    state: &AppState,
    session: &ConsoleSession,
    status: StatusCode,
    keys: &[ApiKeyRecord],
    dialog: Dialog<'_>,
    notice: Option<Notice<'_>>,
) -> Response {
    let csrf = session.csrf(purpose::KEYS);
    let logout_csrf = session.csrf(purpose::LOGOUT);
    let active = keys
        .iter()
        .filter(|key| key.revoked_at.is_none() && state.keys.status(key) == KeyStatus::Active)
        .count();
    let limit = state.config.settings.keys.max_per_user as usize;
    let content = html! {
        div.toolbar {
            h1 { "API keys" }
            a.button href={ (KEYS_PATH) "?create" } { "Create key" }
        }
        @match notice {
            Some(Notice::Revoked(name)) => p.notice.success role="status" { "The key " strong { (name) } " is revoked: it stops working from the next request." },
            Some(Notice::Error(message)) => p.notice.error role="alert" { (message) },
            None => {},
        }
        p.muted { (active) " of " (limit) " active keys. A key is shown in full only once, when it is created; here it is masked." }
        @if keys.is_empty() {
            div.empty {
                p { strong { "No API keys yet" } }
                p { "Create a key to call the API from your code or the command line." }
            }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Scopes" } th scope="col" { "Limits" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for key in keys {
                            @let status = state.keys.status(key);
                            tr data-key-id=(key.id.as_str()) {
                                td { (key.name.as_str()) }
                                td { code { (key.start) "…" (key.end) } }
                                td { (key.scopes.to_strings().join(", ")) }
                                td { (limits(state, key)) }
                                td { (when(key.created_at)) }
                                td { (key.last_used_at.map_or("Never".to_owned(), when)) }
                                td { (key.expires_at.map_or("Never".to_owned(), when)) }
                                @let shown = if status == KeyStatus::Active && !key.enabled { "disabled" } else { status_name(status) };
                                td { span class={ "status " (shown) } { (shown) } }
                                td.row-actions {
                                    @if status != KeyStatus::Revoked {
                                        form method="post" action=(ENABLED_PATH) {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="id" value=(key.id.as_str());
                                            input type="hidden" name="enabled" value=(if key.enabled { "false" } else { "true" });
                                            button.secondary type="submit" aria-label={ (if key.enabled { "Disable " } else { "Enable " }) (key.name.as_str()) } {
                                                (if key.enabled { "Disable" } else { "Enable" })
                                            }
                                        }
                                        " "
                                        a.danger href={ (KEYS_PATH) "?revoke=" (encode(key.id.as_str())) } aria-label={ "Revoke " (key.name.as_str()) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (dialog_markup(dialog, &csrf, active >= limit, limit))
    };
    session.respond(layout::html(
        status,
        wide_page(
            "API keys",
            SignedIn {
                logout_csrf: &logout_csrf,
            },
            KEYS_PATH,
            content,
        ),
    ))
}

fn dialog_markup(dialog: Dialog<'_>, csrf: &str, at_limit: bool, limit: usize) -> Markup {
    match dialog {
        Dialog::None => html! {},
        Dialog::Create {
            form,
            errors,
            limit: reached,
        } => {
            let error = |field: &str| {
                errors
                    .iter()
                    .find(|e| e.field == field)
                    .map(|e| e.message.clone())
            };
            let name_error = error("name");
            html! {
                div.backdrop {}
                dialog open aria-labelledby="create-title" aria-modal="true" {
                    h2 #create-title { "Create an API key" }
                    @if reached.is_some() || at_limit {
                        p.notice.error role="alert" {
                            "You have " (limit) " active keys, the most one user may have. Revoke a key you no longer use, then create this one."
                        }
                    }
                    form method="post" action=(KEYS_PATH) {
                        input type="hidden" name="csrf" value=(csrf);
                        label for="name" { "Name" }
                        input #name type="text" name="name" value=(form.name) required autofocus maxlength="100"
                            aria-invalid=[name_error.as_ref().map(|_| "true")] aria-describedby="name-help";
                        @if let Some(message) = &name_error {
                            p.field-error #name-error role="alert" { "Name " (message) }
                        }
                        p.muted #name-help { "Starts with a letter; say where the key is used, e.g. ci-deploy." }
                        label for="expires" { "Expire in" }
                        select #expires name="expires" {
                            @for (days, label) in EXPIRY_CHOICES {
                                @let value = days.map_or("never".to_owned(), |d| d.to_string());
                                option value=(value) selected[form.expires == value || (form.expires.is_empty() && days.is_none())] { (label) }
                            }
                        }
                        @if let Some(message) = error("expires_in_days") { p.field-error role="alert" { "Expiry " (message) } }
                        label for="description" { "Description " span.muted { "(optional)" } }
                        input #description type="text" name="description" value=(form.description) maxlength="500";
                        @if let Some(message) = error("description") { p.field-error role="alert" { "Description " (message) } }
                        fieldset {
                            legend { "Scopes" }
                            @for (value, label) in SCOPE_CHOICES {
                                label.choice {
                                    input type="radio" name="scope" value=(value) checked[form.scope == value || (form.scope.is_empty() && value == "admin")];
                                    " " (label)
                                }
                            }
                        }
                        @if let Some(message) = error("scopes") { p.field-error role="alert" { "Scopes " (message) } }
                        div.actions {
                            button type="submit" { "Create key" }
                            a.button.secondary href=(KEYS_PATH) { "Cancel" }
                        }
                    }
                }
            }
        }
        Dialog::Created { key, secret } => html! {
            div.backdrop {}
            dialog open aria-labelledby="saved-title" aria-modal="true" {
                h2 #saved-title { "Save your API key" }
                p { "This is the key " strong { (key.name.as_str()) } ". Copy it now and keep it somewhere safe: "
                    strong { "it cannot be shown again." } " If you lose it, revoke it and create another." }
                div.secret {
                    code #new-key data-secret { (secret) }
                    button.secondary type="button" data-copy="new-key" { "Copy" }
                }
                div.actions {
                    a.button href=(KEYS_PATH) autofocus { "Done" }
                }
            }
        },
        Dialog::Revoke(key) => html! {
            div.backdrop {}
            dialog open aria-labelledby="revoke-title" aria-modal="true" {
                h2 #revoke-title { "Revoke " (key.name.as_str()) "?" }
                p { "Requests with " code { (key.start) "…" (key.end) } " will be refused from the very next one, on every instance. This cannot be undone." }
                form method="post" action=(REVOKE_PATH) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="id" value=(key.id.as_str());
                    div.actions {
                        button.danger type="submit" { "Revoke key" }
                        a.button.secondary href=(KEYS_PATH) autofocus { "Cancel" }
                    }
                }
            }
        },
    }
}

/// A key's rate limit and credits, in a few words.
fn limits(state: &AppState, key: &ApiKeyRecord) -> String {
    let rate = key
        .rate_limit
        .map(|limit| format!("{} / {} s", limit.requests(), limit.per_seconds()));
    let credits = state
        .keys
        .credits(key)
        .map(|credits| format!("{} credits left", credits.remaining));
    match (rate, credits) {
        (None, None) => "None".to_owned(),
        (Some(rate), None) => rate,
        (None, Some(credits)) => credits,
        (Some(rate), Some(credits)) => format!("{rate}, {credits}"),
    }
}

fn status_name(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::Expired => "expired",
        KeyStatus::Revoked => "revoked",
    }
}

/// `2026-11-22 10:00 UTC`.
pub(super) fn when(at: keyward_core::Timestamp) -> String {
    let rfc3339 = at.to_rfc3339();
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => rfc3339,
    }
}
