// Authorization between tenants and users (issue 8): object-level authorization (OWASP API1)
// walked over every route of the OpenAPI document that takes an id, and mass assignment
// (API3) walked over every JSON body. Both walks fail when a route appears that their tables do
// not cover, so a new route cannot slip past them.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- the cast

/// A user with a session and an admin key.
struct Party {
    account: Account,
    key_id: String,
    key: String,
    webhook_id: String,
}

impl Party {
    /// The two ways this party can call: its session and its admin key.
    fn credentials(&self) -> [(&'static str, Auth<'_>); 2] {
        [
            ("session", Auth::Bearer(&self.account.access_token)),
            ("admin key", Auth::ApiKey(&self.key)),
        ]
    }
}

/// Ada, the victim; Mallory, of another tenant; Eve, another user of Ada's own tenant.
struct Cast {
    ada: Party,
    mallory: Party,
    eve: Party,
}

async fn party(app: &TestApp, account: Account) -> Party {
    let created = app
        .create_key(&account, json!({"name": "admin", "scopes": ["admin"]}))
        .await;
    // An event nothing fires here, so no delivery is attempted.
    let webhook = app
        .create_webhook(
            &account,
            "https://hooks.example.com/keyward",
            &["credits.low"],
        )
        .await;
    Party {
        account,
        key_id: created["id"].as_str().unwrap().to_owned(),
        key: created["key"].as_str().unwrap().to_owned(),
        webhook_id: webhook["id"].as_str().unwrap().to_owned(),
    }
}

