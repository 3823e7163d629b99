// Leak reports (issue 9): a reported live key is revoked on every path (verify answers
// REVOKED), its owner's audit log and webhook hear of it, and nothing else is revealed;
// GitHub's secret-scanning reports are checked against their ECDSA P-256 signature.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{json, Value};

use super::kit::*;

/// A GitHub secret-scanning signing key, and its settings entry.
struct GithubKey {
    identifier: String,
    signing: p256::ecdsa::SigningKey,
}

impl GithubKey {
    fn new(identifier: &str) -> Self {
        Self {
            identifier: identifier.to_owned(),
            signing: p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    fn setting(&self) -> keyward_server::config::GithubPublicKeySettings {
        keyward_server::config::GithubPublicKeySettings {
            key_identifier: self.identifier.clone(),
            key: self
                .signing
                .verifying_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap(),
        }
    }

    /// The `Github-Public-Key-Signature` of `body`.
    fn sign(&self, body: &[u8]) -> String {
        let signature: p256::ecdsa::Signature = self.signing.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

async fn post_github(
    app: &TestApp,
    body: &[u8],
    identifier: Option<&str>,
    signature: Option<&str>,
) -> Reply {
    let mut request = app
        .http
        .post(app.url("/v1/leaks/github"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(identifier) = identifier {
        request = request.header("Github-Public-Key-Identifier", identifier);
    }
    if let Some(signature) = signature {
        request = request.header("Github-Public-Key-Signature", signature);
    }
    TestApp::read(request.send().await.expect("request sent")).await
}

async fn audit_events(app: &TestApp, account: &Account) -> Vec<Value> {
    app.get("/v1/audit", Auth::Bearer(&account.access_token))
        .await
        .expect(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_reported_live_key_is_revoked_audited_and_announced() {
    let app = spawn_app_with(webhook_settings).await;
    let ada = app.register("ada@example.com").await;
    let hooks = receiver(&[]).await;
    app.create_webhook(&ada, &hooks.url, &["key.leaked", "key.revoked"])
        .await;
    let created = app.create_key(&ada, json!({"name": "ci"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(app.verify(&key, None).await["code"], "VALID");

    let reply = app
        .post(
            "/v1/leaks",
            Auth::None,
            json!({"key": key, "url": "https://gist.example.com/leak"}),
        )
        .await;
    assert_eq!(reply.expect(200), &json!({"label": "true_positive"}));
    // Revoked at once, on the same path as DELETE.
    let verified = app.verify(&key, None).await;
    assert_eq!(verified["code"], "REVOKED");
    app.get("/v1/auth/me", Auth::ApiKey(&key))
        .await
        .expect_problem(401, "invalid_api_key");
    // The owner's audit log says who and where; never the key.
    let events = audit_events(&app, &ada).await;
    let leaked = events
        .iter()
        .find(|e| e["type"] == "key.leaked")
        .expect("a key.leaked event");
    assert_eq!(leaked["key_id"], key_id.as_str());
    assert_eq!(leaked["actor"], "leak_report");
    let detail = leaked["detail"].as_str().unwrap();
    assert!(
        detail.contains("https://gist.example.com/leak") && detail.contains("revoked"),
        "{detail}"
    );
    assert!(events
        .iter()
        .any(|e| e["type"] == "key.revoked" && e["key_id"] == key_id.as_str()));
    // The webhook hears of the leak and of the revocation.
    let received = hooks.wait_for(2).await;
    let payloads: Vec<Value> = received.iter().map(Received::json).collect();
    let leak = payloads
        .iter()
        .find(|p| p["type"] == "key.leaked")
        .expect("key.leaked delivered");
    assert_eq!(leak["data"]["key_id"], key_id.as_str());
    assert_eq!(leak["data"]["url"], "https://gist.example.com/leak");
    assert_eq!(leak["data"]["source"], "report");
    assert_eq!(leak["data"]["revoked"], true);
    assert!(payloads.iter().any(|p| p["type"] == "key.revoked"));
    for delivery in &received {
        assert!(!delivery.body.contains(&key));
    }

    // Reported again, it is no longer live: the answer says only that.
    let again = app.post("/v1/leaks", Auth::None, json!({"key": key})).await;
    assert_eq!(again.expect(200), &json!({"label": "false_positive"}));
}

#[tokio::test]
async fn keys_that_are_not_live_are_false_positives_and_change_nothing() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let created = app.create_key(&ada, json!({"name": "ci"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    // The same key with its checksum broken, a well-formed unknown key, random text.
    let mut broken = key.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == 'a' { 'b' } else { 'a' });
    let unknown = keyward_core::KeyFormat::default().generate();
    for presented in [
        broken.as_str(),
        unknown.expose(),
        "kw_not_a_key",
        "",
        "ghp_0123456789abcdef0123456789abcdef0123",
    ] {
        let reply = app
            .post("/v1/leaks", Auth::None, json!({"key": presented}))
            .await;
        assert_eq!(
            reply.expect(200),
            &json!({"label": "false_positive"}),
            "{presented}"
        );
    }
    assert_eq!(app.verify(&key, None).await["code"], "VALID");
    assert!(!audit_events(&app, &ada)
        .await
        .iter()
        .any(|e| e["type"] == "key.leaked"));

    // The body's refusals.
    app.post("/v1/leaks", Auth::None, json!({}))
        .await
        .expect_field_error("key");
    app.post("/v1/leaks", Auth::None, json!({"key": key, "extra": 1}))
        .await
        .expect_field_error("extra");
    app.post(
        "/v1/leaks",
        Auth::None,
        json!({"key": key, "url": "x".repeat(2049)}),
    )
    .await
    .expect_field_error("url");
    let not_json = app
        .http
        .post(app.url("/v1/leaks"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    TestApp::read(not_json)
        .await
        .expect_problem(400, "invalid_request");
    assert_eq!(app.verify(&key, None).await["code"], "VALID");
}

#[tokio::test]
async fn with_auto_revoke_off_a_reported_key_stays_live_and_is_recorded() {
    let app = spawn_app_with(|settings| settings.leaks.auto_revoke = false).await;
    let ada = app.register("ada@example.com").await;
    let created = app.create_key(&ada, json!({"name": "ci"})).await;
    let key = created["key"].as_str().unwrap();
    let reply = app.post("/v1/leaks", Auth::None, json!({"key": key})).await;
    assert_eq!(reply.expect(200), &json!({"label": "true_positive"}));
    assert_eq!(app.verify(key, None).await["code"], "VALID");
    let events = audit_events(&app, &ada).await;
    let leaked = events
        .iter()
        .find(|e| e["type"] == "key.leaked")
        .expect("a key.leaked event");
    assert!(leaked["detail"].as_str().unwrap().contains("auto_revoke"));
    assert!(!events.iter().any(|e| e["type"] == "key.revoked"));
}

#[tokio::test]
async fn leak_reports_are_throttled_per_address() {
    let app = spawn_app_with(|settings| {
        settings.rate_limits.leak_reports_per_address = keyward_server::config::Rate::new(2, 3600);
    })
    .await;
    for _ in 0..2 {
        app.post("/v1/leaks", Auth::None, json!({"key": "kw_nothing"}))
            .await
            .expect(200);
    }
    let limited = app
        .post("/v1/leaks", Auth::None, json!({"key": "kw_nothing"}))
        .await;
    limited.expect_problem(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn github_reports_are_answered_only_when_signed_by_a_configured_key() {
    let github = GithubKey::new("bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c");
    let other = GithubKey::new("other");
    let (setting, other_setting) = (github.setting(), other.setting());
    let app = spawn_app_with(move |settings| {
        settings.leaks.github_public_keys = vec![other_setting, setting];
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let created = app.create_key(&ada, json!({"name": "ci"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let report = serde_json::to_vec(&json!([
        {"token": key, "type": "keyward_api_key", "url": "https://github.com/o/r/blob/x/a.env", "source": "content"},
        {"token": "kw_not_a_key", "type": "keyward_api_key", "url": "https://github.com/o/r", "source": "commit"},
    ]))
    .unwrap();

    // Unsigned, forged, or signed by an unknown key: 401, and the key stays live.
    post_github(&app, &report, None, None)
        .await
        .expect_problem(401, "missing_credentials");
    post_github(&app, &report, Some(&github.identifier), None)
        .await
        .expect_problem(401, "missing_credentials");
    let forged = github.sign(b"[]");
    post_github(&app, &report, Some(&github.identifier), Some(&forged))
        .await
        .expect_problem(401, "invalid_token");
    let by_other = other.sign(&report);
    post_github(&app, &report, Some(&github.identifier), Some(&by_other))
        .await
        .expect_problem(401, "invalid_token");
    let signed = github.sign(&report);
    post_github(&app, &report, Some("unknown"), Some(&signed))
        .await
        .expect_problem(401, "invalid_token");
    post_github(&app, &report, Some(&github.identifier), Some("not base64!"))
        .await
        .expect_problem(401, "invalid_token");
    assert_eq!(app.verify(&key, None).await["code"], "VALID");

    // Signed: each token labelled, in order; the live one revoked.
    let reply = post_github(&app, &report, Some(&github.identifier), Some(&signed)).await;
    assert_eq!(
        reply.expect(200),
        &json!([
            {"token_raw": key, "token_type": "keyward_api_key", "label": "true_positive"},
            {"token_raw": "kw_not_a_key", "token_type": "keyward_api_key", "label": "false_positive"},
        ])
    );
    assert_eq!(app.verify(&key, None).await["code"], "REVOKED");
    let events = audit_events(&app, &ada).await;
    let leaked = events
        .iter()
        .find(|e| e["type"] == "key.leaked")
        .expect("a key.leaked event");
    assert!(leaked["detail"].as_str().unwrap().contains("github"));

    // Signed bodies that are not reports.
    for (body, status) in [
        (&b"{\"token\": 1}"[..], 400),
        (&b"not json"[..], 400),
        (&b"[{\"type\": \"x\"}]"[..], 422),
    ] {
        let signature = github.sign(body);
        let reply = post_github(&app, body, Some(&github.identifier), Some(&signature)).await;
        let code = if status == 400 {
            "invalid_request"
        } else {
            "validation_failed"
        };
        reply.expect_problem(status, code);
    }
    // The other configured key works too.
    let empty = b"[]";
    let reply = post_github(&app, empty, Some("other"), Some(&other.sign(empty))).await;
    assert_eq!(reply.expect(200), &json!([]));
}

#[tokio::test]
async fn github_reports_are_refused_when_no_key_is_configured() {
    let app = spawn_app().await;
    let github = GithubKey::new("k1");
    let body = b"[]";
    post_github(&app, body, Some("k1"), Some(&github.sign(body)))
        .await
        .expect_problem(401, "invalid_token");
}

#[test]
fn a_bad_github_key_setting_stops_start_up_naming_it() {
    let mut settings = keyward_server::Settings::default();
    settings.leaks.github_public_keys = vec![keyward_server::config::GithubPublicKeySettings {
        key_identifier: "k1".into(),
        key: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n".into(),
    }];
    let error = keyward_server::Config::from_settings(settings)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("leaks.github_public_keys[0].key"),
        "{error}"
    );
}

#[tokio::test]
async fn github_reports_over_the_body_limit_are_413() {
    let github = GithubKey::new("k1");
    let setting = github.setting();
    let app =
        spawn_app_with(move |settings| settings.leaks.github_public_keys = vec![setting]).await;
    let item = json!({"token": "kw_x", "type": "keyward_api_key", "url": "https://github.com/o/r", "source": "content"});
    let body = serde_json::to_vec(&vec![item; 1_000]).unwrap();
    assert!(body.len() > 65_536);
    let signature = github.sign(&body);
    post_github(&app, &body, Some("k1"), Some(&signature))
        .await
        .expect_problem(413, "payload_too_large");
}
