// The audit log (issue 8): every security event recorded with actor, tenant, client address
// and user agent; `GET /v1/audit` (session only, paginated, the caller's tenant only); operator
// commands recorded as `operator`; no secret in any row. Client addresses are simulated with
// `trusted_proxies = 127.0.0.1/32` and `X-Forwarded-For`, to show the forwarded address (not the
// proxy's) is the one stored.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

const CLIENT_ADDRESS: &str = "203.0.113.9";
const USER_AGENT: &str = "audit-test/1.0 (<b>bold</b>)";

async fn behind_proxy() -> TestApp {
    spawn_app_with(|settings| settings.trusted_proxies = vec!["127.0.0.1/32".into()]).await
}

/// A request from [`CLIENT_ADDRESS`] (through the trusted proxy) with [`USER_AGENT`].
async fn send_from(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> Reply {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("x-forwarded-for", format!("{CLIENT_ADDRESS}, 127.0.0.1"))
        .header("user-agent", USER_AGENT);
    request = match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::ApiKey(key) => request.header("x-api-key", key),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    TestApp::read(request.send().await.expect("request sent")).await
}

async fn post_from(app: &TestApp, path: &str, auth: Auth<'_>, body: Value) -> Reply {
    send_from(app, Method::POST, path, auth, Some(body)).await
}

fn text(value: &Value, name: &str) -> String {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {value}"))
        .to_owned()
}

/// Every event of the caller's tenant, following the cursor.
async fn all_events(app: &TestApp, token: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut path = "/v1/audit?limit=200".to_owned();
    loop {
        let reply = app.get(&path, Auth::Bearer(token)).await;
        let body = reply.expect(200);
        events.extend(body["events"].as_array().expect("events").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/audit?limit=200&cursor={cursor}"),
            None => return events,
        }
    }
}

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

async fn login(app: &TestApp, email: &str, password: &str) -> Reply {
    post_from(
        app,
        "/v1/auth/login",
        Auth::None,
        json!({"email": email, "password": password}),
    )
    .await
}

#[tokio::test]
async fn every_security_event_is_recorded_with_actor_address_and_user_agent() {
    let app = behind_proxy().await;
    let mut secrets: Vec<String> = vec![PASSWORD.to_owned()];

    let registered = post_from(
        &app,
        "/v1/auth/register",
        Auth::None,
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    let registered = registered.expect(201).clone();
    let user_id = text(&registered["user"], "id");
    let tenant_id = text(&registered["tenant"], "id");
    let first_refresh = text(&registered, "refresh_token");
    secrets.push(text(&registered, "access_token"));
    secrets.push(first_refresh.clone());

    login(&app, "ada@example.com", "wrong password!")
        .await
        .expect_problem(401, "invalid_credentials");
    // An unknown email has no tenant: recorded nowhere a tenant can read.
    login(&app, "nobody@example.com", "wrong password!")
        .await
        .expect_problem(401, "invalid_credentials");
    let tokens = login(&app, "ada@example.com", PASSWORD)
        .await
        .expect(200)
        .clone();
    let token = text(&tokens, "access_token");
    secrets.push(token.clone());
    secrets.push(text(&tokens, "refresh_token"));
    let auth = Auth::Bearer(&token);

    let created = post_from(&app, "/v1/keys", auth, json!({"name": "ci"}))
        .await
        .expect(201)
        .clone();
    let key_id = text(&created, "id");
    secrets.push(text(&created, "key"));
    let rotated = post_from(&app, &format!("/v1/keys/{key_id}/rotate"), auth, json!({}))
        .await
        .expect(201)
        .clone();
    let rotated_id = text(&rotated, "id");
    secrets.push(text(&rotated, "key"));
    send_from(
        &app,
        Method::DELETE,
        &format!("/v1/keys/{rotated_id}"),
        auth,
        None,
    )
    .await
    .expect(204);

    for approve in [true, false] {
        let code = post_from(&app, "/v1/auth/device/code", Auth::None, json!({}))
            .await
            .expect(200)
            .clone();
        secrets.push(text(&code, "device_code"));
        let reply = post_from(
            &app,
            "/v1/auth/device/approve",
            auth,
            json!({"user_code": text(&code, "user_code"), "approve": approve}),
        )
        .await;
        assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    }

    // The registration's refresh token, spent, then replayed past the grace window.
    let refreshed = post_from(
        &app,
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": first_refresh}),
    )
    .await
    .expect(200)
    .clone();
    secrets.push(text(&refreshed, "access_token"));
    secrets.push(text(&refreshed, "refresh_token"));
    app.clock.advance(60);
    post_from(
        &app,
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": first_refresh}),
    )
    .await
    .expect_problem(401, "invalid_token");

    let new_password = "a much better passphrase";
    secrets.push(new_password.to_owned());
    let reply = post_from(
        &app,
        "/v1/auth/password",
        auth,
        json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);
    let reply = post_from(&app, "/v1/auth/logout", auth, json!({})).await;
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text);

    let reader = login(&app, "ada@example.com", new_password)
        .await
        .expect(200)
        .clone();
    let reader_token = text(&reader, "access_token");
    secrets.push(reader_token.clone());
    let events = all_events(&app, &reader_token).await;

    for event_type in [
        "user.registered",
        "login.failed",
        "login.succeeded",
        "key.created",
        "key.rotated",
        "key.revoked",
        "device.approved",
        "device.denied",
        "session.refresh_reuse_detected",
        "user.password_changed",
        "session.logout",
    ] {
        let found = of_type(&events, event_type);
        assert!(!found.is_empty(), "no {event_type} in {events:#?}");
        for event in found {
            assert_eq!(event["actor"], user_id.as_str(), "{event}");
            assert_eq!(event["user_id"], user_id.as_str(), "{event}");
            assert_eq!(event["tenant_id"], tenant_id.as_str(), "{event}");
            assert_eq!(event["client_address"], CLIENT_ADDRESS, "{event}");
            assert_eq!(event["user_agent"], USER_AGENT, "{event}");
            assert!(text(event, "id").starts_with("aud_"), "{event}");
            assert!(text(event, "created_at").ends_with('Z'), "{event}");
        }
    }
    // Only the known account's failure: the unknown email's is in no tenant's log.
    assert_eq!(of_type(&events, "login.failed").len(), 1);
    assert_eq!(
        of_type(&events, "key.created")[0]["key_id"],
        key_id.as_str()
    );
    let rotation = of_type(&events, "key.rotated")[0];
    assert_eq!(rotation["key_id"], rotated_id.as_str());
    assert!(text(rotation, "detail").contains(&key_id), "{rotation}");
    assert_eq!(
        of_type(&events, "key.revoked")[0]["key_id"],
        rotated_id.as_str()
    );
    assert!(of_type(&events, "login.succeeded")[0]["session_id"]
        .as_str()
        .is_some_and(|s| s.starts_with("ses_")));
    // Newest first: the reader's own sign-in leads.
    assert_eq!(events[0]["type"], "login.succeeded");
    assert_eq!(events.last().expect("events")["type"], "user.registered");

    // No secret in any column of any row, read straight from the database.
    let rows = app
        .sql_strings(
            "SELECT id || '|' || COALESCE(tenant_id, '') || '|' || actor || '|' || \
             COALESCE(user_id, '') || '|' || event || '|' || COALESCE(client_address, '') || '|' \
             || COALESCE(user_agent, '') || '|' || COALESCE(key_id, '') || '|' || \
             COALESCE(session_id, '') || '|' || COALESCE(detail, '') FROM audit_events",
        )
        .await;
    assert!(rows.len() >= 12, "{rows:#?}");
    for row in &rows {
        for secret in &secrets {
            assert!(
                !row.contains(secret.as_str()),
                "a secret in the audit row {row}"
            );
        }
    }
}

#[tokio::test]
async fn operator_commands_are_recorded_as_the_operator() {
    let app = behind_proxy().await;
    let ada = app.register("ada@example.com").await;
    let config = keyward_server::Config::from_settings(keyward_server::Settings {
        database_url: app.database_url(),
        ..Default::default()
    })
    .expect("valid config");
    let store = keyward_server::admin::open_store(&config)
        .await
        .expect("the operator opens the database");
    let email = keyward_core::Email::parse("ada@example.com").expect("an email");
    keyward_server::admin::disable_user(store.as_ref(), &app.clock, &email)
        .await
        .expect("disabled")
        .expect("a user");
    // The disabled account's right password: a failure its tenant sees.
    login(&app, "ada@example.com", PASSWORD)
        .await
        .expect_problem(403, "forbidden");
    keyward_server::admin::enable_user(store.as_ref(), &email)
        .await
        .expect("enabled");
    let rotation = keyward_server::admin::rotate_signing_key(store.as_ref(), &app.clock, &config)
        .await
        .expect("rotated");

    let token = text(
        login(&app, "ada@example.com", PASSWORD).await.expect(200),
        "access_token",
    );
    let events = all_events(&app, &token).await;
    for event_type in ["user.disabled", "user.enabled"] {
        let found = of_type(&events, event_type);
        assert_eq!(found.len(), 1, "{event_type} in {events:#?}");
        assert_eq!(found[0]["actor"], "operator");
        assert_eq!(found[0]["user_id"], ada.user_id.as_str());
        assert_eq!(found[0]["tenant_id"], ada.tenant_id.as_str());
        assert!(found[0]["client_address"].is_null());
    }
    let refused = of_type(&events, "login.failed");
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["detail"], "account disabled");
    // The signing key is the deployment's: recorded for the operator, shown to no tenant.
    assert!(of_type(&events, "signing_key.rotated").is_empty());
    let rows = app
        .sql_strings(
            "SELECT actor || ' ' || COALESCE(detail, '') FROM audit_events \
             WHERE event = 'signing_key.rotated' AND tenant_id IS NULL",
        )
        .await;
    assert_eq!(rows, vec![format!("operator new kid {}", rotation.kid)]);
}

