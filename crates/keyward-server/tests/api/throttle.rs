// Brute force and abuse (issue 8): throttles of login, registration, refresh, device codes and
// failed key checks, `trusted_proxies`, and the bounded password hashing queue. Client
// addresses are simulated with `trusted_proxies = 127.0.0.1/32` and `X-Forwarded-For`.

use keyward_server::config::Rate;
use keyward_server::Settings;
use serde_json::{json, Value};

use super::kit::*;

const ATTACKER: &str = "203.0.113.66";
const VICTIM: &str = "198.51.100.7";
const ELSEWHERE: &str = "192.0.2.44";

/// Trusts the test client (127.0.0.1) to forward addresses.
fn behind_proxy(settings: &mut Settings) {
    settings.trusted_proxies = vec!["127.0.0.1/32".into()];
}

/// `POST path` as the client at `from` (an `X-Forwarded-For` entry; `None` sends none).
async fn post_from(
    app: &TestApp,
    path: &str,
    from: Option<&str>,
    auth: Auth<'_>,
    body: Value,
) -> Reply {
    let mut request = app.http.post(app.url(path)).json(&body);
    if let Some(from) = from {
        request = request.header("x-forwarded-for", from);
    }
    request = match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::ApiKey(key) => request.header("x-api-key", key),
    };
    TestApp::read(request.send().await.expect("request sent")).await
}

async fn get_from(app: &TestApp, path: &str, from: &str, auth: Auth<'_>) -> Reply {
    let mut request = app.http.get(app.url(path)).header("x-forwarded-for", from);
    request = match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::ApiKey(key) => request.header("x-api-key", key),
    };
    TestApp::read(request.send().await.expect("request sent")).await
}

async fn login_from(app: &TestApp, from: Option<&str>, email: &str, password: &str) -> Reply {
    post_from(
        app,
        "/v1/auth/login",
        from,
        Auth::None,
        json!({"email": email, "password": password}),
    )
    .await
}

/// A 429 `rate_limited` problem with a `Retry-After` of at least a second.
fn expect_throttled(reply: &Reply) {
    reply.expect_problem(429, "rate_limited");
    let seconds: u64 = reply
        .header("retry-after")
        .expect("Retry-After on 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!(seconds >= 1, "Retry-After {seconds}");
}

#[tokio::test]
async fn login_failures_per_account_are_throttled_but_cannot_lock_the_owner_out() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.login_per_account = Rate::new(3, 3600);
    })
    .await;
    let victim = app.register("victim@example.com").await;
    for _ in 0..3 {
        login_from(&app, Some(ATTACKER), &victim.email, "wrong password!")
            .await
            .expect_problem(401, "invalid_credentials");
    }
    // The failure that finds the account's budget spent, and every attempt after it from the
    // failing address, even with the right password: the guessing stops here.
    expect_throttled(&login_from(&app, Some(ATTACKER), &victim.email, "wrong again!").await);
    expect_throttled(&login_from(&app, Some(ATTACKER), &victim.email, PASSWORD).await);
    // The owner, from an address that has not been failing, still signs in.
    let reply = login_from(&app, Some(VICTIM), "Victim@Example.com", PASSWORD).await;
    assert!(reply.expect(200)["access_token"].is_string());
    // Another account is not this one: the attacker's address may still try it.
    login_from(
        &app,
        Some(ATTACKER),
        "someone@example.com",
        "wrong password!",
    )
    .await
    .expect_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn login_failures_per_address_are_throttled_across_accounts() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.login_per_address = Rate::new(3, 3600);
    })
    .await;
    let user = app.register("user@example.com").await;
    for n in 0..3 {
        login_from(
            &app,
            Some(ATTACKER),
            &format!("guess{n}@example.com"),
            "nope nope",
        )
        .await
        .expect_problem(401, "invalid_credentials");
    }
    expect_throttled(&login_from(&app, Some(ATTACKER), "guess9@example.com", "nope nope").await);
    expect_throttled(&login_from(&app, Some(ATTACKER), &user.email, PASSWORD).await);
    login_from(&app, Some(ELSEWHERE), &user.email, PASSWORD)
        .await
        .expect(200);
    // Correct logins are not failures: they never spend an address's budget.
    for _ in 0..5 {
        login_from(&app, Some(VICTIM), &user.email, PASSWORD)
            .await
            .expect(200);
    }
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // No trusted_proxies: the peer (127.0.0.1) is the client, whatever the header says.
    let app = spawn_app_with(|s| {
        s.rate_limits.login_per_address = Rate::new(2, 3600);
    })
    .await;
    for n in 0..2 {
        let spoofed = format!("198.51.100.{n}");
        login_from(&app, Some(&spoofed), "who@example.com", "wrong password!")
            .await
            .expect_problem(401, "invalid_credentials");
    }
    expect_throttled(&login_from(&app, Some(ELSEWHERE), "who@example.com", "x wrong x").await);
    expect_throttled(&login_from(&app, None, "who@example.com", "x wrong x").await);
}

