// Key policies (issue 9, SPEC §4 "Key policies"): PATCH /v1/keys/{id}, enable/disable, scope
// narrowing, per-key rate limits (memory, database, Redis) and credits with refills.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use keyward_core::Clock;
use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers

fn session(account: &Account) -> Auth<'_> {
    Auth::Bearer(&account.access_token)
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} should be a string in {value}"))
}

async fn patch(app: &TestApp, auth: Auth<'_>, id: &str, body: Value) -> Reply {
    app.send(Method::PATCH, &format!("/v1/keys/{id}"), auth, Some(body))
        .await
}

/// `POST /v1/keys/verify` with a body of our own (e.g. a `cost`).
async fn verify_with(app: &TestApp, body: Value) -> Value {
    app.post("/v1/keys/verify", Auth::None, body)
        .await
        .expect(200)
        .clone()
}

/// Another instance on `a`'s database, with `a`'s clock, counting rate limits in `store`.
async fn instance_like(
    a: &TestApp,
    configure: impl FnOnce(&mut keyward_server::Settings),
) -> TestApp {
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: a.database_url(),
        ..Default::default()
    };
    settings.database.max_connections = 4;
    settings.rate_limits = generous_rate_limits();
    configure(&mut settings);
    spawn_with_clock(settings, a.clock.clone(), BACKEND, fresh_database().await).await
}

/// Redis for the multi-instance tests: `KEYWARD_TEST_REDIS_URL`, which CI sets.
fn redis_url() -> Option<String> {
    let url = std::env::var("KEYWARD_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        eprintln!("skipped: set KEYWARD_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379) to run the Redis rate-limit test");
    }
    url
}

// ---------------------------------------------------------------- PATCH

#[tokio::test]
async fn patch_renames_describes_and_sets_meta_and_null_clears_them() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "first", "description": "old", "meta": {"plan": "free"}}),
        )
        .await;
    let id = str_of(&created, "id");

    let reply = patch(
        &app,
        session(&account),
        id,
        json!({"name": "renamed", "description": "new words", "meta": {"plan": "pro"}}),
    )
    .await;
    let key = reply.expect(200);
    assert_eq!(key["name"], "renamed");
    assert_eq!(key["description"], "new words");
    assert_eq!(key["meta"], json!({"plan": "pro"}));
    assert!(
        key.get("key").is_none(),
        "a PATCH never shows the key: {key}"
    );
    assert_eq!(key["enabled"], true);

    // Absent fields stay; null clears.
    let reply = patch(
        &app,
        session(&account),
        id,
        json!({"description": null, "meta": null}),
    )
    .await;
    let key = reply.expect(200);
    assert_eq!(key["name"], "renamed");
    assert!(key["description"].is_null());
    assert!(key["meta"].is_null());
    let listed = app.get(&format!("/v1/keys/{id}"), session(&account)).await;
    assert_eq!(listed.expect(200)["name"], "renamed");
    // Verify hands out the new meta at once (the cache was told).
    let secret = str_of(&created, "key");
    let verified = app.verify(secret, None).await;
    assert_eq!(verified["code"], "VALID");
    assert!(
        verified.get("meta").is_none_or(Value::is_null),
        "{verified}"
    );

    // An empty PATCH changes nothing and answers the key.
    let same = patch(&app, session(&account), id, json!({})).await;
    assert_eq!(same.expect(200)["name"], "renamed");
}

#[tokio::test]
async fn a_disabled_key_answers_disabled_until_enabled_again() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app.create_key(&account, json!({"name": "svc"})).await;
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "key"));
    assert_eq!(app.verify(secret, None).await["code"], "VALID");

    let reply = patch(&app, session(&account), id, json!({"enabled": false})).await;
    let key = reply.expect(200);
    assert_eq!(key["enabled"], false);
    assert_eq!(key["status"], "active", "disabling is not revoking");

    let verified = app.verify(secret, None).await;
    assert_eq!(verified["code"], "DISABLED");
    assert_eq!(verified["valid"], false);
    assert_eq!(verified["key_id"], id);
    // As a credential: 401 invalid_api_key.
    app.get("/v1/auth/me", Auth::ApiKey(secret))
        .await
        .expect_problem(401, "invalid_api_key");

    patch(&app, session(&account), id, json!({"enabled": true}))
        .await
        .expect(200);
    assert_eq!(app.verify(secret, None).await["code"], "VALID");
    app.get("/v1/auth/me", Auth::ApiKey(secret))
        .await
        .expect(200);
}

