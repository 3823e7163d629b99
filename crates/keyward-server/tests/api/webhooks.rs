// Webhooks (issue 9): the API and its refusals, Standard Webhooks signatures checked by an
// independent implementation (the `standardwebhooks` crate), retries driven by the TestClock,
// the SSRF guard, deletion, delivery after a restart, and the events of sessions and expiry.

use serde_json::{json, Value};

use super::kit::*;

const ALL_EVENTS: [&str; 7] = [
    "key.created",
    "key.revoked",
    "key.rotated",
    "key.expiring",
    "key.leaked",
    "credits.low",
    "session.reuse_detected",
];

async fn hooks_app() -> TestApp {
    spawn_app_with(webhook_settings).await
}

/// Waits until the newest delivery of the webhook has `count` attempts recorded (so the next
/// one is scheduled from the clock as it was), and returns the list.
async fn attempts_recorded(
    app: &TestApp,
    account: &Account,
    webhook_id: &str,
    count: usize,
) -> Vec<Value> {
    app.deliveries_until(account, webhook_id, |list| {
        list.first()
            .is_some_and(|d| d["attempts"].as_array().unwrap().len() == count)
    })
    .await
}

/// Checks a delivery with the `standardwebhooks` crate: the signature over id, timestamp and
/// body with the secret, and (with `fresh`) the timestamp against this machine's clock.
fn assert_signed(received: &Received, secret: &str, fresh: bool) {
    let webhook = standardwebhooks::Webhook::new(secret).expect("a Standard Webhooks secret");
    if fresh {
        webhook
            .verify(received.body.as_bytes(), &received.headers)
            .expect("a valid Standard Webhooks signature");
    } else {
        // The TestClock has moved past the crate's 5-minute tolerance: check the signature
        // alone, as the crate computes it.
        let timestamp: i64 = received.header("webhook-timestamp").parse().unwrap();
        let expected = webhook
            .sign(
                received.header("webhook-id"),
                timestamp,
                received.body.as_bytes(),
            )
            .unwrap();
        assert_eq!(received.header("webhook-signature"), expected);
    }
}

