// Accounts, sessions and access tokens (SPEC §4).

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

const NEW_PASSWORD: &str = "a different, longer passphrase";

// ---------------------------------------------------------------- helpers of this file

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).expect("json"))
}

fn decode_segment(segment: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(segment).expect("base64url segment");
    serde_json::from_slice(&bytes).expect("JSON segment")
}

/// The header and claims of a JWT, read without any verification.
fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    (decode_segment(parts[0]), decode_segment(parts[1]))
}

/// A compact JWS signed with `key` (EdDSA), whatever the header says.
fn sign_eddsa(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn fresh_signing_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// A jsonwebtoken EdDSA encoding key of `key`.
fn encoding_key(key: &SigningKey) -> EncodingKey {
    let der = key.to_pkcs8_der().expect("pkcs8");
    EncodingKey::from_ed_der(der.as_bytes())
}

/// Sends `body` as is, with the given content type (none when `None`).
async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut request = app.http.post(app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    TestApp::read(request.send().await.expect("request sent")).await
}

async fn me(app: &TestApp, token: &str) -> Reply {
    app.get("/v1/auth/me", Auth::Bearer(token)).await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Reply {
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": refresh_token}),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Reply {
    app.post(
        "/v1/auth/login",
        Auth::None,
        json!({"email": email, "password": password}),
    )
    .await
}

/// A new session of an existing account (logs in with [`PASSWORD`]).
async fn new_session(app: &TestApp, account: &Account) -> (String, String) {
    let reply = login(app, &account.email, PASSWORD).await;
    let body = reply.expect(200);
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

/// A 401 with `code` for a credential that was presented: RFC 6750 `error="invalid_token"`.
fn expect_refused(reply: &Reply, code: &str) {
    reply.expect_problem(401, code);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge {challenge:?} for {code}"
    );
}

/// The server's access token is refused with 401 `invalid_token`.
async fn expect_token_refused(app: &TestApp, token: &str) {
    expect_refused(&me(app, token).await, "invalid_token");
}

fn assert_token_pair(body: &Value) {
    let access = body["access_token"].as_str().expect("access_token");
    assert_eq!(access.split('.').count(), 3, "access token is a JWT");
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    assert!(refresh.len() >= 32, "refresh token has entropy: {refresh}");
    assert!(!refresh.contains('.'), "refresh token is opaque: {refresh}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
}

async fn create_key(app: &TestApp, account: &Account, body: Value) -> (String, String) {
    let key = app.create_key(account, body).await;
    (
        key["id"].as_str().expect("key id").to_owned(),
        key["key"].as_str().expect("key").to_owned(),
    )
}

fn database_url(app: &TestApp) -> String {
    app.database_url()
}

// ---------------------------------------------------------------- register

#[tokio::test]
async fn register_returns_user_tenant_and_a_working_token_pair() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada Lovelace"}),
        )
        .await;
    let body = reply.expect(201).clone();
    assert_token_pair(&body);
    let user_id = body["user"]["id"].as_str().expect("user id");
    assert!(user_id.starts_with("usr_"), "{user_id}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["name"], "Ada Lovelace");
    let tenant_id = body["tenant"]["id"].as_str().expect("tenant id");
    assert!(tenant_id.starts_with("ten_"), "{tenant_id}");
    assert!(body["tenant"]["created_at"].as_str().is_some());
    assert!(body.get("api_key").is_none(), "no key unless configured");
    for secret in ["password", "password_hash"] {
        assert!(!reply.text.contains(secret), "{}", reply.text);
    }
    assert!(!reply.text.contains(PASSWORD));

    let whoami = me(&app, body["access_token"].as_str().unwrap()).await;
    let whoami = whoami.expect(200);
    assert_eq!(whoami["user"]["id"], user_id);
    assert_eq!(whoami["tenant"]["id"], tenant_id);
    refresh(&app, body["refresh_token"].as_str().unwrap())
        .await
        .expect(200);
}

#[tokio::test]
async fn register_lower_cases_the_email_and_names_the_tenant() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "Grace.Hopper@Example.COM", "password": PASSWORD}),
        )
        .await;
    let body = reply.expect(201);
    assert_eq!(body["user"]["email"], "grace.hopper@example.com");
    assert_eq!(body["user"]["name"], Value::Null);
    assert_eq!(body["tenant"]["name"], "grace.hopper@example.com");
    // Stored lower-cased: the lower-cased address logs in, and /me shows it.
    let login = login(&app, "grace.hopper@example.com", PASSWORD).await;
    let token = login.expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        me(&app, &token).await.expect(200)["user"]["email"],
        "grace.hopper@example.com"
    );

    let reply = app
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "linus@example.com", "password": PASSWORD, "tenant_name": "Acme Inc."}),
        )
        .await;
    let body = reply.expect(201);
    assert_eq!(body["tenant"]["name"], "Acme Inc.");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        me(&app, token).await.expect(200)["tenant"]["name"],
        "Acme Inc."
    );
    let tenant = app.get("/v1/tenant", Auth::Bearer(token)).await;
    assert_eq!(tenant.expect(200)["name"], "Acme Inc.");
}

