//! The gateway (SPEC §4 "Verification"): a second listener that guards an upstream HTTP API.
//!
//! Every request is authenticated as on the API (an API key or an access token); one without
//! a valid credential is answered 401 here and never reaches the upstream. A valid one is
//! forwarded with the caller's identity in `x-keyward-*` headers and its credential removed,
//! and the answer streams back: bodies pass through in chunks both ways, never buffered whole.
//! Requests made with a key are metered: a start when forwarded (so a slow request shows as
//! in flight) and a completion when the answer's body has been sent, or the request failed.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keyward_core::policy::RateDecision;
use keyward_core::VerifiedKey;
use keyward_core::{AuthFailure, Authenticated, Charge, CoreError, InFlight, Scopes, UsageOutcome};
use keyward_proto::{ErrorCode, VerifyCode};
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::{GatewayRouteSettings, GatewaySettings};
use crate::error::{ApiError, OwnErrorBody};
use crate::extract::{credential, Credential};
use crate::middleware::{self, RequestId};
use crate::state::AppState;

/// The validated `[gateway]` settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash, so that `upstream + path` is the forwarded URL.
    pub upstream: String,
    pub timeout: Duration,
    pub routes: Vec<RouteRule>,
}

impl GatewayConfig {
    /// `None` when neither `gateway.listen` nor `gateway.upstream` is set; an error naming the
    /// setting when only one is, or a value is wrong.
    pub fn from_settings(settings: &GatewaySettings) -> Result<Option<Self>, String> {
        let (listen, upstream) = match (&settings.listen, &settings.upstream) {
            (None, None) => {
                return match settings.routes.is_empty() {
                    true => Ok(None),
                    false => Err("gateway.routes: set gateway.listen and gateway.upstream \
                                  (--gateway-listen ADDR --upstream URL) to open the gateway"
                        .into()),
                }
            }
            (Some(_), None) => {
                return Err(
                    "gateway.upstream: the gateway needs an upstream to forward to: \
                            add --upstream URL (or set gateway.upstream)"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "gateway.listen: an upstream is set but no gateway address: add \
                            --gateway-listen ADDR (or set gateway.listen)"
                        .into(),
                )
            }
            (Some(listen), Some(upstream)) => (listen, upstream),
        };
        let listen: SocketAddr = listen.parse().map_err(|_| {
            format!("gateway.listen: {listen:?} is not an address such as 127.0.0.1:8000")
        })?;
        let url = url::Url::parse(upstream)
            .map_err(|error| format!("gateway.upstream: {upstream:?} is not a URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "gateway.upstream: {upstream:?} must be an http:// or https:// URL with a host"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "gateway.upstream: credentials in the URL are not supported; the \
                        upstream identifies callers by the x-keyward-* headers"
                    .into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "gateway.upstream: {upstream:?} must not have a query or fragment"
            ));
        }
        let routes = settings
            .routes
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                RouteRule::parse(rule).map_err(|error| format!("gateway.routes[{index}]: {error}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Self {
            listen,
            upstream: url.as_str().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(settings.timeout_seconds),
            routes,
        }))
    }

    /// The upstream without any path, for logs.
    pub fn upstream_origin(&self) -> String {
        url::Url::parse(&self.upstream)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default()
    }
}

/// A scope requirement for some requests: `POST /flows/*` needs `flows:invoke`.
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// `None`: every method.
    method: Option<Method>,
    segments: Vec<Segment>,
    /// The pattern ended in `/*`: everything below the segments matches.
    below: bool,
    scopes: Scopes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
}

