// Connection faults on PostgreSQL: requests fail fast with 503, nothing is half-written, and
// the server recovers by itself.
//
// Three ways to hurt the connection: `pg_terminate_backend` on Keyward's backends; a TCP
// proxy between the server and PostgreSQL that is stopped (the database is unreachable) and
// started again on the same port, or that cuts one connection just before its `COMMIT`; and a
// table lock that makes a statement outlive `statement_timeout`.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::kit::*;

// ---------------------------------------------------------------- bounds

/// Longest a request may take to be answered while the database is hurt: "fail fast, not
/// hang". Generous on purpose (the pool gives up after `connect_timeout_seconds`, 1 s in the
/// proxy tests): a correctness bound, not a benchmark.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// How long the server may take to work again once the database is back, by itself.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- URLs and the admin side

fn admin_url() -> String {
    std::env::var(POSTGRES_URL_VARIABLE)
        .unwrap_or_else(|_| panic!("{POSTGRES_URL_VARIABLE} is not set at run time"))
}

/// `(scheme://userinfo@, host:port, /path?query)` of a `postgres://` URL.
fn split_url(url: &str) -> (&str, &str, &str) {
    let authority_start = url.find("://").expect("a URL with a scheme") + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    (
        &url[..authority_start + host_start],
        &authority[host_start..],
        &url[authority_end..],
    )
}

/// The database a URL names: `postgres://u@h:5432/NAME?x=y` → `NAME`.
fn database_name(url: &str) -> String {
    let (_, _, rest) = split_url(url);
    let path = rest.split('?').next().unwrap_or_default();
    let name = path.trim_start_matches('/');
    assert!(!name.is_empty(), "no database name in {url}");
    name.to_owned()
}

