//! `keyward`: one binary for the server and the CLI. Glue only: `serve` and `migrate` call
//! into `keyward-server`, as do the operator commands in [`cli::admin`]; the client commands
//! in [`cli`] call into `keyward-client`.
//!
//! Exit codes: 0 success, 1 a failed command (an API error, an unreachable server, not logged
//! in), 2 a usage error or a bad server setting.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use keyward_server::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Authentication for API platforms: API keys, sessions and tenants in one binary",
    long_about = "Keyward gives the customers of an API platform API keys (minted, scoped, expiring, \
                  stored as hashes, revoked on the next request) and email+password sessions with \
                  JWT access tokens and rotating refresh tokens.\n\n\
                  Start a server with `keyward serve`; it creates ./keyward.db on first start. \
                  Then use it from the command line: `keyward login`, `keyward keys create NAME`.",
    after_help = "Examples:\n  \
        keyward serve                              # http://127.0.0.1:7777 on ./keyward.db\n  \
        keyward login --url https://auth.example.com\n  \
        keyward keys create ci --scope read\n  \
        keyward keys list --json\n  \
        keyward usage --days 7\n  \
        keyward admin disable-user ada@example.com\n\n\
        Client commands read KEYWARD_URL, KEYWARD_API_KEY (overrides the stored credentials, \
        for CI) and KEYWARD_CONFIG_DIR (where credentials.json lives; default \
        $XDG_CONFIG_HOME/keyward or ~/.config/keyward).\n\
        Exit codes: 0 ok, 1 the command failed, 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (default 127.0.0.1:7777 on sqlite://keyward.db, created and migrated on
    /// first start). Settings: --config FILE, then KEYWARD_* variables, then these flags.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:7777 [setting: listen]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Database URL, e.g. sqlite://keyward.db [setting: database_url]
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// TOML settings file (see the README for every setting)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also open the gateway on this address: requests with a valid key or access token
        /// are forwarded to --upstream, others get 401 [setting: gateway.listen]
        #[arg(long, value_name = "ADDR")]
        gateway_listen: Option<String>,
        /// The HTTP API the gateway guards, e.g. http://127.0.0.1:8080 [setting:
        /// gateway.upstream]
        #[arg(long, value_name = "URL")]
        upstream: Option<String>,
    },
    /// Apply pending database migrations and exit. `serve` applies them too; run this ahead of
    /// a rollout to migrate once, before the new instances start.
    Migrate {
        /// Database URL, e.g. postgres://user@host/keyward [setting: database_url]
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// TOML settings file
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Log in and store the credentials: in a browser (device flow) by default, with a
    /// password with --email, or by storing KEYWARD_API_KEY when it is set
    #[command(after_help = "Examples:\n  \
        keyward login --url https://auth.example.com     # prints a code to approve in a browser\n  \
        keyward login --email ada@example.com            # asks for the password\n  \
        echo \"$PASSWORD\" | keyward login --email ada@example.com\n  \
        KEYWARD_API_KEY=kw_… keyward login               # checks the key and stores it\n\n\
        The credentials go to $KEYWARD_CONFIG_DIR/credentials.json (default \
        ~/.config/keyward/credentials.json), readable by you only.")]
    Login(cli::auth::LoginArgs),
    /// End the stored session on the server and delete the stored credentials
    #[command(after_help = "Example:\n  keyward logout")]
    Logout(cli::auth::LogoutArgs),
    /// Show who the credentials belong to: email, tenant and how they authenticate
    #[command(after_help = "Examples:\n  keyward whoami\n  keyward whoami --json")]
    Whoami(cli::auth::WhoamiArgs),
    /// Create, list, revoke and rotate API keys
    #[command(after_help = "Examples:\n  \
        keyward keys create ci --scope read --expires-in-days 90\n  \
        keyward keys list\n  \
        keyward keys rotate key_… --grace-period-seconds 3600\n  \
        keyward keys revoke key_…")]
    Keys(cli::keys::KeysArgs),
    /// Show the metered requests (verify calls, gateway requests) of your tenant or of one key
    /// per UTC day: executions, success rate, average duration and a chart of the days
    #[command(after_help = "Examples:\n  \
        keyward usage                           # the last 30 days of your tenant\n  \
        keyward usage --days 7                  # the last 7 days, today included\n  \
        keyward usage --key key_2bX9…           # one of your keys\n  \
        keyward usage --days 90 --json          # the API's report, for scripts\n\n\
        In the chart, █ (green) is succeeded, ▒ (red) failed and ░ in flight; colour only on a \
        terminal, and never when NO_COLOR is set.")]
    Usage(cli::usage::UsageArgs),
    /// Find Keyward keys in files (a pre-commit or CI check) and tell, or report, the live ones
    #[command(after_help = "Examples:\n  \
        keyward leaks check .                  # exit status 1 when a live key is found\n  \
        keyward leaks check src/ --json\n  \
        keyward leaks check . --report         # live keys are revoked by the server")]
    Leaks(cli::leaks::LeaksArgs),
    /// Operator commands, run on the server's machine against its database (same --config,
    /// KEYWARD_* variables and --database-url as `serve`): disable or enable a user, rotate
    /// the token signing key
    #[command(after_help = "Examples:\n  \
        keyward admin disable-user ada@example.com   # sessions end, keys refused everywhere\n  \
        keyward admin enable-user ada@example.com\n  \
        keyward admin rotate-signing-key --config /etc/keyward.toml\n\n\
        Exit codes: 0 done, 1 the command failed (no such user, database unreachable), \
        2 usage error.")]
    Admin(cli::admin::AdminArgs),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            database_url,
            config,
            gateway_listen,
            upstream,
        } => serve(
            Overrides {
                listen,
                database_url,
                gateway_listen,
                upstream,
            },
            config,
        ),
        Command::Migrate {
            database_url,
            config,
        } => migrate(
            Overrides {
                database_url,
                ..Overrides::default()
            },
            config,
        ),
        Command::Login(args) => cli::run(cli::auth::login(args)),
        Command::Logout(args) => cli::run(cli::auth::logout(args)),
        Command::Whoami(args) => cli::run(cli::auth::whoami(args)),
        Command::Keys(args) => cli::run(cli::keys::run(args)),
        Command::Usage(args) => cli::run(cli::usage::run(args)),
        Command::Leaks(args) => cli::run(cli::leaks::run(args)),
        Command::Admin(args) => cli::admin::run(args),
    }
}

/// Loads the configuration and starts logging; `Err` is the exit code of a bad setting.
fn setup(
    overrides: &Overrides,
    file: Option<&PathBuf>,
) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let (config, warnings) = Config::load(file, std::env::vars(), overrides).map_err(|error| {
        eprintln!("keyward: configuration error: {error}");
        ExitCode::from(2)
    })?;
    keyward_server::telemetry::init(config.json_logs);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("keyward: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })?;
    Ok((config, runtime))
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("keyward: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(overrides: Overrides, file: Option<PathBuf>) -> ExitCode {
    let (config, runtime) = match setup(&overrides, file.as_ref()) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    finish(runtime.block_on(keyward_server::run(
        config,
        Arc::new(keyward_core::SystemClock),
    )))
}

fn migrate(overrides: Overrides, file: Option<PathBuf>) -> ExitCode {
    let (config, runtime) = match setup(&overrides, file.as_ref()) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    let database = keyward_server::redact_database_url(&config.database_url);
    let result = runtime.block_on(keyward_server::migrate(&config));
    if result.is_ok() {
        println!("keyward: {database} is migrated to the latest schema");
    }
    finish(result)
}