impl RouteRule {
    fn parse(settings: &GatewayRouteSettings) -> Result<Self, String> {
        let route = settings.route.trim();
        let (method, pattern) = match route.split_once(char::is_whitespace) {
            Some((method, pattern)) => (Some(method), pattern.trim()),
            None => (None, route),
        };
        let method = match method {
            None | Some("*") => None,
            Some(method) if method.bytes().all(|b| b.is_ascii_uppercase()) => Some(
                Method::from_bytes(method.as_bytes())
                    .map_err(|_| format!("route: {method:?} is not an HTTP method"))?,
            ),
            Some(method) => {
                return Err(format!(
                    "route: {method:?} is not an HTTP method such as GET or POST"
                ))
            }
        };
        let Some(path) = pattern.strip_prefix('/') else {
            return Err(format!(
                "route: {route:?} must be [METHOD] /path, e.g. \"POST /flows/*\""
            ));
        };
        let mut segments: Vec<Segment> = path
            .split('/')
            .map(|segment| match segment {
                "*" => Segment::Any,
                literal => Segment::Literal(literal.to_owned()),
            })
            .collect();
        let below = segments.len() > 1 && segments.last() == Some(&Segment::Any);
        if below {
            segments.pop();
        }
        if segments
            .iter()
            .any(|segment| matches!(segment, Segment::Literal(s) if s.contains('*')))
        {
            return Err(format!(
                "route: {route:?}: `*` must stand for a whole segment, as in /flows/*/run"
            ));
        }
        if settings.scopes.is_empty() {
            return Err("scopes: list at least one scope the route needs".into());
        }
        let scopes = Scopes::parse(&settings.scopes).map_err(|error| format!("scopes: {error}"))?;
        Ok(Self {
            method,
            segments,
            below,
            scopes,
        })
    }

    fn applies(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = path.split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(expected), Some(part)) if expected == part => {}
                _ => return false,
            }
        }
        match parts.next() {
            None => !self.below,
            Some(_) => self.below,
        }
    }
}

/// The pooled HTTP/1.1 client to the upstream, `http://` or `https://`.
type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// What the gateway handler reaches.
#[derive(Clone)]
struct Gateway {
    app: AppState,
    config: Arc<GatewayConfig>,
    client: UpstreamClient,
}

/// The gateway's router: one fallback that proxies, behind the same request middleware as
/// the API (request id, access log, metrics, problem+json), without the API's body limit.
pub fn router(app: AppState, config: GatewayConfig) -> anyhow::Result<Router> {
    // hyper's client follows no redirects (the upstream's redirects are the client's to
    // follow, not ours) and reads no HTTP(S)_PROXY variables (they are for outbound traffic,
    // not for a sidecar's upstream).
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.timeout.min(Duration::from_secs(10))));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(connector);
    let gateway = Gateway {
        app: app.clone(),
        config: Arc::new(config),
        client,
    };
    Ok(Router::new()
        .fallback(proxy)
        .with_state(gateway)
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            app,
            middleware::observe_gateway,
        )))
}

/// Who a forwarded request comes from.
enum Identity {
    /// A key, and its rate limit after this request when it has one.
    Key(Box<VerifiedKey>, Option<RateDecision>),
    Session(Authenticated),
}

