//! Issue 7: verification with many keys, on SQLite and PostgreSQL.
//!
//! For each database engine and each key count: a fresh database, migrated by `keyward
//! migrate`, seeded in bulk ([`crate::seed`]), then a keyward started on it; the bench waits
//! for the cache preload (`keyward_key_cache_entries`) and measures, each against `GET
//! /healthz` on the same server:
//!
//! - `POST /v1/keys/verify` with a key drawn at random from the seeded set for every request;
//! - `GET /v1/auth/me` with `X-API-Key` (random keys), and with `Authorization: Bearer` (JWT).
//!
//! Around every row it reads `keyward_db_statements_total`, so the report says how many SQL
//! statements of each kind one request cost, apart from the background tasks (the key-change
//! feed polls `key_changes` and updates `instances` on a timer) and metering (`usage_daily`).
//! At the first key count it also checks revocation under load (and, on PostgreSQL, on a
//! second instance on the same database), and the session scenarios of [`crate::sessions`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::Method;
use keyward_proto::paths;

use crate::cpu::CpuWatch;
use crate::database::{Database, Engine};
use crate::load::{self, Check, Plan, Target, Vary};
use crate::metrics::{is_write, statements_between, Scrape, Statements};
use crate::report::{Report, Summary};
use crate::servers::{self, Account, KeywardServer, Launch};

/// Tables the background tasks read and write on a timer, whatever the traffic (the webhook
/// dispatcher polls `webhook_deliveries` and scans from `webhooks`).
const BACKGROUND_TABLES: [&str; 5] = [
    "key_changes",
    "instances",
    "key_change_counter",
    "webhook_deliveries",
    "webhooks",
];
/// The table metering writes to (a batch a second, not a statement per request).
const METERING_TABLE: &str = "usage_daily";
/// keyward's default `keys.cache_capacity`.
const DEFAULT_CACHE_CAPACITY: usize = 1_000_000;

