// API keys and verification (SPEC §1, §4).

use std::collections::BTreeSet;
use std::time::Duration;

use keyward_core::Clock;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::kit::*;

// ---------------------------------------------------------------- helpers

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DAY: i64 = 86_400;

/// CRC-32 (IEEE, reflected, as zlib computes it), bit by bit: independent of the server's code.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `value` in base62, most significant digit first, zero-padded to 6 digits.
fn base62_checksum(mut value: u32) -> String {
    let mut digits = [b'0'; 6];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits.to_vec()).unwrap()
}

/// A well-formed default-format key (`kw_` + 32 base62 + checksum) that was never issued.
fn forged_default_key(body: &str) -> String {
    assert_eq!(body.len(), 32);
    let head = format!("kw_{body}");
    let checksum = base62_checksum(crc32(head.as_bytes()));
    format!("{head}{checksum}")
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp such as `2026-11-22T10:00:00Z`.
fn epoch(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {value}"));
    assert!(text.ends_with('Z'), "not UTC: {text}");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {text}: {e}"))
        .unix_timestamp()
}

fn now(app: &TestApp) -> i64 {
    app.clock.now().seconds()
}

fn session(account: &Account) -> Auth<'_> {
    Auth::Bearer(&account.access_token)
}

fn key_path(id: &str) -> String {
    format!("/v1/keys/{id}")
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} should be a string in {value}"))
}

/// Creates a key as `account` and returns `(id, secret)`.
async fn new_key(app: &TestApp, account: &Account, body: Value) -> (String, String) {
    let created = app.create_key(account, body).await;
    (
        str_of(&created, "id").to_owned(),
        str_of(&created, "key").to_owned(),
    )
}

async fn list(app: &TestApp, auth: Auth<'_>, query: &str) -> Vec<Value> {
    app.get(&format!("/v1/keys{query}"), auth).await.expect(200)["keys"]
        .as_array()
        .expect("keys[]")
        .clone()
}

fn ids(keys: &[Value]) -> Vec<&str> {
    keys.iter().map(|k| str_of(k, "id")).collect()
}

/// A new session for `account`, for after the clock moved past its access token's lifetime.
async fn log_in_again(app: &TestApp, account: &Account) -> Account {
    let reply = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": account.email, "password": PASSWORD}),
        )
        .await;
    let body = reply.expect(200);
    Account {
        access_token: str_of(body, "access_token").to_owned(),
        refresh_token: str_of(body, "refresh_token").to_owned(),
        ..account.clone()
    }
}

/// A POST with a raw body and an optional content type.
async fn post_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: &str) -> Reply {
    let mut request = app.http.post(app.url(path)).body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    TestApp::read(request.send().await.expect("request sent")).await
}

fn field_names(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

const VIEW_FIELDS: [&str; 15] = [
    "id",
    "name",
    "description",
    "scopes",
    "masked",
    "start",
    "end",
    "created_at",
    "expires_at",
    "last_used_at",
    "status",
    "meta",
    "enabled",
    "rate_limit",
    "credits",
];

async fn verify_code(app: &TestApp, key: &str, scopes: Option<Value>) -> String {
    let answer = app.verify(key, scopes).await;
    let code = str_of(&answer, "code").to_owned();
    assert_eq!(answer["valid"], code == "VALID", "{answer}");
    code
}

// ---------------------------------------------------------------- create

#[test]
fn the_tests_crc32_is_zlibs() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    assert_eq!(base62_checksum(61), "00000z");
    assert_eq!(base62_checksum(62), "000010");
}

#[tokio::test]
async fn create_answers_the_spec_shape_with_the_default_key_format() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let before = now(&app);
    let reply = app
        .post(
            "/v1/keys",
            session(&account),
            json!({"name": "Prod key-1_v2.0", "description": "for CI", "meta": {"plan": "pro", "n": 3}}),
        )
        .await;
    let key = reply.expect(201).clone();

    let mut expected: BTreeSet<&str> = VIEW_FIELDS.into_iter().collect();
    expected.insert("key");
    assert_eq!(field_names(&key), expected, "{key}");

    let id = str_of(&key, "id");
    assert!(id.starts_with("key_") && id.len() > 4, "{id}");
    let secret = str_of(&key, "key");
    assert_eq!(secret.len(), 3 + 32 + 6, "{secret}");
    assert!(secret.starts_with("kw_"), "{secret}");
    let (head, checksum) = secret.split_at(35);
    assert!(
        head[3..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{secret}"
    );
    assert!(checksum.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        checksum,
        base62_checksum(crc32(head.as_bytes())),
        "{secret}"
    );

    assert_eq!(key["name"], "Prod key-1_v2.0");
    assert_eq!(key["description"], "for CI");
    assert_eq!(key["scopes"], json!(["admin"]));
    assert_eq!(key["start"], &secret[..8]);
    assert_eq!(key["end"], &secret[secret.len() - 4..]);
    assert_eq!(
        key["masked"],
        format!("{}…{}", &secret[..8], &secret[secret.len() - 4..])
    );
    let created_at = epoch(&key["created_at"]);
    assert!(
        (before..=now(&app)).contains(&created_at),
        "{}",
        key["created_at"]
    );
    assert_eq!(str_of(&key, "created_at").len(), 20, "second precision");
    assert!(key["expires_at"].is_null());
    assert!(key["last_used_at"].is_null());
    assert_eq!(key["status"], "active");
    assert_eq!(key["meta"], json!({"plan": "pro", "n": 3}));

    // The key works, and the next one is different.
    assert_eq!(verify_code(&app, secret, None).await, "VALID");
    let other = app.create_key(&account, json!({"name": "second"})).await;
    assert_ne!(other["key"], key["key"]);
    assert_ne!(other["id"], key["id"]);
    assert!(other["description"].is_null());
    assert!(other["meta"].is_null());
}