/// Waits (at most 5 s) until `/metrics` has `line`: the counter moves just after the attempt
/// is recorded.
async fn metrics_show(app: &TestApp, line: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = app.get("/metrics", Auth::None).await.text;
        if metrics.contains(line) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{line} not in {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn webhooks_are_created_listed_and_deleted_by_their_owner_only() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    let ada_session = Auth::Bearer(&ada.access_token);

    let created = app
        .post(
            "/v1/webhooks",
            ada_session,
            json!({"url": "https://hooks.example.com/keyward", "events": ["key.revoked", "key.created"]}),
        )
        .await;
    let body = created.expect(201);
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whk_"), "{id}");
    assert_eq!(body["url"], "https://hooks.example.com/keyward");
    assert_eq!(body["events"], json!(["key.created", "key.revoked"]));
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let secret = body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(standardwebhooks::Webhook::new(secret).is_ok());

    let listed = app.get("/v1/webhooks", ada_session).await;
    let webhooks = listed.expect(200)["webhooks"].as_array().unwrap().clone();
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0]["id"], id.as_str());
    assert!(webhooks[0].get("secret").is_none(), "{}", listed.text);
    assert!(!listed.text.contains(&secret[6..]));

    // Bob sees none of it, and Ada's id is 404 for him.
    let bob_session = Auth::Bearer(&bob.access_token);
    assert_eq!(
        app.get("/v1/webhooks", bob_session).await.expect(200)["webhooks"],
        json!([])
    );
    app.delete(&format!("/v1/webhooks/{id}"), bob_session)
        .await
        .expect_problem(404, "not_found");
    app.get(&format!("/v1/webhooks/{id}/deliveries"), bob_session)
        .await
        .expect_problem(404, "not_found");

    // An API key, even an admin one, may not manage webhooks; no credential at all is 401.
    let key = app.create_key(&ada, json!({"name": "admin"})).await;
    let key = Auth::ApiKey(key["key"].as_str().unwrap());
    app.post(
        "/v1/webhooks",
        key,
        json!({"url": "https://example.com", "events": ["key.created"]}),
    )
    .await
    .expect_problem(403, "session_required");
    app.get("/v1/webhooks", key)
        .await
        .expect_problem(403, "session_required");
    app.delete(&format!("/v1/webhooks/{id}"), key)
        .await
        .expect_problem(403, "session_required");
    app.get(&format!("/v1/webhooks/{id}/deliveries"), key)
        .await
        .expect_problem(403, "session_required");
    app.get("/v1/webhooks", Auth::None)
        .await
        .expect_problem(401, "missing_credentials");

    // The deliveries query.
    for query in ["limit=0", "limit=101", "limit=x", "cursor=1"] {
        app.get(
            &format!("/v1/webhooks/{id}/deliveries?{query}"),
            ada_session,
        )
        .await
        .expect_problem(422, "validation_failed");
    }
    app.get(
        &format!("/v1/webhooks/{id}/deliveries?limit=5"),
        ada_session,
    )
    .await
    .expect(200);

    app.delete(&format!("/v1/webhooks/{id}"), ada_session)
        .await
        .expect(204);
    app.delete(&format!("/v1/webhooks/{id}"), ada_session)
        .await
        .expect_problem(404, "not_found");
    app.get(&format!("/v1/webhooks/{id}/deliveries"), ada_session)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn bad_webhooks_are_422_naming_the_field() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let session = Auth::Bearer(&ada.access_token);
    let long = format!("https://example.com/{}", "a".repeat(2048));
    for (body, field) in [
        (
            json!({"url": "example.com/hook", "events": ["key.created"]}),
            "url",
        ),
        (
            json!({"url": "ftp://example.com/", "events": ["key.created"]}),
            "url",
        ),
        (json!({"url": "https://", "events": ["key.created"]}), "url"),
        (
            json!({"url": "https://u:p@example.com/", "events": ["key.created"]}),
            "url",
        ),
        (json!({"url": long, "events": ["key.created"]}), "url"),
        (
            json!({"url": "https://example.com", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com", "events": ["key.deleted"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com", "events": "key.created"}),
            "events",
        ),
        (json!({"url": "https://example.com"}), "events"),
        (json!({"events": ["key.created"]}), "url"),
        (
            json!({"url": "https://example.com", "events": ["key.created"], "secret": "whsec_mine"}),
            "secret",
        ),
    ] {
        let reply = app.post("/v1/webhooks", session, body.clone()).await;
        reply.expect_field_error(field);
    }
    // Ten webhooks a user; the eleventh is refused, naming `url`.
    for n in 0..10 {
        app.create_webhook(&ada, &format!("https://example.com/{n}"), &ALL_EVENTS)
            .await;
    }
    app.post(
        "/v1/webhooks",
        session,
        json!({"url": "https://example.com/11", "events": ["key.created"]}),
    )
    .await
    .expect_field_error("url");
    assert_eq!(
        app.get("/v1/webhooks", session).await.expect(200)["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test]
async fn key_events_are_delivered_signed_with_ids_and_never_secrets() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    let webhook = app
        .create_webhook(
            &ada,
            &hooks.url,
            &["key.created", "key.rotated", "key.revoked"],
        )
        .await;
    let secret = webhook["secret"].as_str().unwrap();
    let webhook_id = webhook["id"].as_str().unwrap();
    // An event no webhook subscribes to sends nothing.
    let other = receiver(&[]).await;
    app.create_webhook(&ada, &other.url, &["credits.low"]).await;

    let created = app.create_key(&ada, json!({"name": "ci"})).await;
    let key_id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    let rotated = app
        .post(
            &format!("/v1/keys/{key_id}/rotate"),
            Auth::Bearer(&ada.access_token),
            json!({}),
        )
        .await;
    let new_id = rotated.expect(201)["id"].as_str().unwrap().to_owned();
    let new_key = rotated.body["key"].as_str().unwrap().to_owned();
    app.delete(
        &format!("/v1/keys/{new_id}"),
        Auth::Bearer(&ada.access_token),
    )
    .await
    .expect(204);

    let received = hooks.wait_for(3).await;
    let types: Vec<String> = received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(sorted, ["key.created", "key.revoked", "key.rotated"]);
    for delivery in &received {
        assert_signed(delivery, secret, true);
        assert!(delivery.header("webhook-id").starts_with("msg_"));
        assert_eq!(
            delivery.header("content-type"),
            "application/json",
            "{:?}",
            delivery.headers
        );
        assert!(!delivery.body.contains(&key), "{}", delivery.body);
        assert!(!delivery.body.contains(&new_key), "{}", delivery.body);
        let payload = delivery.json();
        assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
        let data = &payload["data"];
        assert_eq!(data["tenant_id"], ada.tenant_id.as_str());
        assert_eq!(data["user_id"], ada.user_id.as_str());
        assert_eq!(data["name"], "ci");
        match payload["type"].as_str().unwrap() {
            "key.created" => assert_eq!(data["key_id"], key_id.as_str()),
            "key.rotated" => {
                assert_eq!(data["key_id"], key_id.as_str());
                assert_eq!(data["new_key_id"], new_id.as_str());
            }
            "key.revoked" => assert_eq!(data["key_id"], new_id.as_str()),
            other => panic!("{other}"),
        }
    }
    // A wrong secret does not verify.
    let wrong = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(wrong
        .verify(received[0].body.as_bytes(), &received[0].headers)
        .is_err());

    // Each delivery is listed, newest first, delivered after one attempt with its status.
    let deliveries = app
        .deliveries_until(&ada, webhook_id, |list| {
            list.len() == 3 && list.iter().all(|d| d["status"] == "delivered")
        })
        .await;
    // Newest first; the ids are the `webhook-id`s sent (attempts of one poll go out at once,
    // so the arrival order is not the creation order).
    let events: Vec<&str> = deliveries
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["key.revoked", "key.rotated", "key.created"]);
    let ids: std::collections::BTreeSet<&str> = deliveries
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let sent: std::collections::BTreeSet<&str> =
        received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, sent);
    for delivery in &deliveries {
        assert_eq!(delivery["next_attempt_at"], Value::Null);
        let attempts = delivery["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["status_code"], 200);
        assert_eq!(attempts[0]["error"], Value::Null);
        assert!(attempts[0]["duration_ms"].as_i64().unwrap() >= 0);
    }
    assert!(other.received().is_empty());
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_the_schedule_until_it_answers() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[500, 503]).await;
    let webhook = app.create_webhook(&ada, &hooks.url, &["key.created"]).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let secret = webhook["secret"].as_str().unwrap();
    app.create_key(&ada, json!({"name": "ci"})).await;

    // First attempt at once: 500. The next is due 5 s later, and not before.
    hooks.wait_for(1).await;
    let list = attempts_recorded(&app, &ada, webhook_id, 1).await;
    assert_eq!(list[0]["status"], "pending");
    let attempt = &list[0]["attempts"][0];
    assert_eq!(attempt["status_code"], 500);
    assert!(attempt["error"].as_str().unwrap().contains("500"));
    let first_at = attempt["at"].as_str().unwrap().to_owned();
    let due = list[0]["next_attempt_at"].as_str().unwrap().to_owned();
    assert!(due > first_at, "{due} after {first_at}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(hooks.received().len(), 1, "no retry before its time");

    // 5 s later: 503, then 5 minutes.
    app.clock.advance(5);
    hooks.wait_for(2).await;
    attempts_recorded(&app, &ada, webhook_id, 2).await;
    assert_eq!(hooks.received().len(), 2);
    app.clock.advance(60);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        hooks.received().len(),
        2,
        "the third attempt waits 5 minutes"
    );
    app.clock.advance(240);
    let received = hooks.wait_for(3).await;

    // The same message each time: one id, one body, each attempt signed anew.
    for attempt in &received {
        assert_eq!(
            attempt.header("webhook-id"),
            received[0].header("webhook-id")
        );
        assert_eq!(attempt.body, received[0].body);
    }
    assert_signed(&received[0], secret, true);
    assert_signed(&received[1], secret, true);
    assert_signed(&received[2], secret, false);
    assert!(
        received[2]
            .header("webhook-timestamp")
            .parse::<i64>()
            .unwrap()
            >= received[0]
                .header("webhook-timestamp")
                .parse::<i64>()
                .unwrap()
                + 305
    );

    let list = app
        .deliveries_until(&ada, webhook_id, |list| {
            list.first().is_some_and(|d| d["status"] == "delivered")
        })
        .await;
    for line in [
        r#"keyward_webhook_attempts_total{outcome="retrying"} 2"#,
        r#"keyward_webhook_attempts_total{outcome="delivered"} 1"#,
    ] {
        metrics_show(&app, line).await;
    }
    let codes: Vec<&Value> = list[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(503), &json!(200)]);
    assert_eq!(list[0]["next_attempt_at"], Value::Null);
}

