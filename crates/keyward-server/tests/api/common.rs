//! The test kit: [`spawn_app`] starts a server; [`TestApp`] sends requests; [`Reply`] asserts.

#![allow(dead_code)]

use std::sync::Arc;

use keyward_core::TestClock;
use keyward_server::{Config, RunningServer, Settings};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    /// Moves the server's "now" forward: expiry without sleeping.
    pub clock: TestClock,
    pub server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings `configure` adjusts first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}", dir.path().join("keyward.db").display()),
        ..Settings::default()
    };
    configure(&mut settings);
    let config = Config::from_settings(settings).expect("valid test config");
    let clock = TestClock::new();
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
        _dir: dir,
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
