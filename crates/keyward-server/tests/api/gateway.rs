// The gateway (SPEC §4 "Verification"): a real upstream on a random port behind the real
// gateway listener. Authentication before forwarding, identity and credential headers, hop-by-hop
// handling, 502/504, per-route scopes, streaming both ways, and the metering of each request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::kit::*;

// ---------------------------------------------------------------- the upstream

/// What the test upstream saw, and the switches tests use to hold its answers.
#[derive(Default)]
struct Upstream {
    hits: AtomicUsize,
    /// `/hold` answers once this is notified.
    release: Notify,
    /// `/download-held` sends its second chunk once this is notified.
    release_download: Notify,
    /// `/upload-held` reports here when the first chunk of its body arrived.
    first_chunk: std::sync::Mutex<Option<mpsc::UnboundedSender<()>>>,
}

/// The upstream's answer to `/echo/…`: what reached it.
async fn echo(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    upstream.hits.fetch_add(1, Ordering::SeqCst);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    axum::Json(json!({
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

async fn status(State(upstream): State<Arc<Upstream>>, Path(code): Path<u16>) -> Response {
    upstream.hits.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
    (
        status,
        [("content-type", "text/plain")],
        format!("upstream says {code}"),
    )
        .into_response()
}

async fn hold(State(upstream): State<Arc<Upstream>>) -> &'static str {
    upstream.hits.fetch_add(1, Ordering::SeqCst);
    upstream.release.notified().await;
    "released"
}

async fn sleep(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slept"
}

const CHUNK: usize = 64 * 1024;

/// `bytes` bytes, made as they are sent.
async fn download(Path(bytes): Path<usize>) -> Response {
    let chunks = futures_util::stream::unfold(bytes, |left| async move {
        (left > 0).then(|| {
            let size = left.min(CHUNK);
            (
                Ok::<_, std::io::Error>(Bytes::from(vec![b'd'; size])),
                left - size,
            )
        })
    });
    Body::from_stream(chunks).into_response()
}

/// One chunk, then another only after the test saw the first one through the gateway.
async fn download_held(State(upstream): State<Arc<Upstream>>) -> Response {
    let chunks = futures_util::stream::unfold(0, move |sent| {
        let upstream = upstream.clone();
        async move {
            match sent {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from_static(b"first")), 1)),
                1 => {
                    upstream.release_download.notified().await;
                    Some((Ok(Bytes::from_static(b"second")), 2))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(chunks).into_response()
}

/// Counts the body's bytes as they come.
async fn upload(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        total += chunk.expect("upload chunk").len();
    }
    total.to_string()
}

/// Reports the first chunk of its body at once, then reads the rest.
async fn upload_held(State(upstream): State<Arc<Upstream>>, body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total = 0usize;
    let mut reported = false;
    while let Some(chunk) = stream.next().await {
        total += chunk.expect("upload chunk").len();
        if !reported {
            reported = true;
            if let Some(tx) = upstream.first_chunk.lock().expect("lock").as_ref() {
                let _ = tx.send(());
            }
        }
    }
    total.to_string()
}

async fn spawn_upstream() -> (String, Arc<Upstream>) {
    let upstream = Arc::new(Upstream::default());
    let router = Router::new()
        .route("/echo/{*rest}", any(echo))
        .route("/flows/{*rest}", any(echo))
        .route("/status/{code}", any(status))
        .route("/hold", get(hold))
        .route("/sleep/{ms}", get(sleep))
        .route("/download/{bytes}", get(download))
        .route("/download-held", get(download_held))
        .route("/upload", post(upload))
        .route("/upload-held", post(upload_held))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), upstream)
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

// ---------------------------------------------------------------- helpers

struct Gate {
    app: TestApp,
    url: String,
    upstream: Arc<Upstream>,
}

async fn spawn_gateway(configure: impl FnOnce(&mut keyward_server::Settings)) -> Gate {
    let (upstream_url, upstream) = spawn_upstream().await;
    let app = spawn_app_with(|settings| {
        settings.gateway.listen = Some("127.0.0.1:0".into());
        settings.gateway.upstream = Some(upstream_url);
        configure(settings);
    })
    .await;
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gateway listening");
    Gate {
        app,
        url: format!("http://{addr}"),
        upstream,
    }
}

impl Gate {
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Auth<'_>,
    ) -> reqwest::RequestBuilder {
        let request = self.app.http.request(method, format!("{}{path}", self.url));
        match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::ApiKey(key) => request.header("x-api-key", key),
        }
    }

    async fn get(&self, path: &str, auth: Auth<'_>) -> Reply {
        TestApp::read(
            self.request(reqwest::Method::GET, path, auth)
                .send()
                .await
                .expect("sent"),
        )
        .await
    }

    fn hits(&self) -> usize {
        self.upstream.hits.load(Ordering::SeqCst)
    }
}

fn key_of(created: &Value) -> (String, String) {
    (
        created["key"].as_str().expect("key").to_owned(),
        created["id"].as_str().expect("id").to_owned(),
    )
}

/// Polls `/v1/usage{query}` until `done` holds (events show within 5 s); returns that answer.
async fn usage_until(
    app: &TestApp,
    token: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = app
            .get(&format!("/v1/usage{query}"), Auth::Bearer(token))
            .await
            .expect(200)
            .clone();
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "usage never got there: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

// ---------------------------------------------------------------- forwarding

#[tokio::test]
async fn forwards_with_the_callers_identity_and_without_credentials() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let created = gate
        .app
        .create_key(
            &ada,
            json!({"name": "k", "scopes": ["read", "flows:invoke"]}),
        )
        .await;
    let (key, key_id) = key_of(&created);
    let gateway_host = gate.url.trim_start_matches("http://").to_owned();

    let reply = gate
        .request(
            reqwest::Method::PUT,
            "/echo/a/b?x=1&y=two",
            Auth::Bearer(&key),
        )
        .header("x-keyward-tenant-id", "ten_spoofed")
        .header("x-keyward-anything", "spoofed")
        .header("x-api-key", "kw_also_a_credential")
        .header("cookie", "kw_console_access=session-secret; theme=dark")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "1")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-custom", "kept")
        .header("x-request-id", "req-from-client")
        .body("payload")
        .send()
        .await
        .expect("sent");
    let reply = TestApp::read(reply).await;
    let echo = reply.expect(200);
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/a/b");
    assert_eq!(echo["query"], "x=1&y=two");
    assert_eq!(echo["body"], "payload");
    assert_eq!(
        header(echo, "x-keyward-tenant-id"),
        Some(ada.tenant_id.as_str())
    );
    assert_eq!(
        echo["headers"]["x-keyward-tenant-id"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        header(echo, "x-keyward-user-id"),
        Some(ada.user_id.as_str())
    );
    assert_eq!(header(echo, "x-keyward-key-id"), Some(key_id.as_str()));
    assert_eq!(header(echo, "x-keyward-scopes"), Some("flows:invoke read"));
    assert_eq!(header(echo, "x-keyward-anything"), None);
    assert_eq!(header(echo, "authorization"), None);
    assert_eq!(header(echo, "x-api-key"), None);
    assert_eq!(header(echo, "cookie"), Some("theme=dark"));
    assert_eq!(header(echo, "x-hop-secret"), None);
    assert_eq!(header(echo, "connection"), None);
    assert_eq!(header(echo, "forwarded"), None);
    assert_eq!(header(echo, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(echo, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(echo, "x-forwarded-host"),
        Some(gateway_host.as_str())
    );
    assert_eq!(header(echo, "x-custom"), Some("kept"));
    assert_eq!(header(echo, "via"), Some("1.1 keyward"));
    assert_eq!(header(echo, "x-request-id"), Some("req-from-client"));
    assert_eq!(reply.header("x-request-id"), Some("req-from-client"));
    let upstream_host = header(echo, "host").expect("host").to_owned();
    assert_ne!(upstream_host, gateway_host, "Host names the upstream");

    // The same through X-API-Key, and with a session's access token.
    let echo = gate.get("/echo/k", Auth::ApiKey(&key)).await;
    assert_eq!(
        header(echo.expect(200), "x-keyward-key-id"),
        Some(key_id.as_str())
    );
    let echo = gate.get("/echo/s", Auth::Bearer(&ada.access_token)).await;
    let echo = echo.expect(200);
    assert_eq!(
        header(echo, "x-keyward-user-id"),
        Some(ada.user_id.as_str())
    );
    assert_eq!(header(echo, "x-keyward-scopes"), Some("admin"));
    assert_eq!(header(echo, "x-keyward-key-id"), None);
    assert_eq!(gate.hits(), 3);
}

#[tokio::test]
async fn requests_without_valid_credentials_never_reach_the_upstream() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let (revoked, revoked_id) = key_of(&gate.app.create_key(&ada, json!({"name": "r"})).await);
    gate.app
        .delete(
            &format!("/v1/keys/{revoked_id}"),
            Auth::Bearer(&ada.access_token),
        )
        .await
        .expect(204);

    let none = gate.get("/echo/x", Auth::None).await;
    none.expect_problem(401, "missing_credentials");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    gate.get("/echo/x", Auth::Bearer("kw_not_a_key"))
        .await
        .expect_problem(401, "invalid_api_key");
    gate.get("/echo/x", Auth::Bearer(&revoked))
        .await
        .expect_problem(401, "invalid_api_key");
    gate.get("/echo/x", Auth::Bearer("aaa.bbb.ccc"))
        .await
        .expect_problem(401, "invalid_token");
    let basic = TestApp::read(
        gate.request(reqwest::Method::GET, "/echo/x", Auth::None)
            .header("authorization", "Basic YTpi")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(basic.status, 401);
    assert_eq!(
        gate.hits(),
        0,
        "the upstream saw a request without credentials"
    );
}

#[tokio::test]
async fn key_policies_hold_at_the_gateway() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let session = Auth::Bearer(&ada.access_token);

    // Credits: each forwarded request spends one; at zero, 429 usage_exceeded.
    let (paid, _) = key_of(
        &gate
            .app
            .create_key(&ada, json!({"name": "paid", "credits": {"remaining": 2}}))
            .await,
    );
    gate.get("/echo/a", Auth::ApiKey(&paid)).await.expect(200);
    gate.get("/echo/b", Auth::ApiKey(&paid)).await.expect(200);
    gate.get("/echo/c", Auth::ApiKey(&paid))
        .await
        .expect_problem(429, "usage_exceeded");
    assert_eq!(gate.hits(), 2);

    // A rate limit: RateLimit-* headers on forwarded answers, 429 rate_limited past it.
    let (limited, _) = key_of(
        &gate
            .app
            .create_key(
                &ada,
                json!({"name": "limited", "rate_limit": {"requests": 1, "per_seconds": 3600}}),
            )
            .await,
    );
    let first = gate.get("/echo/d", Auth::ApiKey(&limited)).await;
    first.expect(200);
    assert_eq!(first.header("ratelimit-limit"), Some("1"));
    assert_eq!(first.header("ratelimit-remaining"), Some("0"));
    let second = gate.get("/echo/e", Auth::ApiKey(&limited)).await;
    second.expect_problem(429, "rate_limited");
    assert!(second.header("retry-after").is_some());
    assert_eq!(second.header("ratelimit-remaining"), Some("0"));
    assert_eq!(gate.hits(), 3);

    // A disabled key: 401, and never forwarded.
    let (off, off_id) = key_of(&gate.app.create_key(&ada, json!({"name": "off"})).await);
    gate.app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/keys/{off_id}"),
            session,
            Some(json!({"enabled": false})),
        )
        .await
        .expect(200);
    gate.get("/echo/f", Auth::ApiKey(&off))
        .await
        .expect_problem(401, "invalid_api_key");
    assert_eq!(gate.hits(), 3, "a refused request reached the upstream");
}

#[tokio::test]
async fn upstream_answers_pass_through_as_they_are() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let (key, _) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);
    for code in [201, 404, 503] {
        let reply = gate
            .get(&format!("/status/{code}"), Auth::Bearer(&key))
            .await;
        assert_eq!(reply.status, code);
        assert_eq!(reply.text, format!("upstream says {code}"));
        assert_eq!(reply.header("content-type"), Some("text/plain"));
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    let closed = closed_port().await;
    let app = spawn_app_with(|settings| {
        settings.gateway.listen = Some("127.0.0.1:0".into());
        settings.gateway.upstream = Some(format!("http://{closed}"));
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let (key, _) = key_of(&app.create_key(&ada, json!({"name": "k"})).await);
    let addr = app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gateway");
    let reply = TestApp::read(
        app.http
            .get(format!("http://{addr}/anything"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    reply.expect_problem(502, "bad_gateway");

    let gate = spawn_gateway(|settings| settings.gateway.timeout_seconds = 1).await;
    let ada = gate.app.register("ada@example.com").await;
    let (key, _) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);
    let started = Instant::now();
    let reply = gate.get("/sleep/5000", Auth::Bearer(&key)).await;
    reply.expect_problem(504, "gateway_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "504 after {:?}",
        started.elapsed()
    );
    let answer = usage_until(&gate.app, &ada.access_token, "", |u| u["failed"] == 1).await;
    assert_eq!(
        (answer["executions"].clone(), answer["in_flight"].clone()),
        (json!(1), json!(0))
    );
}

#[tokio::test]
async fn route_rules_ask_for_scopes() {
    let gate = spawn_gateway(|settings| {
        settings.gateway.routes = vec![keyward_server::config::GatewayRouteSettings {
            route: "POST /flows/*".into(),
            scopes: vec!["flows:invoke".into()],
        }];
    })
    .await;
    let ada = gate.app.register("ada@example.com").await;
    let (reader, _) = key_of(
        &gate
            .app
            .create_key(&ada, json!({"name": "r", "scopes": ["read"]}))
            .await,
    );
    let (invoker, _) = key_of(
        &gate
            .app
            .create_key(&ada, json!({"name": "i", "scopes": ["flows:invoke"]}))
            .await,
    );
    let post = |credential: &str| {
        gate.request(
            reqwest::Method::POST,
            "/flows/7/run",
            Auth::Bearer(credential),
        )
        .send()
    };
    let refused = TestApp::read(post(&reader).await.expect("sent")).await;
    refused.expect_problem(403, "insufficient_scope");
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|value| value.contains("insufficient_scope")));
    assert_eq!(gate.hits(), 0);
    gate.get("/flows/7", Auth::Bearer(&reader))
        .await
        .expect(200);
    assert_eq!(
        TestApp::read(post(&invoker).await.expect("sent"))
            .await
            .status,
        200
    );
    let session = ada.access_token.clone();
    assert_eq!(
        TestApp::read(post(&session).await.expect("sent"))
            .await
            .status,
        200
    );
    assert_eq!(gate.hits(), 3);
}

// ---------------------------------------------------------------- streaming

#[tokio::test]
async fn bodies_stream_through_chunk_by_chunk() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let (key, _) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);

    // Download: the first chunk reaches the client while the upstream still holds the second.
    let response = gate
        .request(reqwest::Method::GET, "/download-held", Auth::Bearer(&key))
        .send()
        .await
        .expect("sent");
    let mut chunks = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), chunks.next())
        .await
        .expect("the first chunk came before the body was complete: the gateway buffered it");
    assert_eq!(&first.expect("chunk").expect("chunk")[..], b"first");
    gate.upstream.release_download.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = chunks.next().await {
        rest.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(rest, b"second");

    // Upload: the upstream sees the first chunk while the client still holds the second.
    let (tx, mut first_chunk) = mpsc::unbounded_channel();
    *gate.upstream.first_chunk.lock().expect("lock") = Some(tx);
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let body = futures_util::stream::unfold((0, Some(wait)), |(step, wait)| async move {
        match step {
            0 => Some((
                Ok::<_, std::io::Error>(Bytes::from_static(b"first")),
                (1, wait),
            )),
            1 => {
                let _ = wait.expect("waits once").await;
                Some((Ok(Bytes::from_static(b"second")), (2, None)))
            }
            _ => None,
        }
    });
    let sending = tokio::spawn(
        gate.request(reqwest::Method::POST, "/upload-held", Auth::Bearer(&key))
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(5), first_chunk.recv())
        .await
        .expect("the upstream got the first chunk before the body was complete: the gateway buffered it");
    go.send(()).expect("client still sending");
    let reply = TestApp::read(sending.await.expect("task").expect("sent")).await;
    assert_eq!(reply.text, "11");
}

