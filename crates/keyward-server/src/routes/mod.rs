//! The HTTP API, one module per resource, each exposing its `router()`.

pub mod audit;
pub mod auth;
pub mod device;
pub mod keys;
pub mod leaks;
pub mod service;
pub mod usage;
pub mod webhooks;

use keyward_core::store::{ApiKeyRecord, TenantRecord};
use keyward_core::{KeyService, Profile};
use keyward_proto::{KeyView, TenantView, UserView};

pub(crate) fn user_view(profile: &Profile) -> UserView {
    UserView {
        id: profile.user_id.to_string(),
        email: profile.email.as_str().to_owned(),
        name: profile.name.clone(),
    }
}

pub(crate) fn tenant_view(tenant: &TenantRecord) -> TenantView {
    TenantView {
        id: tenant.id.to_string(),
        name: tenant.name.clone(),
        created_at: tenant.created_at.to_rfc3339(),
    }
}

use keyward_core::policy::RateLimit;

pub(crate) fn key_view(keys: &KeyService, key: &ApiKeyRecord) -> KeyView {
    KeyView {
        id: key.id.to_string(),
        name: key.name.as_str().to_owned(),
        description: key.description.as_ref().map(|d| d.as_str().to_owned()),
        scopes: key.scopes.to_strings(),
        masked: format!("{}…{}", key.start, key.end),
        start: key.start.clone(),
        end: key.end.clone(),
        created_at: key.created_at.to_rfc3339(),
        expires_at: key.expires_at.map(|t| t.to_rfc3339()),
        last_used_at: key.last_used_at.map(|t| t.to_rfc3339()),
        status: keys.status(key),
        meta: key.meta.as_ref().map(|m| m.to_value()),
        enabled: key.enabled,
        rate_limit: key.rate_limit.map(RateLimit::spec),
        credits: keys.credits(key),
    }
}
