// The Rust SDK (`keyward-client`) against the real server (SPEC §6): typed calls, problem
// bodies as errors, refresh-and-retry on `token_expired`, credentials never printed.

use std::time::{Duration, Instant};

use keyward_client::{
    AuthMethod, Client, CreateKeyRequest, Credentials, Error, ErrorCode, KeyStatus,
    RegisterRequest, Secret, VerifyCode,
};
use serde_json::json;
use tokio::task::JoinSet;

use super::kit::*;

// ---------------------------------------------------------------- helpers

const EMAIL: &str = "ada@example.com";

/// A client of `app` with no credentials.
fn client(app: &TestApp) -> Client {
    Client::builder(&app.base_url)
        .build()
        .expect("client builds")
}

/// A client of `app` that authenticates with `key`.
fn key_client(app: &TestApp, key: &str) -> Client {
    Client::builder(&app.base_url)
        .api_key(key)
        .build()
        .expect("client builds")
}

/// A client that has registered `email` with [`PASSWORD`], so holds its session.
async fn registered(app: &TestApp, email: &str) -> Client {
    let client = client(app);
    client
        .register(RegisterRequest {
            email: email.into(),
            password: Secret::new(PASSWORD),
            name: Some("Ada".into()),
            tenant_name: None,
        })
        .await
        .expect("registered");
    client
}

fn key_request(name: &str, scopes: &[&str]) -> CreateKeyRequest {
    CreateKeyRequest {
        name: name.into(),
        scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
        ..CreateKeyRequest::default()
    }
}

fn access_token(client: &Client) -> String {
    client
        .credentials()
        .access_token
        .expect("an access token")
        .into_inner()
}

fn refresh_token(client: &Client) -> String {
    client
        .credentials()
        .refresh_token
        .expect("a refresh token")
        .into_inner()
}

/// Asserts `result` is an API error with `status` and `code` and a server-made request id;
/// returns that id.
#[track_caller]
fn expect_api_error<T: std::fmt::Debug>(
    result: Result<T, Error>,
    status: u16,
    code: ErrorCode,
) -> Error {
    let error = result.expect_err("an error");
    match &error {
        Error::Api {
            status: actual_status,
            code: actual_code,
            message,
            request_id,
            ..
        } => {
            assert_eq!(*actual_status, status, "{error}");
            assert_eq!(actual_code, code.as_str(), "{error}");
            assert!(!message.is_empty(), "{error}");
            let request_id = request_id.as_deref().expect("a request id");
            assert!(request_id.starts_with("req_"), "{error}");
        }
        other => panic!("expected an API error {}, got {other:?}", code.as_str()),
    }
    error
}

// ---------------------------------------------------------------- usage