/// Everything the scale scenario gathers for the report's extra tables.
#[derive(Default)]
pub struct Findings {
    /// Lines of the statements table.
    pub statements: Vec<String>,
    /// Lines of the set-up table (seeding, preload, memory).
    pub setups: Vec<String>,
    /// Lines of the correctness checks (revocation).
    pub checks: Vec<String>,
    /// Verify rows by engine and key count, for the 1M / 1k ratio.
    pub verify_rows: BTreeMap<(&'static str, usize), usize>,
    /// Verify rows on [`HOT_KEYS`] of a larger set, by engine and key count.
    pub hot_verify_rows: BTreeMap<(&'static str, usize), usize>,
    /// Server memory after the verify row, by engine and key count (KiB).
    pub rss_kib: BTreeMap<(&'static str, usize), u64>,
    /// Server memory after the preload, before any load (KiB).
    pub idle_rss_kib: BTreeMap<(&'static str, usize), u64>,
    /// Runs whose preload did not reach the key count: their memory is not that of a full
    /// cache. The value says how far it got.
    pub incomplete_preloads: BTreeMap<(&'static str, usize), String>,
    /// Writes to `api_keys` (or any request table) per verify, by engine and key count.
    pub writes_per_verify: BTreeMap<(&'static str, usize), f64>,
    /// Metering statements (`usage_daily`) per verify, by engine and key count.
    pub metering_per_verify: BTreeMap<(&'static str, usize), f64>,
    /// Revocation results: (engine, refused on this instance at once, refused on the other).
    pub revocations: Vec<(&'static str, bool, Option<bool>)>,
}

/// What one engine-and-count run needs.
pub struct Setup<'a> {
    pub binary: &'a Path,
    pub plan: Plan,
    pub engine: Engine,
    pub count: usize,
    /// The first count of the engine: also the revocation and session scenarios.
    pub extras: bool,
    /// Whether to run the session scenarios (login storm, refresh, login vs argon2).
    pub sessions: bool,
    pub preload_timeout: Duration,
}

/// `1000` → `1k`, `1000000` → `1M`; other numbers as they are.
/// Keys in use in the row that tells lookup apart from first uses.
pub const HOT_KEYS: usize = 1000;

pub fn count_label(count: usize) -> String {
    match count {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub async fn run(
    setup: Setup<'_>,
    report: &mut Report,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let engine = setup.engine;
    let label = format!("{}, {} keys", engine.name(), count_label(setup.count));
    eprintln!("== verify with many keys: {label}");
    let database = Database::create(engine).await?;
    eprintln!("  database: {}", database.describe());
    database.migrate(setup.binary)?;
    eprintln!("  seeding {} keys", setup.count);
    let seeded = crate::seed::seed(&database, setup.count).await?;
    let seconds = seeded.elapsed.as_secs_f64();
    let keys = Arc::new(seeded.keys);

    let server_label = format!("{}-{}", engine.name(), count_label(setup.count));
    let server = KeywardServer::start(Launch {
        database_url: Some(&database.url),
        env: server_env(setup.count),
        ..Launch::new(setup.binary, &server_label)
    })
    .await?;
    eprintln!("  keyward API on http://{}", server.api);
    let preload = wait_for_preload(&server, setup.count, setup.preload_timeout).await;
    let idle_rss = server.rss_kib();
    if !matches!(preload, Preload::Done(_)) {
        findings
            .incomplete_preloads
            .insert((engine.name(), setup.count), preload.describe(setup.count));
    }
    findings.setups.push(format!(
        "| {label} | {seconds:.1} s ({:.0} keys/s) | {} | {} |",
        setup.count as f64 / seconds.max(0.001),
        preload.describe(setup.count),
        mebibytes(idle_rss),
    ));

    let account = Account::create(&server).await?;
    let probe = servers::verify_code(server.api, &keys[0]).await?;
    if probe != "VALID" {
        bail!("a seeded key answered {probe} (expected VALID): seeding does not match keyward's storage");
    }

    // PostgreSQL: a second instance on the same database, to see a revocation reach it.
    let second = if setup.extras && engine == Engine::Postgres {
        let second_label = format!("{server_label}-second");
        let second = KeywardServer::start(Launch {
            database_url: Some(&database.url),
            env: server_env(setup.count),
            ..Launch::new(setup.binary, &second_label)
        })
        .await
        .context("start a second keyward on the same PostgreSQL database")?;
        let _ = wait_for_preload(&second, setup.count, setup.preload_timeout).await;
        Some(second)
    } else {
        None
    };

    let watch = CpuWatch {
        keyward_pid: Some(server.pid()),
        upstream_tid: None,
    };
    let plan = setup.plan;
    let engine_name = engine.name();

    eprintln!("  GET {}", paths::HEALTHZ);
    let healthz = counted_row(
        &server,
        Target::new(server.api, Method::GET, paths::HEALTHZ),
        plan,
        &watch,
        report,
        format!("{label}: `GET /healthz` (HTTP floor)"),
        None,
    )
    .await?;
    findings.statements.push(healthz.line(report));

    eprintln!(
        "  POST {} with a random key per request",
        paths::KEYS_VERIFY
    );
    let verify_target = || {
        Target::new(server.api, Method::POST, paths::KEYS_VERIFY)
            .vary(Vary::VerifyBody(Arc::clone(&keys)))
            .check(Check::ValidKey)
            .check_every_answer()
    };
    let verify_name = format!("{label}: `POST /v1/keys/verify` (random key)");
    let verify = if setup.extras {
        // Revoke a key halfway through the measured window, while the load runs.
        let revoke_at = plan.warmup + plan.duration / 2;
        let (verify, revocation) = tokio::join!(
            counted_row(
                &server,
                verify_target(),
                plan,
                &watch,
                report,
                verify_name,
                Some((healthz.row, "healthz")),
            ),
            async {
                tokio::time::sleep(revoke_at).await;
                revocation(&server, second.as_ref(), &account.access_token).await
            }
        );
        match revocation {
            Ok(outcome) => {
                findings.checks.push(outcome.line(&label));
                findings.revocations.push((
                    engine_name,
                    outcome.here_refused(),
                    outcome.other_refused(),
                ));
            }
            Err(error) => {
                report
                    .problems
                    .push(format!("{label}: the revocation check failed: {error:#}"));
                findings.revocations.push((engine_name, false, None));
            }
        }
        verify?
    } else {
        counted_row(
            &server,
            verify_target(),
            plan,
            &watch,
            report,
            verify_name,
            Some((healthz.row, "healthz")),
        )
        .await?
    };
    if let Some(rss) = server.rss_kib() {
        findings.rss_kib.insert((engine_name, setup.count), rss);
    }
    // With every key drawn from a million, nearly every verify is that key's first use, which
    // the SPEC has written (`last_used_at`, per-key usage). The same server on 1 000 of its keys
    // tells the lookup in a full cache apart from those first-use writes.
    if setup.count > HOT_KEYS {
        eprintln!(
            "  POST {} with a random key among {HOT_KEYS} of them",
            paths::KEYS_VERIFY
        );
        let hot = Arc::new(keys[..HOT_KEYS].to_vec());
        let row = counted_row(
            &server,
            Target::new(server.api, Method::POST, paths::KEYS_VERIFY)
                .vary(Vary::VerifyBody(hot))
                .check(Check::ValidKey)
                .check_every_answer(),
            plan,
            &watch,
            report,
            format!("{label}: `POST /v1/keys/verify` (random key among {HOT_KEYS} of them)"),
            Some((healthz.row, "healthz")),
        )
        .await?;
        findings.statements.push(row.line(report));
        findings
            .hot_verify_rows
            .insert((engine_name, setup.count), row.row);
    }
    if let Some(idle) = idle_rss {
        findings
            .idle_rss_kib
            .insert((engine_name, setup.count), idle);
    }
    findings
        .verify_rows
        .insert((engine_name, setup.count), verify.row);
    findings.writes_per_verify.insert(
        (engine_name, setup.count),
        verify.request_writes_per_request(),
    );
    findings
        .metering_per_verify
        .insert((engine_name, setup.count), verify.metering_per_request());
    findings.statements.push(verify.line(report));

    eprintln!("  GET {} with X-API-Key (random key)", paths::ME);
    let me_key = counted_row(
        &server,
        Target::new(server.api, Method::GET, paths::ME)
            .vary(Vary::ApiKeyHeader(Arc::clone(&keys)))
            .check(Check::AuthMethod("api_key")),
        plan,
        &watch,
        report,
        format!("{label}: `GET /v1/auth/me` with `X-API-Key` (random key)"),
        Some((healthz.row, "healthz")),
    )
    .await?;
    findings.statements.push(me_key.line(report));

    eprintln!(
        "  GET {} with Authorization: Bearer <access token>",
        paths::ME
    );
    let me_jwt = counted_row(
        &server,
        Target::new(server.api, Method::GET, paths::ME)
            .header("authorization", &format!("Bearer {}", account.access_token))?
            .check(Check::AuthMethod("session")),
        plan,
        &watch,
        report,
        format!("{label}: `GET /v1/auth/me` with `Authorization: Bearer` (JWT)"),
        Some((healthz.row, "healthz")),
    )
    .await?;
    findings.statements.push(me_jwt.line(report));

    if setup.extras && setup.sessions {
        crate::sessions::run(
            &server,
            plan,
            &watch,
            &label,
            engine,
            verify_target(),
            verify.row,
            report,
        )
        .await?;
    }
    if !server_alive(&server) {
        bail!(
            "keyward ({label}) stopped during the run; its output:\n{}",
            server.recent_log()
        );
    }
    Ok(())
}

/// KiB as MiB for a table, or a dash.
pub fn mebibytes(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "–".into(),
        |kib| format!("{:.0} MiB", kib as f64 / 1024.0),
    )
}

fn server_alive(server: &KeywardServer) -> bool {
    std::net::TcpStream::connect_timeout(&server.api, Duration::from_secs(2)).is_ok()
}

/// Settings for a server holding `count` keys: a cache big enough for all of them (the bench
/// user's keys included).
fn server_env(count: usize) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if count + 1_000 > DEFAULT_CACHE_CAPACITY {
        env.push((
            "KEYWARD_KEYS__CACHE_CAPACITY",
            (count + 100_000).to_string(),
        ));
    }
    env
}

/// How the preload went.
enum Preload {
    Done(Duration),
    Stalled { entries: f64, waited: Duration },
    NoMetric,
}

impl Preload {
    fn describe(&self, count: usize) -> String {
        match self {
            Preload::Done(waited) => format!(
                "{:.1} s until `keyward_key_cache_entries` ≥ {count}",
                waited.as_secs_f64()
            ),
            Preload::Stalled { entries, waited } => format!(
                "**not complete**: {entries:.0} of {count} entries after {:.1} s",
                waited.as_secs_f64()
            ),
            Preload::NoMetric => "**no `keyward_key_cache_entries` in /metrics**".into(),
        }
    }
}

/// Waits until the cache holds `count` entries; gives up after `timeout`, or after 15 s
/// without progress (a build without the preload fills the cache only on use).
async fn wait_for_preload(server: &KeywardServer, count: usize, timeout: Duration) -> Preload {
    let started = Instant::now();
    let mut last = (f64::NAN, Instant::now());
    loop {
        let entries = match Scrape::fetch(server.api).await {
            Ok(scrape) => scrape.value("keyward_key_cache_entries"),
            Err(error) => {
                eprintln!("    reading /metrics failed: {error:#}");
                None
            }
        };
        let Some(entries) = entries else {
            if started.elapsed() > Duration::from_secs(5) {
                return Preload::NoMetric;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        if entries >= count as f64 {
            let waited = started.elapsed();
            eprintln!(
                "  preload: {entries:.0} keys cached after {:.1} s",
                waited.as_secs_f64()
            );
            return Preload::Done(waited);
        }
        if entries != last.0 {
            last = (entries, Instant::now());
        }
        if started.elapsed() > timeout || last.1.elapsed() > Duration::from_secs(15) {
            eprintln!("  preload: gave up at {entries:.0} of {count} keys");
            return Preload::Stalled {
                entries,
                waited: started.elapsed(),
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A row with what the server's statement counters and cache did during it.
pub struct Counted {
    pub row: usize,
    scenario: String,
    /// Answers of any kind over warm-up and measurement.
    requests: u64,
    seconds: f64,
    statements: Statements,
    hits: Option<f64>,
    misses: Option<f64>,
    /// Readings of `keyward_key_cache_serving` during the row: (1s, all).
    serving: (u32, u32),
    /// `keyward_key_cache_entries` once the row is over: a cache that was emptied shows here.
    entries_after: Option<f64>,
}

/// Runs one row, reading `/metrics` before and after.
pub async fn counted_row(
    server: &KeywardServer,
    target: Target,
    plan: Plan,
    watch: &CpuWatch,
    report: &mut Report,
    scenario: String,
    compared_with: Option<(usize, &str)>,
) -> anyhow::Result<Counted> {
    let before = Scrape::fetch(server.api).await?;
    let started = Instant::now();
    let (measurement, serving) = tokio::join!(
        load::run(target, plan, watch),
        sample_serving(server, plan.warmup + plan.duration)
    );
    let measurement = measurement?;
    let seconds = started.elapsed().as_secs_f64();
    let after = settled(server).await?;
    let row = report.row(
        scenario.clone(),
        Ok(Summary::of(&measurement)),
        compared_with,
    );
    let delta = |name: &str| Some(after.value(name)? - before.value(name).unwrap_or(0.0));
    Ok(Counted {
        row,
        scenario,
        requests: measurement.responses_total,
        seconds,
        statements: statements_between(&before.statements(), &after.statements()),
        hits: delta("keyward_key_cache_hits_total"),
        misses: delta("keyward_key_cache_misses_total"),
        serving,
        entries_after: after.value("keyward_key_cache_entries"),
    })
}

/// Reads `keyward_key_cache_serving` every 500 ms for `length`: how many readings said the
/// cache answered (it stops when it falls behind the key-change feed, and verification then
/// reads the database). `(serving, readings)`.
async fn sample_serving(server: &KeywardServer, length: Duration) -> (u32, u32) {
    let until = Instant::now() + length;
    let (mut serving, mut readings) = (0, 0);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(scrape) = Scrape::fetch(server.api).await {
            if let Some(value) = scrape.value("keyward_key_cache_serving") {
                readings += 1;
                if value >= 1.0 {
                    serving += 1;
                }
            }
        }
    }
    (serving, readings)
}

/// `/metrics` once the writes the row caused have landed: `last_used_at` and metering are
/// flushed on a 1 s timer after the load ends, and belong to this row, not the next. Waits
/// until the request and metering statements stop moving for 1.2 s, at most 8 s.
async fn settled(server: &KeywardServer) -> anyhow::Result<Scrape> {
    let foreground = |scrape: &Scrape| -> Statements {
        scrape
            .statements()
            .into_iter()
            .filter(|((_, table), _)| origin(table) != Origin::Background)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut last = Scrape::fetch(server.api).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let next = Scrape::fetch(server.api).await?;
        if foreground(&next) == foreground(&last) || Instant::now() > deadline {
            return Ok(next);
        }
        last = next;
    }
}

/// Where a statement belongs in the report.
#[derive(Debug, PartialEq, Eq)]
enum Origin {
    Request,
    Metering,
    Background,
}

fn origin(table: &str) -> Origin {
    if BACKGROUND_TABLES.contains(&table) {
        Origin::Background
    } else if table == METERING_TABLE {
        Origin::Metering
    } else {
        Origin::Request
    }
}

impl Counted {
    fn request_writes_per_request(&self) -> f64 {
        // `+ 0.0`: an empty float sum is -0.0, which prints as "-0.0000".
        let writes: f64 = self
            .statements
            .iter()
            .filter(|((verb, table), _)| is_write(verb) && origin(table) == Origin::Request)
            .map(|(_, count)| count)
            .sum::<f64>()
            + 0.0;
        writes / self.requests.max(1) as f64
    }

    /// Metering statements (`usage_daily`) per request.
    fn metering_per_request(&self) -> f64 {
        let statements: f64 = self
            .statements
            .iter()
            .filter(|((_, table), _)| origin(table) == Origin::Metering)
            .map(|(_, count)| count)
            .sum::<f64>()
            + 0.0;
        statements / self.requests.max(1) as f64
    }

    /// A line of the statements table.
    fn line(&self, report: &Report) -> String {
        let requests = self.requests.max(1) as f64;
        let per_second = self.seconds.max(0.001);
        let list = |wanted: Origin, divide_by: f64, digits: usize| {
            let parts: Vec<String> = self
                .statements
                .iter()
                .filter(|((_, table), _)| origin(table) == wanted)
                .map(|((verb, table), count)| {
                    format!("{verb} {table} {:.*}", digits, count / divide_by)
                })
                .collect();
            if parts.is_empty() {
                "none".to_owned()
            } else {
                parts.join("; ")
            }
        };
        let cache = match (self.hits, self.misses) {
            (Some(hits), Some(misses)) => format!("{hits:.0} / {misses:.0}"),
            _ => "–".into(),
        };
        let (serving, readings) = self.serving;
        let serving = if readings == 0 {
            "–".to_owned()
        } else {
            format!("{serving} of {readings}")
        };
        let entries = self
            .entries_after
            .map_or_else(|| "–".to_owned(), |entries| format!("{entries:.0}"));
        let failed = report.numbers(self.row).is_none();
        format!(
            "| {}{} | {} | {} | {:.4} | {} | {} | {cache} | {serving} | {entries} |",
            self.scenario,
            if failed { " (failed)" } else { "" },
            self.requests,
            list(Origin::Request, requests, 4),
            self.request_writes_per_request(),
            list(Origin::Metering, requests, 4),
            list(Origin::Background, per_second, 1),
        )
    }
}

/// What the revocation check saw.
struct Revocation {
    /// The answer of this instance right after the DELETE.
    here: String,
    /// The other instance's answer right after, and how long until it said REVOKED.
    other: Option<(String, Option<Duration>)>,
}

impl Revocation {
    fn here_refused(&self) -> bool {
        self.here == "REVOKED"
    }

    fn other_refused(&self) -> Option<bool> {
        self.other.as_ref().map(|(code, _)| code == "REVOKED")
    }

    fn line(&self, label: &str) -> String {
        let other = match &self.other {
            None => "– (one instance)".to_owned(),
            Some((code, Some(after))) if code != "REVOKED" => format!(
                "{code} at once, REVOKED after {:.0} ms",
                after.as_secs_f64() * 1000.0
            ),
            Some((code, None)) if code != "REVOKED" => {
                format!("{code} at once, still not REVOKED after 5 s")
            }
            Some((code, _)) => code.clone(),
        };
        format!(
            "| {label} | revoked mid-row during the verify load | {} | {other} |",
            self.here
        )
    }
}

/// Creates a key, verifies it (on both instances), revokes it with the session and verifies
/// it again at once: it must be REVOKED, here and on the other instance.
async fn revocation(
    server: &KeywardServer,
    other: Option<&KeywardServer>,
    access_token: &str,
) -> anyhow::Result<Revocation> {
    let (id, key) = servers::create_key(server.api, access_token, "revoke-me").await?;
    for _ in 0..3 {
        let code = servers::verify_code(server.api, &key).await?;
        if code != "VALID" {
            bail!("a new key answered {code} before its revocation (expected VALID)");
        }
        if let Some(other) = other {
            let code = servers::verify_code(other.api, &key).await?;
            if code != "VALID" {
                bail!("the other instance answered {code} for a new key (expected VALID)");
            }
        }
    }
    let path = paths::KEY.replace("{id}", &id);
    let deleted = crate::http::Call::delete(server.api, &path)
        .bearer(access_token)
        .send()
        .await?;
    if deleted.status.as_u16() != 204 {
        bail!(
            "DELETE {path} answered {} (expected 204): {}",
            deleted.status,
            deleted.text()
        );
    }
    let here = servers::verify_code(server.api, &key).await?;
    let other = match other {
        None => None,
        Some(other) => {
            let first = servers::verify_code(other.api, &key).await?;
            let mut after = None;
            if first != "REVOKED" {
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(5) {
                    if servers::verify_code(other.api, &key).await? == "REVOKED" {
                        after = Some(started.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Some((first, after))
        }
    };
    eprintln!("  revoked a key mid-run: this instance says {here}");
    Ok(Revocation { here, other })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_labelled_shortly() {
        assert_eq!(count_label(1_000), "1k");
        assert_eq!(count_label(1_000_000), "1M");
        assert_eq!(count_label(250_000), "250k");
        assert_eq!(count_label(1_234), "1234");
    }

    #[test]
    fn statements_are_told_apart_by_table() {
        assert_eq!(origin("key_changes"), Origin::Background);
        assert_eq!(origin("instances"), Origin::Background);
        assert_eq!(origin("usage_daily"), Origin::Metering);
        assert_eq!(origin("api_keys"), Origin::Request);
    }

    #[test]
    fn writes_per_request_leave_out_background_and_metering() {
        let mut statements = Statements::new();
        statements.insert(("SELECT".into(), "api_keys".into()), 10.0);
        statements.insert(("UPDATE".into(), "api_keys".into()), 5.0);
        statements.insert(("UPDATE".into(), "instances".into()), 100.0);
        statements.insert(("INSERT".into(), "usage_daily".into()), 12.0);
        let counted = Counted {
            row: 0,
            scenario: "x".into(),
            requests: 1000,
            seconds: 10.0,
            statements,
            hits: None,
            misses: None,
            serving: (0, 0),
            entries_after: None,
        };
        assert_eq!(counted.request_writes_per_request(), 0.005);
        assert_eq!(counted.metering_per_request(), 0.012);
        let empty = Counted {
            statements: Statements::new(),
            ..counted
        };
        assert_eq!(
            format!("{:.4}", empty.request_writes_per_request()),
            "0.0000"
        );
    }

    #[test]
    fn big_counts_get_a_big_enough_cache() {
        assert!(server_env(1_000).is_empty());
        assert_eq!(
            server_env(1_000_000),
            vec![("KEYWARD_KEYS__CACHE_CAPACITY", "1100000".to_owned())]
        );
    }
}
