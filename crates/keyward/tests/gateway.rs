//! The gateway as it runs in production: the real `keyward serve --gateway-listen … --upstream
//! …` process, measured from outside. Plain TCP on purpose: these tests count bytes, requests
//! and SQL statements exactly, with nothing between them and the server (the statement counts
//! are per process, so only a process of its own can show them).

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";
const CHUNK: usize = 64 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `keyward serve` with a gateway, on a SQLite file in `dir`; killed on drop.
struct Server {
    child: Child,
    api: String,
    gateway: String,
}

impl Server {
    fn start(dir: &std::path::Path, upstream: &str, api_port: u16) -> Self {
        let gateway = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        for (name, _) in std::env::vars() {
            if name.starts_with("KEYWARD_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{api_port}"),
                "--database-url",
                &format!("sqlite://{}/k.db", dir.display()),
                "--gateway-listen",
                &gateway,
                "--upstream",
                upstream,
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyward serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = Instant::now();
        let (mut api, mut logged_gateway) = (None, None);
        while api.is_none() || logged_gateway.is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "no start");
            let line = lines.next().expect("server output").unwrap();
            let addr_after = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            };
            api = api.or(addr_after("keyward listening addr="));
            logged_gateway = logged_gateway.or(addr_after("keyward gateway listening addr="));
        }
        std::thread::spawn(move || for _ in lines {});
        let api = api.unwrap();
        assert_eq!(logged_gateway.as_deref(), Some(gateway.as_str()));
        Self {
            child,
            api,
            gateway,
        }
    }

    /// Peak resident memory of the server process so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    fn sigterm_and_wait(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection: `(status, body)`, or `None` when the server
/// closed or refused the connection before answering.
fn exchange(addr: &str, head: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some((status, body.to_owned()))
}

fn request(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
}

fn post_json(addr: &str, path: &str, bearer: Option<&str>, body: Value) -> Value {
    let body = body.to_string();
    let auth = bearer.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let head = request(
        addr,
        "POST",
        path,
        &format!("{auth}Content-Type: application/json\r\n"),
        body.as_bytes(),
    );
    let (status, body) = exchange(addr, &head, body.as_bytes()).expect("answer");
    assert!(status < 300, "{path}: {status} {body}");
    serde_json::from_str(&body).expect("json")
}

/// Registers a user and makes a key: `(access token, key)`.
fn account_and_key(api: &str) -> (String, String) {
    let registered = post_json(
        api,
        "/v1/auth/register",
        None,
        json!({"email": "ada@example.com", "password": PASSWORD}),
    );
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let created = post_json(api, "/v1/keys", Some(&token), json!({"name": "load"}));
    (token, created["key"].as_str().unwrap().to_owned())
}

/// An upstream written against the socket: `GET /big/N` sends N bytes, `POST /sink` reads
/// and counts its body, anything else answers `ok`.
fn spawn_raw_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_one(stream));
        }
    });
    addr
}

fn serve_one(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut left = length;
        let mut buffer = vec![0u8; CHUNK];
        while left > 0 {
            let n = reader.read(&mut buffer[..left.min(CHUNK)]).unwrap_or(0);
            if n == 0 {
                return;
            }
            left -= n;
        }
        let stream = reader.get_mut();
        let sent = if let Some(size) = target.strip_prefix("/big/") {
            let size: usize = size.parse().unwrap_or(0);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            let mut ok = stream.write_all(head.as_bytes()).is_ok();
            let zeros = vec![0u8; CHUNK];
            let mut left = size;
            while ok && left > 0 {
                let n = left.min(CHUNK);
                ok = stream.write_all(&zeros[..n]).is_ok();
                left -= n;
            }
            ok
        } else {
            let body = if target == "/sink" {
                length.to_string()
            } else {
                "ok".to_owned()
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body.as_bytes()).is_ok()
        };
        if !sent {
            return;
        }
    }
}

/// The process's `keyward_db_statements_total`, as `"VERB table" → count`.
fn statements(api: &str) -> std::collections::HashMap<String, u64> {
    let head = request(api, "GET", "/metrics", "", b"");
    let (status, text) = exchange(api, &head, b"").expect("metrics");
    assert_eq!(status, 200);
    text.lines()
        .filter_map(|line| line.strip_prefix("keyward_db_statements_total{"))
        .map(|rest| {
            let (labels, count) = rest.split_once("} ").expect("a sample");
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|value| value.trim_end_matches('"').to_owned())
                    .expect("label")
            };
            (
                format!("{} {}", label("verb"), label("table")),
                count.trim().parse().expect("count"),
            )
        })
        .collect()
}

