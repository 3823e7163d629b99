//! The client commands (`login`, `logout`, `whoami`, `keys …`, `usage`, `leaks check`): glue over
//! `keyward-client`.
//!
//! Every command resolves its [`Context`] the same way: the URL from `--url`, else
//! `KEYWARD_URL`, else the credentials file, else `http://127.0.0.1:7777`; the credentials from
//! `KEYWARD_API_KEY`, else the credentials file when it was written for that URL. A failure is
//! a [`Failure`]: one line on stderr that says what to do next, and exit code 1.

pub mod admin;
pub mod auth;
pub mod keys;
pub mod leaks;
mod output;
pub mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keyward_client::{Client, ClientBuilder, Credentials, CredentialsFile, DEFAULT_BASE_URL};
use serde::Serialize;

pub use output::Failure;

/// The `User-Agent` of every request the CLI makes.
const USER_AGENT: &str = concat!("keyward-cli/", env!("CARGO_PKG_VERSION"));

/// Flags every client command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Server URL [default: $KEYWARD_URL, else the URL stored by `keyward login`, else
    /// http://127.0.0.1:7777]
    #[arg(long, value_name = "URL", global = true)]
    pub url: Option<String>,
    /// Print the API's JSON instead of text for people
    #[arg(long, global = true)]
    pub json: bool,
}

/// Where the credentials of a command come from; error messages depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `KEYWARD_API_KEY`.
    Environment,
    /// The credentials file.
    File,
    /// Nowhere: not logged in.
    Nothing,
}

/// What a client command runs with.
pub struct Context {
    pub url: String,
    pub json: bool,
    /// The credentials file; `None` when no config directory can be found.
    pub path: Option<PathBuf>,
    /// The file as it was when the command started.
    pub file: Option<CredentialsFile>,
    pub source: Source,
    credentials: Credentials,
}

/// A non-empty environment variable.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

impl Context {
    /// Reads the flags, the environment and the credentials file.
    pub fn load(args: &ClientArgs) -> Result<Self, Failure> {
        let path = CredentialsFile::default_path();
        let file = match &path {
            Some(path) => CredentialsFile::load(path).map_err(Failure::from_client)?,
            None => None,
        };
        let url = args
            .url
            .clone()
            .or_else(|| env_var("KEYWARD_URL"))
            .or_else(|| file.as_ref().and_then(|file| file.url.clone()))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let (credentials, source) = if let Some(key) = env_var("KEYWARD_API_KEY") {
            let credentials = Credentials {
                api_key: Some(keyward_client::Secret::new(key)),
                ..Credentials::default()
            };
            (credentials, Source::Environment)
        } else {
            match &file {
                Some(file) if file.is_for(&url) && file.credentials() != Credentials::default() => {
                    (file.credentials(), Source::File)
                }
                _ => (Credentials::default(), Source::Nothing),
            }
        };
        Ok(Self {
            url,
            json: args.json,
            path,
            file,
            source,
            credentials,
        })
    }

    /// A client with no credentials, for logging in.
    pub fn anonymous_client(&self) -> Result<Client, Failure> {
        self.builder().build().map_err(|error| self.fail(error))
    }

    /// A client with the command's credentials; fails with "run `keyward login`" when there
    /// are none. Credentials from the file are written back after a refresh.
    pub fn client(&self) -> Result<Client, Failure> {
        if self.source == Source::Nothing {
            return Err(Failure::new(format!(
                "not logged in to {}: run `keyward login` (or set KEYWARD_API_KEY)",
                self.url
            )));
        }
        let mut builder = self.builder().credentials(self.credentials.clone());
        if let (Source::File, Some(path)) = (self.source, &self.path) {
            builder = builder.persist(path.clone());
        }
        builder.build().map_err(|error| self.fail(error))
    }

    fn builder(&self) -> ClientBuilder {
        ClientBuilder::new(self.url.clone()).user_agent(USER_AGENT)
    }

    /// The credentials file's path, or a failure saying how to name one.
    pub fn require_path(&self) -> Result<&PathBuf, Failure> {
        self.path.as_ref().ok_or_else(|| {
            Failure::new(
                "cannot find a place for the credentials file: set KEYWARD_CONFIG_DIR or HOME"
                    .to_owned(),
            )
        })
    }

    /// The message for a failed call, with what to do next.
    pub fn fail(&self, error: keyward_client::Error) -> Failure {
        output::describe(self, error)
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json(&self, value: &impl Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|error| Failure::new(format!("cannot print JSON: {error}")))?;
        println!("{text}");
        Ok(())
    }
}

/// Runs a client command on a small single-threaded runtime; the result is the exit code.
pub fn run<F>(command: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
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
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("keyward: {failure}");
            ExitCode::FAILURE
        }
    }
}