#[tokio::test]
async fn a_delivery_that_fails_every_attempt_ends_failed() {
    // Access tokens that outlive the first 7 attempts (17.6 h of TestClock time).
    let app = spawn_app_with(|settings| {
        webhook_settings(settings);
        settings.sessions.access_token_ttl_seconds = 86_400;
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[500; 20]).await;
    let webhook = app.create_webhook(&ada, &hooks.url, &["key.created"]).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    app.create_key(&ada, json!({"name": "ci"})).await;
    // 8 attempts: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h later.
    for (attempt, wait) in [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
        .into_iter()
        .enumerate()
    {
        app.clock.advance(wait);
        hooks.wait_for(attempt + 1).await;
        if attempt < 7 {
            attempts_recorded(&app, &ada, webhook_id, attempt + 1).await;
        }
    }
    // 27.5 h later: a new session to look.
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": ada.email, "password": PASSWORD}),
        )
        .await;
    let ada = Account {
        access_token: login.expect(200)["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        ..ada
    };
    let list = app
        .deliveries_until(&ada, webhook_id, |list| {
            list.first().is_some_and(|d| d["status"] != "pending")
        })
        .await;
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["attempts"].as_array().unwrap().len(), 8);
    metrics_show(
        &app,
        r#"keyward_webhook_attempts_total{outcome="failed"} 1"#,
    )
    .await;
    assert_eq!(list[0]["next_attempt_at"], Value::Null);
    // Nothing more, however long we wait.
    app.clock.advance(7 * 86_400);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(hooks.received().len(), 8);
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_targets_and_records_the_attempt() {
    // Default settings: private targets refused.
    let app = spawn_app_with(|settings| settings.webhooks.poll_interval_ms = 50).await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    let localhost = hooks.url.replace("127.0.0.1", "localhost");
    let mut ids = Vec::new();
    for url in [
        hooks.url.as_str(),
        localhost.as_str(),
        "http://[::1]:9/x",
        "http://169.254.169.254/latest",
    ] {
        let webhook = app.create_webhook(&ada, url, &["key.created"]).await;
        ids.push(webhook["id"].as_str().unwrap().to_owned());
    }
    app.create_key(&ada, json!({"name": "ci"})).await;
    for id in &ids {
        let list = app
            .deliveries_until(&ada, id, |list| {
                list.first()
                    .is_some_and(|d| !d["attempts"].as_array().unwrap().is_empty())
            })
            .await;
        let attempt = &list[0]["attempts"][0];
        assert_eq!(attempt["status_code"], Value::Null);
        assert!(
            attempt["error"].as_str().unwrap().contains("refused"),
            "{attempt}"
        );
        // Refusals follow the schedule like any failure: no retry storm.
        assert_eq!(list[0]["status"], "pending");
        assert!(list[0]["next_attempt_at"].is_string());
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(hooks.received().is_empty(), "the receiver was reached");
}

#[tokio::test]
async fn deleting_a_webhook_stops_its_pending_deliveries() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[500]).await;
    let webhook = app.create_webhook(&ada, &hooks.url, &["key.created"]).await;
    let webhook_id = webhook["id"].as_str().unwrap();
    app.create_key(&ada, json!({"name": "ci"})).await;
    hooks.wait_for(1).await;
    attempts_recorded(&app, &ada, webhook_id, 1).await;
    app.delete(
        &format!("/v1/webhooks/{webhook_id}"),
        Auth::Bearer(&ada.access_token),
    )
    .await
    .expect(204);
    app.clock.advance(3_600);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        hooks.received().len(),
        1,
        "a deleted webhook's retry was sent"
    );
    let left = app
        .sql_strings("SELECT CAST(COUNT(*) AS TEXT) FROM webhook_deliveries")
        .await;
    assert_eq!(left, ["0"]);
}

