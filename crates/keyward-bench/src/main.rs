//! `keyward-bench`: throughput and latency of a real `keyward` binary, reported as ratios
//! measured in the same run (machines are noisy; a ratio survives the noise better than a
//! number does).
//!
//! - **gateway**: an upstream (axum, in this process, on its own thread) hit directly, then
//!   through keyward's gateway with an API key.
//! - **verify**: `POST /v1/keys/verify` against `GET /healthz` (the HTTP floor) on one server,
//!   once with metering on and once on a second server with `KEYWARD_USAGE__ENABLED=false`.
//!
//! The load comes from [`load`]: one kept-alive HTTP/1.1 connection per worker on a small
//! tokio runtime, every latency kept. Each keyward runs as a child process ([`servers`]) with
//! its own temporary SQLite database and is killed when the bench ends, fails or panics.
//!
//! Build keyward first: `cargo build --release -p keyward -p keyward-bench`, then
//! `target/release/keyward-bench --write /tmp/bench.md`.

mod cpu;
mod database;
mod http;
mod load;
mod metrics;
mod oha;
mod peers;
mod policies;
mod report;
mod scale;
mod seed;
mod servers;
mod sessions;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper::Method;
use keyward_proto::paths;
use serde_json::json;

use crate::cpu::CpuWatch;
use crate::database::Engine;
use crate::http::Call;
use crate::load::{Check, Plan, Target};
use crate::report::{Report, Summary};
use crate::servers::{Account, KeywardServer, Launch, UpstreamServer, UPSTREAM_BODY};

#[derive(Parser)]
#[command(
    name = "keyward-bench",
    about = "Benchmarks a real keyward binary: gateway vs direct upstream, verify vs healthz, \
             metering on vs off; prints a Markdown table of the results and their ratios",
    after_help = "Build first: cargo build --release -p keyward -p keyward-bench\n\
                  Example: target/release/keyward-bench --scenario verify --duration 10 --write /tmp/bench.md"
)]
struct Args {
    /// Which measurements to run
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Concurrent connections (one worker each, HTTP/1.1 keep-alive)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Seconds measured per row
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds of load before each measurement, not counted
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3600))]
    warmup: u64,
    /// The keyward binary [default: target/release/keyward of this workspace]
    #[arg(long, value_name = "PATH")]
    keyward: Option<PathBuf>,
    /// Also write the Markdown report to this file
    #[arg(long, value_name = "PATH")]
    write: Option<PathBuf>,
    /// Threads of the load generator's runtime (keep it low: it shares the cores with keyward)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    client_threads: u32,
    /// Databases of the keys and sessions scenarios. PostgreSQL: a fresh database on
    /// KEYWARD_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres),
    /// dropped at the end
    #[arg(long, value_enum, default_value_t = Backend::Both)]
    backend: Backend,
    /// Active keys seeded for the keys scenario, one server per count
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    keys: Vec<u64>,
    /// Seconds to wait for keyward's cache preload (keyward_key_cache_entries)
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    preload_timeout: u64,
    /// Also run the peers (/work/shared/peers/bench-peer.sh better-auth and drf-api-key) and
    /// compare their verify requests/s with keyward's
    #[arg(long)]
    peers: bool,
    /// Redis for the policies scenario's shared rate-limit row; "" skips that row
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Gateway,
    Verify,
    /// Verify with a key with no policy, a rate limit (memory, Redis) and credits
    Policies,
    /// Verify and /v1/auth/me with many keys (1k, 1M), SQL statements per request, revocation
    Keys,
    /// Keys, plus the login storm, refresh rotation and login against raw argon2id
    Sessions,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

impl Backend {
    fn engines(self) -> Vec<Engine> {
        match self {
            Backend::Sqlite => vec![Engine::Sqlite],
            Backend::Postgres => vec![Engine::Postgres],
            Backend::Both => vec![Engine::Sqlite, Engine::Postgres],
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads as usize)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keyward-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping `run` on Ctrl-C or SIGTERM drops the servers, which kills the keyward children.
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(args) => result,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("keyward-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for Ctrl-C or SIGTERM and names it.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = ctrl_c() => "Ctrl-C",
                _ = terminate.recv() => "SIGTERM",
            };
        }
    }
    ctrl_c().await;
    "Ctrl-C"
}

