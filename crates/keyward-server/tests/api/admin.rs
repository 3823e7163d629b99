// Operator commands (issue 8): disabling and enabling a user, rotating the signing key, and the
// password-hash upgrade at login. The commands run as `keyward admin …` runs them: through
// `keyward_server::admin` on a store of their own opened on the server's database, while the
// servers keep running.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::store::Store;
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers

/// The `public_url` of both instances: one service behind one address.
const PUBLIC_URL: &str = "http://keyward.test";

/// A server on a fresh database; `configure` adjusts its settings first.
async fn instance(configure: impl FnOnce(&mut keyward_server::Settings)) -> TestApp {
    spawn_app_with(|settings| {
        settings.public_url = Some(PUBLIC_URL.into());
        configure(settings);
    })
    .await
}

/// A second instance on `a`'s database, sharing `a`'s clock. `spawn_with_clock` keeps a database
/// of its own alive: an unused empty one.
async fn second_instance(a: &TestApp) -> TestApp {
    second_instance_with(a, |_| {}).await
}

/// [`second_instance`] whose settings `configure` adjusts first.
async fn second_instance_with(
    a: &TestApp,
    configure: impl FnOnce(&mut keyward_server::Settings),
) -> TestApp {
    let mut settings = keyward_server::Settings {
        listen: "127.0.0.1:0".into(),
        database_url: a.database_url(),
        public_url: Some(PUBLIC_URL.into()),
        ..Default::default()
    };
    settings.database.max_connections = 4;
    configure(&mut settings);
    spawn_with_clock(settings, a.clock.clone(), BACKEND, fresh_database().await).await
}

/// Keys in `app`'s verification cache.
fn cached_keys(app: &TestApp) -> u64 {
    let server = app.server.as_ref().expect("running");
    server.state.keys.cache().stats().entries
}

/// What `keyward admin` runs with: the configuration of `app`'s database, and a store of its
/// own on it (not the server's).
async fn operator(app: &TestApp) -> (keyward_server::Config, Arc<dyn Store>) {
    let config = keyward_server::Config::from_settings(keyward_server::Settings {
        database_url: app.database_url(),
        ..Default::default()
    })
    .expect("valid config");
    let store = keyward_server::admin::open_store(&config)
        .await
        .expect("the operator opens the database");
    (config, store)
}

fn email(address: &str) -> keyward_core::Email {
    keyward_core::Email::parse(address).expect("an email")
}

async fn login(app: &TestApp, email: &str, password: &str) -> Reply {
    app.post(
        "/v1/auth/login",
        Auth::None,
        json!({"email": email, "password": password}),
    )
    .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Reply {
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": refresh_token}),
    )
    .await
}

fn string(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} should be a string in {value}"))
        .to_owned()
}

/// The `kid` in an access token's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    string(&serde_json::from_slice(&bytes).expect("JSON header"), "kid")
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks = app.get("/.well-known/jwks.json", Auth::None).await;
    jwks.expect(200)["keys"]
        .as_array()
        .expect("keys[]")
        .iter()
        .map(|key| string(key, "kid"))
        .collect()
}

/// Everything `app` must refuse of a disabled user, and accept again once enabled.
struct Credentials {
    access_token: String,
    key: String,
}

async fn expect_accepted(app: &TestApp, user_id: &str, credentials: &Credentials) {
    let me = app
        .get("/v1/auth/me", Auth::Bearer(&credentials.access_token))
        .await;
    assert_eq!(me.expect(200)["user"]["id"], user_id);
    let me = app.get("/v1/auth/me", Auth::ApiKey(&credentials.key)).await;
    assert_eq!(me.expect(200)["user"]["id"], user_id);
    let verified = app.verify(&credentials.key, None).await;
    assert_eq!(verified["code"], "VALID", "{verified}");
    assert_eq!(verified["user_id"], user_id, "{verified}");
}

