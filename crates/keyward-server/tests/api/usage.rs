// Metering and `GET /v1/usage` (SPEC §4 "Usage"): verify calls with a found key are counted
// per tenant, key and UTC day, written in batches off the request path, flushed at shutdown,
// and exact across instances.

use std::time::{Duration, Instant};

use keyward_core::{date_of_day, Clock, SECONDS_PER_DAY};
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers

async fn usage(app: &TestApp, auth: Auth<'_>, query: &str) -> Value {
    app.get(&format!("/v1/usage{query}"), auth)
        .await
        .expect(200)
        .clone()
}

/// Polls `/v1/usage{query}` until `executions` is `expected` (events show within 5 s), then
/// returns that answer.
async fn usage_reaching(app: &TestApp, auth: Auth<'_>, query: &str, expected: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = usage(app, auth, query).await;
        if answer["executions"] == expected {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "executions did not reach {expected} within 5 s: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key_of(created: &Value) -> (String, String) {
    (
        created["key"].as_str().expect("key").to_owned(),
        created["id"].as_str().expect("id").to_owned(),
    )
}

async fn verify_times(app: &TestApp, key: &str, times: i64) {
    for _ in 0..times {
        assert_eq!(app.verify(key, None).await["code"], "VALID");
    }
}

fn today(app: &TestApp) -> i64 {
    app.clock.now().seconds().div_euclid(SECONDS_PER_DAY)
}

fn dropped_events(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("keyward_usage_events_dropped_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as i64)
        .unwrap_or_else(|| panic!("no keyward_usage_events_dropped_total in {metrics}"))
}

// ---------------------------------------------------------------- counting

#[tokio::test]
async fn verify_calls_are_counted_by_outcome_and_unknown_keys_are_not() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let auth = Auth::Bearer(&ada.access_token);
    let (valid, valid_id) = key_of(&app.create_key(&ada, json!({"name": "valid"})).await);
    let (reader, reader_id) = key_of(
        &app.create_key(&ada, json!({"name": "reader", "scopes": ["read"]}))
            .await,
    );
    let (revoked, revoked_id) = key_of(&app.create_key(&ada, json!({"name": "revoked"})).await);
    app.delete(&format!("/v1/keys/{revoked_id}"), auth)
        .await
        .expect(204);

    for _ in 0..3 {
        assert_eq!(app.verify(&valid, None).await["code"], "VALID");
    }
    for _ in 0..2 {
        let answer = app.verify(&reader, Some(json!(["write"]))).await;
        assert_eq!(answer["code"], "INSUFFICIENT_SCOPE");
    }
    assert_eq!(app.verify(&revoked, None).await["code"], "REVOKED");
    // Unknown keys (malformed or well-formed) are not metered.
    assert_eq!(app.verify("kw_nope", None).await["code"], "NOT_FOUND");
    let mut unknown = valid.clone();
    unknown.pop();
    unknown.push(if valid.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.verify(&unknown, None).await["code"], "NOT_FOUND");

    let answer = usage_reaching(&app, auth, "", 6).await;
    assert_eq!(answer["succeeded"], 3);
    assert_eq!(answer["failed"], 3);
    assert_eq!(answer["in_flight"], 0);
    assert_eq!(answer["success_rate"], 0.5);
    assert!(
        answer["avg_duration_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "durations are kept in microseconds, so even a fast verify averages above 0: {answer}"
    );
    let days = answer["days"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    let last = &days[29];
    assert_eq!(last["date"], answer["to"]);
    assert_eq!(last["date"], date_of_day(today(&app)).as_str());
    assert_eq!(
        last,
        &json!({"date": last["date"], "total": 6, "succeeded": 3, "failed": 3, "in_flight": 0})
    );
    assert!(days[..29].iter().all(|day| day["total"] == 0));
    // Nothing more arrives later: the count is exact.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(usage(&app, auth, "").await["executions"], 6);

    let one = usage(&app, auth, &format!("?key_id={valid_id}")).await;
    assert_eq!(
        (one["executions"].clone(), one["failed"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(one["success_rate"], 1.0);
    let one = usage(&app, auth, &format!("?key_id={reader_id}&days=7")).await;
    assert_eq!(
        (one["executions"].clone(), one["succeeded"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(one["success_rate"], 0.0);
    assert_eq!(one["days"].as_array().expect("days").len(), 7);
    let one = usage(&app, auth, &format!("?key_id={revoked_id}")).await;
    assert_eq!(one["executions"], 1);
}

#[tokio::test]
async fn an_empty_report_has_zero_days_oldest_first_and_null_rates() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let answer = usage(&app, Auth::Bearer(&ada.access_token), "").await;
    assert_eq!(answer["executions"], 0);
    assert_eq!(answer["success_rate"], Value::Null);
    assert_eq!(answer["avg_duration_ms"], Value::Null);
    let days = answer["days"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    let today = today(&app);
    for (i, day) in days.iter().enumerate() {
        let expected = date_of_day(today - 29 + i as i64);
        assert_eq!(day["date"], expected.as_str());
        assert_eq!(day["total"], 0);
        assert_eq!(day["in_flight"], 0);
    }
    assert_eq!(answer["from"], days[0]["date"]);
    assert_eq!(answer["to"], days[29]["date"]);
}

#[tokio::test]
async fn events_land_on_their_utc_day() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let auth = Auth::Bearer(&ada.access_token);
    let (key, _) = key_of(&app.create_key(&ada, json!({"name": "k"})).await);
    app.verify(&key, None).await;
    app.verify(&key, None).await;
    usage_reaching(&app, auth, "", 2).await;
    app.clock.advance(2 * SECONDS_PER_DAY);
    app.verify(&key, None).await;
    // The access token outlives two days of the test clock only if it is fresh: log in again.
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": ada.email, "password": PASSWORD}),
        )
        .await;
    let token = login.expect(200)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let answer = usage_reaching(&app, Auth::Bearer(&token), "?days=3", 3).await;
    let totals: Vec<Value> = answer["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|day| day["total"].clone())
        .collect();
    assert_eq!(totals, vec![json!(2), json!(0), json!(1)]);
    assert_eq!(answer["from"], date_of_day(today(&app) - 2).as_str());
    // Outside the window, the old day is not counted.
    assert_eq!(
        usage(&app, Auth::Bearer(&token), "?days=2").await["executions"],
        1
    );
}

// ---------------------------------------------------------------- the query

#[tokio::test]
async fn days_must_be_1_to_90_and_unknown_parameters_are_refused() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let auth = Auth::Bearer(&ada.access_token);
    let one = usage(&app, auth, "?days=1").await;
    assert_eq!(one["days"].as_array().expect("days").len(), 1);
    assert_eq!(one["from"], one["to"]);
    let most = usage(&app, auth, "?days=90").await;
    assert_eq!(most["days"].as_array().expect("days").len(), 90);
    for bad in ["0", "91", "-1", "abc", "1.5", ""] {
        app.get(&format!("/v1/usage?days={bad}"), auth)
            .await
            .expect_field_error("days");
    }
    app.get("/v1/usage?day=3", auth)
        .await
        .expect_field_error("day");
}

#[tokio::test]
async fn another_users_key_is_not_found_and_tenants_are_isolated() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    let (bob_key, bob_key_id) = key_of(&app.create_key(&bob, json!({"name": "b"})).await);
    for _ in 0..2 {
        app.verify(&bob_key, None).await;
    }
    usage_reaching(&app, Auth::Bearer(&bob.access_token), "", 2).await;
    let ada_auth = Auth::Bearer(&ada.access_token);
    assert_eq!(usage(&app, ada_auth, "").await["executions"], 0);
    app.get(&format!("/v1/usage?key_id={bob_key_id}"), ada_auth)
        .await
        .expect_problem(404, "not_found");
    app.get("/v1/usage?key_id=key_doesnotexist", ada_auth)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_read_key_may_read_usage_and_no_credential_is_refused() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let (reader, _) = key_of(
        &app.create_key(&ada, json!({"name": "reader", "scopes": ["read"]}))
            .await,
    );
    let answer = usage(&app, Auth::ApiKey(&reader), "?days=5").await;
    assert_eq!(answer["days"].as_array().expect("days").len(), 5);
    // Presenting a key as a credential is not a metered request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        usage(&app, Auth::ApiKey(&reader), "").await["executions"],
        0
    );
    app.get("/v1/usage", Auth::None)
        .await
        .expect_problem(401, "missing_credentials");
}

// ---------------------------------------------------------------- the pipeline

#[tokio::test]
async fn shutdown_writes_every_queued_event() {
    const N: i64 = 25;
    let mut app = spawn_app_with(|settings| {
        // The writer would wait 4 s: the events are still queued when the server stops.
        settings.usage.flush_interval_ms = 4_000;
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let (key, _) = key_of(&app.create_key(&ada, json!({"name": "k"})).await);
    for _ in 0..N {
        app.verify(&key, None).await;
    }
    let url = app.database_url();
    app.server
        .take()
        .expect("running")
        .stop()
        .await
        .expect("stops");

    let again = spawn_app_with(|settings| settings.database_url = url).await;
    let login = again
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": ada.email, "password": PASSWORD}),
        )
        .await;
    let token = login.expect(200)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let answer = usage(&again, Auth::Bearer(&token), "").await;
    assert_eq!(answer["executions"], N);
    assert_eq!(answer["succeeded"], N);
}

#[tokio::test]
async fn full_batches_leave_the_queue_at_once_and_are_written_at_the_interval() {
    const N: i64 = 60;
    let app = spawn_app_with(|settings| {
        settings.usage.batch_size = 5;
        // Six times smaller than the events sent: without taking batches early, it would fill.
        settings.usage.queue_capacity = 10;
        settings.usage.flush_interval_ms = 1_000;
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let (key, _) = key_of(&app.create_key(&ada, json!({"name": "k"})).await);
    let sent = Instant::now();
    verify_times(&app, &key, N).await;
    let answer = usage_reaching(&app, Auth::Bearer(&ada.access_token), "", N).await;
    assert_eq!(answer["executions"].as_i64(), Some(N));
    assert_eq!(
        dropped_events(&app.get("/metrics", Auth::None).await.text),
        0,
        "the writer takes each batch off the queue as it fills"
    );
    eprintln!("{N} events written {:?} after the first", sent.elapsed());
}

#[tokio::test]
async fn more_keys_than_one_statement_holds_are_all_metered_and_marked_used() {
    // 150 keys: the usage rows and `last_used_at` go out 100 keys a statement.
    const KEYS: usize = 150;
    let app = spawn_app_with(|settings| settings.keys.max_per_user = 200).await;
    let ada = app.register("ada@example.com").await;
    let mut keys = Vec::new();
    for i in 0..KEYS {
        let created = app.create_key(&ada, json!({"name": format!("k{i}")})).await;
        keys.push(key_of(&created));
    }
    for (key, _) in &keys {
        verify_times(&app, key, 1).await;
    }
    let auth = Auth::Bearer(&ada.access_token);
    let answer = usage_reaching(&app, auth, "", KEYS as i64).await;
    assert_eq!(answer["succeeded"].as_i64(), Some(KEYS as i64));
    // Each key alone, too: every row landed under its own key.
    for (_, id) in [&keys[0], &keys[99], &keys[100], &keys[KEYS - 1]] {
        let one = usage_reaching(&app, auth, &format!("?key_id={id}"), 1).await;
        assert_eq!(one["executions"].as_i64(), Some(1), "{id}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = app.get("/v1/keys", auth).await;
        let unused = listed.expect(200)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|key| key["last_used_at"].is_null())
            .count();
        if unused == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unused} keys never showed a use"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_queue_drops_events_and_counts_them() {
    const N: i64 = 6;
    let app = spawn_app_with(|settings| {
        settings.usage.queue_capacity = 1;
        settings.usage.flush_interval_ms = 4_000;
    })
    .await;
    let metrics = app.get("/metrics", Auth::None).await.text;
    assert_eq!(dropped_events(&metrics), 0);
    let ada = app.register("ada@example.com").await;
    let (key, _) = key_of(&app.create_key(&ada, json!({"name": "k"})).await);
    for _ in 0..N {
        // The server keeps answering while the queue is full.
        assert_eq!(app.verify(&key, None).await["code"], "VALID");
    }
    let dropped = dropped_events(&app.get("/metrics", Auth::None).await.text);
    assert!(dropped >= 1, "a queue of 1 cannot hold {N} events");
    // Every event is either counted or counted as dropped.
    let answer = usage_reaching(&app, Auth::Bearer(&ada.access_token), "", N - dropped).await;
    assert_eq!(answer["executions"].as_i64(), Some(N - dropped));
}

#[tokio::test]
async fn two_instances_metering_one_tenant_count_exactly() {
    const EACH: i64 = 20;
    let a = spawn_app().await;
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: a.database_url(),
        ..Default::default()
    };
    settings.database.max_connections = 4;
    let b = spawn_with_clock(settings, a.clock.clone(), BACKEND, fresh_database().await).await;
    let ada = a.register("ada@example.com").await;
    let (key, _) = key_of(&a.create_key(&ada, json!({"name": "k"})).await);
    let (reader, _) = key_of(
        &a.create_key(&ada, json!({"name": "reader", "scopes": ["read"]}))
            .await,
    );
    tokio::join!(
        verify_times(&a, &key, EACH),
        verify_times(&b, &key, EACH),
        verify_times(&a, &key, EACH),
        verify_times(&b, &key, EACH),
    );
    let answer = usage_reaching(&a, Auth::ApiKey(&reader), "", 4 * EACH).await;
    assert_eq!(answer["succeeded"], 4 * EACH);
    let on_b = usage_reaching(&b, Auth::ApiKey(&reader), "", 4 * EACH).await;
    assert_eq!(on_b["days"], answer["days"]);
}
