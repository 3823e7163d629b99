//! Leak reports (SPEC §4): a key found where it should not be (GitHub's secret scanning, or
//! anyone at `POST /v1/leaks`). A live key is revoked at once (when `leaks.auto_revoke`),
//! through [`KeyService::revoke`], the path of `DELETE /v1/keys/{id}`, so every instance's
//! cache drops it; its owner's audit log records the report and `key.leaked` fires.
//!
//! The reporter learns only whether the key was live: nothing of its owner, name or state.
//! A presented key is never logged.

use std::sync::Arc;

use keyward_proto::KeyStatus;

use crate::audit::{self, AuditEvent, AuditKind};
use crate::clock::Clock;
use crate::error::CoreResult;
use crate::hashing::sha256;
use crate::keys::KeyService;
use crate::store::Store;
use crate::webhooks::{key_event_data, EventType, WebhookService};

/// Longest `url` kept from a report, in characters.
pub const MAX_FOUND_AT_CHARS: usize = 150;

/// Who reported a leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakSource {
    /// GitHub's secret-scanning partner program (signed).
    Github,
    /// `POST /v1/leaks`: anyone.
    Report,
}

impl LeakSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakSource::Github => "github",
            LeakSource::Report => "report",
        }
    }
}

pub struct LeakService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyService>,
    webhooks: Arc<WebhookService>,
    auto_revoke: bool,
}

impl LeakService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: Arc<KeyService>,
        webhooks: Arc<WebhookService>,
        auto_revoke: bool,
    ) -> Self {
        Self {
            store,
            clock,
            keys,
            webhooks,
            auto_revoke,
        }
    }

    /// Handles one reported token; `true` when it was a live key (a true positive). A token
    /// not of the key format (wrong checksum included) is `false` without touching storage.
    #[tracing::instrument(skip_all, fields(source = source.as_str()))]
    pub async fn report(
        &self,
        presented: &str,
        found_at: Option<&str>,
        source: LeakSource,
    ) -> CoreResult<bool> {
        if !self.keys.format().matches(presented) {
            return Ok(false);
        }
        let hash = sha256(presented);
        let Some(key) = self.store.find_key_by_hash(&hash).await? else {
            return Ok(false);
        };
        if !key.key_hash.ct_eq(&hash) || self.keys.status(&key) != KeyStatus::Active {
            return Ok(false);
        }
        let now = self.clock.now();
        let found_at = found_at.map(|url| audit::clean_text(url, MAX_FOUND_AT_CHARS));
        let owner = &key.owner;
        tracing::warn!(key_id = %key.id, tenant_id = %owner.tenant_id, revoke = self.auto_revoke, "a live key was reported as leaked");
        let mut detail = format!("reported by {}", source.as_str());
        if let Some(url) = &found_at {
            detail.push_str(&format!(" at {url}"));
        }
        detail.push_str(if self.auto_revoke {
            "; revoked"
        } else {
            "; left active (leaks.auto_revoke is off)"
        });
        let mut event =
            AuditEvent::new(AuditKind::KeyLeaked, &owner.tenant_id, &owner.user_id, now)
                .key(&key.id)
                .detail(&detail);
        event.actor = audit::LEAK_REPORT.to_owned();
        audit::record(&*self.store, event).await;
        let mut data = key_event_data(&key.id, owner, key.name.as_str());
        data["source"] = source.as_str().into();
        data["url"] = found_at.into();
        data["revoked"] = self.auto_revoke.into();
        self.webhooks.emit(owner, EventType::KeyLeaked, data).await;
        if self.auto_revoke {
            match self.keys.revoke(owner, &key.id).await {
                // Revoked meanwhile by its owner: it is revoked all the same.
                Ok(()) | Err(crate::CoreError::NotFound) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }
}