#[tokio::test]
async fn usage_reports_verify_calls() {
    let app = spawn_app().await;
    let client = registered(&app, EMAIL).await;
    let created = client
        .create_key(key_request("metered", &["read"]))
        .await
        .expect("created");
    for scopes in [&["read"][..], &["read"], &["write"]] {
        client
            .verify_key(created.key.expose(), scopes)
            .await
            .expect("verified");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let usage = loop {
        let usage = client
            .usage(Some(7), Some(&created.view.id))
            .await
            .expect("usage");
        if usage.executions == 3 || Instant::now() > deadline {
            break usage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((usage.executions, usage.succeeded, usage.failed), (3, 2, 1));
    assert_eq!(usage.days.len(), 7);
    assert_eq!(usage.days[6].total, 3);
    assert!(usage
        .success_rate
        .is_some_and(|rate| (rate - 2.0 / 3.0).abs() < 1e-9));
    let all = client.usage(None, None).await.expect("usage");
    assert_eq!(all.days.len(), 30);
    expect_api_error(
        client.usage(Some(0), None).await,
        422,
        ErrorCode::ValidationFailed,
    );
    expect_api_error(
        client.usage(None, Some("key_unknown")).await,
        404,
        ErrorCode::NotFound,
    );
}

// ---------------------------------------------------------------- accounts and keys

#[tokio::test]
async fn register_then_me_and_tenant_describe_the_new_user() {
    let app = spawn_app().await;
    let client = client(&app);
    assert_eq!(client.credentials(), Credentials::default());
    let registered = client
        .register(RegisterRequest {
            email: "Ada@Example.com".into(),
            password: Secret::new(PASSWORD),
            name: Some("Ada".into()),
            tenant_name: Some("Analytical Engines".into()),
        })
        .await
        .expect("registered");
    assert_eq!(registered.user.email, EMAIL);
    assert!(registered.user.id.starts_with("usr_"));
    assert_eq!(
        access_token(&client),
        registered.tokens.access_token.expose(),
        "register keeps the pair"
    );
    assert_eq!(
        refresh_token(&client),
        registered.tokens.refresh_token.expose()
    );

    let me = client.me().await.expect("me");
    assert_eq!(me.user.id, registered.user.id);
    assert_eq!(me.user.email, EMAIL);
    assert_eq!(me.user.name.as_deref(), Some("Ada"));
    assert_eq!(me.tenant.id, registered.tenant.id);
    assert_eq!(me.auth.method, AuthMethod::Session);
    assert_eq!(me.auth.key_id, None);

    let tenant = client.tenant().await.expect("tenant");
    assert_eq!(tenant.id, registered.tenant.id);
    assert_eq!(tenant.name, "Analytical Engines");
    assert!(tenant.id.starts_with("ten_"));
}

#[tokio::test]
async fn keys_are_created_listed_got_rotated_revoked_and_verified() {
    let app = spawn_app().await;
    let client = registered(&app, EMAIL).await;
    let me = client.me().await.expect("me");

    let created = client
        .create_key(CreateKeyRequest {
            name: "ci".into(),
            description: Some("the build".into()),
            scopes: Some(vec!["read".into(), "deploy:prod".into()]),
            meta: Some(json!({"plan": "pro"})),
            ..CreateKeyRequest::default()
        })
        .await
        .expect("created");
    assert!(created.view.id.starts_with("key_"));
    assert!(created.key.expose().starts_with("kw_"));
    assert_eq!(created.view.name, "ci");
    assert_eq!(created.view.status, KeyStatus::Active);
    assert!(!format!("{created:?}").contains(created.key.expose()));

    let listed = client.list_keys(false).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.view.id);
    assert_eq!(listed[0].masked, created.view.masked);
    let got = client.get_key(&created.view.id).await.expect("got");
    assert_eq!(got.id, created.view.id);
    assert_eq!(got.description.as_deref(), Some("the build"));
    assert_eq!(got.meta, Some(json!({"plan": "pro"})));

    let valid = client
        .verify_key(created.key.expose(), &["read", "deploy:prod"])
        .await
        .expect("verified");
    assert!(valid.valid);
    assert_eq!(valid.code, VerifyCode::Valid);
    assert_eq!(valid.key_id.as_deref(), Some(created.view.id.as_str()));
    assert_eq!(valid.user_id.as_deref(), Some(me.user.id.as_str()));
    assert_eq!(valid.tenant_id.as_deref(), Some(me.tenant.id.as_str()));
    assert_eq!(valid.meta, Some(json!({"plan": "pro"})));
    let too_little = client
        .verify_key(created.key.expose(), &["write"])
        .await
        .expect("verified");
    assert!(!too_little.valid);
    assert_eq!(too_little.code, VerifyCode::InsufficientScope);
    let unknown = client.verify_key("kw_nope", &[]).await.expect("verified");
    assert_eq!(unknown.code, VerifyCode::NotFound);
    assert_eq!(unknown.key_id, None);

    // Rotation with the default grace (none): the old key is revoked at once.
    let rotated = client
        .rotate_key(&created.view.id, None)
        .await
        .expect("rotated");
    assert_ne!(rotated.view.id, created.view.id);
    assert_ne!(rotated.key.expose(), created.key.expose());
    assert_eq!(rotated.view.name, "ci");
    assert_eq!(rotated.view.scopes, created.view.scopes);
    let old = client
        .verify_key(created.key.expose(), &[])
        .await
        .expect("verified");
    assert_eq!(old.code, VerifyCode::Revoked);
    let new = client
        .verify_key(rotated.key.expose(), &[])
        .await
        .expect("verified");
    assert_eq!(new.code, VerifyCode::Valid);

    // Rotation with a grace period: the old key lives on until it ends.
    let graced = client
        .rotate_key(&rotated.view.id, Some(60))
        .await
        .expect("rotated");
    let during = client
        .verify_key(rotated.key.expose(), &[])
        .await
        .expect("verified");
    assert_eq!(during.code, VerifyCode::Valid);
    app.clock.advance(61);
    let after = client
        .verify_key(rotated.key.expose(), &[])
        .await
        .expect("verified");
    assert_eq!(after.code, VerifyCode::Expired);

    client.revoke_key(&graced.view.id).await.expect("revoked");
    let revoked = client
        .verify_key(graced.key.expose(), &[])
        .await
        .expect("verified");
    assert!(!revoked.valid);
    assert_eq!(revoked.code, VerifyCode::Revoked);
    assert_eq!(
        client.get_key(&graced.view.id).await.expect("got").status,
        KeyStatus::Revoked
    );

    let active: Vec<_> = client.list_keys(false).await.expect("listed");
    assert!(
        active
            .iter()
            .all(|key| key.id != graced.view.id && key.id != created.view.id),
        "{active:?}"
    );
    let everything = client.list_keys(true).await.expect("listed");
    let ids: Vec<_> = everything.iter().map(|key| key.id.as_str()).collect();
    for id in [&created.view.id, &rotated.view.id, &graced.view.id] {
        assert!(ids.contains(&id.as_str()), "{id} missing from {ids:?}");
    }
    assert_eq!(ids[0], graced.view.id, "newest first");
}

#[tokio::test]
async fn an_api_key_client_acts_within_its_scopes() {
    let app = spawn_app().await;
    let session = registered(&app, EMAIL).await;
    let created = session
        .create_key(key_request("reader", &["read"]))
        .await
        .expect("created");
    let reader = key_client(&app, created.key.expose());

    let me = reader.me().await.expect("me");
    assert_eq!(me.auth.method, AuthMethod::ApiKey);
    assert_eq!(me.auth.key_id.as_deref(), Some(created.view.id.as_str()));
    assert_eq!(me.auth.scopes, vec!["read".to_owned()]);
    assert_eq!(reader.list_keys(false).await.expect("listed").len(), 1);
    expect_api_error(
        reader.create_key(key_request("more", &["read"])).await,
        403,
        ErrorCode::InsufficientScope,
    );
    expect_api_error(
        reader.revoke_key(&created.view.id).await,
        403,
        ErrorCode::InsufficientScope,
    );
}

#[tokio::test]
async fn login_and_password_change_and_logout() {
    let app = spawn_app().await;
    let first = registered(&app, EMAIL).await;
    let client = client(&app);
    let tokens = client.login(EMAIL, PASSWORD).await.expect("logged in");
    assert_eq!(access_token(&client), tokens.access_token.expose());
    assert_eq!(client.me().await.expect("me").user.email, EMAIL);
    expect_api_error(
        client.login(EMAIL, "wrong password, certainly").await,
        401,
        ErrorCode::InvalidCredentials,
    );

    let wrong = expect_api_error(
        client
            .change_password("not the password", "a brand new passphrase")
            .await,
        422,
        ErrorCode::ValidationFailed,
    );
    let Error::Api { errors, .. } = &wrong else {
        unreachable!()
    };
    assert!(
        errors.iter().any(|e| e.field == "current_password"),
        "{errors:?}"
    );
    client
        .change_password(PASSWORD, "a brand new passphrase")
        .await
        .expect("changed");
    client.me().await.expect("this session goes on");
    expect_api_error(first.me().await, 401, ErrorCode::InvalidToken);
    expect_api_error(
        client.login(EMAIL, PASSWORD).await,
        401,
        ErrorCode::InvalidCredentials,
    );
    client
        .login(EMAIL, "a brand new passphrase")
        .await
        .expect("logged in with the new password");

    let old_access = access_token(&client);
    client.logout(false).await.expect("logged out");
    assert_eq!(
        client.credentials(),
        Credentials::default(),
        "tokens forgotten"
    );
    app.get("/v1/auth/me", Auth::Bearer(&old_access))
        .await
        .expect_problem(401, "invalid_token");
    expect_api_error(client.me().await, 401, ErrorCode::MissingCredentials);
    assert!(matches!(client.refresh().await, Err(Error::NoRefreshToken)));
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn api_errors_carry_status_code_message_and_request_id() {
    let app = spawn_app().await;
    let client = registered(&app, EMAIL).await;

    let missing = expect_api_error(
        client.get_key("key_doesnotexist").await,
        404,
        ErrorCode::NotFound,
    );
    assert_eq!(missing.status(), Some(404));
    assert!(missing.has_code(ErrorCode::NotFound));

    let invalid = expect_api_error(
        key_client(&app, "kw_notarealkey").me().await,
        401,
        ErrorCode::InvalidApiKey,
    );
    let request_id = invalid.request_id().expect("request id").to_owned();
    assert_eq!(
        invalid.to_string(),
        format!(
            "invalid_api_key (401): The API key is invalid, expired or revoked. [request {request_id}]"
        )
    );
    assert_ne!(
        Some(request_id.as_str()),
        missing.request_id(),
        "one id per request"
    );

    let bad_name = expect_api_error(
        client
            .create_key(key_request("9 starts with a digit", &["read"]))
            .await,
        422,
        ErrorCode::ValidationFailed,
    );
    let Error::Api { errors, .. } = &bad_name else {
        unreachable!()
    };
    assert!(errors.iter().any(|e| e.field == "name"), "{errors:?}");

    let taken = client
        .register(RegisterRequest {
            email: EMAIL.into(),
            password: Secret::new(PASSWORD),
            name: None,
            tenant_name: None,
        })
        .await;
    expect_api_error(taken, 409, ErrorCode::EmailTaken);
}

#[tokio::test]
async fn an_api_key_client_gets_session_required_on_logout() {
    let app = spawn_app().await;
    let session = registered(&app, EMAIL).await;
    let created = session
        .create_key(key_request("admin", &["admin"]))
        .await
        .expect("created");
    let client = key_client(&app, created.key.expose());
    expect_api_error(client.logout(false).await, 403, ErrorCode::SessionRequired);
    expect_api_error(client.logout(true).await, 403, ErrorCode::SessionRequired);
    expect_api_error(
        client
            .change_password(PASSWORD, "a brand new passphrase")
            .await,
        403,
        ErrorCode::SessionRequired,
    );
    assert_eq!(
        client.credentials().api_key.as_ref().map(Secret::expose),
        Some(created.key.expose()),
        "the key is kept"
    );
    client.me().await.expect("the key still works");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_transport_timeout() {
    // A listener that is never accepted from: the connection opens, no answer ever comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let base_url = format!("http://{}", silent.local_addr().expect("address"));
    let client = Client::builder(base_url)
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client builds");
    let started = Instant::now();
    let error = client.verify_key("kw_x", &[]).await.expect_err("no answer");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout applies"
    );
    let Error::Transport(transport) = &error else {
        panic!("expected a transport error, got {error:?}");
    };
    assert!(transport.is_timeout(), "{error}");
    assert_eq!(error.code(), None);
    assert_eq!(error.request_id(), None);
}

// ---------------------------------------------------------------- refresh and retry

#[tokio::test]
async fn an_expired_access_token_is_refreshed_and_the_call_retried() {
    let app = spawn_app().await;
    let client = registered(&app, EMAIL).await;
    let clone = client.clone();
    let (access_before, refresh_before) = (access_token(&client), refresh_token(&client));

    app.clock.advance(16 * 60);
    app.get("/v1/auth/me", Auth::Bearer(&access_before))
        .await
        .expect_problem(401, "token_expired");
    let me = client.me().await.expect("refreshed and retried");
    assert_eq!(me.user.email, EMAIL);

    let access_after = access_token(&client);
    assert_ne!(access_after, access_before);
    assert_ne!(refresh_token(&client), refresh_before);
    assert_eq!(access_token(&clone), access_after, "clones share the pair");
    // The new pair is the server's: it authenticates, and the old refresh token is spent.
    app.get("/v1/auth/me", Auth::Bearer(&access_after))
        .await
        .expect(200);
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": refresh_before}),
    )
    .await
    .expect_problem(401, "invalid_token");
}

#[tokio::test]
async fn an_explicit_refresh_stores_the_new_pair() {
    let app = spawn_app().await;
    let client = registered(&app, EMAIL).await;
    let before = access_token(&client);
    app.clock.advance(1);
    let pair = client.refresh().await.expect("refreshed");
    assert_eq!(access_token(&client), pair.access_token.expose());
    assert_eq!(refresh_token(&client), pair.refresh_token.expose());
    assert_ne!(access_token(&client), before);
    client.me().await.expect("the new token works");
}

#[tokio::test]
async fn clones_meeting_token_expired_together_refresh_once() {
    let app = spawn_app().await;
    let client = registered(&app, EMAIL).await;
    app.clock.advance(16 * 60);
    let mut calls = JoinSet::new();
    for _ in 0..6 {
        let clone = client.clone();
        calls.spawn(async move { clone.me().await });
    }
    while let Some(joined) = calls.join_next().await {
        joined.expect("task").expect("every call succeeds");
    }
    // Had two refreshes spent one token, the second would have answered invalid_token.
    client.me().await.expect("the session is alive");
    client
        .refresh()
        .await
        .expect("the held refresh token is the live one");
}

#[tokio::test]
async fn when_the_refresh_fails_the_original_error_surfaces() {
    let app = spawn_app().await;
    let registered = registered(&app, EMAIL).await;
    let access = access_token(&registered);

    let bad_refresh = Client::builder(&app.base_url)
        .tokens(&access, "not-a-refresh-token")
        .build()
        .expect("client builds");
    let access_only = Client::builder(&app.base_url)
        .access_token(&access)
        .build()
        .expect("client builds");
    bad_refresh.me().await.expect("valid before expiry");

    app.clock.advance(16 * 60);
    let error = expect_api_error(bad_refresh.me().await, 401, ErrorCode::TokenExpired);
    assert!(
        error.to_string().starts_with("token_expired (401): "),
        "{error}"
    );
    assert_eq!(access_token(&bad_refresh), access, "nothing was stored");
    expect_api_error(access_only.me().await, 401, ErrorCode::TokenExpired);
    expect_api_error(bad_refresh.refresh().await, 401, ErrorCode::InvalidToken);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn debug_output_shows_no_token_nor_key() {
    let app = spawn_app().await;
    let session = registered(&app, EMAIL).await;
    let created = session
        .create_key(key_request("ci", &["read"]))
        .await
        .expect("created");
    let client = Client::builder(&app.base_url)
        .api_key(created.key.expose())
        .tokens(access_token(&session), refresh_token(&session))
        .build()
        .expect("client builds");
    let secrets = [
        created.key.expose().to_owned(),
        access_token(&session),
        refresh_token(&session),
    ];
    let builder = Client::builder(&app.base_url).api_key(created.key.expose());
    let outputs = [
        format!("{client:?}"),
        format!("{:?}", client.credentials()),
        format!("{builder:?}"),
        format!("{session:?}"),
    ];
    for output in &outputs {
        assert!(output.contains("[redacted]"), "{output}");
        for secret in &secrets {
            assert!(!output.contains(secret.as_str()), "a secret in {output}");
        }
    }
    assert!(outputs[0].contains(&app.base_url), "{}", outputs[0]);
}
