// The device authorization grant, RFC 8628 (SPEC §4 "Device authorization").

use std::time::Duration;

use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const CODE_PATH: &str = "/v1/auth/device/code";
const TOKEN_PATH: &str = "/v1/auth/device/token";
const APPROVE_PATH: &str = "/v1/auth/device/approve";
const USER_CODE_ALPHABET: &str = "BCDFGHJKLMNPQRSTVWXZ";

/// Asks for a pair of codes; returns the whole answer.
async fn start(app: &TestApp) -> Value {
    app.post(
        CODE_PATH,
        Auth::None,
        json!({"client_name": "keyward-cli on laptop"}),
    )
    .await
    .expect(200)
    .clone()
}

fn field(body: &Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {body}"))
        .to_owned()
}

/// Polls with a JSON body.
async fn poll_json(app: &TestApp, device_code: &str) -> Reply {
    app.post(
        TOKEN_PATH,
        Auth::None,
        json!({"device_code": device_code, "grant_type": GRANT_TYPE}),
    )
    .await
}

/// Polls with a form body, as OAuth clients do.
async fn poll_form(app: &TestApp, device_code: &str) -> Reply {
    let response = app
        .http
        .post(app.url(TOKEN_PATH))
        .form(&[("grant_type", GRANT_TYPE), ("device_code", device_code)])
        .send()
        .await
        .expect("request sent");
    TestApp::read(response).await
}

async fn decide(app: &TestApp, auth: Auth<'_>, user_code: &str, approve: bool) -> Reply {
    app.post(
        APPROVE_PATH,
        auth,
        json!({"user_code": user_code, "approve": approve}),
    )
    .await
}

