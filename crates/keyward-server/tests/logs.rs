//! No secret reaches a log line: a full flow runs with trace-level logging captured, then every
//! password, key and token issued in it is searched for in the captured text.
//!
//! Its own test binary, because it installs the process-wide tracing subscriber.

#[path = "api/common.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

/// What an attacker would like to see as a log line of its own.
const FORGED: &str = "FORGED 2026-11-22T10:00:00Z INFO keyward: operator signed in";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// One test runs the flow on each backend: the subscriber is process-wide, so the backends run
/// one after the other, each with its own capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_secret() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .init();
    full_flow_logs_no_secret(Backend::Sqlite, &captured).await;
    if std::env::var_os(POSTGRES_URL_VARIABLE).is_some() {
        full_flow_logs_no_secret(Backend::Postgres, &captured).await;
    } else {
        eprintln!("PostgreSQL half skipped: {POSTGRES_URL_VARIABLE} is not set");
    }
}

async fn full_flow_logs_no_secret(backend: Backend, captured: &Captured) {
    captured.0.lock().unwrap().clear();
    let app = spawn_app_on(backend, webhook_settings).await;
    let mut secrets: Vec<String> = vec![PASSWORD.to_owned()];
    let account = app.register("logs@example.com").await;
    secrets.push(account.access_token.clone());
    secrets.push(account.refresh_token.clone());

    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": "logs@example.com", "password": PASSWORD}),
        )
        .await
        .expect(200)
        .clone();
    let access = login["access_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    secrets.push(login["refresh_token"].as_str().unwrap().to_owned());

    let refreshed = app
        .post(
            "/v1/auth/refresh",
            Auth::None,
            json!({"refresh_token": login["refresh_token"]}),
        )
        .await
        .expect(200)
        .clone();
    secrets.push(refreshed["access_token"].as_str().unwrap().to_owned());
    secrets.push(refreshed["refresh_token"].as_str().unwrap().to_owned());
    // A reuse past the grace window, which logs a warning about the session.
    app.clock.advance(11);
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": login["refresh_token"]}),
    )
    .await
    .expect_problem(401, "invalid_token");

    let key = app
        .create_key(&account, json!({"name": "logged", "scopes": ["write"]}))
        .await;
    let secret = key["key"].as_str().unwrap().to_owned();
    secrets.push(secret.clone());
    app.get("/v1/auth/me", Auth::Bearer(&secret))
        .await
        .expect(200);
    app.get("/v1/keys", Auth::ApiKey(&secret)).await.expect(200);
    app.verify(&secret, Some(json!(["read"]))).await;
    let rotated = app
        .post(
            &format!("/v1/keys/{}/rotate", key["id"].as_str().unwrap()),
            Auth::Bearer(&account.access_token),
            json!({}),
        )
        .await
        .expect(201)
        .clone();
    secrets.push(rotated["key"].as_str().unwrap().to_owned());
    // A webhook's secret and its deliveries' signatures (the first attempt fails, so the
    // retry path logs too); a leak report of a live key, and of one with a bad checksum.
    let hooks = receiver(&[500]).await;
    let webhook = app
        .create_webhook(
            &account,
            &hooks.url,
            &["key.created", "key.leaked", "key.revoked"],
        )
        .await;
    secrets.push(webhook["secret"].as_str().unwrap().to_owned());
    let leaked = app.create_key(&account, json!({"name": "leaked"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(leaked.clone());
    let reply = app
        .post(
            "/v1/leaks",
            Auth::None,
            json!({"key": leaked, "url": "https://example.com/x"}),
        )
        .await;
    assert_eq!(reply.expect(200)["label"], "true_positive");
    let unknown = format!("{}AAAAAA", &leaked[..leaked.len() - 6]);
    secrets.push(unknown.clone());
    app.post("/v1/leaks", Auth::None, json!({"key": unknown}))
        .await
        .expect(200);
    hooks.wait_for(3).await;
    app.deliveries_until(&account, webhook["id"].as_str().unwrap(), |list| {
        list.len() == 3
            && list
                .iter()
                .all(|d| !d["attempts"].as_array().unwrap().is_empty())
    })
    .await;
    app.clock.advance(5);
    for delivery in hooks.wait_for(4).await {
        secrets.push(delivery.header("webhook-signature")["v1,".len()..].to_owned());
    }
    // Refused credentials are logged as refused, never by value.
    app.get("/v1/auth/me", Auth::Bearer(&secret))
        .await
        .expect_problem(401, "invalid_api_key");
    app.get("/v1/auth/me?api_key=kw_inthequerystring", Auth::None)
        .await
        .expect_problem(422, "validation_failed");
    secrets.push("kw_inthequerystring".to_owned());

    // A device login: the device code (JSON and form polls) and the key it yields.
    let codes = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await
        .expect(200)
        .clone();
    let device_code = codes["device_code"].as_str().unwrap().to_owned();
    secrets.push(device_code.clone());
    let poll = json!({"device_code": device_code});
    app.post("/v1/auth/device/token", Auth::None, poll.clone())
        .await
        .expect(400);
    app.post(
        "/v1/auth/device/approve",
        Auth::Bearer(&account.access_token),
        json!({"user_code": codes["user_code"], "approve": true}),
    )
    .await
    .expect(204);
    let form = app
        .http
        .post(app.url("/v1/auth/device/token"))
        .form(&[("device_code", device_code.as_str())])
        .send()
        .await
        .unwrap();
    let granted = TestApp::read(form).await;
    secrets.push(granted.expect(200)["api_key"].as_str().unwrap().to_owned());
    app.post("/v1/auth/device/token", Auth::None, poll)
        .await
        .expect(400);

    let new_password = "a different long passphrase";
    secrets.push(new_password.to_owned());
    app.post(
        "/v1/auth/password",
        Auth::Bearer(&account.access_token),
        json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await
    .expect(204);
    app.post(
        "/v1/auth/password",
        Auth::Bearer(&account.access_token),
        json!({"current_password": "wrong guess here", "new_password": new_password}),
    )
    .await
    .expect_field_error("current_password");
    app.post(
        "/v1/auth/logout",
        Auth::Bearer(&account.access_token),
        json!({}),
    )
    .await
    .expect(204);

    // The console: its session cookies (also after a server-side refresh) and CSRF tokens.
    // Cookies go by hand: a client cookie store would log them itself at debug level.
    let browser = &app.http;
    let hidden = |html: &str, action: &str| {
        let form = &html[html
            .find(&format!(r#"<form method="post" action="{action}">"#))
            .unwrap()..];
        let start = form.find(r#"name="csrf" value=""#).unwrap() + 19;
        form[start..start + 64].to_owned()
    };
    // `name=value` of each cookie set.
    let cookies = |response: &reqwest::Response| -> Vec<String> {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .filter(|pair| pair.len() >= 32)
            .map(str::to_owned)
            .collect()
    };
    let secret_of = |pair: &String| pair.split_once('=').unwrap().1.to_owned();
    let page = browser.get(app.url("/console/login")).send().await.unwrap();
    let login_cookie = cookies(&page);
    secrets.extend(login_cookie.iter().map(secret_of));
    let login_csrf = hidden(&page.text().await.unwrap(), "/console/login");
    let signed_in = browser
        .post(app.url("/console/login"))
        .header("cookie", login_cookie.join("; "))
        .form(&[
            ("email", "logs@example.com"),
            ("password", new_password),
            ("csrf", login_csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 303);
    let session_cookies = cookies(&signed_in);
    assert_eq!(session_cookies.len(), 2, "access and refresh cookies");
    secrets.extend(session_cookies.iter().map(secret_of));
    app.clock.advance(16 * 60);
    let page = browser
        .get(app.url("/console/device?user_code=BCDF-GHJK"))
        .header("cookie", session_cookies.join("; "))
        .send()
        .await
        .unwrap();
    let refreshed_cookies = cookies(&page);
    assert_eq!(refreshed_cookies.len(), 2, "refreshed on the server");
    secrets.extend(refreshed_cookies.iter().map(secret_of));
    let logout_csrf = hidden(&page.text().await.unwrap(), "/console/logout");
    let signed_out = browser
        .post(app.url("/console/logout"))
        .header("cookie", refreshed_cookies.join("; "))
        .form(&[("csrf", logout_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status().as_u16(), 303);

    // Log forging (issue 8): an email carrying a newline, to the API and to the console's form,
    // must not start a log line of its own.
    for email in [format!("x@example.com\n{FORGED}"), format!("y\r\n{FORGED}")] {
        app.post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": email, "password": "not the password"}),
        )
        .await
        .expect_problem(401, "invalid_credentials");
    }
    let page = browser.get(app.url("/console/login")).send().await.unwrap();
    let login_cookie = cookies(&page);
    let login_csrf = hidden(&page.text().await.unwrap(), "/console/login");
    browser
        .post(app.url("/console/login"))
        .header("cookie", login_cookie.join("; "))
        .form(&[
            ("email", format!("z@example.com\n{FORGED}").as_str()),
            ("password", "not the password"),
            ("csrf", login_csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();

    app.server.unwrap().stop().await.unwrap();

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // The capture works: request lines with their ids are there, at trace level too.
    assert!(
        logs.contains("request finished"),
        "nothing captured on {backend:?}"
    );
    assert!(logs.contains("request_id=req_"));
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "not at trace level"
    );
    assert!(logs.contains("refresh token reuse detected"));
    // The forged text was logged (escaped, inside its line), and never began a line.
    assert!(logs.contains(FORGED), "the failed logins were not logged");
    for line in logs.lines().filter(|line| line.contains(FORGED)) {
        assert!(
            !line.starts_with(FORGED) && line.contains("login failed for an unknown email"),
            "a forged log line: {line}"
        );
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {}…",
            &secret[..6]
        );
        // Also the part after a prefix, in case something logs a key's body only.
        let tail = &secret[secret.len() - 16..];
        assert!(!logs.contains(tail), "part of a secret reached the logs");
    }
}
