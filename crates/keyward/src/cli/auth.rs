//! `keyward login`, `keyward logout` and `keyward whoami`.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use clap::Args;
use keyward_client::{
    AuthMethod, Client, Credentials, CredentialsFile, DeviceCodeResponse, DevicePoll, MeResponse,
};

use super::{env_var, ClientArgs, Context, Failure, Source};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Log in with this account's password instead of a browser. The password is asked for on
    /// a terminal, else read from the first line of standard input
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `keyward login`: by password, by `KEYWARD_API_KEY`, or by the device flow.
pub async fn login(args: LoginArgs) -> Result<(), Failure> {
    let context = Context::load(&args.client)?;
    let path = context.require_path()?.clone();
    let client = if let Some(email) = &args.email {
        let password = read_password(email)?;
        let client = context.anonymous_client()?;
        client
            .login(email, &password)
            .await
            .map_err(|error| context.fail(error))?;
        client
    } else if context.source == Source::Environment {
        // KEYWARD_API_KEY: checked by `me` below, then stored; no browser step.
        context.client()?
    } else {
        device_login(&context).await?
    };
    let me = client.me().await.map_err(|error| context.fail(error))?;
    // The session or key goes to the file only once it has proved to work.
    let stored = CredentialsFile::new(Some(context.url.clone()), client.credentials());
    stored.save(&path).map_err(Failure::from_client)?;
    if let Some(previous) = &context.file {
        end_session(previous, &context.url).await;
    }
    if context.json {
        return context.print_json(&me);
    }
    let how = match (&args.email, context.source) {
        (Some(_), _) => "with a password session",
        (None, Source::Environment) => "with the API key in KEYWARD_API_KEY",
        _ => "with a new API key named cli",
    };
    println!(
        "Logged in to {} as {} (tenant {}) {how}.",
        context.url, me.user.email, me.tenant.name
    );
    println!("Credentials saved in {}", path.display());
    Ok(())
}

/// Best effort: ends the session a replaced credentials file held, so that logging in again
/// leaves no live session behind.
async fn end_session(previous: &CredentialsFile, url: &str) {
    if previous.refresh_token.is_none() && previous.access_token.is_none() {
        return;
    }
    let url = previous.url.clone().unwrap_or_else(|| url.to_owned());
    let Ok(client) = Client::builder(url)
        .user_agent(super::USER_AGENT)
        .credentials(Credentials {
            api_key: None,
            ..previous.credentials()
        })
        .build()
    else {
        return;
    };
    let _ = client.logout(false).await;
}

/// The password for `email`: prompted for without echo on a terminal, else the first line of
/// standard input (for scripts: `echo "$PASSWORD" | keyward login --email …`).
fn read_password(email: &str) -> Result<String, Failure> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {email}: "))
            .map_err(|error| Failure::new(format!("cannot read the password: {error}")))?
    } else {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|error| {
                Failure::new(format!("cannot read the password from stdin: {error}"))
            })?;
        input.lines().next().unwrap_or_default().to_owned()
    };
    if password.is_empty() {
        return Err(Failure::new(
            "no password given: type it at the prompt, or pipe it on standard input".to_owned(),
        ));
    }
    Ok(password)
}

/// The device authorization grant: show a code, wait for a person to approve it in the
/// console, and come back with a client holding the new key.
async fn device_login(context: &Context) -> Result<Client, Failure> {
    let client = context.anonymous_client()?;
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    // The server takes up to 100 characters.
    let client_name: String = format!("keyward CLI on {host}").chars().take(100).collect();
    let authorization = client
        .device_code(Some(&client_name))
        .await
        .map_err(|error| context.fail(error))?;
    announce(&authorization);
    let key = poll(context, &client, &authorization).await?;
    client.set_credentials(Credentials {
        api_key: Some(key),
        ..Credentials::default()
    });
    Ok(client)
}

fn announce(authorization: &DeviceCodeResponse) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "To log in, open {} in a browser and enter the code\n\n    {}\n",
        authorization.verification_uri, authorization.user_code
    );
    if open_browser(&authorization.verification_uri_complete) {
        let _ = writeln!(stderr, "(a browser window should have opened on that page)");
    }
}