#[tokio::test]
async fn registration_is_throttled_per_address() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.register_per_address = Rate::new(2, 3600);
    })
    .await;
    let register = |from: &'static str, email: &'static str| {
        post_from(
            &app,
            "/v1/auth/register",
            Some(from),
            Auth::None,
            json!({"email": email, "password": PASSWORD}),
        )
    };
    register(ATTACKER, "a1@example.com").await.expect(201);
    register(ATTACKER, "a2@example.com").await.expect(201);
    expect_throttled(&register(ATTACKER, "a3@example.com").await);
    register(VICTIM, "v1@example.com").await.expect(201);
}

#[tokio::test]
async fn refresh_is_throttled_per_address() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.refresh_per_address = Rate::new(2, 3600);
    })
    .await;
    let account = app.register("refresher@example.com").await;
    let mut token = account.refresh_token.clone();
    for _ in 0..2 {
        let reply = post_from(
            &app,
            "/v1/auth/refresh",
            Some(ATTACKER),
            Auth::None,
            json!({"refresh_token": token}),
        )
        .await;
        token = reply.expect(200)["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned();
    }
    let refresh = |from: &'static str, token: String| {
        post_from(
            &app,
            "/v1/auth/refresh",
            Some(from),
            Auth::None,
            json!({"refresh_token": token}),
        )
    };
    expect_throttled(&refresh(ATTACKER, token.clone()).await);
    // The refused request did not spend the token: it still works from elsewhere.
    refresh(VICTIM, token).await.expect(200);
}

#[tokio::test]
async fn device_codes_are_throttled_per_address() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.device_per_address = Rate::new(2, 3600);
    })
    .await;
    for _ in 0..2 {
        post_from(
            &app,
            "/v1/auth/device/code",
            Some(ATTACKER),
            Auth::None,
            json!({}),
        )
        .await
        .expect(200);
    }
    expect_throttled(
        &post_from(
            &app,
            "/v1/auth/device/code",
            Some(ATTACKER),
            Auth::None,
            json!({}),
        )
        .await,
    );
    post_from(
        &app,
        "/v1/auth/device/code",
        Some(VICTIM),
        Auth::None,
        json!({}),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn wrong_device_user_codes_are_throttled_per_address() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.device_entry_failures_per_address = Rate::new(2, 3600);
    })
    .await;
    let owner = app.register("owner@example.com").await;
    let enter = |from: &'static str, user_code: String| {
        post_from(
            &app,
            "/v1/auth/device/approve",
            Some(from),
            Auth::Bearer(&owner.access_token),
            json!({"user_code": user_code, "approve": true}),
        )
    };
    for guess in ["BCDF-GHJK", "BCDF-GHJL"] {
        enter(ATTACKER, guess.into())
            .await
            .expect_problem(404, "not_found");
    }
    expect_throttled(&enter(ATTACKER, "BCDF-GHJM".into()).await);
    // A real code from the blocked address is not even looked up.
    let issued = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await;
    let user_code = issued.expect(200)["user_code"]
        .as_str()
        .expect("user_code")
        .to_owned();
    expect_throttled(&enter(ATTACKER, user_code.clone()).await);
    // The same user from another address is only under the per-user count (10), not blocked.
    enter(VICTIM, "BCDF-GHJN".into())
        .await
        .expect_problem(404, "not_found");
    enter(VICTIM, user_code).await.expect(204);
}

