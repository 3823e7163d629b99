// Attacks on credentials (issue 8): the JWT attacks of RFC 8725 and of the JWT testing tools,
// credentials put in URLs, and secrets left in caches.
//
// auth.rs already proves one by one that alg `none`, HS256 signed with the public key, a
// stripped signature, a tampered payload, an unknown kid, a `jwk`/`jku`/`x5u` offered under the
// server's kid, expiry and a foreign aud/iss are refused. This file adds what those do not
// reach: tokens signed with the server's *own* key (read from its database), so that a refusal
// can only come from the claim under test and not from the signature; kid injection with its
// side effects looked for; header URLs checked never to be fetched; refresh tokens and keys in
// the access token's place; and one gauntlet of every attack, after which a valid token still
// works.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey};
use keyward_core::Clock as _;
use reqwest::Method;
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers of this file

/// The protected routes every forged token is tried on: whoami, and a resource route.
const PROTECTED: [&str; 2] = ["/v1/auth/me", "/v1/keys"];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).expect("json"))
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

/// The header and claims of a JWT, read without verification.
fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    (decode_segment(parts[0]), decode_segment(parts[1]))
}

/// A compact JWS of `header` and `claims` signed with the Ed25519 `key`, whatever the header
/// says.
fn sign_eddsa(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
}

/// A compact JWS signed with HMAC-SHA256 and `secret`, whatever the header says.
fn sign_hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("hmac");
    format!("{input}.{signature}")
}

fn attacker_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The server's current signing key, read from its database by the `kid` of one of its
/// tokens: with it the tests forge tokens whose signature is genuine.
async fn server_key(app: &TestApp, token: &str) -> SigningKey {
    let (header, _) = jwt_parts(token);
    let kid = header["kid"].as_str().expect("kid");
    assert!(kid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let rows = app
        .sql_bytes(&format!(
            "SELECT private_key FROM signing_keys WHERE kid = '{kid}'"
        ))
        .await;
    let seed: [u8; 32] = rows[0].as_slice().try_into().expect("32-byte seed");
    SigningKey::from_bytes(&seed)
}

/// The signing keys as the database holds them, to show that an attack changed nothing.
async fn signing_keys_row_dump(app: &TestApp) -> Vec<String> {
    app.sql_strings(
        "SELECT kid || ':' || CAST(created_at AS TEXT) || ':' || \
         COALESCE(CAST(retired_at AS TEXT), '-') FROM signing_keys ORDER BY kid",
    )
    .await
}

/// A refusal of a presented credential: 401 problem+json with `code`, the RFC 6750 challenge,
/// and nothing of the token echoed back.
fn expect_refused(reply: &Reply, code: &str, token: &str) {
    assert!(
        !reply.status.is_server_error(),
        "5xx for a forged token: {}",
        reply.text
    );
    reply.expect_problem(401, code);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge {challenge:?}"
    );
    assert!(
        token.len() < 8 || !reply.text.contains(token),
        "the refused token is echoed: {}",
        reply.text
    );
}

/// `token` is refused with `code` on every route of [`PROTECTED`].
async fn expect_refused_everywhere(app: &TestApp, token: &str, code: &str) {
    for path in PROTECTED {
        expect_refused(&app.get(path, Auth::Bearer(token)).await, code, token);
    }
}

/// `token` works on every route of [`PROTECTED`].
async fn expect_accepted_everywhere(app: &TestApp, token: &str) {
    for path in PROTECTED {
        app.get(path, Auth::Bearer(token)).await.expect(200);
    }
}

fn now(app: &TestApp) -> i64 {
    app.clock.now().seconds()
}

// ---------------------------------------------------------------- JWT attacks

#[tokio::test]
async fn jwt_alg_none_in_any_letter_case_is_refused_on_every_protected_route() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (mut header, claims) = jwt_parts(&account.access_token);
    let genuine_signature = account.access_token.rsplit('.').next().unwrap().to_owned();
    for alg in ["none", "None", "NONE", "nOnE"] {
        header["alg"] = json!(alg);
        let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
        for signature in ["", b64(b"bogus").as_str(), genuine_signature.as_str()] {
            expect_refused_everywhere(&app, &format!("{input}.{signature}"), "invalid_token").await;
        }
    }
    expect_accepted_everywhere(&app, &account.access_token).await;
}

