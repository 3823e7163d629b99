//! What key policies cost verification (issue 9): the same verify load with a key that has no
//! policy, a rate limit counted in memory, a rate limit counted in Redis, and credits. Each
//! row is compared with the plain key's row of the same server, measured right before it.

use std::path::Path;

use anyhow::{bail, Context};
use hyper::Method;
use keyward_proto::paths;
use serde_json::{json, Value};

use crate::cpu::CpuWatch;
use crate::http::Call;
use crate::load::{self, Check, Plan, Target};
use crate::report::{Report, Summary};
use crate::servers::{Account, KeywardServer, Launch};

/// A limit the load never reaches (GCRA: a million a second), so every answer is `VALID` and
/// the row measures the cost of counting, not of refusing.
fn unreached_limit() -> Value {
    json!({"requests": 1_000_000, "per_seconds": 1})
}

pub async fn run(
    binary: &Path,
    plan: Plan,
    redis_url: Option<&str>,
    report: &mut Report,
) -> anyhow::Result<()> {
    measure(binary, plan, "policies (memory)", None, report).await?;
    match redis_url {
        Some(url) => measure(binary, plan, "policies (Redis)", Some(url), report).await?,
        None => report
            .problems
            .push("no --redis-url: the Redis rate-limit row was not measured".into()),
    }
    Ok(())
}

async fn measure(
    binary: &Path,
    plan: Plan,
    name: &str,
    redis_url: Option<&str>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut env = Vec::new();
    if let Some(url) = redis_url {
        env.push(("KEYWARD_REDIS_URL", url.to_owned()));
    }
    let server = KeywardServer::start(Launch {
        env,
        ..Launch::new(binary, "policies")
    })
    .await?;
    eprintln!("  keyward API on http://{}", server.api);
    let account = Account::create(&server).await?;
    let limited = key_with(
        &server,
        &account,
        json!({"name": "limited", "rate_limit": unreached_limit()}),
    )
    .await?;
    let metered = key_with(
        &server,
        &account,
        json!({"name": "metered", "credits": {"remaining": 1_000_000_000_000_i64}}),
    )
    .await?;
    let watch = CpuWatch {
        keyward_pid: Some(server.pid()),
        upstream_tid: None,
    };
    let mut rows = vec![
        ("a key with no policy", account.api_key.as_str()),
        ("a key with a rate limit", limited.as_str()),
    ];
    // Credits are spent in the database whatever the limiter: measured once, on memory's run.
    if redis_url.is_none() {
        rows.push(("a key with credits (one UPDATE each)", metered.as_str()));
    }
    let mut plain_row = None;
    for (what, key) in rows {
        let label = format!("{name}: `POST /v1/keys/verify`, {what}");
        let body = json!({"key": key});
        eprintln!("  {label}");
        let target = Target::new(server.api, Method::POST, paths::KEYS_VERIFY)
            .json_body(&body)
            .check(Check::ValidKey);
        let measured = load::run(target, plan, &watch).await?;
        let row = report.row(
            label,
            Ok(Summary::of(&measured)),
            plain_row.map(|row| (row, "no policy")),
        );
        plain_row.get_or_insert(row);
    }
    Ok(())
}

/// Creates a key with `body` and answers it, after checking that verify accepts it.
async fn key_with(
    server: &KeywardServer,
    account: &Account,
    body: Value,
) -> anyhow::Result<String> {
    let created = Call::post(server.api, paths::KEYS, body)
        .bearer(&account.access_token)
        .send()
        .await?;
    if created.status.as_u16() != 201 {
        bail!(
            "POST {} answered {}: {}",
            paths::KEYS,
            created.status,
            created.text()
        );
    }
    let key = created.json()?["key"]
        .as_str()
        .context("POST /v1/keys answered without key")?
        .to_owned();
    let check = Call::post(server.api, paths::KEYS_VERIFY, json!({"key": key}))
        .send()
        .await?;
    if !load::body_passes(&Check::ValidKey, &check.body) {
        bail!("a fresh key with a policy did not verify: {}", check.text());
    }
    Ok(key)
}