#[tokio::test]
async fn a_write_key_creates_keys_within_its_own_scopes_only() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, writer) = new_key(
        &app,
        &account,
        json!({"name": "writer", "scopes": ["write"]}),
    )
    .await;

    let child = app
        .post("/v1/keys", Auth::Bearer(&writer), json!({"name": "child"}))
        .await;
    assert_eq!(child.expect(201)["scopes"], json!(["write"]));

    let narrower = app
        .post(
            "/v1/keys",
            Auth::ApiKey(&writer),
            json!({"name": "reader", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(narrower.expect(201)["scopes"], json!(["read"]));

    for scopes in [json!(["admin"]), json!(["write", "files:write"])] {
        let reply = app
            .post(
                "/v1/keys",
                Auth::Bearer(&writer),
                json!({"name": "escalate", "scopes": scopes}),
            )
            .await;
        reply.expect_problem(403, "insufficient_scope");
        let challenge = reply.header("www-authenticate").expect("WWW-Authenticate");
        assert!(
            challenge.contains(r#"error="insufficient_scope""#),
            "{challenge}"
        );
    }
    // Only the two allowed keys were made (plus the writer).
    assert_eq!(list(&app, session(&account), "").await.len(), 3);

    // Nor can it rotate a key with more scopes than its own (it would get that key's secret).
    let (admin_id, admin) = new_key(&app, &account, json!({"name": "admin"})).await;
    app.post(
        &format!("/v1/keys/{admin_id}/rotate"),
        Auth::Bearer(&writer),
        json!({}),
    )
    .await
    .expect_problem(403, "insufficient_scope");
    assert_eq!(verify_code(&app, &admin, None).await, "VALID");
    // It can rotate one within its scopes.
    let (reader_id, _) = new_key(&app, &account, json!({"name": "r", "scopes": ["read"]})).await;
    let rotated = app
        .post(
            &format!("/v1/keys/{reader_id}/rotate"),
            Auth::Bearer(&writer),
            json!({}),
        )
        .await;
    assert_eq!(rotated.expect(201)["scopes"], json!(["read"]));
}

#[tokio::test]
async fn a_read_key_can_list_and_get_but_not_change_anything() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (reader_id, reader) = new_key(
        &app,
        &account,
        json!({"name": "reader", "scopes": ["read"]}),
    )
    .await;
    let (other_id, other) = new_key(&app, &account, json!({"name": "other"})).await;

    let listed = list(&app, Auth::Bearer(&reader), "").await;
    assert_eq!(ids(&listed), [other_id.as_str(), reader_id.as_str()]);
    let one = app.get(&key_path(&other_id), Auth::ApiKey(&reader)).await;
    assert_eq!(one.expect(200)["name"], "other");

    let create = app
        .post("/v1/keys", Auth::Bearer(&reader), json!({"name": "nope"}))
        .await;
    create.expect_problem(403, "insufficient_scope");
    assert!(create
        .header("www-authenticate")
        .is_some_and(|c| c.contains(r#"error="insufficient_scope""#)));
    app.delete(&key_path(&other_id), Auth::Bearer(&reader))
        .await
        .expect_problem(403, "insufficient_scope");
    app.post(
        &format!("/v1/keys/{other_id}/rotate"),
        Auth::Bearer(&reader),
        json!({}),
    )
    .await
    .expect_problem(403, "insufficient_scope");

    // Nothing changed.
    assert_eq!(list(&app, session(&account), "").await.len(), 2);
    assert_eq!(verify_code(&app, &other, None).await, "VALID");
}

#[tokio::test]
async fn every_create_validation_rule_answers_422_naming_the_field() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let big_meta = json!({"big": "x".repeat(5000)});
    let cases = [
        (json!({}), "name"),
        (json!({"description": "no name"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "a".repeat(65)}), "name"),
        (json!({"name": "1password"}), "name"),
        (json!({"name": " lead"}), "name"),
        (json!({"name": "a/b"}), "name"),
        (json!({"name": 5}), "name"),
        (
            json!({"name": "ok", "description": "d".repeat(501)}),
            "description",
        ),
        (
            json!({"name": "ok", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "ok", "expires_in_days": -1}),
            "expires_in_days",
        ),
        (
            json!({"name": "ok", "expires_in_days": 3651}),
            "expires_in_days",
        ),
        (
            json!({"name": "ok", "expires_in_days": "30"}),
            "expires_in_days",
        ),
        (
            json!({"name": "ok", "expires_in_days": 1.5}),
            "expires_in_days",
        ),
        (json!({"name": "ok", "scopes": ["Read"]}), "scopes"),
        (json!({"name": "ok", "scopes": [""]}), "scopes"),
        (json!({"name": "ok", "scopes": ["a b"]}), "scopes"),
        (json!({"name": "ok", "scopes": ["read", "Write"]}), "scopes"),
        (json!({"name": "ok", "scopes": "read"}), "scopes"),
        (json!({"name": "ok", "meta": [1, 2]}), "meta"),
        (json!({"name": "ok", "meta": "x"}), "meta"),
        (json!({"name": "ok", "meta": 5}), "meta"),
        (json!({"name": "ok", "meta": big_meta}), "meta"),
        (json!({"name": "ok", "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let reply = app.post("/v1/keys", session(&account), body.clone()).await;
        assert_eq!(reply.status.as_u16(), 422, "{body} → {}", reply.text);
        reply.expect_field_error(field);
    }
    // All the errors at once.
    let reply = app
        .post(
            "/v1/keys",
            session(&account),
            json!({"name": "9", "description": "d".repeat(501), "expires_in_days": 0}),
        )
        .await;
    for field in ["name", "description", "expires_in_days"] {
        reply.expect_field_error(field);
    }
    // Not JSON at all is 400, not 422.
    let reply = app
        .http
        .post(app.url("/v1/keys"))
        .bearer_auth(&account.access_token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    TestApp::read(reply)
        .await
        .expect_problem(400, "invalid_request");
    assert!(list(&app, session(&account), "").await.is_empty());
}

#[tokio::test]
async fn create_accepts_every_boundary_value() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    // {"b":"…"} is 8 bytes plus the string: exactly 4096 bytes.
    let meta = json!({"b": "x".repeat(4088)});
    assert_eq!(meta.to_string().len(), 4096);
    let key = app
        .create_key(
            &account,
            json!({"name": "a".repeat(64), "description": "d".repeat(500), "expires_in_days": 3650,
                   "scopes": ["read", "files:write", "a", "x".repeat(64)], "meta": meta}),
        )
        .await;
    assert_eq!(key["name"], "a".repeat(64));
    assert_eq!(key["meta"], meta);
    assert_eq!(
        epoch(&key["expires_at"]) - epoch(&key["created_at"]),
        3650 * DAY
    );
    let scopes: BTreeSet<&str> = key["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let long = "x".repeat(64);
    assert_eq!(
        scopes,
        BTreeSet::from(["read", "files:write", "a", long.as_str()])
    );
    let key = app
        .create_key(
            &account,
            json!({"name": "Z", "expires_in_days": 1, "description": ""}),
        )
        .await;
    assert_eq!(epoch(&key["expires_at"]) - epoch(&key["created_at"]), DAY);
    let over = json!({"b": "x".repeat(4089)});
    app.post(
        "/v1/keys",
        session(&account),
        json!({"name": "a", "meta": over}),
    )
    .await
    .expect_field_error("meta");
    app.post(
        "/v1/keys",
        session(&account),
        json!({"name": "a", "scopes": ["x".repeat(65)]}),
    )
    .await
    .expect_field_error("scopes");
}

#[tokio::test]
async fn expires_in_days_null_never_expires_and_n_is_n_days_after_creation() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let never = app
        .create_key(&account, json!({"name": "never", "expires_in_days": null}))
        .await;
    assert!(never["expires_at"].is_null(), "{never}");
    let thirty = app
        .create_key(&account, json!({"name": "thirty", "expires_in_days": 30}))
        .await;
    assert_eq!(
        epoch(&thirty["expires_at"]) - epoch(&thirty["created_at"]),
        30 * DAY
    );
    // Ten years on, the key without expiry still works; the 30-day one does not.
    app.clock.advance(3650 * DAY);
    assert_eq!(
        verify_code(&app, str_of(&never, "key"), None).await,
        "VALID"
    );
    assert_eq!(
        verify_code(&app, str_of(&thirty, "key"), None).await,
        "EXPIRED"
    );
}

// ---------------------------------------------------------------- key limit

#[tokio::test]
async fn the_eleventh_active_key_is_refused_until_one_is_revoked() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let mut keys = Vec::new();
    for n in 0..10 {
        keys.push(new_key(&app, &account, json!({"name": format!("k{n}")})).await);
    }
    let reply = app
        .post("/v1/keys", session(&account), json!({"name": "eleven"}))
        .await;
    reply.expect_problem(409, "key_limit_reached");
    // A key creating a key counts the same.
    app.post(
        "/v1/keys",
        Auth::Bearer(&keys[0].1),
        json!({"name": "eleven"}),
    )
    .await
    .expect_problem(409, "key_limit_reached");

    app.delete(&key_path(&keys[3].0), session(&account))
        .await
        .expect(204);
    app.create_key(&account, json!({"name": "eleven"})).await;
    app.post("/v1/keys", session(&account), json!({"name": "twelve"}))
        .await
        .expect_problem(409, "key_limit_reached");
    assert_eq!(list(&app, session(&account), "").await.len(), 10);

    // The limit is per user: another user still has ten slots.
    let other = app.register("bob@example.com").await;
    app.create_key(&other, json!({"name": "mine"})).await;
}

#[tokio::test]
async fn max_per_user_is_configurable() {
    let app = spawn_app_with(|settings| settings.keys.max_per_user = 2).await;
    let account = app.register("ada@example.com").await;
    let (first, _) = new_key(&app, &account, json!({"name": "one"})).await;
    new_key(&app, &account, json!({"name": "two"})).await;
    app.post("/v1/keys", session(&account), json!({"name": "three"}))
        .await
        .expect_problem(409, "key_limit_reached");
    app.delete(&key_path(&first), session(&account))
        .await
        .expect(204);
    new_key(&app, &account, json!({"name": "three"})).await;
    app.post("/v1/keys", session(&account), json!({"name": "four"}))
        .await
        .expect_problem(409, "key_limit_reached");
}

#[tokio::test]
async fn expired_keys_do_not_count_toward_the_limit() {
    let app = spawn_app_with(|settings| settings.keys.max_per_user = 2).await;
    let account = app.register("ada@example.com").await;
    new_key(&app, &account, json!({"name": "one", "expires_in_days": 1})).await;
    new_key(&app, &account, json!({"name": "two", "expires_in_days": 1})).await;
    app.post("/v1/keys", session(&account), json!({"name": "three"}))
        .await
        .expect_problem(409, "key_limit_reached");
    app.clock.advance(DAY + 1);
    let account = log_in_again(&app, &account).await;
    new_key(&app, &account, json!({"name": "three"})).await;
    new_key(&app, &account, json!({"name": "four"})).await;
    app.post("/v1/keys", session(&account), json!({"name": "five"}))
        .await
        .expect_problem(409, "key_limit_reached");
}

// ---------------------------------------------------------------- list

#[tokio::test]
async fn list_is_newest_first_and_never_shows_a_secret_or_hash() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let mut created = Vec::new();
    for name in ["first", "second", "third"] {
        created.push(
            app.create_key(&account, json!({"name": name, "meta": {"tier": name}}))
                .await,
        );
    }
    let reply = app.get("/v1/keys", session(&account)).await;
    let keys = reply.expect(200)["keys"].as_array().unwrap().clone();
    assert_eq!(field_names(&reply.body), BTreeSet::from(["keys"]));
    let names: Vec<&str> = keys.iter().map(|k| str_of(k, "name")).collect();
    assert_eq!(names, ["third", "second", "first"]);

    for (listed, made) in keys.iter().zip(created.iter().rev()) {
        assert_eq!(
            field_names(listed),
            VIEW_FIELDS.into_iter().collect::<BTreeSet<_>>(),
            "{listed}"
        );
        for field in VIEW_FIELDS {
            assert_eq!(listed[field], made[field], "{field}");
        }
    }
    let one = app
        .get(&key_path(str_of(&created[0], "id")), session(&account))
        .await;
    assert_eq!(
        field_names(one.expect(200)),
        VIEW_FIELDS.into_iter().collect::<BTreeSet<_>>()
    );

    for made in &created {
        let secret = str_of(made, "key");
        let digest = Sha256::digest(secret.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = {
            use base64::Engine;
            (
                base64::engine::general_purpose::STANDARD.encode(digest),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
            )
        };
        for text in [&reply.text, &one.text] {
            assert!(!text.contains(secret), "secret leaked: {text}");
            assert!(!text.contains(&secret[8..secret.len() - 4]));
            assert!(!text.to_lowercase().contains(&hex), "hash leaked");
            assert!(
                !text.contains(&b64.0) && !text.contains(&b64.1),
                "hash leaked"
            );
            assert!(!text.contains("hash"), "{text}");
        }
    }
}

#[tokio::test]
async fn revoked_keys_are_listed_only_when_asked() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (kept, _) = new_key(&app, &account, json!({"name": "kept"})).await;
    let (gone, _) = new_key(&app, &account, json!({"name": "gone"})).await;
    app.delete(&key_path(&gone), session(&account))
        .await
        .expect(204);

    assert_eq!(
        ids(&list(&app, session(&account), "").await),
        [kept.as_str()]
    );
    assert_eq!(
        ids(&list(&app, session(&account), "?include_revoked=false").await),
        [kept.as_str()]
    );
    let all = list(&app, session(&account), "?include_revoked=true").await;
    assert_eq!(ids(&all), [gone.as_str(), kept.as_str()]);
    assert_eq!(all[0]["status"], "revoked");
    assert_eq!(all[1]["status"], "active");

    app.get("/v1/keys?include_revoked=maybe", session(&account))
        .await
        .expect_field_error("include_revoked");
    app.get("/v1/keys?limit=5", session(&account))
        .await
        .expect_field_error("limit");
}

// ---------------------------------------------------------------- get / revoke

#[tokio::test]
async fn get_shows_one_key_revoked_ones_included() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(&account, json!({"name": "one", "scopes": ["read"]}))
        .await;
    let id = str_of(&created, "id");
    let one = app.get(&key_path(id), session(&account)).await;
    let one = one.expect(200);
    assert_eq!(one["id"], id);
    assert_eq!(one["status"], "active");
    assert_eq!(one["masked"], created["masked"]);
    assert!(one.get("key").is_none());

    app.delete(&key_path(id), session(&account))
        .await
        .expect(204);
    let one = app.get(&key_path(id), session(&account)).await;
    assert_eq!(one.expect(200)["status"], "revoked");
    assert_eq!(one.body["name"], "one");
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_very_next_request() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "doomed"})).await;
    let me = app.get("/v1/auth/me", Auth::Bearer(&secret)).await;
    assert_eq!(me.expect(200)["auth"]["key_id"], id.as_str());

    let reply = app.delete(&key_path(&id), session(&account)).await;
    reply.expect(204);
    assert!(reply.text.is_empty());

    let refused = app.get("/v1/auth/me", Auth::Bearer(&secret)).await;
    refused.expect_problem(401, "invalid_api_key");
    assert_eq!(refused.body["title"], "Invalid API Key");
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|c| c.contains(r#"error="invalid_token""#)));
    app.get("/v1/auth/me", Auth::ApiKey(&secret))
        .await
        .expect_problem(401, "invalid_api_key");
    let verdict = app.verify(&secret, None).await;
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["code"], "REVOKED");

    // Revoking twice is fine, and changes nothing.
    app.delete(&key_path(&id), session(&account))
        .await
        .expect(204);
    assert_eq!(verify_code(&app, &secret, None).await, "REVOKED");
}

#[tokio::test]
async fn a_key_that_revokes_itself_stops_working_at_once() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "self", "scopes": ["write"]})).await;
    app.delete(&key_path(&id), Auth::Bearer(&secret))
        .await
        .expect(204);
    app.get("/v1/keys", Auth::Bearer(&secret))
        .await
        .expect_problem(401, "invalid_api_key");
}