#[tokio::test]
async fn pages_run_newest_first_and_follow_the_cursor() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let mut key_ids = Vec::new();
    for n in 0..5 {
        let key = app.create_key(&ada, json!({"name": format!("k{n}")})).await;
        key_ids.push(text(&key, "id"));
    }
    let auth = Auth::Bearer(&ada.access_token);
    let first = app.get("/v1/audit?limit=4", auth).await.expect(200).clone();
    let first_events = first["events"].as_array().expect("events");
    assert_eq!(first_events.len(), 4);
    assert_eq!(first_events[0]["key_id"], key_ids[4].as_str());
    assert_eq!(first_events[3]["key_id"], key_ids[1].as_str());
    let cursor = text(&first, "next_cursor");
    assert_eq!(cursor, text(&first_events[3], "id"));

    let second = app
        .get(&format!("/v1/audit?limit=4&cursor={cursor}"), auth)
        .await
        .expect(200)
        .clone();
    let second_events = second["events"].as_array().expect("events");
    assert_eq!(second_events.len(), 2, "{second}");
    assert_eq!(second_events[0]["key_id"], key_ids[0].as_str());
    assert_eq!(second_events[1]["type"], "user.registered");
    assert!(second["next_cursor"].is_null());
    let ids: HashSet<_> = first_events
        .iter()
        .chain(second_events)
        .map(|e| text(e, "id"))
        .collect();
    assert_eq!(ids.len(), 6, "no event twice");

    // The default page holds them all.
    let all = app.get("/v1/audit", auth).await.expect(200).clone();
    assert_eq!(all["events"].as_array().expect("events").len(), 6);
    assert!(all["next_cursor"].is_null());

    for bad in [
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=aud_madeup",
        "cursor=%00",
        "cursor=aud_%27%20OR%201%3D1",
        "page=2",
    ] {
        app.get(&format!("/v1/audit?{bad}"), auth)
            .await
            .expect_problem(422, "validation_failed");
    }
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_events() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    app.create_key(&bob, json!({"name": "bobs"})).await;
    let ada_events = all_events(&app, &ada.access_token).await;
    assert_eq!(ada_events.len(), 1, "{ada_events:#?}");
    for event in &ada_events {
        assert_eq!(event["tenant_id"], ada.tenant_id.as_str());
        assert!(!event.to_string().contains(&bob.user_id), "{event}");
    }
    let bob_events = all_events(&app, &bob.access_token).await;
    assert_eq!(bob_events.len(), 2, "{bob_events:#?}");
    // Another tenant's event id is no cursor here.
    let bobs_cursor = text(&bob_events[0], "id");
    app.get(
        &format!("/v1/audit?cursor={bobs_cursor}"),
        Auth::Bearer(&ada.access_token),
    )
    .await
    .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn an_api_key_cannot_read_the_audit_log() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let key = app
        .create_key(&ada, json!({"name": "admin", "scopes": ["admin"]}))
        .await;
    app.get("/v1/audit", Auth::ApiKey(&text(&key, "key")))
        .await
        .expect_problem(403, "session_required");
    app.get("/v1/audit", Auth::None)
        .await
        .expect_problem(401, "missing_credentials");
}

#[tokio::test]
async fn the_audit_route_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = app
        .get("/openapi.json", Auth::None)
        .await
        .expect(200)
        .clone();
    assert!(
        doc["paths"]["/v1/audit"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
    assert!(doc["components"]["schemas"]["AuditPageResponse"].is_object());
}

#[tokio::test]
async fn the_account_page_shows_the_latest_events_html_escaped() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    app.create_key(&ada, json!({"name": "shown"})).await;
    let browser = console_browser_builder()
        .user_agent("<script>alert(1)</script>")
        .build()
        .expect("client");
    let csrf = login_form_csrf(&app, &browser).await;
    let csrf = csrf.as_str();
    let signed_in = browser
        .post(app.url("/console/login"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf", csrf),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(signed_in.status().as_u16(), 303);
    let page = browser
        .get(app.url("/console/account"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("page");
    assert!(page.contains("Security activity"), "{page}");
    for event_type in ["login.succeeded", "key.created", "user.registered"] {
        assert!(page.contains(event_type), "{event_type} missing: {page}");
    }
    assert!(page.contains(&ada.user_id));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("<script>alert(1)"),
        "an unescaped user agent"
    );
}
