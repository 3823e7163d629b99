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
