//! The console's own session (SPEC §2): HttpOnly cookies, CSRF tokens, the origin check, and
//! the sign-in and sign-out pages.
//!
//! Cookies, all `HttpOnly; SameSite=Lax; Path=/console` (and `Secure` when `public_url` is
//! https):
//! - [`ACCESS_COOKIE`]: the session's JWT access token;
//! - [`REFRESH_COOKIE`]: its refresh token. When the access token has expired the server
//!   refreshes with it and sets both anew; a failed refresh means signed out;
//! - [`LOGIN_CSRF_COOKIE`]: before sign-in, a random value the login form's token derives from
//!   (double submit), kept 30 minutes.
//!
//! A form's CSRF token is `HMAC-SHA256(key = the session's refresh-token cookie, "keyward
//! console csrf:" + purpose)`, hex: derived, so no server state; bound to the session and the
//! form's purpose; unguessable without the HttpOnly cookie. It is checked in constant time, and
//! every POST whose `Origin` header is present must come from `public_url`'s origin.

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use hmac::{Hmac, Mac};
use keyward_core::{AuthFailure, Authenticated, CoreError, Password, RefreshToken};
use keyward_proto::Secret;
use maud::html;
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::layout::{self, page};
use crate::state::AppState;

pub const ACCESS_COOKIE: &str = "kw_console_access";
pub const REFRESH_COOKIE: &str = "kw_console_refresh";
pub const LOGIN_CSRF_COOKIE: &str = "kw_console_login";
pub const LOGIN_PATH: &str = "/console/login";
pub const LOGOUT_PATH: &str = "/console/logout";
/// Where a sign-in goes when no (acceptable) `next` was given.
pub const DEFAULT_NEXT: &str = "/console/api-keys";
const LOGIN_CSRF_MAX_AGE_SECONDS: i64 = 1800;

/// The purposes a CSRF token is bound to: a token for one form is refused by another.
pub mod purpose {
    pub const LOGIN: &str = "login";
    pub const LOGOUT: &str = "logout";
    pub const DEVICE: &str = "device";
    pub const KEYS: &str = "keys";
    pub const ACCOUNT: &str = "account";
}

// ---------------------------------------------------------------- cookies

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

fn is_secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