/// The control for every test below that signs with the server's key: the unchanged claims,
/// signed by the test, are accepted, so each refusal is the changed claim's.
#[tokio::test]
async fn a_token_the_test_signs_with_the_servers_key_is_accepted() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let key = server_key(&app, &account.access_token).await;
    let (header, mut claims) = jwt_parts(&account.access_token);
    claims["jti"] = json!("forged-by-the-test");
    let forged = sign_eddsa(&header, &claims, &key);
    assert_ne!(forged, account.access_token);
    expect_accepted_everywhere(&app, &forged).await;
    let me = app.get("/v1/auth/me", Auth::Bearer(&forged)).await;
    assert_eq!(me.expect(200)["user"]["id"], account.user_id.as_str());
}

#[tokio::test]
async fn jwt_not_yet_valid_is_refused() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let key = server_key(&app, &account.access_token).await;
    let (header, claims) = jwt_parts(&account.access_token);
    let now = now(&app);
    for (claim, value) in [
        ("nbf", now + 3600),
        ("iat", now + 3600),
        ("nbf", now + 86_400),
    ] {
        let mut claims = claims.clone();
        claims[claim] = json!(value);
        claims["exp"] = json!(now + 2 * 86_400);
        expect_refused_everywhere(&app, &sign_eddsa(&header, &claims, &key), "invalid_token").await;
    }
    // Even once its nbf has come, a token that was refused early is judged afresh.
    let mut later = claims.clone();
    later["nbf"] = json!(now + 3600);
    later["exp"] = json!(now + 7200);
    let token = sign_eddsa(&header, &later, &key);
    expect_refused_everywhere(&app, &token, "invalid_token").await;
    app.clock.advance(3600);
    expect_accepted_everywhere(&app, &token).await;
}

#[tokio::test]
async fn jwt_expired_is_token_expired_even_under_the_servers_signature() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let key = server_key(&app, &account.access_token).await;
    let (header, mut claims) = jwt_parts(&account.access_token);
    claims["iat"] = json!(now(&app) - 3600);
    claims["nbf"] = json!(now(&app) - 3600);
    claims["exp"] = json!(now(&app) - 1);
    expect_refused_everywhere(&app, &sign_eddsa(&header, &claims, &key), "token_expired").await;
}

#[tokio::test]
async fn jwt_wrong_iss_aud_or_typ_is_refused_even_under_the_servers_signature() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let key = server_key(&app, &account.access_token).await;
    let (header, claims) = jwt_parts(&account.access_token);

    let mut forged = Vec::new();
    for (claim, value) in [
        ("iss", json!("https://evil.example")),
        ("iss", json!(format!("{}/", app.base_url))),
        ("aud", json!("another-service")),
        ("aud", json!(["another-service"])),
        ("aud", json!("")),
    ] {
        let mut claims = claims.clone();
        claims[claim] = value;
        forged.push((
            format!("{claim} = {}", claims[claim]),
            sign_eddsa(&header, &claims, &key),
        ));
    }
    // `typ` tells an access token from other JWTs signed by the same key (RFC 8725 §3.11).
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("refresh+jwt"),
        json!(""),
        Value::Null,
    ] {
        let mut header = header.clone();
        if typ.is_null() {
            header.as_object_mut().unwrap().remove("typ");
        } else {
            header["typ"] = typ.clone();
        }
        forged.push((format!("typ = {typ}"), sign_eddsa(&header, &claims, &key)));
    }
    // Extensions the verifier must understand (RFC 7515 §4.1.11) and understands none of,
    // e.g. the unencoded payload of RFC 7797: refused, not skipped.
    for (name, value) in [
        ("crit", json!(["kw-extension"])),
        ("crit", json!(["b64"])),
        ("crit", json!([])),
        ("b64", json!(false)),
    ] {
        let mut header = header.clone();
        header[name] = value;
        if name == "b64" {
            header["crit"] = json!(["b64"]);
        }
        forged.push((
            format!("header {header}"),
            sign_eddsa(&header, &claims, &key),
        ));
    }
    // Claims missing or of the wrong type: refused, never a 500.
    for claim in ["sub", "tid", "sid", "exp", "iat", "iss", "aud", "jti"] {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove(claim);
        forged.push((format!("no {claim}"), sign_eddsa(&header, &claims, &key)));
        let mut claims = claims.clone();
        claims[claim] = json!({"nested": [1, 2]});
        forged.push((
            format!("{claim} an object"),
            sign_eddsa(&header, &claims, &key),
        ));
    }
    for (what, token) in forged {
        for path in PROTECTED {
            let reply = app.get(path, Auth::Bearer(&token)).await;
            assert_eq!(
                reply.status.as_u16(),
                401,
                "{what} on {path}: {}",
                reply.text
            );
            expect_refused(&reply, "invalid_token", &token);
        }
    }
    expect_accepted_everywhere(&app, &account.access_token).await;
}