#[tokio::test]
async fn scopes_can_only_be_narrowed() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "svc", "scopes": ["write", "inference:run"]}),
        )
        .await;
    let (id, secret) = (str_of(&created, "id"), str_of(&created, "key"));

    let reply = patch(&app, session(&account), id, json!({"scopes": ["read"]})).await;
    assert_eq!(reply.expect(200)["scopes"], json!(["read"]));
    let verified = app.verify(secret, Some(json!(["write"]))).await;
    assert_eq!(verified["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(
        app.verify(secret, Some(json!(["read"]))).await["code"],
        "VALID"
    );

    // Widening back is refused, and changes nothing.
    let reply = patch(&app, session(&account), id, json!({"scopes": ["write"]})).await;
    reply.expect_field_error("scopes");
    let reply = patch(
        &app,
        session(&account),
        id,
        json!({"scopes": ["inference:run"]}),
    )
    .await;
    reply.expect_field_error("scopes");
    let key = app.get(&format!("/v1/keys/{id}"), session(&account)).await;
    assert_eq!(key.expect(200)["scopes"], json!(["read"]));
}

#[tokio::test]
async fn patch_refuses_bad_input_other_owners_and_weaker_keys() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    let created = app.create_key(&ada, json!({"name": "svc"})).await;
    let id = str_of(&created, "id");

    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"enabled": "no"}), "enabled"),
        (
            json!({"rate_limit": {"requests": 0, "per_seconds": 60}}),
            "rate_limit",
        ),
        (
            json!({"rate_limit": {"requests": 5, "per_seconds": 86_401}}),
            "rate_limit",
        ),
        (json!({"rate_limit": {"requests": 5}}), "rate_limit"),
        (json!({"credits": {"remaining": -1}}), "credits"),
        (
            json!({"credits": {"remaining": 5, "refill": {"amount": 0, "interval": "daily"}}}),
            "credits",
        ),
        (
            json!({"credits": {"remaining": 5, "refill": {"amount": 5, "interval": "hourly"}}}),
            "credits.refill.interval",
        ),
        (json!({"meta": [1, 2]}), "meta"),
        (json!({"scopes": ["Bad Scope"]}), "scopes"),
        (json!({"id": "key_other"}), "id"),
        (json!({"key_hash": "00"}), "key_hash"),
    ] {
        let reply = patch(&app, session(&ada), id, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        reply.expect_field_error(field);
    }
    // Not JSON, no credential, another user's key, an unknown key.
    let reply = app
        .http
        .patch(app.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&ada.access_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    TestApp::read(reply)
        .await
        .expect_problem(400, "invalid_request");
    patch(&app, Auth::None, id, json!({"name": "x"}))
        .await
        .expect_problem(401, "missing_credentials");
    patch(&app, session(&bob), id, json!({"enabled": false}))
        .await
        .expect_problem(404, "not_found");
    patch(
        &app,
        session(&ada),
        "key_doesnotexist000000000000",
        json!({"enabled": false}),
    )
    .await
    .expect_problem(404, "not_found");

    // A read-only key may not change keys; a write key may not change a broader key.
    let reader = app
        .create_key(&ada, json!({"name": "reader", "scopes": ["read"]}))
        .await;
    patch(
        &app,
        Auth::ApiKey(str_of(&reader, "key")),
        id,
        json!({"name": "x"}),
    )
    .await
    .expect_problem(403, "insufficient_scope");
    let writer = app
        .create_key(&ada, json!({"name": "writer", "scopes": ["write"]}))
        .await;
    patch(
        &app,
        Auth::ApiKey(str_of(&writer, "key")),
        id,
        json!({"credits": null}),
    )
    .await
    .expect_problem(403, "insufficient_scope");
    // ...but may change itself.
    let writer_id = str_of(&writer, "id");
    patch(
        &app,
        Auth::ApiKey(str_of(&writer, "key")),
        writer_id,
        json!({"name": "w2"}),
    )
    .await
    .expect(200);

    // A revoked key cannot be changed.
    app.delete(&format!("/v1/keys/{id}"), session(&ada))
        .await
        .expect(204);
    patch(&app, session(&ada), id, json!({"enabled": true}))
        .await
        .expect_field_error("id");
    // Nothing was half-written by any refusal.
    let key = app.get(&format!("/v1/keys/{id}"), session(&ada)).await;
    let key = key.expect(200);
    assert_eq!(key["name"], "svc");
    assert_eq!(key["status"], "revoked");
    assert!(key["rate_limit"].is_null() && key["credits"].is_null());
}

#[tokio::test]
async fn a_change_is_audited() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app.create_key(&account, json!({"name": "svc"})).await;
    let id = str_of(&created, "id");
    patch(
        &app,
        session(&account),
        id,
        json!({"enabled": false, "rate_limit": {"requests": 5, "per_seconds": 1}}),
    )
    .await
    .expect(200);
    let audit = app.get("/v1/audit", session(&account)).await;
    let events = audit.expect(200)["events"].as_array().unwrap().clone();
    let updated = events
        .iter()
        .find(|event| event["type"] == "key.updated")
        .unwrap_or_else(|| panic!("no key.updated in {events:?}"));
    assert_eq!(updated["key_id"], id);
    assert_eq!(updated["detail"], "changed enabled, rate_limit");
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn verify_counts_a_rate_limit_and_answers_rate_limited_past_it() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "svc", "rate_limit": {"requests": 3, "per_seconds": 60}}),
        )
        .await;
    assert_eq!(
        created["rate_limit"],
        json!({"requests": 3, "per_seconds": 60})
    );
    let secret = str_of(&created, "key");
    for remaining in [2, 1, 0] {
        let verified = app.verify(secret, None).await;
        assert_eq!(verified["code"], "VALID", "{verified}");
        assert_eq!(verified["rate_limit"]["limit"], 3);
        assert_eq!(verified["rate_limit"]["remaining"], remaining);
        assert!(verified["rate_limit"]["reset"].as_i64().unwrap() > 0);
    }
    let limited = app.verify(secret, None).await;
    assert_eq!(limited["code"], "RATE_LIMITED");
    assert_eq!(limited["valid"], false);
    assert_eq!(limited["rate_limit"]["remaining"], 0);
    let reset = limited["rate_limit"]["reset"].as_i64().unwrap();
    assert!((1..=60).contains(&reset), "{limited}");
    // A check with cost 0 spends nothing, rate limit included.
    let free = verify_with(&app, json!({"key": secret, "cost": 0})).await;
    assert_eq!(free["code"], "VALID");

    // Removing the limit frees the key at once.
    let id = str_of(&created, "id");
    let reply = patch(&app, session(&account), id, json!({"rate_limit": null})).await;
    assert!(reply.expect(200)["rate_limit"].is_null());
    let verified = app.verify(secret, None).await;
    assert_eq!(verified["code"], "VALID");
    assert!(verified.get("rate_limit").is_none(), "{verified}");
}

