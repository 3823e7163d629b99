//! The cross-check of keyward-bench's own load generator against oha (the load tool the
//! peers' script uses): the verify scenario measures `/healthz` and single-key verify on the
//! same server with both, and the report shows the two side by side. oha cannot draw a new
//! key for every request, which is why the suite has its own generator; on the routes both
//! can drive, their figures should agree, and this shows whether they do.
//!
//! oha is the one `bench-peer.sh` builds in the peers' folder; without it the check is
//! skipped and the report says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::load::Plan;
use crate::report::Summary;

/// oha's binary, if built: `$KEYWARD_BENCH_PEERS/tools/bin/oha`.
pub fn binary() -> Option<PathBuf> {
    let peers = std::env::var("KEYWARD_BENCH_PEERS")
        .unwrap_or_else(|_| crate::peers::PEERS_DIRECTORY.into());
    let path = PathBuf::from(peers).join("tools/bin/oha");
    path.is_file().then_some(path)
}

/// One oha run with the plan's connections: a warm-up run (discarded), then the measured one.
pub async fn run(
    oha: PathBuf,
    addr: SocketAddr,
    path: &str,
    json_body: Option<String>,
    plan: Plan,
) -> anyhow::Result<Summary> {
    let url = format!("http://{addr}{path}");
    let warmup = plan.warmup;
    let duration = plan.duration;
    let connections = plan.connections;
    tokio::task::spawn_blocking(move || {
        if !warmup.is_zero() {
            once(&oha, &url, json_body.as_deref(), connections, warmup)?;
        }
        once(&oha, &url, json_body.as_deref(), connections, duration)
    })
    .await
    .context("the oha run panicked")?
}

fn once(
    oha: &PathBuf,
    url: &str,
    json_body: Option<&str>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let mut command = std::process::Command::new(oha);
    command
        .args(["--no-tui", "--output-format", "json", "-c"])
        .arg(connections.to_string())
        .arg("-z")
        .arg(format!("{}ms", duration.as_millis()));
    if let Some(body) = json_body {
        command
            .args(["-m", "POST", "-H", "content-type: application/json", "-d"])
            .arg(body);
    }
    let output = command.arg(url).output().context("run oha")?;
    if !output.status.success() {
        bail!(
            "oha exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse(&output.stdout)
}

#[derive(Deserialize)]
struct Report {
    summary: Totals,
    #[serde(rename = "latencyPercentiles")]
    percentiles: Percentiles,
    #[serde(rename = "statusCodeDistribution", default)]
    statuses: std::collections::BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    errors: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Totals {
    #[serde(rename = "requestsPerSec")]
    requests_per_sec: f64,
}

#[derive(Deserialize)]
struct Percentiles {
    p50: Option<f64>,
    p99: Option<f64>,
}

/// oha's JSON report as a row. Its requests/s counts every answer (the generator's counts
/// only good ones), so non-2xx answers and transport errors are reported as errors; requests
/// cut off by the end of the run are not errors.
fn parse(json: &[u8]) -> anyhow::Result<Summary> {
    let report: Report = serde_json::from_slice(json).context("read oha's JSON report")?;
    let bad_statuses: u64 = report
        .statuses
        .iter()
        .filter(|(status, _)| !status.starts_with('2'))
        .map(|(_, count)| count)
        .sum();
    let transport: u64 = report
        .errors
        .iter()
        .filter(|(error, _)| !error.contains("deadline"))
        .map(|(_, count)| count)
        .sum();
    let errors = bad_statuses + transport;
    Ok(Summary {
        requests_per_second: report.summary.requests_per_sec,
        p50_ms: report.percentiles.p50.map(|seconds| seconds * 1e3),
        p99_ms: report.percentiles.p99.map(|seconds| seconds * 1e3),
        errors,
        errors_described: if errors == 0 {
            String::new()
        } else {
            format!("{bad_statuses} non-2xx answers, {transport} transport errors (oha)")
        },
        cpu: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oha_report_becomes_a_row() {
        let json = br#"{"summary":{"successRate":1.0,"requestsPerSec":51234.5},
            "latencyPercentiles":{"p10":0.0005,"p50":0.0011,"p99":0.0031},
            "statusCodeDistribution":{"200":512345,"503":2},
            "errorDistribution":{"aborted due to deadline":64,"connection reset":1}}"#;
        let summary = parse(json).unwrap();
        assert_eq!(summary.requests_per_second, 51234.5);
        assert!((summary.p50_ms.unwrap() - 1.1).abs() < 1e-9);
        assert!((summary.p99_ms.unwrap() - 3.1).abs() < 1e-9);
        assert_eq!(summary.errors, 3);
        assert!(parse(b"not json").is_err());
    }
}