/// A `Set-Cookie` value with the console's attributes; `max_age` 0 deletes the cookie.
pub(super) fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: i64,
) -> Option<HeaderValue> {
    let secure = if is_secure(state) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn session_max_age(state: &AppState) -> i64 {
    state.config.settings.sessions.refresh_token_ttl_days * 86_400
}

/// The cookies of a fresh token pair.
pub(super) fn session_cookies(state: &AppState, access: &str, refresh: &str) -> Vec<HeaderValue> {
    let max_age = session_max_age(state);
    [
        set_cookie(state, ACCESS_COOKIE, access, max_age),
        set_cookie(state, REFRESH_COOKIE, refresh, max_age),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The cookies that end the session in the browser.
pub(super) fn clearing_cookies(state: &AppState) -> Vec<HeaderValue> {
    [
        set_cookie(state, ACCESS_COOKIE, "", 0),
        set_cookie(state, REFRESH_COOKIE, "", 0),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Adds `cookies` to `response`.
pub fn with_cookies(mut response: Response, cookies: &[HeaderValue]) -> Response {
    for cookie in cookies {
        response.headers_mut().append(SET_COOKIE, cookie.clone());
    }
    response
}

/// 303 to `location` (a relative console path).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

// ---------------------------------------------------------------- CSRF and origin

/// The CSRF token of the form `purpose` for the session (or pre-session) secret `key`.
pub fn csrf_token(key: &str, purpose: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        // HMAC takes keys of any length; unreachable, and an empty token never verifies.
        return String::new();
    };
    mac.update(b"keyward console csrf:");
    mac.update(purpose.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `presented` is the token of `purpose` for `key`, compared in constant time.
pub fn csrf_valid(key: &str, purpose: &str, presented: Option<&str>) -> bool {
    let expected = csrf_token(key, purpose);
    match presented {
        Some(presented) if !expected.is_empty() => {
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        }
        _ => false,
    }
}

/// `scheme://host[:port]` of `public_url`, without a default port, as browsers send `Origin`.
fn public_origin(public_url: &str) -> String {
    let (scheme, rest) = public_url.split_once("://").unwrap_or(("http", public_url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.to_ascii_lowercase();
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => authority,
    };
    format!("{scheme}://{authority}")
}

/// A POST is refused when it carries an `Origin` other than `public_url`'s (a browser always
/// sends one on cross-site POSTs; its absence, e.g. from a non-browser client, is allowed, and
/// the CSRF token still applies).
pub fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get("origin") {
        None => true,
        Some(origin) => origin
            .to_str()
            .map(|origin| {
                public_origin(origin.trim()) == public_origin(&state.config.public_url)
                    && origin.trim().contains("://")
            })
            .unwrap_or(false),
    }
}

// ---------------------------------------------------------------- the session

/// A signed-in console user.
pub struct ConsoleSession {
    pub auth: Authenticated,
    /// The refresh-token cookie the request presented: the CSRF key of forms it submits.
    presented_refresh: RefreshToken,
    /// The refresh token after this request (a new one when it refreshed): the CSRF key of the
    /// forms it renders.
    current_refresh: RefreshToken,
    /// `Set-Cookie` values this request must send (after a refresh).
    cookies: Vec<HeaderValue>,
}

/// What the cookies of a request amount to.
pub enum Resolved {
    SignedIn(ConsoleSession),
    /// No session; `cookies` clear stale ones.
    SignedOut {
        cookies: Vec<HeaderValue>,
    },
}

impl ConsoleSession {
    /// The session of the request's cookies: the access token when valid, else a refresh; a
    /// failed refresh (spent, revoked, expired) is signed out. A database failure is an error,
    /// never "signed out".
    #[tracing::instrument(skip_all)]
    pub async fn resolve(state: &AppState, headers: &HeaderMap) -> Result<Resolved, CoreError> {
        let Some(refresh) = cookie(headers, REFRESH_COOKIE) else {
            // Without its refresh token a session has no CSRF key: signed out.
            let cookies = if cookie(headers, ACCESS_COOKIE).is_some() {
                clearing_cookies(state)
            } else {
                Vec::new()
            };
            return Ok(Resolved::SignedOut { cookies });
        };
        let presented_refresh = RefreshToken::presented(refresh.to_owned());
        if let Some(access) = cookie(headers, ACCESS_COOKIE) {
            match state.accounts.authenticate_access_token(access).await {
                Ok(auth) => {
                    return Ok(Resolved::SignedIn(Self {
                        auth,
                        current_refresh: presented_refresh.clone(),
                        presented_refresh,
                        cookies: Vec::new(),
                    }))
                }
                Err(CoreError::Unauthenticated(_)) => {}
                Err(other) => return Err(other),
            }
        }
        let signed_out = || Resolved::SignedOut {
            cookies: clearing_cookies(state),
        };
        let tokens = match state.accounts.refresh(&presented_refresh).await {
            Ok(tokens) => tokens,
            Err(CoreError::Unauthenticated(_)) => return Ok(signed_out()),
            Err(other) => return Err(other),
        };
        let auth = match state
            .accounts
            .authenticate_access_token(tokens.access_token.expose())
            .await
        {
            Ok(auth) => auth,
            Err(CoreError::Unauthenticated(_)) => return Ok(signed_out()),
            Err(other) => return Err(other),
        };
        Ok(Resolved::SignedIn(Self {
            auth,
            presented_refresh,
            cookies: session_cookies(
                state,
                tokens.access_token.expose(),
                tokens.refresh_token.expose(),
            ),
            current_refresh: tokens.refresh_token,
        }))
    }

    /// The token for a form of `purpose` rendered in this response.
    pub fn csrf(&self, purpose: &str) -> String {
        csrf_token(self.current_refresh.expose(), purpose)
    }

    /// Whether a submitted form carries this session's token for `purpose`.
    pub fn csrf_valid(&self, purpose: &str, presented: Option<&str>) -> bool {
        csrf_valid(self.presented_refresh.expose(), purpose, presented)
    }

    /// `response` with the cookies this request must set.
    pub fn respond(&self, response: Response) -> Response {
        with_cookies(response, &self.cookies)
    }
}

/// The signed-in session of a page, or the answer to send instead: to the sign-in page (which
/// comes back to `back`) when signed out, a 5xx page when the database fails.
pub async fn require_session(
    state: &AppState,
    headers: &HeaderMap,
    back: &str,
) -> Result<ConsoleSession, Response> {
    match ConsoleSession::resolve(state, headers).await {
        Ok(Resolved::SignedIn(session)) => Ok(session),
        Ok(Resolved::SignedOut { cookies }) => {
            Err(with_cookies(see_other(&login_url(back)), &cookies))
        }
        Err(error) => Err(layout::server_error(error)),
    }
}

/// A console form with its CSRF token.
pub trait WithCsrf {
    fn csrf(&self) -> Option<&str>;
}

/// The checks of every signed-in form post, in order: a same-origin `Origin` (else 403), a
/// readable form (else 400), a session (else to sign-in, back to `back`), and this session's
/// token for `purpose` (else 403). Nothing is done before all of them pass.
pub async fn checked_post<T: WithCsrf>(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
    purpose: &str,
    back: &str,
) -> Result<(ConsoleSession, T), Response> {
    if !origin_allowed(state, headers) {
        return Err(layout::forbidden());
    }
    let Ok(Form(form)) = form else {
        return Err(layout::bad_form());
    };
    let session = require_session(state, headers, back).await?;
    if !session.csrf_valid(purpose, form.csrf()) {
        return Err(session.respond(layout::forbidden()));
    }
    Ok((session, form))
}

/// `next` when it is a console path of this server, else the default: no open redirect.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.len() <= 512
                && (next == "/console"
                    || next.starts_with("/console/")
                    || next.starts_with("/console?"))
                && !next.contains("..")
                && !next.contains('\\')
                && !next.contains("//")
                && next.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            next.to_owned()
        }
        _ => DEFAULT_NEXT.to_owned(),
    }
}

/// The login page URL that comes back to `next` afterwards.
pub fn login_url(next: &str) -> String {
    let encoded: String = form_urlencoded_component(next);
    format!("{LOGIN_PATH}?next={encoded}")
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn form_urlencoded_component(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------- login and logout

#[derive(Debug, Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// The sign-in form. Its fields never reach a log: the access log has the path only, and the
/// password is a [`Secret`] that redacts itself.
#[derive(Debug, Deserialize, Default)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Secret,
    csrf: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// A pre-session CSRF key: the request's login cookie when well-formed, else a fresh one (and
/// the cookie to set).
pub(super) fn login_key(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|value| value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        Some(existing) => (existing.to_owned(), None),
        None => {
            let fresh = Alphanumeric.sample_string(&mut rand::thread_rng(), 43);
            let cookie = set_cookie(state, LOGIN_CSRF_COOKIE, &fresh, LOGIN_CSRF_MAX_AGE_SECONDS);
            (fresh, cookie)
        }
    }
}

fn login_page(
    status: StatusCode,
    csrf: &str,
    next: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    layout::html(
        status,
        page(
            "Sign in",
            None,
            html! {
                h1 { "Sign in to Keyward" }
                @if let Some(error) = error {
                    p.notice.error role="alert" { (error) }
                }
                form method="post" action=(LOGIN_PATH) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    div.actions { button type="submit" { "Sign in" } }
                }
                p.muted { "New to Keyward? " a href="/console/signup" { "Create an account" } }
            },
        ),
    )
}

/// `GET /console/login?next=…`: the form, or straight on when already signed in.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let next = safe_next(query.next.as_deref());
    match ConsoleSession::resolve(&state, &headers).await {
        Ok(Resolved::SignedIn(session)) => session.respond(see_other(&next)),
        Ok(Resolved::SignedOut { cookies }) => {
            let (key, login_cookie) = login_key(&state, &headers);
            let response = login_page(
                StatusCode::OK,
                &csrf_token(&key, purpose::LOGIN),
                &next,
                "",
                None,
            );
            let response = with_cookies(response, &cookies);
            with_cookies(response, login_cookie.as_slice())
        }
        Err(error) => layout::server_error(error),
    }
}

/// `POST /console/login`: checks origin and CSRF, signs in through `AccountService::login`,
/// sets the session cookies and goes to `next`.
#[tracing::instrument(skip_all)]
pub async fn login(
    State(state): State<AppState>,
    crate::throttle::ClientIp(ip): crate::throttle::ClientIp,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !origin_allowed(&state, &headers) {
        return layout::forbidden();
    }
    let Ok(Form(form)) = form else {
        return layout::bad_form();
    };
    let Some(key) = cookie(&headers, LOGIN_CSRF_COOKIE) else {
        return layout::forbidden();
    };
    if !csrf_valid(key, purpose::LOGIN, form.csrf.as_deref()) {
        return layout::forbidden();
    }
    let next = safe_next(form.next.as_deref());
    let password = Password::presented(form.password.into_inner());
    // The same throttles as `POST /v1/auth/login`: the console is no way around them.
    match crate::throttle::login(
        &state,
        ip,
        &form.email,
        &password,
        crate::extract::user_agent(&headers),
    )
    .await
    {
        Ok(tokens) => {
            let mut cookies = session_cookies(
                &state,
                tokens.access_token.expose(),
                tokens.refresh_token.expose(),
            );
            cookies.extend(set_cookie(&state, LOGIN_CSRF_COOKIE, "", 0));
            with_cookies(see_other(&next), &cookies)
        }
        Err(CoreError::Unauthenticated(AuthFailure::InvalidCredentials)) => login_page(
            StatusCode::UNAUTHORIZED,
            &csrf_token(key, purpose::LOGIN),
            &next,
            &form.email,
            Some("The email or password is incorrect."),
        ),
        Err(CoreError::AccountDisabled) => login_page(
            StatusCode::FORBIDDEN,
            &csrf_token(key, purpose::LOGIN),
            &next,
            &form.email,
            Some("This account is disabled. Contact the operator of this service."),
        ),
        Err(CoreError::Validation(_)) => login_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &csrf_token(key, purpose::LOGIN),
            &next,
            &form.email,
            Some("Enter your email and password."),
        ),
        Err(error) => layout::server_error(error),
    }
}

/// `POST /console/logout`: revokes the session (its tokens stop working on every instance)
/// and clears the cookies.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if !origin_allowed(&state, &headers) {
        return layout::forbidden();
    }
    let Ok(Form(form)) = form else {
        return layout::bad_form();
    };
    let session = match ConsoleSession::resolve(&state, &headers).await {
        Ok(Resolved::SignedIn(session)) => session,
        Ok(Resolved::SignedOut { .. }) => {
            return with_cookies(see_other(LOGIN_PATH), &clearing_cookies(&state))
        }
        Err(error) => return layout::server_error(error),
    };
    if !session.csrf_valid(purpose::LOGOUT, form.csrf.as_deref()) {
        return session.respond(layout::forbidden());
    }
    if let Err(error) = state.accounts.logout(&session.auth, false).await {
        return layout::server_error(error);
    }
    with_cookies(see_other(LOGIN_PATH), &clearing_cookies(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(
            safe_next(Some("/console/device?user_code=BCDF-GHJK")),
            "/console/device?user_code=BCDF-GHJK"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/console//evil.example",
            "/\\evil.example",
            "/console/../v1/auth/me",
            "/v1/keys",
            "/consolex",
            "javascript:alert(1)",
            "/console/\ndevice",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), DEFAULT_NEXT, "{bad:?}");
        }
        assert_eq!(safe_next(None), DEFAULT_NEXT);
    }

    #[test]
    fn csrf_tokens_bind_key_and_purpose() {
        let token = csrf_token("kwr_a", purpose::DEVICE);
        assert_eq!(token.len(), 64);
        assert!(csrf_valid("kwr_a", purpose::DEVICE, Some(&token)));
        assert!(!csrf_valid("kwr_b", purpose::DEVICE, Some(&token)));
        assert!(!csrf_valid("kwr_a", purpose::LOGOUT, Some(&token)));
        assert!(!csrf_valid("kwr_a", purpose::DEVICE, Some(&token[..63])));
        assert!(!csrf_valid("kwr_a", purpose::DEVICE, Some("")));
        assert!(!csrf_valid("kwr_a", purpose::DEVICE, None));
    }

    #[test]
    fn origins_compare_without_default_ports() {
        assert_eq!(
            public_origin("https://auth.example.com/"),
            "https://auth.example.com"
        );
        assert_eq!(
            public_origin("https://Auth.example.com:443"),
            "https://auth.example.com"
        );
        assert_eq!(
            public_origin("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_ne!(
            public_origin("http://127.0.0.1:8081"),
            public_origin("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn reads_cookies_from_every_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; kw_console_refresh=kwr_x"),
        );
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, REFRESH_COOKIE), Some("kwr_x"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, ACCESS_COOKIE), None);
    }
}