/// Tries to open `url` in the user's browser; whether a browser was started. Only on a
/// terminal with a display: over SSH or in CI there is none, and the printed URL is enough.
fn open_browser(url: &str) -> bool {
    if !std::io::stderr().is_terminal() || env_var("KEYWARD_NO_BROWSER").is_some() {
        return false;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else if env_var("DISPLAY").is_some() || env_var("WAYLAND_DISPLAY").is_some() {
        "xdg-open"
    } else {
        return false;
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Polls the token endpoint every `interval` seconds (5 more after each `slow_down`) until
/// the code is approved, denied or expired.
async fn poll(
    context: &Context,
    client: &Client,
    authorization: &DeviceCodeResponse,
) -> Result<keyward_client::Secret, Failure> {
    let mut interval = Duration::from_secs(authorization.interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(authorization.expires_in);
    let spinner = Spinner::start("Waiting for approval in the browser");
    let outcome = loop {
        tokio::time::sleep(interval).await;
        let answer = match client.device_token(&authorization.device_code).await {
            Ok(answer) => answer,
            Err(error) => break Err(context.fail(error)),
        };
        match answer {
            DevicePoll::Approved(key) => break Ok(key.api_key),
            DevicePoll::Pending if tokio::time::Instant::now() < deadline => {}
            DevicePoll::SlowDown => interval = slowed_down(interval),
            DevicePoll::Denied => {
                break Err(Failure::new(
                    "the login was denied in the browser: run `keyward login` to try again"
                        .to_owned(),
                ))
            }
            DevicePoll::Pending | DevicePoll::Expired => {
                break Err(Failure::new(
                    "the code expired before it was approved: run `keyward login` again".to_owned(),
                ))
            }
            DevicePoll::Failed { error, description } => {
                let detail = description.map(|d| format!(": {d}")).unwrap_or_default();
                break Err(Failure::new(format!(
                    "the device login failed ({error}{detail}): run `keyward login` again"
                )));
            }
            _ => {
                break Err(Failure::new(
                    "unexpected answer from the device login: run `keyward login` again".to_owned(),
                ))
            }
        }
    };
    spinner.stop();
    outcome
}

/// The interval after a `slow_down` answer: 5 seconds longer (RFC 8628 §3.5).
fn slowed_down(interval: Duration) -> Duration {
    interval + Duration::from_secs(5)
}

/// A spinner on stderr while the CLI waits, shown only on a terminal.
struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    fn start(label: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            for frame in FRAMES.iter().cycle() {
                eprint!("\r{frame} {label}…");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { task: Some(task) }
    }

    fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
            // Clear the spinner's line.
            eprint!("\r\x1b[2K");
        }
    }
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `keyward logout`: ends the stored session on the server, then deletes the file.
pub async fn logout(args: LogoutArgs) -> Result<(), Failure> {
    let context = Context::load(&args.client)?;
    let path = context.require_path()?.clone();
    let Some(file) = &context.file else {
        println!("Not logged in: there are no stored credentials.");
        return Ok(());
    };
    let url = file.url.clone().unwrap_or_else(|| context.url.clone());
    let mut warning = None;
    if file.refresh_token.is_some() || file.access_token.is_some() {
        let ended = match Client::builder(url.clone())
            .user_agent(super::USER_AGENT)
            .credentials(file.credentials())
            .build()
        {
            Ok(client) => client.logout(false).await,
            Err(error) => Err(error),
        };
        match ended {
            Ok(()) => {}
            // The session had already ended: nothing left to revoke.
            Err(error) if error.status() == Some(401) => {}
            Err(error) => {
                warning = Some(format!(
                    "could not end the session on the server ({error}); the stored \
                     credentials are deleted anyway"
                ));
            }
        }
    }
    CredentialsFile::remove(&path).map_err(Failure::from_client)?;
    if let Some(warning) = warning {
        eprintln!("keyward: warning: {warning}");
    }
    if file.api_key.is_some() {
        eprintln!(
            "keyward: the stored API key was forgotten but still works; revoke it with \
             `keyward keys revoke ID` if you no longer need it"
        );
    }
    if context.source == Source::Environment {
        eprintln!("keyward: KEYWARD_API_KEY is still set in your environment");
    }
    println!("Logged out of {url}.");
    Ok(())
}

#[derive(Args, Debug)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `keyward whoami`: the email and tenant behind the credentials.
pub async fn whoami(args: WhoamiArgs) -> Result<(), Failure> {
    let context = Context::load(&args.client)?;
    let client = context.client()?;
    let me: MeResponse = client.me().await.map_err(|error| context.fail(error))?;
    if context.json {
        return context.print_json(&me);
    }
    println!("{}", me.user.email);
    println!("tenant: {} ({})", me.tenant.name, me.tenant.id);
    let auth = match me.auth.method {
        AuthMethod::Session => "password session".to_owned(),
        AuthMethod::ApiKey => format!(
            "API key {} (scopes: {})",
            me.auth.key_id.as_deref().unwrap_or("?"),
            me.auth.scopes.join(" ")
        ),
    };
    let from = match context.source {
        Source::Environment => " from KEYWARD_API_KEY",
        _ => "",
    };
    println!("auth: {auth}{from}");
    println!("server: {}", context.url);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_down_adds_five_seconds_each_time() {
        let once = slowed_down(Duration::from_secs(5));
        assert_eq!(once, Duration::from_secs(10));
        assert_eq!(slowed_down(once), Duration::from_secs(15));
    }
}
