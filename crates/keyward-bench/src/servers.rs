//! The servers under test: a real `keyward serve` child process with its own temporary
//! database (killed when dropped, also on error and panic), and the upstream that the gateway
//! guards, an axum app on its own thread and single-threaded runtime.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keyward_proto::paths;
use serde_json::json;

use crate::http::Call;

/// What `GET /hello` on the upstream answers.
pub const UPSTREAM_BODY: &str = "hello from the upstream\n";

/// Lines of the child's output kept to explain a failure.
const LOG_LINES_KEPT: usize = 200;

pub struct UpstreamServer {
    pub addr: SocketAddr,
    /// The thread serving it, for CPU readings.
    pub thread_id: Option<u32>,
}

impl UpstreamServer {
    /// Starts the upstream on 127.0.0.1:0; it runs until the process ends.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the upstream server")?;
        listener
            .set_nonblocking(true)
            .context("make the upstream listener non-blocking")?;
        let addr = listener.local_addr().context("upstream address")?;
        let (started, thread_id) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("upstream".into())
            .spawn(move || {
                let _ = started.send(crate::cpu::current_thread_id());
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("keyward-bench: the upstream runtime did not start: {error}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let app = axum::Router::new()
                        .route("/hello", axum::routing::get(|| async { UPSTREAM_BODY }));
                    let served = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => axum::serve(listener, app).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = served {
                        eprintln!("keyward-bench: the upstream server stopped: {error}");
                    }
                });
            })
            .context("start the upstream thread")?;
        let thread_id = thread_id.recv().ok().flatten();
        Ok(Self { addr, thread_id })
    }
}

/// How to start keyward.
pub struct Launch<'a> {
    pub binary: &'a Path,
    /// Names the server in progress lines and errors.
    pub label: &'a str,
    /// `false` sets `KEYWARD_USAGE__ENABLED=false`.
    pub metering: bool,
    /// The upstream to guard, which also opens the gateway listener.
    pub upstream: Option<SocketAddr>,
    /// The database; `None` makes a fresh SQLite file in the server's temporary directory.
    pub database_url: Option<&'a str>,
    /// More settings, as `KEYWARD_…` environment variables.
    pub env: Vec<(&'static str, String)>,
}

impl<'a> Launch<'a> {
    /// A metered server on its own SQLite file, without gateway or extra settings.
    pub fn new(binary: &'a Path, label: &'a str) -> Self {
        Self {
            binary,
            label,
            metering: true,
            upstream: None,
            database_url: None,
            env: Vec::new(),
        }
    }
}

/// A running `keyward serve`; dropping it kills the process.
pub struct KeywardServer {
    child: Child,
    pub label: String,
    pub api: SocketAddr,
    pub gateway: Option<SocketAddr>,
    log: Arc<Mutex<VecDeque<String>>>,
    _directory: tempfile::TempDir,
}

