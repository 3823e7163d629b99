// The web console (SPEC §2 cookie session with CSRF, §3 HTML pages under /console, §4 device
// approval): driven over HTTP like a browser, with a cookie store and no redirect following.

use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{json, Value};

use super::kit::*;

// ---------------------------------------------------------------- helpers

const LOGIN: &str = "/console/login";
const DEVICE: &str = "/console/device";
const KEYS: &str = "/console/api-keys";
const LOGOUT: &str = "/console/logout";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A browser: keeps cookies, follows no redirect.
fn browser() -> reqwest::Client {
    console_browser()
}

/// A page, read whole.
struct Page {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Page {
    async fn read(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("body"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an HTML page with `status` and returns its text.
    fn expect_html(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "{}", self.text);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/html"),
            "{content_type}: {}",
            self.text
        );
        assert!(self.text.starts_with("<!DOCTYPE html>"), "{}", self.text);
        assert!(self.text.contains("Keyward"), "{}", self.text);
        &self.text
    }

    /// Asserts a 303 and returns its `Location`.
    fn expect_redirect(&self) -> &str {
        assert_eq!(self.status, 303, "{}", self.text);
        self.header("location").expect("Location")
    }

    /// The `Set-Cookie` header that sets `name`, if any.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value `Set-Cookie` gives `name`.
    fn cookie_value(&self, name: &str) -> Option<String> {
        self.set_cookie(name).map(|header| {
            header[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    }

    /// The value of the hidden field `field` inside the form that posts to `action`.
    fn form_field(&self, action: &str, field: &str) -> String {
        let form_start = self
            .text
            .find(&format!(r#"<form method="post" action="{action}">"#))
            .unwrap_or_else(|| panic!("no POST form to {action}: {}", self.text));
        let form = &self.text[form_start..];
        let form = &form[..form.find("</form>").expect("form end")];
        let marker = format!(r#"name="{field}" value=""#);
        let start = form
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {field} in {form}"))
            + marker.len();
        form[start..start + form[start..].find('"').expect("value end")].to_owned()
    }
}

async fn get(app: &TestApp, browser: &reqwest::Client, path: &str) -> Page {
    Page::read(browser.get(app.url(path)).send().await.expect("sent")).await
}

async fn post(app: &TestApp, browser: &reqwest::Client, path: &str, form: &[(&str, &str)]) -> Page {
    Page::read(
        browser
            .post(app.url(path))
            .form(form)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

/// Signs `email` in through the login page; returns the login answer (a 303).
async fn sign_in(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
    next: Option<&str>,
) -> Page {
    let path = match next {
        Some(next) => format!("{LOGIN}?next={}", encode(next)),
        None => LOGIN.to_owned(),
    };
    let form = get(app, browser, &path).await;
    form.expect_html(200);
    let csrf = form.form_field(LOGIN, "csrf");
    let next = form.form_field(LOGIN, "next");
    let reply = post(
        app,
        browser,
        LOGIN,
        &[
            ("email", email),
            ("password", PASSWORD),
            ("csrf", &csrf),
            ("next", &next),
        ],
    )
    .await;
    reply.expect_redirect();
    reply
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A registered user signed in on a fresh browser.
async fn signed_in(app: &TestApp, email: &str) -> (Account, reqwest::Client) {
    let account = app.register(email).await;
    let browser = browser();
    sign_in(app, &browser, email, None).await;
    (account, browser)
}

/// The API client's side: `POST /v1/auth/device/code`.
async fn device_codes(app: &TestApp, client_name: &str) -> (String, String, String) {
    let body = app
        .post(
            "/v1/auth/device/code",
            Auth::None,
            json!({"client_name": client_name}),
        )
        .await
        .expect(200)
        .clone();
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    (
        field("device_code"),
        field("user_code"),
        field("verification_uri_complete"),
    )
}

/// One poll of the token endpoint.
async fn poll(app: &TestApp, device_code: &str) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/v1/auth/device/token"))
        .form(&[("grant_type", GRANT_TYPE), ("device_code", device_code)])
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts the device code is still waiting (nothing was approved or denied).
async fn expect_pending(app: &TestApp, device_code: &str) {
    let (status, body) = poll(app, device_code).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "authorization_pending", "{body}");
}

/// The confirmation page of `user_code`; returns it and the device form's CSRF token.
async fn confirmation(app: &TestApp, browser: &reqwest::Client, user_code: &str) -> (Page, String) {
    let page = get(app, browser, &format!("{DEVICE}?user_code={user_code}")).await;
    page.expect_html(200);
    let csrf = page.form_field(DEVICE, "csrf");
    (page, csrf)
}

// ---------------------------------------------------------------- sign-in

#[tokio::test]
async fn the_login_page_renders_a_form_with_a_csrf_token() {
    let app = spawn_app().await;
    let page = get(&app, &browser(), LOGIN).await;
    let text = page.expect_html(200);
    assert!(text.contains(r#"name="email""#), "{text}");
    assert!(text.contains(r#"type="password""#), "{text}");
    let csrf = page.form_field(LOGIN, "csrf");
    assert_eq!(csrf.len(), 64, "{csrf}");
    assert!(csrf.bytes().all(|b| b.is_ascii_hexdigit()), "{csrf}");
    let cookie = page
        .set_cookie("kw_console_login")
        .expect("the pre-session CSRF cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/console"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "public_url is http here: {cookie}"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.set_cookie("kw_console_access").is_none());
}

#[tokio::test]
async fn cookies_are_secure_when_public_url_is_https() {
    let app = spawn_app_with(|settings| {
        settings.public_url = Some("https://auth.example.com".into());
    })
    .await;
    let page = get(&app, &browser(), LOGIN).await;
    page.expect_html(200);
    let cookie = page.set_cookie("kw_console_login").expect("login cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // That server's origin is https://auth.example.com, so its own http origin is foreign.
    // (The cookie is sent by hand: a cookie store keeps a Secure cookie off plain http.)
    app.register("ada@example.com").await;
    let csrf = page.form_field(LOGIN, "csrf");
    let cookie = format!(
        "kw_console_login={}",
        page.cookie_value("kw_console_login").expect("value")
    );
    let form = [
        ("email", "ada@example.com"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
    ];
    let send = |origin: &'static str| {
        let mut request = app
            .http
            .post(app.url(LOGIN))
            .header("cookie", cookie.as_str())
            .form(&form);
        if !origin.is_empty() {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let foreign = Page::read(send("http://127.0.0.1").await.expect("sent")).await;
    foreign.expect_html(403);
    let own = Page::read(send("https://auth.example.com").await.expect("sent")).await;
    assert_eq!(own.expect_redirect(), KEYS);
    let access = own.set_cookie("kw_console_access").expect("session cookie");
    assert!(access.contains("; Secure"), "{access}");
}

#[tokio::test]
async fn a_wrong_password_shows_an_error_and_sets_no_session() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let browser = browser();
    let form = get(&app, &browser, LOGIN).await;
    let csrf = form.form_field(LOGIN, "csrf");
    let reply = post(
        &app,
        &browser,
        LOGIN,
        &[
            ("email", "ada@example.com"),
            ("password", "not the password at all"),
            ("csrf", &csrf),
        ],
    )
    .await;
    let text = reply.expect_html(401);
    assert!(
        text.contains("The email or password is incorrect."),
        "{text}"
    );
    assert!(
        !text.contains("not the password at all"),
        "the password is not echoed"
    );
    assert!(reply.set_cookie("kw_console_access").is_none());
    assert!(reply.set_cookie("kw_console_refresh").is_none());
    // Still signed out.
    let device = get(&app, &browser, DEVICE).await;
    assert!(device.expect_redirect().starts_with(LOGIN));
}

#[tokio::test]
async fn login_sets_httponly_session_cookies_and_opens_the_console() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let browser = browser();
    let reply = sign_in(&app, &browser, "ada@example.com", None).await;
    assert_eq!(reply.expect_redirect(), KEYS);
    for name in ["kw_console_access", "kw_console_refresh"] {
        let cookie = reply
            .set_cookie(name)
            .unwrap_or_else(|| panic!("{name} set"));
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/console"] {
            assert!(cookie.contains(attribute), "{attribute} in {cookie}");
        }
    }
    assert!(reply
        .cookie_value("kw_console_refresh")
        .is_some_and(|v| v.starts_with("kwr_")));
    let page = get(&app, &browser, DEVICE).await;
    let text = page.expect_html(200);
    assert!(text.contains(r#"name="user_code""#), "{text}");
    assert!(text.contains("Sign out"), "{text}");
}

#[tokio::test]
async fn the_login_form_needs_its_csrf_token_and_a_same_origin() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let browser = browser();
    // No login cookie, no token.
    let reply = post(
        &app,
        &browser,
        LOGIN,
        &[("email", "ada@example.com"), ("password", PASSWORD)],
    )
    .await;
    reply.expect_html(403);
    assert!(reply.set_cookie("kw_console_access").is_none());
    // The cookie but a wrong token.
    get(&app, &browser, LOGIN).await.expect_html(200);
    let reply = post(
        &app,
        &browser,
        LOGIN,
        &[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf", &"0".repeat(64)),
        ],
    )
    .await;
    reply.expect_html(403);
    assert!(reply.set_cookie("kw_console_access").is_none());
    // The right token from a foreign origin.
    let csrf = get(&app, &browser, LOGIN).await.form_field(LOGIN, "csrf");
    let reply = Page::read(
        browser
            .post(app.url(LOGIN))
            .header("origin", "https://evil.example")
            .form(&[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    reply.expect_html(403);
    assert!(reply.set_cookie("kw_console_access").is_none());
    // Same token, own origin: accepted (so the refusals above were about the token and origin).
    let reply = Page::read(
        browser
            .post(app.url(LOGIN))
            .header("origin", app.base_url.as_str())
            .form(&[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(reply.expect_redirect(), KEYS);
    assert!(reply.set_cookie("kw_console_access").is_some());
}

#[tokio::test]
async fn next_is_followed_only_within_the_console() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    for evil in [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "/v1/auth/me",
    ] {
        let reply = sign_in(&app, &browser(), "ada@example.com", Some(evil)).await;
        assert_eq!(reply.expect_redirect(), KEYS, "next={evil}");
    }
    let reply = sign_in(
        &app,
        &browser(),
        "ada@example.com",
        Some("/console/device?user_code=BCDF-GHJK"),
    )
    .await;
    assert_eq!(
        reply.expect_redirect(),
        "/console/device?user_code=BCDF-GHJK"
    );
}

// ---------------------------------------------------------------- device approval

#[tokio::test]
async fn a_device_login_is_approved_through_the_page() {
    let app = spawn_app().await;
    let account = app.register("ada@example.com").await;
    let (device_code, user_code, complete) = device_codes(&app, "keyward CLI on laptop").await;
    let path = complete
        .strip_prefix(&app.base_url)
        .expect("verification_uri_complete on this server")
        .to_owned();
    // Signed out: the page sends the person to sign in, and back afterwards.
    let browser = browser();
    let first = get(&app, &browser, &path).await;
    let login = first.expect_redirect().to_owned();
    assert!(login.starts_with(&format!("{LOGIN}?next=")), "{login}");
    let form = get(&app, &browser, &login).await;
    form.expect_html(200);
    assert_eq!(form.form_field(LOGIN, "next"), path);
    let reply = post(
        &app,
        &browser,
        LOGIN,
        &[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf", &form.form_field(LOGIN, "csrf")),
            ("next", &form.form_field(LOGIN, "next")),
        ],
    )
    .await;
    assert_eq!(reply.expect_redirect(), path);
    // The confirmation names the client and the code.
    let (page, csrf) = confirmation(&app, &browser, &user_code).await;
    assert!(page.text.contains("keyward CLI on laptop"), "{}", page.text);
    assert!(page.text.contains(&user_code), "{}", page.text);
    assert!(page.text.contains(r#"value="approve""#), "{}", page.text);
    assert!(page.text.contains(r#"value="deny""#), "{}", page.text);
    expect_pending(&app, &device_code).await;
    app.clock.advance(5);
    // Approve.
    let done = post(
        &app,
        &browser,
        DEVICE,
        &[
            ("user_code", user_code.as_str()),
            ("decision", "approve"),
            ("csrf", csrf.as_str()),
        ],
    )
    .await;
    let text = done.expect_html(200);
    assert!(text.contains("Device approved"), "{text}");
    assert!(text.contains("Return to your terminal"), "{text}");
    // The CLI's next poll gets a key owned by the approving user.
    let (status, body) = poll(&app, &device_code).await;
    assert_eq!(status, 200, "{body}");
    let key = body["api_key"].as_str().expect("api_key");
    assert!(key.starts_with("kw_"), "{key}");
    let me = app.get("/v1/auth/me", Auth::ApiKey(key)).await;
    assert_eq!(me.expect(200)["user"]["id"], account.user_id);
    // The code is spent: the page now says so.
    let again = get(&app, &browser, &format!("{DEVICE}?user_code={user_code}")).await;
    assert!(
        again.expect_html(404).contains("not valid"),
        "{}",
        again.text
    );
}

#[tokio::test]
async fn a_device_login_can_be_denied() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let (device_code, user_code, _) = device_codes(&app, "keyward CLI on laptop").await;
    // Any spelling of the code works.
    let (_, csrf) = confirmation(&app, &browser, &user_code.replace('-', "").to_lowercase()).await;
    let done = post(
        &app,
        &browser,
        DEVICE,
        &[
            ("user_code", user_code.as_str()),
            ("decision", "deny"),
            ("csrf", csrf.as_str()),
        ],
    )
    .await;
    assert!(done.expect_html(200).contains("denied"), "{}", done.text);
    let (status, body) = poll(&app, &device_code).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
}

#[tokio::test]
async fn unknown_and_malformed_codes_say_so() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let unknown = get(&app, &browser, &format!("{DEVICE}?user_code=BCDF-GHJK")).await;
    let text = unknown.expect_html(404);
    assert!(text.contains("not valid"), "{text}");
    assert!(
        text.contains(r#"name="user_code""#),
        "a way to try again: {text}"
    );
    let malformed = get(&app, &browser, &format!("{DEVICE}?user_code=hello")).await;
    let text = malformed.expect_html(422);
    assert!(text.contains("not a device code"), "{text}");
    assert!(
        text.contains(r#"value="hello""#),
        "what was typed stays: {text}"
    );
    // A POST for an unknown code, with a valid token.
    let (_, user_code, _) = device_codes(&app, "keyward CLI on laptop").await;
    let (_, csrf) = confirmation(&app, &browser, &user_code).await;
    let reply = post(
        &app,
        &browser,
        DEVICE,
        &[
            ("user_code", "BCDF-GHJK"),
            ("decision", "approve"),
            ("csrf", csrf.as_str()),
        ],
    )
    .await;
    assert!(
        reply.expect_html(404).contains("not valid"),
        "{}",
        reply.text
    );
    // Odd form bodies are answered, never a 5xx.
    for body in ["%%%", "user_code=a&user_code=b", "decision=maybe", ""] {
        let reply = Page::read(
            browser
                .post(app.url(DEVICE))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert!(
            (400..500).contains(&reply.status),
            "{body:?}: {}",
            reply.status
        );
        reply.expect_html(reply.status);
    }
}

#[tokio::test]
async fn too_many_wrong_codes_are_rate_limited_with_a_retry_time() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    for _ in 0..10 {
        get(&app, &browser, &format!("{DEVICE}?user_code=BCDF-GHJK"))
            .await
            .expect_html(404);
    }
    let (_, user_code, _) = device_codes(&app, "keyward CLI on laptop").await;
    let limited = get(&app, &browser, &format!("{DEVICE}?user_code={user_code}")).await;
    let text = limited.expect_html(429);
    assert!(text.contains("Try again in 10 minutes"), "{text}");
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=600).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn approving_needs_the_csrf_token_and_a_same_origin() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let (device_code, user_code, _) = device_codes(&app, "keyward CLI on laptop").await;
    let (page, csrf) = confirmation(&app, &browser, &user_code).await;
    // No token.
    let reply = post(
        &app,
        &browser,
        DEVICE,
        &[("user_code", user_code.as_str()), ("decision", "approve")],
    )
    .await;
    reply.expect_html(403);
    // A wrong token, and the logout form's token (another purpose).
    let logout_csrf = page.form_field(LOGOUT, "csrf");
    assert_ne!(logout_csrf, csrf);
    for wrong in ["0".repeat(64), logout_csrf, csrf[..63].to_owned()] {
        let reply = post(
            &app,
            &browser,
            DEVICE,
            &[
                ("user_code", user_code.as_str()),
                ("decision", "approve"),
                ("csrf", wrong.as_str()),
            ],
        )
        .await;
        reply.expect_html(403);
    }
    // The right token from a foreign origin.
    let reply = Page::read(
        browser
            .post(app.url(DEVICE))
            .header("origin", "https://evil.example")
            .form(&[
                ("user_code", user_code.as_str()),
                ("decision", "approve"),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    reply.expect_html(403);
    // Another user's token does not work for this one.
    let (_, other_browser) = signed_in(&app, "eve@example.com").await;
    let reply = post(
        &app,
        &other_browser,
        DEVICE,
        &[
            ("user_code", user_code.as_str()),
            ("decision", "approve"),
            ("csrf", csrf.as_str()),
        ],
    )
    .await;
    reply.expect_html(403);
    // Nothing was approved.
    expect_pending(&app, &device_code).await;
    // The same request with the token and this origin goes through.
    app.clock.advance(5);
    let reply = Page::read(
        browser
            .post(app.url(DEVICE))
            .header("origin", app.base_url.as_str())
            .form(&[
                ("user_code", user_code.as_str()),
                ("decision", "approve"),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(reply.expect_html(200).contains("Device approved"));
}

#[tokio::test]
async fn the_client_name_is_html_escaped() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let (_, user_code, _) =
        device_codes(&app, r#"<script>alert("x")</script><b onmouseover=1>"#).await;
    let (page, _) = confirmation(&app, &browser, &user_code).await;
    assert!(
        page.text
            .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b onmouseover=1&gt;"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<script>"), "{}", page.text);
    assert!(!page.text.contains("<b onmouseover"), "{}", page.text);
}

// ---------------------------------------------------------------- pages and session

#[tokio::test]
async fn unknown_console_paths_answer_an_html_404() {
    let app = spawn_app().await;
    for path in ["/console/nope", "/console/device/extra", "/console/keys/x"] {
        let page = get(&app, &browser(), path).await;
        let text = page.expect_html(404);
        assert!(text.contains("Page not found"), "{path}: {text}");
    }
    // A wrong method on a console page is an HTML page too.
    let put = Page::read(browser().put(app.url(DEVICE)).send().await.expect("sent")).await;
    assert!(
        put.expect_html(405).contains("Method not allowed"),
        "{}",
        put.text
    );
    // Outside the console, unknown paths stay problem+json.
    let api = app.get("/v1/nope", Auth::None).await;
    api.expect_problem(404, "not_found");
    // /console itself leads to the device page.
    let index = get(&app, &browser(), "/console").await;
    assert_eq!(index.expect_redirect(), KEYS);
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_server_side() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    app.clock.advance(16 * 60);
    let page = get(&app, &browser, DEVICE).await;
    page.expect_html(200);
    assert!(
        page.set_cookie("kw_console_access").is_some(),
        "a new access token"
    );
    let refresh = page
        .cookie_value("kw_console_refresh")
        .expect("a new refresh token");
    assert!(refresh.starts_with("kwr_"));
    // The forms of that page carry tokens for the new cookies.
    let (_, user_code, _) = device_codes(&app, "keyward CLI on laptop").await;
    let (_, csrf) = confirmation(&app, &browser, &user_code).await;
    let reply = post(
        &app,
        &browser,
        DEVICE,
        &[
            ("user_code", user_code.as_str()),
            ("decision", "approve"),
            ("csrf", csrf.as_str()),
        ],
    )
    .await;
    assert!(reply.expect_html(200).contains("Device approved"));
}

#[tokio::test]
async fn logout_ends_the_session_and_the_old_cookies_stop_working() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let browser = browser();
    let login = sign_in(&app, &browser, "ada@example.com", None).await;
    let access = login.cookie_value("kw_console_access").expect("access");
    let refresh = login.cookie_value("kw_console_refresh").expect("refresh");
    let old_cookies = format!("kw_console_access={access}; kw_console_refresh={refresh}");
    let page = get(&app, &browser, DEVICE).await;
    page.expect_html(200);
    let csrf = page.form_field(LOGOUT, "csrf");
    // Logout is CSRF-checked too.
    let refused = post(&app, &browser, LOGOUT, &[("csrf", "nope")]).await;
    refused.expect_html(403);
    get(&app, &browser, DEVICE).await.expect_html(200);
    let reply = post(&app, &browser, LOGOUT, &[("csrf", csrf.as_str())]).await;
    assert_eq!(reply.expect_redirect(), LOGIN);
    let cleared = reply.set_cookie("kw_console_refresh").expect("cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // This browser is signed out.
    let after = get(&app, &browser, DEVICE).await;
    assert!(after.expect_redirect().starts_with(LOGIN));
    // The old cookies, replayed by hand, open nothing: the session is revoked.
    let replay = Page::read(
        app.http
            .get(app.url(DEVICE))
            .header("cookie", old_cookies.as_str())
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(replay.expect_redirect().starts_with(LOGIN));
    assert!(replay
        .set_cookie("kw_console_access")
        .is_some_and(|c| c.contains("Max-Age=0")));
    app.get("/v1/auth/me", Auth::Bearer(&access))
        .await
        .expect_problem(401, "invalid_token");
}

// ---------------------------------------------------------------- usage

const USAGE: &str = "/console/usage";

/// The text of the element carrying `data-stat="name"`.
fn stat(page: &str, name: &str) -> String {
    let marker = format!(r#"data-stat="{name}">"#);
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} card: {page}"))
        + marker.len();
    page[start..start + page[start..].find('<').expect("end")].to_owned()
}

#[tokio::test]
async fn the_usage_page_shows_the_same_numbers_as_the_api() {
    let app = spawn_app().await;
    let (ada, browser) = signed_in(&app, "ada@example.com").await;
    let empty = get(&app, &browser, USAGE).await;
    let text = empty.expect_html(200);
    assert!(text.contains("No requests yet"), "{text}");
    assert_eq!(stat(text, "Executions"), "0");
    assert_eq!(stat(text, "Success rate"), "—");
    assert!(
        text.contains(r#"aria-current="page""#),
        "the section is marked: {text}"
    );

    let created = app
        .create_key(&ada, json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["id"].as_str().expect("id").to_owned();
    for _ in 0..3 {
        assert_eq!(app.verify(&key, None).await["code"], "VALID");
    }
    assert_eq!(
        app.verify(&key, Some(json!(["write"]))).await["code"],
        "INSUFFICIENT_SCOPE"
    );
    let auth = Auth::Bearer(&ada.access_token);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let api = loop {
        let api = app.get("/v1/usage", auth).await.expect(200).clone();
        if api["executions"] == 4 {
            break api;
        }
        assert!(std::time::Instant::now() < deadline, "{api}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let page = get(&app, &browser, USAGE).await;
    let text = page.expect_html(200);
    assert_eq!(stat(text, "Executions"), "4");
    assert_eq!(stat(text, "Success rate"), "75.0%");
    assert!(stat(text, "Avg duration").ends_with(" ms"), "{text}");
    assert_eq!(text.matches(r#"<g class="day""#).count(), 30);
    let today = api["to"].as_str().expect("to");
    assert!(
        text.contains(&format!(
            r#"data-date="{today}" data-total="4" data-succeeded="3" data-failed="1""#
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "<title>{today}: 4 requests (3 succeeded, 1 failed)</title>"
    )));
    assert!(
        text.contains(&format!(r#"<option value="{key_id}">reader</option>"#)),
        "{text}"
    );
    assert!(!text.contains(&key), "the key itself is never on a page");

    // The filter: this key, another user's key (not offered, says so), and all keys again.
    let one = get(&app, &browser, &format!("{USAGE}?key_id={key_id}")).await;
    let text = one.expect_html(200);
    assert!(
        text.contains(&format!(r#"<option value="{key_id}" selected>"#)),
        "{text}"
    );
    assert_eq!(stat(text, "Executions"), "4");
    let bob = app.register("bob@example.com").await;
    let bobs = app.create_key(&bob, json!({"name": "bobs"})).await;
    let foreign = get(
        &app,
        &browser,
        &format!("{USAGE}?key_id={}", bobs["id"].as_str().expect("id")),
    )
    .await;
    let text = foreign.expect_html(404);
    assert!(text.contains("not one of yours"), "{text}");
    assert!(!text.contains("bobs"), "{text}");
    get(&app, &browser, &format!("{USAGE}?key_id="))
        .await
        .expect_html(200);
}

#[tokio::test]
async fn the_usage_page_needs_a_session() {
    let app = spawn_app().await;
    let page = get(&app, &browser(), USAGE).await;
    assert_eq!(page.expect_redirect(), "/console/login?next=/console/usage");
}

// ---------------------------------------------------------------- API keys

const REVOKE: &str = "/console/api-keys/revoke";

/// The text of the `<code id="new-key">` of the show-once dialog.
fn shown_key(page: &str) -> String {
    let marker = r#"<code id="new-key" data-secret>"#;
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no new key: {page}"))
        + marker.len();
    page[start..start + page[start..].find('<').expect("end")].to_owned()
}

async fn create_through_the_dialog(
    app: &TestApp,
    browser: &reqwest::Client,
    fields: &[(&str, &str)],
) -> Page {
    let dialog = get(app, browser, &format!("{KEYS}?create")).await;
    dialog.expect_html(200);
    let csrf = dialog.form_field(KEYS, "csrf");
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    post(app, browser, KEYS, &form).await
}

#[tokio::test]
async fn a_key_made_in_the_console_is_shown_once_and_works() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let empty = get(&app, &browser, KEYS).await;
    let text = empty.expect_html(200);
    assert!(text.contains("No API keys yet"), "{text}");
    assert!(
        text.contains(r#"href="/console/api-keys?create""#),
        "{text}"
    );

    let created = create_through_the_dialog(
        &app,
        &browser,
        &[
            ("name", "ci-deploy"),
            ("expires", "30"),
            ("description", "the deploy job"),
            ("scope", "read"),
        ],
    )
    .await;
    let text = created.expect_html(201);
    assert!(text.contains("Save your API key"), "{text}");
    assert!(text.contains("cannot be shown again"), "{text}");
    assert!(text.contains(r#"data-copy="new-key""#), "{text}");
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let key = shown_key(text);
    assert!(key.starts_with("kw_"), "{key}");

    // The key works, with the scope chosen.
    let me = app.get("/v1/auth/me", Auth::Bearer(&key)).await;
    me.expect(200);
    let verified = app.verify(&key, Some(json!(["write"]))).await;
    assert_eq!(verified["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(verified["scopes"], json!(["read"]));
    assert!(verified["expires_at"].is_string(), "30 days: {verified}");

    // After Done the key is nowhere: the list shows it masked.
    let list = get(&app, &browser, KEYS).await;
    let text = list.expect_html(200);
    assert!(!text.contains(&key), "the full key is on the list page");
    assert!(text.contains("ci-deploy"), "{text}");
    assert!(
        text.contains(&format!("{}…{}", &key[..8], &key[key.len() - 4..])),
        "{text}"
    );
    assert!(text.contains("Never"), "never used yet: {text}");
    assert!(text.contains(">read<"), "{text}");
}

#[tokio::test]
async fn the_create_dialog_shows_the_apis_errors_inline_and_keeps_the_input() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let refused = create_through_the_dialog(
        &app,
        &browser,
        &[
            ("name", "9lives"),
            ("expires", "never"),
            ("description", "kept"),
            ("scope", "write"),
        ],
    )
    .await;
    let text = refused.expect_html(422);
    assert!(text.contains(r#"aria-invalid="true""#), "{text}");
    assert!(text.contains(r#"class="field-error""#), "{text}");
    assert!(
        text.contains(r#"value="9lives""#),
        "the typed name is kept: {text}"
    );
    assert!(text.contains(r#"value="kept""#), "{text}");
    assert!(text.contains(r#"value="write" checked"#), "{text}");
    let odd =
        create_through_the_dialog(&app, &browser, &[("name", "ok"), ("expires", "soon")]).await;
    assert!(odd.expect_html(422).contains("offered durations"));
    let odd = create_through_the_dialog(&app, &browser, &[("name", "ok"), ("scope", "root")]).await;
    assert!(odd.expect_html(422).contains("read, write or admin"));
    assert!(get(&app, &browser, KEYS)
        .await
        .expect_html(200)
        .contains("No API keys yet"));
}

#[tokio::test]
async fn the_key_limit_is_explained() {
    let app = spawn_app_with(|settings| settings.keys.max_per_user = 1).await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    create_through_the_dialog(&app, &browser, &[("name", "first")])
        .await
        .expect_html(201);
    let second = create_through_the_dialog(&app, &browser, &[("name", "second")]).await;
    let text = second.expect_html(409);
    assert!(text.contains("the most one user may have"), "{text}");
}

#[tokio::test]
async fn revoking_asks_first_then_the_key_stops_working() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let created = create_through_the_dialog(&app, &browser, &[("name", "doomed")]).await;
    let key = shown_key(created.expect_html(201));
    let list = get(&app, &browser, KEYS).await;
    let text = list.expect_html(200);
    let marker = "/console/api-keys?revoke=";
    let start = text.find(marker).expect("revoke link") + marker.len();
    let id = text[start..start + text[start..].find('"').expect("end")].to_owned();

    let confirm = get(&app, &browser, &format!("{KEYS}?revoke={id}")).await;
    let text = confirm.expect_html(200);
    assert!(text.contains("Revoke doomed?"), "{text}");
    assert!(text.contains("cannot be undone"), "{text}");
    let csrf = confirm.form_field(REVOKE, "csrf");

    // Without the token nothing happens.
    post(&app, &browser, REVOKE, &[("id", id.as_str())])
        .await
        .expect_html(403);
    app.get("/v1/auth/me", Auth::Bearer(&key)).await.expect(200);

    let done = post(
        &app,
        &browser,
        REVOKE,
        &[("csrf", csrf.as_str()), ("id", id.as_str())],
    )
    .await;
    assert_eq!(done.expect_redirect(), format!("{KEYS}?revoked={id}"));
    app.get("/v1/auth/me", Auth::Bearer(&key))
        .await
        .expect_problem(401, "invalid_api_key");
    let after = get(&app, &browser, &format!("{KEYS}?revoked={id}")).await;
    let text = after.expect_html(200);
    assert!(text.contains("is revoked"), "{text}");
    assert!(text.contains(r#"class="status revoked""#), "{text}");
    assert!(
        !text.contains(&format!("?revoke={id}")),
        "no Revoke button on a revoked key"
    );
    // Confirming again, or another user's key, is not found.
    get(&app, &browser, &format!("{KEYS}?revoke={id}"))
        .await
        .expect_html(404);
}

#[tokio::test]
async fn a_key_is_disabled_and_enabled_from_the_console() {
    const ENABLED: &str = "/console/api-keys/enabled";
    let app = spawn_app().await;
    let (account, browser) = signed_in(&app, "ada@example.com").await;
    let created = app
        .create_key(
            &account,
            json!({"name": "svc", "rate_limit": {"requests": 100, "per_seconds": 60}, "credits": {"remaining": 500}}),
        )
        .await;
    let (id, key) = (
        created["id"].as_str().expect("id"),
        created["key"].as_str().expect("key"),
    );
    let list = get(&app, &browser, KEYS).await;
    let text = list.expect_html(200);
    assert!(text.contains("100 / 60 s, 500 credits left"), "{text}");
    assert!(text.contains(r#"aria-label="Disable svc""#), "{text}");
    let csrf = list.form_field(ENABLED, "csrf");

    // Without the token nothing happens; another user's key is untouched.
    post(&app, &browser, ENABLED, &[("id", id), ("enabled", "false")])
        .await
        .expect_html(403);
    assert_eq!(app.verify(key, None).await["code"], "VALID");
    post(
        &app,
        &browser,
        ENABLED,
        &[("csrf", csrf.as_str()), ("id", id), ("enabled", "maybe")],
    )
    .await
    .expect_html(400);

    let done = post(
        &app,
        &browser,
        ENABLED,
        &[("csrf", csrf.as_str()), ("id", id), ("enabled", "false")],
    )
    .await;
    assert_eq!(done.expect_redirect(), KEYS);
    assert_eq!(app.verify(key, None).await["code"], "DISABLED");
    let text = get(&app, &browser, KEYS).await.expect_html(200).to_owned();
    assert!(text.contains(r#"class="status disabled""#), "{text}");
    assert!(text.contains(r#"aria-label="Enable svc""#), "{text}");

    post(
        &app,
        &browser,
        ENABLED,
        &[("csrf", csrf.as_str()), ("id", id), ("enabled", "true")],
    )
    .await
    .expect_redirect();
    assert_eq!(app.verify(key, None).await["code"], "VALID");

    let bob = app.register("bob@example.com").await;
    let bobs = app.create_key(&bob, json!({"name": "bobs"})).await;
    let bobs_id = bobs["id"].as_str().expect("id");
    post(
        &app,
        &browser,
        ENABLED,
        &[
            ("csrf", csrf.as_str()),
            ("id", bobs_id),
            ("enabled", "false"),
        ],
    )
    .await
    .expect_redirect();
    assert_eq!(
        app.verify(bobs["key"].as_str().expect("key"), None).await["code"],
        "VALID"
    );
}

#[tokio::test]
async fn another_users_key_cannot_be_revoked_from_the_console() {
    let app = spawn_app().await;
    let (_, browser) = signed_in(&app, "ada@example.com").await;
    let bob = app.register("bob@example.com").await;
    let bobs = app.create_key(&bob, json!({"name": "bobs"})).await;
    let id = bobs["id"].as_str().expect("id");
    get(&app, &browser, &format!("{KEYS}?revoke={id}"))
        .await
        .expect_html(404);
    let page = get(&app, &browser, &format!("{KEYS}?create")).await;
    let csrf = page.form_field(KEYS, "csrf");
    let refused = post(
        &app,
        &browser,
        REVOKE,
        &[("csrf", csrf.as_str()), ("id", id)],
    )
    .await;
    assert_eq!(refused.expect_redirect(), format!("{KEYS}?revoke={id}"));
    let key = bobs["key"].as_str().expect("key");
    app.get("/v1/auth/me", Auth::Bearer(key)).await.expect(200);
}

#[tokio::test]
async fn the_keys_page_needs_a_session_and_the_copy_script_is_served() {
    let app = spawn_app().await;
    let page = get(&app, &browser(), KEYS).await;
    assert_eq!(
        page.expect_redirect(),
        "/console/login?next=/console/api-keys"
    );
    let script = get(&app, &browser(), "/console/assets/console.js").await;
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/javascript")));
    assert!(script.text.contains("clipboard"));
}

// ---------------------------------------------------------------- sign-up

const SIGNUP: &str = "/console/signup";

async fn sign_up(app: &TestApp, browser: &reqwest::Client, fields: &[(&str, &str)]) -> Page {
    let form = get(app, browser, SIGNUP).await;
    let text = form.expect_html(200);
    assert!(text.contains("Create account"), "{text}");
    let csrf = form.form_field(SIGNUP, "csrf");
    let mut body = vec![("csrf", csrf.as_str())];
    body.extend_from_slice(fields);
    post(app, browser, SIGNUP, &body).await
}

#[tokio::test]
async fn signing_up_opens_the_console_signed_in() {
    let app = spawn_app().await;
    let browser = browser();
    let done = sign_up(
        &app,
        &browser,
        &[
            ("email", "Ada@Example.com"),
            ("password", PASSWORD),
            ("tenant_name", "Analytical Engines"),
        ],
    )
    .await;
    assert_eq!(done.expect_redirect(), KEYS);
    assert!(done.set_cookie("kw_console_refresh").is_some());
    let keys = get(&app, &browser, KEYS).await;
    keys.expect_html(200);
    // The account works on the API too, with the password chosen here.
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let token = login.expect(200)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let tenant = app.get("/v1/tenant", Auth::Bearer(&token)).await;
    assert_eq!(tenant.expect(200)["name"], "Analytical Engines");
    // Signed in, the form is skipped.
    assert_eq!(get(&app, &browser, SIGNUP).await.expect_redirect(), KEYS);
}

#[tokio::test]
async fn sign_up_errors_are_shown_next_to_their_fields() {
    let app = spawn_app().await;
    app.register("taken@example.com").await;
    let browser = browser();
    let weak = sign_up(
        &app,
        &browser,
        &[
            ("email", "not-an-email"),
            ("password", "password"),
            ("name", "Ada"),
        ],
    )
    .await;
    let text = weak.expect_html(422);
    assert_eq!(text.matches(r#"class="field-error""#).count(), 2, "{text}");
    assert!(
        text.contains(r#"value="not-an-email""#),
        "the email is kept: {text}"
    );
    assert!(text.contains(r#"value="Ada""#), "{text}");
    assert!(
        !text.contains(r#"value="password""#),
        "a password is never echoed: {text}"
    );
    let taken = sign_up(
        &app,
        &browser,
        &[("email", "taken@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert!(taken.expect_html(409).contains("already registered"));
    assert!(taken.set_cookie("kw_console_refresh").is_none());
    // No token, no account.
    let forged = post(
        &app,
        &browser,
        SIGNUP,
        &[("email", "eve@example.com"), ("password", PASSWORD)],
    )
    .await;
    forged.expect_html(403);
    let login = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": "eve@example.com", "password": PASSWORD}),
        )
        .await;
    login.expect_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn a_key_minted_at_sign_up_is_shown_once() {
    let app = spawn_app_with(|settings| settings.keys.create_on_register = true).await;
    let browser = browser();
    let done = sign_up(
        &app,
        &browser,
        &[("email", "ada@example.com"), ("password", PASSWORD)],
    )
    .await;
    let text = done.expect_html(201);
    let marker = r#"<code id="new-key" data-secret>"#;
    let start = text.find(marker).expect("the key") + marker.len();
    let key = &text[start..start + text[start..].find('<').expect("end")];
    app.get("/v1/auth/me", Auth::Bearer(key)).await.expect(200);
    let list = get(&app, &browser, KEYS).await;
    assert!(!list.expect_html(200).contains(key));
}

// ---------------------------------------------------------------- account

const ACCOUNT: &str = "/console/account";
const FIREFOX: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:130.0) Gecko/20100101 Firefox/130.0";

fn browser_as(user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
        .expect("client")
}

/// The id of the row marked "This browser".
fn current_session(page: &str) -> String {
    page.split(r#"data-session-id=""#)
        .skip(1)
        .find(|row| row[..row.find("</tr>").expect("row end")].contains("This browser"))
        .map(|row| row[..row.find('"').expect("end")].to_owned())
        .expect("a row marked This browser")
}

/// The `data-session-id`s of the sessions table, in order.
fn session_ids(page: &str) -> Vec<String> {
    page.split(r#"data-session-id=""#)
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("end")].to_owned())
        .collect()
}

#[tokio::test]
async fn the_account_page_shows_the_profile_and_every_session() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let laptop = browser_as(FIREFOX);
    sign_in(&app, &laptop, "ada@example.com", None).await;
    let phone = browser();
    sign_in(&app, &phone, "ada@example.com", None).await;

    let page = get(&app, &laptop, ACCOUNT).await;
    let text = page.expect_html(200);
    assert!(text.contains("ada@example.com"), "{text}");
    assert!(text.contains(&ada.tenant_id), "{text}");
    assert!(text.contains("Firefox on macOS"), "{text}");
    assert!(text.contains("This browser"), "{text}");
    // Registration's session, the laptop's and the phone's.
    assert_eq!(session_ids(text).len(), 3, "{text}");
    assert!(text.contains(r#"aria-current="page""#), "{text}");
}

#[tokio::test]
async fn one_session_or_all_can_be_signed_out() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let laptop = browser_as(FIREFOX);
    sign_in(&app, &laptop, "ada@example.com", None).await;
    let phone = browser();
    sign_in(&app, &phone, "ada@example.com", None).await;

    let page = get(&app, &laptop, ACCOUNT).await;
    let text = page.expect_html(200).to_owned();
    let csrf = page.form_field("/console/account/sessions/end-all", "csrf");
    let phone_id = current_session(get(&app, &phone, ACCOUNT).await.expect_html(200));
    assert!(session_ids(&text).contains(&phone_id));

    // Without the token, nothing ends.
    post(
        &app,
        &laptop,
        "/console/account/sessions/end",
        &[("id", phone_id.as_str())],
    )
    .await
    .expect_html(403);
    get(&app, &phone, ACCOUNT).await.expect_html(200);

    let ended = post(
        &app,
        &laptop,
        "/console/account/sessions/end",
        &[("csrf", csrf.as_str()), ("id", phone_id.as_str())],
    )
    .await;
    assert_eq!(ended.expect_redirect(), "/console/account?done=session");
    assert_eq!(
        get(&app, &phone, ACCOUNT).await.expect_redirect(),
        "/console/login?next=/console/account"
    );
    let after = get(&app, &laptop, "/console/account?done=session").await;
    let text = after.expect_html(200);
    assert!(text.contains("signed out"), "{text}");
    assert!(!session_ids(text).contains(&phone_id));
    // Another user's session id, or an ended one, is not found.
    let again = post(
        &app,
        &laptop,
        "/console/account/sessions/end",
        &[("csrf", csrf.as_str()), ("id", phone_id.as_str())],
    )
    .await;
    again.expect_html(404);

    // Everywhere: this browser, and the API session of registration.
    let all = post(
        &app,
        &laptop,
        "/console/account/sessions/end-all",
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(all.expect_redirect(), LOGIN);
    assert_eq!(all.cookie_value("kw_console_refresh").as_deref(), Some(""));
    assert_eq!(
        get(&app, &laptop, ACCOUNT).await.expect_redirect(),
        "/console/login?next=/console/account"
    );
    app.get("/v1/auth/me", Auth::Bearer(&ada.access_token))
        .await
        .expect_problem(401, "invalid_token");
}

#[tokio::test]
async fn the_password_is_changed_with_the_current_one() {
    let app = spawn_app().await;
    let ada = app.register("ada@example.com").await;
    let browser = browser();
    sign_in(&app, &browser, "ada@example.com", None).await;
    let page = get(&app, &browser, ACCOUNT).await;
    page.expect_html(200);
    let csrf = page.form_field("/console/account/password", "csrf");
    let change = |current: &'static str, new: &'static str, confirm: &'static str| {
        let csrf = csrf.clone();
        let browser = browser.clone();
        let app = &app;
        async move {
            post(
                app,
                &browser,
                "/console/account/password",
                &[
                    ("csrf", csrf.as_str()),
                    ("current_password", current),
                    ("new_password", new),
                    ("confirm_password", confirm),
                ],
            )
            .await
        }
    };
    let mismatch = change(PASSWORD, "a brand new passphrase", "a different one").await;
    assert!(mismatch.expect_html(422).contains("does not match"));
    let wrong = change(
        "not my password",
        "a brand new passphrase",
        "a brand new passphrase",
    )
    .await;
    assert!(wrong.expect_html(422).contains("is incorrect"));
    let weak = change(PASSWORD, "password", "password").await;
    assert!(weak.expect_html(422).contains(r#"class="field-error""#));
    assert!(!weak.text.contains(PASSWORD), "passwords are never echoed");

    let done = change(PASSWORD, "a brand new passphrase", "a brand new passphrase").await;
    assert_eq!(done.expect_redirect(), "/console/account?done=password");
    // This browser stays signed in; the registration's session does not.
    get(&app, &browser, ACCOUNT).await.expect_html(200);
    app.get("/v1/auth/me", Auth::Bearer(&ada.access_token))
        .await
        .expect_problem(401, "invalid_token");
    let old = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    old.expect_problem(401, "invalid_credentials");
    let new = app
        .post(
            "/v1/auth/login",
            Auth::None,
            json!({"email": "ada@example.com", "password": "a brand new passphrase"}),
        )
        .await;
    new.expect(200);
}

#[tokio::test]
async fn an_api_login_names_its_device() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let reply = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("user-agent", "keyward-cli/0.1.0")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(reply.status(), 200);
    let browser = browser();
    sign_in(&app, &browser, "ada@example.com", None).await;
    let text = get(&app, &browser, ACCOUNT)
        .await
        .expect_html(200)
        .to_owned();
    assert!(text.contains("keyward-cli/0.1.0"), "{text}");
    assert!(
        text.contains("Unknown device"),
        "the registration sent no User-Agent: {text}"
    );
}

#[tokio::test]
async fn the_account_page_needs_a_session() {
    let app = spawn_app().await;
    let page = get(&app, &browser(), ACCOUNT).await;
    assert_eq!(
        page.expect_redirect(),
        "/console/login?next=/console/account"
    );
}

#[tokio::test]
async fn pages_keep_the_origin_header_of_their_own_forms() {
    // `no-referrer` would make Chrome send `Origin: null` with every form POST, which the
    // origin check refuses: the browser suite caught that once. Other sites get no referrer.
    let app = spawn_app().await;
    let page = get(&app, &browser(), LOGIN).await;
    page.expect_html(200);
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
}