#[tokio::test]
async fn an_unknown_key_id_is_not_found() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    new_key(&app, &account, json!({"name": "real"})).await;
    for id in ["key_doesnotexist000000000", "nope", "usr_x"] {
        app.get(&key_path(id), session(&account))
            .await
            .expect_problem(404, "not_found");
        app.delete(&key_path(id), session(&account))
            .await
            .expect_problem(404, "not_found");
        app.post(
            &format!("/v1/keys/{id}/rotate"),
            session(&account),
            json!({}),
        )
        .await
        .expect_problem(404, "not_found");
    }
    assert_eq!(list(&app, session(&account), "").await.len(), 1);
}

// ---------------------------------------------------------------- tenancy

#[tokio::test]
async fn another_tenant_never_sees_nor_touches_a_key() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    assert_ne!(ada.tenant_id, bob.tenant_id);
    let (id, secret) = new_key(&app, &ada, json!({"name": "ada key"})).await;
    let (bob_key_id, bob_key) = new_key(&app, &bob, json!({"name": "bob key"})).await;

    for auth in [session(&bob), Auth::Bearer(&bob_key)] {
        app.get(&key_path(&id), auth)
            .await
            .expect_problem(404, "not_found");
        app.delete(&key_path(&id), auth)
            .await
            .expect_problem(404, "not_found");
        app.post(&format!("/v1/keys/{id}/rotate"), auth, json!({}))
            .await
            .expect_problem(404, "not_found");
        app.send(Method::POST, &format!("/v1/keys/{id}/rotate"), auth, None)
            .await
            .expect_problem(404, "not_found");
        let seen = list(&app, auth, "?include_revoked=true").await;
        assert_eq!(ids(&seen), [bob_key_id.as_str()]);
    }
    // Ada's key is untouched.
    assert_eq!(verify_code(&app, &secret, None).await, "VALID");
    let me = app.get("/v1/auth/me", Auth::Bearer(&secret)).await;
    assert_eq!(me.expect(200)["tenant"]["id"], ada.tenant_id.as_str());
    let listed = list(&app, session(&ada), "?include_revoked=true").await;
    assert_eq!(ids(&listed), [id.as_str()]);
    assert_eq!(listed[0]["status"], "active");
    // And the other way round.
    app.get(&key_path(&bob_key_id), session(&ada))
        .await
        .expect_problem(404, "not_found");
}