async fn expect_refused(app: &TestApp, credentials: &Credentials) {
    app.get("/v1/auth/me", Auth::Bearer(&credentials.access_token))
        .await
        .expect_problem(401, "invalid_token");
    app.get("/v1/auth/me", Auth::ApiKey(&credentials.key))
        .await
        .expect_problem(401, "invalid_api_key");
    app.get("/v1/keys", Auth::Bearer(&credentials.key))
        .await
        .expect_problem(401, "invalid_api_key");
    // As an unknown key: a disabled user's keys do not load (README, "Choices").
    let verified = app.verify(&credentials.key, None).await;
    assert_eq!(
        verified,
        json!({"valid": false, "code": "NOT_FOUND"}),
        "{verified}"
    );
}

// ---------------------------------------------------------------- disable / enable

#[tokio::test]
async fn disabling_a_user_ends_sessions_and_keys_on_every_instance_until_enabled() {
    let a = instance(|_| {}).await;
    let b = second_instance(&a).await;
    let ada = a.register("ada@example.com").await;
    let key = string(&a.create_key(&ada, json!({"name": "ci"})).await, "key");
    let bob = a.register("bob@example.com").await;
    let bob_key = string(&a.create_key(&bob, json!({"name": "ci"})).await, "key");
    // A second session, opened on the other instance.
    let second = login(&b, &ada.email, PASSWORD).await;
    let second = second.expect(200).clone();
    let credentials = Credentials {
        access_token: ada.access_token.clone(),
        key: key.clone(),
    };
    // Both instances now hold the key in their caches.
    expect_accepted(&a, &ada.user_id, &credentials).await;
    expect_accepted(&b, &ada.user_id, &credentials).await;

    let (_config, store) = operator(&a).await;
    let done =
        keyward_server::admin::disable_user(store.as_ref(), &a.clock, &email("ADA@example.com"))
            .await
            .expect("disable")
            .expect("the user exists");
    assert_eq!(done.user_id.as_str(), ada.user_id);
    assert!(done.newly_disabled);
    assert_eq!(done.sessions_revoked, 2);
    assert_eq!(done.keys_stopped, 1);

    for app in [&a, &b] {
        expect_refused(app, &credentials).await;
        app.get(
            "/v1/auth/me",
            Auth::Bearer(&string(&second, "access_token")),
        )
        .await
        .expect_problem(401, "invalid_token");
        refresh(app, &ada.refresh_token)
            .await
            .expect_problem(401, "invalid_token");
        refresh(app, &string(&second, "refresh_token"))
            .await
            .expect_problem(401, "invalid_token");
    }
    // The right password learns that the account is disabled; a wrong one learns nothing.
    let refused = login(&a, &ada.email, PASSWORD).await;
    refused.expect_problem(403, "forbidden");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{}",
        refused.text
    );
    login(&b, &ada.email, "wrong horse battery staple")
        .await
        .expect_problem(401, "invalid_credentials");
    // Other users are untouched.
    assert_eq!(b.verify(&bob_key, None).await["code"], "VALID");
    a.get("/v1/auth/me", Auth::Bearer(&bob.access_token))
        .await
        .expect(200);
    // An instance started now preloads every live key in creation order, but not the disabled
    // user's: once bob's (created after ada's) is in its cache, ada's was passed over.
    let c = second_instance(&a).await;
    for _ in 0..100 {
        if cached_keys(&c) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cached_keys(&c), 1, "only bob's key is preloaded");
    expect_refused(&c, &credentials).await;

    // Disabling again changes nothing and says so.
    let again =
        keyward_server::admin::disable_user(store.as_ref(), &a.clock, &email("ada@example.com"))
            .await
            .expect("disable")
            .expect("the user exists");
    assert!(!again.newly_disabled);
    assert_eq!(again.sessions_revoked, 0);
    // An unknown email is told apart.
    assert!(keyward_server::admin::disable_user(
        store.as_ref(),
        &a.clock,
        &email("eve@example.com")
    )
    .await
    .expect("disable")
    .is_none());

    let enabled = keyward_server::admin::enable_user(store.as_ref(), &email("ada@example.com"))
        .await
        .expect("enable");
    assert_eq!(enabled, Some(true));
    assert_eq!(
        keyward_server::admin::enable_user(store.as_ref(), &email("ada@example.com"))
            .await
            .expect("enable"),
        Some(false)
    );
    store.close().await;

    // Ended sessions stay ended; a new login works, and the key works again everywhere.
    refresh(&a, &ada.refresh_token)
        .await
        .expect_problem(401, "invalid_token");
    let fresh = login(&b, &ada.email, PASSWORD).await;
    let credentials = Credentials {
        access_token: string(fresh.expect(200), "access_token"),
        key,
    };
    for app in [&a, &b, &c] {
        expect_accepted(app, &ada.user_id, &credentials).await;
    }
}

