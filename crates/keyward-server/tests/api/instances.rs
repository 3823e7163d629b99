// Several Keyward instances on one database (issue 3): one truth, whatever instance answers.
//
// Each test starts instance `a` on a fresh database and one or more others on the same database
// with the same clock (time moves for all of them at once) and the same `public_url` (the `iss`
// of their tokens).

use std::time::Duration;

use keyward_core::{Clock, TestClock};
use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers

/// The `public_url` of every instance: they are one service behind one address.
const PUBLIC_URL: &str = "http://keyward.test";

/// The first instance, on a fresh database.
async fn first_instance() -> TestApp {
    spawn_app_with(|settings| settings.public_url = Some(PUBLIC_URL.into())).await
}

/// Another instance on `a`'s database, sharing `a`'s clock.
async fn another_instance(a: &TestApp) -> TestApp {
    instance_on(a.database_url(), a.clock.clone()).await
}

/// An instance on the database at `database_url` with `clock`. `spawn_with_clock` wants a
/// database of its own to keep alive: an unused empty one, dropped with the instance.
async fn instance_on(database_url: String, clock: TestClock) -> TestApp {
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url,
        public_url: Some(PUBLIC_URL.into()),
        ..Default::default()
    };
    settings.database.max_connections = 4;
    spawn_with_clock(settings, clock, BACKEND, fresh_database().await).await
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} should be a string in {value}"))
}

fn key_path(id: &str) -> String {
    format!("/v1/keys/{id}")
}

async fn me(app: &TestApp, auth: Auth<'_>) -> Reply {
    app.get("/v1/auth/me", auth).await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Reply {
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": refresh_token}),
    )
    .await
}

async fn login(app: &TestApp, email: &str) -> (String, String) {
    let reply = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let body = reply.expect(200);
    (
        str_of(body, "access_token").to_owned(),
        str_of(body, "refresh_token").to_owned(),
    )
}

/// A 401 `code` for a credential that was presented (RFC 6750 `error="invalid_token"`).
fn expect_refused(reply: &Reply, code: &str) {
    reply.expect_problem(401, code);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge {challenge:?} for {code}"
    );
}

/// `app` accepts the access token as a session of `user_id`.
async fn expect_session(app: &TestApp, access_token: &str, user_id: &str) {
    let reply = me(app, Auth::Bearer(access_token)).await;
    let body = reply.expect(200);
    assert_eq!(body["user"]["id"], user_id, "{body}");
    assert_eq!(body["auth"]["method"], "session", "{body}");
}

/// `app` refuses the access token with 401 `invalid_token`.
async fn expect_token_refused(app: &TestApp, access_token: &str) {
    expect_refused(&me(app, Auth::Bearer(access_token)).await, "invalid_token");
}

/// The verify code `app` answers for `key`.
async fn verify_code(app: &TestApp, key: &str) -> String {
    let answer = app.verify(key, None).await;
    let code = str_of(&answer, "code").to_owned();
    assert_eq!(answer["valid"], code == "VALID", "{answer}");
    code
}

/// The `kid` in an access token's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let header: Value = serde_json::from_slice(&bytes).expect("JSON header");
    str_of(&header, "kid").to_owned()
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp.
fn epoch(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {text}: {e}"))
        .unix_timestamp()
}

// ---------------------------------------------------------------- API keys

#[tokio::test]
async fn a_key_made_on_one_instance_works_on_another_and_dies_everywhere_when_revoked() {
    let a = first_instance().await;
    let b = another_instance(&a).await;
    let account = a.register("ada@example.com").await;
    let session = Auth::Bearer(&account.access_token);

    for (maker, other) in [(&a, &b), (&b, &a)] {
        let created = maker.create_key(&account, json!({"name": "shared"})).await;
        let (id, secret) = (str_of(&created, "id"), str_of(&created, "key"));

        // Live on the other instance: verify, the API, and the key's own view.
        let answer = other.verify(secret, None).await;
        assert_eq!(answer["code"], "VALID", "{answer}");
        assert_eq!(answer["key_id"], id);
        assert_eq!(answer["user_id"], account.user_id.as_str());
        assert_eq!(answer["tenant_id"], account.tenant_id.as_str());
        let whoami = me(other, Auth::ApiKey(secret)).await;
        assert_eq!(whoami.expect(200)["auth"]["key_id"], id);
        let view = other.get(&key_path(id), session).await;
        assert_eq!(view.expect(200)["status"], "active");

        // Revoked on the maker: refused by the other on the very next request.
        maker.delete(&key_path(id), session).await.expect(204);
        assert_eq!(verify_code(other, secret).await, "REVOKED");
        me(other, Auth::ApiKey(secret))
            .await
            .expect_problem(401, "invalid_api_key");
        me(other, Auth::Bearer(secret))
            .await
            .expect_problem(401, "invalid_api_key");
        let view = other.get(&key_path(id), session).await;
        assert_eq!(view.expect(200)["status"], "revoked");
    }
}