// ---------------------------------------------------------------- rotate

#[tokio::test]
async fn rotate_issues_a_new_key_and_revokes_the_old_one_at_once() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let old = app
        .create_key(
            &account,
            json!({"name": "svc", "description": "the service", "scopes": ["write", "files:read"],
                   "meta": {"team": "infra"}}),
        )
        .await;
    let old_id = str_of(&old, "id");
    let old_key = str_of(&old, "key");

    // No body at all: grace 0.
    let reply = app
        .send(
            Method::POST,
            &format!("/v1/keys/{old_id}/rotate"),
            session(&account),
            None,
        )
        .await;
    let new = reply.expect(201).clone();
    let mut expected: BTreeSet<&str> = VIEW_FIELDS.into_iter().collect();
    expected.insert("key");
    assert_eq!(field_names(&new), expected);
    let new_id = str_of(&new, "id");
    let new_key = str_of(&new, "key");
    assert!(new_id.starts_with("key_"));
    assert_ne!(new_id, old_id);
    assert_ne!(new_key, old_key);
    for field in ["name", "description", "scopes", "meta"] {
        assert_eq!(new[field], old[field], "{field}");
    }
    assert_eq!(new["status"], "active");
    assert!(new["expires_at"].is_null());
    assert!(new["last_used_at"].is_null());
    assert_eq!(new["start"], &new_key[..8]);

    assert_eq!(verify_code(&app, old_key, None).await, "REVOKED");
    assert_eq!(verify_code(&app, new_key, None).await, "VALID");
    app.get("/v1/auth/me", Auth::Bearer(old_key))
        .await
        .expect_problem(401, "invalid_api_key");
    assert_eq!(ids(&list(&app, session(&account), "").await), [new_id]);

    // An empty object: grace 0 as well.
    let newer = app
        .post(
            &format!("/v1/keys/{new_id}/rotate"),
            session(&account),
            json!({}),
        )
        .await;
    let newer = newer.expect(201);
    assert_eq!(verify_code(&app, new_key, None).await, "REVOKED");
    assert_eq!(verify_code(&app, str_of(newer, "key"), None).await, "VALID");
}