#[tokio::test]
async fn register_with_create_on_register_returns_a_working_api_key() {
    let app = spawn_app_with(|settings| settings.keys.create_on_register = true).await;
    let reply = app
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let body = reply.expect(201).clone();
    assert_token_pair(&body);
    let key = &body["api_key"];
    let key_id = key["id"].as_str().expect("api_key.id");
    assert!(key_id.starts_with("key_"), "{key_id}");
    let secret = key["key"].as_str().expect("api_key.key");
    assert!(secret.starts_with("kw_"), "{secret}");
    assert_eq!(key["status"], "active");
    assert!(key["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(key["masked"].as_str().is_some());

    for auth in [Auth::Bearer(secret), Auth::ApiKey(secret)] {
        let whoami = app.get("/v1/auth/me", auth).await;
        let whoami = whoami.expect(200);
        assert_eq!(whoami["auth"]["method"], "api_key");
        assert_eq!(whoami["auth"]["key_id"], key_id);
        assert_eq!(whoami["user"]["id"], body["user"]["id"]);
        assert_eq!(whoami["tenant"]["id"], body["tenant"]["id"]);
    }

    // Without the setting there is no key.
    let plain = spawn_app().await;
    let reply = plain
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert!(reply.expect(201).get("api_key").is_none());
}

#[tokio::test]
async fn register_refuses_a_taken_email_in_any_case() {
    let app = spawn_app().await;
    let first = app.register("ada@example.com").await;
    for email in ["ada@example.com", "ADA@example.com", "Ada@Example.Com"] {
        let reply = app
            .post(
                "/v1/auth/register",
                Auth::None,
                json!({"email": email, "password": "another fine passphrase"}),
            )
            .await;
        reply.expect_problem(409, "email_taken");
    }
    // The original account is untouched: its password still logs in.
    login(&app, &first.email, PASSWORD).await.expect(200);
    login(&app, &first.email, "another fine passphrase")
        .await
        .expect_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn register_validates_every_field() {
    let app = spawn_app().await;
    let email = "ada@example.com";
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            &["email"],
        ),
        (json!({"email": "ada@", "password": PASSWORD}), &["email"]),
        (json!({"email": "", "password": PASSWORD}), &["email"]),
        (
            json!({"email": email, "password": "seven77"}),
            &["password"],
        ),
        (
            json!({"email": email, "password": "x".repeat(129)}),
            &["password"],
        ),
        (
            json!({"email": email, "password": "password1"}),
            &["password"],
        ),
        (
            json!({"email": email, "password": "Password1"}),
            &["password"],
        ),
        (
            json!({"email": email, "password": "12345678"}),
            &["password"],
        ),
        (json!({"password": PASSWORD}), &["email"]),
        (json!({"email": email}), &["password"]),
        (json!({}), &["email"]),
        (json!({"email": 42, "password": PASSWORD}), &["email"]),
        (json!({"email": email, "password": 12345678}), &["password"]),
        (json!({"email": email, "password": null}), &["password"]),
        (
            json!({"email": email, "password": PASSWORD, "name": 7}),
            &["name"],
        ),
        (
            json!({"email": email, "password": PASSWORD, "tenant_name": ["x"]}),
            &["tenant_name"],
        ),
        (
            json!({"email": email, "password": PASSWORD, "tenant_name": ""}),
            &["tenant_name"],
        ),
        (
            json!({"email": email, "password": PASSWORD, "name": "x".repeat(101)}),
            &["name"],
        ),
        (
            json!({"email": email, "password": PASSWORD, "role": "admin"}),
            &["role"],
        ),
        // Every invalid field is reported at once.
        (
            json!({"email": "nope", "password": "short"}),
            &["email", "password"],
        ),
    ];
    for (body, fields) in cases {
        let reply = app
            .post("/v1/auth/register", Auth::None, body.clone())
            .await;
        for field in fields {
            assert_eq!(reply.status.as_u16(), 422, "{body}: {}", reply.text);
            reply.expect_field_error(field);
        }
    }
    // None of the refused requests created the account.
    app.register(email).await;
}

#[tokio::test]
async fn register_accepts_passwords_at_the_length_bounds() {
    let app = spawn_app().await;
    for (email, password) in [
        ("eight@example.com", "xk3!pq9z".to_owned()),
        ("long@example.com", "Zq7".repeat(42) + "ab"),
    ] {
        assert!(password.len() == 8 || password.len() == 128);
        let reply = app
            .post(
                "/v1/auth/register",
                Auth::None,
                json!({"email": email, "password": password}),
            )
            .await;
        reply.expect(201);
        login(&app, email, &password).await.expect(200);
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let app = spawn_app().await;
    let valid = json!({"email": "ada@example.com", "password": PASSWORD}).to_string();
    for path in ["/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh"] {
        let cases: [(Option<&str>, String); 6] = [
            (Some("application/json"), "not json".into()),
            (Some("application/json"), "{\"email\": ".into()),
            (Some("application/json"), "[1, 2]".into()),
            (Some("application/json"), "\"a string\"".into()),
            (Some("text/plain"), valid.clone()),
            (None, valid.clone()),
        ];
        for (content_type, body) in cases {
            let reply = post_raw(&app, path, content_type, body.clone()).await;
            assert_eq!(
                reply.status.as_u16(),
                400,
                "{path} {content_type:?} {body}: {}",
                reply.text
            );
            reply.expect_problem(400, "invalid_request");
        }
    }
    // The same valid body as JSON is accepted, with a charset parameter too.
    post_raw(
        &app,
        "/v1/auth/register",
        Some("application/json; charset=utf-8"),
        valid,
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn body_over_64_kib_is_413() {
    let app = spawn_app().await;
    let huge = json!({"email": "ada@example.com", "password": "x".repeat(70 * 1024)});
    for path in ["/v1/auth/register", "/v1/auth/login"] {
        let reply = app.post(path, Auth::None, huge.clone()).await;
        reply.expect_problem(413, "payload_too_large");
    }
    // Just under the limit the body is read and judged on its content.
    let big = json!({"email": "ada@example.com", "password": "x".repeat(60 * 1024)});
    app.post("/v1/auth/register", Auth::None, big)
        .await
        .expect_field_error("password");
}

// ---------------------------------------------------------------- login

#[tokio::test]
async fn login_with_email_or_username_in_any_case() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    for body in [
        json!({"email": "ada@example.com", "password": PASSWORD}),
        json!({"email": "ADA@Example.com", "password": PASSWORD}),
        json!({"username": "ada@example.com", "password": PASSWORD}),
        json!({"username": "Ada@EXAMPLE.com", "password": PASSWORD}),
    ] {
        let reply = app.post("/v1/auth/login", Auth::None, body.clone()).await;
        let tokens = reply.expect(200).clone();
        assert_token_pair(&tokens);
        let whoami = me(&app, tokens["access_token"].as_str().unwrap()).await;
        let whoami = whoami.expect(200);
        assert_eq!(whoami["user"]["id"], account.user_id, "{body}");
        assert_eq!(whoami["auth"]["method"], "session");
        // Each login is a new session, distinct from registration's.
        assert_ne!(tokens["refresh_token"], account.refresh_token.as_str());
    }
}

#[tokio::test]
async fn login_failures_are_indistinguishable() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let attempts = [
        ("nobody@example.com", PASSWORD),
        ("ada@example.com", "wrong password here"),
        ("ADA@example.com", "wrong password here"),
        ("not-an-email", PASSWORD),
    ];
    let mut seen: Option<(Value, Option<String>)> = None;
    for (email, password) in attempts {
        let reply = login(&app, email, password).await;
        reply.expect_problem(401, "invalid_credentials");
        let mut body = reply.body.clone();
        body.as_object_mut().unwrap().remove("request_id");
        let challenge = reply.header("www-authenticate").map(str::to_owned);
        match &seen {
            None => seen = Some((body, challenge)),
            Some(first) => assert_eq!(first, &(body, challenge), "{email}"),
        }
    }
}

#[tokio::test]
async fn login_validates_its_body() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let cases = [
        (json!({"email": "ada@example.com"}), "password"),
        (json!({"password": PASSWORD}), "email"),
        (
            json!({"email": "ada@example.com", "password": 5}),
            "password",
        ),
        (json!({"email": 5, "password": PASSWORD}), "email"),
        (
            json!({"email": "ada@example.com", "password": PASSWORD, "remember": true}),
            "remember",
        ),
    ];
    for (body, field) in cases {
        app.post("/v1/auth/login", Auth::None, body)
            .await
            .expect_field_error(field);
    }
}

// ---------------------------------------------------------------- refresh

#[tokio::test]
async fn refresh_rotates_the_pair() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let first = refresh(&app, &account.refresh_token).await;
    let first = first.expect(200).clone();
    assert_token_pair(&first);
    assert_ne!(first["refresh_token"], account.refresh_token.as_str());
    assert_ne!(first["access_token"], account.access_token.as_str());
    let access = first["access_token"].as_str().unwrap();
    let whoami = me(&app, access).await;
    assert_eq!(whoami.expect(200)["user"]["id"], account.user_id);
    // The same session: the sid claim is unchanged.
    assert_eq!(
        jwt_parts(access).1["sid"],
        jwt_parts(&account.access_token).1["sid"]
    );

    // The spent token is refused; the new one works once, and so on.
    expect_refused(
        &refresh(&app, &account.refresh_token).await,
        "invalid_token",
    );
    let second = refresh(&app, first["refresh_token"].as_str().unwrap()).await;
    let second = second.expect(200).clone();
    expect_refused(
        &refresh(&app, first["refresh_token"].as_str().unwrap()).await,
        "invalid_token",
    );
    me(&app, second["access_token"].as_str().unwrap())
        .await
        .expect(200);
}