#[tokio::test]
async fn a_pending_delivery_is_sent_by_the_next_server_on_the_database() {
    // The first server never gets to send: its dispatcher polls once an hour.
    let mut first = spawn_app_with(|settings| {
        webhook_settings(settings);
        settings.webhooks.poll_interval_ms = 3_600_000 / 60;
    })
    .await;
    let ada = first.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    let webhook = first
        .create_webhook(&ada, &hooks.url, &["key.created"])
        .await;
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    first.create_key(&ada, json!({"name": "ci"})).await;
    let pending = first
        .deliveries_until(&ada, &webhook_id, |list| list.len() == 1)
        .await;
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(pending[0]["attempts"], json!([]));
    let url = first.database_url();
    first.server.take().unwrap().stop().await.unwrap();
    assert!(hooks.received().is_empty());

    let second = spawn_app_with(|settings| {
        webhook_settings(settings);
        settings.database_url = url;
    })
    .await;
    let received = hooks.wait_for(1).await;
    assert_eq!(
        received[0].header("webhook-id"),
        pending[0]["id"].as_str().unwrap()
    );
    assert_signed(&received[0], &secret, true);
    let login = second
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": ada.email, "password": PASSWORD}),
        )
        .await;
    let ada = Account {
        access_token: login.expect(200)["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        ..ada
    };
    let list = second
        .deliveries_until(&ada, &webhook_id, |list| {
            list.first().is_some_and(|d| d["status"] == "delivered")
        })
        .await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn refresh_token_reuse_and_expiring_keys_fire_their_events() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    app.create_webhook(
        &ada,
        &hooks.url,
        &["session.reuse_detected", "key.expiring"],
    )
    .await;

    // A spent refresh token presented again after the grace period: the session ends.
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": ada.refresh_token}),
    )
    .await
    .expect(200);
    app.clock.advance(11);
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": ada.refresh_token}),
    )
    .await
    .expect_problem(401, "invalid_token");
    let received = hooks.wait_for(1).await;
    let payload = received[0].json();
    assert_eq!(payload["type"], "session.reuse_detected");
    assert!(payload["data"]["session_id"]
        .as_str()
        .unwrap()
        .starts_with("ses_"));
    assert_eq!(payload["data"]["user_id"], ada.user_id.as_str());

    // A key expiring within 7 days is announced once; one expiring in 30 days is not (yet).
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": ada.email, "password": PASSWORD}),
        )
        .await;
    let ada = Account {
        access_token: login.expect(200)["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        ..ada
    };
    let soon = app
        .create_key(&ada, json!({"name": "soon", "expires_in_days": 3}))
        .await;
    app.create_key(&ada, json!({"name": "later", "expires_in_days": 30}))
        .await;
    let received = hooks.wait_for(2).await;
    let payload = received[1].json();
    assert_eq!(payload["type"], "key.expiring");
    assert_eq!(payload["data"]["key_id"], soon["id"]);
    assert_eq!(payload["data"]["expires_at"], soon["expires_at"]);
    // Scans go on (every 30 polls); the key is not announced again.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(hooks.received().len(), 2);
    // 24 days later the other key is within 7 days of its end.
    app.clock.advance(24 * 86_400);
    let received = hooks.wait_for(3).await;
    assert_eq!(received[2].json()["data"]["name"], "later");
}

