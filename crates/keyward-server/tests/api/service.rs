// Errors (SPEC §3) and the service endpoints.

use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

#[tokio::test]
async fn register_then_use_a_key_end_to_end() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let key = app.create_key(&account, json!({"name": "ci"})).await;
    let secret = key["key"].as_str().unwrap();
    let me = app.get("/v1/auth/me", Auth::Bearer(secret)).await;
    assert_eq!(me.expect(200)["auth"]["method"], "api_key");
    let id = key["id"].as_str().unwrap();
    app.delete(
        &format!("/v1/keys/{id}"),
        Auth::Bearer(&account.access_token),
    )
    .await
    .expect(204);
    app.get("/v1/auth/me", Auth::Bearer(secret))
        .await
        .expect_problem(401, "invalid_api_key");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz", Auth::None).await.expect(200)["status"],
        "ok"
    );
    assert_eq!(
        app.get("/readyz", Auth::None).await.expect(200)["status"],
        "ok"
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_made_otherwise() {
    let app = spawn_app().await;
    let send = |id: String| {
        let request = app.http.get(app.url("/nope")).header("x-request-id", id);
        async move { TestApp::read(request.send().await.unwrap()).await }
    };
    let kept = send("trace-1:a.b_c".into()).await;
    kept.expect_problem(404, "not_found");
    assert_eq!(kept.header("x-request-id"), Some("trace-1:a.b_c"));
    assert_eq!(kept.body["request_id"], "trace-1:a.b_c");

    for bad in [
        "has space".to_owned(),
        "x".repeat(129),
        "semi;colon".to_owned(),
    ] {
        let made = send(bad.clone()).await;
        made.expect_problem(404, "not_found");
        let id = made.header("x-request-id").unwrap();
        assert!(id.starts_with("req_") && id != bad, "{id}");
    }
    let longest = send("y".repeat(128)).await;
    assert_eq!(
        longest.header("x-request-id"),
        Some("y".repeat(128).as_str())
    );

    // Successful responses carry one too.
    let ok = app.get("/healthz", Auth::None).await;
    assert!(ok.header("x-request-id").unwrap().starts_with("req_"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.get("/v1/nothing", Auth::None)
        .await
        .expect_problem(404, "not_found");
    app.get("/", Auth::None)
        .await
        .expect_problem(404, "not_found");
    app.send(Method::PUT, "/v1/keys", Auth::None, None)
        .await
        .expect_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn bodies_must_be_json_objects_of_bounded_size() {
    let app = spawn_app().await;
    let raw = |content_type: Option<&'static str>, body: Vec<u8>| {
        let mut request = app.http.post(app.url("/v1/keys/verify")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move { TestApp::read(request.send().await.unwrap()).await }
    };
    raw(Some("application/json"), b"{not json".to_vec())
        .await
        .expect_problem(400, "invalid_request");
    raw(Some("application/json"), b"[1,2]".to_vec())
        .await
        .expect_problem(400, "invalid_request");
    raw(Some("application/json"), b"\"kw_x\"".to_vec())
        .await
        .expect_problem(400, "invalid_request");
    raw(Some("text/plain"), br#"{"key": "kw_x"}"#.to_vec())
        .await
        .expect_problem(400, "invalid_request");
    raw(None, br#"{"key": "kw_x"}"#.to_vec())
        .await
        .expect_problem(400, "invalid_request");
    raw(
        Some("application/json; charset=utf-8"),
        br#"{"key": "kw_x"}"#.to_vec(),
    )
    .await
    .expect(200);
    raw(Some("application/json"), br#"{}"#.to_vec())
        .await
        .expect_field_error("key");
    raw(Some("application/json"), br#"{"key": 5}"#.to_vec())
        .await
        .expect_field_error("key");

    let mut big = br#"{"key": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend(br#""}"#);
    raw(Some("application/json"), big)
        .await
        .expect_problem(413, "payload_too_large");
}

#[tokio::test]
async fn the_body_limit_is_a_setting() {
    let app = spawn_app_with(|settings| settings.limits.body_bytes = 2048).await;
    let reply = app
        .post(
            "/v1/keys/verify",
            Auth::None,
            json!({"key": "k".repeat(3000)}),
        )
        .await;
    reply.expect_problem(413, "payload_too_large");
    app.post(
        "/v1/keys/verify",
        Auth::None,
        json!({"key": "k".repeat(1000)}),
    )
    .await
    .expect(200);
}

/// Odd input on every route: never a 5xx, always a problem body.
#[tokio::test]
async fn hostile_input_never_causes_a_server_error() {
    let app = spawn_app().await;
    let account = app.register("odd@example.com").await;
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        b"null".to_vec(),
        b"{\"email\": \"\\u0000@x.io\", \"password\": \"\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\\u0000\"}".to_vec(),
        br#"{"name": 1e400}"#.to_vec(),
        br#"{"expires_in_days": 99999999999999999999999}"#.to_vec(),
        format!(r#"{{"name": "{}"}}"#, "é".repeat(10_000)).into_bytes(),
        nested.clone().into_bytes(),
        format!(r#"{{"meta": {nested}}}"#).into_bytes(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        br#"{"key": "kw_\u0000", "scopes": [null]}"#.to_vec(),
        br#"{"refresh_token": ["a"]}"#.to_vec(),
    ];
    let routes = [
        (Method::POST, "/v1/auth/register"),
        (Method::POST, "/v1/auth/login"),
        (Method::POST, "/v1/auth/refresh"),
        (Method::POST, "/v1/auth/logout"),
        (Method::POST, "/v1/auth/password"),
        (Method::POST, "/v1/keys"),
        (Method::POST, "/v1/keys/verify"),
        (Method::POST, "/v1/keys/key_nope/rotate"),
        (Method::POST, "/v1/webhooks"),
        (Method::POST, "/v1/leaks"),
        (Method::POST, "/v1/leaks/github"),
    ];
    for (method, path) in routes {
        for body in &bodies {
            let response = app
                .http
                .request(method.clone(), app.url(path))
                .bearer_auth(&account.access_token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let reply = TestApp::read(response).await;
            assert!(
                reply.status.as_u16() < 500,
                "{method} {path} with {:?} → {}",
                String::from_utf8_lossy(&body[..body.len().min(40)]),
                reply.text
            );
            if !reply.status.is_success() {
                assert_eq!(
                    reply.header("content-type"),
                    Some("application/problem+json")
                );
            }
        }
    }
    for header in [
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer a.b.c",
        "Bearer \u{7f}",
        "bearer kw_x",
    ] {
        let response = app
            .http
            .get(app.url("/v1/auth/me"))
            .header("authorization", header)
            .send()
            .await;
        if let Ok(response) = response {
            let reply = TestApp::read(response).await;
            assert_eq!(reply.status.as_u16(), 401, "{header}: {}", reply.text);
        }
    }
}

#[tokio::test]
async fn metrics_count_requests_and_verifications() {
    let app = spawn_app().await;
    app.verify("kw_unknown", None).await;
    app.get("/healthz", Auth::None).await.expect(200);
    let reply = app.get("/metrics", Auth::None).await;
    assert_eq!(reply.status.as_u16(), 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = &reply.text;
    assert!(
        text.contains(
            r#"keyward_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"keyward_key_verifications_total{outcome="NOT_FOUND"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("keyward_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

/// Every route of the router is in the OpenAPI document, with its schemas.
/// schemathesis (.ci/schemathesis.sh) found errors documented as `application/json` and body
/// refusals (400, 422) missing from several operations; this keeps both fixed.
#[tokio::test]
async fn openapi_documents_every_error_as_problem_json_and_every_body_refusal() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let doc = app
        .get("/openapi.json", Auth::None)
        .await
        .expect(200)
        .clone();
    let paths = doc["paths"].as_object().unwrap();
    let (mut bodies, mut problems) = (0, 0);
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                // A Problem is always problem+json (the device token endpoint's OAuth errors
                // are RFC 6749 JSON, another schema).
                let content = response["content"].as_object().cloned().unwrap_or_default();
                for (media_type, body) in content {
                    if body["schema"]["$ref"] == "#/components/schemas/Problem" {
                        problems += 1;
                        assert_eq!(
                            media_type, "application/problem+json",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
            if operation["requestBody"].is_null() {
                continue;
            }
            bodies += 1;
            for status in ["400", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
            // What the server really answers to a body that is not an object, or an empty
            // one, is among the documented statuses.
            let concrete = path.replace("{id}", "key_doesnotexist");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for body in [json!([]), json!(null), json!({})] {
                if path == "/v1/auth/logout" && body == json!({}) {
                    continue; // would end the session the rest of the test uses
                }
                let reply = app
                    .send(
                        method.clone(),
                        &concrete,
                        Auth::Bearer(&ada.access_token),
                        Some(body.clone()),
                    )
                    .await;
                let status = reply.status.as_str().to_owned();
                assert!(
                    responses.contains_key(&status),
                    "{method} {path} with {body} answered undocumented {status}: {}",
                    reply.text
                );
            }
        }
    }
    assert!(bodies >= 10, "only {bodies} operations take a body");
    assert!(
        problems >= 30,
        "only {problems} Problem responses documented"
    );
}

#[tokio::test]
async fn openapi_covers_every_route() {
    let app = spawn_app().await;
    let doc = app
        .get("/openapi.json", Auth::None)
        .await
        .expect(200)
        .clone();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let expected = [
        ("/v1/auth/register", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/me", "get"),
        ("/v1/auth/password", "post"),
        ("/v1/auth/device/code", "post"),
        ("/v1/auth/device/token", "post"),
        ("/v1/auth/device/approve", "post"),
        ("/v1/tenant", "get"),
        ("/v1/keys", "post"),
        ("/v1/keys", "get"),
        ("/v1/keys/{id}", "get"),
        ("/v1/keys/{id}", "delete"),
        ("/v1/keys/{id}/rotate", "post"),
        ("/v1/keys/verify", "post"),
        ("/v1/usage", "get"),
        ("/v1/audit", "get"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/deliveries", "get"),
        ("/v1/leaks", "post"),
        ("/v1/leaks/github", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/.well-known/jwks.json", "get"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        expected.len(),
        "documented operations: {:?}",
        paths.keys()
    );
    for (path, method) in expected {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "RegisterRequest",
        "CreateKeyRequest",
        "CreatedKey",
        "KeyView",
        "VerifyResponse",
        "Problem",
        "TokenPair",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    let create = &doc["paths"]["/v1/keys"]["post"];
    assert!(create["requestBody"]["content"]["application/json"]["schema"].is_object());
    // Each path the server answers for is documented: undocumented ones would 404 here.
    for path in paths.keys() {
        let concrete = path.replace("{id}", "key_doesnotexist");
        let reply = app.send(Method::OPTIONS, &concrete, Auth::None, None).await;
        assert_ne!(
            reply.status.as_u16(),
            404,
            "{path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn jwks_serves_public_keys_only() {
    let app = spawn_app().await;
    let jwks = app
        .get("/.well-known/jwks.json", Auth::None)
        .await
        .expect(200)
        .clone();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert!(key.get("d").is_none(), "private part exposed: {key}");
        let object: &serde_json::Map<String, Value> = key.as_object().unwrap();
        assert_eq!(object.len(), 6, "{key}");
    }
}

/// The signing key is made once and kept in the database: a restart signs with the same key,
/// and tokens issued before the restart stay valid.
#[tokio::test]
async fn signing_keys_survive_a_restart() {
    let database = fresh_database().await;
    let url = database.url.clone();
    let first = spawn_app_with({
        let url = url.clone();
        move |settings| settings.database_url = url
    })
    .await;
    let account = first.register("restart@example.com").await;
    let jwks_before = first
        .get("/.well-known/jwks.json", Auth::None)
        .await
        .body
        .clone();
    first.server.unwrap().stop().await.unwrap();

    let second = spawn_app_with(move |settings| settings.database_url = url).await;
    let jwks_after = second
        .get("/.well-known/jwks.json", Auth::None)
        .await
        .body
        .clone();
    assert_eq!(jwks_before, jwks_after);
    // The issuer (public_url) changed with the port, so the old token is refused; but the
    // account and its password are still there.
    second
        .get("/v1/auth/me", Auth::Bearer(&account.access_token))
        .await
        .expect_problem(401, "invalid_token");
    let login = second
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": account.email, "password": PASSWORD}),
        )
        .await;
    login.expect(200);
}

/// With the database gone: `/readyz` and anything that needs storage answer 503 `unavailable`
/// without leaking the cause, while a key of the wrong format is still refused — proof that the
/// format and checksum check touches no storage.
#[tokio::test]
async fn a_lost_database_is_503_and_malformed_keys_never_reach_it() {
    let app = spawn_app().await;
    let account = app.register("gone@example.com").await;
    let key = app.create_key(&account, json!({"name": "k"})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    app.server.as_ref().unwrap().state.store.close().await;

    let ready = app.get("/readyz", Auth::None).await;
    ready.expect_problem(503, "unavailable");
    assert!(
        !ready.text.to_lowercase().contains("pool"),
        "{}",
        ready.text
    );
    app.post("/v1/keys/verify", Auth::None, json!({"key": secret}))
        .await
        .expect_problem(503, "unavailable");
    app.get("/v1/keys", Auth::Bearer(&account.access_token))
        .await
        .expect_problem(503, "unavailable");

    // Same length and alphabet, one checksum character changed: refused offline.
    let mut forged = secret.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let verdict = app.verify(&forged, None).await;
    assert_eq!(verdict["code"], "NOT_FOUND");
    app.get("/v1/auth/me", Auth::Bearer(&forged))
        .await
        .expect_problem(401, "invalid_api_key");
    assert_eq!(app.verify("kw_short", None).await["code"], "NOT_FOUND");
}

/// Password hashing runs on the blocking pool with bounded concurrency: during a burst of
/// logins the server keeps answering other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_does_not_stall_other_requests() {
    let app = std::sync::Arc::new(spawn_app().await);
    let account = app.register("burst@example.com").await;
    let burst: Vec<_> = (0..24)
        .map(|i| {
            let app = app.clone();
            let email = account.email.clone();
            tokio::spawn(async move {
                let password = if i % 2 == 0 {
                    PASSWORD
                } else {
                    "wrong password here"
                };
                app.post(
                    "/v1/auth/login",
                    Auth::None,
                    json!({"email": email, "password": password}),
                )
                .await
                .status
                .as_u16()
            })
        })
        .collect();
    // Wait until the burst is being served (a first login answered), then ask for something
    // cheap while the rest still queue for the hasher.
    while !burst.iter().any(|task| task.is_finished()) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let health = app.get("/healthz", Auth::None).await;
    assert_eq!(health.status.as_u16(), 200);
    let unfinished = burst.iter().filter(|task| !task.is_finished()).count();
    assert!(
        unfinished > 0,
        "the burst was over before the health check; it proves nothing"
    );
    let mut statuses = Vec::new();
    for task in burst {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 12);
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 12);
}
