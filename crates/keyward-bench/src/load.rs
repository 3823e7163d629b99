//! The load generator: `connections` workers, each with one kept-alive HTTP/1.1 connection
//! (`hyper::client::conn::http1`, no pool, no retries), sending one request after another for
//! warm-up + measurement. Only requests that start inside the measurement window are counted;
//! every latency is kept (microseconds), so percentiles are exact.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cpu::{CpuSnapshot, CpuWatch};

/// One kind of request, sent again and again.
pub struct Target {
    pub addr: SocketAddr,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub check: Check,
    /// What changes from one request to the next.
    pub vary: Vary,
    /// Checks the body of the first measured answer, then one in this many (1: every one).
    pub check_every: u64,
}

/// What changes from one request to the next (the rest of the request is fixed).
#[derive(Clone, Default)]
pub enum Vary {
    #[default]
    Nothing,
    /// The body is `{"key": <key>}`, the key drawn at random for each request: a cache or a
    /// database page that serves one key is not the one that serves a million.
    VerifyBody(Arc<Vec<String>>),
    /// An `X-API-Key: <key>` header, the key drawn at random for each request.
    ApiKeyHeader(Arc<Vec<String>>),
    /// The body is `{"refresh_token": <token>}`: worker `i` starts with token `i` and then
    /// presents the token the previous answer gave (refresh tokens work once).
    RefreshChain(Arc<Vec<String>>),
}

/// What a sampled 2xx body must look like.
#[derive(Clone)]
pub enum Check {
    /// Any body.
    Anything,
    /// Exactly these bytes.
    Exact(Bytes),
    /// A JSON object whose `valid` is `true` (a verify answer for a good key).
    ValidKey,
    /// A `GET /v1/auth/me` answer whose `auth.method` is this one.
    AuthMethod(&'static str),
    /// A token pair with a `refresh_token` (login and refresh answers).
    TokenPair,
}

impl Target {
    pub fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
            headers.insert(HOST, host);
        }
        Self {
            addr,
            method,
            path: path.to_owned(),
            headers,
            body: Bytes::new(),
            check: Check::Anything,
            vary: Vary::Nothing,
            check_every: CHECK_EVERY,
        }
    }

    pub fn vary(mut self, vary: Vary) -> Self {
        if !matches!(vary, Vary::Nothing | Vary::ApiKeyHeader(_)) {
            self.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        self.vary = vary;
        self
    }

    /// Checks every answer's body rather than a sample.
    pub fn check_every_answer(mut self) -> Self {
        self.check_every = 1;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> anyhow::Result<Self> {
        let value = HeaderValue::from_str(value)
            .with_context(|| format!("header {name} has a value that HTTP refuses"))?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    pub fn json_body(mut self, body: &serde_json::Value) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body = Bytes::from(body.to_string());
        self
    }

    pub fn check(mut self, check: Check) -> Self {
        self.check = check;
        self
    }

    /// The next request of a worker: `rng` draws keys, `chain` is its refresh token.
    fn request(
        &self,
        rng: &mut XorShift,
        chain: Option<&str>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let pick = |keys: &[String], rng: &mut XorShift| -> anyhow::Result<String> {
            if keys.is_empty() {
                anyhow::bail!("no keys to draw from");
            }
            Ok(keys[rng.below(keys.len())].clone())
        };
        let body = match &self.vary {
            Vary::VerifyBody(keys) => verify_body(&pick(keys, rng)?),
            Vary::RefreshChain(_) => {
                let token = chain.context("this worker has no refresh token")?;
                Bytes::from(serde_json::json!({"refresh_token": token}).to_string())
            }
            Vary::Nothing | Vary::ApiKeyHeader(_) => self.body.clone(),
        };
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .body(Full::new(body))
            .context("build the request")?;
        *request.headers_mut() = self.headers.clone();
        if let Vary::ApiKeyHeader(keys) = &self.vary {
            let value = HeaderValue::from_str(&pick(keys, rng)?).context("X-API-Key value")?;
            request.headers_mut().insert("x-api-key", value);
        }
        Ok(request)
    }
}

/// How long to warm up, then measure.
#[derive(Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one measurement saw.
pub struct Measurement {
    /// Requests that started in the window and were answered 2xx with a good body, per second.
    pub requests_per_second: f64,
    /// Latencies of every request that started in the window and was answered (any status), µs,
    /// sorted.
    pub latencies_us: Vec<u32>,
    pub errors: Errors,
    /// Responses of any kind over warm-up and measurement (what the server saw, roughly).
    pub responses_total: u64,
    pub cpu: Option<CpuUse>,
}

/// Share of one core used during the measurement window, in percent.
#[derive(Clone, Copy)]
pub struct CpuUse {
    pub generator: f64,
    pub keyward: Option<f64>,
    pub upstream: Option<f64>,
    /// The rest of the machine (other processes such as a compiler, interrupts): noise.
    pub others: Option<f64>,
}

#[derive(Default)]
pub struct Errors {
    /// Answers whose status was not 2xx, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection or protocol failures.
    pub transport: u64,
    /// 2xx answers whose sampled body did not pass the check.
    pub bad_bodies: u64,
    /// The first error seen, to show what went wrong.
    pub first: Option<String>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport + self.bad_bodies
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (status, count) in &self.statuses {
            parts.push(format!("{count} × HTTP {status}"));
        }
        if self.transport > 0 {
            parts.push(format!("{} transport failures", self.transport));
        }
        if self.bad_bodies > 0 {
            parts.push(format!(
                "{} sampled bodies failed the check",
                self.bad_bodies
            ));
        }
        let mut text = parts.join(", ");
        if let Some(first) = &self.first {
            text.push_str(&format!("; first: {first}"));
        }
        text
    }

    fn merge(&mut self, other: Errors) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.transport += other.transport;
        self.bad_bodies += other.bad_bodies;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    fn note(&mut self, message: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(message());
        }
    }
}