#[tokio::test]
async fn a_hundred_megabytes_pass_both_ways() {
    const SIZE: usize = 100 * 1024 * 1024;
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let (key, _) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);

    let response = gate
        .request(
            reqwest::Method::GET,
            &format!("/download/{SIZE}"),
            Auth::Bearer(&key),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        received += chunk.expect("chunk").len();
    }
    assert_eq!(received, SIZE);

    let body = futures_util::stream::unfold(SIZE, |left| async move {
        (left > 0).then(|| {
            let size = left.min(CHUNK);
            (
                Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; size])),
                left - size,
            )
        })
    });
    let reply = gate
        .request(reqwest::Method::POST, "/upload", Auth::Bearer(&key))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("sent");
    assert_eq!(TestApp::read(reply).await.text, SIZE.to_string());
}

// ---------------------------------------------------------------- metering

#[tokio::test]
async fn a_known_mix_of_requests_is_counted_exactly() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let bob = gate.app.register("bob@example.com").await;
    let (key, key_id) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);
    let (revoked, revoked_id) = key_of(&gate.app.create_key(&ada, json!({"name": "r"})).await);
    gate.app
        .delete(
            &format!("/v1/keys/{revoked_id}"),
            Auth::Bearer(&ada.access_token),
        )
        .await
        .expect(204);

    for _ in 0..3 {
        gate.get("/status/200", Auth::Bearer(&key))
            .await
            .expect(200);
    }
    for _ in 0..2 {
        assert_eq!(
            gate.get("/status/404", Auth::Bearer(&key)).await.status,
            404
        );
    }
    assert_eq!(
        gate.get("/status/500", Auth::Bearer(&key)).await.status,
        500
    );
    // Refused: a revoked key is its tenant's failed request; no key at all is nobody's.
    assert_eq!(
        gate.get("/status/200", Auth::Bearer(&revoked)).await.status,
        401
    );
    assert_eq!(gate.get("/status/200", Auth::None).await.status, 401);
    assert_eq!(
        gate.get("/status/200", Auth::Bearer("kw_unknown"))
            .await
            .status,
        401
    );

    let answer = usage_until(&gate.app, &ada.access_token, "", |u| u["executions"] == 7).await;
    assert_eq!(answer["succeeded"], 3);
    assert_eq!(answer["failed"], 4);
    assert_eq!(answer["in_flight"], 0);
    assert!(
        answer["avg_duration_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{answer}"
    );
    let one = usage_until(
        &gate.app,
        &ada.access_token,
        &format!("?key_id={key_id}"),
        |u| u["executions"] == 6,
    )
    .await;
    assert_eq!(
        (one["succeeded"].clone(), one["failed"].clone()),
        (json!(3), json!(3))
    );
    // Nothing more arrives, and another tenant sees none of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = usage_until(&gate.app, &ada.access_token, "", |_| true).await;
    assert_eq!(again["executions"], 7);
    let other = usage_until(&gate.app, &bob.access_token, "", |_| true).await;
    assert_eq!(other["executions"], 0);
    gate.app
        .get(
            &format!("/v1/usage?key_id={key_id}"),
            Auth::Bearer(&bob.access_token),
        )
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_slow_request_shows_in_flight_until_it_ends() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let (key, _) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);
    let pending = tokio::spawn(
        gate.request(reqwest::Method::GET, "/hold", Auth::Bearer(&key))
            .send(),
    );
    let running = usage_until(&gate.app, &ada.access_token, "", |u| u["in_flight"] == 1).await;
    assert_eq!(running["executions"], 1);
    assert_eq!(running["succeeded"], 0);
    assert_eq!(running["failed"], 0);
    assert_eq!(running["days"][29]["in_flight"], 1);
    assert_eq!(
        running["success_rate"],
        Value::Null,
        "nothing completed yet"
    );
    assert_eq!(running["avg_duration_ms"], Value::Null);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.upstream.release.notify_one();
    let reply = TestApp::read(pending.await.expect("task").expect("sent")).await;
    assert_eq!(reply.text, "released");
    let done = usage_until(&gate.app, &ada.access_token, "", |u| u["in_flight"] == 0).await;
    assert_eq!(done["executions"], 1);
    assert_eq!(done["succeeded"], 1);
    assert!(
        done["avg_duration_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 200.0),
        "the duration covers the whole request: {done}"
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_leaves_nothing_in_flight() {
    let gate = spawn_gateway(|_| {}).await;
    let ada = gate.app.register("ada@example.com").await;
    let (key, _) = key_of(&gate.app.create_key(&ada, json!({"name": "k"})).await);
    let pending = tokio::spawn(
        gate.request(reqwest::Method::GET, "/hold", Auth::Bearer(&key))
            .send(),
    );
    usage_until(&gate.app, &ada.access_token, "", |u| u["in_flight"] == 1).await;
    pending.abort();
    let done = usage_until(&gate.app, &ada.access_token, "", |u| u["in_flight"] == 0).await;
    assert_eq!(
        (done["executions"].clone(), done["failed"].clone()),
        (json!(1), json!(1))
    );
    gate.upstream.release.notify_waiters();
}

#[tokio::test]
async fn two_instances_metering_one_tenant_lose_no_count() {
    const EACH: usize = 40;
    let a = spawn_gateway(|_| {}).await;
    let ada = a.app.register("ada@example.com").await;
    let (key, _) = key_of(&a.app.create_key(&ada, json!({"name": "k"})).await);
    let url = a.app.database_url();
    let (upstream_url, upstream) = spawn_upstream().await;
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: url,
        ..keyward_server::Settings::default()
    };
    settings.database.max_connections = 4;
    settings.gateway.listen = Some("127.0.0.1:0".into());
    settings.gateway.upstream = Some(upstream_url);
    let b_app = spawn_with_clock(
        settings,
        a.app.clock.clone(),
        BACKEND,
        fresh_database().await,
    )
    .await;
    let b_addr = b_app
        .server
        .as_ref()
        .expect("running")
        .gateway_addr
        .expect("gateway");
    let b = Gate {
        app: b_app,
        url: format!("http://{b_addr}"),
        upstream,
    };
    let send = |gate: &Gate| {
        let requests: Vec<_> = (0..EACH)
            .map(|_| {
                gate.request(reqwest::Method::GET, "/status/200", Auth::Bearer(&key))
                    .send()
            })
            .collect();
        futures_util::future::join_all(requests)
    };
    let (from_a, from_b) = tokio::join!(send(&a), send(&b));
    for reply in from_a.into_iter().chain(from_b) {
        assert_eq!(reply.expect("sent").status(), 200);
    }
    let total = (2 * EACH) as i64;
    let answer = usage_until(&a.app, &ada.access_token, "", |u| u["executions"] == total).await;
    assert_eq!(answer["succeeded"], total);
    assert_eq!(a.hits() + b.hits(), 2 * EACH);
}