#[tokio::test]
async fn instances_sharing_a_database_make_each_attempt_once() {
    let a = hooks_app().await;
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: a.database_url(),
        ..Default::default()
    };
    settings.database.max_connections = 4;
    settings.rate_limits = generous_rate_limits();
    webhook_settings(&mut settings);
    let _b = spawn_with_clock(settings, a.clock.clone(), BACKEND, fresh_database().await).await;
    let ada = a.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    a.create_webhook(&ada, &hooks.url, &["key.created"]).await;
    for n in 0..10 {
        a.create_key(&ada, json!({"name": format!("k{n}")})).await;
    }
    hooks.wait_for(10).await;
    // Both dispatchers keep polling: nothing is sent twice.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let received = hooks.received();
    let ids: std::collections::BTreeSet<&str> =
        received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(received.len(), 10, "{ids:?}");
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn finished_deliveries_are_deleted_after_30_days_and_pending_ones_kept() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let ok = receiver(&[]).await;
    let failing = receiver(&[500; 20]).await;
    let delivered = app.create_webhook(&ada, &ok.url, &["key.created"]).await;
    let pending = app
        .create_webhook(&ada, &failing.url, &["key.created"])
        .await;
    let (delivered, pending) = (
        delivered["id"].as_str().unwrap(),
        pending["id"].as_str().unwrap(),
    );
    app.create_key(&ada, json!({"name": "ci"})).await;
    app.deliveries_until(&ada, delivered, |list| {
        list.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    attempts_recorded(&app, &ada, pending, 1).await;

    let webhooks = app.server.as_ref().unwrap().state.webhooks.clone();
    app.clock.advance(29 * 86_400);
    assert_eq!(webhooks.prune().await.unwrap(), 0);
    app.clock.advance(2 * 86_400);
    assert_eq!(webhooks.prune().await.unwrap(), 1);
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": ada.email, "password": PASSWORD}),
        )
        .await;
    let ada = Account {
        access_token: login.expect(200)["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        ..ada
    };
    app.deliveries_until(&ada, delivered, <[Value]>::is_empty)
        .await;
    let left = app
        .deliveries_until(&ada, pending, |list| list.len() == 1)
        .await;
    assert_ne!(left[0]["status"], "delivered");
}

#[tokio::test]
async fn the_device_logins_key_is_announced_as_created() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    app.create_webhook(&ada, &hooks.url, &["key.created"]).await;
    let code = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await;
    let device_code = code.expect(200)["device_code"].as_str().unwrap().to_owned();
    let user_code = code.body["user_code"].as_str().unwrap().to_owned();
    app.post(
        "/v1/auth/device/approve",
        Auth::Bearer(&ada.access_token),
        json!({"user_code": user_code, "approve": true}),
    )
    .await
    .expect(204);
    let token = app
        .post(
            "/v1/auth/device/token",
            Auth::None,
            json!({"device_code": device_code, "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}),
        )
        .await;
    let key_id = token.expect(200)["key_id"].as_str().unwrap().to_owned();
    let received = hooks.wait_for(1).await;
    let payload = received[0].json();
    assert_eq!(payload["type"], "key.created");
    assert_eq!(payload["data"]["key_id"], key_id.as_str());
    assert_eq!(payload["data"]["name"], "cli");
}

#[tokio::test]
async fn credits_low_fires_once_when_a_spend_leaves_under_ten_percent() {
    let app = hooks_app().await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    app.create_webhook(&ada, &hooks.url, &["credits.low"]).await;
    let created = app
        .create_key(
            &ada,
            json!({"name": "metered", "credits": {"remaining": 20}}),
        )
        .await;
    let secret = created["key"].as_str().unwrap();
    let spend = |cost: i64| {
        app.post(
            "/v1/keys/verify",
            Auth::None,
            json!({"key": secret, "cost": cost}),
        )
    };
    // 20 → 3: still 15 %; → 1: under 10 %, once; → 0: no second event.
    assert_eq!(spend(17).await.expect(200)["credits"]["remaining"], 3);
    assert_eq!(spend(2).await.expect(200)["credits"]["remaining"], 1);
    assert_eq!(spend(1).await.expect(200)["credits"]["remaining"], 0);
    let received = hooks.wait_for(1).await;
    let payload = received[0].json();
    assert_eq!(payload["type"], "credits.low");
    assert_eq!(payload["data"]["key_id"], created["id"]);
    assert_eq!(payload["data"]["name"], "metered");
    assert_eq!(payload["data"]["remaining"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(hooks.received().len(), 1, "credits.low fired twice");
}