/// Asserts an RFC 6749 §5.2 error: 400, `application/json`, `error`, no problem fields.
fn expect_oauth_error(reply: &Reply, error: &str) {
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["error"], error, "{}", reply.text);
    assert!(
        reply.body["error_description"].is_string(),
        "{}",
        reply.text
    );
    assert!(
        reply.body.get("code").is_none(),
        "not a problem body: {}",
        reply.text
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

/// Asserts the key answer and returns `(api_key, key_id)`.
fn expect_key(reply: &Reply) -> (String, String) {
    let body = reply.expect(200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(body["token_type"], "api_key");
    let key = field(body, "api_key");
    let key_id = field(body, "key_id");
    assert!(key.starts_with("kw_"), "{key}");
    assert!(key_id.starts_with("key_"), "{key_id}");
    (key, key_id)
}

fn is_user_code(code: &str) -> bool {
    code.len() == 9
        && code.char_indices().all(|(i, c)| {
            if i == 4 {
                c == '-'
            } else {
                USER_CODE_ALPHABET.contains(c)
            }
        })
}

// ---------------------------------------------------------------- the code endpoint

#[tokio::test]
async fn device_code_answers_the_spec_shape() {
    let app = spawn_app().await;
    let reply = app
        .post(CODE_PATH, Auth::None, json!({"client_name": "laptop"}))
        .await;
    let body = reply.expect(200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let user_code = field(body, "user_code");
    assert!(is_user_code(&user_code), "{user_code}");
    let device_code = field(body, "device_code");
    assert!(
        device_code.len() >= 40,
        "a high-entropy secret: {device_code}"
    );
    assert_eq!(
        field(body, "verification_uri"),
        format!("{}/console/device", app.base_url)
    );
    assert_eq!(
        field(body, "verification_uri_complete"),
        format!("{}/console/device?user_code={user_code}", app.base_url)
    );
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["interval"], 5);

    // No body, a form (with the client_id and scope OAuth libraries send), and `{}` all work.
    let empty = app.http.post(app.url(CODE_PATH)).send().await.unwrap();
    let empty = TestApp::read(empty).await;
    assert!(is_user_code(&field(empty.expect(200), "user_code")));
    let form = app
        .http
        .post(app.url(CODE_PATH))
        .form(&[
            ("client_id", "keyward"),
            ("scope", "admin"),
            ("client_name", "ci"),
        ])
        .send()
        .await
        .unwrap();
    let form = TestApp::read(form).await;
    assert!(is_user_code(&field(form.expect(200), "user_code")));
    let other = app.post(CODE_PATH, Auth::None, json!({})).await;
    assert_ne!(field(other.expect(200), "device_code"), device_code);

    // Wrong content type, bad JSON, bad client_name: problems, as everywhere but /token.
    let text = app
        .http
        .post(app.url(CODE_PATH))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    TestApp::read(text)
        .await
        .expect_problem(400, "invalid_request");
    app.post(
        CODE_PATH,
        Auth::None,
        json!({"client_name": "x".repeat(101)}),
    )
    .await
    .expect_field_error("client_name");
    app.post(CODE_PATH, Auth::None, json!({"client_name": 5}))
        .await
        .expect_field_error("client_name");
}

#[tokio::test]
async fn the_device_settings_apply() {
    let app = spawn_app_with(|settings| {
        settings.device.code_ttl_seconds = 120;
        settings.device.interval_seconds = 2;
    })
    .await;
    let codes = start(&app).await;
    assert_eq!(codes["expires_in"], 120);
    assert_eq!(codes["interval"], 2);
    let device_code = field(&codes, "device_code");
    expect_oauth_error(
        &poll_form(&app, &device_code).await,
        "authorization_pending",
    );
    app.clock.advance(2);
    expect_oauth_error(
        &poll_form(&app, &device_code).await,
        "authorization_pending",
    );
    app.clock.advance(120);
    expect_oauth_error(&poll_form(&app, &device_code).await, "expired_token");
}

// ---------------------------------------------------------------- the token endpoint

#[tokio::test]
async fn token_errors_are_oauth_json_in_both_encodings() {
    let app = spawn_app().await;
    let device_code = field(&start(&app).await, "device_code");

    // The first poll is already `authorization_pending`, form or JSON.
    expect_oauth_error(
        &poll_form(&app, &device_code).await,
        "authorization_pending",
    );
    app.clock.advance(5);
    expect_oauth_error(
        &poll_json(&app, &device_code).await,
        "authorization_pending",
    );
    app.clock.advance(5);
    // `grant_type` may be left out.
    let reply = app
        .post(TOKEN_PATH, Auth::None, json!({"device_code": device_code}))
        .await;
    expect_oauth_error(&reply, "authorization_pending");

    // Unknown codes read as expired; a missing code or a bad body is invalid_request.
    expect_oauth_error(&poll_json(&app, "kwd_nope").await, "expired_token");
    expect_oauth_error(&poll_form(&app, "kwd_nope").await, "expired_token");
    let missing = app
        .post(TOKEN_PATH, Auth::None, json!({"grant_type": GRANT_TYPE}))
        .await;
    expect_oauth_error(&missing, "invalid_request");
    let empty = app
        .post(TOKEN_PATH, Auth::None, json!({"device_code": ""}))
        .await;
    expect_oauth_error(&empty, "invalid_request");
    let no_body = TestApp::read(app.http.post(app.url(TOKEN_PATH)).send().await.unwrap()).await;
    expect_oauth_error(&no_body, "invalid_request");
    for (content_type, body) in [
        ("text/plain", "device_code=x"),
        ("application/json", "{nope"),
        ("application/json", "[1]"),
        ("application/json", r#"{"device_code": 5}"#),
    ] {
        let response = app
            .http
            .post(app.url(TOKEN_PATH))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        expect_oauth_error(&TestApp::read(response).await, "invalid_request");
    }

    // Another grant type is refused, in either encoding.
    let reply = app
        .post(
            TOKEN_PATH,
            Auth::None,
            json!({"device_code": device_code, "grant_type": "authorization_code"}),
        )
        .await;
    expect_oauth_error(&reply, "unsupported_grant_type");
    let response = app
        .http
        .post(app.url(TOKEN_PATH))
        .form(&[("grant_type", "password"), ("device_code", &device_code)])
        .send()
        .await
        .unwrap();
    expect_oauth_error(&TestApp::read(response).await, "unsupported_grant_type");
}

#[tokio::test]
async fn polling_too_fast_slows_down_and_the_interval_grows() {
    let app = spawn_app().await;
    let device_code = field(&start(&app).await, "device_code");
    expect_oauth_error(
        &poll_json(&app, &device_code).await,
        "authorization_pending",
    );
    // At once again: too fast. The interval for this code becomes 10 s.
    expect_oauth_error(&poll_json(&app, &device_code).await, "slow_down");
    // 5 s later is now too fast as well (interval 15 s from here).
    app.clock.advance(5);
    expect_oauth_error(&poll_form(&app, &device_code).await, "slow_down");
    app.clock.advance(10);
    expect_oauth_error(&poll_form(&app, &device_code).await, "slow_down");
    // Waiting the grown interval (now 20 s) is fine again.
    app.clock.advance(20);
    expect_oauth_error(
        &poll_json(&app, &device_code).await,
        "authorization_pending",
    );
    app.clock.advance(20);
    expect_oauth_error(
        &poll_json(&app, &device_code).await,
        "authorization_pending",
    );

    // Another code keeps the configured interval.
    let other = field(&start(&app).await, "device_code");
    expect_oauth_error(&poll_json(&app, &other).await, "authorization_pending");
    app.clock.advance(5);
    expect_oauth_error(&poll_json(&app, &other).await, "authorization_pending");
}

#[tokio::test]
async fn an_approved_code_gives_a_working_cli_key_once() {
    let app = spawn_app().await;
    let account = app.register("device@example.com").await;
    let codes = start(&app).await;
    let device_code = field(&codes, "device_code");
    expect_oauth_error(
        &poll_form(&app, &device_code).await,
        "authorization_pending",
    );

    // Typed in lower case without the dash.
    let typed = field(&codes, "user_code").replace('-', "").to_lowercase();
    decide(&app, Auth::Bearer(&account.access_token), &typed, true)
        .await
        .expect(204);
    app.clock.advance(5);
    let (api_key, key_id) = expect_key(&poll_form(&app, &device_code).await);

    // The key is the approving user's, named `cli`, with the user's full access.
    let me = app.get("/v1/auth/me", Auth::ApiKey(&api_key)).await;
    let me = me.expect(200);
    assert_eq!(me["user"]["id"], account.user_id.as_str());
    assert_eq!(me["tenant"]["id"], account.tenant_id.as_str());
    assert_eq!(me["auth"]["method"], "api_key");
    assert_eq!(me["auth"]["key_id"], key_id.as_str());
    assert_eq!(me["auth"]["scopes"], json!(["admin"]));
    let listed = app
        .get(
            &format!("/v1/keys/{key_id}"),
            Auth::Bearer(&account.access_token),
        )
        .await;
    let listed = listed.expect(200);
    assert_eq!(listed["name"], "cli");
    assert_eq!(listed["status"], "active");
    assert!(listed.get("key").is_none());

    // Redeemed: every later poll, in either encoding and at any pace, is invalid_grant.
    expect_oauth_error(&poll_form(&app, &device_code).await, "invalid_grant");
    app.clock.advance(5);
    expect_oauth_error(&poll_json(&app, &device_code).await, "invalid_grant");
    // The code cannot be decided again either.
    decide(&app, Auth::Bearer(&account.access_token), &typed, true)
        .await
        .expect_problem(404, "not_found");
    let keys = app
        .get("/v1/keys", Auth::Bearer(&account.access_token))
        .await;
    assert_eq!(keys.expect(200)["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_approved_code_polled_as_json_gives_the_key() {
    let app = spawn_app().await;
    let account = app.register("json@example.com").await;
    let codes = start(&app).await;
    decide(
        &app,
        Auth::Bearer(&account.access_token),
        &field(&codes, "user_code"),
        true,
    )
    .await
    .expect(204);
    // The first poll after approval gets the key, however soon it comes.
    let (api_key, _) = expect_key(&poll_json(&app, &field(&codes, "device_code")).await);
    app.get("/v1/auth/me", Auth::Bearer(&api_key))
        .await
        .expect(200);
}

#[tokio::test]
async fn user_codes_are_accepted_in_any_case_with_or_without_the_dash() {
    let app = spawn_app().await;
    let account = app.register("spelling@example.com").await;
    let spellings: [fn(&str) -> String; 5] = [
        |code| code.to_owned(),
        |code| code.to_lowercase(),
        |code| code.replace('-', ""),
        |code| code.replace('-', "").to_lowercase(),
        |code| format!("  {}  ", code[..6].to_lowercase() + &code[6..]),
    ];
    for spell in spellings {
        let codes = start(&app).await;
        let typed = spell(&field(&codes, "user_code"));
        decide(&app, Auth::Bearer(&account.access_token), &typed, true)
            .await
            .expect(204);
        expect_key(&poll_json(&app, &field(&codes, "device_code")).await);
    }
    // Not a code at all: 422 naming the field (and not counted as a guess).
    for malformed in ["", "BCDF-GHJ", "AEIO-UBCD", "BCDF_GHJK", "BCDF-GHJK-L"] {
        decide(&app, Auth::Bearer(&account.access_token), malformed, true)
            .await
            .expect_field_error("user_code");
    }
    app.post(
        APPROVE_PATH,
        Auth::Bearer(&account.access_token),
        json!({"user_code": "BCDF-GHJK"}),
    )
    .await
    .expect_field_error("approve");
}

#[tokio::test]
async fn two_racing_polls_after_approval_redeem_once() {
    let app = spawn_app().await;
    let account = app.register("race@example.com").await;
    for _ in 0..3 {
        let codes = start(&app).await;
        let device_code = field(&codes, "device_code");
        decide(
            &app,
            Auth::Bearer(&account.access_token),
            &field(&codes, "user_code"),
            true,
        )
        .await
        .expect(204);
        let (a, b) = tokio::join!(poll_json(&app, &device_code), poll_form(&app, &device_code));
        let winners: Vec<&Reply> = [&a, &b]
            .into_iter()
            .filter(|reply| reply.status.as_u16() == 200)
            .collect();
        assert_eq!(winners.len(), 1, "{} / {}", a.text, b.text);
        let loser = if a.status.as_u16() == 200 { &b } else { &a };
        expect_oauth_error(loser, "invalid_grant");
    }
    let keys = app
        .get("/v1/keys", Auth::Bearer(&account.access_token))
        .await;
    assert_eq!(keys.expect(200)["keys"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_denied_code_answers_access_denied() {
    let app = spawn_app().await;
    let account = app.register("deny@example.com").await;
    let codes = start(&app).await;
    let device_code = field(&codes, "device_code");
    let user_code = field(&codes, "user_code");
    decide(&app, Auth::Bearer(&account.access_token), &user_code, false)
        .await
        .expect(204);
    expect_oauth_error(&poll_json(&app, &device_code).await, "access_denied");
    app.clock.advance(5);
    expect_oauth_error(&poll_form(&app, &device_code).await, "access_denied");
    // A decided code cannot be approved after all.
    decide(&app, Auth::Bearer(&account.access_token), &user_code, true)
        .await
        .expect_problem(404, "not_found");
    expect_oauth_error(&poll_form(&app, &device_code).await, "access_denied");
    let keys = app
        .get("/v1/keys", Auth::Bearer(&account.access_token))
        .await;
    assert!(keys.expect(200)["keys"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn codes_expire() {
    let app = spawn_app().await;
    let account = app.register("late@example.com").await;
    let pending = start(&app).await;
    let approved = start(&app).await;
    decide(
        &app,
        Auth::Bearer(&account.access_token),
        &field(&approved, "user_code"),
        true,
    )
    .await
    .expect(204);
    app.clock.advance(601);
    expect_oauth_error(
        &poll_json(&app, &field(&pending, "device_code")).await,
        "expired_token",
    );
    // Approved but never redeemed in time: expired as well, and no key is minted.
    expect_oauth_error(
        &poll_form(&app, &field(&approved, "device_code")).await,
        "expired_token",
    );
    decide(
        &app,
        Auth::Bearer(&account.access_token),
        &field(&pending, "user_code"),
        true,
    )
    .await
    .expect_problem(404, "not_found");
    let keys = app
        .get("/v1/keys", Auth::Bearer(&account.access_token))
        .await;
    assert!(keys.expect(200)["keys"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_key_limit_answers_access_denied_until_a_key_is_freed() {
    let app = spawn_app_with(|settings| settings.keys.max_per_user = 1).await;
    let account = app.register("full@example.com").await;
    let existing = app.create_key(&account, json!({"name": "only"})).await;
    let codes = start(&app).await;
    let device_code = field(&codes, "device_code");
    decide(
        &app,
        Auth::Bearer(&account.access_token),
        &field(&codes, "user_code"),
        true,
    )
    .await
    .expect(204);
    let refused = poll_json(&app, &device_code).await;
    expect_oauth_error(&refused, "access_denied");
    assert!(
        refused.body["error_description"]
            .as_str()
            .unwrap()
            .contains("key limit"),
        "{}",
        refused.text
    );
    // Nothing was spent: once a key is revoked, the same code still works.
    app.delete(
        &format!("/v1/keys/{}", field(&existing, "id")),
        Auth::Bearer(&account.access_token),
    )
    .await
    .expect(204);
    expect_key(&poll_json(&app, &device_code).await);
}

// ---------------------------------------------------------------- approval

#[tokio::test]
async fn approval_needs_a_session() {
    let app = spawn_app().await;
    let account = app.register("keyed@example.com").await;
    let key = field(
        &app.create_key(&account, json!({"name": "ci"})).await,
        "key",
    );
    let codes = start(&app).await;
    let user_code = field(&codes, "user_code");
    decide(&app, Auth::ApiKey(&key), &user_code, true)
        .await
        .expect_problem(403, "session_required");
    decide(&app, Auth::Bearer(&key), &user_code, true)
        .await
        .expect_problem(403, "session_required");
    decide(&app, Auth::None, &user_code, true)
        .await
        .expect_problem(401, "missing_credentials");
    // The code is still pending.
    expect_oauth_error(
        &poll_json(&app, &field(&codes, "device_code")).await,
        "authorization_pending",
    );
}

#[tokio::test]
async fn wrong_user_codes_are_rate_limited_per_user() {
    let app = spawn_app().await;
    let guesser = app.register("guesser@example.com").await;
    let owner = app.register("owner@example.com").await;
    let codes = start(&app).await;
    let user_code = field(&codes, "user_code");
    let wrong = |i: usize| {
        let alphabet = USER_CODE_ALPHABET.as_bytes();
        let mut code: Vec<u8> = b"BBBB-BBBB".to_vec();
        code[0] = alphabet[i % alphabet.len()];
        code[8] = alphabet[(i / alphabet.len()) % alphabet.len()];
        String::from_utf8(code).unwrap()
    };
    let mut tried = 0;
    for i in 0.. {
        if tried == 10 {
            break;
        }
        let guess = wrong(i);
        if guess == user_code {
            continue;
        }
        decide(&app, Auth::Bearer(&guesser.access_token), &guess, true)
            .await
            .expect_problem(404, "not_found");
        tried += 1;
    }
    // The 11th attempt is refused whatever the code, the right one included.
    let limited = decide(&app, Auth::Bearer(&guesser.access_token), &user_code, true).await;
    limited.expect_problem(429, "rate_limited");
    let retry_after: i64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    // Another user is not affected.
    decide(&app, Auth::Bearer(&owner.access_token), &wrong(0), true)
        .await
        .expect_problem(404, "not_found");
    // The guesses did not touch the code: its owner approves it.
    decide(&app, Auth::Bearer(&owner.access_token), &user_code, true)
        .await
        .expect(204);
    expect_key(&poll_json(&app, &field(&codes, "device_code")).await);
    // Once the oldest failure ages out, the guesser may try again (the code above has expired
    // by then: a new one).
    app.clock.advance(retry_after);
    let fresh = start(&app).await;
    decide(
        &app,
        Auth::Bearer(&guesser.access_token),
        &field(&fresh, "user_code"),
        false,
    )
    .await
    .expect(204);
    expect_oauth_error(
        &poll_json(&app, &field(&fresh, "device_code")).await,
        "access_denied",
    );
    decide(&app, Auth::Bearer(&guesser.access_token), &wrong(0), true)
        .await
        .expect_problem(404, "not_found");
}

// ---------------------------------------------------------------- several instances, odd input

/// Another server on `app`'s database, sharing its clock and public URL.
async fn another_instance(app: &TestApp) -> TestApp {
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: app.database_url(),
        public_url: Some("http://keyward.test".into()),
        ..Default::default()
    };
    settings.database.max_connections = 4;
    spawn_with_clock(settings, app.clock.clone(), BACKEND, fresh_database().await).await
}

#[tokio::test]
async fn pace_redemption_and_the_approval_limit_hold_across_instances() {
    let a =
        spawn_app_with(|settings| settings.public_url = Some("http://keyward.test".into())).await;
    let b = another_instance(&a).await;
    let account = a.register("two@example.com").await;

    // The pace is the code's, not the instance's.
    let codes = start(&a).await;
    let device_code = field(&codes, "device_code");
    expect_oauth_error(&poll_json(&a, &device_code).await, "authorization_pending");
    expect_oauth_error(&poll_form(&b, &device_code).await, "slow_down");

    // Approved on one, raced on both: one key.
    decide(
        &b,
        Auth::Bearer(&account.access_token),
        &field(&codes, "user_code"),
        true,
    )
    .await
    .expect(204);
    let (first, second) = tokio::join!(poll_json(&a, &device_code), poll_form(&b, &device_code));
    let won = [&first, &second]
        .iter()
        .filter(|reply| reply.status.as_u16() == 200)
        .count();
    assert_eq!(won, 1, "{} / {}", first.text, second.text);
    let keys = a.get("/v1/keys", Auth::Bearer(&account.access_token)).await;
    assert_eq!(keys.expect(200)["keys"].as_array().unwrap().len(), 1);

    // Failed approvals add up across instances.
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        let guess = if i < 5 { "BBBB-BBBB" } else { "CCCC-CCCC" };
        decide(app, Auth::Bearer(&account.access_token), guess, true)
            .await
            .expect_problem(404, "not_found");
    }
    for app in [&a, &b] {
        decide(app, Auth::Bearer(&account.access_token), "DDDD-DDDD", true)
            .await
            .expect_problem(429, "rate_limited");
    }
}

#[tokio::test]
async fn odd_input_never_causes_a_server_error() {
    let app = spawn_app().await;
    let account = app.register("odd-device@example.com").await;
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", vec![]),
        ("application/json", b"null".to_vec()),
        (
            "application/json",
            br#"{"device_code": null, "user_code": null}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"user_code": "\u0000", "approve": "yes"}"#.to_vec(),
        ),
        (
            "application/json",
            format!(r#"{{"client_name": "{}"}}"#, "é".repeat(10_000)).into_bytes(),
        ),
        ("application/json", nested.clone().into_bytes()),
        ("application/json", vec![0xff, 0xfe, 0x00, 0x7b]),
        (
            "application/x-www-form-urlencoded",
            b"device_code=%ff%fe&device_code=x".to_vec(),
        ),
        ("application/x-www-form-urlencoded", b"%%%&&&===".to_vec()),
        ("application/x-www-form-urlencoded", vec![0xff, 0x00, 0x3d]),
        (
            "application/x-www-form-urlencoded",
            format!("client_name={}", "x".repeat(60_000)).into_bytes(),
        ),
        ("multipart/form-data; boundary=x", b"--x--".to_vec()),
    ];
    for path in [CODE_PATH, TOKEN_PATH, APPROVE_PATH] {
        for (content_type, body) in &bodies {
            let response = app
                .http
                .post(app.url(path))
                .bearer_auth(&account.access_token)
                .header("content-type", *content_type)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let reply = TestApp::read(response).await;
            assert!(
                reply.status.as_u16() < 500,
                "{path} with {content_type} {:?} → {}",
                String::from_utf8_lossy(&body[..body.len().min(40)]),
                reply.text
            );
            if !reply.status.is_success() && path == TOKEN_PATH {
                assert!(reply.body["error"].is_string(), "{}", reply.text);
            } else if !reply.status.is_success() {
                assert_eq!(
                    reply.header("content-type"),
                    Some("application/problem+json"),
                    "{}",
                    reply.text
                );
            }
        }
    }
    // An oversized body is 413 on the problem routes and invalid_request on /token.
    let big = format!(r#"{{"device_code": "{}"}}"#, "x".repeat(70_000));
    let response = app
        .http
        .post(app.url(TOKEN_PATH))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_oauth_error(&TestApp::read(response).await, "invalid_request");
    let response = app
        .http
        .post(app.url(CODE_PATH))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    TestApp::read(response)
        .await
        .expect_problem(413, "payload_too_large");
}

// ---------------------------------------------------------------- a real OAuth client

mod oauth_client {
    use std::time::Duration;

    use oauth2::basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    };
    use oauth2::{
        AccessToken, RefreshToken, Scope, StandardDeviceAuthorizationResponse,
        StandardRevocableToken, TokenResponse,
    };
    use serde::{Deserialize, Serialize};

    /// Keyward's token answer: the key travels as `api_key`, its type is `api_key`, and
    /// `key_id` comes with it.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ApiKeyTokenResponse {
        #[serde(rename = "api_key")]
        access_token: AccessToken,
        token_type: ApiKeyTokenType,
        pub key_id: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ApiKeyTokenType {
        ApiKey,
    }

    impl oauth2::TokenType for ApiKeyTokenType {}

    impl TokenResponse for ApiKeyTokenResponse {
        type TokenType = ApiKeyTokenType;

        fn access_token(&self) -> &AccessToken {
            &self.access_token
        }

        fn token_type(&self) -> &ApiKeyTokenType {
            &self.token_type
        }

        fn expires_in(&self) -> Option<Duration> {
            None
        }

        fn refresh_token(&self) -> Option<&RefreshToken> {
            None
        }

        fn scopes(&self) -> Option<&Vec<Scope>> {
            None
        }
    }

    pub type Client = oauth2::Client<
        BasicErrorResponse,
        ApiKeyTokenResponse,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
    >;

    pub type Details = StandardDeviceAuthorizationResponse;
}

#[tokio::test]
async fn a_standard_oauth2_client_polls_until_it_gets_the_key() {
    use oauth2::TokenResponse as _;

    let app = spawn_app().await;
    let account = app.register("oauth@example.com").await;
    let client = oauth_client::Client::new(oauth2::ClientId::new("keyward-cli".into()))
        .set_device_authorization_url(
            oauth2::DeviceAuthorizationUrl::new(app.url(CODE_PATH)).expect("url"),
        )
        .set_token_uri(oauth2::TokenUrl::new(app.url(TOKEN_PATH)).expect("url"));
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .expect("http client");

    let details: oauth_client::Details = client
        .exchange_device_code()
        .request_async(&http)
        .await
        .expect("device authorization");
    assert!(is_user_code(details.user_code().secret()));
    assert_eq!(
        details.verification_uri().as_str(),
        format!("{}/console/device", app.base_url)
    );
    assert_eq!(details.interval(), Duration::from_secs(5));

    // A person approves in the browser a little later.
    let approval = tokio::spawn({
        let http = app.http.clone();
        let url = app.url(APPROVE_PATH);
        let token = account.access_token.clone();
        let user_code = details.user_code().secret().to_owned();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"user_code": user_code, "approve": true}))
                .send()
                .await
                .expect("approval sent");
            response.status().as_u16()
        }
    });

    // The library sleeps `interval` between polls; here its sleep moves the server's clock by
    // that much instead, so the test is quick and never polls too fast.
    let clock = app.clock.clone();
    let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = polls.clone();
    let sleep = move |interval: Duration| {
        let clock = clock.clone();
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            clock.advance(interval.as_secs() as i64);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, sleep, Some(Duration::from_secs(60)))
        .await
        .expect("the library gets the token response");
    assert_eq!(approval.await.unwrap(), 204);
    assert!(
        polls.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "it waited through authorization_pending"
    );
    assert_eq!(token.token_type(), &oauth_client::ApiKeyTokenType::ApiKey);
    let api_key = token.access_token().secret();
    let me = app.get("/v1/auth/me", Auth::ApiKey(api_key)).await;
    let me = me.expect(200);
    assert_eq!(me["user"]["id"], account.user_id.as_str());
    assert_eq!(me["auth"]["key_id"], token.key_id.as_str());
}
