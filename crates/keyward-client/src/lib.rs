//! A Rust client for the Keyward HTTP API (SPEC §4, §6).
//!
//! - [`Client`]: typed async methods over the API: accounts and sessions
//!   ([`register`](Client::register), [`login`](Client::login), [`me`](Client::me)…), API keys
//!   ([`create_key`](Client::create_key), [`list_keys`](Client::list_keys),
//!   [`rotate_key`](Client::rotate_key)…) and verification ([`verify_key`](Client::verify_key)).
//!   Request and response bodies are the [`keyward_proto`] wire types, re-exported here.
//! - [`ClientBuilder`]: base URL, timeout and credentials, from arguments
//!   ([`Client::builder`]) or the environment ([`Client::from_env`]).
//! - [`Credentials`]: an API key and/or a session's token pair, shared by a client and its
//!   clones; [`Client::credentials`] hands them out for saving.
//! - [`CredentialsFile`]: `credentials.json` (SPEC §5) in `$KEYWARD_CONFIG_DIR`, else
//!   `$XDG_CONFIG_HOME/keyward`, else `~/.config/keyward`; mode 0600, written atomically.
//!   [`ClientBuilder::from_env`] reads it; [`ClientBuilder::persist`] keeps it up to date,
//!   including after an automatic refresh.
//! - The device login of RFC 8628: [`Client::device_code`], [`Client::device_token`]
//!   ([`DevicePoll`]) and [`Client::approve_device`].
//! - [`Error`]: an [`Error::Api`] carries the status, stable `code`, message and request id of
//!   the server's problem body (SPEC §3).
//!
//! Credentials travel only as `Authorization: Bearer`, never in a URL, and never show in
//! `Debug` output. When the server answers `token_expired` and the client holds a refresh
//! token, the client refreshes once and retries the request once, so a long-running program
//! logged in with a password keeps working past the 15-minute access-token lifetime.
//!
//! ```no_run
//! use keyward_client::{Client, CreateKeyRequest, VerifyCode};
//!
//! # async fn example() -> Result<(), keyward_client::Error> {
//! let client = Client::builder("http://127.0.0.1:7777").build()?;
//! client.login("ada@example.com", "correct horse battery staple").await?;
//!
//! let created = client
//!     .create_key(CreateKeyRequest {
//!         name: "ci".into(),
//!         scopes: Some(vec!["read".into()]),
//!         ..CreateKeyRequest::default()
//!     })
//!     .await?;
//! // `created.key` is shown once: store it now.
//!
//! let answer = client.verify_key(created.key.expose(), &["read"]).await?;
//! assert_eq!(answer.code, VerifyCode::Valid);
//!
//! match client.get_key("key_unknown").await {
//!     Err(error) if error.has_code(keyward_client::ErrorCode::NotFound) => {}
//!     other => println!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

mod client;
mod credentials;
mod device;
mod error;

pub use client::{Client, ClientBuilder, DEFAULT_BASE_URL, DEFAULT_TIMEOUT, DEFAULT_USER_AGENT};
pub use credentials::{Credentials, CredentialsFile, CREDENTIALS_FILE_NAME};
pub use device::DevicePoll;
pub use error::{Error, Result};

/// The wire types, for everything this crate does not re-export by name.
pub use keyward_proto as proto;
pub use keyward_proto::{
    AuthInfo, AuthMethod, CreateKeyRequest, CreatedKey, CreditsSpec, CreditsState,
    DeviceCodeResponse, DeviceTokenResponse, ErrorCode, FieldError, KeyStatus, KeyView, MeResponse,
    RateLimitSpec, RateLimitState, RefillInterval, RefillSpec, RegisterRequest, RegisterResponse,
    Secret, TenantRef, TenantView, TokenPair, UpdateKeyRequest, UsageDay, UsageResponse, UserView,
    VerifyCode, VerifyResponse,
};
pub use keyward_proto::{
    CreatedWebhook, DeliveryAttemptView, DeliveryStatus, DeliveryView, LeakLabel,
    LeakReportResponse, WebhookView,
};