#[tokio::test]
async fn jwt_kid_injection_is_refused_and_has_no_side_effect() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (header, claims) = jwt_parts(&account.access_token);
    let keys_before = signing_keys_row_dump(&app).await;
    let jwks_before = app.get("/.well-known/jwks.json", Auth::None).await.text;
    let users_before = app.sql_strings("SELECT id FROM users ORDER BY id").await;

    let scratch = tempfile::tempdir().expect("temp dir");
    let marker = scratch.path().join("pwned");
    let marker = marker.display();
    let kids = [
        "../../dev/null".to_owned(),
        "../../../../../../../../dev/null".to_owned(),
        "/dev/null".to_owned(),
        "..%2f..%2fdev%2fnull".to_owned(),
        "/proc/self/environ".to_owned(),
        "' OR 1=1--".to_owned(),
        "' OR '1'='1".to_owned(),
        "x' UNION SELECT 'AAAA' --".to_owned(),
        "'; DELETE FROM signing_keys; --".to_owned(),
        "'; DROP TABLE signing_keys; --".to_owned(),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("; touch {marker}"),
        format!("| touch {marker}"),
        "\u{0}".to_owned(),
        "k".repeat(4096),
    ];
    let attacker = attacker_key();
    for kid in &kids {
        let mut header = header.clone();
        header["kid"] = json!(kid);
        // `/dev/null` read as an HMAC secret is empty; a SQL injection might return `1` or
        // `AAAA`; and an attacker's own Ed25519 key under the injected kid.
        let mut hmac_header = header.clone();
        hmac_header["alg"] = json!("HS256");
        for token in [
            sign_hs256(&hmac_header, &claims, b""),
            sign_hs256(&hmac_header, &claims, b"1"),
            sign_hs256(&hmac_header, &claims, b"AAAA"),
            sign_eddsa(&header, &claims, &attacker),
        ] {
            expect_refused_everywhere(&app, &token, "invalid_token").await;
        }
    }

    assert!(
        std::fs::read_dir(scratch.path()).unwrap().next().is_none(),
        "a command in a kid ran"
    );
    assert_eq!(signing_keys_row_dump(&app).await, keys_before);
    assert_eq!(
        app.get("/.well-known/jwks.json", Auth::None).await.text,
        jwks_before
    );
    assert_eq!(
        app.sql_strings("SELECT id FROM users ORDER BY id").await,
        users_before
    );
    expect_accepted_everywhere(&app, &account.access_token).await;
}