/// Runs the plan against the target: warm-up, then the measured window. `cpu` names the
/// processes and threads whose CPU time is read at the window's edges.
pub async fn run(target: Target, plan: Plan, cpu: &CpuWatch) -> anyhow::Result<Measurement> {
    let target = Arc::new(target);
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let measure_until = measure_from + plan.duration;

    let mut workers = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let target = Arc::clone(&target);
        workers.push(tokio::spawn(worker(
            target,
            index,
            measure_from,
            measure_until,
        )));
    }

    if !plan.warmup.is_zero() {
        eprintln!("    warming up {} s", plan.warmup.as_secs_f64());
    }
    tokio::time::sleep_until(measure_from.into()).await;
    eprintln!("    measuring {} s", plan.duration.as_secs_f64());
    let cpu_before = cpu.snapshot();
    tokio::time::sleep_until(measure_until.into()).await;
    let cpu_after = cpu.snapshot();

    let mut latencies_us = Vec::new();
    let mut errors = Errors::default();
    let mut good = 0u64;
    let mut responses_total = 0u64;
    for worker in workers {
        let result = worker.await.context("a load worker panicked")?;
        latencies_us.extend_from_slice(&result.latencies_us);
        good += result.good;
        responses_total += result.responses_total;
        errors.merge(result.errors);
    }
    latencies_us.sort_unstable();
    Ok(Measurement {
        requests_per_second: good as f64 / plan.duration.as_secs_f64(),
        latencies_us,
        errors,
        responses_total,
        cpu: CpuSnapshot::usage(cpu_before, cpu_after),
    })
}

struct WorkerResult {
    latencies_us: Vec<u32>,
    good: u64,
    responses_total: u64,
    errors: Errors,
}

/// Checks the body of the first measured answer, then one in this many, by default.
const CHECK_EVERY: u64 = 128;

async fn worker(
    target: Arc<Target>,
    index: usize,
    measure_from: Instant,
    measure_until: Instant,
) -> WorkerResult {
    let mut rng = XorShift::seeded(index as u64);
    let mut chain: Option<String> = match &target.vary {
        Vary::RefreshChain(tokens) => tokens.get(index).cloned(),
        _ => None,
    };
    let mut result = WorkerResult {
        latencies_us: Vec::with_capacity(16 * 1024),
        good: 0,
        responses_total: 0,
        errors: Errors::default(),
    };
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    let mut measured = 0u64;
    loop {
        let start = Instant::now();
        if start >= measure_until {
            break;
        }
        let measuring = start >= measure_from;
        let sender = match connection.as_mut() {
            Some(sender) => sender,
            None => match connect(target.addr).await {
                Ok(sender) => connection.insert(sender),
                Err(error) => {
                    if measuring {
                        result.errors.transport += 1;
                        result.errors.note(|| format!("{error:#}"));
                    }
                    // A refused connection fails at once; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = match target.request(&mut rng, chain.as_deref()) {
            Ok(request) => request,
            Err(error) => {
                result.errors.transport += 1;
                result.errors.note(|| format!("{error:#}"));
                break;
            }
        };
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let elapsed = start.elapsed();
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                connection = None;
                if measuring {
                    result.errors.transport += 1;
                    result
                        .errors
                        .note(|| format!("{} {}: {error}", target.method, target.path));
                }
                continue;
            }
        };
        result.responses_total += 1;
        let chained = matches!(target.vary, Vary::RefreshChain(_));
        if measuring {
            result
                .latencies_us
                .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        }
        if !status.is_success() {
            // A refused refresh ends the worker's chain, warm-up or not: count it always.
            if measuring || chained {
                *result.errors.statuses.entry(status.as_u16()).or_default() += 1;
                result.errors.note(|| {
                    format!(
                        "{} {} answered {status}: {}",
                        target.method,
                        target.path,
                        snippet(&body)
                    )
                });
            }
            if chained {
                break;
            }
            continue;
        }
        if let Vary::RefreshChain(_) = target.vary {
            // The chain goes on with the token this answer gave; without one it is broken.
            chain = next_refresh_token(&body);
            if chain.is_none() {
                result.errors.bad_bodies += 1;
                result.errors.note(|| {
                    format!(
                        "{} {} answered {status} without a refresh_token: {}",
                        target.method,
                        target.path,
                        snippet(&body)
                    )
                });
                break;
            }
        }
        if !measuring {
            continue;
        }
        if measured % target.check_every.max(1) == 0 && !body_passes(&target.check, &body) {
            result.errors.bad_bodies += 1;
            result.errors.note(|| {
                format!(
                    "{} {} answered {status} with an unexpected body: {}",
                    target.method,
                    target.path,
                    snippet(&body)
                )
            });
        } else {
            result.good += 1;
        }
        measured += 1;
    }
    result
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    // The connection task ends when the sender is dropped or the server closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The `refresh_token` of a token pair answer.
pub fn next_refresh_token(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get("refresh_token")?.as_str()?.to_owned())
}

