//! `keyward keys create | list | update | disable | enable | revoke | rotate`.

use clap::{Args, Subcommand};
use keyward_client::{
    CreateKeyRequest, CreatedKey, CreditsSpec, KeyStatus, KeyView, RateLimitSpec, RefillInterval,
    RefillSpec, UpdateKeyRequest,
};

use super::{ClientArgs, Context, Failure};

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Mint an API key and print it. The full key is shown this once: store it right away
    #[command(after_help = "Examples:\n  \
        keyward keys create ci --scope read --expires-in-days 90\n  \
        keyward keys create deploy --description \"deploy bot\" --scope write --json")]
    Create {
        /// A name: 1-64 characters starting with a letter (letters, digits, space, - _ .)
        name: String,
        /// What the key is for (up to 500 characters)
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Days until the key expires, 1-3650 [default: never]
        #[arg(long, value_name = "N")]
        expires_in_days: Option<i64>,
        /// A scope the key holds (repeat for several): read, write, admin or your own, e.g.
        /// inference:run [default: admin for a session, the current key's scopes for a key]
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a key: rename, describe, enable or disable, narrow scopes, set or clear its
    /// rate limit and credits. Applies from the server's very next request
    #[command(after_help = "Examples:\n  \
        keyward keys update key_2bX9… --name prod --rate-limit 100/60\n  \
        keyward keys update key_2bX9… --credits 1000 --refill 1000/monthly\n  \
        keyward keys update key_2bX9… --scope read        # narrow to read only\n  \
        keyward keys update key_2bX9… --no-rate-limit --no-credits")]
    Update {
        /// The key's id (key_…)
        id: String,
        /// A new name
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// A new description ("" clears it)
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Keep only these scopes (repeat for several); scopes can only be narrowed
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Turn the key off without revoking it (verify answers DISABLED)
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Turn a disabled key back on
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Remove the key's rate limit
        #[arg(long, conflicts_with = "rate_limit")]
        no_rate_limit: bool,
        /// Remove the key's credits (unlimited use)
        #[arg(long, conflicts_with_all = ["credits", "refill"])]
        no_credits: bool,
    },
    /// Turn a key off without revoking it: it answers DISABLED until enabled again
    #[command(after_help = "Example:\n  keyward keys disable key_2bX9…")]
    Disable {
        /// The key's id (key_…)
        id: String,
    },
    /// Turn a disabled key back on
    #[command(after_help = "Example:\n  keyward keys enable key_2bX9…")]
    Enable {
        /// The key's id (key_…)
        id: String,
    },
    /// List your keys (masked; the full key is never shown again), newest first
    #[command(after_help = "Examples:\n  \
        keyward keys list\n  \
        keyward keys list --include-revoked --json")]
    List {
        /// Include revoked keys
        #[arg(long)]
        include_revoked: bool,
    },
    /// Revoke a key: refused from the server's very next request on. Cannot be undone
    #[command(after_help = "Example:\n  keyward keys revoke key_2bX9…")]
    Revoke {
        /// The key's id (key_…), as `keyward keys list` shows it
        id: String,
    },
    /// Replace a key with a new one (new id and key; same name, description and scopes)
    #[command(after_help = "Examples:\n  \
        keyward keys rotate key_2bX9…                  # the old key stops working now\n  \
        keyward keys rotate key_2bX9… --grace-period-seconds 3600   # ...in an hour")]
    Rotate {
        /// The key's id (key_…)
        id: String,
        /// Keep the old key working this many seconds [default: 0, revoked at once]
        #[arg(long, value_name = "N")]
        grace_period_seconds: Option<i64>,
    },
}