#[tokio::test]
async fn jwt_header_keys_and_key_urls_are_ignored_and_never_fetched() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (real_header, claims) = jwt_parts(&account.access_token);
    // A listener of the attacker's: the server must never connect to it.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!("http://{}", trap.local_addr().unwrap());

    let attacker = attacker_key();
    let attacker_jwk = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "kid": "attacker", "x": b64(attacker.verifying_key().as_bytes())});
    let mut headers = Vec::new();
    // The attacker's key embedded under its own kid, under none, and next to a URL of keys.
    for kid in [json!("attacker"), Value::Null] {
        let mut header = json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": attacker_jwk});
        if !kid.is_null() {
            header["kid"] = kid;
        }
        headers.push(header);
    }
    for (name, value) in [
        ("jku", json!(format!("{trap_url}/jwks.json"))),
        ("x5u", json!(format!("{trap_url}/cert.pem"))),
        // Not a real certificate: a verifier that read x5c at all would fail differently.
        ("x5c", json!([b64(attacker.verifying_key().as_bytes())])),
    ] {
        let mut header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker"});
        header[name] = value.clone();
        headers.push(header);
        // And beside the server's own kid.
        let mut header = real_header.clone();
        header[name] = value;
        headers.push(header);
    }
    for header in headers {
        let token = sign_eddsa(&header, &claims, &attacker);
        expect_refused_everywhere(&app, &token, "invalid_token").await;
    }
    // A fetch would have connected before the answer was sent: nothing is waiting.
    match trap.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server connected to a URL from a token header: {other:?}"),
    }
    expect_accepted_everywhere(&app, &account.access_token).await;
}

#[tokio::test]
async fn a_refresh_token_or_an_api_key_is_never_taken_for_an_access_token() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app
        .create_key(&account, json!({"name": "ci", "scopes": ["admin"]}))
        .await;
    let key = created["key"].as_str().unwrap();
    let device = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await;
    let device_code = device.expect(200)["device_code"]
        .as_str()
        .unwrap()
        .to_owned();

    // SPEC §2 tells the two apart by shape: what is not a JWT is an API key, so a refresh
    // token or a device code in the Bearer header is refused as a key, never as a session.
    for opaque in [account.refresh_token.as_str(), device_code.as_str()] {
        for path in PROTECTED {
            for auth in [Auth::Bearer(opaque), Auth::ApiKey(opaque)] {
                expect_refused(&app.get(path, auth).await, "invalid_api_key", opaque);
            }
        }
    }
    // An access token in X-API-Key (keys only) is not a key.
    for path in PROTECTED {
        expect_refused(
            &app.get(path, Auth::ApiKey(&account.access_token)).await,
            "invalid_api_key",
            &account.access_token,
        );
    }
    // An API key as Bearer is accepted, as what it is (SPEC §2): a key, never a session.
    let me = app.get("/v1/auth/me", Auth::Bearer(key)).await;
    assert_eq!(me.expect(200)["auth"]["method"], "api_key");
    assert_eq!(me.body["auth"]["key_id"], created["id"]);
    app.post("/v1/auth/logout", Auth::Bearer(key), json!({}))
        .await
        .expect_problem(403, "session_required");
    app.post(
        "/v1/auth/password",
        Auth::Bearer(key),
        json!({"current_password": PASSWORD, "new_password": "another fine passphrase"}),
    )
    .await
    .expect_problem(403, "session_required");
    // A key dressed as a JWT (three parts) is judged as a token, and refused.
    let dressed = format!("{}.{}.{}", b64(key.as_bytes()), b64(b"{}"), b64(b"sig"));
    expect_refused_everywhere(&app, &dressed, "invalid_token").await;
    // Nothing above spent the refresh token or ended the session.
    expect_accepted_everywhere(&app, &account.access_token).await;
    app.post(
        "/v1/auth/refresh",
        Auth::None,
        json!({"refresh_token": account.refresh_token}),
    )
    .await
    .expect(200);
}

