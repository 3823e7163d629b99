//! The web console: server-rendered HTML pages under `/console` (templates in `maud`, which
//! checks them at compile time and escapes every value). Today: sign-in, sign-out and device
//! approval, API keys, usage and the account.
//!
//! - [`layout`]: the page every console page sits in, and the HTML answers (404, 403, 5xx);
//! - [`session`]: the cookie session, the CSRF tokens and origin check, sign-in and sign-out;
//! - [`signup`]: `/console/signup`, registration through the API's own validation;
//! - [`device`]: `/console/device`, the `verification_uri` of the device flow;
//! - [`keys`]: `/console/api-keys`, the keys table with the create, show-once and revoke
//!   dialogs;
//! - [`account`]: `/console/account`, profile, sessions and the password change;
//! - [`usage`]: `/console/usage`, summary cards and the chart drawn by [`chart`].
//!
//! Pages call the core services directly, never the HTTP API. Every error here is an HTML
//! page (SPEC §3), which the middleware leaves as it is.

pub mod account;
pub mod chart;
pub mod device;
pub mod keys;
pub mod layout;
pub mod session;
pub mod signup;
pub mod usage;

use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

/// The console's routes, to be nested at `/console`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/signup", get(signup::form).post(signup::submit))
        .route("/device", get(device::show).post(device::decide))
        .route("/usage", get(usage::show))
        .route("/api-keys", get(keys::show).post(keys::create))
        .route("/api-keys/revoke", post(keys::revoke))
        .route("/api-keys/enabled", post(keys::set_enabled))
        .route("/account", get(account::show))
        .route("/account/sessions/end", post(account::end_session))
        .route("/account/sessions/end-all", post(account::end_all))
        .route("/account/password", post(account::change_password))
        .route("/assets/console.js", get(layout::script))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `/console`: the keys page, where most visits are headed.
async fn index() -> Redirect {
    Redirect::to(keys::KEYS_PATH)
}

async fn not_found() -> Response {
    layout::not_found()
}

async fn method_not_allowed() -> Response {
    layout::message_page(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "This console page does not take that kind of request.",
        ("/console", "Go to the console"),
    )
}
