//! The web console in a real browser: Chromium, driven through chromedriver (WebDriver) with
//! `fantoccini`, against the real `keyward serve` binary. Each test has its own server (a fresh
//! SQLite file), its own chromedriver on a free port and its own empty Chromium profile.
//!
//! Compiled only when `KEYWARD_TEST_CHROMEDRIVER` names a chromedriver (see `main.rs`).
//!
//! Screenshots of every page at 1440 and 360 px wide go to `target/console-screenshots/`
//! (`<page>-<width>.png`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use keyward_client::{Client, CreateKeyRequest, KeyStatus, RegisterRequest};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
/// How long a page may take to show an element we wait for.
const PAGE_WAIT: Duration = Duration::from_secs(10);
/// The two widths every page is checked and photographed at.
const WIDE: u32 = 1440;
const NARROW: u32 = 360;
/// The viewport height of the tests; screenshots grow it to the page's height.
const HEIGHT: u32 = 800;

/// The chromedriver the build was configured with (`build.rs` compiles this module only when
/// the variable is set).
fn chromedriver() -> String {
    std::env::var("KEYWARD_TEST_CHROMEDRIVER")
        .ok()
        .filter(|path| !path.is_empty())
        .expect("KEYWARD_TEST_CHROMEDRIVER: set when this suite was built, and needed to run it")
}

// ---------------------------------------------------------------- the server