/// Where PostgreSQL listens (`host:port`), from the test URL.
fn postgres_address() -> String {
    let url = admin_url();
    let (_, host_port, _) = split_url(&url);
    assert!(
        !host_port.is_empty() && !host_port.starts_with('%'),
        "the fault tests need PostgreSQL on TCP; {POSTGRES_URL_VARIABLE} names no host"
    );
    if host_port.contains(':') && !host_port.ends_with(']') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

/// `database_url` with the host and port of the proxy instead. `plaintext` turns TLS off, so
/// that the proxy can read the protocol (the local PostgreSQL may offer TLS).
fn through_proxy(database_url: &str, port: u16, plaintext: bool) -> String {
    let (head, _, rest) = split_url(database_url);
    let mut url = format!("{head}127.0.0.1:{port}{rest}");
    if plaintext {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("sslmode=disable");
    }
    url
}

/// Runs `sql` on `connection` and returns the single `BIGINT` it selects.
async fn count(connection: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The pids of Keyward's connections to `database`.
async fn keyward_backends(admin: &mut sqlx::PgConnection, database: &str) -> Vec<i32> {
    sqlx::query_scalar::<_, i32>(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'keyward'",
    )
    .bind(database)
    .fetch_all(admin)
    .await
    .expect("list Keyward's backends")
}

/// Terminates every Keyward connection to `database`; returns how many. The filter is applied
/// before the (volatile) terminate call: no other database's backend is touched.
async fn terminate_keyward_backends(admin: &mut sqlx::PgConnection, database: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM ( \
             SELECT pid FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'keyward' AND pid <> pg_backend_pid() \
         ) AS keyward",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .expect("terminate Keyward's backends")
}

// ---------------------------------------------------------------- answers

/// Sends one request and asserts it is answered within [`ANSWER_BOUND`]; returns the reply and
/// how long it took.
async fn answered(what: &str, request: impl Future<Output = Reply>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = tokio::time::timeout(ANSWER_BOUND, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_BOUND:?}: a hang"));
    let elapsed = started.elapsed();
    assert!(
        elapsed < ANSWER_BOUND,
        "{what}: answered {} after {elapsed:?}",
        reply.status
    );
    assert_ne!(
        reply.status.as_u16(),
        500,
        "{what}: a database fault must never be a 500: {}",
        reply.text
    );
    (reply, elapsed)
}

/// Fragments that would betray the internals: SQL, driver and OS messages, addresses, names.
const INTERNALS: &[&str] = &[
    "sqlx",
    "postgres",
    "pg_",
    "select",
    "insert",
    "update ",
    "lock",
    "commit",
    "keyward_test",
    "api_keys",
    "127.0.0.1",
    "localhost",
    "5432",
    "pool",
    "timed out",
    "timeout",
    "statement",
    "terminat",
    "cancel",
    "os error",
    "refused",
    "reset",
    "broken pipe",
    "eof",
    "i/o",
    "io error",
    "protocol",
    "57014",
    "57p01",
    "error returned",
    "error communicating",
];

/// Asserts a 503 `unavailable` problem (SPEC §3) whose body says nothing internal: exactly the
/// problem fields, and none of [`INTERNALS`] nor `also_secret` anywhere in them.
fn expect_unavailable(reply: &Reply, what: &str, also_secret: &[&str]) {
    assert_eq!(
        reply.status.as_u16(),
        503,
        "{what}: expected 503 unavailable, got {}: {}",
        reply.status,
        reply.text
    );
    reply.expect_problem(503, "unavailable");
    let mut fields = reply.body.as_object().expect("a JSON object").clone();
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["code", "detail", "request_id", "status", "title", "type"],
        "{what}: {}",
        reply.text
    );
    // The request id is random letters: it may spell anything, and is checked by
    // `expect_problem` to equal the header.
    fields.remove("request_id");
    let shown = Value::Object(fields).to_string().to_lowercase();
    for secret in INTERNALS.iter().chain(also_secret) {
        assert!(
            !shown.contains(&secret.to_lowercase()),
            "{what}: the 503 body leaks {secret:?}: {}",
            reply.text
        );
    }
}

/// Asserts `reply` is either the success `status` or a clean 503 `unavailable`; says which.
fn success_or_unavailable(reply: &Reply, status: u16, what: &str) -> bool {
    if reply.status.as_u16() == status {
        true
    } else {
        expect_unavailable(reply, what, &[]);
        false
    }
}

fn key_of(created: &Value) -> String {
    created["key"].as_str().expect("the created key").to_owned()
}

fn login_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

fn register_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

/// Polls until `/readyz` answers 200 (any other answer must be a clean 503); panics after
/// [`RECOVERY_BOUND`].
async fn wait_until_ready(app: &TestApp, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (reply, _) = answered(what, app.get("/readyz", Auth::None)).await;
        if success_or_unavailable(&reply, 200, what) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "{what}: still not ready after {RECOVERY_BOUND:?} without a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything works, strictly: ready, register, login, create a key and verify it, verify the
/// old key, list the keys.
async fn everything_works(app: &TestApp, old_key: &str, email: &str) {
    app.get("/readyz", Auth::None).await.expect(200);
    let account = app.register(email).await;
    app.post("/v1/auth/login", Auth::None, login_body(email))
        .await
        .expect(200);
    let created = app.create_key(&account, json!({"name": "after"})).await;
    assert_eq!(app.verify(&key_of(&created), None).await["code"], "VALID");
    assert_eq!(app.verify(old_key, None).await["code"], "VALID");
    let listed = app
        .get("/v1/keys", Auth::Bearer(&account.access_token))
        .await;
    assert_eq!(listed.expect(200)["keys"].as_array().map(Vec::len), Some(1));
}

// ---------------------------------------------------------------- a TCP proxy

/// A TCP proxy on a fixed loopback port, piping each connection to PostgreSQL. [`stop`] closes
/// the listener and cuts every live connection (the database is unreachable); [`start`] opens
/// the same port again. When `inspect`, it follows the protocol of each connection and can cut
/// one just before its `COMMIT` (see [`Proxy::cut_before_commit`]).
///
/// [`stop`]: Proxy::stop
/// [`start`]: Proxy::start
struct Proxy {
    port: u16,
    upstream: String,
    inspect: bool,
    trap: Arc<Mutex<Trap>>,
    running: Option<Running>,
}

struct Running {
    accept: JoinHandle<()>,
    pipes: Arc<Mutex<JoinSet<()>>>,
}

/// The armed cut: the bytes that mark the transaction to cut, how (`silent`: the connection
/// stays open but nothing more passes, as when the network drops packets), and how many cuts
/// happened.
#[derive(Default)]
struct Trap {
    needle: Option<Vec<u8>>,
    silent: bool,
    cuts: usize,
}

impl Proxy {
    async fn new(inspect: bool) -> Self {
        let listener = bind_outside_ephemeral_range().await;
        let port = listener.local_addr().expect("proxy address").port();
        let mut proxy = Self {
            port,
            upstream: postgres_address(),
            inspect,
            trap: Arc::default(),
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let pipes = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn(accept_loop(
            listener,
            self.upstream.clone(),
            self.inspect.then(|| self.trap.clone()),
            pipes.clone(),
        ));
        self.running = Some(Running { accept, pipes });
    }

    /// Closes the listener (connecting is refused) and cuts every piped connection.
    async fn stop(&mut self) {
        let running = self.running.take().expect("the proxy is running");
        running.accept.abort();
        let _ = running.accept.await; // the listener is dropped with the task
        let mut pipes = std::mem::take(&mut *running.pipes.lock().unwrap());
        pipes.shutdown().await; // every pipe task aborted, its sockets closed
    }

    /// Listens again, on the same port.
    async fn start(&mut self) {
        assert!(self.running.is_none(), "the proxy is already running");
        let address = format!("127.0.0.1:{}", self.port);
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(&address).await {
                Ok(listener) => break listener,
                Err(error) if started.elapsed() < Duration::from_secs(5) => {
                    eprintln!("proxy: binding {address} again: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("proxy: cannot listen on {address} again: {error}"),
            }
        };
        self.serve(listener);
    }

    /// Arms a one-shot cut: the connection whose transaction binds `needle` (e.g. a new user's
    /// email) is cut when it sends `COMMIT`, which PostgreSQL then never receives.
    fn cut_before_commit(&self, needle: &str) {
        assert!(self.inspect, "only an inspecting proxy can cut at COMMIT");
        let mut trap = self.trap.lock().unwrap();
        trap.needle = Some(needle.as_bytes().to_vec());
        trap.silent = false;
    }

    /// Like [`Proxy::cut_before_commit`], but the connection goes silent instead of closing:
    /// no `COMMIT` reaches PostgreSQL, no answer comes back, no FIN either, until the proxy
    /// stops.
    fn silence_before_commit(&self, needle: &str) {
        self.cut_before_commit(needle);
        self.trap.lock().unwrap().silent = true;
    }

    /// Disarms the cut; returns how many connections it cut.
    fn disarm(&self) -> usize {
        let mut trap = self.trap.lock().unwrap();
        trap.needle = None;
        std::mem::take(&mut trap.cuts)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(mut ports) = PROXY_PORTS.lock() {
            ports.remove(&self.port);
        }
        if let Some(running) = self.running.take() {
            running.accept.abort();
            if let Ok(mut pipes) = running.pipes.lock() {
                pipes.abort_all();
            }
        }
    }
}

/// A listener on a loopback port below the ephemeral range, so that while the proxy is stopped
/// no outgoing connection of another test can be given its port (it must listen there again).
/// The proxies of this process keep their ports, stopped or not: no other proxy takes one.
static PROXY_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

async fn bind_outside_ephemeral_range() -> TcpListener {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut listener = None;
    if ephemeral_low > 12_000 {
        for _ in 0..200 {
            let port = 10_000 + rand::random::<u16>() % (ephemeral_low - 10_000);
            if PROXY_PORTS.lock().unwrap().contains(&port) {
                continue;
            }
            if let Ok(bound) = TcpListener::bind(("127.0.0.1", port)).await {
                listener = Some(bound);
                break;
            }
        }
    }
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind("127.0.0.1:0").await.expect("proxy port"),
    };
    let port = listener.local_addr().expect("proxy address").port();
    PROXY_PORTS.lock().unwrap().insert(port);
    listener
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    trap: Option<Arc<Mutex<Trap>>>,
    pipes: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let watch = trap.clone().map(Watch::new);
        pipes
            .lock()
            .unwrap()
            .spawn(pipe(client, upstream.clone(), watch));
    }
}

/// Pipes one connection both ways until either side closes or the watch cuts it.
async fn pipe(client: TcpStream, upstream: String, mut watch: Option<Watch>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = from_client.read(&mut buffer).await?;
            if read == 0 {
                return to_server.shutdown().await;
            }
            let chunk = &buffer[..read];
            match watch.as_mut().and_then(|watch| watch.feed(chunk)) {
                Some(forwarded) => {
                    // Everything before the COMMIT reaches PostgreSQL; then both sockets close,
                    // or, silenced, stay open with nothing more passing until the proxy stops.
                    to_server.write_all(&chunk[..forwarded]).await?;
                    if watch.as_ref().is_some_and(|watch| watch.silenced) {
                        std::future::pending::<()>().await;
                    }
                    return Ok(());
                }
                None => to_server.write_all(chunk).await?,
            }
        }
    };
    tokio::select! {
        _ = downstream => {}
        _ = upstream => {}
    }
}

