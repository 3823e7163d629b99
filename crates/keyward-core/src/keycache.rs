//! The verification cache: what verifying needs of each key, kept in memory, so that verifying
//! a known key reads no database.
//!
//! Correctness rests on invalidation, never on expiry. Every change to a key (revoke, rotate)
//! calls [`KeyCache::invalidate`] once its transaction has committed, and the store tells each
//! instance about the changes other instances made (see `Store::watch_key_changes`). A load
//! that raced a change is never kept: loads note the [`KeyCache::generation`] before reading the
//! database and [`KeyCache::insert`] refuses them when any invalidation happened since.
//!
//! Memory is what bounds it: an entry is about 200 bytes (the map's slot and a compact record:
//! ids without their prefix, shared scope sets, no name or description), so a million keys
//! fit in about 200 MB. Past `capacity` entries, an arbitrary entry of the same shard makes room.
//!
//! Written here rather than taken from a caching crate: the cache must refuse a load that raced
//! an invalidation, atomically with the insert, which needs the shard's lock in our hands.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::clock::Timestamp;
use crate::hashing::TokenHash;
use crate::ids::{KeyId, TenantId, UserId};
use crate::policy::RateLimit;
use crate::store::{ApiKeyRecord, Owner};
use crate::validate::{KeyMeta, Scopes};

const SHARDS: usize = 64;
/// Distinct scope sets shared between entries; past this, sets are no longer shared.
const MAX_SCOPE_SETS: usize = 4096;
/// Times are kept as `u32` Unix seconds, `0` for none: `Option<Timestamp>` in 4 bytes instead
/// of 16, good until 2106 (an expiry is at most ten years ahead).
const NONE: u32 = 0;

/// A verified key as the request path uses it: owned, cheap to build from a cache entry.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub id: KeyId,
    pub owner: Owner,
    pub scopes: Arc<Scopes>,
    pub meta: Option<Arc<KeyMeta>>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub enabled: bool,
    pub rate_limit: Option<RateLimit>,
    /// Whether uses spend credits (what is left lives in the database only).
    pub metered: bool,
}

impl From<ApiKeyRecord> for VerifiedKey {
    fn from(record: ApiKeyRecord) -> Self {
        Self {
            id: record.id,
            owner: record.owner,
            scopes: Arc::new(record.scopes),
            meta: record.meta.map(Arc::new),
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            enabled: record.enabled,
            rate_limit: record.rate_limit,
            metered: record.credits.is_some(),
        }
    }
}

/// An id as an entry keeps it: the 24 characters after its 4-character type prefix. Ids made
/// otherwise (none are) are not cached.
#[derive(Clone, Copy)]
struct IdBody([u8; 24]);

impl IdBody {
    fn of(id: &str, prefix: &str) -> Option<Self> {
        let bytes: [u8; 24] = id.strip_prefix(prefix)?.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(Self(bytes))
    }

    fn with_prefix(&self, prefix: &str) -> String {
        let mut id = String::with_capacity(prefix.len() + self.0.len());
        id.push_str(prefix);
        id.extend(self.0.iter().map(|&byte| char::from(byte)));
        id
    }
}

/// One cached key.
pub(crate) struct CachedKey {
    id: IdBody,
    tenant_id: IdBody,
    user_id: IdBody,
    scopes: Arc<Scopes>,
    meta: Option<Arc<KeyMeta>>,
    expires_at: u32,
    revoked_at: u32,
    /// When this instance last noted a use for `last_used_at` (`NONE`: never).
    last_noted: AtomicU32,
    /// `requests` and `per_seconds` of the rate limit; zeros for none (no `Option` tag: the
    /// entry stays within 112 bytes).
    rate_limit: [u32; 2],
    enabled: bool,
    metered: bool,
}

fn pack(at: Option<Timestamp>) -> u32 {
    at.map_or(NONE, |at| {
        u32::try_from(at.seconds().max(1)).unwrap_or(u32::MAX)
    })
}