#[tokio::test]
async fn refresh_reuse_after_the_grace_window_revokes_the_session() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (other_access, other_refresh) = new_session(&app, &account).await;

    let rotated = refresh(&app, &account.refresh_token).await;
    let rotated = rotated.expect(200).clone();
    let newest_refresh = rotated["refresh_token"].as_str().unwrap();
    let newest_access = rotated["access_token"].as_str().unwrap();

    app.clock.advance(11);
    // A thief replays the spent token: refused, and the session is over.
    expect_refused(
        &refresh(&app, &account.refresh_token).await,
        "invalid_token",
    );
    expect_refused(&refresh(&app, newest_refresh).await, "invalid_token");
    expect_token_refused(&app, newest_access).await;
    expect_token_refused(&app, &account.access_token).await;

    // Only that session: the user's other session lives on.
    me(&app, &other_access).await.expect(200);
    refresh(&app, &other_refresh).await.expect(200);
}

#[tokio::test]
async fn refresh_reuse_inside_the_grace_window_keeps_the_session() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let rotated = refresh(&app, &account.refresh_token).await;
    let rotated = rotated.expect(200).clone();

    app.clock.advance(5);
    // A second tab with the old token: refused, but nobody is logged out.
    expect_refused(
        &refresh(&app, &account.refresh_token).await,
        "invalid_token",
    );
    me(&app, rotated["access_token"].as_str().unwrap())
        .await
        .expect(200);
    let next = refresh(&app, rotated["refresh_token"].as_str().unwrap()).await;
    me(&app, next.expect(200)["access_token"].as_str().unwrap())
        .await
        .expect(200);
}

