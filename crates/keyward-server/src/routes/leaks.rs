//! `/v1/leaks*` (SPEC §4 "Leak reports"): keys someone found where they should not be.
//!
//! - `POST /v1/leaks/github`: GitHub's secret-scanning partner program. The body is verified
//!   before anything else: `Github-Public-Key-Signature` is the base64 of an ASN.1 DER ECDSA
//!   P-256 / SHA-256 signature over the raw body, by the key `Github-Public-Key-Identifier`
//!   names among `leaks.github_public_keys`. Missing headers are 401 `missing_credentials`; an
//!   unknown identifier or a bad signature 401 `invalid_token` (the signature is the request's
//!   credential).
//! - `POST /v1/leaks`: anyone, one key, throttled per client address
//!   (`rate_limits.leak_reports_per_address`).
//!
//! Both answer only whether each token was a live key.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use keyward_core::LeakSource;
use keyward_proto::{
    paths, ErrorCode, FieldError, GithubLeak, GithubLeakLabel, LeakLabel, LeakReportRequest,
    LeakReportResponse, Problem,
};

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::throttle::ClientIp;

/// Longest `url` a report may carry.
pub const MAX_URL_CHARS: usize = 2048;
/// Most tokens in one GitHub report.
pub const MAX_GITHUB_TOKENS: usize = 1000;

const IDENTIFIER_HEADER: &str = "github-public-key-identifier";
const SIGNATURE_HEADER: &str = "github-public-key-signature";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::LEAKS, post(report))
        .route(paths::LEAKS_GITHUB, post(github))
}

fn label(live: bool) -> LeakLabel {
    if live {
        LeakLabel::TruePositive
    } else {
        LeakLabel::FalsePositive
    }
}

/// Report one leaked key (no credential needed). A live key is revoked (unless the operator
/// turned `leaks.auto_revoke` off) and its owner told; the answer says only whether it was live.
#[utoipa::path(post, path = "/v1/leaks", tag = "leaks", request_body = LeakReportRequest,
    responses((status = 200, body = LeakReportResponse), (status = 413, description = "payload_too_large", body = Problem),
              (status = 429, description = "rate_limited: too many reports from this address, with Retry-After", body = Problem)))]
pub async fn report(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LeakReportRequest>,
) -> ApiResult<Json<LeakReportResponse>> {
    state.throttles.leak_report(ip)?;
    if request
        .url
        .as_ref()
        .is_some_and(|url| url.chars().count() > MAX_URL_CHARS)
    {
        return Err(ApiError::field(
            "url",
            format!("must be at most {MAX_URL_CHARS} characters"),
        ));
    }
    let live = state
        .leaks
        .report(
            request.key.expose(),
            request.url.as_deref(),
            LeakSource::Report,
        )
        .await?;
    Ok(Json(LeakReportResponse { label: label(live) }))
}

/// GitHub's secret-scanning partner endpoint: a signed array of `{token, type, url, source}`,
/// answered with a label for each token, in order.
///
/// Headers (GitHub sends them; they are not listed as parameters, since only GitHub can make
/// them): `Github-Public-Key-Identifier`, the `key_identifier` of one of
/// `leaks.github_public_keys`, and `Github-Public-Key-Signature`, the base64 of an ASN.1 DER
/// ECDSA P-256 SHA-256 signature of the raw body by that key.
#[utoipa::path(post, path = "/v1/leaks/github", tag = "leaks", request_body = Vec<GithubLeak>,
    responses((status = 200, body = Vec<GithubLeakLabel>),
              (status = 400, description = "invalid_request: the body is not a JSON array", body = Problem),
              (status = 401, description = "missing_credentials (no signature headers) or invalid_token (unknown key identifier, bad signature)", body = Problem),
              (status = 413, description = "payload_too_large", body = Problem),
              (status = 422, description = "validation_failed: an item is not a token report", body = Problem)))]
pub async fn github(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<Json<Vec<GithubLeakLabel>>> {
    let headers = request.headers().clone();
    let body = crate::extract::read_body(request, &state).await?;
    verify_github_signature(&state, &headers, &body)?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
    if !value.is_array() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON array of token reports.",
        ));
    }
    let leaks: Vec<GithubLeak> = serde_path_to_error::deserialize(value).map_err(|error| {
        ApiError::validation(vec![FieldError::new(
            error.path().to_string(),
            error.inner().to_string(),
        )])
    })?;
    if leaks.len() > MAX_GITHUB_TOKENS {
        return Err(ApiError::field(
            ".",
            format!("at most {MAX_GITHUB_TOKENS} tokens per report"),
        ));
    }
    let mut labels = Vec::with_capacity(leaks.len());
    for leak in leaks {
        let found_at = leak.url.as_deref().or(leak.source.as_deref());
        let live = state
            .leaks
            .report(leak.token.expose(), found_at, LeakSource::Github)
            .await?;
        labels.push(GithubLeakLabel {
            token_raw: leak.token,
            token_type: leak.token_type,
            label: label(live),
        });
    }
    Ok(Json(labels))
}

fn refused() -> ApiError {
    ApiError {
        credential_presented: true,
        ..ApiError::new(
            ErrorCode::InvalidToken,
            "The report's signature does not verify against a configured GitHub key.",
        )
    }
}

/// The signature over the raw body, by the configured key the identifier names.
fn verify_github_signature(state: &AppState, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    use p256::ecdsa::signature::Verifier as _;
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (Some(identifier), Some(signature)) = (header(IDENTIFIER_HEADER), header(SIGNATURE_HEADER))
    else {
        return Err(ApiError::new(
            ErrorCode::MissingCredentials,
            "Send GitHub's Github-Public-Key-Identifier and Github-Public-Key-Signature headers.",
        ));
    };
    let key = state
        .config
        .github_public_keys
        .iter()
        .find(|key| key.key_identifier == identifier.trim())
        .ok_or_else(refused)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| refused())?;
    let signature = p256::ecdsa::Signature::from_der(&der).map_err(|_| refused())?;
    key.key.verify(body, &signature).map_err(|_| refused())
}