#[tokio::test]
async fn the_api_answers_429_with_ratelimit_headers_to_a_limited_key() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "svc", "rate_limit": {"requests": 2, "per_seconds": 3600}}),
        )
        .await;
    let secret = str_of(&created, "key");
    for remaining in ["1", "0"] {
        let reply = app.get("/v1/auth/me", Auth::ApiKey(secret)).await;
        reply.expect(200);
        assert_eq!(reply.header("ratelimit-limit"), Some("2"));
        assert_eq!(reply.header("ratelimit-remaining"), Some(remaining));
        assert!(reply.header("ratelimit-reset").is_some());
    }
    let reply = app.get("/v1/keys", Auth::ApiKey(secret)).await;
    reply.expect_problem(429, "rate_limited");
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1..=1800).contains(&retry),
        "one request comes back every 30 minutes: {retry}"
    );
    assert_eq!(reply.header("ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header("ratelimit-limit"), Some("2"));
    // A key with no limit carries no such header.
    let free = app.create_key(&account, json!({"name": "free"})).await;
    let reply = app
        .get("/v1/auth/me", Auth::ApiKey(str_of(&free, "key")))
        .await;
    reply.expect(200);
    assert!(reply.header("ratelimit-limit").is_none());
}

/// Two instances hammer one key limited to 20 per minute: together they let exactly 20
/// through (the SPEC allows 10 % over).
async fn shared_limit_holds_across_instances(
    configure: impl Fn(&mut keyward_server::Settings) + Copy,
) {
    let a = spawn_app_with(configure).await;
    let b = instance_like(&a, configure).await;
    let account = a.register("ada@example.com").await;
    let created = a
        .create_key(
            &account,
            json!({"name": "svc", "rate_limit": {"requests": 20, "per_seconds": 60}}),
        )
        .await;
    let secret = str_of(&created, "key").to_owned();
    let mut calls = Vec::new();
    for i in 0..100 {
        let app = if i % 2 == 0 { &a } else { &b };
        calls.push(app.verify(&secret, None));
    }
    let answers = futures_util::future::join_all(calls).await;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for answer in &answers {
        *codes.entry(str_of(answer, "code").to_owned()).or_default() += 1;
    }
    let valid = codes.get("VALID").copied().unwrap_or(0);
    assert!((20..=22).contains(&valid), "{codes:?}");
    assert_eq!(
        valid + codes.get("RATE_LIMITED").copied().unwrap_or(0),
        100,
        "{codes:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_holds_across_instances_through_the_database() {
    shared_limit_holds_across_instances(|settings| {
        settings.keys.rate_limit_store = keyward_server::keylimits::RateLimitStore::Database;
    })
    .await;
}

#[tokio::test]
async fn a_rate_limit_holds_across_instances_through_redis() {
    let Some(url) = redis_url() else {
        return;
    };
    let url: &str = &url;
    shared_limit_holds_across_instances(|settings| {
        settings.redis_url = Some(url.to_owned());
    })
    .await;
}

#[tokio::test]
async fn redis_settings_are_checked_at_start() {
    let mut settings = keyward_server::Settings {
        redis_url: Some("http://127.0.0.1:6379".into()),
        ..Default::default()
    };
    let error = keyward_server::Config::from_settings(settings.clone()).unwrap_err();
    assert!(error.to_string().starts_with("redis_url:"), "{error}");
    settings.redis_url = None;
    settings.keys.rate_limit_store = keyward_server::keylimits::RateLimitStore::Redis;
    let error = keyward_server::Config::from_settings(settings).unwrap_err();
    assert!(
        error.to_string().starts_with("keys.rate_limit_store:"),
        "{error}"
    );
}

// ---------------------------------------------------------------- credits

#[tokio::test]
async fn verify_spends_credits_by_cost_and_never_below_zero() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "svc", "credits": {"remaining": 3}}),
        )
        .await;
    assert_eq!(created["credits"], json!({"remaining": 3}));
    let secret = str_of(&created, "key");
    let id = str_of(&created, "id");

    let spent = verify_with(&app, json!({"key": secret, "cost": 2})).await;
    assert_eq!(spent["code"], "VALID");
    assert_eq!(spent["credits"], json!({"remaining": 1}));
    let refused = verify_with(&app, json!({"key": secret, "cost": 2})).await;
    assert_eq!(refused["code"], "USAGE_EXCEEDED");
    assert_eq!(refused["valid"], false);
    assert_eq!(refused["credits"], json!({"remaining": 1}));
    let last = app.verify(secret, None).await;
    assert_eq!(last["code"], "VALID");
    assert_eq!(last["credits"], json!({"remaining": 0}));
    assert_eq!(app.verify(secret, None).await["code"], "USAGE_EXCEEDED");
    // Cost 0 checks the key without spending: still valid at zero.
    assert_eq!(
        verify_with(&app, json!({"key": secret, "cost": 0})).await["code"],
        "VALID"
    );
    let key = app.get(&format!("/v1/keys/{id}"), session(&account)).await;
    assert_eq!(key.expect(200)["credits"], json!({"remaining": 0}));

    for cost in [json!(-1), json!(1_000_001), json!("1"), json!(1.5)] {
        let reply = app
            .post(
                "/v1/keys/verify",
                Auth::None,
                json!({"key": secret, "cost": cost}),
            )
            .await;
        assert_eq!(reply.status, 422, "{cost}: {}", reply.text);
        reply.expect_field_error("cost");
    }

    // Topping up through PATCH, and removing credits altogether.
    let reply = patch(
        &app,
        session(&account),
        id,
        json!({"credits": {"remaining": 10}}),
    )
    .await;
    assert_eq!(reply.expect(200)["credits"]["remaining"], 10);
    assert_eq!(app.verify(secret, None).await["credits"]["remaining"], 9);
    patch(&app, session(&account), id, json!({"credits": null}))
        .await
        .expect(200);
    let unlimited = app.verify(secret, None).await;
    assert_eq!(unlimited["code"], "VALID");
    assert!(unlimited.get("credits").is_none(), "{unlimited}");
}

