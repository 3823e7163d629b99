// The test kit: [`spawn_app_on`] starts a server on a backend with a fresh database;
// [`TestApp`] sends requests; [`Reply`] asserts. Each backend's suite module (see `main.rs`)
// wraps it as `spawn_app()` / `spawn_app_with()`.
#![allow(dead_code)]

use std::sync::Arc;

use keyward_core::TestClock;
use keyward_server::{Config, RunningServer, Settings};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery staple";

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const POSTGRES_URL_VARIABLE: &str = "KEYWARD_TEST_POSTGRES_URL";

/// A fresh, empty database, removed when dropped: a SQLite file in a temporary folder, or a
/// PostgreSQL database created through `KEYWARD_TEST_POSTGRES_URL` and dropped after.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Folder(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                Self {
                    url: format!("sqlite://{}", dir.path().join("keyward.db").display()),
                    cleanup: Cleanup::Folder(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VARIABLE).unwrap_or_else(|_| {
                    panic!("{POSTGRES_URL_VARIABLE} is not set at run time (it was at build time)")
                });
                let name = format!("keyward_test_{}", rand::random::<u64>());
                let mut admin = postgres_admin(&admin_url).await;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                Self {
                    url: database_url_with_name(&admin_url, &name),
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }
}

/// A connection to the server named by `KEYWARD_TEST_POSTGRES_URL`; a clear failure (not a
/// hang) when it does not answer.
pub async fn postgres_admin(admin_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sqlx::PgConnection::connect(admin_url),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => panic!("PostgreSQL at {POSTGRES_URL_VARIABLE} is not reachable: {error}"),
        Err(_) => panic!("PostgreSQL at {POSTGRES_URL_VARIABLE} did not answer within 10 s"),
    }
}

/// `postgres://u@h:5432/postgres?x=y` with the database `name` instead.
pub fn database_url_with_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{root}/{name}{query}")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            let shown = name.clone();
            // Drop runs inside the test's runtime: a thread with its own runtime does the
            // async work. FORCE ends the connections of servers still open.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let mut admin = postgres_admin(&admin_url).await;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(_))) {
                eprintln!("could not drop the test database {shown}: {dropped:?}");
            }
        }
    }
}

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    /// Moves the server's "now" forward: expiry without sleeping.
    pub clock: TestClock,
    pub server: Option<RunningServer>,
    pub backend: Backend,
    /// The database this app made for itself (kept alive as long as the app).
    pub database: TestDatabase,
}

/// A server on `backend`, with a fresh database, whose settings `configure` adjusts first
/// (setting `database_url` points it at another database, e.g. a second instance).
pub async fn spawn_app_on(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new(backend).await;
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        database_url: database.url.clone(),
        ..Settings::default()
    };
    // Small pools: many test servers share one PostgreSQL.
    settings.database.max_connections = 4;
    // The suites log in, register, refresh and verify many times from 127.0.0.1: throttling
    // stays on (its code runs on every request) with budgets no suite reaches. throttle.rs
    // sets real ones.
    settings.rate_limits = generous_rate_limits();
    configure(&mut settings);
    spawn_with_clock(settings, TestClock::new(), backend, database).await
}

/// Rate limits on, with budgets no test but the throttle tests reaches.
pub fn generous_rate_limits() -> keyward_server::config::RateLimitSettings {
    use keyward_server::config::Rate;
    let generous = Rate::new(1_000_000, 1);
    keyward_server::config::RateLimitSettings {
        enabled: true,
        login_per_account: generous,
        login_per_address: generous,
        register_per_address: generous,
        refresh_per_address: generous,
        device_per_address: generous,
        verify_failures_per_address: generous,
        device_entry_failures_per_address: generous,
        leak_reports_per_address: generous,
    }
}

/// Starts a server with exactly these settings and this clock (several instances may share a
/// clock to move time together).
pub async fn spawn_with_clock(
    settings: Settings,
    clock: TestClock,
    backend: Backend,
    database: TestDatabase,
) -> TestApp {
    let config = Config::from_settings(settings).expect("valid test config");
    let server = keyward_server::start(config, Arc::new(clock.clone()))
        .await
        .expect("server starts");
    TestApp {
        base_url: format!("http://{}", server.addr),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        clock,
        server: Some(server),
        backend,
        database,
    }
}

impl TestApp {
    /// The database URL this server runs on.
    pub fn database_url(&self) -> String {
        self.server
            .as_ref()
            .expect("running")
            .state
            .config
            .database_url
            .clone()
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, then returns the JSON body.
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        &self.body
    }

    /// Asserts a SPEC §3 problem: status, code, content type, request id equal to the header.
    pub fn expect_problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["type"], "about:blank");
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["detail"].as_str().is_some());
        let request_id = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(self.body["request_id"], request_id);
        if status == 401 {
            let challenge = self
                .header("www-authenticate")
                .expect("WWW-Authenticate on 401");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
        &self.body
    }

    /// Asserts a 422 whose `errors` name `field`.
    pub fn expect_field_error(&self, field: &str) {
        self.expect_problem(422, "validation_failed");
        let errors = self.body["errors"].as_array().expect("errors[]");
        assert!(
            errors.iter().any(
                |e| e["field"] == field && e["message"].as_str().is_some_and(|m| !m.is_empty())
            ),
            "no error for field {field}: {}",
            self.text
        );
    }
}

