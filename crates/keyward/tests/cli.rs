//! The client commands as a user runs them: the real `keyward` binary against a real
//! `keyward serve`, each test with its own server, database and config directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyward_client::{Client, RegisterRequest, VerifyCode};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";

fn keyward() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    // The suite's own environment must not leak settings or credentials into the binary.
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// A running `keyward serve` on a fresh SQLite file; killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}/k.db", dir.path().display());
        let mut command = keyward();
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &database,
            ])
            // Tests log in and register quickly, from one address.
            .env("KEYWARD_RATE_LIMITS__ENABLED", "false")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start keyward serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = Instant::now();
        let addr = loop {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            let line = lines.next().expect("server output").unwrap();
            if let Some(rest) = line.split("keyward listening addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep reading the log, or the server blocks once the pipe is full.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// Registers `email` through the SDK; the returned client holds the new session.
    fn register(&self, email: &str) -> Client {
        let client = Client::builder(&self.url).build().unwrap();
        block_on(client.register(RegisterRequest {
            email: email.into(),
            password: keyward_client::Secret::new(PASSWORD),
            name: None,
            tenant_name: Some(format!("tenant of {email}")),
        }))
        .unwrap();
        client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// One user's command line: a config directory of their own.
struct User {
    config: tempfile::TempDir,
    url: String,
}

/// What a command did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn failed(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("{error}: not JSON: {}", self.stdout))
    }
}

impl User {
    fn new(server: &Server) -> Self {
        Self {
            config: tempfile::tempdir().unwrap(),
            url: server.url.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = keyward();
        command
            .args(args)
            .env("KEYWARD_CONFIG_DIR", self.config.path())
            .env("KEYWARD_URL", &self.url);
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run keyward");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        Run::from(child.wait_with_output().unwrap())
    }

    fn login(&self, email: &str) -> Run {
        self.run_with(
            &["login", "--email", email],
            &[],
            Some(&format!("{PASSWORD}\n")),
        )
        .ok()
    }

    fn credentials_path(&self) -> PathBuf {
        self.config.path().join("credentials.json")
    }

    fn credentials(&self) -> Value {
        let text = std::fs::read_to_string(self.credentials_path()).expect("credentials file");
        serde_json::from_str(&text).unwrap()
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn password_login_then_whoami_and_the_key_commands() {
    let server = Server::start();
    server.register("ada@example.com");
    let user = User::new(&server);

    user.login("ada@example.com");
    let first = user.credentials();
    // Logging in again replaces the stored session and ends the old one on the server.
    let run = user.login("ada@example.com");
    assert!(run.stdout.contains("ada@example.com"), "{}", run.stdout);
    let replaced = Client::builder(&server.url)
        .tokens(
            first["access_token"].as_str().unwrap(),
            first["refresh_token"].as_str().unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(
        block_on(replaced.refresh()).unwrap_err().status(),
        Some(401)
    );
    let stored = user.credentials();
    assert_eq!(stored["url"], server.url.as_str());
    assert!(stored["access_token"].as_str().unwrap().contains('.'));
    assert!(stored["refresh_token"].is_string());
    assert!(stored.get("api_key").is_none(), "{stored}");
    #[cfg(unix)]
    assert_eq!(mode(&user.credentials_path()), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(user.config.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");

    let run = user.run(&["whoami"]).ok();
    assert!(run.stdout.contains("ada@example.com"), "{}", run.stdout);
    assert!(
        run.stdout.contains("tenant of ada@example.com"),
        "{}",
        run.stdout
    );
    let me = user.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(me["auth"]["method"], "session");

    // create: the key once, with a warning; --json is the API's object.
    let run = user
        .run(&[
            "keys",
            "create",
            "ci",
            "--scope",
            "read",
            "--description",
            "for CI",
            "--expires-in-days",
            "30",
            "--json",
        ])
        .ok();
    assert!(
        run.stderr.contains("will not be shown again"),
        "{}",
        run.stderr
    );
    let created = run.json();
    let ci_id = created["id"].as_str().unwrap().to_owned();
    let ci_key = created["key"].as_str().unwrap().to_owned();
    assert!(
        ci_id.starts_with("key_") && ci_key.starts_with("kw_"),
        "{created}"
    );
    assert_eq!(created["scopes"], serde_json::json!(["read"]));
    assert_eq!(created["description"], "for CI");
    assert!(created["expires_at"].is_string());

    let run = user.run(&["keys", "create", "deploy"]).ok();
    assert!(
        run.stderr.contains("will not be shown again"),
        "{}",
        run.stderr
    );
    let deploy_key = run
        .stdout
        .split_whitespace()
        .find(|word| word.starts_with("kw_"))
        .unwrap_or_else(|| panic!("no key in {}", run.stdout))
        .to_owned();
    assert!(run.stdout.contains("admin"), "{}", run.stdout);

    // list: a table for people, JSON for programs; never the key itself.
    let run = user.run(&["keys", "list"]).ok();
    let table = run.stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&ci_id) && table.contains("deploy"),
        "{table}"
    );
    assert!(
        !table.contains(&ci_key) && !table.contains(&deploy_key),
        "{table}"
    );
    let listed = user.run(&["keys", "list", "--json"]).ok().json();
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{listed}");
    assert_eq!(keys[0]["name"], "deploy", "newest first");
    assert!(keys.iter().all(|key| key.get("key").is_none()));

    // rotate: a new key; the old one is revoked at once.
    let rotated = user.run(&["keys", "rotate", &ci_id, "--json"]).ok().json();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_id, ci_id);
    assert_eq!(rotated["name"], "ci");
    let verifier = Client::builder(&server.url).build().unwrap();
    let verify = |key: &str| block_on(verifier.verify_key(key, &[])).unwrap().code;
    assert_eq!(verify(&ci_key), VerifyCode::Revoked);
    assert_eq!(verify(&new_key), VerifyCode::Valid);

    // rotate with a grace period, in text.
    let run = user
        .run(&["keys", "rotate", &new_id, "--grace-period-seconds", "3600"])
        .ok();
    assert!(run.stdout.contains("3600"), "{}", run.stdout);
    assert_eq!(
        verify(&new_key),
        VerifyCode::Valid,
        "still in its grace period"
    );

    // revoke.
    let run = user.run(&["keys", "revoke", &new_id]).ok();
    assert!(run.stdout.contains(&new_id), "{}", run.stdout);
    assert_eq!(verify(&new_key), VerifyCode::Revoked);
    let again = user.run(&["keys", "revoke", &new_id, "--json"]).ok().json();
    assert_eq!(again["status"], "revoked");
    let unknown = user.run(&["keys", "revoke", "key_unknown"]).failed(1);
    assert!(
        unknown.stderr.contains("keyward keys list"),
        "{}",
        unknown.stderr
    );
    let all = user
        .run(&["keys", "list", "--include-revoked", "--json"])
        .ok()
        .json();
    let statuses: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 4, "{all}");
    assert_eq!(
        statuses.iter().filter(|s| **s == "revoked").count(),
        2,
        "{all}"
    );

    // A bad name is the server's 422, with the field.
    let run = user.run(&["keys", "create", "9lives"]).failed(1);
    assert!(run.stderr.contains("name"), "{}", run.stderr);

    // logout: the session ends on the server and the file goes.
    let tokens = user.credentials();
    let run = user.run(&["logout"]).ok();
    assert!(run.stdout.contains("Logged out"), "{}", run.stdout);
    assert!(!user.credentials_path().exists());
    let old_session = Client::builder(&server.url)
        .tokens(
            tokens["access_token"].as_str().unwrap(),
            tokens["refresh_token"].as_str().unwrap(),
        )
        .build()
        .unwrap();
    let error = block_on(old_session.me()).unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");

    let run = user.run(&["whoami"]).failed(1);
    assert!(run.stderr.contains("keyward login"), "{}", run.stderr);
}

#[test]
fn the_api_key_in_the_environment_wins_over_the_file() {
    let server = Server::start();
    let session = server.register("bob@example.com");
    server.register("carol@example.com");
    let created = block_on(session.create_key(keyward_client::CreateKeyRequest {
        name: "env".into(),
        scopes: Some(vec!["read".into()]),
        ..Default::default()
    }))
    .unwrap();
    let key = created.key.expose().to_owned();

    // The file holds carol's session; the variable holds bob's key.
    let user = User::new(&server);
    user.login("carol@example.com");
    let me = user
        .run_with(&["whoami", "--json"], &[("KEYWARD_API_KEY", &key)], None)
        .ok()
        .json();
    assert_eq!(me["user"]["email"], "bob@example.com");
    assert_eq!(me["auth"]["method"], "api_key");
    assert_eq!(me["auth"]["key_id"], created.view.id.as_str());
    let run = user.run(&["whoami"]).ok();
    assert!(run.stdout.contains("carol@example.com"), "{}", run.stdout);

    // `login` with KEYWARD_API_KEY checks the key and stores it, with no browser step.
    let ci = User::new(&server);
    let run = ci
        .run_with(&["login"], &[("KEYWARD_API_KEY", &key)], None)
        .ok();
    assert!(run.stdout.contains("bob@example.com"), "{}", run.stdout);
    assert_eq!(ci.credentials()["api_key"], key.as_str());
    #[cfg(unix)]
    assert_eq!(mode(&ci.credentials_path()), 0o600);
    let run = ci.run(&["whoami"]).ok();
    assert!(run.stdout.contains("bob@example.com"), "{}", run.stdout);

    // Once revoked, the key fails with a message that says what to do.
    block_on(session.revoke_key(&created.view.id)).unwrap();
    let run = user
        .run_with(&["whoami"], &[("KEYWARD_API_KEY", &key)], None)
        .failed(1);
    assert!(
        run.stderr.contains("KEYWARD_API_KEY") && run.stderr.contains("revoked"),
        "{}",
        run.stderr
    );
    let run = ci.run(&["keys", "list"]).failed(1);
    assert!(
        run.stderr.contains("revoked") && run.stderr.contains("keyward login"),
        "{}",
        run.stderr
    );
    let run = ci
        .run_with(&["login"], &[("KEYWARD_API_KEY", &key)], None)
        .failed(1);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
}

#[test]
fn failures_exit_non_zero_and_say_what_to_do() {
    let server = Server::start();
    server.register("dan@example.com");
    let user = User::new(&server);

    for args in [&["whoami"][..], &["keys", "list"], &["keys", "create", "x"]] {
        let run = user.run(args).failed(1);
        assert!(
            run.stderr.contains("not logged in") && run.stderr.contains("keyward login"),
            "{args:?}: {}",
            run.stderr
        );
    }

    let run = user
        .run_with(
            &["login", "--email", "dan@example.com"],
            &[],
            Some("wrong password\n"),
        )
        .failed(1);
    assert!(
        run.stderr.contains("wrong email or password"),
        "{}",
        run.stderr
    );
    assert!(!user.credentials_path().exists());

    // Usage errors are clap's exit code 2.
    user.run(&["keys", "create"]).failed(2);
    user.run(&["keys", "rotate", "key_x", "--grace-period-seconds", "soon"])
        .failed(2);

    // A corrupt file is named, with the way out.
    std::fs::write(user.credentials_path(), "{not json").unwrap();
    let run = user.run(&["whoami"]).failed(1);
    assert!(
        run.stderr.contains("credentials.json") && run.stderr.contains("delete it"),
        "{}",
        run.stderr
    );

    // An unreachable server is named.
    std::fs::remove_file(user.credentials_path()).unwrap();
    let run = user
        .run_with(
            &["whoami", "--url", "http://127.0.0.1:9"],
            &[("KEYWARD_API_KEY", "kw_whatever")],
            None,
        )
        .failed(1);
    assert!(run.stderr.contains("http://127.0.0.1:9"), "{}", run.stderr);

    // Logging out with nothing stored is fine.
    user.run(&["logout"]).ok();
}

/// Past the 2-second access tokens of the refresh tests. Not 1 second: `exp` is whole seconds
/// (`iat` + TTL, `iat` rounded down), so a 1-second token issued late in a second can be
/// expired by the time the retry that follows its refresh arrives.
const TOKEN_EXPIRES: Duration = Duration::from_millis(3100);

#[test]
fn an_expired_access_token_is_refreshed_and_the_new_pair_saved() {
    let server = Server::start_with(&[("KEYWARD_SESSIONS__ACCESS_TOKEN_TTL_SECONDS", "2")]);
    server.register("eve@example.com");
    let user = User::new(&server);
    user.login("eve@example.com");
    let before = user.credentials();
    std::thread::sleep(TOKEN_EXPIRES);

    let run = user.run(&["whoami"]).ok();
    assert!(run.stdout.contains("eve@example.com"), "{}", run.stdout);
    let after = user.credentials();
    assert_ne!(after["access_token"], before["access_token"]);
    assert_ne!(after["refresh_token"], before["refresh_token"]);
    assert_eq!(after["url"], server.url.as_str());
    #[cfg(unix)]
    assert_eq!(mode(&user.credentials_path()), 0o600);

    // The saved refresh token is the live one: the next expiry is survived too.
    std::thread::sleep(TOKEN_EXPIRES);
    user.run(&["keys", "list"]).ok();
    assert_ne!(user.credentials()["refresh_token"], after["refresh_token"]);
}

#[test]
fn a_refresh_lost_to_another_process_takes_the_pair_it_saved() {
    let server = Server::start_with(&[("KEYWARD_SESSIONS__ACCESS_TOKEN_TTL_SECONDS", "2")]);
    server.register("hal@example.com");
    let user = User::new(&server);
    user.login("hal@example.com");
    // A long-running program holds the stored pair in memory.
    let stored = keyward_client::CredentialsFile::load(&user.credentials_path())
        .unwrap()
        .unwrap();
    let program = Client::builder(&server.url)
        .credentials(stored.credentials())
        .persist(user.credentials_path())
        .build()
        .unwrap();
    std::thread::sleep(TOKEN_EXPIRES);
    // A `keyward` command refreshes first and spends the refresh token the program holds.
    user.run(&["whoami"]).ok();
    let saved = user.credentials();

    // The program's own refresh is refused; it takes the pair the command saved.
    let me = block_on(program.me()).unwrap();
    assert_eq!(me.user.email, "hal@example.com");
    assert_eq!(
        program
            .credentials()
            .refresh_token
            .as_ref()
            .map(keyward_client::Secret::expose),
        saved["refresh_token"].as_str()
    );
}

/// Runs `keyward login` (the device flow) in the background and returns it with the user
/// code it printed, and the rest of its stderr once it exits.
fn start_device_login(user: &User) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = user
        .command(&["login"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyward login");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let code = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no user code in: {seen}"
        );
        seen.push_str(&line);
        let word = line.trim();
        if word.len() == 9 && word.as_bytes()[4] == b'-' {
            break word.to_owned();
        }
    };
    assert!(seen.contains("/console/device"), "{seen}");
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    (child, code, rest)
}

#[test]
fn device_login_stores_the_approved_key() {
    let server = Server::start_with(&[("KEYWARD_DEVICE__INTERVAL_SECONDS", "1")]);
    let session = server.register("fay@example.com");
    let user = User::new(&server);

    let (child, code, _) = start_device_login(&user);
    block_on(session.approve_device(&code.to_lowercase(), true)).unwrap();
    let run = Run::from(child.wait_with_output().unwrap()).ok();
    assert!(run.stdout.contains("fay@example.com"), "{}", run.stdout);
    let stored = user.credentials();
    assert!(stored["api_key"].as_str().unwrap().starts_with("kw_"));
    #[cfg(unix)]
    assert_eq!(mode(&user.credentials_path()), 0o600);
    let me = user.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["user"]["email"], "fay@example.com");
    assert_eq!(me["auth"]["method"], "api_key");
    let keys = user.run(&["keys", "list", "--json"]).ok().json();
    assert_eq!(keys["keys"][0]["name"], "cli");
    // logout forgets the key, and says it still works.
    let run = user.run(&["logout"]).ok();
    assert!(run.stderr.contains("keyward keys revoke"), "{}", run.stderr);
    assert!(!user.credentials_path().exists());

    // A denied login fails with a clear message and stores nothing new.
    let other = User::new(&server);
    let (child, code, rest) = start_device_login(&other);
    block_on(session.approve_device(&code, false)).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = rest.join().unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("denied") && stderr.contains("keyward login"),
        "{stderr}"
    );
    assert!(!other.credentials_path().exists());
}