/// Ctrl-C; never, when it cannot be listened for (the run must not end for that).
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the chosen scenarios and prints the report; `Ok(false)` when the run had errors.
async fn run(args: Args) -> anyhow::Result<bool> {
    let binary = servers::keyward_binary(args.keyward.clone())?;
    let plan = Plan {
        connections: args.connections as usize,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration),
    };

    let mut report = Report::default();
    header(&mut report, &args, &binary);
    if cfg!(debug_assertions) {
        report.warnings.push(
            "keyward-bench is a debug build: the load generator is slow and the numbers \
             describe it; build with --release"
                .into(),
        );
    }
    if let Some(source) = servers::newer_source(&binary) {
        report.warnings.push(format!(
            "{} is older than {}: the numbers may describe old code; run `cargo build --release -p keyward`",
            binary.display(),
            source.display()
        ));
    }
    for warning in &report.warnings {
        eprintln!("keyward-bench: WARNING: {warning}");
    }

    if matches!(args.scenario, Scenario::Gateway | Scenario::All) {
        eprintln!("== gateway");
        if let Err(error) = gateway(&binary, plan, &mut report).await {
            eprintln!("keyward-bench: the gateway scenario FAILED: {error:#}");
            report.row(
                "gateway: through keyward's gateway",
                Err(format!("{error:#}")),
                None,
            );
        }
    }
    if matches!(args.scenario, Scenario::Verify | Scenario::All) {
        for metering in [true, false] {
            let name = if metering {
                "metering on"
            } else {
                "metering off"
            };
            eprintln!("== verify, {name}");
            if let Err(error) = verify(&binary, plan, metering, &mut report).await {
                eprintln!("keyward-bench: the verify scenario ({name}) FAILED: {error:#}");
                report.row(format!("verify ({name})"), Err(format!("{error:#}")), None);
            }
        }
        add_verify_ratios(&mut report);
    }
    if matches!(args.scenario, Scenario::Policies | Scenario::All) {
        eprintln!("== key policies");
        let redis = Some(args.redis_url.as_str()).filter(|url| !url.is_empty());
        if let Err(error) = policies::run(&binary, plan, redis, &mut report).await {
            eprintln!("keyward-bench: the policies scenario FAILED: {error:#}");
            report.row("key policies", Err(format!("{error:#}")), None);
        }
    }
    if matches!(
        args.scenario,
        Scenario::Keys | Scenario::Sessions | Scenario::All
    ) {
        let sessions = matches!(args.scenario, Scenario::Sessions | Scenario::All);
        let mut findings = scale::Findings::default();
        let mut counts: Vec<usize> = args.keys.iter().map(|&count| count as usize).collect();
        counts.sort_unstable();
        counts.dedup();
        for engine in args.backend.engines() {
            for (index, &count) in counts.iter().enumerate() {
                let setup = scale::Setup {
                    binary: &binary,
                    plan,
                    engine,
                    count,
                    extras: index == 0,
                    sessions,
                    preload_timeout: Duration::from_secs(args.preload_timeout),
                };
                if let Err(error) = scale::run(setup, &mut report, &mut findings).await {
                    let label = format!("{}, {} keys", engine.name(), scale::count_label(count));
                    eprintln!("keyward-bench: the keys scenario ({label}) FAILED: {error:#}");
                    report.row(label, Err(format!("{error:#}")), None);
                }
            }
        }
        scale_summary(&mut report, &findings, &counts);
    }
    if args.peers {
        peers::run(&mut report).await;
    }

    cpu_notes(&mut report, args.client_threads);
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = &args.write {
        std::fs::write(path, &markdown)
            .with_context(|| format!("write the report to {}", path.display()))?;
        eprintln!("keyward-bench: wrote {}", path.display());
    }
    if report.has_problems() {
        eprintln!(
            "keyward-bench: THIS RUN HAD ERRORS OR FAILED SCENARIOS (see the warnings above the \
             notes); do not publish these numbers"
        );
        return Ok(false);
    }
    Ok(true)
}