pub async fn run(args: KeysArgs) -> Result<(), Failure> {
    let context = Context::load(&args.client)?;
    let client = context.client()?;
    let fail = |error| context.fail(error);
    match args.command {
        KeysCommand::Create {
            name,
            description,
            expires_in_days,
            scopes,
            policy,
        } => {
            let request = CreateKeyRequest {
                name,
                description,
                expires_in_days,
                scopes: (!scopes.is_empty()).then_some(scopes),
                meta: None,
                rate_limit: policy.rate_limit,
                credits: policy.credits()?,
            };
            let created = client.create_key(request).await.map_err(fail)?;
            print_created(&context, &created, "Created")
        }
        KeysCommand::List { include_revoked } => {
            let keys = client.list_keys(include_revoked).await.map_err(fail)?;
            if context.json {
                return context.print_json(&serde_json::json!({ "keys": keys }));
            }
            if keys.is_empty() {
                println!("No keys yet: create one with `keyward keys create NAME`.");
                return Ok(());
            }
            print!("{}", table(&keys));
            Ok(())
        }
        KeysCommand::Update {
            id,
            name,
            description,
            scopes,
            disable,
            enable,
            policy,
            no_rate_limit,
            no_credits,
        } => {
            let request = UpdateKeyRequest {
                name,
                description: description.map(|text| (!text.is_empty()).then_some(text)),
                meta: None,
                enabled: match (disable, enable) {
                    (true, _) => Some(false),
                    (_, true) => Some(true),
                    _ => None,
                },
                scopes: (!scopes.is_empty()).then_some(scopes),
                rate_limit: match (no_rate_limit, policy.rate_limit) {
                    (true, _) => Some(None),
                    (false, limit) => limit.map(Some),
                },
                credits: match (no_credits, policy.credits()?) {
                    (true, _) => Some(None),
                    (false, credits) => credits.map(Some),
                },
            };
            let key = client.update_key(&id, &request).await.map_err(fail)?;
            print_updated(&context, &key)
        }
        KeysCommand::Disable { id } => set_enabled(&context, &client, &id, false).await,
        KeysCommand::Enable { id } => set_enabled(&context, &client, &id, true).await,
        KeysCommand::Revoke { id } => {
            client.revoke_key(&id).await.map_err(fail)?;
            if context.json {
                // The API answers 204 with no body; print what happened all the same.
                return context.print_json(&serde_json::json!({ "id": id, "status": "revoked" }));
            }
            println!("Revoked {id}: it is refused from now on.");
            Ok(())
        }
        KeysCommand::Rotate {
            id,
            grace_period_seconds,
        } => {
            let created = client
                .rotate_key(&id, grace_period_seconds)
                .await
                .map_err(fail)?;
            print_created(&context, &created, "Rotated")?;
            if !context.json {
                match grace_period_seconds.filter(|seconds| *seconds > 0) {
                    Some(seconds) => println!("The old key {id} keeps working for {seconds} s."),
                    None => println!("The old key {id} is revoked."),
                }
            }
            Ok(())
        }
    }
}

/// `--rate-limit` and the credits flags, shared by `create` and `update`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// At most REQUESTS per SECONDS, e.g. 100/60 (on every server instance together)
    #[arg(long, value_name = "REQUESTS/SECONDS", value_parser = parse_rate_limit)]
    rate_limit: Option<RateLimitSpec>,
    /// Credits the key may spend (each verify or gateway request spends one)
    #[arg(long, value_name = "N")]
    credits: Option<i64>,
    /// Reset the credits to AMOUNT every day (00:00 UTC) or month (the 1st), e.g. 1000/monthly
    #[arg(long, value_name = "AMOUNT/daily|monthly", value_parser = parse_refill, requires = "credits")]
    refill: Option<RefillSpec>,
}

impl PolicyArgs {
    fn credits(&self) -> Result<Option<CreditsSpec>, Failure> {
        Ok(self.credits.map(|remaining| CreditsSpec {
            remaining,
            refill: self.refill,
        }))
    }
}

fn parse_rate_limit(text: &str) -> Result<RateLimitSpec, String> {
    let (requests, per_seconds) = text
        .split_once('/')
        .ok_or("expected REQUESTS/SECONDS, e.g. 100/60")?;
    let number = |part: &str, what: &str| {
        part.trim()
            .parse::<i64>()
            .map_err(|_| format!("{what} must be a whole number, e.g. 100/60"))
    };
    Ok(RateLimitSpec {
        requests: number(requests, "REQUESTS")?,
        per_seconds: number(per_seconds, "SECONDS")?,
    })
}