/// The instance's verification cache, waited for until it serves (its change feed has
/// joined, within a few polls of the start).
async fn serving_cache(app: &TestApp) -> std::sync::Arc<keyward_core::KeyCache> {
    let cache = app
        .server
        .as_ref()
        .expect("running")
        .state
        .keys
        .cache()
        .clone();
    for _ in 0..200 {
        if cache.is_serving() {
            return cache;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the key cache never started serving");
}

#[tokio::test]
async fn a_starting_instance_loads_every_live_key_and_verifies_them_without_sql() {
    let a = first_instance().await;
    let account = a.register("ada@example.com").await;
    let mut secrets = Vec::new();
    for i in 0..5 {
        let created = a
            .create_key(&account, json!({"name": format!("k{i}")}))
            .await;
        secrets.push(str_of(&created, "key").to_owned());
    }
    let revoked = str_of(&a.create_key(&account, json!({"name": "gone"})).await, "id").to_owned();
    a.delete(&key_path(&revoked), Auth::Bearer(&account.access_token))
        .await
        .expect(204);

    let b = another_instance(&a).await;
    let cache = serving_cache(&b).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().entries < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "preload stalled: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cache.stats().entries, 5, "the revoked key is not loaded");
    for secret in &secrets {
        assert_eq!(verify_code(&b, secret).await, "VALID");
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses),
        (5, 0),
        "every first verify came from memory"
    );
}

#[tokio::test]
async fn a_cached_key_is_refused_everywhere_the_moment_it_is_revoked_or_rotated_under_load() {
    let a = first_instance().await;
    let b = another_instance(&a).await;
    let cache_a = serving_cache(&a).await;
    let cache_b = serving_cache(&b).await;
    let account = a.register("ada@example.com").await;
    let session = Auth::Bearer(&account.access_token);

    // Load on both instances all along: other keys verified from 4 tasks.
    let mut load_keys = Vec::new();
    for i in 0..3 {
        let created = a
            .create_key(&account, json!({"name": format!("load {i}")}))
            .await;
        load_keys.push(str_of(&created, "key").to_owned());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (n, app) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (url, http, keys, stop) = (
            app.url("/v1/keys/verify"),
            app.http.clone(),
            load_keys.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = &keys[(answered as usize + n) % keys.len()];
                let answer: Value = http
                    .post(&url)
                    .json(&json!({"key": key}))
                    .send()
                    .await
                    .expect("verify")
                    .json()
                    .await
                    .expect("json");
                assert_eq!(answer["code"], "VALID", "{answer}");
                answered += 1;
            }
            answered
        }));
    }

    for round in 0..6 {
        // Made on one instance, cached on both, ended on one of them.
        let (maker, ender) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let created = maker
            .create_key(&account, json!({"name": format!("round {round}")}))
            .await;
        let (id, secret) = (str_of(&created, "id"), str_of(&created, "key"));
        for app in [&a, &b] {
            for _ in 0..3 {
                assert_eq!(verify_code(app, secret).await, "VALID");
            }
        }
        let hits = (cache_a.stats().hits, cache_b.stats().hits);
        assert_eq!(verify_code(&a, secret).await, "VALID");
        assert_eq!(verify_code(&b, secret).await, "VALID");
        assert!(
            cache_a.stats().hits > hits.0 && cache_b.stats().hits > hits.1,
            "verified from memory"
        );

        if round < 4 {
            ender.delete(&key_path(id), session).await.expect(204);
            for app in [&b, &a] {
                assert_eq!(verify_code(app, secret).await, "REVOKED", "round {round}");
                me(app, Auth::ApiKey(secret))
                    .await
                    .expect_problem(401, "invalid_api_key");
            }
        } else {
            // A rotation with no grace ends the old key at once, everywhere.
            let rotated = ender
                .post(&format!("{}/rotate", key_path(id)), session, json!({}))
                .await;
            let new_secret = str_of(rotated.expect(201), "key").to_owned();
            for app in [&b, &a] {
                assert_eq!(verify_code(app, secret).await, "REVOKED", "round {round}");
                assert_eq!(verify_code(app, &new_secret).await, "VALID");
            }
        }
    }

    // A rotation with a grace period: the old key lives until then, on every instance.
    let created = a.create_key(&account, json!({"name": "graced"})).await;
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "key"));
    for app in [&a, &b] {
        assert_eq!(verify_code(app, secret).await, "VALID");
    }
    b.post(
        &format!("{}/rotate", key_path(id)),
        session,
        json!({"grace_period_seconds": 60}),
    )
    .await
    .expect(201);
    // 58, not 59: the wall clock under the TestClock may cross a second between the rotation
    // and these checks.
    a.clock.advance(58);
    for app in [&a, &b] {
        assert_eq!(verify_code(app, secret).await, "VALID");
    }
    a.clock.advance(2);
    for app in [&a, &b] {
        assert_eq!(verify_code(app, secret).await, "EXPIRED");
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        assert!(task.await.expect("load task") > 0, "the load ran");
    }
}

