//! The audit log: every security event (registration, sign-in, refresh-token reuse, logout,
//! password change, key and device decisions, operator commands) becomes an [`AuditEvent`]
//! row, which its tenant reads at `GET /v1/audit` and on the console's account page.
//!
//! The services record events themselves, at the point where the change is made, so the API,
//! the console and any later caller cannot forget one. Where the request came from (client
//! address, user agent) is not a service argument: the server's middleware runs each request
//! inside [`with_origin`], and [`AuditEvent::new`] reads it from there. Work outside a request
//! (operator commands) has no origin, and its actor is [`OPERATOR`].
//!
//! An event is written after the change it records, never in its transaction: a failed write
//! must not undo or fail a sign-in or a revocation. [`record`] waits at most
//! [`WRITE_TIMEOUT`], and a failure is logged at `error` with the event (never lost unseen).
//! No secret is ever part of an event: only ids, and bounded, control-free text.

use std::future::Future;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::ids::{AuditEventId, KeyId, SessionId, TenantId, UserId};
use crate::store::Store;

/// The actor of events with no signed-in user: the `keyward admin` commands.
pub const OPERATOR: &str = "operator";

/// The actor of a leak report: whoever found the key (GitHub's scanner, anyone at
/// `POST /v1/leaks`), never the key's owner.
pub const LEAK_REPORT: &str = "leak_report";

/// How long a request waits for its audit write before going on without it (logged).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest user agent kept, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// What happened. The `as_str` names are the API's `type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Registered,
    LoginSucceeded,
    LoginFailed,
    RefreshReuseDetected,
    Logout,
    PasswordChanged,
    KeyCreated,
    KeyRotated,
    KeyRevoked,
    KeyUpdated,
    DeviceApproved,
    DeviceDenied,
    UserDisabled,
    UserEnabled,
    SigningKeyRotated,
    /// A live key was reported as leaked (`POST /v1/leaks`, `/v1/leaks/github`).
    KeyLeaked,
}

impl AuditKind {
    pub const ALL: [AuditKind; 16] = [
        AuditKind::Registered,
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::RefreshReuseDetected,
        AuditKind::Logout,
        AuditKind::PasswordChanged,
        AuditKind::KeyCreated,
        AuditKind::KeyRotated,
        AuditKind::KeyRevoked,
        AuditKind::KeyUpdated,
        AuditKind::DeviceApproved,
        AuditKind::DeviceDenied,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
        AuditKind::SigningKeyRotated,
        AuditKind::KeyLeaked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Registered => "user.registered",
            AuditKind::LoginSucceeded => "login.succeeded",
            AuditKind::LoginFailed => "login.failed",
            AuditKind::RefreshReuseDetected => "session.refresh_reuse_detected",
            AuditKind::Logout => "session.logout",
            AuditKind::PasswordChanged => "user.password_changed",
            AuditKind::KeyCreated => "key.created",
            AuditKind::KeyRotated => "key.rotated",
            AuditKind::KeyRevoked => "key.revoked",
            AuditKind::KeyUpdated => "key.updated",
            AuditKind::DeviceApproved => "device.approved",
            AuditKind::DeviceDenied => "device.denied",
            AuditKind::UserDisabled => "user.disabled",
            AuditKind::UserEnabled => "user.enabled",
            AuditKind::SigningKeyRotated => "signing_key.rotated",
            AuditKind::KeyLeaked => "key.leaked",
        }
    }

    /// The kind a stored name stands for; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Where a request came from, as the server determined it (`trusted_proxies` applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

/// Runs `future` (one request) with `origin` as the origin of the events it records.
pub async fn with_origin<F: Future>(origin: Origin, future: F) -> F::Output {
    ORIGIN.scope(origin, future).await
}

/// The origin of the request being served, if any.
fn current_origin() -> Origin {
    ORIGIN.try_with(Origin::clone).unwrap_or_default()
}

/// Text fit for the log: control characters (newlines above all) become `?`, so a stored value
/// can never start a line of its own wherever it is printed, and it is cut to `max` characters.
pub fn clean_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One event, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    /// `None` only for events no tenant owns (a signing-key rotation): those are kept for the
    /// operator and shown to no tenant.
    pub tenant_id: Option<TenantId>,
    /// A user id, [`OPERATOR`], or [`LEAK_REPORT`].
    pub actor: String,
    /// The user the event is about (the actor's own id when they acted on themselves).
    pub user_id: Option<UserId>,
    pub kind: AuditKind,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    pub key_id: Option<KeyId>,
    pub session_id: Option<SessionId>,
    /// A short note (`all` sessions, the replaced key…): never a secret, never user input.
    pub detail: Option<String>,
    pub created_at: Timestamp,
}