fn parse_refill(text: &str) -> Result<RefillSpec, String> {
    let (amount, interval) = text
        .split_once('/')
        .ok_or("expected AMOUNT/daily or AMOUNT/monthly, e.g. 1000/monthly")?;
    Ok(RefillSpec {
        amount: amount
            .trim()
            .parse()
            .map_err(|_| "AMOUNT must be a whole number, e.g. 1000/monthly".to_owned())?,
        interval: match interval.trim() {
            "daily" => RefillInterval::Daily,
            "monthly" => RefillInterval::Monthly,
            _ => return Err("the interval must be daily or monthly, e.g. 1000/monthly".into()),
        },
    })
}

async fn set_enabled(
    context: &Context,
    client: &keyward_client::Client,
    id: &str,
    enabled: bool,
) -> Result<(), Failure> {
    let request = UpdateKeyRequest {
        enabled: Some(enabled),
        ..UpdateKeyRequest::default()
    };
    let key = client
        .update_key(id, &request)
        .await
        .map_err(|error| context.fail(error))?;
    print_updated(context, &key)
}

/// A changed key, as `keys update`, `disable` and `enable` print it.
fn print_updated(context: &Context, key: &KeyView) -> Result<(), Failure> {
    if context.json {
        return context.print_json(key);
    }
    println!("Updated key {} ({})", key.id, key.name);
    println!("state:      {}", state(key));
    println!("scopes:     {}", key.scopes.join(" "));
    println!(
        "rate limit: {}",
        key.rate_limit.map_or("none".into(), |limit| format!(
            "{} per {} s",
            limit.requests, limit.per_seconds
        ))
    );
    println!(
        "credits:    {}",
        key.credits
            .map_or("unlimited".into(), |credits| match credits.refill {
                Some(refill) => format!(
                    "{} left, refilled to {} {}",
                    credits.remaining,
                    refill.amount,
                    match refill.interval {
                        RefillInterval::Daily => "daily",
                        RefillInterval::Monthly => "monthly",
                    }
                ),
                None => format!("{} left", credits.remaining),
            })
    );
    Ok(())
}

/// `active`, `disabled`, `expired` or `revoked`.
fn state(key: &KeyView) -> &'static str {
    match key.status {
        KeyStatus::Active if !key.enabled => "disabled",
        KeyStatus::Active => "active",
        KeyStatus::Expired => "expired",
        KeyStatus::Revoked => "revoked",
    }
}

/// The new key, with the warning that it will not be shown again (on stderr, so that
/// `--json` output stays parseable).
fn print_created(context: &Context, created: &CreatedKey, verb: &str) -> Result<(), Failure> {
    eprintln!(
        "keyward: store this key now: it will not be shown again (it is kept only as a hash)"
    );
    if context.json {
        return context.print_json(created);
    }
    let view = &created.view;
    println!("{verb} key {} ({})", view.id, view.name);
    println!();
    println!("    {}", created.key.expose());
    println!();
    println!("scopes:  {}", view.scopes.join(" "));
    println!("expires: {}", view.expires_at.as_deref().unwrap_or("never"));
    Ok(())
}

/// The keys as aligned columns, headers first.
fn table(keys: &[KeyView]) -> String {
    let header = [
        "ID",
        "NAME",
        "KEY",
        "SCOPES",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    ];
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|key| {
            [
                key.id.clone(),
                key.name.clone(),
                key.masked.clone(),
                key.scopes.join(","),
                state(key).to_owned(),
                key.created_at.clone(),
                key.expires_at.clone().unwrap_or_else(|| "never".into()),
                key.last_used_at.clone().unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    let mut widths = header.map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_its_columns() {
        let key = KeyView {
            id: "key_1".into(),
            name: "a longer name".into(),
            description: None,
            scopes: vec!["read".into(), "write".into()],
            masked: "kw_abcde…wxyz".into(),
            start: "kw_abcde".into(),
            end: "wxyz".into(),
            created_at: "2026-11-22T10:00:00Z".into(),
            expires_at: None,
            last_used_at: None,
            status: KeyStatus::Active,
            meta: None,
            enabled: true,
            rate_limit: None,
            credits: None,
        };
        let text = table(&[key]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID     NAME           KEY"), "{text}");
        assert!(
            lines[1].starts_with("key_1  a longer name  kw_abcde…wxyz  read,write  active"),
            "{text}"
        );
        assert!(lines[1].ends_with("never    never"), "{text}");
    }
}