#[tokio::test]
async fn rotate_with_a_grace_period_lets_the_old_key_live_until_it_ends() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (old_id, old_key) = new_key(&app, &account, json!({"name": "svc"})).await;
    let rotated_at = now(&app);
    let new = app
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            session(&account),
            json!({"grace_period_seconds": 60}),
        )
        .await;
    let new_key = str_of(new.expect(201), "key").to_owned();

    assert_eq!(verify_code(&app, &old_key, None).await, "VALID");
    assert_eq!(verify_code(&app, &new_key, None).await, "VALID");
    let old = app.get(&key_path(&old_id), session(&account)).await;
    let old = old.expect(200);
    assert_eq!(old["status"], "active");
    let ends = epoch(&old["expires_at"]);
    assert!(
        (rotated_at + 60..=now(&app) + 60).contains(&ends),
        "{}",
        old["expires_at"]
    );

    app.clock.advance(61);
    assert_eq!(verify_code(&app, &old_key, None).await, "EXPIRED");
    assert_eq!(verify_code(&app, &new_key, None).await, "VALID");
    app.get("/v1/auth/me", Auth::Bearer(&old_key))
        .await
        .expect_problem(401, "invalid_api_key");
    let old = app.get(&key_path(&old_id), session(&account)).await;
    assert_eq!(old.expect(200)["status"], "expired");
    // An expired key cannot be rotated again.
    app.post(
        &format!("/v1/keys/{old_id}/rotate"),
        session(&account),
        json!({}),
    )
    .await
    .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn a_rotated_key_keeps_its_lifetime_from_the_rotation() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, _) = new_key(
        &app,
        &account,
        json!({"name": "week", "expires_in_days": 7}),
    )
    .await;
    app.clock.advance(2 * DAY);
    let account = log_in_again(&app, &account).await;
    let before = now(&app);
    let new = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            session(&account),
            json!({}),
        )
        .await;
    let new = new.expect(201);
    let expires = epoch(&new["expires_at"]);
    assert!(
        (before + 7 * DAY..=now(&app) + 7 * DAY).contains(&expires),
        "expires_at {} should be 7 days after the rotation",
        new["expires_at"]
    );
    assert_eq!(expires - epoch(&new["created_at"]), 7 * DAY);
}