/// Every attack of this file and of auth.rs in one run, on a server that has served real
/// traffic: each is refused with the SPEC's code, none is a 5xx, and afterwards the valid
/// token, the signing keys and the JWKS are as before.
#[tokio::test]
async fn after_every_jwt_attack_a_valid_token_still_works() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let victim = app.register("bob@example.com").await;
    let server = server_key(&app, &account.access_token).await;
    let attacker = attacker_key();
    let keys_before = signing_keys_row_dump(&app).await;
    let jwks = app
        .get("/.well-known/jwks.json", Auth::None)
        .await
        .expect(200)
        .clone();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public_raw = URL_SAFE_NO_PAD.decode(&public_x).unwrap();
    let (header, claims) = jwt_parts(&account.access_token);
    let (_, victim_claims) = jwt_parts(&victim.access_token);
    let parts: Vec<&str> = account.access_token.split('.').collect();
    let (signing_input, signature) = (format!("{}.{}", parts[0], parts[1]), parts[2]);
    let signature_bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let now = now(&app);

    let mut attacks: Vec<(String, String, &str)> = Vec::new();
    let mut add = |name: &str, token: String, code: &'static str| {
        attacks.push((name.to_owned(), token, code));
    };
    let with_header = |change: &dyn Fn(&mut Value)| {
        let mut header = header.clone();
        change(&mut header);
        header
    };
    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims.clone();
        change(&mut claims);
        claims
    };

    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = with_header(&|h| h["alg"] = json!(alg));
        let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
        add(
            &format!("alg {alg}, empty signature"),
            format!("{input}."),
            "invalid_token",
        );
        add(
            &format!("alg {alg}, bogus signature"),
            format!("{input}.{}", b64(b"x")),
            "invalid_token",
        );
    }
    for secret in [public_raw.as_slice(), public_x.as_bytes()] {
        let header = with_header(&|h| h["alg"] = json!("HS256"));
        add(
            "HS256 with the public key",
            sign_hs256(&header, &claims, secret),
            "invalid_token",
        );
    }
    add(
        "empty signature",
        format!("{signing_input}."),
        "invalid_token",
    );
    add(
        "null signature",
        format!("{signing_input}.null"),
        "invalid_token",
    );
    add(
        "zero signature",
        format!("{signing_input}.{}", b64(&[0; 64])),
        "invalid_token",
    );
    add(
        "truncated signature",
        format!("{signing_input}.{}", b64(&signature_bytes[..32])),
        "invalid_token",
    );
    add("two parts", signing_input.clone(), "invalid_api_key");
    add(
        "four parts",
        format!("{}.{signature}", account.access_token),
        "invalid_api_key",
    );
    for (claim, value) in [("sub", &victim.user_id), ("tid", &victim.tenant_id)] {
        let tampered = with_claims(&|c| c[claim] = json!(value));
        add(
            &format!("tampered {claim}"),
            format!("{}.{}.{signature}", parts[0], b64_json(&tampered)),
            "invalid_token",
        );
    }
    let tampered = with_claims(&|c| c["sid"] = victim_claims["sid"].clone());
    add(
        "tampered sid",
        format!("{}.{}.{signature}", parts[0], b64_json(&tampered)),
        "invalid_token",
    );
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(attacker.verifying_key().as_bytes())});
    for (name, value) in [
        ("jwk", jwk),
        ("jku", json!("http://127.0.0.1:9/jwks.json")),
        ("x5u", json!("http://127.0.0.1:9/cert.pem")),
    ] {
        let header = with_header(&|h| h[name] = value.clone());
        add(
            &format!("{name} injection"),
            sign_eddsa(&header, &claims, &attacker),
            "invalid_token",
        );
    }
    for kid in [
        "../../dev/null",
        "' OR 1=1--",
        "$(touch /tmp/keyward-kid-injection)",
    ] {
        let header = with_header(&|h| {
            h["kid"] = json!(kid);
            h["alg"] = json!("HS256");
        });
        add(
            &format!("kid {kid}"),
            sign_hs256(&header, &claims, b""),
            "invalid_token",
        );
    }
    let expired = with_claims(&|c| {
        c["iat"] = json!(now - 7200);
        c["nbf"] = json!(now - 7200);
        c["exp"] = json!(now - 3600);
    });
    add(
        "expired",
        sign_eddsa(&header, &expired, &server),
        "token_expired",
    );
    let early = with_claims(&|c| {
        c["nbf"] = json!(now + 3600);
        c["exp"] = json!(now + 7200);
    });
    add(
        "nbf in the future",
        sign_eddsa(&header, &early, &server),
        "invalid_token",
    );
    for (claim, value) in [("iss", "https://evil.example"), ("aud", "another-service")] {
        let wrong = with_claims(&|c| c[claim] = json!(value));
        add(
            &format!("wrong {claim}"),
            sign_eddsa(&header, &wrong, &server),
            "invalid_token",
        );
    }
    let wrong_typ = with_header(&|h| h["typ"] = json!("JWT"));
    add(
        "wrong typ",
        sign_eddsa(&wrong_typ, &claims, &server),
        "invalid_token",
    );
    add(
        "refresh token as Bearer",
        account.refresh_token.clone(),
        "invalid_api_key",
    );

    // A token of a session that has ended.
    let ended = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": account.email, "password": PASSWORD}),
        )
        .await
        .expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get("/v1/auth/me", Auth::Bearer(&ended))
        .await
        .expect(200);
    app.send(Method::POST, "/v1/auth/logout", Auth::Bearer(&ended), None)
        .await
        .expect(204);
    add("token of a logged-out session", ended, "invalid_token");

    for (name, token, code) in &attacks {
        for path in PROTECTED {
            let reply = app.get(path, Auth::Bearer(token)).await;
            assert!(
                reply.status.as_u16() == 401 && reply.body["code"] == *code,
                "{name} on {path}: expected 401 {code}, got {}",
                reply.text
            );
            expect_refused(&reply, code, token);
        }
    }

    expect_accepted_everywhere(&app, &account.access_token).await;
    let me = app
        .get("/v1/auth/me", Auth::Bearer(&account.access_token))
        .await;
    assert_eq!(me.expect(200)["user"]["id"], account.user_id.as_str());
    assert_eq!(signing_keys_row_dump(&app).await, keys_before);
    assert_eq!(
        app.get("/.well-known/jwks.json", Auth::None).await.body,
        jwks
    );
    assert!(!std::path::Path::new("/tmp/keyward-kid-injection").exists());
}