/// A second user in `of`'s tenant. The API has no invitations yet, so the row is written
/// directly, with `of`'s password hash (hence [`PASSWORD`]); then Eve signs in as anyone would.
async fn same_tenant_user(app: &TestApp, of: &Account, email: &str) -> Account {
    let id = format!("usr_{:016x}", rand::random::<u64>());
    assert!(of
        .user_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    let inserted = app
        .sql_execute(&format!(
            "INSERT INTO users (id, tenant_id, email, name, password_hash, created_at) \
             SELECT '{id}', tenant_id, '{email}', NULL, password_hash, created_at \
             FROM users WHERE id = '{}'",
            of.user_id
        ))
        .await;
    assert_eq!(inserted, 1);
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let body = login.expect(200);
    let account = Account {
        email: email.to_owned(),
        user_id: id,
        tenant_id: of.tenant_id.clone(),
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
    };
    let me = app
        .get("/v1/auth/me", Auth::Bearer(&account.access_token))
        .await;
    assert_eq!(me.expect(200)["user"]["id"], account.user_id.as_str());
    assert_eq!(me.body["tenant"]["id"], of.tenant_id.as_str());
    account
}

async fn cast(app: &TestApp) -> Cast {
    let ada = app.register("ada@example.com").await;
    let mallory = app.register("mallory@example.com").await;
    let eve = same_tenant_user(app, &ada, "eve@example.com").await;
    let cast = Cast {
        ada: party(app, ada).await,
        mallory: party(app, mallory).await,
        eve: party(app, eve).await,
    };
    // Ada's key has usage, and Ada a second session and a device login in progress.
    for _ in 0..3 {
        assert_eq!(app.verify(&cast.ada.key, None).await["code"], "VALID");
    }
    app.post(
        "/v1/auth/login",
        Auth::None,
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await
    .expect(200);
    app.post("/v1/auth/device/code", Auth::None, json!({}))
        .await
        .expect(200);
    cast
}

/// What the database holds of keys, sessions, refresh tokens, device codes, users and tenants:
/// equal before and after means nothing was written.
async fn database_dump(app: &TestApp) -> Vec<String> {
    let mut dump = Vec::new();
    for sql in [
        "SELECT id || ' ' || tenant_id || ' ' || user_id || ' ' || name || ' ' || scopes \
         || ' ' || COALESCE(CAST(expires_at AS TEXT), '-') \
         || ' ' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM api_keys ORDER BY id",
        "SELECT id || ' ' || user_id || ' ' || tenant_id \
         || ' ' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM sessions ORDER BY id",
        "SELECT session_id || ' ' || COALESCE(CAST(spent_at AS TEXT), '-') FROM refresh_tokens \
         ORDER BY session_id, created_at, spent_at",
        "SELECT user_code || ' ' || COALESCE(user_id, '-') || ' ' || COALESCE(tenant_id, '-') \
         || ' ' || COALESCE(CAST(approved_at AS TEXT), '-') \
         || ' ' || COALESCE(CAST(denied_at AS TEXT), '-') \
         || ' ' || COALESCE(key_id, '-') FROM device_codes ORDER BY user_code",
        "SELECT id || ' ' || tenant_id || ' ' || email || ' ' || password_hash FROM users \
         ORDER BY id",
        "SELECT id || ' ' || name FROM tenants ORDER BY id",
        "SELECT id || ' ' || tenant_id || ' ' || user_id || ' ' || url || ' ' || events \
         FROM webhooks ORDER BY id",
        "SELECT id || ' ' || webhook_id || ' ' || status FROM webhook_deliveries ORDER BY id",
    ] {
        dump.push(format!("-- {sql}"));
        dump.extend(app.sql_strings(sql).await);
    }
    dump
}

/// Ada's key as she sees it, without `last_used_at` (which her own verifications move).
async fn victim_key(app: &TestApp, cast: &Cast) -> Value {
    let mut key = app
        .get(
            &format!("/v1/keys/{}", cast.ada.key_id),
            Auth::Bearer(&cast.ada.account.access_token),
        )
        .await
        .expect(200)
        .clone();
    key.as_object_mut().unwrap().remove("last_used_at");
    key
}

// ---------------------------------------------------------------- object-level authorization

/// Every `/v1` operation whose path takes an id, with the body a caller sends (a valid one, so
/// that only the id can make it fail). A route added with an id fails
/// [`every_route_that_takes_an_id_is_404_for_another_tenants_or_users_object`] until it has a
/// row here.
const ID_ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("get", "/v1/keys/{id}", None),
    ("delete", "/v1/keys/{id}", None),
    (
        "post",
        "/v1/keys/{id}/rotate",
        Some(r#"{"grace_period_seconds": 60}"#),
    ),
    ("delete", "/v1/webhooks/{id}", None),
    ("get", "/v1/webhooks/{id}/deliveries", None),
];

/// Routes of [`ID_ROUTES`] that only a session may call: an API key gets 403
/// `session_required` before any lookup, so it learns nothing of the id either.
const SESSION_ONLY: &[&str] = &["/v1/webhooks/{id}", "/v1/webhooks/{id}/deliveries"];

/// Every `/v1` operation with a query parameter that names an object (`…_id`).
const ID_QUERIES: &[(&str, &str, &str)] = &[("get", "/v1/usage", "key_id")];

/// The victim's object a path parameter of `path` names.
fn victim_object(path: &str, parameter: &str, cast: &Cast) -> String {
    match (path.starts_with("/v1/keys/"), parameter) {
        (true, "id") => cast.ada.key_id.clone(),
        (false, "id") if path.starts_with("/v1/webhooks/") => cast.ada.webhook_id.clone(),
        _ => panic!("{path}: say which of the victim's objects {{{parameter}}} names"),
    }
}

/// The `{…}` parameters of an OpenAPI path.
fn path_parameters(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

#[tokio::test]
async fn every_route_that_takes_an_id_is_404_for_another_tenants_or_users_object() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let doc = app
        .get("/openapi.json", Auth::None)
        .await
        .expect(200)
        .clone();

    // What the document offers must be what the tables cover, no more, no less.
    let mut templated = BTreeSet::new();
    let mut id_queries = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if !path.starts_with("/v1/") {
                continue;
            }
            if path.contains('{') {
                templated.insert((method.clone(), path.clone()));
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap_or_default();
                if parameter["in"] == "query" && (name == "id" || name.ends_with("_id")) {
                    id_queries.insert((method.clone(), path.clone(), name.to_owned()));
                }
            }
        }
    }
    let covered: BTreeSet<_> = ID_ROUTES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        templated, covered,
        "routes that take an id and ID_ROUTES differ: give each new one a row"
    );
    let covered: BTreeSet<_> = ID_QUERIES
        .iter()
        .map(|(method, path, name)| (method.to_string(), path.to_string(), name.to_string()))
        .collect();
    assert_eq!(
        id_queries, covered,
        "query parameters that name an object and ID_QUERIES differ"
    );

    let dump = database_dump(&app).await;
    let key = victim_key(&app, &cast).await;
    let mut exercised = BTreeSet::new();
    let mut calls = 0;
    for (attacker, relation) in [
        (&cast.mallory, "another tenant"),
        (&cast.eve, "another user of the tenant"),
    ] {
        for (credential, auth) in attacker.credentials() {
            for (method, path, body) in ID_ROUTES {
                let mut concrete = path.to_string();
                for parameter in path_parameters(path) {
                    concrete = concrete.replace(
                        &format!("{{{parameter}}}"),
                        &victim_object(path, parameter, &cast),
                    );
                }
                let bodies = match body {
                    Some(body) => vec![None, Some(serde_json::from_str::<Value>(body).unwrap())],
                    None => vec![None],
                };
                for body in bodies {
                    let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                    let reply = app.send(verb, &concrete, auth, body).await;
                    let (status, code) = if credential == "admin key" && SESSION_ONLY.contains(path)
                    {
                        (403, "session_required")
                    } else {
                        (404, "not_found")
                    };
                    assert_eq!(
                        reply.status.as_u16(),
                        status,
                        "{method} {path} by {relation} with a {credential}: {}",
                        reply.text
                    );
                    reply.expect_problem(status, code);
                    assert!(
                        !reply.text.contains(&cast.ada.key_id[4..])
                            && !reply.text.contains(&cast.ada.webhook_id[4..]),
                        "{}",
                        reply.text
                    );
                    assert_eq!(database_dump(&app).await, dump, "{method} {path} wrote");
                    exercised.insert((method.to_string(), path.to_string()));
                    calls += 1;
                }
            }
            for (method, path, name) in ID_QUERIES {
                let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let concrete = format!("{path}?{name}={}", cast.ada.key_id);
                let reply = app.send(verb, &concrete, auth, None).await;
                assert_eq!(
                    reply.status.as_u16(),
                    404,
                    "{method} {path}?{name} by {relation} with a {credential}: {}",
                    reply.text
                );
                reply.expect_problem(404, "not_found");
                calls += 1;
            }
            // And the lists never show the victim's objects.
            let listed = app.get("/v1/keys?include_revoked=true", auth).await;
            let ids: Vec<&str> = listed.expect(200)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, [attacker.key_id.as_str()], "{relation}'s list");
            if credential == "session" {
                let listed = app.get("/v1/webhooks", auth).await;
                let ids: Vec<&str> = listed.expect(200)["webhooks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w["id"].as_str().unwrap())
                    .collect();
                assert_eq!(ids, [attacker.webhook_id.as_str()], "{relation}'s webhooks");
            }
        }
    }
    assert_eq!(exercised, templated, "every templated route was called");
    // Two attackers with two credentials each; a route with a body is called with and without.
    let per_credential: usize = ID_ROUTES
        .iter()
        .map(|(_, _, body)| if body.is_some() { 2 } else { 1 })
        .sum::<usize>()
        + ID_QUERIES.len();
    assert_eq!(calls, 4 * per_credential);

    // Ada's key is as it was and still works, and Ada herself reads it by the same id (in
    // `victim_key` and through usage), so the 404s above were the attackers'.
    assert_eq!(victim_key(&app, &cast).await, key);
    assert_eq!(app.verify(&cast.ada.key, None).await["code"], "VALID");
    let ada_session = Auth::Bearer(&cast.ada.account.access_token);
    let deliveries = format!("/v1/webhooks/{}/deliveries", cast.ada.webhook_id);
    app.get(&deliveries, ada_session).await.expect(200);
    let usage = format!("/v1/usage?key_id={}", cast.ada.key_id);
    for (_, auth) in cast.ada.credentials() {
        app.get(&usage, auth).await.expect(200);
    }
}