impl AuditEvent {
    /// An event by `user` of `tenant`, from the current request's origin.
    pub fn new(kind: AuditKind, tenant: &TenantId, user: &UserId, now: Timestamp) -> Self {
        let origin = current_origin();
        Self {
            id: AuditEventId::generate(),
            tenant_id: Some(tenant.clone()),
            actor: user.to_string(),
            user_id: Some(user.clone()),
            kind,
            client_address: origin.client_address.map(|a| clean_text(&a, 64)),
            user_agent: origin
                .user_agent
                .map(|agent| clean_text(&agent, MAX_USER_AGENT_CHARS)),
            key_id: None,
            session_id: None,
            detail: None,
            created_at: now,
        }
    }

    /// An operator's event (`keyward admin`): no address, no user agent.
    pub fn by_operator(
        kind: AuditKind,
        tenant: Option<&TenantId>,
        user: Option<&UserId>,
        now: Timestamp,
    ) -> Self {
        Self {
            id: AuditEventId::generate(),
            tenant_id: tenant.cloned(),
            actor: OPERATOR.to_owned(),
            user_id: user.cloned(),
            kind,
            client_address: None,
            user_agent: None,
            key_id: None,
            session_id: None,
            detail: None,
            created_at: now,
        }
    }

    pub fn key(mut self, key: &KeyId) -> Self {
        self.key_id = Some(key.clone());
        self
    }

    pub fn session(mut self, session: &SessionId) -> Self {
        self.session_id = Some(session.clone());
        self
    }

    pub fn detail(mut self, detail: &str) -> Self {
        self.detail = Some(clean_text(detail, 200));
        self
    }
}

/// Writes `event`, waiting at most [`WRITE_TIMEOUT`]. Never fails its caller: a failure is
/// logged at `error` with everything the row would have held, so the event is not lost unseen.
pub async fn record(store: &dyn Store, event: AuditEvent) {
    let outcome = tokio::time::timeout(WRITE_TIMEOUT, store.record_audit_event(&event)).await;
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    tracing::error!(
        %error,
        event = event.kind.as_str(),
        tenant_id = ?event.tenant_id.as_ref().map(TenantId::as_str),
        actor = ?event.actor,
        key_id = ?event.key_id.as_ref().map(KeyId::as_str),
        session_id = ?event.session_id.as_ref().map(SessionId::as_str),
        client_address = ?event.client_address,
        user_agent = ?event.user_agent,
        "writing an audit event failed; this log line is its only record"
    );
}

/// [`record`] in a task of its own, so the caller does not wait even for the write. For a
/// failed login: awaiting it there would make a wrong password for a real account measurably
/// slower than an unknown email, telling which emails have accounts.
pub fn record_later(store: std::sync::Arc<dyn Store>, event: AuditEvent) {
    tokio::spawn(async move { record(&*store, event).await });
}

/// One page of a tenant's events, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// The cursor of the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The page of `tenant`'s events older than the event `cursor` (newest first), at most `limit`.
/// `None` when `cursor` is not an event of this tenant.
pub async fn page(
    store: &dyn Store,
    tenant: &TenantId,
    cursor: Option<&str>,
    limit: u32,
) -> crate::CoreResult<Option<AuditPage>> {
    let Some(mut events) = store
        .list_audit_events(tenant, cursor, limit.saturating_add(1))
        .await?
    else {
        return Ok(None);
    };
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_cursor = if more {
        events.last().map(|event| event.id.to_string())
    } else {
        None
    };
    Ok(Some(AuditPage {
        events,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AuditKind::parse("nope"), None);
    }

    #[test]
    fn clean_text_drops_control_characters_and_bounds_length() {
        assert_eq!(clean_text("a\nb\r\u{1b}c", 100), "a?b??c");
        assert_eq!(clean_text(&"x".repeat(300), 256).len(), 256);
    }

    #[tokio::test]
    async fn events_take_the_origin_of_their_request() {
        let origin = Origin {
            client_address: Some("203.0.113.7".into()),
            user_agent: Some("curl/8\nfake line".into()),
        };
        let event = with_origin(origin, async {
            AuditEvent::new(
                AuditKind::Logout,
                &TenantId::generate(),
                &UserId::generate(),
                Timestamp(0),
            )
        })
        .await;
        assert_eq!(event.client_address.as_deref(), Some("203.0.113.7"));
        assert_eq!(event.user_agent.as_deref(), Some("curl/8?fake line"));
        let outside = AuditEvent::new(
            AuditKind::Logout,
            &TenantId::generate(),
            &UserId::generate(),
            Timestamp(0),
        );
        assert_eq!(outside.client_address, None);
    }
}
