//! [`Failure`] and the messages of failed calls: what went wrong, then what to do next.

use std::fmt;

use keyward_client::Error;

use super::{Context, Source};

/// A failed command: one message for people. Its exit code is 1.
#[derive(Debug)]
pub struct Failure {
    message: String,
}

impl Failure {
    pub fn new(message: String) -> Self {
        Self { message }
    }

    /// A client error that happened before any server was involved (e.g. the credentials
    /// file); its message already says what to do.
    pub fn from_client(error: Error) -> Self {
        Self::new(error.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `error` in words, with the next step.
pub fn describe(context: &Context, error: Error) -> Failure {
    let url = &context.url;
    let message = match &error {
        Error::Api {
            status,
            code,
            message,
            request_id,
            errors,
        } => {
            // "Not found.: list your keys" reads badly: the next step follows a bare message.
            let message = message.trim_end_matches('.');
            let next = match code.as_str() {
                "missing_credentials" => format!("not logged in to {url}: run `keyward login`"),
                "invalid_api_key" => match context.source {
                    Source::Environment => "the server refused the API key in KEYWARD_API_KEY \
                         (invalid, expired or revoked): set a valid key, or unset it and run \
                         `keyward login`"
                        .to_owned(),
                    _ => "the server refused the stored API key (invalid, expired or revoked): \
                          run `keyward login` again"
                        .to_owned(),
                },
                "invalid_token" | "token_expired" => {
                    format!("your session on {url} has ended: run `keyward login` again")
                }
                "invalid_credentials" => "wrong email or password: check them and run \
                     `keyward login --email EMAIL` again"
                    .to_owned(),
                "insufficient_scope" => format!(
                    "{message}: use a key with more scopes, or log in with a password \
                     (`keyward login --email EMAIL`)"
                ),
                "session_required" => format!(
                    "{message}: this needs a password session: run `keyward login --email EMAIL`"
                ),
                "not_found" => format!("{message}: list your keys with `keyward keys list`"),
                "key_limit_reached" => format!(
                    "{message}: revoke a key you no longer need with `keyward keys revoke ID`"
                ),
                "validation_failed" if !errors.is_empty() => {
                    let fields: Vec<String> = errors
                        .iter()
                        .map(|field| format!("{}: {}", field.field, field.message))
                        .collect();
                    format!("{message} ({})", fields.join("; "))
                }
                "rate_limited" => format!("{message}: wait a little and try again"),
                _ if *status >= 500 => format!(
                    "{message}: the server at {url} failed ({code}); try again, and report the \
                     request id if it goes on"
                ),
                _ => format!("{message} ({code})"),
            };
            match request_id {
                Some(id) => format!("{next} [request {id}]"),
                None => next,
            }
        }
        Error::Transport(_) => format!(
            "{error}: is a Keyward server running there? Set the URL with --url or KEYWARD_URL"
        ),
        Error::Decode { .. } => {
            format!("{error}: is {url} a Keyward server? Set the URL with --url or KEYWARD_URL")
        }
        Error::InvalidBaseUrl { .. } => {
            format!("{error}: give a URL such as http://127.0.0.1:7777 with --url or KEYWARD_URL")
        }
        _ => error.to_string(),
    };
    Failure::new(message)
}