#[tokio::test]
async fn the_console_refuses_a_disabled_users_session() {
    let app = instance(|_| {}).await;
    let ada = app.register("ada@example.com").await;
    let page = |access: &str, refresh: &str| {
        app.http
            .get(app.url("/console/api-keys"))
            .header(
                "cookie",
                format!("kw_console_access={access}; kw_console_refresh={refresh}"),
            )
            .send()
    };
    let before = page(&ada.access_token, &ada.refresh_token)
        .await
        .expect("request sent");
    assert_eq!(before.status(), 200);

    let (_config, store) = operator(&app).await;
    keyward_server::admin::disable_user(store.as_ref(), &app.clock, &email(&ada.email))
        .await
        .expect("disable")
        .expect("the user exists");
    store.close().await;

    // Neither the access token nor a refresh with the refresh token lets it in.
    let after = page(&ada.access_token, &ada.refresh_token)
        .await
        .expect("request sent");
    assert_eq!(after.status(), 303);
    assert_eq!(
        after.headers()["location"],
        "/console/login?next=/console/api-keys"
    );

    // Signing in through the login page says the account is disabled.
    let browser = console_browser();
    let csrf = login_form_csrf(&app, &browser).await;
    let csrf = csrf.as_str();
    let signed_in = browser
        .post(app.url("/console/login"))
        .form(&[
            ("email", ada.email.as_str()),
            ("password", PASSWORD),
            ("csrf", csrf),
            ("next", "/console/api-keys"),
        ])
        .send()
        .await
        .expect("request sent");
    assert_eq!(signed_in.status(), 403);
    let page = signed_in.text().await.expect("page");
    assert!(page.contains("This account is disabled"), "{page}");
}

// ---------------------------------------------------------------- signing keys