#[test]
fn the_stored_url_is_used_and_the_credentials_stay_with_it() {
    let server = Server::start();
    server.register("gus@example.com");
    let user = User::new(&server);
    let without_url = |args: &[&str], stdin: Option<&str>| {
        let mut command = user.command(args);
        command.env_remove("KEYWARD_URL");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        Run::from(child.wait_with_output().unwrap())
    };
    without_url(
        &["login", "--url", &server.url, "--email", "gus@example.com"],
        Some(PASSWORD),
    )
    .ok();
    let run = without_url(&["whoami"], None).ok();
    assert!(run.stdout.contains("gus@example.com"), "{}", run.stdout);
    assert!(run.stdout.contains(&server.url), "{}", run.stdout);

    // Another server never receives them: there, the user is not logged in.
    let run = without_url(&["whoami", "--url", "http://127.0.0.1:9"], None).failed(1);
    assert!(
        run.stderr.contains("not logged in to http://127.0.0.1:9"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_shows_examples_for_each_client_command() {
    for args in [
        &["login", "--help"][..],
        &["logout", "--help"],
        &["whoami", "--help"],
        &["keys", "--help"],
        &["keys", "create", "--help"],
        &["keys", "list", "--help"],
        &["keys", "revoke", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "update", "--help"],
        &["keys", "disable", "--help"],
        &["keys", "enable", "--help"],
        &["usage", "--help"],
        &["leaks", "check", "--help"],
    ] {
        let output = keyward().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}");
        assert!(text.contains("Example"), "{args:?}: {text}");
        assert!(text.contains("--json"), "{args:?}: {text}");
    }
    let output = keyward().args(["login", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for word in ["--email", "--url", "KEYWARD_API_KEY", "credentials.json"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn keys_update_disable_and_enable_change_a_key() {
    let server = Server::start();
    server.register("ada@example.com");
    let user = User::new(&server);
    user.login("ada@example.com");
    let created = user
        .run(&[
            "keys",
            "create",
            "svc",
            "--rate-limit",
            "100/60",
            "--credits",
            "50",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        created["rate_limit"],
        serde_json::json!({"requests": 100, "per_seconds": 60})
    );
    assert_eq!(created["credits"], serde_json::json!({"remaining": 50}));
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();

    let run = user
        .run(&[
            "keys",
            "update",
            &id,
            "--name",
            "prod",
            "--refill",
            "500/monthly",
            "--credits",
            "500",
        ])
        .ok();
    assert!(run.stdout.contains("Updated key"), "{}", run.stdout);
    assert!(run.stdout.contains("100 per 60 s"), "{}", run.stdout);
    assert!(
        run.stdout.contains("500 left, refilled to 500 monthly"),
        "{}",
        run.stdout
    );

    let run = user.run(&["keys", "disable", &id]).ok();
    assert!(
        run.stdout.contains("state:      disabled"),
        "{}",
        run.stdout
    );
    let verify = |key: &str| {
        let client = Client::builder(&server.url).build().unwrap();
        block_on(client.verify_key(key, &[])).unwrap().code
    };
    assert_eq!(verify(&key).as_str(), "DISABLED");
    let listed = user.run(&["keys", "list"]).ok();
    assert!(listed.stdout.contains("disabled"), "{}", listed.stdout);
    let enabled = user.run(&["keys", "enable", &id, "--json"]).ok().json();
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["name"], "prod");
    assert_eq!(verify(&key).as_str(), "VALID");

    let cleared = user
        .run(&[
            "keys",
            "update",
            &id,
            "--no-rate-limit",
            "--no-credits",
            "--json",
        ])
        .ok()
        .json();
    assert!(
        cleared["rate_limit"].is_null() && cleared["credits"].is_null(),
        "{cleared}"
    );

    // Bad input: said on one line, exit 2 for the flags clap refuses, 1 for the API's 422.
    let run = user
        .run(&["keys", "update", &id, "--rate-limit", "fast"])
        .failed(2);
    assert!(run.stderr.contains("REQUESTS/SECONDS"), "{}", run.stderr);
    let run = user
        .run(&["keys", "update", &id, "--refill", "5/hourly"])
        .failed(2);
    assert!(run.stderr.contains("daily or monthly"), "{}", run.stderr);
    let run = user
        .run(&["keys", "update", &id, "--rate-limit", "0/60"])
        .failed(1);
    assert!(run.stderr.contains("rate_limit"), "{}", run.stderr);
    user.run(&["keys", "disable", "key_doesnotexist000000000000"])
        .failed(1);
}

#[test]
fn usage_reports_the_verify_calls_as_numbers_and_a_chart() {
    let server = Server::start();
    let session = server.register("fay@example.com");
    let created = block_on(session.create_key(keyward_client::CreateKeyRequest {
        name: "metered".into(),
        scopes: Some(vec!["read".into()]),
        ..Default::default()
    }))
    .unwrap();
    let key = created.key.expose().to_owned();
    let key_id = created.view.id.clone();
    let user = User::new(&server);
    user.login("fay@example.com");

    // Nothing metered yet: said plainly, with no chart.
    let run = user.run(&["usage", "--days", "7"]).ok();
    assert!(
        run.stdout
            .starts_with("No metered requests in the last 7 days"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('█'), "{}", run.stdout);

    // 3 succeed; 2 ask for a scope the key lacks.
    let verifier = Client::builder(&server.url).build().unwrap();
    for scopes in [
        &[][..],
        &["read"],
        &[],
        &["billing:write"],
        &["billing:write"],
    ] {
        let answer = block_on(verifier.verify_key(&key, scopes)).unwrap();
        let expected = if scopes.is_empty() || scopes == ["read"] {
            VerifyCode::Valid
        } else {
            VerifyCode::InsufficientScope
        };
        assert_eq!(answer.code, expected, "{scopes:?}");
    }

    // Events are written in batches: wait until all five show.
    let started = Instant::now();
    let report = loop {
        let report = user.run(&["usage", "--json"]).ok().json();
        if report["executions"] == 5 {
            break report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "usage did not reach 5: {report}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(report["succeeded"], 3, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    assert_eq!(report["in_flight"], 0, "{report}");
    assert_eq!(report["days"].as_array().unwrap().len(), 30, "{report}");
    let today = report["to"].as_str().unwrap().to_owned();
    let week = user.run(&["usage", "--days", "7", "--json"]).ok().json();
    assert_eq!(week["days"].as_array().unwrap().len(), 7, "{week}");
    assert_eq!(week["executions"], 5, "{week}");

    // Text: the summary, one line per day, no colour (NO_COLOR is set, and stdout is a pipe).
    let run = user.run(&["usage", "--days", "7"]).ok();
    let text = &run.stdout;
    assert!(
        text.contains("5 executions, 60.0% succeeded, 2 failed, average"),
        "{text}"
    );
    assert!(text.contains("tenant of fay@example.com"), "{text}");
    let chart: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.get(..10).is_some_and(|date| {
                date.bytes().enumerate().all(|(at, c)| {
                    if at == 4 || at == 7 {
                        c == b'-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
            })
        })
        .collect();
    assert_eq!(chart.len(), 7, "{text}");
    let today_line = chart.last().unwrap();
    assert!(today_line.starts_with(&today), "{text}");
    assert!(today_line.ends_with("3 ok, 2 failed"), "{text}");
    assert!(
        today_line.contains('█') && today_line.contains('▒'),
        "{text}"
    );
    assert!(chart[0].ends_with(" 0"), "{text}");
    assert!(text.contains("█ succeeded"), "{text}");
    assert!(!text.contains("\x1b["), "{text}");
    assert!(!text.contains(&key), "no secret is printed");

    // One key: the same counts.
    let one = user.run(&["usage", "--key", &key_id, "--json"]).ok().json();
    assert_eq!(one["executions"], 5, "{one}");
    assert_eq!(one["succeeded"], 3, "{one}");
    assert_eq!(one["failed"], 2, "{one}");
    let run = user.run(&["usage", "--key", &key_id]).ok();
    assert!(
        run.stdout.contains(&format!("key {key_id}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("5 executions"), "{}", run.stdout);

    // An unknown key fails with a message; bad day counts are usage errors.
    let run = user
        .run(&["usage", "--key", "key_doesnotexist0000000000"])
        .failed(1);
    assert!(run.stderr.contains("keyward keys list"), "{}", run.stderr);
    for days in ["0", "91", "many"] {
        let run = user.run(&["usage", "--days", days]).failed(2);
        assert!(run.stderr.contains("--days"), "{days}: {}", run.stderr);
    }
}

// ---------------------------------------------------------------- keyward admin

impl Server {
    /// The server's database, for `keyward admin --database-url`.
    fn database_url(&self) -> String {
        format!("sqlite://{}/k.db", self._dir.path().display())
    }
}

/// `keyward admin ARGS…` as the operator runs it: no config directory, no server URL.
fn admin(args: &[&str]) -> Run {
    let output = keyward()
        .arg("admin")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keyward admin");
    Run::from(output)
}

#[test]
fn admin_disable_user_shuts_a_user_out_and_enable_user_lets_them_back() {
    let server = Server::start();
    let database = server.database_url();
    let session = server.register("ada@example.com");
    let created = block_on(session.create_key(keyward_client::CreateKeyRequest {
        name: "ci".into(),
        ..Default::default()
    }))
    .unwrap();
    let key = created.key.expose().to_owned();
    let verifier = Client::builder(&server.url).build().unwrap();
    let verify = |key: &str| block_on(verifier.verify_key(key, &[])).unwrap().code;
    assert_eq!(verify(&key), VerifyCode::Valid);

    let disabled = admin(&[
        "disable-user",
        "Ada@Example.com",
        "--database-url",
        &database,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(disabled["email"], "ada@example.com", "{disabled}");
    assert_eq!(disabled["disabled"], true, "{disabled}");
    assert_eq!(disabled["already_disabled"], false, "{disabled}");
    assert_eq!(disabled["sessions_revoked"], 1, "{disabled}");
    assert_eq!(disabled["keys_stopped"], 1, "{disabled}");
    assert_eq!(verify(&key), VerifyCode::NotFound);
    let refused = block_on(session.me()).unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let login = block_on(
        Client::builder(&server.url)
            .build()
            .unwrap()
            .login("ada@example.com", PASSWORD),
    )
    .unwrap_err();
    assert_eq!(login.code(), Some("forbidden"), "{login}");

    // Text for people says what happened and how to undo it.
    let run = admin(&[
        "disable-user",
        "ada@example.com",
        "--database-url",
        &database,
    ])
    .ok();
    assert!(run.stdout.contains("already disabled"), "{}", run.stdout);
    assert!(run.stdout.contains("enable-user"), "{}", run.stdout);

    let run = admin(&[
        "enable-user",
        "ada@example.com",
        "--database-url",
        &database,
    ])
    .ok();
    assert!(run.stdout.contains("is enabled"), "{}", run.stdout);
    assert_eq!(verify(&key), VerifyCode::Valid);
    block_on(
        Client::builder(&server.url)
            .build()
            .unwrap()
            .login("ada@example.com", PASSWORD),
    )
    .unwrap();
    let again = admin(&[
        "enable-user",
        "ada@example.com",
        "--database-url",
        &database,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(again["was_disabled"], false, "{again}");

    // An unknown user fails (1); a malformed email is a usage error (2).
    let run = admin(&[
        "disable-user",
        "eve@example.com",
        "--database-url",
        &database,
    ])
    .failed(1);
    assert!(
        run.stderr.contains("no user has the email eve@example.com"),
        "{}",
        run.stderr
    );
    let run = admin(&["enable-user", "not-an-email", "--database-url", &database]).failed(2);
    assert!(run.stderr.contains("not-an-email"), "{}", run.stderr);
    admin(&["disable-user"]).failed(2);
}

#[test]
fn admin_rotate_signing_key_reads_the_servers_config_and_retires_the_old_key() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyward.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[sessions]\naccess_token_ttl_seconds = 600\n",
            server.database_url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let first = admin(&["rotate-signing-key", "--config", config, "--json"])
        .ok()
        .json();
    let kid = first["kid"].as_str().unwrap().to_owned();
    assert_eq!(first["retired"].as_array().unwrap().len(), 1, "{first}");
    assert_ne!(first["retired"][0], kid.as_str());
    assert_eq!(first["dropped"], serde_json::json!([]));
    assert_eq!(first["signing_within_seconds"], 30, "{first}");
    // The access-token lifetime comes from the config file.
    assert_eq!(
        first["retired_keys_verify_for_seconds"].as_i64(),
        Some(600 + keyward_core::RETIRED_KEY_GRACE_SECONDS),
        "{first}"
    );

    let run = admin(&["rotate-signing-key", "--config", config]).ok();
    assert!(run.stdout.starts_with("New signing key "), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("Retired {kid}")),
        "{}",
        run.stdout
    );

    // A setting that does not exist is a usage error, named.
    std::fs::write(dir.path().join("bad.toml"), "[sessions]\nnope = 1\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let run = admin(&["rotate-signing-key", "--config", bad.to_str().unwrap()]).failed(2);
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
}

/// Random base62 strings of a key's exact shape (prefix and length), none with a valid
/// checksum: what `leaks check` must not report.
fn lookalikes(count: usize) -> String {
    use std::fmt::Write as _;
    let format = keyward_core::KeyFormat::default();
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut text = String::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut written = 0;
    while written < count {
        let mut candidate = String::from("kw_");
        for _ in 0..38 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            candidate.push(alphabet[(seed % 62) as usize] as char);
        }
        if format.matches(&candidate) {
            continue;
        }
        writeln!(text, "token = \"{candidate}\"").unwrap();
        written += 1;
    }
    text
}

#[test]
fn leaks_check_finds_keys_by_checksum_and_tells_the_live_ones() {
    let server = Server::start();
    let session = server.register("gil@example.com");
    let live = block_on(session.create_key(keyward_client::CreateKeyRequest {
        name: "leaky".into(),
        ..Default::default()
    }))
    .unwrap();
    let live_key = live.key.expose().to_owned();
    let revoked = block_on(session.create_key(keyward_client::CreateKeyRequest {
        name: "old".into(),
        ..Default::default()
    }))
    .unwrap();
    block_on(session.revoke_key(&revoked.view.id)).unwrap();
    let dead_key = revoked.key.expose().to_owned();

    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
    std::fs::write(root.join("src/noise.txt"), lookalikes(500)).unwrap();
    std::fs::write(
        root.join("src/config.env"),
        format!("# settings\nKEYWARD_API_KEY={live_key}\nOLD={dead_key}\n"),
    )
    .unwrap();
    // Skipped: .git, node_modules and binary files.
    std::fs::write(root.join(".git/config"), &live_key).unwrap();
    std::fs::write(root.join("node_modules/pkg/x.js"), &live_key).unwrap();
    let mut binary = vec![0u8, 1, 2];
    binary.extend_from_slice(live_key.as_bytes());
    std::fs::write(root.join("src/blob.bin"), binary).unwrap();

    let user = User::new(&server);
    let root_arg = root.to_str().unwrap();

    // Random strings of the right shape alone: nothing found, exit 0.
    let run = user
        .run(&[
            "leaks",
            "check",
            root.join("src/noise.txt").to_str().unwrap(),
        ])
        .ok();
    assert!(
        run.stdout.contains("no Keyward key found"),
        "{}",
        run.stdout
    );

    // The live key and the revoked one, each once, masked; exit 1 for the live one.
    let run = user.run(&["leaks", "check", root_arg]).failed(1);
    assert!(!run.stdout.contains(&live_key) && !run.stderr.contains(&live_key));
    assert!(!run.stdout.contains(&dead_key));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].contains("config.env:2:"), "{}", lines[0]);
    assert!(
        lines[0].contains(&live_key[..8]) && lines[0].ends_with("LIVE"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("config.env:3:") && lines[1].ends_with("not live"),
        "{}",
        lines[1]
    );
    assert!(run.stderr.contains("1 live key found"), "{}", run.stderr);

    let run = user.run(&["leaks", "check", root_arg, "--json"]).failed(1);
    let findings = run.json();
    let findings = findings.as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[0]["live"], true);
    assert_eq!(findings[1]["live"], false);
    assert!(findings[0]["masked"].as_str().unwrap().contains('…'));

    // A key its owner disabled is still live: it can be enabled again.
    let disable = keyward_client::UpdateKeyRequest {
        enabled: Some(false),
        ..Default::default()
    };
    block_on(session.update_key(&live.view.id, &disable)).unwrap();
    let run = user.run(&["leaks", "check", root_arg, "--json"]).failed(1);
    assert_eq!(run.json()[0]["live"], true, "{}", run.stdout);

    // A deployment's own format: no key of that shape here.
    user.run(&[
        "leaks",
        "check",
        root_arg,
        "--prefix",
        "ax_",
        "--alphabet",
        "hex",
        "--length",
        "48",
        "--no-checksum",
    ])
    .ok();

    // --report: the live key is revoked by the server; it is still exit 1 (it was live).
    let run = user
        .run(&["leaks", "check", root_arg, "--report"])
        .failed(1);
    assert!(
        run.stdout.contains("reported and revoked"),
        "{}",
        run.stdout
    );
    let answer = block_on(
        Client::builder(&server.url)
            .build()
            .unwrap()
            .verify_key(&live_key, &[]),
    )
    .unwrap();
    assert_eq!(answer.code, VerifyCode::Revoked);
    // Now nothing is live.
    user.run(&["leaks", "check", root_arg]).ok();

    // Bad usage.
    user.run(&["leaks", "check"]).failed(2);
    let run = user
        .run(&["leaks", "check", root.join("missing").to_str().unwrap()])
        .failed(1);
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
    let run = user
        .run(&["leaks", "check", root_arg, "--length", "8"])
        .failed(1);
    assert!(run.stderr.contains("key format"), "{}", run.stderr);
}