async fn proxy(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let began = Instant::now();
    let (parts, body) = request.into_parts();
    let deadline = middleware::request_deadline(&gateway.app);
    let identity = match tokio::time::timeout(deadline, authenticate(&gateway, &parts)).await {
        Ok(Ok(identity)) => identity,
        Ok(Err(error)) => return error.into_response(),
        Err(_) => return middleware::silent_database(deadline).into_response(),
    };
    let in_flight = match &identity {
        Identity::Key(key, _) => match gateway.app.usage.start(&key.owner.tenant_id, &key.id) {
            Ok(in_flight) => Some(in_flight),
            Err(_) => {
                gateway.app.metrics.usage_event_dropped();
                None
            }
        },
        Identity::Session(_) => None,
    };
    let url = format!(
        "{}{}",
        gateway.config.upstream,
        parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |pq| pq.as_str())
    );
    let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.as_str());
    // The client as the throttles see it: behind a trusted proxy, the address it forwarded.
    let client = crate::throttle::client_ip(
        peer.ip(),
        &parts.headers,
        &gateway.app.config.trusted_proxies,
    );
    let headers = upstream_headers(&parts.headers, &identity, client, request_id);
    // The body streams through as it came: hyper keeps its length (or its absence, so a
    // request without one does not gain `Transfer-Encoding: chunked` on the way).
    let upstream = axum::http::Uri::try_from(url).map(|uri| {
        let mut upstream = axum::http::Request::new(body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers;
        upstream
    });
    let answer = match upstream {
        Ok(upstream) => {
            tokio::time::timeout(gateway.config.timeout, gateway.client.request(upstream)).await
        }
        // The path and query came from a request hyper parsed, so this should not happen.
        Err(_) => {
            return ApiError::bad_request("The request's path cannot be forwarded.").into_response()
        }
    };
    let failure = match answer {
        Ok(Ok(answer)) => {
            let mut response = forward_answer(answer, in_flight);
            if let Identity::Key(_, Some(decision)) = &identity {
                crate::keylimits::set_headers(response.headers_mut(), decision);
            }
            return response;
        }
        Ok(Err(error)) => ApiError {
            // hyper's errors name no URL: its query string may hold what a client should not
            // have put there, and the logs keep paths only.
            cause: Some(format!(
                "forwarding to the upstream failed: {}",
                chain(&error)
            )),
            ..ApiError::new(
                ErrorCode::BadGateway,
                "The upstream service could not be reached or broke off its answer.",
            )
        },
        Err(_) => ApiError {
            cause: Some(format!(
                "the upstream did not answer within {:?}",
                gateway.config.timeout
            )),
            ..ApiError::new(
                ErrorCode::GatewayTimeout,
                "The upstream service did not answer in time.",
            )
        },
    };
    tracing::debug!(
        elapsed_ms = began.elapsed().as_millis() as u64,
        "upstream failed"
    );
    if let Some(in_flight) = in_flight {
        in_flight.finish(UsageOutcome::Failed, failure.code.status());
    }
    failure.into_response()
}

/// The caller as on the API, plus the gateway's route rules. A refused known key is metered
/// as a failed request of its tenant, as verify meters it.
async fn authenticate(
    gateway: &Gateway,
    parts: &axum::http::request::Parts,
) -> Result<Identity, ApiError> {
    let app = &gateway.app;
    let needed = required_scopes(&gateway.config.routes, &parts.method, parts.uri.path());
    match credential(&parts.headers)? {
        Credential::AccessToken(token) => {
            let session = app.accounts.authenticate_access_token(token).await?;
            // A session holds every scope (SPEC §4), so route rules never refuse it.
            Ok(Identity::Session(session))
        }
        Credential::ApiKey(presented) => {
            // Failed keys count against the client address as on the API.
            let ip = crate::throttle::client_ip_of(parts, &app.config.trusted_proxies);
            let started = Instant::now();
            let verification = match app.throttles.check_verify(ip) {
                Ok(()) => app.keys.check(presented, &needed, Charge::GATEWAY).await?,
                // Blocked: only keys held in memory are still checked (see the API's verify).
                Err(limited) => app
                    .keys
                    .check_cached(presented, &needed, Charge::GATEWAY)
                    .ok_or(limited)?,
            };
            let valid = verification.code == VerifyCode::Valid;
            app.metrics
                .verification(if valid { "valid" } else { "invalid" });
            let decision = verification.rate_limit;
            match (verification.code, verification.key) {
                (VerifyCode::Valid, Some(key)) => Ok(Identity::Key(Box::new(key), decision)),
                (code, key) => {
                    let error: ApiError = match (code, decision) {
                        (VerifyCode::InsufficientScope, _) => CoreError::InsufficientScope.into(),
                        (VerifyCode::RateLimited, Some(decision)) => {
                            CoreError::KeyRateLimited(decision).into()
                        }
                        (VerifyCode::UsageExceeded, _) => CoreError::UsageExceeded.into(),
                        // Its owner's choice, not a guess: not counted against the address.
                        (VerifyCode::Disabled, _) => {
                            CoreError::Unauthenticated(AuthFailure::InvalidApiKey).into()
                        }
                        _ => match app.throttles.verify_failed(ip) {
                            Some(seconds) => crate::throttle::limited(seconds).into(),
                            None => CoreError::Unauthenticated(AuthFailure::InvalidApiKey).into(),
                        },
                    };
                    if let Some(key) = key {
                        app.record_usage(
                            &key.owner.tenant_id,
                            &key.id,
                            UsageOutcome::Failed,
                            error.code.status(),
                            started.elapsed(),
                        );
                    }
                    Err(error)
                }
            }
        }
    }
}