impl Drop for KeywardServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KeywardServer {
    /// Spawns the binary on free ports with a fresh SQLite database and waits for `/readyz`.
    pub async fn start(launch: Launch<'_>) -> anyhow::Result<Self> {
        let directory = tempfile::Builder::new()
            .prefix("keyward-bench-")
            .tempdir()
            .context("create a temporary directory for the database")?;
        let api = free_port().context("find a free port for the API")?;
        let gateway = match launch.upstream {
            Some(_) => Some(free_port().context("find a free port for the gateway")?),
            None => None,
        };

        let mut command = Command::new(launch.binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYWARD_") {
                command.env_remove(name);
            }
        }
        command
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            // Raw throughput is measured: the login storm and refresh loads come from one
            // address and would be throttled as brute force.
            .env("KEYWARD_RATE_LIMITS__ENABLED", "false")
            .current_dir(directory.path())
            .arg("serve")
            .arg("--listen")
            .arg(api.to_string())
            .arg("--database-url")
            .arg(match launch.database_url {
                Some(url) => url.to_owned(),
                None => format!("sqlite://{}", directory.path().join("bench.db").display()),
            });
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        if !launch.metering {
            command.env("KEYWARD_USAGE__ENABLED", "false");
        }
        if let (Some(gateway), Some(upstream)) = (gateway, launch.upstream) {
            command
                .arg("--gateway-listen")
                .arg(gateway.to_string())
                .arg("--upstream")
                .arg(format!("http://{upstream}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {}", launch.binary.display()))?;

        // keyward logs to stdout and reports bad settings on stderr: keep both (the pipes must
        // be drained anyway), and echo them so a warning during a run is seen.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let prefix = format!("keyward[{}]", launch.label);
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, prefix.clone(), Arc::clone(&log));
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, prefix, Arc::clone(&log));
        }

        let mut server = Self {
            child,
            label: launch.label.to_owned(),
            api,
            gateway,
            log,
            _directory: directory,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory (VmRSS), in KiB; `None` without `/proc`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        vm_rss_kib(&status)
    }

    /// Whether keyward printed a line containing `needle` (e.g. an ignored variable).
    pub fn logged(&self, needle: &str) -> Option<String> {
        let log = self.log.lock().ok()?;
        log.iter().find(|line| line.contains(needle)).cloned()
    }

    /// The last lines keyward printed, for error messages.
    pub fn recent_log(&self) -> String {
        let Ok(log) = self.log.lock() else {
            return String::new();
        };
        if log.is_empty() {
            return "(keyward printed nothing)".into();
        }
        let lines: Vec<&str> = log.iter().rev().take(20).map(String::as_str).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().context("check the keyward process")? {
                // Let the reader threads catch the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "keyward ({}) exited during start-up with {status}; its output:\n{}",
                    self.label,
                    self.recent_log()
                );
            }
            let last = match Call::get(self.api, paths::READYZ).send().await {
                Ok(answer) if answer.status.is_success() => return Ok(()),
                Ok(answer) => format!("{} {}", answer.status, answer.text()),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "keyward ({}) did not answer 200 on GET http://{}/readyz within 30 s (last: {last}); its output:\n{}",
                    self.label,
                    self.api,
                    self.recent_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A registered user and a valid API key on one server.
pub struct Account {
    pub access_token: String,
    pub api_key: String,
}

/// The bench user's credentials (every server has its own database, so one user is enough).
pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "correct horse battery staple";

impl Account {
    /// Registers `bench@example.com` and creates the key named `bench`.
    pub async fn create(server: &KeywardServer) -> anyhow::Result<Self> {
        let registered = Call::post(
            server.api,
            paths::REGISTER,
            json!({"email": EMAIL, "password": PASSWORD}),
        )
        .send()
        .await?;
        if !registered.status.is_success() {
            bail!(
                "POST {} answered {}: {}",
                paths::REGISTER,
                registered.status,
                registered.text()
            );
        }
        let access_token = registered.json()?["access_token"]
            .as_str()
            .with_context(|| {
                format!(
                    "POST {} answered without access_token: {}",
                    paths::REGISTER,
                    registered.text()
                )
            })?
            .to_owned();
        let (_, api_key) = create_key(server.api, &access_token, "bench").await?;
        Ok(Self {
            access_token,
            api_key,
        })
    }

    /// Logs the bench user in once more: a new session, its refresh token.
    pub async fn login(server: &KeywardServer) -> anyhow::Result<String> {
        let answer = Call::post(
            server.api,
            paths::LOGIN,
            json!({"email": EMAIL, "password": PASSWORD}),
        )
        .send()
        .await?;
        if !answer.status.is_success() {
            bail!(
                "POST {} answered {}: {}",
                paths::LOGIN,
                answer.status,
                answer.text()
            );
        }
        Ok(answer.json()?["refresh_token"]
            .as_str()
            .with_context(|| format!("POST {} gave no refresh_token", paths::LOGIN))?
            .to_owned())
    }
}

/// Creates a key with the session `access_token`: its id and the key.
pub async fn create_key(
    api: SocketAddr,
    access_token: &str,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let created = Call::post(api, paths::KEYS, json!({"name": name}))
        .bearer(access_token)
        .send()
        .await?;
    if created.status.as_u16() != 201 {
        bail!(
            "POST {} answered {} (expected 201): {}",
            paths::KEYS,
            created.status,
            created.text()
        );
    }
    let body = created.json()?;
    let field = |name: &str| {
        body[name].as_str().map(str::to_owned).with_context(|| {
            format!(
                "POST {} answered without {name}: {}",
                paths::KEYS,
                created.text()
            )
        })
    };
    Ok((field("id")?, field("key")?))
}

/// The `code` of `POST /v1/keys/verify` for `key` (VALID, REVOKED…).
pub async fn verify_code(api: SocketAddr, key: &str) -> anyhow::Result<String> {
    let answer = Call::post(api, paths::KEYS_VERIFY, json!({"key": key}))
        .send()
        .await?;
    if !answer.status.is_success() {
        bail!(
            "POST {} answered {}: {}",
            paths::KEYS_VERIFY,
            answer.status,
            answer.text()
        );
    }
    Ok(answer.json()?["code"]
        .as_str()
        .with_context(|| {
            format!(
                "POST {} gave no code: {}",
                paths::KEYS_VERIFY,
                answer.text()
            )
        })?
        .to_owned())
}

/// `VmRSS:   123456 kB` of a `/proc/<pid>/status` text.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn drain(pipe: impl Read + Send + 'static, prefix: String, log: Arc<Mutex<VecDeque<String>>>) {
    let spawned = std::thread::Builder::new()
        .name("keyward-output".into())
        .spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("  {prefix}: {line}");
                if let Ok(mut log) = log.lock() {
                    if log.len() == LOG_LINES_KEPT {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!("keyward-bench: cannot read keyward's output ({error}); it may block");
    }
}

/// The keyward binary to run: `--keyward`, else `target/release/keyward` of this workspace.
pub fn keyward_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let workspace = workspace_root();
    let binary = flag.unwrap_or_else(|| workspace.join("target/release/keyward"));
    if !binary.is_file() {
        bail!(
            "no keyward binary at {}: build it first with `cargo build --release -p keyward` \
             (in {}), or pass --keyward PATH",
            binary.display(),
            workspace.display()
        );
    }
    Ok(binary)
}

/// The workspace root, two levels above this crate.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A source file of the server newer than the binary, if any: the numbers would describe
/// old code.
pub fn newer_source(binary: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).ok()?.modified().ok()?;
    let crates = workspace_root().join("crates");
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for name in [
        "keyward",
        "keyward-server",
        "keyward-core",
        "keyward-store",
        "keyward-proto",
    ] {
        visit(&crates.join(name).join("src"), &mut newest);
    }
    let (modified, path) = newest?;
    (modified > built).then_some(path)
}

fn visit(directory: &Path, newest: &mut Option<(std::time::SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            visit(&path, newest);
        } else if let Ok(modified) = entry.metadata().and_then(|meta| meta.modified()) {
            if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
                *newest = Some((modified, path));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_proc_status() {
        let status = "Name:\tkeyward\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(123_456));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    }
}