// ---------------------------------------------------------------- no secret in a URL

#[tokio::test]
async fn credentials_in_a_query_string_are_refused_even_beside_a_valid_header() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let created = app.create_key(&account, json!({"name": "ci"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let count_keys = || async {
        app.get("/v1/keys", Auth::Bearer(&account.access_token))
            .await
            .expect(200)["keys"]
            .as_array()
            .unwrap()
            .len()
    };
    let keys_before = count_keys().await;

    // By name, whatever the value (and in any case or with a dash).
    let mut cases = Vec::new();
    for name in [
        "api_key",
        "key",
        "access_token",
        "token",
        "API_KEY",
        "Api-Key",
        "refresh_token",
    ] {
        for value in [key.as_str(), account.access_token.as_str(), "anything"] {
            cases.push((name.to_owned(), value.to_owned()));
        }
    }
    // By value, whatever the name: something shaped like a key, a JWT or a refresh token.
    for value in [&key, &account.access_token, &account.refresh_token] {
        cases.push(("q".to_owned(), value.clone()));
    }

    for (name, value) in &cases {
        let query = format!("{name}={value}");
        for auth in [
            Auth::None,
            Auth::Bearer(&account.access_token),
            Auth::ApiKey(&key),
        ] {
            for path in ["/v1/auth/me", "/v1/keys", "/v1/tenant", "/healthz"] {
                let reply = app
                    .get(&format!("{path}?include_revoked=false&{query}"), auth)
                    .await;
                reply.expect_field_error(name);
                assert!(
                    !reply.text.contains(value.as_str()) || value == "anything",
                    "{}",
                    reply.text
                );
                assert_eq!(reply.header("cache-control"), Some("no-store"));
            }
            // A write is refused before anything is written.
            let reply = app
                .send(
                    Method::POST,
                    &format!("/v1/keys?{query}"),
                    auth,
                    Some(json!({"name": "from a url"})),
                )
                .await;
            reply.expect_field_error(name);
        }
    }
    assert_eq!(count_keys().await, keys_before);

    // A key as a bare parameter is refused too, without being repeated in the answer.
    for auth in [Auth::None, Auth::Bearer(&account.access_token)] {
        let reply = app.get(&format!("/v1/auth/me?{key}"), auth).await;
        reply.expect_field_error("query");
        assert!(!reply.text.contains(&key), "{}", reply.text);
    }

    // The device token endpoint answers in the OAuth format, this refusal too (SPEC §3).
    let device = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await;
    let device_code = device.expect(200)["device_code"].as_str().unwrap();
    let reply = app
        .post(
            &format!("/v1/auth/device/token?device_code={device_code}"),
            Auth::None,
            json!({"device_code": device_code}),
        )
        .await;
    reply.expect(400);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body["error"], "invalid_request", "{}", reply.text);
    assert!(!reply.text.contains(device_code));
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // Query parameters that carry no credential are untouched.
    app.get(
        "/v1/keys?include_revoked=true",
        Auth::Bearer(&account.access_token),
    )
    .await
    .expect(200);
    let usage = format!(
        "/v1/usage?days=7&key_id={}",
        created["id"].as_str().unwrap()
    );
    app.get(&usage, Auth::Bearer(&account.access_token))
        .await
        .expect(200);
    // And the key, never accepted from a URL, was not spoiled either.
    app.get("/v1/auth/me", Auth::ApiKey(&key)).await.expect(200);
}

// ---------------------------------------------------------------- no secret in a cache

fn expect_no_store(reply: &Reply, what: &str) {
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "{what}: {} {:?}",
        reply.status,
        reply.headers
    );
}

