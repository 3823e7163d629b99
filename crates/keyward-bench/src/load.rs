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
        }
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

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .body(Full::new(self.body.clone()))
            .context("build the request")?;
        *request.headers_mut() = self.headers.clone();
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
    for _ in 0..plan.connections {
        let target = Arc::clone(&target);
        workers.push(tokio::spawn(worker(target, measure_from, measure_until)));
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

/// Checks the body of the first measured answer, then one in this many.
const CHECK_EVERY: u64 = 128;

async fn worker(
    target: Arc<Target>,
    measure_from: Instant,
    measure_until: Instant,
) -> WorkerResult {
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
        let request = match target.request() {
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
        if !measuring {
            continue;
        }
        result
            .latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        if !status.is_success() {
            *result.errors.statuses.entry(status.as_u16()).or_default() += 1;
            result.errors.note(|| {
                format!(
                    "{} {} answered {status}: {}",
                    target.method,
                    target.path,
                    snippet(&body)
                )
            });
            continue;
        }
        if measured % CHECK_EVERY == 0 && !body_passes(&target.check, &body) {
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

pub fn body_passes(check: &Check, body: &[u8]) -> bool {
    match check {
        Check::Anything => true,
        Check::Exact(expected) => body == expected.as_ref(),
        Check::ValidKey => serde_json::from_slice::<serde_json::Value>(body)
            .map(|value| value.get("valid") == Some(&serde_json::Value::Bool(true)))
            .unwrap_or(false),
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
}