#[tokio::test]
async fn refresh_reuse_grace_is_configurable() {
    let app = spawn_app_with(|settings| settings.sessions.refresh_reuse_grace_seconds = 60).await;
    let account = app.register("ada@example.com").await;
    let rotated = refresh(&app, &account.refresh_token).await;
    let rotated = rotated.expect(200).clone();
    // 30 s is past the default 10 s but inside the configured 60 s.
    app.clock.advance(30);
    expect_refused(
        &refresh(&app, &account.refresh_token).await,
        "invalid_token",
    );
    me(&app, rotated["access_token"].as_str().unwrap())
        .await
        .expect(200);
    app.clock.advance(40);
    expect_refused(
        &refresh(&app, &account.refresh_token).await,
        "invalid_token",
    );
    expect_token_refused(&app, rotated["access_token"].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_have_one_winner() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let mut token = account.refresh_token.clone();
    for round in 0..5 {
        let (a, b) = tokio::join!(refresh(&app, &token), refresh(&app, &token));
        let statuses = [a.status.as_u16(), b.status.as_u16()];
        let (winner, loser) = match statuses {
            [200, 401] => (a, b),
            [401, 200] => (b, a),
            other => panic!("round {round}: {other:?}: {} / {}", a.text, b.text),
        };
        expect_refused(&loser, "invalid_token");
        token = winner.body["refresh_token"].as_str().unwrap().to_owned();
        // The loser's refusal did not end the session.
        me(&app, winner.body["access_token"].as_str().unwrap())
            .await
            .expect(200);
    }
    refresh(&app, &token).await.expect(200);
}

#[tokio::test]
async fn refresh_tokens_expire_absolutely() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, other_refresh) = new_session(&app, &account).await;

    // Day 29: still within the 30 days, and rotation works.
    app.clock.advance(29 * 86_400);
    let rotated = refresh(&app, &account.refresh_token).await;
    let rotated = rotated.expect(200).clone();
    // Day 31: the session's 30 days are over, however fresh its refresh token.
    app.clock.advance(2 * 86_400);
    expect_refused(
        &refresh(&app, rotated["refresh_token"].as_str().unwrap()).await,
        "invalid_token",
    );
    expect_refused(&refresh(&app, &other_refresh).await, "invalid_token");
}

#[tokio::test]
async fn refresh_ttl_days_is_configurable() {
    let app = spawn_app_with(|settings| settings.sessions.refresh_token_ttl_days = 2).await;
    let account = app.register("ada@example.com").await;
    app.clock.advance(86_400);
    let rotated = refresh(&app, &account.refresh_token).await;
    let rotated = rotated.expect(200).clone();
    app.clock.advance(86_400 + 60);
    expect_refused(
        &refresh(&app, rotated["refresh_token"].as_str().unwrap()).await,
        "invalid_token",
    );
}