#[tokio::test]
async fn credits_refill_daily_at_midnight_and_monthly_on_the_first() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let daily = app
        .create_key(
            &account,
            json!({"name": "daily", "credits": {"remaining": 1, "refill": {"amount": 5, "interval": "daily"}}}),
        )
        .await;
    let monthly = app
        .create_key(
            &account,
            json!({"name": "monthly", "credits": {"remaining": 1, "refill": {"amount": 7, "interval": "monthly"}}}),
        )
        .await;
    for key in [&daily, &monthly] {
        let secret = str_of(key, "key");
        assert_eq!(app.verify(secret, None).await["credits"]["remaining"], 0);
        assert_eq!(app.verify(secret, None).await["code"], "USAGE_EXCEEDED");
    }
    // To one second past the next midnight (UTC).
    let now = app.clock.now().seconds();
    let to_midnight = 86_400 - now.rem_euclid(86_400) + 1;
    app.clock.advance(to_midnight);
    let verified = app.verify(str_of(&daily, "key"), None).await;
    assert_eq!(verified["code"], "VALID");
    assert_eq!(verified["credits"]["remaining"], 4);
    // The session's access token expired with the day: sign in again.
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": account.email, "password": PASSWORD}),
        )
        .await;
    let token = str_of(login.expect(200), "access_token").to_owned();
    let listed = app
        .get(
            &format!("/v1/keys/{}", str_of(&daily, "id")),
            Auth::Bearer(&token),
        )
        .await;
    assert_eq!(
        listed.expect(200)["credits"],
        json!({"remaining": 4, "refill": {"amount": 5, "interval": "daily"}})
    );
    // The monthly key waits for the 1st: 32 days from any midnight crosses one.
    let today = app.clock.now();
    let not_the_first = time::OffsetDateTime::from_unix_timestamp(today.seconds())
        .unwrap()
        .day()
        != 1;
    if not_the_first {
        assert_eq!(
            app.verify(str_of(&monthly, "key"), None).await["code"],
            "USAGE_EXCEEDED"
        );
    }
    app.clock.advance(32 * 86_400);
    let verified = app.verify(str_of(&monthly, "key"), None).await;
    assert_eq!(verified["code"], "VALID", "{verified}");
    assert_eq!(verified["credits"]["remaining"], 6);
}