#[tokio::test]
async fn every_answer_that_carries_a_secret_says_no_store() {
    let app = spawn_app_with(|settings| settings.keys.create_on_register = true).await;
    let register = app
        .post(
            "/v1/auth/register",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert!(register.expect(201)["api_key"]["key"].is_string());
    expect_no_store(&register, "register");
    let access = register.body["access_token"].as_str().unwrap().to_owned();
    let session = Auth::Bearer(&access);

    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    expect_no_store(&login, "login");
    let refresh_token = login.expect(200)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let refresh = app
        .post(
            "/v1/auth/refresh",
            Auth::None,
            json!({"refresh_token": refresh_token}),
        )
        .await;
    refresh.expect(200);
    expect_no_store(&refresh, "refresh");

    let create = app.post("/v1/keys", session, json!({"name": "ci"})).await;
    let id = create.expect(201)["id"].as_str().unwrap().to_owned();
    expect_no_store(&create, "key create");

    let rotate = app
        .post(&format!("/v1/keys/{id}/rotate"), session, json!({}))
        .await;
    rotate.expect(201);
    expect_no_store(&rotate, "key rotate");

    let code = app
        .post("/v1/auth/device/code", Auth::None, json!({}))
        .await;
    expect_no_store(&code, "device code");
    let device_code = code.expect(200)["device_code"].as_str().unwrap().to_owned();
    let user_code = code.body["user_code"].as_str().unwrap().to_owned();
    let pending = app
        .post(
            "/v1/auth/device/token",
            Auth::None,
            json!({"device_code": device_code}),
        )
        .await;
    assert_eq!(pending.body["error"], "authorization_pending");
    expect_no_store(&pending, "device token (pending)");
    app.post(
        "/v1/auth/device/approve",
        session,
        json!({"user_code": user_code, "approve": true}),
    )
    .await
    .expect(204);
    let token = app
        .post(
            "/v1/auth/device/token",
            Auth::None,
            json!({"device_code": device_code}),
        )
        .await;
    assert!(token.expect(200)["api_key"].is_string());
    expect_no_store(&token, "device token");
}

/// Not only the answers known today to carry a secret: every `/v1` answer, success or error,
/// of every documented operation (they carry a secret or one user's data), so a route added
/// later is covered by this walk.
#[tokio::test]
async fn every_v1_answer_says_no_store() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let doc = app
        .get("/openapi.json", Auth::None)
        .await
        .expect(200)
        .clone();
    let mut checked = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path.replace("{id}", "key_doesnotexist");
        for method in operations.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            for auth in [Auth::None, Auth::Bearer(&account.access_token)] {
                let reply = app.send(method.clone(), &concrete, auth, None).await;
                expect_no_store(&reply, &format!("{method} {path}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} answers checked");
    expect_no_store(
        &app.get("/v1/no-such-route", Auth::None).await,
        "unknown /v1 route",
    );
}