#[tokio::test]
async fn refresh_refuses_garbage() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    for garbage in [
        "garbage",
        "",
        "a.b.c",
        account.access_token.as_str(),
        &account.refresh_token[1..],
    ] {
        expect_refused(&refresh(&app, garbage).await, "invalid_token");
    }
    let cases = [
        (json!({}), "refresh_token"),
        (json!({"refresh_token": 5}), "refresh_token"),
        (
            json!({"refresh_token": account.refresh_token, "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        app.post("/v1/auth/refresh", Auth::None, body)
            .await
            .expect_field_error(field);
    }
    // None of that harmed the real token.
    refresh(&app, &account.refresh_token).await.expect(200);
}

// ---------------------------------------------------------------- logout

#[tokio::test]
async fn logout_ends_this_session_only() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (other_access, other_refresh) = new_session(&app, &account).await;

    let reply = app
        .post(
            "/v1/auth/logout",
            Auth::Bearer(&account.access_token),
            json!({}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    assert!(reply.text.is_empty());

    expect_token_refused(&app, &account.access_token).await;
    expect_refused(
        &refresh(&app, &account.refresh_token).await,
        "invalid_token",
    );
    // Logging out twice is refused too: the token's session is over.
    expect_refused(
        &app.post(
            "/v1/auth/logout",
            Auth::Bearer(&account.access_token),
            json!({}),
        )
        .await,
        "invalid_token",
    );

    me(&app, &other_access).await.expect(200);
    refresh(&app, &other_refresh).await.expect(200);
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let bystander = app.register("bob@example.com").await;
    let (second_access, second_refresh) = new_session(&app, &account).await;
    let (third_access, third_refresh) = new_session(&app, &account).await;

    let reply = app
        .post(
            "/v1/auth/logout",
            Auth::Bearer(&second_access),
            json!({"all": true}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);

    for access in [&account.access_token, &second_access, &third_access] {
        expect_token_refused(&app, access).await;
    }
    for refresh_token in [&account.refresh_token, &second_refresh, &third_refresh] {
        expect_refused(&refresh(&app, refresh_token).await, "invalid_token");
    }
    // Another user is not affected, and the user can log in again.
    me(&app, &bystander.access_token).await.expect(200);
    refresh(&app, &bystander.refresh_token).await.expect(200);
    let (fresh, _) = new_session(&app, &account).await;
    me(&app, &fresh).await.expect(200);
}

#[tokio::test]
async fn logout_takes_no_body_an_empty_object_or_all_false() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (second, _) = new_session(&app, &account).await;
    let (third, _) = new_session(&app, &account).await;
    let (fourth, _) = new_session(&app, &account).await;

    // No body at all, and no content type.
    let reply = app
        .send(
            Method::POST,
            "/v1/auth/logout",
            Auth::Bearer(&account.access_token),
            None,
        )
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    expect_token_refused(&app, &account.access_token).await;

    let reply = app
        .post("/v1/auth/logout", Auth::Bearer(&second), json!({}))
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    expect_token_refused(&app, &second).await;

    let reply = app
        .post(
            "/v1/auth/logout",
            Auth::Bearer(&third),
            json!({"all": false}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    expect_token_refused(&app, &third).await;

    // Only one session ended each time.
    me(&app, &fourth).await.expect(200);

    // A body that is there must be right.
    app.post(
        "/v1/auth/logout",
        Auth::Bearer(&fourth),
        json!({"all": "yes"}),
    )
    .await
    .expect_field_error("all");
    app.post(
        "/v1/auth/logout",
        Auth::Bearer(&fourth),
        json!({"everything": true}),
    )
    .await
    .expect_field_error("everything");
    me(&app, &fourth).await.expect(200);
}

#[tokio::test]
async fn logout_needs_a_session() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, key) = create_key(&app, &account, json!({"name": "ci"})).await;

    for auth in [Auth::Bearer(&key), Auth::ApiKey(&key)] {
        app.post("/v1/auth/logout", auth, json!({}))
            .await
            .expect_problem(403, "session_required");
    }
    // The key still works: the refusal did nothing.
    app.get("/v1/auth/me", Auth::ApiKey(&key)).await.expect(200);

    let reply = app.post("/v1/auth/logout", Auth::None, json!({})).await;
    reply.expect_problem(401, "missing_credentials");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));

    me(&app, &account.access_token).await.expect(200);
}

// ---------------------------------------------------------------- me and tenant

#[tokio::test]
async fn me_with_a_session() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada",
                   "tenant_name": "Analytical Engines"}),
        )
        .await;
    let registered = reply.expect(201).clone();
    let whoami = me(&app, registered["access_token"].as_str().unwrap()).await;
    let whoami = whoami.expect(200);
    assert_eq!(
        whoami["user"],
        json!({"id": registered["user"]["id"], "email": "ada@example.com", "name": "Ada"})
    );
    assert_eq!(
        whoami["tenant"],
        json!({"id": registered["tenant"]["id"], "name": "Analytical Engines"})
    );
    assert_eq!(whoami["auth"]["method"], "session");
    assert!(whoami["auth"].get("key_id").is_none(), "{whoami}");
    assert!(whoami["auth"]["scopes"].is_array());

    let reply = app.get("/v1/auth/me", Auth::None).await;
    reply.expect_problem(401, "missing_credentials");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn me_with_an_api_key() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (key_id, key) = create_key(
        &app,
        &account,
        json!({"name": "deployer", "scopes": ["read", "deploy:prod"]}),
    )
    .await;
    for auth in [Auth::Bearer(&key), Auth::ApiKey(&key)] {
        let whoami = app.get("/v1/auth/me", auth).await;
        let whoami = whoami.expect(200);
        assert_eq!(whoami["auth"]["method"], "api_key");
        assert_eq!(whoami["auth"]["key_id"], key_id.as_str());
        let scopes: BTreeSet<&str> = whoami["auth"]["scopes"]
            .as_array()
            .expect("scopes")
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(scopes, BTreeSet::from(["read", "deploy:prod"]));
        assert_eq!(whoami["user"]["id"], account.user_id);
        assert_eq!(whoami["user"]["email"], "ada@example.com");
        assert_eq!(whoami["tenant"]["id"], account.tenant_id);
    }

    // A key with default scopes: admin.
    let (_, admin) = create_key(&app, &account, json!({"name": "admin"})).await;
    let whoami = app.get("/v1/auth/me", Auth::ApiKey(&admin)).await;
    assert_eq!(whoami.expect(200)["auth"]["scopes"], json!(["admin"]));

    // A wrong key is refused as an API key: its last character changed (to one it is not).
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    expect_refused(
        &app.get("/v1/auth/me", Auth::ApiKey(&wrong)).await,
        "invalid_api_key",
    );
}