#[tokio::test]
async fn rotate_refuses_revoked_keys_and_bad_grace_periods() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "svc"})).await;
    let rotate = format!("/v1/keys/{id}/rotate");
    for body in [
        json!({"grace_period_seconds": -1}),
        json!({"grace_period_seconds": "60"}),
        json!({"grace_period_seconds": 1.5}),
    ] {
        app.post(&rotate, session(&account), body)
            .await
            .expect_field_error("grace_period_seconds");
    }
    app.post(&rotate, session(&account), json!({"grace": 5}))
        .await
        .expect_field_error("grace");
    // None of those rotated anything.
    assert_eq!(verify_code(&app, &secret, None).await, "VALID");
    assert_eq!(list(&app, session(&account), "").await.len(), 1);

    app.delete(&key_path(&id), session(&account))
        .await
        .expect(204);
    app.post(&rotate, session(&account), json!({}))
        .await
        .expect_problem(422, "validation_failed");
    assert!(list(&app, session(&account), "").await.is_empty());
}

// ---------------------------------------------------------------- verify

#[tokio::test]
async fn verify_valid_describes_the_key() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "svc", "scopes": ["read", "files:write"], "meta": {"plan": "pro"},
                   "expires_in_days": 30}),
        )
        .await;
    let answer = app.verify(str_of(&created, "key"), None).await;
    assert_eq!(answer["valid"], true);
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["key_id"], created["id"]);
    assert_eq!(answer["tenant_id"], account.tenant_id.as_str());
    assert_eq!(answer["user_id"], account.user_id.as_str());
    assert_eq!(answer["expires_at"], created["expires_at"]);
    assert_eq!(answer["meta"], json!({"plan": "pro"}));
    let scopes: BTreeSet<&str> = answer["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes, BTreeSet::from(["read", "files:write"]));
    assert!(!answer.to_string().contains(str_of(&created, "key")));

    let plain = app.create_key(&account, json!({"name": "plain"})).await;
    let answer = app.verify(str_of(&plain, "key"), None).await;
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["scopes"], json!(["admin"]));
    assert!(answer["expires_at"].is_null());
    assert!(answer["meta"].is_null());
}

#[tokio::test]
async fn verify_answers_not_found_for_unknown_empty_and_malformed_keys() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, secret) = new_key(&app, &account, json!({"name": "real"})).await;

    let mut candidates = vec![
        forged_default_key("0123456789ABCDEFGHIJabcdefghijkl"),
        String::new(),
        "garbage".to_owned(),
        "kw_".to_owned(),
        format!("{secret}x"),
        secret[..secret.len() - 1].to_owned(),
        format!("xx_{}", &secret[3..]),
        secret.to_uppercase(),
        format!(" {secret}"),
    ];
    // One checksum character changed; one body character changed.
    for index in [secret.len() - 1, secret.len() - 6, 10] {
        let mut bytes = secret.clone().into_bytes();
        bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
        candidates.push(String::from_utf8(bytes).unwrap());
    }
    for candidate in candidates {
        let reply = app
            .post("/v1/keys/verify", Auth::None, json!({"key": candidate}))
            .await;
        assert_eq!(
            reply.expect(200),
            &json!({"valid": false, "code": "NOT_FOUND"}),
            "{candidate:?}"
        );
    }
    // The real key is still fine.
    assert_eq!(verify_code(&app, &secret, None).await, "VALID");
}

#[tokio::test]
async fn verify_reports_expired_keys() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "day", "expires_in_days": 1})).await;
    app.clock.advance(DAY - 30);
    assert_eq!(verify_code(&app, &secret, None).await, "VALID");
    app.clock.advance(31);
    let answer = app.verify(&secret, None).await;
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["code"], "EXPIRED");
    app.get("/v1/auth/me", Auth::Bearer(&secret))
        .await
        .expect_problem(401, "invalid_api_key");
    let account = log_in_again(&app, &account).await;
    let one = app.get(&key_path(&id), session(&account)).await;
    assert_eq!(one.expect(200)["status"], "expired");
    let listed = list(&app, session(&account), "").await;
    assert_eq!(listed.len(), 1, "expired keys are still listed");
    assert_eq!(listed[0]["status"], "expired");
}