// ---------------------------------------------------------------- sessions and tokens

#[tokio::test]
async fn tokens_of_one_instance_are_accepted_by_another_until_logout_on_either() {
    let a = first_instance().await;
    let b = another_instance(&a).await;

    // One key set: both publish the same JWKS.
    let jwks_a = a.get("/.well-known/jwks.json", Auth::None).await;
    let jwks_b = b.get("/.well-known/jwks.json", Auth::None).await;
    assert_eq!(jwks_a.expect(200), jwks_b.expect(200));

    let account = a.register("ada@example.com").await;
    expect_session(&b, &account.access_token, &account.user_id).await;
    let (access_b, refresh_b) = login(&b, &account.email).await;
    expect_session(&a, &access_b, &account.user_id).await;
    // A refresh token from one instance spent on the other, and back.
    let renewed = refresh(&b, &account.refresh_token).await;
    let renewed = renewed.expect(200).clone();
    let renewed_access = str_of(&renewed, "access_token");
    expect_session(&a, renewed_access, &account.user_id).await;

    // Logged out through A: B refuses the session on its next request.
    a.send(
        Method::POST,
        "/v1/auth/logout",
        Auth::Bearer(renewed_access),
        None,
    )
    .await
    .expect(204);
    expect_token_refused(&b, renewed_access).await;
    expect_token_refused(&b, &account.access_token).await;
    expect_refused(
        &refresh(&b, str_of(&renewed, "refresh_token")).await,
        "invalid_token",
    );
    // The user's other session lives on, on both.
    expect_session(&a, &access_b, &account.user_id).await;
    expect_session(&b, &access_b, &account.user_id).await;

    // And the other way round: logged out through B, refused by A.
    b.send(
        Method::POST,
        "/v1/auth/logout",
        Auth::Bearer(&access_b),
        None,
    )
    .await
    .expect(204);
    expect_token_refused(&a, &access_b).await;
    expect_refused(&refresh(&a, &refresh_b).await, "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_on_an_empty_database_accept_each_others_tokens() {
    for round in 0..5 {
        let shared = fresh_database().await;
        let clock = TestClock::new();
        let (a, b) = tokio::join!(
            instance_on(shared.url.clone(), clock.clone()),
            instance_on(shared.url.clone(), clock.clone()),
        );

        let ada = a.register(&format!("ada{round}@example.com")).await;
        let bob = b.register(&format!("bob{round}@example.com")).await;
        for (app, account) in [(&a, &ada), (&b, &bob)] {
            // The issuer's own token, and the other instance's (whatever key each signs with).
            expect_session(&a, &account.access_token, &account.user_id).await;
            expect_session(&b, &account.access_token, &account.user_id).await;
            let renewed = refresh(app, &account.refresh_token).await;
            let renewed = str_of(renewed.expect(200), "access_token").to_owned();
            expect_session(&a, &renewed, &account.user_id).await;
            expect_session(&b, &renewed, &account.user_id).await;
        }
        if kid_of(&ada.access_token) != kid_of(&bob.access_token) {
            eprintln!("round {round}: the instances sign with different keys");
        }
        // The instances go before their database.
        drop((a, b));
        drop(shared);
    }
}

/// Adds a signing key to the database at `database_url` behind the running instances' backs, as
/// an instance starting (or rotating) elsewhere would; returns its `kid`.
async fn add_signing_key(database_url: &str, created_at: i64) -> String {
    use sqlx::Connection as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let kid = format!("added-{}", rand::random::<u32>());
    const INSERT: &str = "INSERT INTO signing_keys \
        (kid, private_key, public_key, created_at, retired_at) VALUES ($1, $2, $3, $4, NULL)";
    let (private, public) = (
        key.to_bytes().to_vec(),
        key.verifying_key().to_bytes().to_vec(),
    );
    let inserted = match BACKEND {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(database_url)
                .await
                .expect("open the SQLite database");
            sqlx::query(INSERT)
                .bind(&kid)
                .bind(private)
                .bind(public)
                .bind(created_at)
                .execute(&mut connection)
                .await
                .map(|done| done.rows_affected())
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(database_url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(INSERT)
                .bind(&kid)
                .bind(private)
                .bind(public)
                .bind(created_at)
                .execute(&mut connection)
                .await
                .map(|done| done.rows_affected())
        }
    };
    assert_eq!(inserted.expect("insert a signing key"), 1);
    kid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_learns_a_signing_key_another_instance_added_even_under_a_burst() {
    let a = first_instance().await;
    let account = a.register("ada@example.com").await;
    // A newer key appears in the database after A loaded its key set: B, starting now, signs
    // with it, and A has never seen it.
    let added = add_signing_key(&a.database_url(), a.clock.now().seconds() + 1).await;
    let b = another_instance(&a).await;
    let (access_b, _) = login(&b, &account.email).await;
    assert_eq!(kid_of(&access_b), added);
    let jwks = a.get("/.well-known/jwks.json", Auth::None).await;
    assert!(
        !jwks.expect(200).to_string().contains(&added),
        "precondition: A has not loaded the key yet (else the burst proves nothing): {}",
        jwks.text
    );

    // Many requests at once carry the unknown kid to A: every one is accepted (one reloads the
    // key set, the others wait for it rather than refuse).
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let request = a.http.get(a.url("/v1/auth/me")).bearer_auth(&access_b);
            tokio::spawn(async move { TestApp::read(request.send().await.expect("sent")).await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.expect("task");
        assert_eq!(reply.expect(200)["user"]["id"], account.user_id.as_str());
    }
    // A now publishes the key too, and B accepts A's tokens (A still signs with its own key).
    let jwks = a.get("/.well-known/jwks.json", Auth::None).await;
    assert!(
        jwks.expect(200).to_string().contains(&added),
        "{}",
        jwks.text
    );
    expect_session(&b, &account.access_token, &account.user_id).await;
}

/// Presents one refresh token to `first` and `second` at the same moment; asserts one 200 and
/// one 401 `invalid_token`; returns the winner's body and the loser.
async fn race_refresh<'a>(
    first: &'a TestApp,
    second: &'a TestApp,
    token: &str,
) -> (Value, &'a TestApp) {
    let (one, two) = tokio::join!(refresh(first, token), refresh(second, token));
    match [one.status.as_u16(), two.status.as_u16()] {
        [200, 401] => {
            expect_refused(&two, "invalid_token");
            (one.body, second)
        }
        [401, 200] => {
            expect_refused(&one, "invalid_token");
            (two.body, first)
        }
        other => panic!("{other:?}: {} / {}", one.text, two.text),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_raced_on_two_instances_has_one_winner_and_the_session_survives() {
    let a = first_instance().await;
    let b = another_instance(&a).await;
    let account = a.register("ada@example.com").await;
    let mut token = account.refresh_token.clone();
    for round in 0..5 {
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (winner, _) = race_refresh(first, second, &token).await;
        // Inside the grace window the loser's refusal did not end the session.
        let access = str_of(&winner, "access_token");
        expect_session(&a, access, &account.user_id).await;
        expect_session(&b, access, &account.user_id).await;
        token = str_of(&winner, "refresh_token").to_owned();
    }
    // The last winner's refresh token works (once), on either instance.
    let last = refresh(&b, &token).await;
    let last = last.expect(200).clone();
    expect_refused(&refresh(&a, &token).await, "invalid_token");
    refresh(&a, str_of(&last, "refresh_token"))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_after_the_grace_window_revokes_the_session_on_every_instance() {
    let a = first_instance().await;
    let b = another_instance(&a).await;
    let account = a.register("ada@example.com").await;
    let (other_access, other_refresh) = login(&b, &account.email).await;

    let (winner, loser) = race_refresh(&a, &b, &account.refresh_token).await;
    let (access, fresh) = (
        str_of(&winner, "access_token"),
        str_of(&winner, "refresh_token"),
    );
    expect_session(&a, access, &account.user_id).await;
    expect_session(&b, access, &account.user_id).await;

    // Past the grace window on the shared clock, the spent token comes back on the instance
    // that lost the race: a replay, and the whole session ends, on both instances.
    a.clock.advance(11);
    expect_refused(
        &refresh(loser, &account.refresh_token).await,
        "invalid_token",
    );
    for app in [&a, &b] {
        expect_token_refused(app, access).await;
        expect_token_refused(app, &account.access_token).await;
    }
    expect_refused(&refresh(&a, fresh).await, "invalid_token");
    expect_refused(&refresh(&b, fresh).await, "invalid_token");

    // Only that session: the user's other one lives on.
    expect_session(&a, &other_access, &account.user_id).await;
    expect_session(&b, &other_access, &account.user_id).await;
    refresh(&a, &other_refresh).await.expect(200);
}

// ---------------------------------------------------------------- the key limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_limit_holds_when_creates_race_across_instances() {
    let a = first_instance().await;
    let b = another_instance(&a).await;
    let account = a.register("ada@example.com").await;

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            let request = app
                .http
                .post(app.url("/v1/keys"))
                .bearer_auth(&account.access_token)
                .json(&json!({"name": format!("racer {i}")}));
            tokio::spawn(async move { TestApp::read(request.send().await.expect("sent")).await })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for task in tasks {
        let reply = task.await.expect("task");
        match reply.status.as_u16() {
            201 => created += 1,
            _ => {
                reply.expect_problem(409, "key_limit_reached");
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (10, 10));
    for app in [&a, &b] {
        let listed = app
            .get("/v1/keys", Auth::Bearer(&account.access_token))
            .await;
        let keys = listed.expect(200)["keys"].as_array().expect("keys[]").len();
        assert_eq!(keys, 10);
    }
}

// ---------------------------------------------------------------- last_used_at

/// `last_used_at` of key `id` as `app` shows it.
async fn last_used(app: &TestApp, account: &Account, id: &str) -> Value {
    let reply = app
        .get(&key_path(id), Auth::Bearer(&account.access_token))
        .await;
    reply.expect(200)["last_used_at"].clone()
}

/// Polls `app` every 200 ms for up to 5 s until `last_used_at` differs from `previous`.
async fn wait_for_last_used(app: &TestApp, account: &Account, id: &str, previous: &Value) -> Value {
    for _ in 0..25 {
        let current = last_used(app, account, id).await;
        if &current != previous {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("last_used_at stayed {previous} for 5 s");
}

/// Uses `key` through `app` three ways: verify, `/v1/auth/me`, `GET /v1/keys`.
async fn use_key(app: &TestApp, key: &str) {
    assert_eq!(verify_code(app, key).await, "VALID");
    me(app, Auth::ApiKey(key)).await.expect(200);
    app.get("/v1/keys", Auth::ApiKey(key)).await.expect(200);
}

#[tokio::test]
async fn last_used_at_is_written_at_most_once_a_minute_per_key_across_instances() {
    let a = first_instance().await;
    let b = another_instance(&a).await;
    let account = a.register("ada@example.com").await;
    let created = a.create_key(&account, json!({"name": "used"})).await;
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "key"));
    assert!(last_used(&b, &account, id).await.is_null());

    // Used through both instances: the first use shows within a few seconds, on both.
    let first_use = a.clock.now().seconds();
    for _ in 0..3 {
        use_key(&a, secret).await;
        use_key(&b, secret).await;
    }
    let first = wait_for_last_used(&b, &account, id, &Value::Null).await;
    let first_at = epoch(&first);
    assert!(
        (first_use..=a.clock.now().seconds()).contains(&first_at),
        "{first} vs {first_use}"
    );

    // Later in the same minute, more uses through either instance leave it alone, however many
    // flushes (once a second on each) go by.
    a.clock.advance(30);
    for _ in 0..3 {
        use_key(&b, secret).await;
        use_key(&a, secret).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(last_used(&a, &account, id).await, first);
    assert_eq!(last_used(&b, &account, id).await, first);

    // Past the minute, a use through B shows (on A too).
    a.clock.advance(61);
    use_key(&b, secret).await;
    let second = wait_for_last_used(&a, &account, id, &first).await;
    assert!(
        epoch(&second) >= first_at + 91,
        "{second} should be ≥ 91 s after {first}"
    );
    // And that value in turn holds for the rest of its minute, whoever serves the uses.
    a.clock.advance(20);
    use_key(&a, secret).await;
    use_key(&b, secret).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(last_used(&b, &account, id).await, second);
}