#[tokio::test]
async fn tenant_endpoint_shows_the_callers_tenant() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let other = app.register("bob@example.com").await;
    let (_, key) = create_key(
        &app,
        &account,
        json!({"name": "reader", "scopes": ["read"]}),
    )
    .await;

    let by_session = app
        .get("/v1/tenant", Auth::Bearer(&account.access_token))
        .await;
    let by_session = by_session.expect(200).clone();
    let fields: BTreeSet<&str> = by_session
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(["id", "name", "created_at"]));
    assert_eq!(by_session["id"], account.tenant_id);
    assert_eq!(by_session["name"], "ada@example.com");
    let created = by_session["created_at"].as_str().unwrap();
    assert_eq!(created.len(), 20, "{created}");
    assert!(
        created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );

    let by_key = app.get("/v1/tenant", Auth::ApiKey(&key)).await;
    assert_eq!(by_key.expect(200), &by_session);

    let theirs = app
        .get("/v1/tenant", Auth::Bearer(&other.access_token))
        .await;
    assert_eq!(theirs.expect(200)["id"], other.tenant_id);
    assert_ne!(other.tenant_id, account.tenant_id);

    app.get("/v1/tenant", Auth::None)
        .await
        .expect_problem(401, "missing_credentials");
}

// ---------------------------------------------------------------- password change

#[tokio::test]
async fn password_change_revokes_the_other_sessions() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (other_access, other_refresh) = new_session(&app, &account).await;

    let reply = app
        .post(
            "/v1/auth/password",
            Auth::Bearer(&account.access_token),
            json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    assert!(reply.text.is_empty());

    // This session lives on; the other one is over.
    me(&app, &account.access_token).await.expect(200);
    expect_token_refused(&app, &other_access).await;
    expect_refused(&refresh(&app, &other_refresh).await, "invalid_token");
    refresh(&app, &account.refresh_token).await.expect(200);

    login(&app, &account.email, NEW_PASSWORD).await.expect(200);
    login(&app, &account.email, PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn password_change_refuses_a_wrong_current_password() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (other_access, _) = new_session(&app, &account).await;
    let reply = app
        .post(
            "/v1/auth/password",
            Auth::Bearer(&account.access_token),
            json!({"current_password": "not my password", "new_password": NEW_PASSWORD}),
        )
        .await;
    reply.expect_field_error("current_password");
    // Nothing changed.
    login(&app, &account.email, PASSWORD).await.expect(200);
    login(&app, &account.email, NEW_PASSWORD)
        .await
        .expect_problem(401, "invalid_credentials");
    me(&app, &other_access).await.expect(200);
}

#[tokio::test]
async fn password_change_refuses_a_weak_new_password() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (other_access, _) = new_session(&app, &account).await;
    for weak in ["short", "password1", &"y".repeat(129)] {
        let reply = app
            .post(
                "/v1/auth/password",
                Auth::Bearer(&account.access_token),
                json!({"current_password": PASSWORD, "new_password": weak}),
            )
            .await;
        reply.expect_field_error("new_password");
        login(&app, &account.email, weak)
            .await
            .expect_problem(401, "invalid_credentials");
    }
    for (body, field) in [
        (json!({"new_password": NEW_PASSWORD}), "current_password"),
        (json!({"current_password": PASSWORD}), "new_password"),
        (
            json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "x": 1}),
            "x",
        ),
    ] {
        app.post(
            "/v1/auth/password",
            Auth::Bearer(&account.access_token),
            body,
        )
        .await
        .expect_field_error(field);
    }
    login(&app, &account.email, PASSWORD).await.expect(200);
    me(&app, &other_access).await.expect(200);
}

#[tokio::test]
async fn password_change_needs_a_session() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, key) = create_key(&app, &account, json!({"name": "ci"})).await;
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    for auth in [Auth::Bearer(&key), Auth::ApiKey(&key)] {
        app.post("/v1/auth/password", auth, body.clone())
            .await
            .expect_problem(403, "session_required");
    }
    let reply = app.post("/v1/auth/password", Auth::None, body).await;
    reply.expect_problem(401, "missing_credentials");
    login(&app, &account.email, PASSWORD).await.expect(200);
}