#[tokio::test]
async fn a_rotated_signing_key_signs_new_tokens_without_restart_and_old_ones_still_verify() {
    // Rereads the key set every second (default 30), so the test need not wait long.
    let app = instance(|settings| settings.sessions.signing_key_reload_seconds = 1).await;
    let other = second_instance_with(&app, |settings| {
        settings.sessions.signing_key_reload_seconds = 1;
    })
    .await;
    let ada = app.register("ada@example.com").await;
    let old_kid = kid_of(&ada.access_token);
    assert_eq!(jwks_kids(&app).await, vec![old_kid.clone()]);

    let (config, store) = operator(&app).await;
    let rotation = keyward_server::admin::rotate_signing_key(store.as_ref(), &app.clock, &config)
        .await
        .expect("rotate");
    assert_ne!(rotation.kid, old_kid);
    assert_eq!(rotation.retired, vec![old_kid.clone()]);
    assert!(rotation.dropped.is_empty());

    // Each running instance signs with the new key after its next reload. Refreshing (rather
    // than logging in again and again) keeps clear of the login throttle.
    let mut refresh_token = ada.refresh_token.clone();
    let mut new_tokens = Vec::new();
    for server in [&app, &other] {
        let mut new_token = String::new();
        for _ in 0..100 {
            let reply = refresh(server, &refresh_token).await;
            let pair = reply.expect(200);
            new_token = string(pair, "access_token");
            refresh_token = string(pair, "refresh_token");
            if kid_of(&new_token) == rotation.kid {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            kid_of(&new_token),
            rotation.kid,
            "still signing with the old key"
        );
        new_tokens.push(new_token);
    }
    let mut both = vec![old_kid.clone(), rotation.kid.clone()];
    both.sort();
    for server in [&app, &other] {
        let mut kids = jwks_kids(server).await;
        kids.sort();
        assert_eq!(kids, both);
        // The token signed with the retired key keeps working, and so do the new ones.
        for token in std::iter::once(&ada.access_token).chain(&new_tokens) {
            let me = server.get("/v1/auth/me", Auth::Bearer(token)).await;
            assert_eq!(me.expect(200)["user"]["id"], ada.user_id);
        }
    }
    let new_token = new_tokens.remove(0);

    // Once every token the retired key signed has expired, it leaves the JWKS, and the next
    // rotation deletes it.
    let ttl = config.settings.sessions.access_token_ttl_seconds;
    app.clock
        .advance(ttl + keyward_core::RETIRED_KEY_GRACE_SECONDS + 1);
    let mut kids = Vec::new();
    for _ in 0..100 {
        kids = jwks_kids(&app).await;
        if kids.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(kids, vec![rotation.kid.clone()]);
    // Its key is no longer known, so the token is refused as invalid, not merely expired: a
    // stolen retired key signs nothing that verifies any more.
    app.get("/v1/auth/me", Auth::Bearer(&ada.access_token))
        .await
        .expect_problem(401, "invalid_token");
    app.get("/v1/auth/me", Auth::Bearer(&new_token))
        .await
        .expect_problem(401, "token_expired");
    let next = keyward_server::admin::rotate_signing_key(store.as_ref(), &app.clock, &config)
        .await
        .expect("rotate");
    assert_eq!(next.retired, vec![rotation.kid.clone()]);
    assert_eq!(next.dropped, vec![old_kid]);
    store.close().await;
}

// ---------------------------------------------------------------- password hashes

#[tokio::test]
async fn a_weaker_password_hash_is_upgraded_at_the_next_login() {
    let app = instance(|_| {}).await;
    let ada = app.register("ada@example.com").await;
    let (_config, store) = operator(&app).await;
    let stored = |store: Arc<dyn Store>| async move {
        store
            .find_user_by_email(&email("ada@example.com"))
            .await
            .expect("read")
            .expect("the user exists")
            .password_hash
    };
    let configured = stored(store.clone()).await;
    assert!(
        configured.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{configured}"
    );

    // The same password, hashed with weaker parameters (as an older release would have).
    let weak_hasher = keyward_core::PasswordHasher::new(keyward_core::PasswordHasherConfig {
        memory_kib: 4096,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    })
    .expect("hasher");
    let weak = weak_hasher
        .hash(&keyward_core::Password::presented(PASSWORD.into()))
        .await
        .expect("hash");
    assert!(weak.starts_with("$argon2id$v=19$m=4096,t=1,p=1$"), "{weak}");
    let user_id = keyward_core::UserId::from_stored(ada.user_id.clone());
    assert!(store
        .upgrade_password_hash(&user_id, &configured, &weak)
        .await
        .expect("write"));

    // A wrong password upgrades nothing.
    login(&app, &ada.email, "wrong horse battery staple")
        .await
        .expect_problem(401, "invalid_credentials");
    assert_eq!(stored(store.clone()).await, weak);

    login(&app, &ada.email, PASSWORD).await.expect(200);
    let upgraded = stored(store.clone()).await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    assert_ne!(upgraded, weak);
    // And the upgraded hash is the same password.
    login(&app, &ada.email, PASSWORD).await.expect(200);
    assert_eq!(stored(store.clone()).await, upgraded);
    store.close().await;
}
