//! Sessions under load (issue 7), on a server of the scale scenario:
//!
//! - **login storm isolation**: the verify row again while 32 more clients log in without
//!   pause; argon2id must not starve verification (target: p99 at most 2× the verify row
//!   measured alone just before);
//! - **refresh rotation**: `POST /v1/auth/refresh`, each worker following its own token chain
//!   (a refresh token works once, so every request presents the one the last answer gave);
//! - **login throughput against the raw argon2id rate**: the same parameters as the server
//!   (m = 19456 KiB, t = 2, p = 1), hashed in this process on as many threads as cores, while
//!   nothing else runs. Login cannot beat it; the gap is what the rest of login costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::{Algorithm, Argon2, Params, Version};
use hyper::Method;
use keyward_proto::paths;
use serde_json::json;

use crate::cpu::CpuWatch;
use crate::database::Engine;
use crate::load::{self, Check, Plan, Target, Vary};
use crate::report::{Report, Summary};
use crate::servers::{Account, KeywardServer, EMAIL, PASSWORD};

/// Clients logging in at once during the storm (issue 7).
const STORM_CLIENTS: usize = 32;
/// The server's argon2id parameters (keyward-core's `PasswordHasherConfig::default`).
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_PARALLELISM: u32 = 1;

#[allow(clippy::too_many_arguments)]
pub async fn run(
    server: &KeywardServer,
    plan: Plan,
    watch: &CpuWatch,
    label: &str,
    engine: Engine,
    verify_target: Target,
    verify_alone: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let login_target = || {
        Target::new(server.api, Method::POST, paths::LOGIN)
            .json_body(&json!({"email": EMAIL, "password": PASSWORD}))
            .check(Check::TokenPair)
    };

    eprintln!("  login storm: verify while {STORM_CLIENTS} clients log in");
    let storm_plan = Plan {
        connections: STORM_CLIENTS,
        ..plan
    };
    let (verified, logins) = tokio::join!(
        load::run(verify_target, plan, watch),
        load::run(login_target(), storm_plan, watch)
    );
    let storm_row = report.row(
        format!("{label}: `POST /v1/keys/verify` (random key) during a login storm"),
        Ok(Summary::of(&verified?)),
        Some((verify_alone, "verify alone")),
    );
    report.row(
        format!("{label}: `POST /v1/auth/login` by {STORM_CLIENTS} clients, during the storm"),
        Ok(Summary::of(&logins?)),
        None,
    );
    report.ratio(
        &format!("{label}: verify during the login storm / verify alone"),
        storm_row,
        verify_alone,
    );
    let p99 = |row: usize| report.numbers(row).and_then(|(_, _, p99)| p99);
    if let (Some(storm), Some(alone)) = (p99(storm_row), p99(verify_alone)) {
        let ratio = storm / alone;
        report.target(
            format!(
                "{}: verify p99 during a 32-client login storm ≤ 2× alone",
                engine.name()
            ),
            format!("{storm:.3} ms vs {alone:.3} ms alone: {ratio:.2}×"),
            Some(ratio <= 2.0),
        );
    }

    eprintln!("  POST {} alone, {STORM_CLIENTS} clients", paths::LOGIN);
    let login = load::run(login_target(), storm_plan, watch).await?;
    let login_row = report.row(
        format!("{label}: `POST /v1/auth/login` alone, {STORM_CLIENTS} clients"),
        Ok(Summary::of(&login)),
        None,
    );

    eprintln!("  POST {}, one token chain per worker", paths::REFRESH);
    let mut tokens = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        tokens.push(Account::login(server).await?);
    }
    let refresh = load::run(
        Target::new(server.api, Method::POST, paths::REFRESH)
            .vary(Vary::RefreshChain(Arc::new(tokens)))
            .check(Check::TokenPair)
            .check_every_answer(),
        plan,
        watch,
    )
    .await?;
    let refresh_row = report.row(
        format!("{label}: `POST /v1/auth/refresh`, one token chain per worker"),
        Ok(Summary::of(&refresh)),
        None,
    );
    // Issue 7 sets the refresh goal for SQLite only.
    if let (Some((rps, _, _)), Engine::Sqlite) = (report.numbers(refresh_row), engine) {
        report.target(
            "SQLite: refresh rotation ≥ 2000/s",
            format!("{rps:.0}/s"),
            Some(rps >= 2000.0),
        );
    }

    eprintln!("  raw argon2id rate in this process (server parameters, one thread a core)");
    let seconds = plan.duration.as_secs_f64().min(5.0);
    let (raw, threads) = tokio::task::spawn_blocking(move || argon2_rate(seconds))
        .await
        .context("the argon2 measurement panicked")??;
    if let Some((rps, _, _)) = report.numbers(login_row) {
        let share = rps / raw;
        report.notes.push(format!(
            "{label}: raw argon2id (m={ARGON2_MEMORY_KIB} KiB, t={ARGON2_ITERATIONS}, \
             p={ARGON2_PARALLELISM}) in the bench process on {threads} threads: {raw:.1} \
             hashes/s; login alone: {rps:.1}/s ({:.0} %)",
            share * 100.0
        ));
        report.target(
            format!("{}: login ≥ 90 % of the raw argon2id rate", engine.name()),
            format!(
                "{rps:.1}/s vs {raw:.1} hashes/s on {threads} threads: {:.0} %",
                share * 100.0
            ),
            Some(share >= 0.9),
        );
    }
    Ok(())
}

/// Hashes per second of argon2id with the server's parameters, on one thread per core, for
/// about `seconds`. Returns the rate and the thread count.
fn argon2_rate(seconds: f64) -> anyhow::Result<(f64, usize)> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        Some(32),
    )
    .map_err(|error| anyhow::anyhow!("argon2 parameters: {error}"))?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let params = params.clone();
                scope.spawn(move || -> anyhow::Result<u64> {
                    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                    let salt = [index as u8; 16];
                    let mut output = [0u8; 32];
                    let mut count = 0;
                    while Instant::now() < deadline {
                        argon2
                            .hash_password_into(PASSWORD.as_bytes(), &salt, &mut output)
                            .map_err(|error| anyhow::anyhow!("argon2: {error}"))?;
                        count += 1;
                    }
                    Ok(count)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("an argon2 thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok((counts.iter().sum::<u64>() as f64 / elapsed, threads))
}