#[tokio::test]
async fn verify_failures_are_throttled_per_address() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.verify_failures_per_address = Rate::new(3, 3600);
    })
    .await;
    let owner = app.register("owner@example.com").await;
    let created = app.create_key(&owner, json!({"name": "ci"})).await;
    let key = created["key"].as_str().expect("key").to_owned();
    let verify = |from: &'static str, key: String| {
        post_from(
            &app,
            "/v1/keys/verify",
            Some(from),
            Auth::None,
            json!({"key": key}),
        )
    };
    // Valid checks are free, however many.
    for _ in 0..5 {
        assert_eq!(
            verify(ATTACKER, key.clone()).await.expect(200)["valid"],
            true
        );
    }
    for n in 0..3 {
        let guess = format!("kw_guess{n}");
        assert_eq!(verify(ATTACKER, guess).await.expect(200)["valid"], false);
    }
    expect_throttled(&verify(ATTACKER, "kw_guess9".into()).await);
    // Blocked: a key this instance holds in memory is still answered (it costs no database
    // read, and a backend relaying many customers' keys must not lose them all), but nothing
    // that would need the database is looked up for this address until the budget refills.
    assert_eq!(
        verify(ATTACKER, key.clone()).await.expect(200)["valid"],
        true
    );
    let unseen = app.create_key(&owner, json!({"name": "unseen"})).await;
    let unseen = unseen["key"].as_str().expect("key").to_owned();
    expect_throttled(&verify(ATTACKER, unseen.clone()).await);
    assert_eq!(verify(VICTIM, key).await.expect(200)["valid"], true);
    assert_eq!(verify(VICTIM, unseen).await.expect(200)["valid"], true);
}