// ---------------------------------------------------------------- mass assignment

/// The fields no client may set, with the value an attacker would like them to have.
fn assignments(cast: &Cast) -> [(&'static str, Value); 5] {
    [
        ("tenant_id", json!(cast.mallory.account.tenant_id)),
        ("user_id", json!(cast.mallory.account.user_id)),
        ("created_at", json!("2000-01-01T00:00:00Z")),
        ("status", json!("active")),
        ("id", json!("key_chosenbytheclient")),
    ]
}

/// The OAuth endpoints of the device flow, which ignore unknown fields as RFC 6749 §3.1
/// requires (OAuth libraries send `client_id`, `scope`): what they ignore is proved below to
/// assign nothing.
const OAUTH_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/auth/device/code"),
    ("post", "/v1/auth/device/token"),
];

/// GitHub's secret-scanning endpoint: its body is GitHub's JSON array (not an object), whose
/// signature is checked before anything is read, and whose items may gain fields GitHub adds.
/// `leaks.rs` tests it; nothing in it names an object to assign.
const SIGNED_ROUTES: &[(&str, &str)] = &[("post", "/v1/leaks/github")];

/// What a valid request to each JSON-body route looks like, for a caller that is Ada. A route
/// added with a JSON body fails the walk until it has a row here.
struct ValidRequests {
    session: String,
    refresh_token: String,
    key_id: String,
    key: String,
    user_code: String,
}

