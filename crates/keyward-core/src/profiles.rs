//! Who a caller is, for `/v1/auth/me`, `/v1/tenant` and the console: remembered per instance.
//!
//! A profile holds only what is fixed when the account is created: the user's id, email and
//! name, and the tenant's id, name and creation time. No route or command changes them (a
//! password change or an operator's `disable-user` touches other columns), so a remembered
//! profile is never stale and needs no invalidation. Whether the caller may act at all is
//! decided before, by the credential check (the key cache, the session row), on every request.
//! Should one of these fields ever become editable, the edit must clear it here too.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::ids::{TenantId, UserId};
use crate::store::{TenantRecord, UserRecord};
use crate::validate::Email;

/// Profiles remembered at most. About 300 bytes each, so under 10 MiB when full; past it an
/// arbitrary one makes room (each is one indexed read to bring back).
pub(crate) const MAX_REMEMBERED_PROFILES: usize = 32_768;

/// A user and their tenant, as shown to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub user_id: UserId,
    pub email: Email,
    pub name: Option<String>,
    pub tenant: TenantRecord,
}

impl Profile {
    pub fn new(user: &UserRecord, tenant: TenantRecord) -> Self {
        Self {
            user_id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            tenant,
        }
    }
}

/// The profiles this instance has read, by user.
#[derive(Default)]
pub(crate) struct ProfileMemo {
    profiles: RwLock<HashMap<UserId, Arc<Profile>>>,
}

impl ProfileMemo {
    /// The remembered profile of `user` in `tenant`; `None` when not remembered, or when the user
    /// is not of that tenant (the store then answers, as it would have).
    pub(crate) fn get(&self, user: &UserId, tenant: &TenantId) -> Option<Arc<Profile>> {
        let profiles = self.profiles.read().unwrap_or_else(|e| e.into_inner());
        profiles
            .get(user)
            .filter(|profile| profile.tenant.id == *tenant)
            .cloned()
    }

    pub(crate) fn remember(&self, profile: Arc<Profile>) {
        let mut profiles = self.profiles.write().unwrap_or_else(|e| e.into_inner());
        if profiles.len() >= MAX_REMEMBERED_PROFILES && !profiles.contains_key(&profile.user_id) {
            let victim = profiles.keys().next().cloned();
            if let Some(victim) = victim {
                profiles.remove(&victim);
            }
        }
        profiles.insert(profile.user_id.clone(), profile);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.profiles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn profile(user: &str, tenant: &str) -> Arc<Profile> {
        Arc::new(Profile {
            user_id: UserId::from_stored(user.to_owned()),
            email: Email::parse(&format!("{user}@example.com")).expect("an email"),
            name: None,
            tenant: TenantRecord {
                id: TenantId::from_stored(tenant.to_owned()),
                name: format!("{tenant} inc"),
                created_at: Timestamp(1_700_000_000),
            },
        })
    }

    fn ids(user: &str, tenant: &str) -> (UserId, TenantId) {
        (
            UserId::from_stored(user.to_owned()),
            TenantId::from_stored(tenant.to_owned()),
        )
    }

    #[test]
    fn a_remembered_profile_is_found_only_with_its_own_tenant() {
        let memo = ProfileMemo::default();
        let (user, tenant) = ids("usr_a", "ten_a");
        assert_eq!(memo.get(&user, &tenant), None);

        memo.remember(profile("usr_a", "ten_a"));
        assert_eq!(memo.get(&user, &tenant), Some(profile("usr_a", "ten_a")));
        let (_, other_tenant) = ids("usr_a", "ten_b");
        assert_eq!(memo.get(&user, &other_tenant), None);
        let (other_user, _) = ids("usr_b", "ten_a");
        assert_eq!(memo.get(&other_user, &tenant), None);
    }

    #[test]
    fn the_memo_stays_within_its_bound() {
        let memo = ProfileMemo::default();
        for n in 0..MAX_REMEMBERED_PROFILES + 10 {
            memo.remember(profile(&format!("usr_{n}"), "ten_a"));
        }
        assert_eq!(memo.len(), MAX_REMEMBERED_PROFILES);
        // The newest is always kept; remembering one already there evicts nothing.
        let (last, tenant) = ids(&format!("usr_{}", MAX_REMEMBERED_PROFILES + 9), "ten_a");
        assert!(memo.get(&last, &tenant).is_some());
        memo.remember(profile(
            &format!("usr_{}", MAX_REMEMBERED_PROFILES + 9),
            "ten_a",
        ));
        assert_eq!(memo.len(), MAX_REMEMBERED_PROFILES);
    }
}