/// The scopes every rule matching the request asks for, together.
fn required_scopes(rules: &[RouteRule], method: &Method, path: &str) -> Scopes {
    let mut needed: Vec<String> = Vec::new();
    for rule in rules.iter().filter(|rule| rule.applies(method, path)) {
        needed.extend(rule.scopes.to_strings());
    }
    // Every scope here was parsed at start-up, so this parse cannot fail.
    Scopes::parse(&needed).unwrap_or_default()
}

/// Headers meaningful for one connection only (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes the hop-by-hop headers, including any the `Connection` header names. Transfer
/// encoding is the HTTP library's to set for the next hop.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// The console's cookies carry session tokens: they never reach the upstream.
const CONSOLE_COOKIE_PREFIX: &str = "kw_console_";

fn upstream_headers(
    incoming: &HeaderMap,
    identity: &Identity,
    client: IpAddr,
    request_id: Option<&str>,
) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    let original_host = headers.remove(header::HOST);
    // The credential stays here; identity travels in x-keyward-* instead.
    headers.remove(header::AUTHORIZATION);
    headers.remove("x-api-key");
    // The client's own forwarding headers go: the upstream sees one `X-Forwarded-For`, the
    // client address this gateway determined (`trusted_proxies` applied), not one a client
    // claims.
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ] {
        headers.remove(name);
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-keyward-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|cookie| !cookie.is_empty() && !cookie.starts_with(CONSOLE_COOKIE_PREFIX))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&cookies.join("; ")) {
        if !cookies.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    match identity {
        Identity::Key(key, _) => {
            set("x-keyward-tenant-id", key.owner.tenant_id.as_str());
            set("x-keyward-user-id", key.owner.user_id.as_str());
            set("x-keyward-key-id", key.id.as_str());
            set("x-keyward-scopes", &key.scopes.to_strings().join(" "));
        }
        Identity::Session(session) => {
            set("x-keyward-tenant-id", session.tenant_id.as_str());
            set("x-keyward-user-id", session.user_id.as_str());
            set("x-keyward-scopes", "admin");
        }
    }
    set("x-forwarded-for", &client.to_string());
    set("x-forwarded-proto", "http");
    if let Some(id) = request_id {
        set(middleware::REQUEST_ID_HEADER, id);
    }
    if let Some(host) = original_host {
        headers.insert("x-forwarded-host", host);
    }
    headers.append(header::VIA, HeaderValue::from_static("1.1 keyward"));
    headers
}

/// An error and its causes, `a: b: c`: hyper's client error alone says only "client error
/// (Connect)"; the cause says what failed (refused, reset, TLS).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The upstream's answer, streamed back; the metering completes when its body is done.
fn forward_answer(answer: axum::http::Response<Incoming>, in_flight: Option<InFlight>) -> Response {
    let status = answer.status();
    let (mut head, body) = answer.into_parts();
    strip_hop_by_hop(&mut head.headers);
    // The upstream's own error bodies pass as they are; the middleware only writes ours.
    head.extensions.insert(OwnErrorBody);
    let outcome = if status.as_u16() < 400 {
        UsageOutcome::Succeeded
    } else {
        UsageOutcome::Failed
    };
    let body = MeteredBody {
        inner: body,
        in_flight,
        outcome,
        status,
    };
    Response::from_parts(head, Body::new(body))
}

