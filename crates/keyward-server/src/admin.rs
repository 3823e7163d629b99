//! Operator commands (`keyward admin …`), run against the server's database directly: no
//! server needs to run, and running instances hear of each change through the database (the
//! key-change feed for a disabled user's keys, the periodic reload for signing keys).
//!
//! The binary's `admin` subcommands call these; the API tests call them too, so both exercise
//! one path.

use std::sync::Arc;

use anyhow::Context as _;
use keyward_core::audit::{self, AuditEvent, AuditKind};
use keyward_core::store::{SigningKeyRotation, Store, UserDisabled};
use keyward_core::{Clock, Email};

use crate::Config;

/// Opens (and migrates, as `serve` would) the database that `config` names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    keyward_store::connect(&config.database_url, &config.pool)
        .await
        .with_context(|| {
            format!(
                "opening the database {}",
                keyward_store::redact_url(&config.database_url)
            )
        })
}

/// Disables the user with this email: they cannot sign in, every session of theirs ends, and
/// their API keys are refused from the next request on every instance (this returns once every
/// live instance has dropped them from its cache, or after 1.5 s, when an instance that has
/// not can no longer serve from its cache). `None` when no user has this email.
pub async fn disable_user(
    store: &dyn Store,
    clock: &dyn Clock,
    email: &Email,
) -> anyhow::Result<Option<UserDisabled>> {
    let now = clock.now();
    let disabled = store
        .disable_user(email, now)
        .await
        .context("disabling the user")?;
    if disabled.as_ref().is_some_and(|d| d.newly_disabled) {
        record_for_user(store, AuditKind::UserDisabled, email, now).await?;
    }
    Ok(disabled)
}

/// Records an operator's event about the user with this email, in their tenant's audit log.
async fn record_for_user(
    store: &dyn Store,
    kind: AuditKind,
    email: &Email,
    now: keyward_core::Timestamp,
) -> anyhow::Result<()> {
    let user = store
        .find_user_by_email(email)
        .await
        .context("reading the user for the audit log")?;
    if let Some(user) = user {
        audit::record(
            store,
            AuditEvent::by_operator(kind, Some(&user.tenant_id), Some(&user.id), now),
        )
        .await;
    }
    Ok(())
}

/// Enables the user with this email again. `Some(false)` when they were not disabled, `None`
/// when no user has this email.
pub async fn enable_user(store: &dyn Store, email: &Email) -> anyhow::Result<Option<bool>> {
    let enabled = store
        .enable_user(email)
        .await
        .context("enabling the user")?;
    if enabled == Some(true) {
        let now = keyward_core::SystemClock.now();
        record_for_user(store, AuditKind::UserEnabled, email, now).await?;
    }
    Ok(enabled)
}

/// Adds a new signing key and retires the current ones (see
/// [`keyward_core::rotate_signing_key`]). Instances sign with the new key from their next
/// reload, within `sessions.signing_key_reload_seconds`.
pub async fn rotate_signing_key(
    store: &dyn Store,
    clock: &dyn Clock,
    config: &Config,
) -> anyhow::Result<SigningKeyRotation> {
    let now = clock.now();
    let rotation = keyward_core::rotate_signing_key(
        store,
        now,
        config.settings.sessions.access_token_ttl_seconds,
    )
    .await
    .map_err(|error| anyhow::anyhow!("rotating the signing key: {error}"))?;
    // The signing key is the whole deployment's: the event belongs to no tenant, and is kept
    // for the operator (the table, and the log line below).
    let event = AuditEvent::by_operator(AuditKind::SigningKeyRotated, None, None, now)
        .detail(&format!("new kid {}", rotation.kid));
    audit::record(store, event).await;
    tracing::info!(kid = ?rotation.kid, "signing key rotated by the operator");
    Ok(rotation)
}