#[tokio::test]
async fn verify_applies_the_scope_hierarchy() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, read) = new_key(&app, &account, json!({"name": "r", "scopes": ["read"]})).await;
    let (_, write) = new_key(&app, &account, json!({"name": "w", "scopes": ["write"]})).await;
    let (_, admin) = new_key(&app, &account, json!({"name": "a"})).await;
    let (files_id, files) = new_key(
        &app,
        &account,
        json!({"name": "f", "scopes": ["files:write"]}),
    )
    .await;

    let cases: [(&str, Value, &str); 14] = [
        (&read, json!(["read"]), "VALID"),
        (&read, json!(["write"]), "INSUFFICIENT_SCOPE"),
        (&read, json!(["admin"]), "INSUFFICIENT_SCOPE"),
        (&write, json!(["read"]), "VALID"),
        (&write, json!(["read", "write"]), "VALID"),
        (&write, json!(["admin"]), "INSUFFICIENT_SCOPE"),
        (&write, json!(["files:write"]), "INSUFFICIENT_SCOPE"),
        (&admin, json!(["files:write"]), "VALID"),
        (&admin, json!(["read", "write", "admin", "x"]), "VALID"),
        (&files, json!(["files:write"]), "VALID"),
        (&files, json!(["files:read"]), "INSUFFICIENT_SCOPE"),
        (&files, json!(["read"]), "INSUFFICIENT_SCOPE"),
        (
            &files,
            json!(["files:write", "files"]),
            "INSUFFICIENT_SCOPE",
        ),
        (&files, json!([]), "VALID"),
    ];
    for (key, scopes, code) in cases {
        assert_eq!(
            verify_code(&app, key, Some(scopes.clone())).await,
            code,
            "{key} asked {scopes}"
        );
    }
    let answer = app.verify(&files, Some(json!(["files:read"]))).await;
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["key_id"], files_id.as_str());
    assert_eq!(answer["scopes"], json!(["files:write"]));

    app.post(
        "/v1/keys/verify",
        Auth::None,
        json!({"key": read, "scopes": ["Not A Scope"]}),
    )
    .await
    .expect_field_error("scopes");
}

#[tokio::test]
async fn verify_needs_a_json_body_with_a_key() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (_, secret) = new_key(&app, &account, json!({"name": "real"})).await;
    app.post("/v1/keys/verify", Auth::None, json!({}))
        .await
        .expect_field_error("key");
    app.post("/v1/keys/verify", Auth::None, json!({"scopes": ["read"]}))
        .await
        .expect_field_error("key");
    app.post("/v1/keys/verify", Auth::None, json!({"key": 42}))
        .await
        .expect_field_error("key");
    app.post(
        "/v1/keys/verify",
        Auth::None,
        json!({"key": secret, "extra": true}),
    )
    .await
    .expect_field_error("extra");

    post_raw(&app, "/v1/keys/verify", Some("application/json"), "{nope")
        .await
        .expect_problem(400, "invalid_request");
    post_raw(&app, "/v1/keys/verify", Some("application/json"), "[1]")
        .await
        .expect_problem(400, "invalid_request");
    let body = json!({"key": secret}).to_string();
    post_raw(&app, "/v1/keys/verify", Some("text/plain"), &body)
        .await
        .expect_problem(400, "invalid_request");
    post_raw(&app, "/v1/keys/verify", None, &body)
        .await
        .expect_problem(400, "invalid_request");
    // The same body as JSON works.
    post_raw(&app, "/v1/keys/verify", Some("application/json"), &body)
        .await
        .expect(200);
}

// ---------------------------------------------------------------- credentials

#[tokio::test]
async fn a_key_works_as_bearer_and_x_api_key_but_never_in_the_url() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "cli", "scopes": ["read"]})).await;

    for auth in [Auth::Bearer(&secret), Auth::ApiKey(&secret)] {
        let me = app.get("/v1/auth/me", auth).await;
        let me = me.expect(200);
        assert_eq!(me["auth"]["method"], "api_key");
        assert_eq!(me["auth"]["key_id"], id.as_str());
        assert_eq!(me["auth"]["scopes"], json!(["read"]));
        assert_eq!(me["user"]["id"], account.user_id.as_str());
        assert_eq!(me["tenant"]["id"], account.tenant_id.as_str());
    }

    // A credential in a URL is refused as such (422 naming the parameter; see attacks.rs).
    for query in ["api_key", "key", "access_token", "token"] {
        let reply = app
            .get(&format!("/v1/auth/me?{query}={secret}"), Auth::None)
            .await;
        reply.expect_field_error(query);
        app.get(&format!("/v1/keys?{query}={secret}"), Auth::None)
            .await
            .expect_field_error(query);
    }
    app.get(
        &format!("/v1/auth/me?access_token={}", account.access_token),
        Auth::None,
    )
    .await
    .expect_field_error("access_token");

    // A wrong key in a header is refused as such.
    let forged = forged_default_key("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz");
    for auth in [Auth::Bearer(&forged), Auth::ApiKey(&forged)] {
        let reply = app.get("/v1/auth/me", auth).await;
        reply.expect_problem(401, "invalid_api_key");
        assert!(reply
            .header("www-authenticate")
            .is_some_and(|c| c.contains(r#"error="invalid_token""#)));
    }
}

// ---------------------------------------------------------------- last_used_at

/// Polls `GET /v1/keys/{id}` every 200 ms for up to 5 s until `last_used_at` differs from
/// `previous`; returns it.
async fn wait_for_last_used(app: &TestApp, account: &Account, id: &str, previous: &Value) -> Value {
    for _ in 0..25 {
        let reply = app.get(&key_path(id), session(account)).await;
        let current = reply.expect(200)["last_used_at"].clone();
        if &current != previous {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("last_used_at stayed {previous} for 5 s");
}

#[tokio::test]
async fn last_used_at_shows_the_first_use_then_changes_at_most_once_a_minute() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "used"})).await;
    let fresh = app.get(&key_path(&id), session(&account)).await;
    assert!(fresh.expect(200)["last_used_at"].is_null());

    let first_use = now(&app);
    assert_eq!(verify_code(&app, &secret, None).await, "VALID");
    let first = wait_for_last_used(&app, &account, &id, &Value::Null).await;
    let first_at = epoch(&first);
    assert!(
        (first_use..=now(&app)).contains(&first_at),
        "{first} vs {first_use}"
    );
    let listed = list(&app, session(&account), "").await;
    assert_eq!(listed[0]["last_used_at"], first);

    // Half a minute later, more uses (all three ways) leave it alone.
    app.clock.advance(30);
    assert_eq!(verify_code(&app, &secret, None).await, "VALID");
    app.get("/v1/auth/me", Auth::Bearer(&secret))
        .await
        .expect(200);
    app.get("/v1/keys", Auth::ApiKey(&secret)).await.expect(200);
    // The server writes uses once a second: give it a few chances to (wrongly) write.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = app.get(&key_path(&id), session(&account)).await;
    assert_eq!(still.expect(200)["last_used_at"], first);

    // Past the minute, the next use shows.
    app.clock.advance(61);
    app.get("/v1/auth/me", Auth::ApiKey(&secret))
        .await
        .expect(200);
    let second = wait_for_last_used(&app, &account, &id, &first).await;
    assert!(
        epoch(&second) >= first_at + 91,
        "{second} should be ≥ 91 s after {first}"
    );
}