/// Follows the frontend messages of one connection (PostgreSQL protocol 3, in plain text) and
/// says where to cut: at the `COMMIT` of a transaction that bound the trap's needle.
struct Watch {
    trap: Arc<Mutex<Trap>>,
    pending: Vec<u8>,
    started: bool,
    in_transaction: bool,
    marked: bool,
    lost: bool,
    /// The cut made this connection silent rather than closed.
    silenced: bool,
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

impl Watch {
    fn new(trap: Arc<Mutex<Trap>>) -> Self {
        Self {
            trap,
            pending: Vec::new(),
            started: false,
            in_transaction: false,
            marked: false,
            lost: false,
            silenced: false,
        }
    }

    /// Takes the bytes just read from the client; `Some(n)`: forward only the first `n`, then
    /// cut the connection.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.lost {
            return None;
        }
        let earlier = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            // The startup message (and an SSL or GSS request before it) has no type byte.
            let header = usize::from(self.started);
            if rest.len() < header + 4 {
                break;
            }
            let length = u32::from_be_bytes(rest[header..header + 4].try_into().unwrap()) as usize;
            if !(4..1 << 26).contains(&length) {
                // Not the plain protocol (TLS?): stop following.
                self.lost = true;
                self.pending.clear();
                return None;
            }
            let total = header + length;
            if rest.len() < total {
                break;
            }
            let message = rest[..total].to_vec();
            if !self.started {
                let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
                self.started = !matches!(code, SSL_REQUEST | GSSENC_REQUEST);
            } else if self.observe(message[0], &message[5..]) {
                let cut_at = at.saturating_sub(earlier);
                self.pending.clear();
                return Some(cut_at);
            }
            at += total;
        }
        self.pending.drain(..at);
        None
    }

    /// One message of type `kind`; `true`: cut before it.
    fn observe(&mut self, kind: u8, body: &[u8]) -> bool {
        match (kind, body) {
            (b'Q', b"BEGIN\0") => {
                self.in_transaction = true;
                self.marked = false;
            }
            (b'Q', b"COMMIT\0") if self.marked => {
                let mut trap = self.trap.lock().unwrap();
                if trap.needle.take().is_some() {
                    trap.cuts += 1;
                    self.silenced = trap.silent;
                    return true;
                }
                self.in_transaction = false;
                self.marked = false;
            }
            (b'Q', b"COMMIT\0" | b"ROLLBACK\0") => {
                self.in_transaction = false;
                self.marked = false;
            }
            // A Bind carries the statement's parameters as they are sent.
            (b'B', parameters) if self.in_transaction => {
                let trap = self.trap.lock().unwrap();
                if let Some(needle) = &trap.needle {
                    if parameters
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                    {
                        self.marked = true;
                    }
                }
            }
            _ => {}
        }
        false
    }
}