#[tokio::test]
async fn bad_api_keys_count_as_verify_failures() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.verify_failures_per_address = Rate::new(2, 3600);
    })
    .await;
    let owner = app.register("owner@example.com").await;
    let created = app.create_key(&owner, json!({"name": "ci"})).await;
    let key = created["key"].as_str().expect("key").to_owned();
    for n in 0..2 {
        get_from(
            &app,
            "/v1/keys",
            ATTACKER,
            Auth::ApiKey(&format!("kw_bad{n}")),
        )
        .await
        .expect_problem(401, "invalid_api_key");
    }
    expect_throttled(&get_from(&app, "/v1/keys", ATTACKER, Auth::ApiKey("kw_bad9")).await);
    expect_throttled(&get_from(&app, "/v1/keys", ATTACKER, Auth::ApiKey(&key)).await);
    get_from(&app, "/v1/keys", VICTIM, Auth::ApiKey(&key))
        .await
        .expect(200);
    // A session is not a key guess: its requests pass from the blocked address.
    get_from(
        &app,
        "/v1/keys",
        ATTACKER,
        Auth::Bearer(&owner.access_token),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn disabled_rate_limits_throttle_nothing() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        let tight = Rate::new(1, 3600);
        s.rate_limits.enabled = false;
        s.rate_limits.login_per_account = tight;
        s.rate_limits.login_per_address = tight;
        s.rate_limits.register_per_address = tight;
        s.rate_limits.verify_failures_per_address = tight;
    })
    .await;
    for n in 0..3 {
        app.register(&format!("user{n}@example.com")).await;
    }
    for _ in 0..4 {
        login_from(&app, Some(ATTACKER), "user0@example.com", "wrong password!")
            .await
            .expect_problem(401, "invalid_credentials");
        assert_eq!(app.verify("kw_nothing_here", None).await["valid"], false);
    }
    login_from(&app, Some(ATTACKER), "user0@example.com", PASSWORD)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_login_flood_past_the_hashing_queue_is_refused_quickly_and_healthz_answers() {
    let app = spawn_app_with(|s| {
        s.rate_limits.enabled = false;
        s.limits.password_hash_concurrency = Some(1);
        s.limits.password_hash_queue = Some(2);
    })
    .await;
    let logins = (0..40).map(|n| {
        let app = &app;
        async move {
            login_from(
                app,
                None,
                &format!("flood{n}@example.com"),
                "wrong password!",
            )
            .await
        }
    });
    let health = async {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(app.get("/healthz", Auth::None).await.status.as_u16());
        }
        statuses
    };
    let (replies, health) = tokio::join!(futures_util::future::join_all(logins), health);
    assert_eq!(
        health,
        vec![200; 5],
        "/healthz keeps answering during the flood"
    );
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        !refused.is_empty(),
        "40 logins at once with room for 3 must refuse some"
    );
    for reply in &refused {
        reply.expect_problem(503, "unavailable");
        let seconds: u64 = reply
            .header("retry-after")
            .expect("Retry-After on 503")
            .parse()
            .expect("seconds");
        assert!(seconds >= 1);
    }
    assert!(
        replies.iter().any(|r| r.status == 401),
        "the queued ones are answered"
    );
    for reply in &replies {
        assert!(
            [401, 503].contains(&reply.status.as_u16()),
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn bad_keys_at_the_gateway_count_as_verify_failures() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let upstream = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            "upstream"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the upstream");
    let upstream_addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.verify_failures_per_address = Rate::new(2, 3600);
        s.gateway.listen = Some("127.0.0.1:0".into());
        s.gateway.upstream = Some(format!("http://{upstream_addr}"));
    })
    .await;
    let gateway = app
        .server
        .as_ref()
        .and_then(|server| server.gateway_addr)
        .expect("gateway listening");
    let owner = app.register("owner@example.com").await;
    let created = app.create_key(&owner, json!({"name": "ci"})).await;
    let key = created["key"].as_str().expect("key").to_owned();
    let through = |from: &'static str, key: String| {
        let request = app
            .http
            .get(format!("http://{gateway}/anything"))
            .header("x-forwarded-for", from)
            .header("x-api-key", key);
        async move { TestApp::read(request.send().await.expect("request sent")).await }
    };
    for n in 0..2 {
        through(ATTACKER, format!("kw_bad{n}"))
            .await
            .expect_problem(401, "invalid_api_key");
    }
    expect_throttled(&through(ATTACKER, "kw_bad9".into()).await);
    expect_throttled(&through(ATTACKER, key.clone()).await);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing refused reached the upstream"
    );
    through(VICTIM, key).await.expect(200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_console_sign_in_goes_through_the_same_throttle() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.login_per_address = Rate::new(2, 3600);
    })
    .await;
    app.register("ada@example.com").await;
    let browser = console_browser();
    let csrf = login_form_csrf(&app, &browser).await;
    let sign_in = |password: &'static str| {
        let request = browser
            .post(app.url("/console/login"))
            .header("x-forwarded-for", ATTACKER)
            .form(&[
                ("email", "ada@example.com"),
                ("password", password),
                ("csrf", csrf.as_str()),
            ]);
        async move { request.send().await.expect("sent") }
    };
    for _ in 0..2 {
        assert_eq!(sign_in("not the password").await.status(), 401);
    }
    let refused = sign_in("not the password").await;
    assert_eq!(refused.status(), 429);
    assert!(refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|seconds| seconds >= 1));
    // The API and the console share one budget: the API refuses this address too.
    expect_throttled(&login_from(&app, Some(ATTACKER), "ada@example.com", PASSWORD).await);
}