fn header(report: &mut Report, args: &Args, binary: &Path) {
    let command: Vec<String> = std::env::args().map(|arg| shell_quote(&arg)).collect();
    report
        .header
        .push(format!("command: `{}`", command.join(" ")));
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into());
    report.header.push(format!("date: {now}"));
    let cores = std::thread::available_parallelism()
        .map(|cores| cores.to_string())
        .unwrap_or_else(|error| format!("unknown ({error})"));
    report.header.push(format!(
        "cores: {cores} (std::thread::available_parallelism), shared by keyward, the load \
         generator and the upstream"
    ));
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| "version unknown".into());
    report
        .header
        .push(format!("keyward: {} ({version})", binary.display()));
    report.header.push(format!(
        "load: {} connections (HTTP/1.1 keep-alive, one per worker), {} generator thread(s); \
         {} s warm-up then {} s measured per row; gateway and verify scenarios: SQLite \
         database in a temporary directory",
        args.connections, args.client_threads, args.warmup, args.duration
    ));
    report.header.push(
        "requests/s counts 2xx answers to requests started in the measured window; p50/p99 \
         are client-side latencies of every answered request; ratios are row ÷ row of this run"
            .into(),
    );
    report.header.push(
        "CPU: percent of one core over the measured window, from /proc: the generator is this \
         process minus the upstream's thread; the rest of the machine is every other busy tick \
         (other processes, interrupts; on PostgreSQL rows it includes the PostgreSQL server \
         itself)"
            .into(),
    );
}

async fn gateway(binary: &Path, plan: Plan, report: &mut Report) -> anyhow::Result<()> {
    let upstream = UpstreamServer::start()?;
    eprintln!("  upstream on http://{}", upstream.addr);
    let server = KeywardServer::start(Launch {
        upstream: Some(upstream.addr),
        ..Launch::new(binary, "gateway")
    })
    .await
    .context(
        "keyward did not start with --gateway-listen and --upstream (does this build have \
         the gateway yet?)",
    )?;
    let gateway = server
        .gateway
        .context("keyward started without a gateway address")?;
    eprintln!(
        "  keyward API on http://{}, gateway on http://{gateway}",
        server.api
    );
    let account = Account::create(&server).await?;
    probe_gateway(&server, gateway, &account.api_key).await?;

    let watch = CpuWatch {
        keyward_pid: Some(server.pid()),
        upstream_tid: upstream.thread_id,
    };
    let expected = Check::Exact(bytes::Bytes::from_static(UPSTREAM_BODY.as_bytes()));

    eprintln!("  direct: GET http://{}/hello", upstream.addr);
    let direct_target = Target::new(upstream.addr, Method::GET, "/hello").check(expected.clone());
    let direct = load::run(direct_target, plan, &watch).await?;
    let direct_row = report.row(
        "gateway: direct to the upstream, `GET /hello`",
        Ok(Summary::of(&direct)),
        None,
    );

    eprintln!("  through the gateway: GET http://{gateway}/hello with Authorization: Bearer <key>");
    let through_target = Target::new(gateway, Method::GET, "/hello")
        .header("authorization", &format!("Bearer {}", account.api_key))?
        .check(expected);
    let through = load::run(through_target, plan, &watch).await?;
    let through_row = report.row(
        "gateway: through keyward's gateway (metered), `GET /hello` + API key",
        Ok(Summary::of(&through)),
        Some((direct_row, "direct")),
    );
    report.ratio("gateway / direct", through_row, direct_row);
    still_running(&server)?;
    Ok(())
}