// ---------------------------------------------------------------- access tokens under attack

#[tokio::test]
async fn jwt_with_alg_none_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (mut header, claims) = jwt_parts(&account.access_token);
    let payload = b64_json(&claims);
    for alg in ["none", "None", "NONE"] {
        header["alg"] = json!(alg);
        let unsigned = format!("{}.{payload}.", b64_json(&header));
        expect_token_refused(&app, &unsigned).await;
        // With some signature bytes too.
        let decorated = format!("{}.{payload}.{}", b64_json(&header), b64(b"sig"));
        expect_token_refused(&app, &decorated).await;
    }
}

#[tokio::test]
async fn jwt_hs256_signed_with_the_public_key_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let jwks = app.get("/.well-known/jwks.json", Auth::None).await;
    let jwk = jwks.expect(200)["keys"][0].clone();
    let x = jwk["x"].as_str().unwrap();
    let raw_public = URL_SAFE_NO_PAD.decode(x).unwrap();
    let (real_header, claims) = jwt_parts(&account.access_token);

    let mut header = Header::new(Algorithm::HS256);
    header.kid = real_header["kid"].as_str().map(str::to_owned);
    header.typ = Some("at+jwt".into());
    let jwk_json = serde_json::to_vec(&jwk).unwrap();
    let secrets: [&[u8]; 3] = [&raw_public, x.as_bytes(), &jwk_json];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS512] {
            header.alg = alg;
            let token =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
            expect_token_refused(&app, &token).await;
        }
    }
}

#[tokio::test]
async fn jwt_with_a_stripped_or_mangled_signature_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let token = &account.access_token;
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
    flipped[0] ^= 1;
    for forged in [
        format!("{signing_input}."),
        format!("{signing_input}.{}", b64(&flipped)),
        format!("{signing_input}.{}", b64(&flipped[..32])),
        format!("{signing_input}.!!!"),
        "a.b.c".to_owned(),
        format!("{}.{}.{signature}", b64(b"{"), b64(b"{}")),
    ] {
        expect_token_refused(&app, &forged).await;
    }
    // The genuine token still works: the failures above are the forgeries'.
    me(&app, token).await.expect(200);
}

#[tokio::test]
async fn jwt_with_a_tampered_payload_is_refused() {
    let app = spawn_app().await;
    let attacker = app.register("mallory@example.com").await;
    let victim = app.register("ada@example.com").await;
    let (_, victim_claims) = jwt_parts(&victim.access_token);
    let parts: Vec<&str> = attacker.access_token.split('.').collect();
    let (_, mut claims) = jwt_parts(&attacker.access_token);

    claims["sub"] = json!(victim.user_id);
    let only_sub = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    expect_token_refused(&app, &only_sub).await;

    claims["tid"] = victim_claims["tid"].clone();
    claims["sid"] = victim_claims["sid"].clone();
    let everything = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    expect_token_refused(&app, &everything).await;

    let (_, mut claims) = jwt_parts(&attacker.access_token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 365 * 86_400);
    let longer = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    expect_token_refused(&app, &longer).await;

    me(&app, &attacker.access_token).await.expect(200);
}

#[tokio::test]
async fn jwt_with_an_unknown_kid_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (mut header, claims) = jwt_parts(&account.access_token);
    let key = fresh_signing_key();
    for kid in [json!("no-such-kid"), json!(""), json!(42)] {
        header["kid"] = kid;
        expect_token_refused(&app, &sign_eddsa(&header, &claims, &key)).await;
    }
    header.as_object_mut().unwrap().remove("kid");
    expect_token_refused(&app, &sign_eddsa(&header, &claims, &key)).await;
}

#[tokio::test]
async fn jwt_signed_by_another_key_under_the_servers_kid_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (real_header, claims) = jwt_parts(&account.access_token);
    let kid = real_header["kid"].as_str().unwrap().to_owned();
    let attacker = fresh_signing_key();

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    header.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(&header, &claims, &encoding_key(&attacker)).unwrap();
    expect_token_refused(&app, &token).await;

    // The attacker's public key offered in the header (`jwk`, `jku`, `x5u`) is not looked at.
    let attacker_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": b64(attacker.verifying_key().as_bytes())});
    for (name, value) in [
        ("jwk", attacker_jwk),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
    ] {
        let mut header = real_header.clone();
        header[name] = value;
        expect_token_refused(&app, &sign_eddsa(&header, &claims, &attacker)).await;
    }
}

#[tokio::test]
async fn expired_access_token_is_token_expired_and_refresh_recovers() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    app.clock.advance(14 * 60);
    me(&app, &account.access_token).await.expect(200);
    app.clock.advance(2 * 60);
    expect_refused(&me(&app, &account.access_token).await, "token_expired");
    // What a client does on token_expired: refresh, then retry.
    let rotated = refresh(&app, &account.refresh_token).await;
    me(&app, rotated.expect(200)["access_token"].as_str().unwrap())
        .await
        .expect(200);
}

