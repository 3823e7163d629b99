//! `keyward admin …`: operator commands run against the server's database directly (no server
//! needs to run, no login): the same `--config`, `KEYWARD_*` variables and `--database-url` as
//! `keyward serve`. Glue over `keyward_server::admin`.
//!
//! Exit codes as everywhere: 0 done, 1 the command failed (no such user, the database is
//! unreachable), 2 a usage error (a malformed email, a bad setting).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyward_core::{Email, SystemClock};
use keyward_server::{Config, Overrides};
use serde_json::json;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Disable a user: they cannot log in, every session of theirs ends at once, and their API
    /// keys are refused from the next request on every instance (until enable-user)
    #[command(after_help = "Examples:\n  \
        keyward admin disable-user ada@example.com\n  \
        KEYWARD_DATABASE_URL=postgres://… keyward admin disable-user ada@example.com --json")]
    DisableUser(UserArgs),
    /// Enable a disabled user again: they can log in, and their API keys work again (ended
    /// sessions stay ended)
    #[command(after_help = "Example:\n  keyward admin enable-user ada@example.com")]
    EnableUser(UserArgs),
    /// Add a new signing key for access tokens and retire the current one. Running instances
    /// sign with the new key within `sessions.signing_key_reload_seconds` (default 30 s), with
    /// no restart; tokens signed with a retired key keep verifying, and the retired key stays
    /// in the JWKS, until every token it signed has expired
    #[command(
        after_help = "Example:\n  keyward admin rotate-signing-key --config /etc/keyward.toml"
    )]
    RotateSigningKey(DatabaseArgs),
}

/// Where the database is: as for `keyward serve`.
#[derive(Args, Debug)]
struct DatabaseArgs {
    /// Database URL, e.g. postgres://user@host/keyward [setting: database_url]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The server's TOML settings file
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON instead of text for people
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct UserArgs {
    /// The user's email (compared case-insensitively)
    email: String,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// A failed admin command: its message and exit code.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }
}

pub fn run(args: AdminArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keyward: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("keyward: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn command(command: AdminCommand) -> Result<(), Failure> {
    match command {
        AdminCommand::DisableUser(args) => disable_user(args).await,
        AdminCommand::EnableUser(args) => enable_user(args).await,
        AdminCommand::RotateSigningKey(args) => rotate_signing_key(args).await,
    }
}

/// The server's configuration, resolved as `keyward serve` resolves it.
fn load_config(args: &DatabaseArgs) -> Result<Config, Failure> {
    let overrides = Overrides {
        database_url: args.database_url.clone(),
        ..Overrides::default()
    };
    let (config, warnings) = Config::load(args.config.as_ref(), std::env::vars(), &overrides)
        .map_err(|error| Failure::usage(format!("configuration error: {error}")))?;
    // On stderr: stdout is for the answer (and `--json`).
    for warning in warnings {
        eprintln!("keyward: warning: {warning}");
    }
    Ok(config)
}

fn parse_email(email: &str) -> Result<Email, Failure> {
    Email::parse(email).map_err(|message| Failure::usage(format!("EMAIL {email:?}: {message}")))
}

async fn open(config: &Config) -> Result<std::sync::Arc<dyn keyward_core::store::Store>, Failure> {
    keyward_server::admin::open_store(config)
        .await
        .map_err(|error| Failure::failed(format!("{error:#}")))
}

fn no_such_user(email: &Email, config: &Config) -> Failure {
    Failure::failed(format!(
        "no user has the email {} in {}: check the email, and --database-url or --config",
        email.as_str(),
        keyward_server::redact_database_url(&config.database_url)
    ))
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

async fn disable_user(args: UserArgs) -> Result<(), Failure> {
    let email = parse_email(&args.email)?;
    let config = load_config(&args.database)?;
    let store = open(&config).await?;
    let result = keyward_server::admin::disable_user(store.as_ref(), &SystemClock, &email).await;
    store.close().await;
    let done = result
        .map_err(|error| Failure::failed(format!("{error:#}")))?
        .ok_or_else(|| no_such_user(&email, &config))?;
    if args.database.json {
        print_json(&json!({
            "email": email.as_str(),
            "user_id": done.user_id.as_str(),
            "disabled": true,
            "already_disabled": !done.newly_disabled,
            "sessions_revoked": done.sessions_revoked,
            "keys_stopped": done.keys_stopped,
        }));
    } else {
        let what = if done.newly_disabled {
            "disabled:"
        } else {
            "was already disabled; checked again that it is shut out:"
        };
        println!(
            "{} ({}) {what} {} ended, {} refused from the next request on every instance. \
             Undo with `keyward admin enable-user {}`.",
            email.as_str(),
            done.user_id,
            plural(done.sessions_revoked, "session", "sessions"),
            plural(done.keys_stopped, "API key", "API keys"),
            email.as_str()
        );
    }
    Ok(())
}

async fn enable_user(args: UserArgs) -> Result<(), Failure> {
    let email = parse_email(&args.email)?;
    let config = load_config(&args.database)?;
    let store = open(&config).await?;
    let result = keyward_server::admin::enable_user(store.as_ref(), &email).await;
    store.close().await;
    let was_disabled = result
        .map_err(|error| Failure::failed(format!("{error:#}")))?
        .ok_or_else(|| no_such_user(&email, &config))?;
    if args.database.json {
        print_json(&json!({
            "email": email.as_str(),
            "enabled": true,
            "was_disabled": was_disabled,
        }));
    } else if was_disabled {
        println!(
            "{} is enabled: they can log in again, and their API keys work again.",
            email.as_str()
        );
    } else {
        println!("{} was not disabled: nothing changed.", email.as_str());
    }
    Ok(())
}

async fn rotate_signing_key(args: DatabaseArgs) -> Result<(), Failure> {
    let config = load_config(&args)?;
    let store = open(&config).await?;
    let result =
        keyward_server::admin::rotate_signing_key(store.as_ref(), &SystemClock, &config).await;
    store.close().await;
    let rotation = result.map_err(|error| Failure::failed(format!("{error:#}")))?;
    let sessions = &config.settings.sessions;
    let retired_for = sessions.access_token_ttl_seconds + keyward_core::RETIRED_KEY_GRACE_SECONDS;
    if args.json {
        print_json(&json!({
            "kid": rotation.kid,
            "retired": rotation.retired,
            "dropped": rotation.dropped,
            "signing_within_seconds": sessions.signing_key_reload_seconds,
            "retired_keys_verify_for_seconds": retired_for,
        }));
    } else {
        println!(
            "New signing key {}. Running instances sign with it within {} s, with no restart.",
            rotation.kid, sessions.signing_key_reload_seconds
        );
        if !rotation.retired.is_empty() {
            println!(
                "Retired {}: tokens they signed keep verifying, and the JWKS lists them, for \
                 {retired_for} s more.",
                rotation.retired.join(", ")
            );
        }
        if !rotation.dropped.is_empty() {
            println!(
                "Deleted {}: retired long enough ago that every token they signed has expired.",
                rotation.dropped.join(", ")
            );
        }
    }
    Ok(())
}