fn unpack(at: u32) -> Option<Timestamp> {
    (at != NONE).then_some(Timestamp(i64::from(at)))
}

impl CachedKey {
    pub(crate) fn verified(&self) -> VerifiedKey {
        VerifiedKey {
            id: KeyId::from_stored(self.id.with_prefix(KeyId::PREFIX)),
            owner: Owner {
                user_id: UserId::from_stored(self.user_id.with_prefix(UserId::PREFIX)),
                tenant_id: TenantId::from_stored(self.tenant_id.with_prefix(TenantId::PREFIX)),
            },
            scopes: self.scopes.clone(),
            meta: self.meta.clone(),
            expires_at: unpack(self.expires_at),
            revoked_at: unpack(self.revoked_at),
            enabled: self.enabled,
            rate_limit: RateLimit::from_stored(
                Some(i64::from(self.rate_limit[0])),
                Some(i64::from(self.rate_limit[1])),
            ),
            metered: self.metered,
        }
    }

    /// Whether this use should be written to `last_used_at`: the first use, or the first after
    /// `resolution` seconds. Exactly one of racing callers gets `true`.
    pub(crate) fn note_use(&self, now: Timestamp, resolution: i64) -> bool {
        let last = self.last_noted.load(Ordering::Relaxed);
        if unpack(last).is_some_and(|last| now.seconds() - last.seconds() < resolution) {
            return false;
        }
        self.last_noted
            .compare_exchange(last, pack(Some(now)), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The map's hasher: the key is already a SHA-256 of a random secret, and only keys this server
/// minted are ever inserted, so its first eight bytes are as good as any hash of them.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, byte) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*byte) << (8 * i);
        }
    }
}

/// The map's key: the first 16 bytes of the key's SHA-256. A slot is 24 bytes instead of 40
/// (32 MB less at a million keys). Accepting a key on these 128 bits alone is as strong as
/// the shortest key format allows (128 bits, `KeyFormat`): presenting another key with the
/// same first 128 bits of SHA-256 is a second preimage, 2^128 hashes of work.
type MapKey = [u8; 16];