fn keyward() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    // The suite's own environment must not leak settings or credentials into the binary.
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// A running `keyward serve` on a fresh SQLite file; killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}/k.db", dir.path().display());
        let mut child = keyward()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &database,
            ])
            .env("KEYWARD_RATE_LIMITS__ENABLED", "false")
            // The CLI of the device test polls every second instead of every five.
            .env("KEYWARD_DEVICE__INTERVAL_SECONDS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyward serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = Instant::now();
        let addr = loop {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            let line = lines.next().expect("server output").unwrap();
            if let Some(rest) = line.split("keyward listening addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep reading the log, or the server blocks once the pipe is full.
        std::thread::spawn(move || for _ in lines {});
        // The browser must use this very origin: console forms are refused from any other.
        Self {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Registers `email` through the SDK; the returned client holds the new session.
    async fn register(&self, email: &str) -> Client {
        let client = Client::builder(&self.url).build().unwrap();
        client
            .register(RegisterRequest {
                email: email.into(),
                password: keyward_client::Secret::new(PASSWORD),
                name: None,
                tenant_name: Some(format!("tenant of {email}")),
            })
            .await
            .unwrap();
        client
    }

    /// A client holding a session from `POST /v1/auth/login`.
    async fn login(&self, email: &str) -> Client {
        let client = Client::builder(&self.url).build().unwrap();
        client.login(email, PASSWORD).await.unwrap();
        client
    }

    fn with_key(&self, key: &str) -> Client {
        Client::builder(&self.url).api_key(key).build().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- the browser

/// chromedriver on a free port, in a process group of its own so that dropping it also ends
/// the Chromium it started, even when a test panicked before closing its session.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start(path: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(path);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("start chromedriver {path}: {error}"));
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser processes it started.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's world: a server, a chromedriver and a Chromium session with an empty profile.
struct Console {
    browser: Browser,
    server: Server,
    _driver: Chromedriver,
    _profile: tempfile::TempDir,
}

impl Console {
    async fn start(chromedriver: &str) -> Self {
        let server = Server::start();
        let driver = Chromedriver::start(chromedriver);
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // A closed network: nothing may try to reach Google's hosts.
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
                format!("--window-size={WIDE},{HEIGHT}"),
            ],
        });
        if let Ok(binary) = std::env::var("KEYWARD_TEST_CHROMIUM") {
            options["binary"] = json!(binary);
        } else if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a Chromium session from chromedriver");
        Self {
            browser,
            server,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn close(self) {
        let _ = self.browser.clone().close().await;
    }

    async fn goto(&self, path: &str) {
        self.browser.goto(&self.server.at(path)).await.unwrap();
    }

    async fn find(&self, css: &str) -> Element {
        self.browser
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css} on the page: {error}"))
    }

    async fn exists(&self, css: &str) -> bool {
        !self
            .browser
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn path(&self) -> String {
        let url = self.browser.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the browser shows `path` (after a form post and its redirect).
    async fn wait_for_path(&self, path: &str) {
        let started = Instant::now();
        loop {
            let now = self.path().await;
            if now == path {
                return;
            }
            if started.elapsed() > PAGE_WAIT {
                let shown = self
                    .browser
                    .execute("return document.querySelector('main').innerText", vec![])
                    .await
                    .unwrap_or_default();
                panic!("expected {path}, the browser is at {now}, showing {shown}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of `css`. A page still loading after a click can swap the element found for a
    /// new one (a stale reference): then it is found again, until `PAGE_WAIT`.
    async fn text(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(error) if started.elapsed() > PAGE_WAIT => panic!("text of {css}: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until `css` reads `expected`: after a click the old page may still be shown for
    /// a moment, with its own heading.
    async fn wait_for_text(&self, css: &str, expected: &str) {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if text == expected {
                return;
            }
            assert!(
                started.elapsed() < PAGE_WAIT,
                "{css} reads {text:?}, not {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn source(&self) -> String {
        self.browser.source().await.unwrap()
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Signs in through the console's form; lands on the keys page.
    async fn sign_in(&self, email: &str) {
        self.goto("/console/login").await;
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.find("main form button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        self.wait_for_path("/console/api-keys").await;
    }

    /// Sets the viewport (not the window) to `width` × `height` CSS pixels.
    async fn viewport(&self, width: u32, height: u32) {
        self.browser.set_window_size(width, height).await.unwrap();
        let inner_width = self.js_u64("return window.innerWidth").await as u32;
        let inner_height = self.js_u64("return window.innerHeight").await as u32;
        if (inner_width, inner_height) != (width, height) {
            // The window has a frame around the page in some modes: grow it by the difference.
            self.browser
                .set_window_size(
                    width + width.saturating_sub(inner_width),
                    height + height.saturating_sub(inner_height),
                )
                .await
                .unwrap();
        }
        let inner_width = self.js_u64("return window.innerWidth").await as u32;
        assert_eq!(
            inner_width, width,
            "the viewport could not be made {width} px wide"
        );
    }

    async fn js_u64(&self, script: &str) -> u64 {
        let value = self.browser.execute(script, vec![]).await.unwrap();
        value
            .as_f64()
            .unwrap_or_else(|| panic!("{script} gave {value}")) as u64
    }

    /// Whether the page is wider than the viewport (it scrolls sideways): `None` when it fits,
    /// else the widths and the elements that reach past the viewport's right edge.
    async fn overflow(&self) -> Option<String> {
        let found = self
            .browser
            .execute(
                "var width = window.innerWidth;
                 if (document.documentElement.scrollWidth <= width + 1) return null;
                 var wide = [];
                 function clipped(element) {
                   if (/absolute|fixed/.test(getComputedStyle(element).position)) return false;
                   for (var up = element.parentElement; up && up !== document.body; up = up.parentElement) {
                     if (getComputedStyle(up).overflowX !== 'visible') return true;
                   }
                   return false;
                 }
                 document.querySelectorAll('body *').forEach(function (element) {
                   var right = element.getBoundingClientRect().right;
                   if (right > width + 1 && wide.length < 8 && !clipped(element)) {
                     wide.push(element.tagName.toLowerCase() + (element.id ? '#' + element.id : '')
                       + (typeof element.className === 'string' && element.className ? '.' + element.className.split(' ').join('.') : '')
                       + ' (right edge ' + Math.round(right) + ')');
                   }
                 });
                 return 'scrollWidth ' + document.documentElement.scrollWidth + ' > innerWidth '
                   + width + '; ' + wide.join(', ');",
                vec![],
            )
            .await
            .unwrap();
        found.as_str().map(str::to_owned)
    }

    /// Screenshots of the page as it is now, at both widths; back to the wide one after.
    /// Returns how the page overflowed horizontally at the narrow width, if it did.
    async fn screenshots(&self, name: &str) -> Option<String> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut narrow_overflow = None;
        for width in [WIDE, NARROW] {
            self.viewport(width, HEIGHT).await;
            if width == NARROW {
                narrow_overflow = self.overflow().await;
            }
            // The whole page in one picture: a viewport as tall as the page.
            let page_height = self
                .js_u64("return document.documentElement.scrollHeight")
                .await as u32;
            self.viewport(width, page_height.clamp(HEIGHT, 4 * HEIGHT))
                .await;
            let png = self.browser.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
        self.viewport(WIDE, HEIGHT).await;
        if let Some(overflow) = &narrow_overflow {
            let _ = writeln!(
                std::io::stderr(),
                "note: {name} is wider than a {NARROW} px viewport: {overflow}"
            );
        }
        narrow_overflow
    }
}

fn screenshot_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/console-screenshots"
    ))
}

/// The numbers of a summary card, e.g. `98.2%` → 98.2, `1,234` → 1234.
fn number(text: &str) -> f64 {
    let digits: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

// ---------------------------------------------------------------- the tests

/// Sign up; create a key through the dialog (Enter submits); read it from the show-once
/// dialog and use it; it is gone after Done, on reload and back in history; revoke it through
/// the confirmation and it is refused. Screenshots of sign-in, sign-up and every keys dialog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_created_shown_once_used_and_revoked() {
    let chromedriver = chromedriver();
    let console = Console::start(&chromedriver).await;

    // Signed out, the console sends to the sign-in page, which links to sign-up.
    console.goto("/console/api-keys").await;
    console.find("#email").await;
    assert!(
        console.path().await.starts_with("/console/login"),
        "{}",
        console.path().await
    );
    console.screenshots("sign-in").await;
    assert!(
        console.exists("a[href='/console/signup']").await,
        "the sign-in page links to sign-up"
    );

    console.goto("/console/signup").await;
    console.find("#email").await;
    console.screenshots("sign-up").await;
    console.fill("#email", "ada@example.com").await;
    console.fill("#password", PASSWORD).await;
    if console.exists("#tenant_name").await {
        console.fill("#tenant_name", "Analytical Engines").await;
    }
    let submit = console.find("main form button[type=submit]").await;
    assert_eq!(submit.text().await.unwrap(), "Create account");
    submit.click().await.unwrap();
    console.wait_for_path("/console/api-keys").await;
    assert!(console.text("h1").await.contains("API keys"));
    console.screenshots("api-keys-empty").await;

    // Create: the dialog, Name, Expire in, a scope, then Enter in the name field.
    let create = console
        .find("a.button[href='/console/api-keys?create']")
        .await;
    assert_eq!(create.text().await.unwrap(), "Create key");
    create.click().await.unwrap();
    let name = console.find("dialog #name").await;
    console.screenshots("create-key").await;
    name.send_keys("ci-deploy").await.unwrap();
    console
        .find("#expires")
        .await
        .select_by_value("30")
        .await
        .unwrap();
    console
        .find("input[name=scope][value=write]")
        .await
        .click()
        .await
        .unwrap();
    console.fill("#description", "deploys from CI").await;
    name.send_keys(&Key::Enter.to_string()).await.unwrap();
    let secret = console.text("code#new-key").await;
    assert!(secret.starts_with("kw_"), "{secret}");
    assert!(
        console.exists("[data-copy]").await,
        "the show-once dialog has a Copy button"
    );
    assert!(
        console.source().await.contains("cannot be shown again"),
        "the show-once dialog warns"
    );
    // The key is never in a URL.
    assert!(!console
        .browser
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains(&secret));
    console.screenshots("new-key").await;

    // The key works: GET /v1/auth/me with Authorization: Bearer.
    let me = console.server.with_key(&secret).me().await.unwrap();
    assert_eq!(me.user.email, "ada@example.com");
    let session = console.server.login("ada@example.com").await;
    let keys = session.list_keys(true).await.unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key.name, "ci-deploy");
    assert_eq!(key.scopes, vec!["write".to_owned()]);
    assert!(key.expires_at.is_some());

    // Done: the key is gone, on reload and back in history.
    console
        .find("dialog a.button[href='/console/api-keys']")
        .await
        .click()
        .await
        .unwrap();
    console.wait_for_path("/console/api-keys").await;
    let row = format!("tr[data-key-id='{}']", key.id);
    console.find(&row).await;
    assert!(!console.exists("#new-key").await);
    assert!(!console.source().await.contains(&secret));
    console.browser.refresh().await.unwrap();
    console.find(&row).await;
    assert!(!console.source().await.contains(&secret), "after reload");
    assert_eq!(console.overflow().await, None, "the keys page at {WIDE} px");
    let narrow = console.screenshots("api-keys").await;
    assert_eq!(narrow, None, "the keys page at {NARROW} px");
    console.browser.back().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !console.source().await.contains(&secret),
        "back in history, the key is shown again"
    );
    console.goto("/console/api-keys").await;

    // Revoke: the row's link, the confirmation naming the key, then the key is refused.
    console
        .find("a[aria-label='Revoke ci-deploy']")
        .await
        .click()
        .await
        .unwrap();
    let confirm = console.find("dialog button.danger").await;
    assert_eq!(confirm.text().await.unwrap(), "Revoke key");
    assert!(console.text("dialog h2").await.contains("ci-deploy"));
    console.screenshots("revoke-key").await;
    confirm.click().await.unwrap();
    console.find(".notice.success").await;
    assert!(console.text(".notice.success").await.contains("ci-deploy"));
    assert!(!console.exists("a[aria-label='Revoke ci-deploy']").await);
    if console.exists(&row).await {
        assert_eq!(console.text(&format!("{row} .status")).await, "revoked");
    }
    let refused = console.server.with_key(&secret).me().await.unwrap_err();
    assert_eq!(refused.status(), Some(401));
    console.close().await;
}

/// Verify calls with a key (some lacking a scope); the usage page's cards and the chart's bar
/// for today carry the same numbers as `GET /v1/usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_cards_and_chart_match_the_api() {
    let chromedriver = chromedriver();
    let console = Console::start(&chromedriver).await;
    let owner = console.server.register("bea@example.com").await;
    console.sign_in("bea@example.com").await;

    // No traffic yet: the empty state.
    console.goto("/console/usage").await;
    assert_eq!(console.text("[data-stat=Executions]").await, "0");
    assert!(console.source().await.contains("No requests yet"));
    console.screenshots("usage-empty").await;

    let created = owner
        .create_key(CreateKeyRequest {
            name: "reader".into(),
            description: None,
            expires_in_days: None,
            scopes: Some(vec!["read".into()]),
            ..CreateKeyRequest::default()
        })
        .await
        .unwrap();
    let secret = created.key.expose().to_owned();
    for scopes in [&["read"][..], &["read"], &[], &["admin"], &["write"]] {
        owner.verify_key(&secret, scopes).await.unwrap();
    }

    // Metering is batched: wait up to 5 s for all five to count.
    let api = console.server.login("bea@example.com").await;
    let started = Instant::now();
    let usage = loop {
        let usage = api.usage(None, None).await.unwrap();
        if usage.executions >= 5 || started.elapsed() > Duration::from_secs(5) {
            break usage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(usage.executions, 5, "{usage:?}");
    assert_eq!((usage.succeeded, usage.failed), (3, 2), "{usage:?}");

    console.goto("/console/usage").await;
    let executions = console.text("[data-stat=Executions]").await;
    assert_eq!(number(&executions), usage.executions as f64);
    let rate = console.text("[data-stat='Success rate']").await;
    let expected = usage.success_rate.expect("a success rate") * 100.0;
    assert!(
        (number(&rate) - expected).abs() < 0.051,
        "card {rate}, API {expected}"
    );
    let bars = console
        .browser
        .find_all(Locator::Css("svg g.day"))
        .await
        .unwrap();
    assert_eq!(bars.len(), usage.days.len(), "one bar per day");
    let today = usage.days.last().expect("today");
    let bar = console
        .find(&format!("svg g.day[data-date='{}']", today.date))
        .await;
    for (attribute, expected) in [
        ("data-total", today.total),
        ("data-succeeded", today.succeeded),
        ("data-failed", today.failed),
    ] {
        assert_eq!(
            bar.attr(attribute).await.unwrap(),
            Some(expected.to_string()),
            "{attribute} of {}",
            today.date
        );
    }
    assert_eq!((today.total, today.succeeded, today.failed), (5, 3, 2));
    let mut total = 0;
    for bar in &bars {
        total += bar
            .attr("data-total")
            .await
            .unwrap()
            .unwrap()
            .parse::<i64>()
            .unwrap();
    }
    assert_eq!(total, usage.executions, "the bars add up to the card");
    // The bar's tooltip carries the same numbers.
    let tooltip = console
        .browser
        .execute(
            "return arguments[0].querySelector('title').textContent",
            vec![serde_json::to_value(&bar).unwrap()],
        )
        .await
        .unwrap();
    let tooltip = tooltip.as_str().unwrap_or_default();
    assert!(
        tooltip.contains("5 requests")
            && tooltip.contains("3 succeeded")
            && tooltip.contains("2 failed"),
        "{tooltip}"
    );

    let narrow = console.screenshots("usage").await;
    assert_eq!(narrow, None, "the usage page at {NARROW} px");

    // The account page, where there is one (it may come later).
    console.goto("/console/account").await;
    if console.text("h1").await.contains("Page not found") {
        let _ = writeln!(
            std::io::stderr(),
            "note: /console/account answers 404: no account screenshots"
        );
    } else {
        console.screenshots("account").await;
    }
    console.close().await;
}

/// `keyward login` polls while the signed-in browser approves its code at the printed link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_is_approved_in_the_browser() {
    let chromedriver = chromedriver();
    let console = Console::start(&chromedriver).await;
    console.server.register("cid@example.com").await;
    console.sign_in("cid@example.com").await;

    let config = tempfile::tempdir().unwrap();
    let mut cli = keyward()
        .args(["login", "--url", &console.server.url])
        .env("KEYWARD_CONFIG_DIR", config.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyward login");
    let mut stderr = BufReader::new(cli.stderr.take().unwrap());
    let mut seen = String::new();
    let (link, code) = {
        let mut link = None;
        loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "no user code in: {seen}"
            );
            seen.push_str(&line);
            if let Some(url) = line
                .split_whitespace()
                .find(|word| word.starts_with("http"))
            {
                link = Some(url.to_owned());
            }
            let word = line.trim();
            if word.len() == 9 && word.as_bytes()[4] == b'-' {
                break (link.expect("a link before the code"), word.to_owned());
            }
        }
    };
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    assert_eq!(link, console.server.at("/console/device"), "{seen}");

    // The printed link, the code typed in, then Approve.
    console.browser.goto(&link).await.unwrap();
    console.find("#user_code").await;
    console.screenshots("device").await;
    console.fill("#user_code", &code).await;
    console
        .find("main form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let approve = console.find("button[value=approve]").await;
    assert_eq!(console.text(".code-shown").await, code);
    console.screenshots("device-confirm").await;
    approve.click().await.unwrap();
    console.wait_for_text("h1", "Device approved").await;
    console.screenshots("device-approved").await;

    let output = cli.wait_with_output().unwrap();
    let stderr = rest.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {seen}{stderr}");
    let whoami = keyward()
        .args(["whoami"])
        .env("KEYWARD_CONFIG_DIR", config.path())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&whoami.stdout);
    assert_eq!(whoami.status.code(), Some(0), "{shown}");
    assert!(shown.contains("cid@example.com"), "{shown}");
    console.close().await;
}

/// A console form whose hidden `csrf` field was removed is refused with the 403 page, and
/// nothing changes: the key is neither revoked nor created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_csrf_token_is_refused() {
    let chromedriver = chromedriver();
    let console = Console::start(&chromedriver).await;
    let owner = console.server.register("dot@example.com").await;
    let created = owner
        .create_key(CreateKeyRequest {
            name: "keep-me".into(),
            ..CreateKeyRequest::default()
        })
        .await
        .unwrap();
    let secret = created.key.expose().to_owned();
    console.sign_in("dot@example.com").await;
    let strip_csrf = "document.querySelectorAll('dialog form input[name=csrf]').forEach(function (input) { input.remove(); }); return document.querySelectorAll('dialog form input[name=csrf]').length";

    // The revoke confirmation, without its token.
    console
        .goto(&format!("/console/api-keys?revoke={}", created.view.id))
        .await;
    let confirm = console.find("dialog button.danger").await;
    let left = console.browser.execute(strip_csrf, vec![]).await.unwrap();
    assert_eq!(left, json!(0));
    confirm.click().await.unwrap();
    console.wait_for_text("h1", "Request refused").await;
    assert!(console.source().await.contains("Nothing was changed"));
    console.screenshots("refused").await;
    console.server.with_key(&secret).me().await.unwrap();

    // The create dialog, without its token.
    console.goto("/console/api-keys?create").await;
    console.fill("dialog #name", "sneaky").await;
    let left = console.browser.execute(strip_csrf, vec![]).await.unwrap();
    assert_eq!(left, json!(0));
    console
        .find("dialog button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    console.wait_for_text("h1", "Request refused").await;
    let keys = owner.list_keys(true).await.unwrap();
    assert_eq!(keys.len(), 1, "no key was created");
    assert_eq!(keys[0].status, KeyStatus::Active, "the key was not revoked");

    // The same form with its token goes through: the refusals above were the token's doing.
    console.goto("/console/api-keys?create").await;
    console.fill("dialog #name", "honest").await;
    console
        .find("dialog button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    console.find("code#new-key").await;
    assert_eq!(owner.list_keys(true).await.unwrap().len(), 2);
    console.close().await;
}
