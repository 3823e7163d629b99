//! `/console/signup`: a new user and their tenant, through the same `RegisterInput::parse` and
//! `AccountService::register` as `POST /v1/auth/register`, so the console shows the API's own
//! validation messages, next to their fields. Success signs the browser in.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use keyward_core::{CoreError, RegisterInput};
use keyward_proto::{FieldError, RegisterRequest, Secret};
use maud::{html, Markup};
use serde::Deserialize;

use super::keys::KEYS_PATH;
use super::layout::{self, page};
use super::session::{
    self, csrf_token, csrf_valid, login_key, origin_allowed, purpose, see_other, set_cookie,
    with_cookies, ConsoleSession, Resolved, LOGIN_CSRF_COOKIE, LOGIN_PATH,
};
use crate::state::AppState;

pub const SIGNUP_PATH: &str = "/console/signup";

/// The sign-up form; the password is a [`Secret`], so it never reaches a log or a Debug print.
#[derive(Debug, Deserialize, Default)]
pub struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Secret,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tenant_name: String,
    csrf: Option<String>,
}

/// `GET /console/signup`: the form, or the console when already signed in.
pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match ConsoleSession::resolve(&state, &headers).await {
        Ok(Resolved::SignedIn(session)) => session.respond(see_other(KEYS_PATH)),
        Ok(Resolved::SignedOut { cookies }) => {
            let (key, login_cookie) = login_key(&state, &headers);
            let response = render(
                StatusCode::OK,
                &csrf_token(&key, purpose::LOGIN),
                &SignupForm::default(),
                &[],
            );
            with_cookies(with_cookies(response, &cookies), login_cookie.as_slice())
        }
        Err(error) => layout::server_error(error),
    }
}

/// `POST /console/signup`: registers, sets the session cookies and opens the keys page.
#[tracing::instrument(skip_all)]
pub async fn submit(
    State(state): State<AppState>,
    crate::throttle::ClientIp(ip): crate::throttle::ClientIp,
    headers: HeaderMap,
    form: Result<Form<SignupForm>, FormRejection>,
) -> Response {
    if !origin_allowed(&state, &headers) {
        return layout::forbidden();
    }
    let Ok(Form(form)) = form else {
        return layout::bad_form();
    };
    // The same pre-session CSRF key as the sign-in form: one cookie serves both.
    let Some(key) = session::cookie(&headers, LOGIN_CSRF_COOKIE) else {
        return layout::forbidden();
    };
    if !csrf_valid(key, purpose::LOGIN, form.csrf.as_deref()) {
        return layout::forbidden();
    }
    let csrf = csrf_token(key, purpose::LOGIN);
    let optional = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    let request = RegisterRequest {
        email: form.email.trim().to_owned(),
        password: Secret::new(form.password.expose()),
        name: optional(&form.name),
        tenant_name: optional(&form.tenant_name),
    };
    let input = match RegisterInput::parse(request) {
        Ok(input) => input,
        Err(errors) => return render(StatusCode::UNPROCESSABLE_ENTITY, &csrf, &form, &errors),
    };
    // The same throttle as `POST /v1/auth/register`.
    if let Err(error) = state.throttles.register(ip) {
        return layout::server_error(error);
    }
    match state
        .accounts
        .register(input, crate::extract::user_agent(&headers))
        .await
    {
        Ok(registered) => {
            let mut cookies = session::session_cookies(
                &state,
                registered.tokens.access_token.expose(),
                registered.tokens.refresh_token.expose(),
            );
            cookies.extend(set_cookie(&state, LOGIN_CSRF_COOKIE, "", 0));
            let Some((key, secret)) = registered.api_key else {
                return with_cookies(see_other(KEYS_PATH), &cookies);
            };
            // keys.create_on_register minted a first key: its secret is shown here, once,
            // in the body of this answer (never a URL), as the keys page shows a new key.
            let page = page(
                "Your first API key",
                None,
                html! {
                    h1 { "Save your API key" }
                    p { "Your account comes with the key " strong { (key.name.as_str()) } ". Copy it now: "
                        strong { "it cannot be shown again." } }
                    div.secret {
                        code #new-key data-secret { (secret.expose()) }
                        button.secondary type="button" data-copy="new-key" { "Copy" }
                    }
                    div.actions { a.button href=(KEYS_PATH) autofocus { "Continue" } }
                },
            );
            with_cookies(layout::html(StatusCode::CREATED, page), &cookies)
        }
        Err(CoreError::EmailTaken) => render(
            StatusCode::CONFLICT,
            &csrf,
            &form,
            &[FieldError::new(
                "email",
                "is already registered: sign in instead, or use another email",
            )],
        ),
        Err(CoreError::Validation(errors)) => {
            render(StatusCode::UNPROCESSABLE_ENTITY, &csrf, &form, &errors)
        }
        Err(error) => layout::server_error(error),
    }
}

fn render(status: StatusCode, csrf: &str, form: &SignupForm, errors: &[FieldError]) -> Response {
    layout::html(
        status,
        page("Create an account", None, content(csrf, form, errors)),
    )
}

fn content(csrf: &str, form: &SignupForm, errors: &[FieldError]) -> Markup {
    let error = |field: &str| {
        errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
    };
    let field = |id: &'static str,
                 label: &'static str,
                 kind: &'static str,
                 value: &str,
                 autocomplete: &'static str,
                 required: bool,
                 help: Option<&'static str>| {
        let message = error(id);
        html! {
            label for=(id) { (label) @if !required { " " span.muted { "(optional)" } } }
            input id=(id) type=(kind) name=(id) value=(value) autocomplete=(autocomplete)
                required[required] aria-invalid=[message.as_ref().map(|_| "true")]
                aria-describedby=[help.map(|_| format!("{id}-help"))];
            @if let Some(message) = message {
                p.field-error role="alert" { (label) " " (message) }
            }
            @if let Some(help) = help {
                p.muted id={ (id) "-help" } { (help) }
            }
        }
    };
    html! {
        h1 { "Create your Keyward account" }
        form method="post" action=(SIGNUP_PATH) {
            input type="hidden" name="csrf" value=(csrf);
            (field("email", "Email", "email", &form.email, "username", true, None))
            (field("password", "Password", "password", "", "new-password", true, Some("8 to 128 characters; not a common password.")))
            (field("name", "Your name", "text", &form.name, "name", false, None))
            (field("tenant_name", "Organization", "text", &form.tenant_name, "organization", false, Some("Your team's name; your API keys and usage belong to it.")))
            div.actions { button type="submit" { "Create account" } }
        }
        p.muted { "Already have an account? " a href=(LOGIN_PATH) { "Sign in" } }
    }
}
