//! `keyward leaks check FILE_OR_DIR…`: finds Keyward keys in files (a pre-commit or CI step)
//! and asks the server which are live.
//!
//! Only strings of the key format count: the prefix, the alphabet, the length and, above all,
//! the CRC-32 checksum (SPEC §1), so random strings of the right shape are not reported. Each
//! distinct key is checked once at `POST /v1/keys/verify` with `cost: 0` (no credential needed,
//! no credit spent); `--report` sends the live ones to `POST /v1/leaks`, which revokes them.
//! A key is only ever printed masked. Exit status 1 when a live key was found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use keyward_client::VerifyCode;
use keyward_core::{KeyAlphabet, KeyFormat};
use serde::Serialize;

use super::{ClientArgs, Context, Failure};

/// Files larger than this are skipped.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Folders never walked.
pub const SKIPPED_FOLDERS: [&str; 3] = [".git", "target", "node_modules"];

#[derive(Args, Debug)]
pub struct LeaksArgs {
    #[command(subcommand)]
    pub command: LeaksCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum LeaksCommand {
    /// Find Keyward keys in files and folders and tell which are live (exit status 1 if any)
    #[command(after_help = "Examples:\n  \
        keyward leaks check .                       # this repository, before a commit\n  \
        keyward leaks check build/ logs/app.log --json\n  \
        keyward leaks check . --report              # revoke the live keys found\n  \
        keyward leaks check . --prefix ax_ --alphabet hex --length 48 --no-checksum\n\n\
        Skips .git, target and node_modules, binary files and files over 10 MiB. Keys are \
        printed masked. Exit codes: 0 no live key, 1 a live key was found (or the check \
        failed), 2 usage error.")]
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Files and folders to search
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// The deployment's key prefix (keys.prefix)
    #[arg(long, default_value = "kw_")]
    pub prefix: String,
    /// The deployment's key alphabet (keys.alphabet): base62 or hex
    #[arg(long, default_value = "base62")]
    pub alphabet: String,
    /// Random characters in a key body (keys.length)
    #[arg(long, default_value_t = 32)]
    pub length: usize,
    /// The deployment's keys carry no checksum (keys.checksum = false)
    #[arg(long)]
    pub no_checksum: bool,
    /// Report the live keys found to the server as leaked (it revokes them)
    #[arg(long)]
    pub report: bool,
}

/// One key found, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub masked: String,
    pub live: bool,
    /// With `--report`: whether the server took the report as a live key's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<bool>,
}