/// A registered user's session.
#[derive(Debug, Clone)]
pub struct Account {
    pub email: String,
    pub user_id: String,
    pub tenant_id: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Sends a request; `body` as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::ApiKey(key) => request.header("x-api-key", key),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::read(request.send().await.expect("request sent")).await
    }

    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Reply {
        self.send(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: Auth<'_>, body: Value) -> Reply {
        self.send(Method::POST, path, auth, Some(body)).await
    }

    pub async fn delete(&self, path: &str, auth: Auth<'_>) -> Reply {
        self.send(Method::DELETE, path, auth, None).await
    }

    /// Registers `email` with [`PASSWORD`].
    pub async fn register(&self, email: &str) -> Account {
        let reply = self
            .post(
                "/v1/auth/register",
                Auth::None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        let body = reply.expect(201);
        Account {
            email: email.to_lowercase(),
            user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
            tenant_id: body["tenant"]["id"].as_str().expect("tenant id").to_owned(),
            access_token: body["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned(),
        }
    }

    /// Creates a key with `body` as `account`; returns the create response.
    pub async fn create_key(&self, account: &Account, body: Value) -> Value {
        self.post("/v1/keys", Auth::Bearer(&account.access_token), body)
            .await
            .expect(201)
            .clone()
    }

    /// `POST /v1/keys/verify`.
    pub async fn verify(&self, key: &str, scopes: Option<Value>) -> Value {
        let mut body = json!({"key": key});
        if let Some(scopes) = scopes {
            body["scopes"] = scopes;
        }
        self.post("/v1/keys/verify", Auth::None, body)
            .await
            .expect(200)
            .clone()
    }
}

// ---------------------------------------------------------------- the database, read directly

impl TestApp {
    /// The first column of every row of `sql`, as text, read straight from this app's
    /// database: what the server wrote, seen without its API. `sql` takes no parameters (tests
    /// write their own literals) and must select text (`CAST(x AS TEXT)`, `||` to join).
    pub async fn sql_strings(&self, sql: &str) -> Vec<String> {
        use sqlx::Connection as _;
        let url = self.database_url();
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("open");
                sqlx::query_scalar(sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect(sql)
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&url).await.expect("connect");
                sqlx::query_scalar(sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect(sql)
            }
        }
    }

    /// The first column of every row of `sql`, as bytes (BLOB / BYTEA).
    pub async fn sql_bytes(&self, sql: &str) -> Vec<Vec<u8>> {
        use sqlx::Connection as _;
        let url = self.database_url();
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("open");
                sqlx::query_scalar(sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect(sql)
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&url).await.expect("connect");
                sqlx::query_scalar(sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect(sql)
            }
        }
    }

    /// Runs a statement without parameters; the number of rows it changed.
    pub async fn sql_execute(&self, sql: &str) -> u64 {
        use sqlx::Connection as _;
        let url = self.database_url();
        match self.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("open");
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .expect(sql)
                    .rows_affected()
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&url).await.expect("connect");
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .expect(sql)
                    .rows_affected()
            }
        }
    }
}

/// A browser for the console: keeps cookies, follows no redirect.
pub fn console_browser() -> reqwest::Client {
    console_browser_builder().build().expect("client")
}

/// [`console_browser`]'s builder, for a test that sets more (a user agent, say).
pub fn console_browser_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
}

/// The CSRF token of the console's sign-in form, as `browser` (which keeps the cookie it is
/// bound to) gets it.
pub async fn login_form_csrf(app: &TestApp, browser: &reqwest::Client) -> String {
    let form = browser
        .get(app.url("/console/login"))
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("page");
    let marker = r#"name="csrf" value=""#;
    let start = form.find(marker).expect("a CSRF field") + marker.len();
    form[start..start + form[start..].find('"').expect("value end")].to_owned()
}

// ---------------------------------------------------------------- webhooks

/// Settings for tests that receive webhooks: targets on 127.0.0.1 allowed (the SSRF guard
/// would refuse them), and a dispatcher that polls every 50 ms.
pub fn webhook_settings(settings: &mut Settings) {
    settings.webhooks.allow_private_targets = true;
    settings.webhooks.poll_interval_ms = 50;
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON payload")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }
}

/// A webhook receiver on 127.0.0.1: records every request and answers the scripted statuses
/// in order, then 200.
pub struct Receiver {
    pub url: String,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
}

pub async fn receiver(statuses: &[u16]) -> Receiver {
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let script = Arc::new(std::sync::Mutex::new(
        statuses
            .iter()
            .copied()
            .collect::<std::collections::VecDeque<u16>>(),
    ));
    let (log, answers) = (received.clone(), script.clone());
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let (log, answers) = (log.clone(), answers.clone());
        async move {
            log.lock().unwrap().push(Received { headers, body });
            let status = answers.lock().unwrap().pop_front().unwrap_or(200);
            axum::http::StatusCode::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hooks"),
        received,
    }
}

impl Receiver {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (at most 15 s) until `count` requests came; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {count} deliveries, got {}: {got:?}",
                got.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl TestApp {
    /// Creates a webhook for `account`; the create answer.
    pub async fn create_webhook(&self, account: &Account, url: &str, events: &[&str]) -> Value {
        self.post(
            "/v1/webhooks",
            Auth::Bearer(&account.access_token),
            json!({"url": url, "events": events}),
        )
        .await
        .expect(201)
        .clone()
    }

    /// `GET /v1/webhooks/{id}/deliveries` as `account`, polled (at most 15 s) until `done`
    /// holds for the list.
    pub async fn deliveries_until(
        &self,
        account: &Account,
        webhook_id: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let reply = self
                .get(
                    &format!("/v1/webhooks/{webhook_id}/deliveries"),
                    Auth::Bearer(&account.access_token),
                )
                .await;
            let list = reply.expect(200)["deliveries"]
                .as_array()
                .expect("deliveries")
                .clone();
            if done(&list) {
                return list;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries never came to the expected state: {list:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