// ---------------------------------------------------------------- configured formats

#[tokio::test]
async fn a_prefixed_hex_format_without_checksum_is_configurable() {
    let app = spawn_app_with(|settings| {
        settings.keys.prefix = "ax_".into();
        settings.keys.alphabet = "hex".into();
        settings.keys.length = 48;
        settings.keys.checksum = false;
    })
    .await;
    let account = app.register("ada@example.com").await;
    let created = app.create_key(&account, json!({"name": "ax"})).await;
    let secret = str_of(&created, "key");
    assert_eq!(secret.len(), 51, "{secret}");
    assert!(secret.starts_with("ax_"));
    assert!(
        secret[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert_eq!(created["start"], &secret[..8]);
    assert_eq!(created["end"], &secret[47..]);
    assert_eq!(verify_code(&app, secret, None).await, "VALID");
    let me = app.get("/v1/auth/me", Auth::Bearer(secret)).await;
    assert_eq!(me.expect(200)["auth"]["key_id"], created["id"]);

    // Other shapes are not keys of this deployment.
    let default_shaped = forged_default_key("0123456789ABCDEFGHIJabcdefghijkl");
    for candidate in [
        secret.to_uppercase(),
        default_shaped,
        format!("kw_{}", &secret[3..]),
        secret[..50].to_owned(),
    ] {
        assert_eq!(verify_code(&app, &candidate, None).await, "NOT_FOUND");
    }
}

#[tokio::test]
async fn a_bare_hex_format_is_configurable() {
    let app = spawn_app_with(|settings| {
        settings.keys.prefix = String::new();
        settings.keys.alphabet = "hex".into();
        settings.keys.length = 64;
        settings.keys.checksum = false;
    })
    .await;
    let account = app.register("ada@example.com").await;
    let created = app.create_key(&account, json!({"name": "bare"})).await;
    let secret = str_of(&created, "key");
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert_eq!(
        created["masked"],
        format!("{}…{}", &secret[..8], &secret[60..])
    );
    assert_eq!(verify_code(&app, secret, None).await, "VALID");
    for auth in [Auth::Bearer(secret), Auth::ApiKey(secret)] {
        app.get("/v1/auth/me", auth).await.expect(200);
    }
    assert_eq!(
        verify_code(&app, &secret.to_uppercase(), None).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_hex_format_with_checksum_appends_eight_hex_digits_of_crc32() {
    let app = spawn_app_with(|settings| {
        settings.keys.prefix = "sk_live_".into();
        settings.keys.alphabet = "hex".into();
        settings.keys.length = 40;
        settings.keys.checksum = true;
    })
    .await;
    let account = app.register("ada@example.com").await;
    let created = app.create_key(&account, json!({"name": "hexsum"})).await;
    let secret = str_of(&created, "key");
    assert_eq!(secret.len(), 8 + 40 + 8, "{secret}");
    let (head, checksum) = secret.split_at(48);
    assert!(head.starts_with("sk_live_"));
    assert_eq!(checksum, format!("{:08x}", crc32(head.as_bytes())));
    assert_eq!(verify_code(&app, secret, None).await, "VALID");
    let wrong = format!("{head}{:08x}", crc32(head.as_bytes()) ^ 1);
    assert_eq!(verify_code(&app, &wrong, None).await, "NOT_FOUND");
}

// ---------------------------------------------------------------- races

/// Sends `count` copies of one POST at once; returns the statuses.
async fn post_at_once(
    app: &TestApp,
    path: &str,
    token: &str,
    body: Value,
    count: usize,
) -> Vec<u16> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let request = app.http.post(app.url(path)).bearer_auth(token).json(&body);
            tokio::spawn(async move { request.send().await.expect("sent").status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    statuses.sort_unstable();
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_pass_the_key_limit() {
    let app = spawn_app_with(|settings| settings.keys.max_per_user = 3).await;
    let account = app.register("ada@example.com").await;
    let statuses = post_at_once(
        &app,
        "/v1/keys",
        &account.access_token,
        json!({"name": "racer"}),
        8,
    )
    .await;
    assert_eq!(statuses, [201, 201, 201, 409, 409, 409, 409, 409]);
    assert_eq!(list(&app, session(&account), "").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_of_one_key_make_exactly_one_new_key() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (id, secret) = new_key(&app, &account, json!({"name": "svc"})).await;
    let statuses = post_at_once(
        &app,
        &format!("/v1/keys/{id}/rotate"),
        &account.access_token,
        json!({}),
        5,
    )
    .await;
    assert_eq!(statuses, [201, 422, 422, 422, 422]);
    assert_eq!(verify_code(&app, &secret, None).await, "REVOKED");
    let keys = list(&app, session(&account), "").await;
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0]["id"], id.as_str());
}