pub async fn run(args: LeaksArgs) -> Result<(), Failure> {
    let LeaksCommand::Check(check) = args.command;
    let context = Context::load(&args.client)?;
    let alphabet = KeyAlphabet::parse(&check.alphabet)
        .map_err(|message| Failure::new(format!("--alphabet: {message}")))?;
    let format = KeyFormat::new(&check.prefix, alphabet, check.length, !check.no_checksum)
        .map_err(|error| Failure::new(format!("the key format: {error}")))?;
    let mut found: Vec<(String, usize, String)> = Vec::new();
    for path in &check.paths {
        if !path.exists() {
            return Err(Failure::new(format!(
                "{}: no such file or folder",
                path.display()
            )));
        }
        walk(path, &mut |file, text| {
            for (index, line) in text.lines().enumerate() {
                for key in find_keys(&format, line) {
                    found.push((file.display().to_string(), index + 1, key.to_owned()));
                }
            }
        });
    }
    let client = context.anonymous_client()?;
    // Each distinct key is asked about once.
    let mut live: BTreeMap<&str, (bool, Option<bool>)> = BTreeMap::new();
    for (file, line, key) in &found {
        if live.contains_key(key.as_str()) {
            continue;
        }
        let answer = client.check_key(key).await.map_err(|e| context.fail(e))?;
        // Live: usable now, or once its owner enables it again or its limits refill. Only an
        // unknown, expired or revoked key is harmless.
        let is_live = !matches!(
            answer.code,
            VerifyCode::NotFound | VerifyCode::Expired | VerifyCode::Revoked
        );
        let mut reported = None;
        if is_live && check.report {
            let where_found = format!("{file}:{line}");
            let report = client
                .report_leak(key, Some(&where_found))
                .await
                .map_err(|e| context.fail(e))?;
            reported = Some(report.label == keyward_client::LeakLabel::TruePositive);
        }
        live.insert(key, (is_live, reported));
    }
    let findings: Vec<Finding> = found
        .iter()
        .map(|(file, line, key)| {
            let (live, reported) = live.get(key.as_str()).copied().unwrap_or((false, None));
            Finding {
                file: file.clone(),
                line: *line,
                masked: masked(key),
                live,
                reported,
            }
        })
        .collect();
    if context.json {
        context.print_json(&findings)?;
    } else {
        for finding in &findings {
            let state = match (finding.live, finding.reported) {
                (true, Some(true)) => "LIVE, reported and revoked",
                (true, Some(false)) => "LIVE, reported (no longer live when reported)",
                (true, None) => "LIVE",
                (false, _) => "not live",
            };
            println!(
                "{}:{}: {} {state}",
                finding.file, finding.line, finding.masked
            );
        }
        if findings.is_empty() {
            println!("no Keyward key found");
        }
    }
    let live_count = live.values().filter(|(live, _)| *live).count();
    if live_count > 0 {
        let what = if check.report {
            "reported as leaked; create new keys where they were used"
        } else {
            "revoke or rotate them (`keyward keys rotate`), or run again with --report"
        };
        return Err(Failure::new(format!(
            "{live_count} live key{} found: {what}",
            if live_count == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

/// Start, `…`, end: as the API masks keys.
fn masked(key: &str) -> String {
    let start: String = key.chars().take(8).collect();
    let end: String = key
        .chars()
        .skip(key.chars().count().saturating_sub(4))
        .collect();
    format!("{start}…{end}")
}

/// The strings of `line` that have `format` (checksum included), each standing alone: not
/// preceded or followed by a letter or digit.
pub fn find_keys<'a>(format: &KeyFormat, line: &'a str) -> Vec<&'a str> {
    let bytes = line.as_bytes();
    let len = format.key_len();
    let word = |index: usize| bytes.get(index).is_some_and(|b| b.is_ascii_alphanumeric());
    let mut keys = Vec::new();
    let mut start = 0;
    while start + len <= bytes.len() {
        let at_boundary = start == 0 || !word(start - 1);
        if at_boundary
            && line.is_char_boundary(start)
            && line.is_char_boundary(start + len)
            && !word(start + len)
        {
            let candidate = &line[start..start + len];
            if format.matches(candidate) {
                keys.push(candidate);
                start += len;
                continue;
            }
        }
        start += 1;
    }
    keys
}

/// Calls `visit` with the text of every file under `path` worth searching.
fn walk(path: &Path, visit: &mut dyn FnMut(&Path, &str)) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if metadata.is_dir() {
        let skipped = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| SKIPPED_FOLDERS.contains(&name));
        if skipped {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut children: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        children.sort();
        for child in children {
            walk(&child, visit);
        }
    } else if metadata.is_file() && metadata.len() <= MAX_FILE_BYTES {
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        // A NUL byte early on: a binary file.
        if bytes.iter().take(8192).any(|&b| b == 0) {
            return;
        }
        visit(path, &String::from_utf8_lossy(&bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_with_a_valid_checksum_only() {
        let format = KeyFormat::default();
        let key = format.generate();
        let key = key.expose();
        let line = format!("API_KEY={key} # and \"{key}\"");
        assert_eq!(find_keys(&format, &line), [key, key]);
        // One character changed: the checksum no longer matches.
        let mut broken = key.to_owned();
        let last = broken.pop().unwrap();
        broken.push(if last == 'a' { 'b' } else { 'a' });
        assert!(find_keys(&format, &broken).is_empty());
        // Glued to more letters, it is not a key standing alone.
        assert!(find_keys(&format, &format!("x{key}")).is_empty());
        assert!(find_keys(&format, &format!("{key}x")).is_empty());
        assert!(find_keys(&format, "kw_ é ü").is_empty());
    }

    #[test]
    fn masks_like_the_api() {
        assert_eq!(masked("kw_abcdefghijklmnop"), "kw_abcde…mnop");
    }
}
