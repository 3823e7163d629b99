//! `keyward keys create | list | revoke | rotate`.

use clap::{Args, Subcommand};
use keyward_client::{CreateKeyRequest, CreatedKey, KeyStatus, KeyView};

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
        } => {
            let request = CreateKeyRequest {
                name,
                description,
                expires_in_days,
                scopes: (!scopes.is_empty()).then_some(scopes),
                meta: None,
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
                match key.status {
                    KeyStatus::Active => "active",
                    KeyStatus::Expired => "expired",
                    KeyStatus::Revoked => "revoked",
                }
                .to_owned(),
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