/// A small, fast generator (xorshift64*) to draw keys: one per worker, no locking, no system
/// call; the draws need to spread, not to be secret.
pub struct XorShift(u64);

impl XorShift {
    /// A generator for worker `index`, different in every run.
    pub fn seeded(index: u64) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Self::new(clock ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0); the modulo bias is below 1e-12 for a million.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }
}

/// `{"key":"<key>"}`, written directly: the generator shares two cores with the server, so
/// every microsecond it spends is one the server cannot. A key is prefix and alphabet
/// characters, which JSON never escapes; anything else goes through serde_json.
fn verify_body(key: &str) -> Bytes {
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Bytes::from(serde_json::json!({ "key": key }).to_string());
    }
    let mut body = Vec::with_capacity(key.len() + 11);
    body.extend_from_slice(b"{\"key\":\"");
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

/// The parts of answers the checks read; serde skips the rest without building it, which
/// keeps a check of every answer cheap.
#[derive(serde::Deserialize)]
struct VerifyAnswer {
    valid: bool,
}

#[derive(serde::Deserialize)]
struct MeAnswer<'a> {
    #[serde(borrow)]
    auth: MeAuth<'a>,
}

#[derive(serde::Deserialize)]
struct MeAuth<'a> {
    method: &'a str,
}

pub fn body_passes(check: &Check, body: &[u8]) -> bool {
    let json = || serde_json::from_slice::<serde_json::Value>(body).ok();
    match check {
        Check::Anything => true,
        Check::Exact(expected) => body == expected.as_ref(),
        Check::ValidKey => serde_json::from_slice::<VerifyAnswer>(body).is_ok_and(|a| a.valid),
        Check::AuthMethod(method) => {
            serde_json::from_slice::<MeAnswer>(body).is_ok_and(|a| a.auth.method == *method)
        }
        Check::TokenPair => {
            json()
                .and_then(|value| Some(value.get("access_token")?.is_string()))
                .unwrap_or(false)
                && next_refresh_token(body).is_some()
        }
    }
}

/// The start of a body, printable, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        short.push('…');
    }
    short
}

/// The nearest-rank percentile of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], percent: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((percent / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    Some(f64::from(sorted_us[index]) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let latencies: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&latencies, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&latencies, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&latencies, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&[7000], 99.0), Some(7.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn a_verify_answer_passes_only_when_valid() {
        assert!(body_passes(
            &Check::ValidKey,
            br#"{"valid":true,"code":"VALID"}"#
        ));
        assert!(!body_passes(
            &Check::ValidKey,
            br#"{"valid":false,"code":"NOT_FOUND"}"#
        ));
        assert!(!body_passes(&Check::ValidKey, b"not json"));
    }

    #[test]
    fn verify_bodies_are_json() {
        for key in ["kw_abcDEF123", "we\"ird\\key"] {
            let body = verify_body(key);
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value, serde_json::json!({ "key": key }));
        }
    }

    #[test]
    fn me_and_token_answers_are_checked() {
        let me = br#"{"user":{"id":"usr_1"},"auth":{"method":"api_key","scopes":[]}}"#;
        assert!(body_passes(&Check::AuthMethod("api_key"), me));
        assert!(!body_passes(&Check::AuthMethod("session"), me));
        let pair = br#"{"access_token":"a.b.c","refresh_token":"r1","token_type":"bearer"}"#;
        assert!(body_passes(&Check::TokenPair, pair));
        assert_eq!(next_refresh_token(pair), Some("r1".into()));
        assert!(!body_passes(&Check::TokenPair, br#"{"access_token":"a"}"#));
        assert_eq!(next_refresh_token(b"{}"), None);
    }

    #[test]
    fn draws_cover_the_range_and_stay_inside_it() {
        let mut rng = XorShift::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        // Each of 10 values about 1000 times; far from it means a broken generator.
        assert!(
            seen.iter().all(|&count| (800..1200).contains(&count)),
            "{seen:?}"
        );
        assert_eq!(XorShift::new(7).below(1), 0);
    }
}