// ---------------------------------------------------------------- 1. terminated backends

/// Requests that must each succeed or answer a clean 503, fast; returns how many were 503.
async fn probe_round(app: &TestApp, account: &Account, key: &str, email: &str) -> usize {
    let session = Auth::Bearer(&account.access_token);
    let (ready, verify, list, me, login, register) = tokio::join!(
        answered("readyz", app.get("/readyz", Auth::None)),
        answered(
            "verify",
            app.post("/v1/keys/verify", Auth::None, json!({"key": key}))
        ),
        answered("list keys", app.get("/v1/keys", session)),
        answered("me", app.get("/v1/auth/me", Auth::ApiKey(key))),
        answered(
            "login",
            app.post("/v1/auth/login", Auth::None, login_body(&account.email))
        ),
        answered(
            "register",
            app.post("/v1/auth/register", Auth::None, register_body(email))
        ),
    );
    let mut unavailable = 0;
    for (reply, status, what) in [
        (&ready.0, 200, "readyz"),
        (&verify.0, 200, "verify"),
        (&list.0, 200, "list keys"),
        (&me.0, 200, "me with an API key"),
        (&login.0, 200, "login"),
        (&register.0, 201, "register"),
    ] {
        if !success_or_unavailable(reply, status, what) {
            unavailable += 1;
        }
    }
    if verify.0.status == 200 {
        assert_eq!(verify.0.body["code"], "VALID", "{}", verify.0.text);
    }
    unavailable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_answer_503_or_succeed_and_the_server_recovers_by_itself() {
    let app = spawn_app().await;
    let database = database_name(&app.database_url());
    let account = app.register("ada@example.com").await;
    let key = key_of(&app.create_key(&account, json!({"name": "ci"})).await);
    assert_eq!(app.verify(&key, None).await["code"], "VALID");
    let mut admin = postgres_admin(&admin_url()).await;

    let stop = AtomicBool::new(false);
    let registered = AtomicUsize::new(0);
    // Traffic all along, so that some requests are in flight when their backend dies.
    let traffic = async {
        let mut unavailable = 0;
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            let email = format!(
                "load{}@example.com",
                registered.fetch_add(1, Ordering::Relaxed)
            );
            unavailable += probe_round(&app, &account, &key, &email).await;
            rounds += 1;
        }
        (rounds, unavailable)
    };
    let faults = async {
        for round in 0..3 {
            // The pool has (re)connected: there is something to terminate.
            let started = Instant::now();
            let mut before = keyward_backends(&mut admin, &database).await;
            while before.is_empty() {
                assert!(
                    started.elapsed() < RECOVERY_BOUND,
                    "round {round}: no backend"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                before = keyward_backends(&mut admin, &database).await;
            }
            let terminated = terminate_keyward_backends(&mut admin, &database).await;
            assert!(terminated >= 1, "round {round}: nothing was terminated");

            // Right after: each request succeeds or answers a clean 503, fast.
            let email = format!("right-after-{round}@example.com");
            probe_round(&app, &account, &key, &email).await;

            // Within a few seconds, everything works again, with no restart.
            let recovered_after = wait_until_ready(&app, &format!("round {round}")).await;
            everything_works(&app, &key, &format!("after-{round}@example.com")).await;
            // On new connections: every terminated backend is gone, new ones serve.
            let mut after = keyward_backends(&mut admin, &database).await;
            while after.iter().any(|pid| before.contains(pid)) {
                assert!(
                    started.elapsed() < 2 * RECOVERY_BOUND,
                    "round {round}: a terminated backend {before:?} still serves: {after:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                after = keyward_backends(&mut admin, &database).await;
            }
            assert!(!after.is_empty(), "round {round}: no new connection");
            eprintln!(
                "round {round}: {terminated} backend(s) terminated; ready again after \
                 {recovered_after:?}"
            );
        }
        stop.store(true, Ordering::Relaxed);
    };
    let ((rounds, unavailable), ()) = tokio::join!(traffic, faults);
    eprintln!("{rounds} rounds of traffic during the faults; {unavailable} answers were 503");
    assert!(rounds >= 1);

    // The session and the key made before the faults are intact.
    app.get("/v1/auth/me", Auth::Bearer(&account.access_token))
        .await
        .expect(200);
    assert_eq!(app.verify(&key, None).await["code"], "VALID");
}

// ---------------------------------------------------------------- 2. database unreachable

/// Every request that needs the database answers a clean 503 within the bound; `/healthz`
/// (the process is alive) still answers 200.
async fn everything_unavailable(app: &TestApp, account: &Account, key: &str, email: &str) {
    let secrets = [app_database(app), app_port(app)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let session = Auth::Bearer(&account.access_token);
    let (ready, verify, list, by_key, create, login, register) = tokio::join!(
        answered("readyz", app.get("/readyz", Auth::None)),
        answered(
            "verify",
            app.post("/v1/keys/verify", Auth::None, json!({"key": key}))
        ),
        answered("list keys", app.get("/v1/keys", session)),
        answered(
            "list keys with an API key",
            app.get("/v1/keys", Auth::ApiKey(key))
        ),
        answered(
            "create key",
            app.post("/v1/keys", session, json!({"name": "during"}))
        ),
        answered(
            "login",
            app.post("/v1/auth/login", Auth::None, login_body(&account.email))
        ),
        answered(
            "register",
            app.post("/v1/auth/register", Auth::None, register_body(email))
        ),
    );
    for (reply, what) in [
        (&ready.0, "readyz"),
        (&verify.0, "verify"),
        // A credential that cannot be checked is not an invalid one: 503, not 401.
        (&list.0, "list keys with a session"),
        (&by_key.0, "list keys with an API key"),
        (&create.0, "create key"),
        (&login.0, "login"),
        (&register.0, "register"),
    ] {
        expect_unavailable(reply, what, &secrets);
    }
    app.get("/healthz", Auth::None).await.expect(200);
}

/// The test database's name, as the server knows it.
fn app_database(app: &TestApp) -> String {
    database_name(&app.database_url())
}

/// The port of the database URL the server uses (the proxy's, here).
fn app_port(app: &TestApp) -> String {
    let url = app.database_url();
    let (_, host_port, _) = split_url(&url);
    host_port.rsplit(':').next().unwrap_or_default().to_owned()
}

/// Rows per table, read directly, for "nothing was written".
async fn table_counts(database_url: &str) -> [(&'static str, i64); 4] {
    let mut connection = postgres_admin(database_url).await;
    let mut counts = [
        ("tenants", 0),
        ("users", 0),
        ("sessions", 0),
        ("api_keys", 0),
    ];
    for (table, rows) in &mut counts {
        *rows = count(&mut connection, &format!("SELECT count(*) FROM {table}")).await;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_503_fast_writes_nothing_and_the_server_recovers() {
    let mut proxy = Proxy::new(false).await;
    let database = fresh_database().await;
    let proxied = through_proxy(&database.url, proxy.port, false);
    let app = spawn_app_with(|settings| {
        settings.database_url = proxied.clone();
        settings.database.connect_timeout_seconds = 1;
    })
    .await;
    assert_eq!(app_port(&app), proxy.port.to_string(), "through the proxy");

    let account = app.register("ada@example.com").await;
    let key = key_of(&app.create_key(&account, json!({"name": "before"})).await);
    assert_eq!(app.verify(&key, None).await["code"], "VALID");
    // Never verified, so never in the key cache: its checks need the database.
    let uncached = key_of(&app.create_key(&account, json!({"name": "uncached"})).await);
    app.get("/readyz", Auth::None).await.expect(200);

    for outage in 0..2 {
        let before = table_counts(&database.url).await;
        let during = format!("during-{outage}@example.com");
        proxy.stop().await;
        let cut = std::time::Instant::now();

        // Twice: right after the cut (dead pooled connections) and once they are all gone.
        everything_unavailable(&app, &account, &uncached, &during).await;
        everything_unavailable(&app, &account, &uncached, &during).await;

        // A cached key answers from memory only while the cache hears every instance's key
        // changes: its lease (1 s) runs out, and then its checks need the database too.
        tokio::time::sleep(Duration::from_millis(1_200).saturating_sub(cut.elapsed())).await;
        let secrets = [app_database(&app), app_port(&app)];
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let cached = app
            .post("/v1/keys/verify", Auth::None, json!({"key": key}))
            .await;
        expect_unavailable(&cached, "verify of a cached key", &secrets);

        // Nothing of the failed register or key creation was written.
        assert_eq!(table_counts(&database.url).await, before, "outage {outage}");

        proxy.start().await;
        let recovered_after = wait_until_ready(&app, &format!("outage {outage}")).await;
        eprintln!("outage {outage}: ready again after {recovered_after:?}");

        // Same server, no restart: the key made before the outage still verifies, the email
        // tried during it is free (201, not 409), everything works.
        assert_eq!(app.verify(&key, None).await["code"], "VALID");
        app.register(&during).await;
        everything_works(&app, &key, &format!("after-{outage}@example.com")).await;
        let keys = app
            .get("/v1/keys", Auth::Bearer(&account.access_token))
            .await;
        let names: Vec<&str> = keys.expect(200)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["uncached", "before"],
            "a key created during the outage exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_before_commit_leaves_nothing_half_written() {
    let proxy = Proxy::new(true).await;
    let database = fresh_database().await;
    let proxied = through_proxy(&database.url, proxy.port, true);
    let app = spawn_app_with(|settings| {
        settings.database_url = proxied.clone();
        settings.database.connect_timeout_seconds = 1;
    })
    .await;
    let account = app.register("ada@example.com").await;
    let key = key_of(&app.create_key(&account, json!({"name": "before"})).await);
    let secrets = [app_database(&app), app_port(&app)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    // A register whose transaction (tenant, user, session) has run entirely, but whose COMMIT
    // never reaches PostgreSQL.
    let before = table_counts(&database.url).await;
    let email = "halfway@example.com";
    proxy.cut_before_commit(email);
    let (reply, _) = answered(
        "register cut at commit",
        app.post("/v1/auth/register", Auth::None, register_body(email)),
    )
    .await;
    assert_eq!(proxy.disarm(), 1, "the register's COMMIT was not cut");
    expect_unavailable(&reply, "register cut at commit", &secrets);
    assert_eq!(
        table_counts(&database.url).await,
        before,
        "a register cut before its commit left rows behind"
    );

    // The same for a key creation.
    let name = "cut-at-commit";
    proxy.cut_before_commit(name);
    let (reply, _) = answered(
        "create key cut at commit",
        app.post(
            "/v1/keys",
            Auth::Bearer(&account.access_token),
            json!({"name": name}),
        ),
    )
    .await;
    assert_eq!(proxy.disarm(), 1, "the key creation's COMMIT was not cut");
    expect_unavailable(&reply, "create key cut at commit", &secrets);
    assert_eq!(
        table_counts(&database.url).await,
        before,
        "a key creation cut before its commit left a row behind"
    );

    // Without a restart, both work, as if never tried.
    wait_until_ready(&app, "after the cuts").await;
    let halfway = app.register(email).await;
    app.create_key(&account, json!({"name": name})).await;
    let keys = app
        .get("/v1/keys", Auth::Bearer(&account.access_token))
        .await;
    assert_eq!(keys.expect(200)["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.verify(&key, None).await["code"], "VALID");
    app.post("/v1/auth/login", Auth::None, login_body(&halfway.email))
        .await
        .expect(200);
}

// ---------------------------------------------------------------- 3. statement timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_the_statement_timeout_answers_503_not_500() {
    let app = spawn_app_with(|settings| settings.database.statement_timeout_seconds = 1).await;
    let account = app.register("ada@example.com").await;
    let session = Auth::Bearer(&account.access_token);
    let key = key_of(&app.create_key(&account, json!({"name": "before"})).await);
    let secrets = [app_database(&app)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    for round in 0..2 {
        // Never verified, so not in the key cache: its check needs the table.
        let uncached = key_of(
            &app.create_key(&account, json!({"name": format!("uncached-{round}")}))
                .await,
        );
        // Another client holds api_keys: every statement on it waits, past the timeout.
        let mut locker = postgres_admin(&app.database_url()).await;
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
            .execute(&mut locker)
            .await
            .unwrap();
        if round > 0 {
            // Verified after round 0, so cached: it needs no table and answers at once.
            assert_eq!(app.verify(&key, None).await["code"], "VALID");
        }

        let (create, verify, list) = tokio::join!(
            answered(
                "create key",
                app.post("/v1/keys", session, json!({"name": "locked out"}))
            ),
            answered(
                "verify",
                app.post("/v1/keys/verify", Auth::None, json!({"key": uncached}))
            ),
            answered("list keys", app.get("/v1/keys", session)),
        );
        for ((reply, elapsed), what) in [
            (&create, "create key"),
            (&verify, "verify"),
            (&list, "list keys"),
        ] {
            expect_unavailable(reply, &format!("round {round}: {what}"), &secrets);
            // Ended by the 1 s statement timeout, not by something quicker.
            assert!(
                *elapsed >= Duration::from_millis(900),
                "round {round}: {what} answered 503 after only {elapsed:?}"
            );
        }

        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        drop(locker);

        // Released: it works again, and the timed-out creation left nothing.
        let keys = app.get("/v1/keys", session).await;
        assert_eq!(
            keys.expect(200)["keys"].as_array().map(Vec::len),
            Some(2 * round + 2)
        );
        let created = app
            .create_key(&account, json!({"name": format!("after-{round}")}))
            .await;
        assert_eq!(app.verify(&key_of(&created), None).await["code"], "VALID");
        assert_eq!(app.verify(&key, None).await["code"], "VALID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_silent_mid_request_answers_503_fast() {
    let mut proxy = Proxy::new(true).await;
    let database = fresh_database().await;
    let proxied = through_proxy(&database.url, proxy.port, true);
    let app = spawn_app_with(|settings| {
        settings.database_url = proxied.clone();
        settings.database.connect_timeout_seconds = 1;
        settings.database.statement_timeout_seconds = 1;
    })
    .await;
    let account = app.register("ada@example.com").await;
    let key = key_of(&app.create_key(&account, json!({"name": "before"})).await);
    let secrets = [app_database(&app), app_port(&app)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    // The register's transaction has run; its COMMIT goes into a network that drops it.
    let email = "silent@example.com";
    proxy.silence_before_commit(email);
    let (reply, _) = answered(
        "register on a connection gone silent",
        app.post("/v1/auth/register", Auth::None, register_body(email)),
    )
    .await;
    assert_eq!(proxy.disarm(), 1, "the register's COMMIT was not held");
    expect_unavailable(&reply, "register on a connection gone silent", &secrets);

    // The network comes back (the silent connection ends): everything works, no restart.
    proxy.stop().await;
    proxy.start().await;
    wait_until_ready(&app, "after the silence").await;
    app.register(email).await;
    everything_works(&app, &key, "after@example.com").await;
}
