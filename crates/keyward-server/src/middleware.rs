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