#[test]
fn verifying_a_cached_key_runs_no_sql_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = spawn_raw_upstream();
    let server = Server::start(dir.path(), &format!("http://{upstream}"), free_port());
    let (_, key) = account_and_key(&server.api);
    let verify = |expected: &str| {
        let answer = post_json(&server.api, "/v1/keys/verify", None, json!({"key": key}));
        assert_eq!(answer["code"], expected, "{answer}");
    };
    // The first use reads the key once (unless the preload had it) and notes `last_used_at`,
    // written by the next flush, within a second.
    verify("VALID");
    std::thread::sleep(Duration::from_millis(1_500));

    let before = statements(&server.api);
    let auth = format!("X-API-Key: {key}\r\n");
    for _ in 0..100 {
        verify("VALID");
        let head = request(&server.gateway, "GET", "/hello", &auth, b"");
        assert_eq!(exchange(&server.gateway, &head, b"").unwrap().0, 200);
    }
    let after = statements(&server.api);
    let changed: Vec<(String, u64)> = after
        .iter()
        .map(|(name, count)| (name.clone(), count - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, delta)| *delta > 0)
        .collect();
    eprintln!("statements during 100 verifies and 100 gateway requests: {changed:?}");
    for (name, delta) in &changed {
        // What runs anyway, on timers: the key-change feed's polls and heartbeats, the
        // usage writer's batches, and the webhook dispatcher's polls (due deliveries, the
        // `key.expiring` scan from the subscribed webhooks, the pruning of old deliveries).
        // Nothing else, and nothing on api_keys.
        let background = [
            "SELECT key_changes",
            "UPDATE instances",
            "INSERT usage_daily",
            "SELECT key_change_counter",
            "SELECT webhook_deliveries",
            "SELECT webhooks",
            "DELETE webhook_deliveries",
        ];
        assert!(
            background.contains(&name.as_str()),
            "{name} ran {delta} times while verifying a cached key"
        );
    }
    assert!(
        !changed.iter().any(|(name, _)| name.ends_with(" api_keys")),
        "{changed:?}"
    );
}

#[test]
fn a_hundred_megabytes_each_way_pass_in_flat_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let upstream = spawn_raw_upstream();
    let server = Server::start(dir.path(), &format!("http://{upstream}"), free_port());
    let (_, key) = account_and_key(&server.api);
    let auth = format!("X-API-Key: {key}\r\n");
    // Warm up the connection pool and allocator before taking the baseline.
    for _ in 0..20 {
        let head = request(&server.gateway, "GET", "/warm", &auth, b"");
        assert_eq!(exchange(&server.gateway, &head, b"").unwrap().0, 200);
    }
    let before = server.peak_rss_kib();

    // Download: read and discard as it comes.
    let mut stream = TcpStream::connect(&server.gateway).unwrap();
    let head = request(&server.gateway, "GET", &format!("/big/{SIZE}"), &auth, b"");
    stream.write_all(head.as_bytes()).unwrap();
    let mut received = 0usize;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(received > SIZE, "headers and {SIZE} bytes, got {received}");

    // Upload: written in chunks, counted by the upstream.
    let mut stream = TcpStream::connect(&server.gateway).unwrap();
    let zeros = vec![0u8; CHUNK];
    stream
        .write_all(format!("POST /sink HTTP/1.1\r\nHost: g\r\nConnection: close\r\n{auth}Content-Length: {SIZE}\r\n\r\n").as_bytes())
        .unwrap();
    let mut left = SIZE;
    while left > 0 {
        let n = left.min(CHUNK);
        stream.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with(&SIZE.to_string()), "{answer}");

    let growth_mib = (server.peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!("peak memory before {before} KiB, growth {growth_mib} MiB");
    assert!(
        growth_mib < 32,
        "peak memory grew by {growth_mib} MiB while 200 MiB passed: bodies were buffered"
    );
}

#[test]
fn sigterm_under_load_loses_no_accepted_event() {
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    // The gateway guards the server's own API: /healthz through it is a cheap metered request.
    let mut server = Server::start(
        dir.path(),
        &format!("http://127.0.0.1:{api_port}"),
        api_port,
    );
    let (_, key) = account_and_key(&server.api);
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (api, gateway, key) = (server.api.clone(), server.gateway.clone(), key.clone());
            let (answered, stop) = (answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let verify = json!({ "key": key }).to_string();
                let mut misses = 0;
                while !stop.load(Ordering::SeqCst) && misses < 20 {
                    let answer = if worker % 2 == 0 {
                        let head = request(
                            &api,
                            "POST",
                            "/v1/keys/verify",
                            "Content-Type: application/json\r\n",
                            verify.as_bytes(),
                        );
                        exchange(&api, &head, verify.as_bytes())
                            .filter(|(status, body)| *status == 200 && body.contains("VALID"))
                    } else {
                        let auth = format!("X-API-Key: {key}\r\n");
                        // Any answer of the gateway to a valid key is a metered request, the
                        // 502 of an upstream (our API) that already stopped included.
                        exchange(
                            &gateway,
                            &request(&gateway, "GET", "/healthz", &auth, b""),
                            b"",
                        )
                        .filter(|(status, _)| matches!(status, 200 | 502))
                    };
                    match answer {
                        Some(_) => {
                            answered.fetch_add(1, Ordering::SeqCst);
                            misses = 0;
                        }
                        None => {
                            misses += 1;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before_stop = answered.load(Ordering::SeqCst);
    assert!(before_stop > 20, "the load ran: {before_stop} answers");
    server.sigterm_and_wait();
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let answered = answered.load(Ordering::SeqCst) as i64;
    eprintln!("{before_stop} answers before SIGTERM, {answered} in all");

    // A new server on the same database reads what the old one wrote.
    let again = Server::start(dir.path(), "http://127.0.0.1:9", free_port());
    let login = post_json(
        &again.api,
        "/v1/auth/login",
        None,
        json!({"email": "ada@example.com", "password": PASSWORD}),
    );
    let token = login["access_token"].as_str().unwrap();
    let head = request(
        &again.api,
        "GET",
        "/v1/usage",
        &format!("Authorization: Bearer {token}\r\n"),
        b"",
    );
    let (status, body) = exchange(&again.api, &head, b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let usage: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        usage["executions"], answered,
        "every answered request is metered, and nothing else: {usage}"
    );
    assert_eq!(usage["in_flight"], 0, "{usage}");
}