impl ValidRequests {
    fn request(&self, method: &str, path: &str) -> Option<(String, Value, Auth<'_>)> {
        let session = Auth::Bearer(&self.session);
        let (body, auth) = match (method, path) {
            ("post", "/v1/auth/register") => (
                json!({"email": "newcomer@example.com", "password": PASSWORD}),
                Auth::None,
            ),
            ("post", "/v1/auth/login") => (
                json!({"email": "ada@example.com", "password": PASSWORD}),
                Auth::None,
            ),
            ("post", "/v1/auth/refresh") => {
                (json!({"refresh_token": self.refresh_token}), Auth::None)
            }
            ("post", "/v1/auth/logout") => (json!({}), session),
            ("post", "/v1/auth/password") => (
                json!({
                    "current_password": PASSWORD,
                    "new_password": "a different, longer passphrase",
                }),
                session,
            ),
            ("post", "/v1/auth/device/approve") => (
                json!({"user_code": self.user_code, "approve": true}),
                session,
            ),
            ("post", "/v1/keys") => (json!({"name": "assigned"}), session),
            ("post", "/v1/keys/{id}/rotate") => (json!({}), session),
            ("post", "/v1/keys/verify") => (json!({"key": self.key}), Auth::None),
            ("post", "/v1/webhooks") => (
                json!({"url": "https://hooks.example.com/new", "events": ["credits.low"]}),
                session,
            ),
            // A key that is not live: reporting Ada's would revoke it.
            ("post", "/v1/leaks") => (json!({"key": "kw_not_a_live_key"}), Auth::None),
            _ => return None,
        };
        Some((path.replace("{id}", &self.key_id), body, auth))
    }
}

/// The order in which the valid requests are sent at the end (each must succeed), so that
/// none spoils a later one: the logout last.
const CONTROL_ORDER: &[(&str, &str, u16)] = &[
    ("post", "/v1/keys/verify", 200),
    ("post", "/v1/leaks", 200),
    ("post", "/v1/webhooks", 201),
    ("post", "/v1/keys", 201),
    ("post", "/v1/keys/{id}/rotate", 201),
    ("post", "/v1/auth/device/approve", 204),
    ("post", "/v1/auth/refresh", 200),
    ("post", "/v1/auth/register", 201),
    ("post", "/v1/auth/login", 200),
    ("post", "/v1/auth/password", 204),
    ("post", "/v1/auth/logout", 204),
];

