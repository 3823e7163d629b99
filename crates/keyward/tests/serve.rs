//! `keyward serve` as a user runs it: the real binary, its exit codes and messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn keyward() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    // The suite's own environment must not leak settings into the binary under test.
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// Runs `keyward serve` expecting it to refuse to start; returns its stderr.
fn refused(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = keyward();
    command.current_dir(dir).arg("serve").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyward");
    // A server that wrongly starts must fail the test, not hang it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("keyward serve {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "expected exit code 2; stderr: {stderr}"
    );
    stderr
}

#[test]
fn bad_settings_stop_start_up_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused(dir.path(), &[], &[("KEYWARD_KEYS__LENGTH", "10")]);
    assert!(stderr.contains("keys.length"), "{stderr}");
    assert!(stderr.contains("128"), "{stderr}");

    let stderr = refused(dir.path(), &["--listen", "not-an-address"], &[]);
    assert!(stderr.contains("listen"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[sessions]\naudiense = \"x\"\n",
    )
    .unwrap();
    let stderr = refused(dir.path(), &["--config", "bad.toml"], &[]);
    assert!(
        stderr.contains("sessions.audiense") && stderr.contains("unknown setting"),
        "{stderr}"
    );

    std::fs::write(
        dir.path().join("typed.toml"),
        "[keys]\nchecksum = \"yes\"\n",
    )
    .unwrap();
    let stderr = refused(dir.path(), &["--config", "typed.toml"], &[]);
    assert!(stderr.contains("keys.checksum"), "{stderr}");

    let stderr = refused(dir.path(), &["--config", "missing.toml"], &[]);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    // Nothing was created by the refused starts.
    assert!(!dir.path().join("keyward.db").exists());
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[cfg(unix)]
#[test]
fn serves_on_the_default_database_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = keyward()
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYWARD_NOT_A_SETTING", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyward");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let mut warned = false;
    let addr = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        let line = lines.next().expect("server output").unwrap();
        warned |= line.contains("KEYWARD_NOT_A_SETTING");
        if let Some(rest) = line.split("keyward listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    assert!(
        warned,
        "an unknown KEYWARD_ variable is logged as a warning"
    );
    let response = http_get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        dir.path().join("keyward.db").exists(),
        "sqlite://keyward.db created on first start"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|line| line.contains("keyward stopped")),
        "{rest:?}"
    );
}

#[test]
fn help_explains_the_commands() {
    let output = keyward().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(text.contains("serve"), "{text}");
    let output = keyward().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in ["--listen", "--database-url", "--config"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn migrate_applies_the_schema_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyward()
        .current_dir(dir.path())
        .args(["migrate", "--database-url", "sqlite://fresh.db"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("sqlite://fresh.db is migrated"), "{stdout}");
    assert!(dir.path().join("fresh.db").exists());
    // Running it again is a no-op that still succeeds.
    let again = keyward()
        .current_dir(dir.path())
        .args(["migrate", "--database-url", "sqlite://fresh.db"])
        .output()
        .unwrap();
    assert!(again.status.success());
}

#[test]
fn migrate_on_postgres_through_the_environment() {
    let Ok(admin_url) = std::env::var("KEYWARD_TEST_POSTGRES_URL") else {
        eprintln!("PostgreSQL part skipped: KEYWARD_TEST_POSTGRES_URL is not set");
        return;
    };
    // A throwaway database beside the admin one, made and dropped with psql.
    let name = format!("keyward_cli_{}", std::process::id());
    let url = match admin_url.rsplit_once('/') {
        Some((root, _)) => format!("{root}/{name}"),
        None => panic!("KEYWARD_TEST_POSTGRES_URL has no database part: {admin_url}"),
    };
    let psql = |sql: &str| {
        Command::new("psql")
            .args([admin_url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .status()
            .expect("psql")
    };
    assert!(psql(&format!("CREATE DATABASE {name}")).success());
    let output = keyward()
        .args(["migrate"])
        .env("KEYWARD_DATABASE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let tables = Command::new("psql")
        .args([url.as_str(), "-Atc", "SELECT count(*) FROM api_keys"])
        .output()
        .expect("psql");
    assert!(psql(&format!("DROP DATABASE {name} WITH (FORCE)")).success());
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is migrated"), "{stdout}");
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "0",
        "api_keys exists and is empty"
    );
}

#[test]
fn an_unreachable_database_fails_fast_with_a_clear_message() {
    let started = Instant::now();
    let output = keyward()
        .args([
            "migrate",
            "--database-url",
            "postgres://keyward@127.0.0.1:1/keyward",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("127.0.0.1:1") && stderr.contains("unavailable"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
