//! The request middleware: request id, tracing span, access log, metrics, and the problem+json
//! body of every error (only here is the request id known for certain).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use keyward_proto::{ErrorCode, Problem};
use rand::distributions::{Alphanumeric, DistString};
use tracing::Instrument;

use axum::response::IntoResponse;

use crate::error::{ApiError, OwnErrorBody, ProblemParts};
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A client-sent id matching `^[A-Za-z0-9._:-]{1,128}$` is kept; otherwise a new `req_…`.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "req_{}",
                Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
            )
        })
}

/// The request id, for handlers that pass it on (the gateway sends it upstream).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The API's middleware: every request is cut at [`request_deadline`].
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let deadline = request_deadline(&state);
    observe_as(state, request, next, route, Some(deadline)).await
}

/// The gateway's middleware: no overall deadline, since a proxied request lasts as long as
/// its upload and download; the gateway bounds its own database and upstream waits. Every
/// gateway request has one metrics route, `gateway`, so paths never become label values.
pub async fn observe_gateway(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    observe_as(state, request, next, "gateway".to_owned(), None).await
}

async fn observe_as(
    state: AppState,
    mut request: Request,
    next: Next,
    route: String,
    deadline: Option<Duration>,
) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().as_str().to_owned();
    // The path, never the query string: a credential mistakenly put in a URL stays out of logs.
    let span = tracing::info_span!("request", request_id = %id, %method, %route, path = %request.uri().path());
    let running = next.run(request).instrument(span.clone());
    let response = match deadline {
        None => running.await,
        Some(deadline) => match tokio::time::timeout(deadline, running).await {
            Ok(response) => response,
            Err(_) => span.in_scope(|| silent_database(deadline).into_response()),
        },
    };
    let mut response = finish(response, &id);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    state
        .metrics
        .request(&method, &route, status, elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// 503 `unavailable` for a request cut at its deadline.
pub(crate) fn silent_database(deadline: Duration) -> ApiError {
    ApiError {
        cause: Some(format!(
            "no answer within {deadline:?}: the database went silent"
        )),
        ..ApiError::new(
            ErrorCode::Unavailable,
            "The database did not answer in time; try again shortly.",
        )
    }
}

/// The longest a request may take. Every request's slow part is the database, which is bounded
/// by waiting for a connection plus running a statement; past both (and a margin for password
/// hashing), the database has gone silent without closing the connection, which no driver
/// timeout catches, so the request is cut and answered 503 `unavailable` rather than hanging.
pub(crate) fn request_deadline(state: &AppState) -> Duration {
    state.config.pool.connect_timeout + state.config.pool.statement_timeout + Duration::from_secs(2)
}

/// Writes the problem body of an [`crate::error::ApiError`]; any other error response without a
/// body of ours (a panic caught below, a framework rejection) becomes a problem too.
fn finish(response: Response, request_id: &str) -> Response {
    let status = response.status();
    let parts = response.extensions().get::<ProblemParts>().cloned();
    let parts = match parts {
        Some(parts) => parts,
        None if status.is_client_error() || status.is_server_error() => {
            let is_ours = response.extensions().get::<OwnErrorBody>().is_some()
                || response.headers().get(CONTENT_TYPE).is_some_and(|v| {
                    v.as_bytes().starts_with(b"application/problem+json")
                        || v.as_bytes().starts_with(b"text/html")
                });
            if is_ours {
                return response;
            }
            fallback_problem(status)
        }
        None => return response,
    };
    let problem = Problem {
        type_: "about:blank".into(),
        status: status.as_u16(),
        title: parts.code.title().into(),
        code: parts.code,
        detail: parts.detail,
        request_id: request_id.to_owned(),
        errors: parts.errors,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let (mut head, _) = response.into_parts();
    head.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    head.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(head, Body::from(body))
}

fn fallback_problem(status: StatusCode) -> ProblemParts {
    let code = match status.as_u16() {
        400 => ErrorCode::InvalidRequest,
        401 => ErrorCode::MissingCredentials,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::PayloadTooLarge,
        422 => ErrorCode::ValidationFailed,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal {
        tracing::error!(
            status = status.as_u16(),
            "request failed without an error of ours (panic or framework error)"
        );
    }
    ProblemParts {
        code,
        detail: match code {
            ErrorCode::Internal => {
                "Something went wrong on our side; the request id identifies it in our logs.".into()
            }
            other => other.title().into(),
        },
        errors: None,
    }
}

/// Query parameter names that would carry a credential, compared lower-cased with `-` read as
/// `_`: the names clients and libraries use when they put one in a URL (RFC 6750 §2.3's
/// `access_token` among them).
const CREDENTIAL_QUERY_NAMES: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "authorization",
    "bearer",
    "client_secret",
    "device_code",
    "id_token",
    "jwt",
    "key",
    "password",
    "refresh_token",
    "token",
    "x_api_key",
];

/// SPEC §2 "never in a URL", and no secret in a shared cache. Outside the console (which has
/// its own cookie session and headers): a query string that carries a credential, by its name
/// or because its value has the shape of a key or a JWT, is refused with 422
/// `validation_failed` naming the parameter, even beside a valid header, so a client learns its
/// mistake at once instead of its key silently going to proxy logs. Every `/v1` answer gets
/// `Cache-Control: no-store` unless the handler chose otherwise: they all carry a secret or one
/// user's data, and a route added later is covered without thinking of it.
pub async fn guard_secrets(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/console" || path.starts_with("/console/") {
        return next.run(request).await;
    }
    let api = path.starts_with("/v1/");
    if let Some(name) = request
        .uri()
        .query()
        .and_then(|query| credential_in_query(query, state.keys.format()))
    {
        const REFUSAL: &str = "credentials are never accepted in a URL (it ends up in logs and \
            histories): send it in the Authorization or X-API-Key header, or in the body where \
            the route takes it";
        // The device token endpoint answers every error in the OAuth format (SPEC §3).
        let mut response = if path == keyward_proto::paths::DEVICE_TOKEN {
            crate::routes::device::oauth_error("invalid_request", format!("{name}: {REFUSAL}"))
        } else {
            ApiError::field(&name, REFUSAL).into_response()
        };
        no_store(&mut response);
        return response;
    }
    let mut response = next.run(request).await;
    if api {
        no_store(&mut response);
    }
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// The name of the first query parameter that carries a credential, if any. The value is
/// never returned: it must not reach an error body or a log. A credential sent as a bare
/// parameter (`?kw_…`) is named `query`, not by itself.
fn credential_in_query(query: &str, format: &keyward_core::KeyFormat) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find_map(|(name, value)| {
        if looks_like_credential(&name, format) {
            return Some("query".to_owned());
        }
        let normalised = name.to_ascii_lowercase().replace('-', "_");
        (CREDENTIAL_QUERY_NAMES.contains(&normalised.as_str())
            || looks_like_credential(&value, format))
        .then_some(name)
    })
}

/// A key of the configured format, a JWT, or a refresh token or device code.
fn looks_like_credential(text: &str, format: &keyward_core::KeyFormat) -> bool {
    let text = text.trim();
    // A JWT's header is a JSON object, so its first part starts with `eyJ` (`{"`).
    format.matches(text)
        || (text.starts_with("eyJ") && crate::extract::looks_like_jwt(text))
        || ((text.starts_with("kwr_") || text.starts_with("kwd_")) && text.len() >= 40)
}