#[tokio::test]
async fn unknown_fields_in_every_json_body_are_422_and_nothing_is_written() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let device = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await;
    let valid = ValidRequests {
        session: cast.ada.account.access_token.clone(),
        refresh_token: cast.ada.account.refresh_token.clone(),
        key_id: cast.ada.key_id.clone(),
        key: cast.ada.key.clone(),
        user_code: device.expect(200)["user_code"].as_str().unwrap().to_owned(),
    };
    let doc = app
        .get("/openapi.json", Auth::None)
        .await
        .expect(200)
        .clone();

    let dump = database_dump(&app).await;
    let mut walked = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["requestBody"]["content"]["application/json"].is_null() {
                continue;
            }
            if OAUTH_ROUTES.contains(&(method.as_str(), path.as_str()))
                || SIGNED_ROUTES.contains(&(method.as_str(), path.as_str()))
            {
                continue;
            }
            let Some((concrete, body, auth)) = valid.request(method, path) else {
                panic!("{method} {path} takes JSON: give it a row in ValidRequests");
            };
            for (field, value) in assignments(&cast) {
                let mut body = body.clone();
                body[field] = value;
                let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let reply = app.send(verb, &concrete, auth, Some(body)).await;
                assert_eq!(
                    reply.status.as_u16(),
                    422,
                    "{method} {path} with {field}: {}",
                    reply.text
                );
                reply.expect_field_error(field);
            }
            walked.insert((method.to_string(), path.to_string()));
        }
    }
    assert_eq!(database_dump(&app).await, dump, "a refused body wrote");

    // Every row was walked, and each valid body alone succeeds: the 422s were the extra
    // fields'.
    let controls: BTreeSet<_> = CONTROL_ORDER
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        walked, controls,
        "JSON-body routes and CONTROL_ORDER differ"
    );
    for (method, path, status) in CONTROL_ORDER {
        let (concrete, body, auth) = valid.request(method, path).unwrap();
        let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let reply = app.send(verb, &concrete, auth, Some(body)).await;
        assert_eq!(
            reply.status.as_u16(),
            *status,
            "{method} {path}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn the_oauth_device_endpoints_ignore_unknown_fields_and_assign_nothing() {
    let app = spawn_app().await;
    let cast = cast(&app).await;
    let mallory_keys = app
        .sql_strings(&format!(
            "SELECT id FROM api_keys WHERE user_id = '{}' ORDER BY id",
            cast.mallory.account.user_id
        ))
        .await;
    let mut extras = json!({"client_name": "laptop", "scope": "admin", "client_id": "cli"});
    for (field, value) in assignments(&cast) {
        extras[field] = value;
    }
    extras["approved"] = json!(true);
    extras["key_id"] = json!(cast.mallory.key_id);

    let code = app
        .post("/v1/auth/device/code", Auth::None, extras.clone())
        .await;
    let device_code = code.expect(200)["device_code"].as_str().unwrap().to_owned();
    let user_code = code.body["user_code"].as_str().unwrap().to_owned();
    let mut poll = extras.clone();
    poll["device_code"] = json!(device_code);
    poll["grant_type"] = json!("urn:ietf:params:oauth:grant-type:device_code");

    // `status` or `approved` in a body approves nothing.
    let pending = app
        .post("/v1/auth/device/token", Auth::None, poll.clone())
        .await;
    assert_eq!(
        pending.body["error"], "authorization_pending",
        "{}",
        pending.text
    );

    app.post(
        "/v1/auth/device/approve",
        Auth::Bearer(&cast.ada.account.access_token),
        json!({"user_code": user_code, "approve": true}),
    )
    .await
    .expect(204);
    app.clock.advance(10);
    let redeemed = app.post("/v1/auth/device/token", Auth::None, poll).await;
    let key = redeemed.expect(200)["api_key"].as_str().unwrap().to_owned();
    assert_ne!(redeemed.body["key_id"], cast.mallory.key_id.as_str());
    // The key is the approving user's, in her tenant, whatever the bodies said.
    let verified = app.verify(&key, None).await;
    assert_eq!(verified["user_id"], cast.ada.account.user_id.as_str());
    assert_eq!(verified["tenant_id"], cast.ada.account.tenant_id.as_str());
    let mallory_after = app
        .sql_strings(&format!(
            "SELECT id FROM api_keys WHERE user_id = '{}' ORDER BY id",
            cast.mallory.account.user_id
        ))
        .await;
    assert_eq!(mallory_after, mallory_keys);
}