fn map_key(hash: &TokenHash) -> MapKey {
    let mut key = [0; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

type Shard = HashMap<MapKey, Arc<CachedKey>, BuildHasherDefault<DigestHasher>>;

/// What [`KeyCache::preload`] did with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preload {
    Kept,
    /// A key changed since the generation was noted: read again.
    Raced,
    /// Its shard is full.
    Full,
    /// The cache does not serve now.
    NotServing,
    /// Its ids are of a shape the cache does not keep.
    Skipped,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub invalidations: u64,
}

pub struct KeyCache {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
    generation: AtomicU64,
    enabled: AtomicBool,
    /// Where other instances change keys, entries are trusted only until this many
    /// milliseconds after `created` (see [`Self::renew_lease`]); `u64::MAX` where they don't.
    lease_until_ms: AtomicU64,
    created: Instant,
    scope_sets: Mutex<HashMap<Scopes, Arc<Scopes>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KeyCache {
    /// A cache of at most `capacity` keys (0: no cache). Where keys are `shared` with other
    /// instances it starts disabled, and serves only under a lease from the store's change feed.
    pub fn new(capacity: usize, shared: bool) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            generation: AtomicU64::new(0),
            enabled: AtomicBool::new(!shared && capacity > 0),
            lease_until_ms: AtomicU64::new(if shared { 0 } else { u64::MAX }),
            created: Instant::now(),
            scope_sets: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, hash: &TokenHash) -> &RwLock<Shard> {
        // A byte the map's hasher does not use.
        &self.shards[usize::from(hash.as_bytes()[15]) % SHARDS]
    }

    /// Enabled, and within its lease.
    fn serving(&self) -> bool {
        if !self.enabled.load(Ordering::Acquire) {
            return false;
        }
        let until = self.lease_until_ms.load(Ordering::Acquire);
        until == u64::MAX || self.millis(Instant::now()) < until
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.created).as_millis())
            .unwrap_or(u64::MAX - 1)
    }

    /// Lets the cache serve until `until`. The change feed renews it each time it hears its own
    /// heartbeat, which proves it has heard every change committed before; when the feed
    /// stalls, the lease runs out and verification reads the database, without waiting for
    /// anyone to notice.
    pub fn renew_lease(&self, until: Instant) {
        if self.lease_until_ms.load(Ordering::Acquire) != u64::MAX {
            self.lease_until_ms
                .store(self.millis(until), Ordering::Release);
        }
    }

    pub(crate) fn get(&self, hash: &TokenHash) -> Option<Arc<CachedKey>> {
        if !self.serving() {
            return None;
        }
        let found = self
            .shard(hash)
            .read()
            .ok()
            .and_then(|shard| shard.get(&map_key(hash)).cloned());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Note this before reading keys from the database, and hand it to [`Self::insert`] or
    /// [`Self::preload`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `record`, read from the database after `generation` was noted, unless a key changed
    /// since (the read may predate the change). Returns the entry when it was kept.
    pub(crate) fn insert(
        &self,
        hash: &TokenHash,
        record: &ApiKeyRecord,
        generation: u64,
    ) -> Option<Arc<CachedKey>> {
        self.keep(hash, record, generation, true).ok()
    }

    /// Keeps a key read in bulk (at start, so that the first verifications need no database)
    /// after `generation` was noted: as [`Self::insert`], but never in place of another key.
    pub fn preload(&self, record: &ApiKeyRecord, generation: u64) -> Preload {
        match self.keep(&record.key_hash, record, generation, false) {
            Ok(_) => Preload::Kept,
            Err(refusal) => refusal,
        }
    }

    fn keep(
        &self,
        hash: &TokenHash,
        record: &ApiKeyRecord,
        generation: u64,
        evict: bool,
    ) -> Result<Arc<CachedKey>, Preload> {
        if !self.serving() || self.per_shard == 0 {
            return Err(Preload::NotServing);
        }
        let id = |id: &str, prefix| IdBody::of(id, prefix).ok_or(Preload::Skipped);
        let entry = Arc::new(CachedKey {
            id: id(record.id.as_str(), KeyId::PREFIX)?,
            tenant_id: id(record.owner.tenant_id.as_str(), TenantId::PREFIX)?,
            user_id: id(record.owner.user_id.as_str(), UserId::PREFIX)?,
            scopes: self.shared_scopes(&record.scopes),
            meta: record.meta.clone().map(Arc::new),
            expires_at: pack(record.expires_at),
            revoked_at: pack(record.revoked_at),
            enabled: record.enabled,
            metered: record.credits.is_some(),
            rate_limit: record
                .rate_limit
                .map_or([0, 0], |limit| [limit.requests(), limit.per_seconds()]),
            last_noted: AtomicU32::new(pack(record.last_used_at)),
        });
        let mut shard = self.shard(hash).write().map_err(|_| Preload::NotServing)?;
        // Checked under the shard's lock: an invalidation bumps the generation before it takes
        // this lock to remove, so it either stops this insert or removes what it inserted.
        if self.generation.load(Ordering::Acquire) != generation {
            return Err(Preload::Raced);
        }
        let key = map_key(hash);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            if !evict {
                return Err(Preload::Full);
            }
            let victim = shard.keys().next().cloned();
            if let Some(victim) = victim {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry.clone());
        Ok(entry)
    }

    fn shared_scopes(&self, scopes: &Scopes) -> Arc<Scopes> {
        let Ok(mut sets) = self.scope_sets.lock() else {
            return Arc::new(scopes.clone());
        };
        if let Some(shared) = sets.get(scopes) {
            return shared.clone();
        }
        let shared = Arc::new(scopes.clone());
        if sets.len() < MAX_SCOPE_SETS {
            sets.insert(scopes.clone(), shared.clone());
        }
        shared
    }

    /// Forgets the key with this hash, and stops any load that started before.
    pub fn invalidate(&self, hash: &TokenHash) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut shard) = self.shard(hash).write() {
            shard.remove(&map_key(hash));
        }
    }

    /// Forgets every key; while disabled, every verification reads the database. The store's
    /// change feed disables the cache while it cannot hear other instances' changes.
    pub fn set_enabled(&self, enabled: bool) {
        let enabled = enabled && self.per_shard > 0;
        if !enabled {
            self.enabled.store(false, Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            if let Ok(mut shard) = shard.write() {
                shard.clear();
            }
        }
        if enabled {
            self.enabled.store(true, Ordering::Release);
        }
    }

    /// Whether a lookup may be answered from memory now.
    pub fn is_serving(&self) -> bool {
        self.serving()
    }

    pub fn stats(&self) -> KeyCacheStats {
        KeyCacheStats {
            entries: self
                .shards
                .iter()
                .map(|shard| shard.read().map_or(0, |shard| shard.len() as u64))
                .sum(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.generation.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::sha256;
    use crate::validate::KeyName;

    /// The entry's size is what a million keys cost: policies must not grow it.
    #[test]
    fn an_entry_stays_compact() {
        assert!(
            std::mem::size_of::<CachedKey>() <= 112,
            "{} bytes",
            std::mem::size_of::<CachedKey>()
        );
        assert_eq!(unpack(pack(None)), None);
        let at = Timestamp(1_795_341_600);
        assert_eq!(unpack(pack(Some(at))), Some(at));
    }

    fn record(secret: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: KeyId::generate(),
            owner: Owner {
                user_id: UserId::generate(),
                tenant_id: TenantId::generate(),
            },
            key_hash: sha256(secret),
            start: "kw_".into(),
            end: "abcd".into(),
            name: KeyName::from_stored("k".into()),
            description: None,
            scopes: Scopes::admin(),
            meta: None,
            created_at: Timestamp(1),
            expires_at: Some(Timestamp(100)),
            expires_in_days: Some(1),
            last_used_at: None,
            revoked_at: None,
            enabled: true,
            rate_limit: None,
            credits: None,
        }
    }

    #[test]
    fn an_entry_gives_back_the_record_it_was_made_from() {
        let cache = KeyCache::new(10, false);
        let record = record("a");
        let generation = cache.generation();
        cache.insert(&record.key_hash, &record, generation).unwrap();
        let verified = cache.get(&record.key_hash).unwrap().verified();
        assert_eq!(verified.id, record.id);
        assert_eq!(verified.owner, record.owner);
        assert_eq!(*verified.scopes, record.scopes);
        assert_eq!(verified.expires_at, Some(Timestamp(100)));
        assert_eq!(verified.revoked_at, None);
        assert!(verified.enabled && !verified.metered && verified.rate_limit.is_none());
        assert!(cache.get(&sha256("b")).is_none());
        assert_eq!(
            cache.stats(),
            KeyCacheStats {
                entries: 1,
                hits: 1,
                misses: 1,
                invalidations: 0
            }
        );
    }

    #[test]
    fn an_entry_keeps_the_policies() {
        let cache = KeyCache::new(10, false);
        let mut record = record("a");
        record.enabled = false;
        record.rate_limit = crate::policy::RateLimit::from_stored(Some(100), Some(60));
        record.credits = Some(crate::policy::Credits {
            remaining: 5,
            refill: None,
            refilled_at: Timestamp(0),
            reference: 5,
        });
        cache
            .insert(&record.key_hash, &record, cache.generation())
            .unwrap();
        let verified = cache.get(&record.key_hash).unwrap().verified();
        assert!(!verified.enabled);
        assert!(verified.metered);
        assert_eq!(verified.rate_limit, record.rate_limit);
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let cache = KeyCache::new(10, false);
        let record = record("a");
        let before = cache.generation();
        // Any key's change may be the one this load raced.
        cache.invalidate(&sha256("another key"));
        assert!(cache.insert(&record.key_hash, &record, before).is_none());
        assert!(cache.get(&record.key_hash).is_none());
        let after = cache.generation();
        assert!(cache.insert(&record.key_hash, &record, after).is_some());
        cache.invalidate(&record.key_hash);
        assert!(cache.get(&record.key_hash).is_none());
    }

    #[test]
    fn a_disabled_cache_keeps_nothing_and_capacity_holds() {
        let cache = KeyCache::new(SHARDS, false);
        let records: Vec<_> = (0..500).map(|i| record(&i.to_string())).collect();
        for record in &records {
            cache.insert(&record.key_hash, record, cache.generation());
        }
        // One entry per shard at most.
        assert!(cache.stats().entries <= SHARDS as u64);
        cache.set_enabled(false);
        assert_eq!(cache.stats().entries, 0);
        assert!(cache
            .insert(&records[0].key_hash, &records[0], cache.generation())
            .is_none());
        assert!(cache.get(&records[0].key_hash).is_none());
        cache.set_enabled(true);
        assert!(cache
            .insert(&records[0].key_hash, &records[0], cache.generation())
            .is_some());
        assert!(!KeyCache::new(0, false).is_serving());
    }

    #[test]
    fn a_shared_cache_serves_only_when_enabled_and_within_its_lease() {
        let cache = KeyCache::new(10, true);
        let record = record("a");
        assert!(!cache.is_serving());
        cache.set_enabled(true);
        assert!(!cache.is_serving(), "no lease yet");
        cache.renew_lease(Instant::now() + std::time::Duration::from_secs(60));
        assert!(cache.is_serving());
        assert!(cache
            .insert(&record.key_hash, &record, cache.generation())
            .is_some());
        assert!(cache.get(&record.key_hash).is_some());
        cache.renew_lease(Instant::now());
        assert!(!cache.is_serving());
        assert!(cache.get(&record.key_hash).is_none());
        // An unshared cache has no lease to run out.
        let unshared = KeyCache::new(10, false);
        unshared.renew_lease(Instant::now());
        assert!(unshared.is_serving());
    }

    #[test]
    fn a_preload_never_evicts_and_reports_races() {
        let cache = KeyCache::new(SHARDS, false);
        let records: Vec<_> = (0..500).map(|i| record(&i.to_string())).collect();
        let outcomes: Vec<_> = records
            .iter()
            .map(|record| cache.preload(record, cache.generation()))
            .collect();
        let kept = outcomes.iter().filter(|o| **o == Preload::Kept).count();
        assert_eq!(kept as u64, cache.stats().entries);
        assert!(outcomes.contains(&Preload::Full));
        let old = cache.generation();
        cache.invalidate(&sha256("x"));
        let fresh = record("fresh");
        assert_eq!(cache.preload(&fresh, old), Preload::Raced);
    }

    #[test]
    fn a_use_is_noted_once_per_resolution() {
        let cache = KeyCache::new(10, false);
        let record = record("a");
        let entry = cache
            .insert(&record.key_hash, &record, cache.generation())
            .unwrap();
        assert!(entry.note_use(Timestamp(1000), 60));
        assert!(!entry.note_use(Timestamp(1059), 60));
        assert!(entry.note_use(Timestamp(1060), 60));
    }

    #[test]
    fn ids_of_another_shape_are_not_cached() {
        let cache = KeyCache::new(10, false);
        let mut odd = record("a");
        odd.id = KeyId::from_stored("key_short".into());
        assert!(cache
            .insert(&odd.key_hash, &odd, cache.generation())
            .is_none());
        assert!(IdBody::of("key_0123456789abcdefghijklmn", "key_").is_some());
        assert!(IdBody::of("usr_0123456789abcdefghijklmn", "key_").is_none());
        assert!(IdBody::of("key_0123456789abcdefghijkl-n", "key_").is_none());
    }
}
