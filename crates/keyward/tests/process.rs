//! The server process seen from outside, as an operator runs it: everything it logs at trace
//! level holds no issued secret; a SIGKILL in the middle of key creations and revocations loses
//! no answered change; its SQLite files are owner-only; and (`#[ignore]`d, run by `.ci/run`) a
//! bounded soak of mixed traffic sees no 5xx, no error logged and no memory growth.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A text log line at WARN or ERROR: the level is its second word, after the timestamp.
fn warning_or_error(line: &str) -> bool {
    matches!(line.split_whitespace().nth(1), Some("WARN" | "ERROR"))
}

/// A running `keyward serve`, every line it writes (stdout and stderr) kept; killed on drop.
struct Server {
    child: Child,
    api: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `keyward serve` on `database_url` with `RUST_LOG=rust_log`. Started under umask
    /// 022, the common default, so files the server creates get 0644 unless it asks otherwise.
    fn start(database_url: &str, rust_log: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on("127.0.0.1:0", database_url, rust_log, extra, env)
    }

    fn start_on(
        listen: &str,
        database_url: &str,
        rust_log: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", "umask 022; exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--listen", listen, "--database-url"])
            .arg(database_url)
            .args(extra);
        // The suite's own environment must not leak settings into the binary under test.
        for (name, _) in std::env::vars() {
            if name.starts_with("KEYWARD_") {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", rust_log).env("NO_COLOR", "1");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyward serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let readers: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for reader in readers {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    // A soak logs a line per request: past 100 000 lines only warnings and
                    // errors are kept, which is all it looks at.
                    if log.len() < 100_000 || warning_or_error(&line) {
                        log.push(line);
                    }
                }
            });
        }
        let started = Instant::now();
        let api = loop {
            let found = log.lock().unwrap().iter().find_map(|line| {
                line.split("keyward listening addr=")
                    .nth(1)
                    .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("keyward serve exited ({status}): {:?}", log.lock().unwrap());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, api, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Lines logged at WARN or ERROR.
    fn warnings_and_errors(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| warning_or_error(line))
            .cloned()
            .collect()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// SIGKILL: no shutdown code runs, exactly as in a power cut of the process.
    fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway PostgreSQL database beside `KEYWARD_TEST_POSTGRES_URL`'s, dropped on drop.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create(tag: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var("KEYWARD_TEST_POSTGRES_URL") else {
            eprintln!("PostgreSQL part skipped: KEYWARD_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("keyward_{tag}_{}", std::process::id());
        let url = match admin_url.rsplit_once('/') {
            Some((root, _)) => format!("{root}/{name}"),
            None => panic!("KEYWARD_TEST_POSTGRES_URL has no database part: {admin_url}"),
        };
        let database = Self {
            admin_url,
            name,
            url,
        };
        assert!(database.psql(&format!("DROP DATABASE IF EXISTS {}", database.name)));
        assert!(database.psql(&format!("CREATE DATABASE {}", database.name)));
        Some(database)
    }

    fn psql(&self, sql: &str) -> bool {
        Command::new("psql")
            .args([self.admin_url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            // No NOTICE for `DROP DATABASE IF EXISTS` of a database that is not there.
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .status()
            .expect("psql")
            .success()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// One request: `(status, JSON body or Null)`; `None` when no answer came (the server died).
async fn call(
    client: &Client,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = client.request(method, url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.ok()?;
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// `call` that must answer `expected`.
async fn must(
    client: &Client,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
    expected: u16,
) -> Value {
    let (status, body) = call(client, method.clone(), url, bearer, body)
        .await
        .unwrap_or_else(|| panic!("{method} {url}: no answer"));
    assert_eq!(status, expected, "{method} {url}: {body}");
    body
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

async fn verify_code(client: &Client, server: &Server, key: &str) -> String {
    let body = must(
        client,
        Method::POST,
        &server.url("/v1/keys/verify"),
        None,
        Some(json!({"key": key})),
        200,
    )
    .await;
    text(&body, "code")
}

/// An upstream for the gateway: answers every request `200 ok` and closes.
fn spawn_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    addr
}

/// Every form a secret could take in a log line: as is, percent- and form-encoded, JSON-escaped,
/// and a 16-character piece from its middle (a truncated or split copy).
fn forms_of(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_owned(),
        secret.replace(' ', "%20"),
        secret.replace(' ', "+"),
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
        secret.replace('-', ""),
    ];
    if secret.len() >= 32 {
        let middle = secret.len() / 2 - 8;
        forms.push(secret[middle..middle + 16].to_owned());
    }
    forms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_issued_secret_appears_in_a_full_run_logged_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    full_run_logs_no_secret(&format!("sqlite://{}/k.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_issued_secret_appears_in_a_full_run_logged_at_trace_on_postgres() {
    let Some(database) = PgDatabase::create("trace") else {
        return;
    };
    full_run_logs_no_secret(&database.url).await;
}

/// Register, login, refresh, keys, the device flow and the gateway at `RUST_LOG=trace` (every
/// crate: sqlx, hyper, reqwest…); then every issued secret is looked for in all the output.
async fn full_run_logs_no_secret(database_url: &str) {
    let upstream = spawn_upstream();
    let gateway = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        database_url,
        // Everything, from every crate (sqlx, hyper, reqwest, h2, rustls…), at its most verbose.
        "trace",
        &[
            "--gateway-listen",
            &gateway,
            "--upstream",
            &format!("http://{upstream}"),
        ],
        &[],
    );
    let client = Client::new();
    let mut secrets: Vec<String> = vec![PASSWORD.to_owned()];

    let registered = must(
        &client,
        Method::POST,
        &server.url("/v1/auth/register"),
        None,
        Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        201,
    )
    .await;
    secrets.push(text(&registered, "access_token"));
    secrets.push(text(&registered, "refresh_token"));
    let login = must(
        &client,
        Method::POST,
        &server.url("/v1/auth/login"),
        None,
        Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        200,
    )
    .await;
    secrets.push(text(&login, "access_token"));
    secrets.push(text(&login, "refresh_token"));
    let refreshed = must(
        &client,
        Method::POST,
        &server.url("/v1/auth/refresh"),
        None,
        Some(json!({"refresh_token": text(&login, "refresh_token")})),
        200,
    )
    .await;
    let token = text(&refreshed, "access_token");
    secrets.push(token.clone());
    secrets.push(text(&refreshed, "refresh_token"));
    // A wrong password is logged as a failure; the attempt's password must not be.
    let wrong = "not the password at all";
    must(
        &client,
        Method::POST,
        &server.url("/v1/auth/login"),
        None,
        Some(json!({"email": "ada@example.com", "password": wrong})),
        401,
    )
    .await;
    secrets.push(wrong.to_owned());
    must(
        &client,
        Method::GET,
        &server.url("/v1/auth/me"),
        Some(&token),
        None,
        200,
    )
    .await;

    let created = must(
        &client,
        Method::POST,
        &server.url("/v1/keys"),
        Some(&token),
        Some(json!({"name": "first"})),
        201,
    )
    .await;
    let key = text(&created, "key");
    secrets.push(key.clone());
    assert_eq!(verify_code(&client, &server, &key).await, "VALID");
    must(
        &client,
        Method::GET,
        &server.url("/v1/auth/me"),
        Some(&key),
        None,
        200,
    )
    .await;
    let rotated = must(
        &client,
        Method::POST,
        &server.url(&format!("/v1/keys/{}/rotate", text(&created, "id"))),
        Some(&token),
        Some(json!({})),
        201,
    )
    .await;
    let new_key = text(&rotated, "key");
    secrets.push(new_key.clone());
    assert_eq!(verify_code(&client, &server, &key).await, "REVOKED");
    assert_eq!(verify_code(&client, &server, &new_key).await, "VALID");

    // The device flow: code, approval through the API, the key it mints.
    let code = must(
        &client,
        Method::POST,
        &server.url("/v1/auth/device/code"),
        None,
        Some(json!({"client_name": "trace test"})),
        200,
    )
    .await;
    let device_code = text(&code, "device_code");
    let user_code = text(&code, "user_code");
    secrets.push(device_code.clone());
    secrets.push(user_code.clone());
    must(
        &client,
        Method::POST,
        &server.url("/v1/auth/device/approve"),
        Some(&token),
        Some(json!({"user_code": user_code, "approve": true})),
        204,
    )
    .await;
    let device_key = loop {
        let (status, body) = call(
            &client,
            Method::POST,
            &server.url("/v1/auth/device/token"),
            None,
            Some(json!({"device_code": device_code})),
        )
        .await
        .expect("answer");
        if status == 200 {
            break text(&body, "api_key");
        }
        assert!(
            matches!(
                body["error"].as_str(),
                Some("authorization_pending" | "slow_down")
            ),
            "{status} {body}"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
    };
    secrets.push(device_key.clone());
    assert_eq!(verify_code(&client, &server, &device_key).await, "VALID");

    // The gateway, with a key (both headers) and with an access token.
    let through = format!("http://{gateway}/anything");
    for request in [
        client.get(&through).header("x-api-key", &new_key),
        client.get(&through).bearer_auth(&new_key),
        client.get(&through).bearer_auth(&token),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }

    must(
        &client,
        Method::DELETE,
        &server.url(&format!("/v1/keys/{}", text(&rotated, "id"))),
        Some(&token),
        None,
        204,
    )
    .await;
    assert_eq!(verify_code(&client, &server, &new_key).await, "REVOKED");

    // Let the usage reporter and the key-change feed write what they buffer, then read it all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = server.log_text();
    assert!(
        log.lines().count() > 100 && log.contains("TRACE"),
        "the capture holds the trace-level log: {log}"
    );
    for secret in &secrets {
        for form in forms_of(secret) {
            if let Some(at) = log.find(&form) {
                let line = log[..at].rsplit('\n').next().unwrap_or("");
                let rest = log[at..].split('\n').next().unwrap_or("");
                panic!("a secret ({form}) is in the log: {line}{rest}");
            }
        }
    }
}

/// Streams of key creations and revocations, SIGKILLed halfway; after a restart on the same
/// database every answered 201 still verifies and every answered 204 still holds.
async fn answered_changes_survive_a_sigkill(database_url: &str) {
    // Six streams from one loopback address would soon meet the per-address throttles, and the
    // keys kept active the per-user key limit (10 by default).
    let no_limits = [
        ("KEYWARD_RATE_LIMITS__ENABLED", "false"),
        ("KEYWARD_KEYS__MAX_PER_USER", "100000"),
    ];
    let mut server = Server::start(database_url, "info", &[], &no_limits);
    let client = Client::new();
    let registered = must(
        &client,
        Method::POST,
        &server.url("/v1/auth/register"),
        None,
        Some(json!({"email": "crash@example.com", "password": PASSWORD})),
        201,
    )
    .await;
    let token = text(&registered, "access_token");

    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let revoked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (client, created, revoked, stop) = (
            client.clone(),
            created.clone(),
            revoked.clone(),
            stop.clone(),
        );
        let (base, token) = (server.url(""), token.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let answer = call(
                    &client,
                    Method::POST,
                    &format!("{base}/v1/keys"),
                    Some(&token),
                    Some(json!({"name": format!("w{worker}-{n}")})),
                )
                .await;
                let body = match answer {
                    Some((201, body)) => body,
                    // The server died under this request: its outcome is unknown, judge nothing.
                    None => continue,
                    Some(other) => panic!("create: {other:?}"),
                };
                let key = text(&body, "key");
                if n % 2 == 0 {
                    created.lock().unwrap().push(key);
                    continue;
                }
                let url = format!("{base}/v1/keys/{}", text(&body, "id"));
                match call(&client, Method::DELETE, &url, Some(&token), None).await {
                    Some((204, _)) => revoked.lock().unwrap().push(key),
                    // No answer: the revocation may or may not have happened; judge nothing.
                    None => {}
                    Some(other) => panic!("revoke: {other:?}"),
                }
            }
        }));
    }
    // Kill once the streams are well under way, with changes answered a moment ago.
    let started = Instant::now();
    while created.lock().unwrap().len() < 40 || revoked.lock().unwrap().len() < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "streams stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill_hard();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let created = created.lock().unwrap().clone();
    let revoked = revoked.lock().unwrap().clone();

    // The same address: it is the tokens' issuer (`public_url`), and the session must outlive
    // the crash too.
    let server = Server::start_on(&server.api, database_url, "info", &[], &no_limits);
    // Started means migrated and the database reachable after the crash (WAL recovered).
    must(
        &client,
        Method::GET,
        &server.url("/readyz"),
        None,
        None,
        200,
    )
    .await;
    for key in &created {
        assert_eq!(verify_code(&client, &server, key).await, "VALID", "{key}");
    }
    for key in &revoked {
        assert_eq!(verify_code(&client, &server, key).await, "REVOKED", "{key}");
    }
    // New writes work after the crash, and the restart itself logged nothing alarming.
    must(
        &client,
        Method::POST,
        &server.url("/v1/keys"),
        Some(&token),
        Some(json!({"name": "after"})),
        201,
    )
    .await;
    assert_eq!(server.warnings_and_errors(), Vec::<String>::new());
    eprintln!(
        "after SIGKILL: {} created and {} revoked keys all held",
        created.len(),
        revoked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_answered_change_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    answered_changes_survive_a_sigkill(&format!("sqlite://{}/k.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_answered_change_across_a_sigkill() {
    let Some(database) = PgDatabase::create("crash") else {
        return;
    };
    answered_changes_survive_a_sigkill(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &format!("sqlite://{}/k.db", dir.path().display()),
        "info",
        &[],
        &[],
    );
    let client = Client::new();
    // A write, so the write-ahead log and its index exist.
    must(
        &client,
        Method::POST,
        &server.url("/v1/auth/register"),
        None,
        Some(json!({"email": "files@example.com", "password": PASSWORD})),
        201,
    )
    .await;
    for name in ["k.db", "k.db-wal", "k.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
    }
}

/// How many requests of each kind the soak made, and how many answered 5xx or not at all.
#[derive(Default)]
struct Tally {
    verify: AtomicU64,
    me_key: AtomicU64,
    me_token: AtomicU64,
    create: AtomicU64,
    revoke: AtomicU64,
    login: AtomicU64,
    refresh: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn count(&self, counter: &AtomicU64, what: &str, answer: Option<(u16, Value)>, expected: u16) {
        counter.fetch_add(1, Ordering::Relaxed);
        match answer {
            Some((status, _)) if status == expected => {}
            other => self
                .failures
                .lock()
                .unwrap()
                .push(format!("{what}: {other:?}")),
        }
    }
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// Run by `.ci/run` with `KEYWARD_SOAK_SECONDS=75`; by hand:
/// `KEYWARD_SOAK_SECONDS=300 cargo test --release -p keyward --test process -- --ignored soak --nocapture`.
#[ignore = "a bounded soak of minutes; .ci/run runs it explicitly"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_of_mixed_traffic_has_no_5xx_no_error_logged_and_flat_memory() {
    let seconds: u64 = std::env::var("KEYWARD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    // Memory grows while caches, pools and allocator arenas fill; judged only after that.
    let warm_up = Duration::from_secs((seconds / 4).clamp(5, 20));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &format!("sqlite://{}/k.db", dir.path().display()),
        "info",
        &[],
        // The soak measures the server, not its throttles (a loopback client is one address)
        // nor the per-user key limit (10 by default).
        &[
            ("KEYWARD_RATE_LIMITS__ENABLED", "false"),
            ("KEYWARD_KEYS__MAX_PER_USER", "1000"),
        ],
    );
    let client = Client::new();
    let registered = must(
        &client,
        Method::POST,
        &server.url("/v1/auth/register"),
        None,
        Some(json!({"email": "soak@example.com", "password": PASSWORD})),
        201,
    )
    .await;
    let token = text(&registered, "access_token");
    let mut keys = Vec::new();
    for n in 0..20 {
        let body = must(
            &client,
            Method::POST,
            &server.url("/v1/keys"),
            Some(&token),
            Some(json!({"name": format!("soak-{n}")})),
            201,
        )
        .await;
        keys.push(text(&body, "key"));
    }
    let keys = Arc::new(keys);
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let base = server.url("");
    let mut tasks = Vec::new();

    // Verify and me with a key, the bulk of real traffic: four loops.
    for worker in 0..4usize {
        let (client, tally, keys, base) =
            (client.clone(), tally.clone(), keys.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < deadline {
                n += 1;
                let key = &keys[n % keys.len()];
                let body = Some(json!({"key": key}));
                let answer = call(
                    &client,
                    Method::POST,
                    &format!("{base}/v1/keys/verify"),
                    None,
                    body,
                )
                .await;
                tally.count(&tally.verify, "verify", answer, 200);
                if n % 4 == 0 {
                    let answer = call(
                        &client,
                        Method::GET,
                        &format!("{base}/v1/auth/me"),
                        Some(key),
                        None,
                    )
                    .await;
                    tally.count(&tally.me_key, "me (key)", answer, 200);
                }
            }
        }));
    }
    // Key churn and me with a token.
    {
        let (client, tally, base, token) =
            (client.clone(), tally.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let body = Some(json!({"name": format!("churn-{n}")}));
                let answer = call(
                    &client,
                    Method::POST,
                    &format!("{base}/v1/keys"),
                    Some(&token),
                    body,
                )
                .await;
                let id = answer
                    .as_ref()
                    .and_then(|(_, body)| body["id"].as_str().map(str::to_owned));
                tally.count(&tally.create, "create", answer, 201);
                if let Some(id) = id {
                    let answer = call(
                        &client,
                        Method::DELETE,
                        &format!("{base}/v1/keys/{id}"),
                        Some(&token),
                        None,
                    )
                    .await;
                    tally.count(&tally.revoke, "revoke", answer, 204);
                }
                let answer = call(
                    &client,
                    Method::GET,
                    &format!("{base}/v1/auth/me"),
                    Some(&token),
                    None,
                )
                .await;
                tally.count(&tally.me_token, "me (token)", answer, 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // Logins (a password hash each, so a few a second) and refresh chains.
    {
        let (client, tally, base) = (client.clone(), tally.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let body = Some(json!({"email": "soak@example.com", "password": PASSWORD}));
                let answer = call(
                    &client,
                    Method::POST,
                    &format!("{base}/v1/auth/login"),
                    None,
                    body,
                )
                .await;
                let mut refresh = answer
                    .as_ref()
                    .and_then(|(_, body)| body["refresh_token"].as_str().map(str::to_owned));
                tally.count(&tally.login, "login", answer, 200);
                for _ in 0..5 {
                    let Some(current) = refresh.take() else { break };
                    let body = Some(json!({"refresh_token": current}));
                    let answer = call(
                        &client,
                        Method::POST,
                        &format!("{base}/v1/auth/refresh"),
                        None,
                        body,
                    )
                    .await;
                    refresh = answer
                        .as_ref()
                        .and_then(|(_, body)| body["refresh_token"].as_str().map(str::to_owned));
                    tally.count(&tally.refresh, "refresh", answer, 200);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if started.elapsed() >= warm_up {
            samples.push(server.rss_kib());
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    let logged = server.warnings_and_errors();
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let total = get(&tally.verify)
        + get(&tally.me_key)
        + get(&tally.me_token)
        + get(&tally.create)
        + get(&tally.revoke)
        + get(&tally.login)
        + get(&tally.refresh);
    // Medians of thirds, not single samples: RSS dips by 10-20 MiB for a sample whenever the
    // allocator hands freed pages back, and one dip must not become the baseline.
    let third = samples.len() / 3;
    let baseline = median(&mut samples[..third.max(1)].to_vec());
    let end = median(&mut samples[samples.len() - third.max(1)..].to_vec());
    eprintln!(
        "soak {seconds} s: {total} requests ({:.0}/s): verify {}, me with key {}, me with token {}, \
         create {}, revoke {}, login {}, refresh {}; {} failed; {} WARN/ERROR lines; RSS after \
         {} s warm-up: median of the first third {} KiB, of the last third {} KiB, peak {} KiB",
        total as f64 / seconds as f64,
        get(&tally.verify),
        get(&tally.me_key),
        get(&tally.me_token),
        get(&tally.create),
        get(&tally.revoke),
        get(&tally.login),
        get(&tally.refresh),
        failures.len(),
        logged.len(),
        warm_up.as_secs(),
        baseline,
        end,
        samples.iter().max().unwrap(),
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(
        logged.is_empty(),
        "logged: {:?}",
        &logged[..logged.len().min(20)]
    );
    // Tolerance: 10 % plus 8 MiB. Allowed: allocator jitter, and memory that follows the
    // database's size, which churn grows (revoked keys and ended sessions stay): SQLite's page
    // caches (2 MiB per connection, 13 connections) fill as it grows, and a table sized by rows
    // doubles in one step (a 240 s run stepped 80 -> 89 MiB near 3.6k created keys, then stayed
    // flat; BENCHMARKS.md). Caught: a leak of a few hundred bytes per request (over
    // 100 000 requests after warm-up, even in CI's 75 s) or a cache that never evicts.
    assert!(
        end <= baseline + baseline / 10 + 8 * 1024,
        "RSS grew after warm-up: {baseline} KiB -> {end} KiB ({samples:?})"
    );
}