/// 1,000 concurrent spends of one credit on a key with 100, through two instances on one
/// database: exactly 100 succeed.
#[tokio::test]
async fn credits_are_exact_across_instances() {
    let a = spawn_app().await;
    let b = instance_like(&a, |_| {}).await;
    let account = a.register("ada@example.com").await;
    let created = a
        .create_key(
            &account,
            json!({"name": "svc", "credits": {"remaining": 100}}),
        )
        .await;
    let secret = str_of(&created, "key").to_owned();
    let mut calls = Vec::new();
    for i in 0..1000 {
        let app = if i % 2 == 0 { &a } else { &b };
        calls.push(app.verify(&secret, None));
    }
    let answers = futures_util::stream::iter(calls)
        .buffer_unordered(64)
        .collect::<Vec<Value>>()
        .await;
    let valid = answers
        .iter()
        .filter(|answer| answer["code"] == "VALID")
        .count();
    let exceeded = answers
        .iter()
        .filter(|answer| answer["code"] == "USAGE_EXCEEDED")
        .count();
    assert_eq!((valid, exceeded), (100, 900));
    let left = a
        .get(
            &format!("/v1/keys/{}", str_of(&created, "id")),
            session(&account),
        )
        .await;
    assert_eq!(left.expect(200)["credits"]["remaining"], 0);
}