#[tokio::test]
async fn access_token_ttl_is_configurable() {
    let app = spawn_app_with(|settings| settings.sessions.access_token_ttl_seconds = 120).await;
    let account = app.register("ada@example.com").await;
    let (_, claims) = jwt_parts(&account.access_token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    let rotated = refresh(&app, &account.refresh_token).await;
    assert_eq!(rotated.expect(200)["expires_in"], 120);
    app.clock.advance(121);
    expect_refused(&me(&app, &account.access_token).await, "token_expired");
}

#[tokio::test]
async fn jwt_with_a_wrong_audience_or_issuer_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (header, claims) = jwt_parts(&account.access_token);
    let key = fresh_signing_key();
    let mut variants = Vec::new();
    for (claim, value) in [
        ("aud", json!("another-service")),
        ("aud", json!(["another-service"])),
        ("iss", json!("https://evil.example")),
        ("typ_missing", Value::Null),
    ] {
        let mut claims = claims.clone();
        let mut header = header.clone();
        if claim == "typ_missing" {
            header.as_object_mut().unwrap().remove("typ");
        } else {
            claims[claim] = value;
        }
        variants.push(sign_eddsa(&header, &claims, &key));
        let mut fake_kid = header.clone();
        fake_kid["kid"] = json!("attacker");
        variants.push(sign_eddsa(&fake_kid, &claims, &key));
    }
    for token in variants {
        expect_token_refused(&app, &token).await;
    }
}

/// Two servers on one database share the signing keys and the sessions: a token of one with
/// another audience or issuer is refused by the other only for that reason.
#[tokio::test]
async fn token_of_a_server_with_another_audience_or_issuer_is_refused() {
    const ISSUER: &str = "https://auth.example";
    let app = spawn_app_with(|settings| settings.public_url = Some(ISSUER.into())).await;
    let account = app.register("ada@example.com").await;
    let database = database_url(&app);
    let (our_header, our_claims) = jwt_parts(&account.access_token);
    assert_eq!(our_claims["iss"], ISSUER);

    let other_audience = spawn_app_with(|settings| {
        settings.database_url = database.clone();
        settings.public_url = Some(ISSUER.into());
        settings.sessions.audience = "billing".into();
    })
    .await;
    let other_issuer = spawn_app_with(|settings| {
        settings.database_url = database.clone();
        settings.public_url = Some("https://other.example".into());
    })
    .await;

    for (other, claim, value) in [
        (&other_audience, "aud", "billing"),
        (&other_issuer, "iss", "https://other.example"),
    ] {
        let reply = login(other, &account.email, PASSWORD).await;
        let token = reply.expect(200)["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (header, claims) = jwt_parts(&token);
        assert_eq!(header["kid"], our_header["kid"], "one shared signing key");
        assert_eq!(claims[claim], value);
        // Good where it was issued, refused here.
        me(other, &token).await.expect(200);
        expect_token_refused(&app, &token).await;
        // And the other way round.
        expect_token_refused(other, &account.access_token).await;
    }

    // A server with its own database and another audience: refused as well.
    let unrelated = spawn_app_with(|settings| settings.sessions.audience = "billing".into()).await;
    let stranger = unrelated.register("ada@example.com").await;
    expect_token_refused(&app, &stranger.access_token).await;
}

// ---------------------------------------------------------------- JWKS

#[tokio::test]
async fn jwks_publishes_the_key_that_verifies_tokens_offline() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let reply = app.get("/.well-known/jwks.json", Auth::None).await;
    let jwks = reply.expect(200).clone();
    let keys = jwks["keys"].as_array().expect("keys[]");
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "no private part: {key}");
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 32);
    }

    let header = jsonwebtoken::decode_header(&account.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("kid");
    let jwk = keys
        .iter()
        .find(|key| key["kid"] == kid.as_str())
        .expect("the token's kid is in the JWKS");

    let decoding = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[app.base_url.as_str()]);
    validation.set_audience(&["keyward"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(&account.access_token, &decoding, &validation)
        .expect("verifies offline against the JWKS")
        .claims;
    assert_eq!(claims["iss"], app.base_url.as_str());
    assert_eq!(claims["aud"], "keyward");
    assert_eq!(claims["sub"], account.user_id);
    assert_eq!(claims["tid"], account.tenant_id);
    assert!(claims["sid"]
        .as_str()
        .is_some_and(|s| s.starts_with("ses_")));
    assert!(claims["jti"].as_str().is_some_and(|s| !s.is_empty()));
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["exp"].as_i64().expect("exp") - iat, 900);

    // Every token gets its own jti.
    let (_, other) = jwt_parts(
        refresh(&app, &account.refresh_token).await.expect(200)["access_token"]
            .as_str()
            .unwrap(),
    );
    assert_ne!(other["jti"], claims["jti"]);

    // Offline verification rejects a token signed elsewhere, as the server does.
    let forged = sign_eddsa(
        &serde_json::to_value(jsonwebtoken::decode_header(&account.access_token).unwrap()).unwrap(),
        &claims,
        &fresh_signing_key(),
    );
    assert!(jsonwebtoken::decode::<Value>(&forged, &decoding, &validation).is_err());
}