/// The upstream's body on its way to the client. The request counts as complete when the
/// last chunk went out (or the client went away); a body the upstream broke off is a failure.
struct MeteredBody {
    inner: Incoming,
    in_flight: Option<InFlight>,
    outcome: UsageOutcome,
    status: StatusCode,
}

impl MeteredBody {
    fn finish(&mut self, outcome: UsageOutcome) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(outcome, self.status.as_u16());
        }
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                let outcome = self.outcome;
                self.finish(outcome);
            }
            Poll::Ready(Some(Err(_))) => self.finish(UsageOutcome::Failed),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    /// The client stopped reading (or a body-less answer was never polled): the upstream did
    /// answer, so the request ends as its status says.
    fn drop(&mut self) {
        let outcome = self.outcome;
        self.finish(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(route: &str) -> RouteRule {
        RouteRule::parse(&GatewayRouteSettings {
            route: route.into(),
            scopes: vec!["flows:invoke".into()],
        })
        .unwrap()
    }

    #[test]
    fn route_patterns() {
        let flows = rule("POST /flows/*");
        assert!(flows.applies(&Method::POST, "/flows/a"));
        assert!(flows.applies(&Method::POST, "/flows/a/b"));
        assert!(!flows.applies(&Method::GET, "/flows/a"));
        assert!(!flows.applies(&Method::POST, "/flows"));
        assert!(!flows.applies(&Method::POST, "/flowsx/a"));
        let run = rule("/flows/*/run");
        assert!(run.applies(&Method::GET, "/flows/7/run"));
        assert!(run.applies(&Method::DELETE, "/flows/7/run"));
        assert!(!run.applies(&Method::GET, "/flows/7/run/x"));
        assert!(!run.applies(&Method::GET, "/flows/7"));
        let exact = rule("GET /health");
        assert!(exact.applies(&Method::GET, "/health"));
        assert!(!exact.applies(&Method::GET, "/health/x"));
        assert!(rule("* /x").applies(&Method::PATCH, "/x"));
    }

    #[test]
    fn bad_routes_are_refused() {
        let parse = |route: &str, scopes: &[&str]| {
            RouteRule::parse(&GatewayRouteSettings {
                route: route.into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert!(parse("flows/*", &["a"])
            .unwrap_err()
            .contains("[METHOD] /path"));
        assert!(parse("post /x", &["a"])
            .unwrap_err()
            .contains("HTTP method"));
        assert!(parse("/fl*ws", &["a"])
            .unwrap_err()
            .contains("whole segment"));
        assert!(parse("/x", &[]).unwrap_err().contains("at least one"));
        assert!(parse("/x", &["Bad Scope"])
            .unwrap_err()
            .starts_with("scopes"));
    }

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn upstream_settings_are_checked() {
        let settings = |listen: Option<&str>, upstream: Option<&str>| GatewaySettings {
            listen: listen.map(str::to_owned),
            upstream: upstream.map(str::to_owned),
            ..GatewaySettings::default()
        };
        assert!(GatewayConfig::from_settings(&settings(None, None))
            .unwrap()
            .is_none());
        let missing = GatewayConfig::from_settings(&settings(Some("127.0.0.1:0"), None));
        assert!(missing.unwrap_err().contains("--upstream"));
        let missing = GatewayConfig::from_settings(&settings(None, Some("http://a")));
        assert!(missing.unwrap_err().contains("--gateway-listen"));
        for bad in ["ftp://a", "http://u:p@a", "http://a/?q=1", "nope"] {
            assert!(
                GatewayConfig::from_settings(&settings(Some("127.0.0.1:0"), Some(bad))).is_err(),
                "{bad}"
            );
        }
        let ok =
            GatewayConfig::from_settings(&settings(Some("127.0.0.1:0"), Some("http://a/api/")))
                .unwrap()
                .unwrap();
        assert_eq!(ok.upstream, "http://a/api");
        assert_eq!(ok.upstream_origin(), "http://a");
    }
}