/// Fails clearly when the gateway is not there or does not keep its contract: 401 without a
/// credential, the upstream's answer with one (`Authorization: Bearer` and `X-API-Key`).
async fn probe_gateway(
    server: &KeywardServer,
    gateway: std::net::SocketAddr,
    api_key: &str,
) -> anyhow::Result<()> {
    // The gateway listener may open a moment after /readyz answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let anonymous = loop {
        match Call::get(gateway, "/hello").send().await {
            Ok(answer) => break answer,
            Err(error) if tokio::time::Instant::now() > deadline => {
                bail!(
                    "keyward's gateway does not answer on http://{gateway} ({error:#}); is \
                     --gateway-listen implemented in this build? keyward's output:\n{}",
                    server.recent_log()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    if anonymous.status.as_u16() != 401 {
        bail!(
            "the gateway answered GET /hello without a credential with {} (expected 401): {}",
            anonymous.status,
            anonymous.text()
        );
    }
    for (header, call) in [
        (
            "Authorization: Bearer",
            Call::get(gateway, "/hello").bearer(api_key),
        ),
        (
            "X-API-Key",
            Call::get(gateway, "/hello").api_key_header(api_key),
        ),
    ] {
        let answer = call.send().await?;
        if !answer.status.is_success() || answer.body != UPSTREAM_BODY.as_bytes() {
            bail!(
                "the gateway answered GET /hello with {header} <key> with {} and {:?} \
                 (expected 200 and the upstream's {:?})",
                answer.status,
                answer.text(),
                UPSTREAM_BODY
            );
        }
    }
    Ok(())
}

async fn verify(
    binary: &Path,
    plan: Plan,
    metering: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = if metering {
        "metering on"
    } else {
        "metering off"
    };
    let server = KeywardServer::start(Launch {
        metering,
        ..Launch::new(
            binary,
            if metering {
                "metering-on"
            } else {
                "metering-off"
            },
        )
    })
    .await?;
    eprintln!("  keyward API on http://{}", server.api);
    if !metering {
        if let Some(line) = server.logged("KEYWARD_USAGE__ENABLED") {
            let warning = format!(
                "keyward did not take KEYWARD_USAGE__ENABLED=false (it logged: {line}); the \
                 \"metering off\" rows were measured WITH metering"
            );
            eprintln!("keyward-bench: WARNING: {warning}");
            report.problems.push(warning);
        }
    }
    let account = Account::create(&server).await?;
    let verify_body = json!({"key": account.api_key});
    let first = Call::post(server.api, paths::KEYS_VERIFY, verify_body.clone())
        .send()
        .await?;
    if !first.status.is_success() || !load::body_passes(&Check::ValidKey, &first.body) {
        bail!(
            "POST {} with the new key answered {}: {} (expected 200 and \"valid\": true)",
            paths::KEYS_VERIFY,
            first.status,
            first.text()
        );
    }

    let watch = CpuWatch {
        keyward_pid: Some(server.pid()),
        upstream_tid: None,
    };
    eprintln!("  GET {}", paths::HEALTHZ);
    let healthz = load::run(
        Target::new(server.api, Method::GET, paths::HEALTHZ),
        plan,
        &watch,
    )
    .await?;
    let healthz_row = report.row(
        format!("{name}: `GET /healthz` (HTTP floor)"),
        Ok(Summary::of(&healthz)),
        None,
    );

    eprintln!("  POST {} {{\"key\": <valid key>}}", paths::KEYS_VERIFY);
    let verify_target = Target::new(server.api, Method::POST, paths::KEYS_VERIFY)
        .json_body(&verify_body)
        .check(Check::ValidKey);
    let verified = load::run(verify_target, plan, &watch).await?;
    let verify_row = report.row(
        format!("{name}: `POST /v1/keys/verify`"),
        Ok(Summary::of(&verified)),
        Some((healthz_row, "healthz")),
    );
    still_running(&server)?;

    // +1: the check before the load.
    let sent = verified.responses_total + 1;
    metering_check(&server, &account, metering, sent, report).await;
    if metering {
        cross_check_with_oha(
            &server,
            &verify_body,
            plan,
            [healthz_row, verify_row],
            report,
        )
        .await;
    }
    Ok(())
}

/// The same two rows driven by oha, each compared with this generator's row (see oha.rs).
async fn cross_check_with_oha(
    server: &KeywardServer,
    verify_body: &serde_json::Value,
    plan: Plan,
    [healthz_row, verify_row]: [usize; 2],
    report: &mut Report,
) {
    let Some(oha) = oha::binary() else {
        report.notes.push(
            "oha cross-check skipped: the peers' oha is not built (bench-peer.sh builds it)".into(),
        );
        return;
    };
    eprintln!("  cross-check with oha: GET {}", paths::HEALTHZ);
    let healthz = oha::run(oha.clone(), server.api, paths::HEALTHZ, None, plan).await;
    let oha_healthz_row = report.row(
        "oha (cross-check): `GET /healthz`",
        healthz.map_err(|error| format!("{error:#}")),
        Some((healthz_row, "this generator's row")),
    );
    eprintln!("  cross-check with oha: POST {}", paths::KEYS_VERIFY);
    let verified = oha::run(
        oha,
        server.api,
        paths::KEYS_VERIFY,
        Some(verify_body.to_string()),
        plan,
    )
    .await;
    let oha_verify_row = report.row(
        "oha (cross-check): `POST /v1/keys/verify`",
        verified.map_err(|error| format!("{error:#}")),
        Some((verify_row, "this generator's row")),
    );
    report.ratio(
        "verify / healthz, both by oha",
        oha_verify_row,
        oha_healthz_row,
    );
}

/// Compares what keyward metered with what was sent: with metering off nothing may be
/// metered; with it on, report how many events were written and dropped.
async fn metering_check(
    server: &KeywardServer,
    account: &Account,
    metering: bool,
    sent: u64,
    report: &mut Report,
) {
    eprintln!("  reading back what keyward metered");
    // The writer flushes every second by default; wait up to 6 s for the count to settle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let (metered, dropped) = loop {
        tokio::time::sleep(Duration::from_millis(if metering { 500 } else { 1500 })).await;
        let metered = metered_calls(server, account).await;
        let dropped = dropped_events(server).await;
        let (metered, dropped) = match (metered, dropped) {
            (Ok(metered), Ok(dropped)) => (metered, dropped),
            (Err(error), _) | (_, Err(error)) => {
                report.notes.push(format!(
                    "{}: could not read back the metering ({error:#})",
                    server.label
                ));
                return;
            }
        };
        // Counts stall between two flushes: wait for every event, or the deadline.
        if !metering
            || metered.max(0) as u64 + dropped >= sent
            || tokio::time::Instant::now() > deadline
        {
            break (metered, dropped);
        }
    };
    if metering {
        report.notes.push(format!(
            "metering on: keyward metered {metered} of the {sent} verify calls answered \
             (warm-up included) and dropped {dropped} events \
             (keyward_usage_events_dropped_total){}",
            if dropped > 0 {
                "; dropped events make metering look cheaper than it is"
            } else {
                ""
            }
        ));
    } else if metered > 0 || dropped > 0 {
        report.problems.push(format!(
            "metering off was not honoured: keyward metered {metered} verify calls (and \
             dropped {dropped} events) with KEYWARD_USAGE__ENABLED=false"
        ));
    } else {
        report.notes.push(format!(
            "metering off: keyward metered nothing ({sent} verify calls answered)"
        ));
    }
}

/// `executions` of `GET /v1/usage?days=1` for the bench user's tenant.
async fn metered_calls(server: &KeywardServer, account: &Account) -> anyhow::Result<i64> {
    let answer = Call::get(server.api, &format!("{}?days=1", paths::USAGE))
        .bearer(&account.access_token)
        .send()
        .await?;
    if !answer.status.is_success() {
        bail!(
            "GET {} answered {}: {}",
            paths::USAGE,
            answer.status,
            answer.text()
        );
    }
    answer.json()?["executions"]
        .as_i64()
        .with_context(|| format!("GET {} has no executions: {}", paths::USAGE, answer.text()))
}

/// `keyward_usage_events_dropped_total` from `/metrics` (0 when absent).
async fn dropped_events(server: &KeywardServer) -> anyhow::Result<u64> {
    let answer = Call::get(server.api, paths::METRICS).send().await?;
    if !answer.status.is_success() {
        bail!("GET {} answered {}", paths::METRICS, answer.status);
    }
    let text = String::from_utf8_lossy(&answer.body);
    Ok(text
        .lines()
        .filter(|line| line.starts_with("keyward_usage_events_dropped_total"))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum())
}

fn add_verify_ratios(report: &mut Report) {
    let find = |report: &Report, prefix: &str, path: &str| {
        report.rows.iter().position(|row| {
            row.outcome.is_ok() && row.scenario.starts_with(prefix) && row.scenario.contains(path)
        })
    };
    let on_healthz = find(report, "metering on", "/healthz");
    let on_verify = find(report, "metering on", "/v1/keys/verify");
    let off_healthz = find(report, "metering off", "/healthz");
    let off_verify = find(report, "metering off", "/v1/keys/verify");
    if let (Some(verify), Some(healthz)) = (on_verify, on_healthz) {
        report.ratio("verify / healthz, metering on", verify, healthz);
    }
    if let (Some(verify), Some(healthz)) = (off_verify, off_healthz) {
        report.ratio("verify / healthz, metering off", verify, healthz);
    }
    if let (Some(on), Some(off)) = (on_verify, off_verify) {
        report.ratio("verify, metering on / metering off", on, off);
    }
    if let (Some(on), Some(on_base), Some(off), Some(off_base)) =
        (on_verify, on_healthz, off_verify, off_healthz)
    {
        report.normalised_ratio(
            "verify, metering on / off, each ÷ its own healthz (cancels drift between the two servers)",
            (on, on_base),
            (off, off_base),
        );
    }
}

/// Says when the generator itself may have been the limit, and when other processes
/// competed for the cores.
fn cpu_notes(report: &mut Report, client_threads: u32) {
    let readings: Vec<(String, load::CpuUse)> = report
        .rows
        .iter()
        .filter_map(|row| Some((row.scenario.clone(), row.outcome.as_ref().ok()?.cpu?)))
        .collect();
    let noisiest = readings
        .iter()
        .filter_map(|(scenario, cpu)| Some((scenario, cpu.others?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((scenario, others)) = noisiest {
        if others > 25.0 {
            report.warnings.push(format!(
                "the rest of the machine (other processes, interrupts) used up to {others:.0} % of a \
                 core during the measurements ({scenario}): the absolute numbers are noisy; \
                 the ratios less so"
            ));
        }
    }
    let busiest = readings
        .into_iter()
        .max_by(|a, b| a.1.generator.total_cmp(&b.1.generator));
    let Some((scenario, cpu)) = busiest else {
        return;
    };
    let ceiling = f64::from(client_threads) * 100.0;
    let line = format!(
        "the load generator used at most {:.0} % of a core ({scenario}), of the {ceiling:.0} % \
         its {client_threads} thread(s) can use",
        cpu.generator
    );
    if cpu.generator > 0.9 * ceiling {
        report.warnings.push(format!(
            "{line}: it may have been the bottleneck; try --client-threads {}",
            client_threads + 1
        ));
    } else {
        report.notes.push(line);
    }
}

/// The tables of the keys scenario, the 1M / 1k ratios and the targets they answer.
fn scale_summary(report: &mut Report, findings: &scale::Findings, counts: &[usize]) {
    if !findings.setups.is_empty() {
        let mut table = String::from(
            "| set-up | seeding (multi-row INSERTs, 100 000 rows a transaction) | cache preload after start | server RSS after the preload, before load |\n|---|---|---|---:|\n",
        );
        for line in &findings.setups {
            table.push_str(line);
            table.push('\n');
        }
        report.sections.push(table);
    }
    if !findings.statements.is_empty() {
        let mut table = String::from(
            "| row | answers (warm-up + measured) | SQL statements per request (request tables) | \
             writes per request | metering statements per request (usage_daily) | background statements/s \
             (key_changes, instances) | key cache hits / misses | cache serving (readings every 0.5 s) | cache entries after the row |\n|---|---:|---|---:|---|---|---|---|---:|\n",
        );
        for line in &findings.statements {
            table.push_str(line);
            table.push('\n');
        }
        report.sections.push(table);
    }
    if !findings.checks.is_empty() {
        let mut table = String::from(
            "| revocation | when | verify on this instance right after DELETE | on a second instance (same database) |\n|---|---|---|---|\n",
        );
        for line in &findings.checks {
            table.push_str(line);
            table.push('\n');
        }
        report.sections.push(table);
    }
    let (Some(&small), Some(&large)) = (counts.first(), counts.last()) else {
        return;
    };
    let mut engines: Vec<&'static str> = findings.verify_rows.keys().map(|(e, _)| *e).collect();
    engines.dedup();
    for engine in engines {
        let small_label = scale::count_label(small);
        let large_label = scale::count_label(large);
        let rows = (
            findings.verify_rows.get(&(engine, large)),
            findings.verify_rows.get(&(engine, small)),
        );
        if let (Some(&large_row), Some(&small_row)) = rows {
            if large != small {
                report.ratio(
                    &format!("{engine}: verify with {large_label} keys / with {small_label}"),
                    large_row,
                    small_row,
                );
                if let (Some((large_rps, _, _)), Some((small_rps, _, _))) =
                    (report.numbers(large_row), report.numbers(small_row))
                {
                    let ratio = large_rps / small_rps;
                    report.target(
                        format!(
                            "{engine}: verify throughput with {large_label} keys within 10 % of {small_label}"
                        ),
                        format!("{large_rps:.0} vs {small_rps:.0} requests/s: {ratio:.2}×"),
                        Some(ratio >= 0.9),
                    );
                }
                if let Some(&hot_row) = findings.hot_verify_rows.get(&(engine, large)) {
                    report.ratio(
                        &format!(
                            "{engine}: verify with {large_label} keys, {} of them in use / with {small_label}",
                            scale::count_label(scale::HOT_KEYS)
                        ),
                        hot_row,
                        small_row,
                    );
                }
            }
        }
        let rss = |count| findings.rss_kib.get(&(engine, count)).copied();
        if let Some(large_rss) = rss(large) {
            let small_text = rss(small).map_or(String::new(), |kib| {
                format!("; {:.0} MiB with {small_label}", kib as f64 / 1024.0)
            });
            let idle = findings.idle_rss_kib.get(&(engine, large)).copied();
            let incomplete = findings.incomplete_preloads.get(&(engine, large));
            let mb = large_rss as f64 * 1024.0 / 1e6;
            report.target(
                format!(
                    "{engine}: server RSS ≤ 300 MB with {large_label} keys (after the verify row)"
                ),
                format!(
                    "{mb:.0} MB ({}; {} after the preload, before load{small_text}){}",
                    scale::mebibytes(Some(large_rss)),
                    scale::mebibytes(idle),
                    incomplete.map_or(String::new(), |how| format!("; preload {how}"))
                ),
                // A cache that was not full says nothing about the memory of a full one.
                match incomplete {
                    Some(_) => None,
                    None => Some(mb <= 300.0),
                },
            );
        }
        let writes: Vec<String> = findings
            .writes_per_verify
            .iter()
            .filter(|((e, _), _)| *e == engine)
            .map(|((_, count), writes)| format!("{writes:.4} with {}", scale::count_label(*count)))
            .collect();
        if !writes.is_empty() {
            let none = findings
                .writes_per_verify
                .iter()
                .filter(|((e, _), _)| *e == engine)
                .all(|(_, &writes)| writes == 0.0);
            let metering: Vec<String> = findings
                .metering_per_verify
                .iter()
                .filter(|((e, _), _)| *e == engine)
                .map(|((_, count), per)| format!("{per:.4} with {}", scale::count_label(*count)))
                .collect();
            report.target(
                format!("{engine}: no write statement caused by verification"),
                format!(
                    "request path (api_keys…) writes per verify: {}; metering (usage_daily) \
                     statements per verify: {}",
                    writes.join(", "),
                    metering.join(", ")
                ),
                Some(none),
            );
        }
    }
    for (engine, here, other) in &findings.revocations {
        report.target(
            format!("{engine}: a revoked key is REVOKED on the next verify"),
            if *here { "REVOKED" } else { "not REVOKED" },
            Some(*here),
        );
        if let Some(other) = other {
            report.target(
                format!("{engine}: … and at once on a second instance on the same database"),
                if *other {
                    "REVOKED"
                } else {
                    "not REVOKED at once"
                },
                Some(*other),
            );
        }
    }
}

fn still_running(server: &KeywardServer) -> anyhow::Result<()> {
    // A crash mid-run shows up as transport errors; say plainly that keyward died.
    match std::net::TcpStream::connect_timeout(&server.api, Duration::from_secs(2)) {
        Ok(_) => Ok(()),
        Err(error) => bail!(
            "keyward ({}) stopped answering on {} ({error}); its output:\n{}",
            server.label,
            server.api,
            server.recent_log()
        ),
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
