//! The peers (`--peers`): `/work/shared/peers/bench-peer.sh better-auth` and `drf-api-key`,
//! run as they are (oha, 64 connections, 10 s), their printed requests/s compared with
//! keyward's verify row of this run. Different load generators and connection counts, so the
//! comparison is of orders of magnitude (the target is 50×), not of percents.
//!
//! The script builds oha on first use (about 7 minutes on 2 cores); the bench does not wait
//! for that: without `tools/bin/oha` it skips the peers and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::report::Report;

/// Where the peers live, unless `KEYWARD_BENCH_PEERS` says.
pub const PEERS_DIRECTORY: &str = "/work/shared/peers";
const PEERS: [&str; 2] = ["better-auth", "drf-api-key"];
/// The target of issue 7: keyward's verify at least this many times a peer's.
const TARGET_TIMES: f64 = 50.0;

pub async fn run(report: &mut Report) {
    let directory = PathBuf::from(
        std::env::var("KEYWARD_BENCH_PEERS").unwrap_or_else(|_| PEERS_DIRECTORY.into()),
    );
    if !directory.join("tools/bin/oha").is_file() {
        let message = format!(
            "peers skipped: {} is not built (bench-peer.sh builds it on first use, ~7 min; \
             run it once by hand)",
            directory.join("tools/bin/oha").display()
        );
        eprintln!("keyward-bench: {message}");
        report.notes.push(message);
        for peer in PEERS {
            report.target(
                format!("verify ≥ {TARGET_TIMES:.0}× {peer}'s verify (requests/s)"),
                "not run (oha not built)",
                None,
            );
        }
        return;
    }
    let keyward = keyward_verify_rps(report);
    for peer in PEERS {
        eprintln!("== peer {peer}");
        let script = directory.clone();
        let name = peer.to_owned();
        let outcome = tokio::task::spawn_blocking(move || run_script(&script, &name)).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => Err(format!("the peer run panicked: {error}")),
        };
        match outcome {
            Ok(rps) => {
                report.notes.push(format!(
                    "peer {peer} (bench-peer.sh, oha, 64 connections): verify {rps:.0} requests/s"
                ));
                match keyward {
                    Some((keyward_rps, ref row)) => {
                        let times = keyward_rps / rps;
                        report.target(
                            format!("verify ≥ {TARGET_TIMES:.0}× {peer}'s verify (requests/s)"),
                            format!("{keyward_rps:.0} ({row}) vs {rps:.0}: {times:.1}×"),
                            Some(times >= TARGET_TIMES),
                        );
                    }
                    None => report.target(
                        format!("verify ≥ {TARGET_TIMES:.0}× {peer}'s verify (requests/s)"),
                        format!("{peer}: {rps:.0}; no keyward verify row in this run"),
                        None,
                    ),
                }
            }
            Err(error) => {
                eprintln!("keyward-bench: peer {peer} FAILED: {error}");
                report.warnings.push(format!("peer {peer} failed: {error}"));
            }
        }
    }
}

/// Keyward's verify requests/s of this run: the first random-key verify row, else the
/// single-key one.
fn keyward_verify_rps(report: &Report) -> Option<(f64, String)> {
    let pick = |needle: &str| {
        report.rows.iter().enumerate().find_map(|(index, row)| {
            if !row.scenario.contains(needle) || row.scenario.contains("storm") {
                return None;
            }
            Some((report.numbers(index)?.0, row.scenario.clone()))
        })
    };
    pick("`POST /v1/keys/verify` (random key)").or_else(|| pick("`POST /v1/keys/verify`"))
}

fn run_script(directory: &Path, peer: &str) -> Result<f64, String> {
    let output = Command::new("bash")
        .arg(directory.join("bench-peer.sh"))
        .arg(peer)
        .current_dir(directory)
        .output()
        .map_err(|error| format!("run bench-peer.sh: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "bench-peer.sh {peer} exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    verify_rps(&stdout).ok_or_else(|| format!("no verify line in bench-peer.sh's output: {stdout}"))
}

/// The requests/s of the `verify` line of bench-peer.sh's table
/// (`route rps p50_ms p99_ms ok_200 non_200`).
pub fn verify_rps(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != "verify" {
            return None;
        }
        fields.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verify_line_gives_the_rate() {
        let output = "peer=better-auth workers=default pin=0 loader=oha duration=10s\n\
                      route           rps     p50_ms     p99_ms     ok_200    non_200\n\
                      hello         26437       2.30       5.30     264370          0\n\
                      verify         1087      58.00      91.00      10870          0\n\
                      verify/hello rps ratio: 0.041\n";
        assert_eq!(verify_rps(output), Some(1087.0));
        assert_eq!(verify_rps("verify/hello rps ratio: 0.041\n"), None);
        assert_eq!(verify_rps(""), None);
    }
}
