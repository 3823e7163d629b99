//! Brute-force and abuse throttling (issue 8; SECURITY.md "Brute force and abuse"): who the
//! client is ([`ClientIp`], believing `X-Forwarded-For` only from `trusted_proxies`) and the
//! per-address and per-account limits ([`Throttles`]) of login, registration, refresh, device
//! codes and failed key checks.
//!
//! Every limit is a keyed GCRA limiter of the `governor` crate, in memory, per instance. Failure
//! budgets (login, verify) are charged only by failures; once one is spent the key is *blocked*
//! until the limiter would admit a failure again, and a blocked key's attempts are refused
//! before any password is hashed or key looked up. Keys are pruned every
//! [`PRUNE_INTERVAL`], so addresses an attacker rotates through are forgotten once their
//! budget has refilled: memory stays proportional to the recent request rate.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use keyward_core::{AuthFailure, CoreError, IssuedTokens, Password};
use sha2::{Digest, Sha256};

use crate::config::{Rate, RateLimitSettings};
use crate::error::ApiError;
use crate::state::AppState;

/// How often idle limiter state is dropped.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Keys tracked by one limiter before pruning runs early (at most once a second).
const EARLY_PRUNE_KEYS: usize = 100_000;

/// The client's address: the TCP peer, or with a peer inside `trusted_proxies`, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. IPv6 addresses are reduced to
/// their /64, which one client typically holds whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip_of(parts, &state.config.trusted_proxies)))
    }
}

/// The client's full address, as the audit middleware already worked it out for this request
/// (`trusted_proxies` applied), so the throttles need not parse the headers again.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// [`ClientIp`] from request parts (the credential extractor needs it too).
pub fn client_ip_of(parts: &Parts, trusted: &[IpNet]) -> IpAddr {
    if let Some(ClientAddress(client)) = parts.extensions.get::<ClientAddress>() {
        return throttle_key(*client);
    }
    // Without connection info (a router driven in-process) there is no peer to tell apart.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    throttle_key(client_ip(peer, &parts.headers, trusted))
}

/// The address a request came from, per the rule of [`ClientIp`] (before the /64 reduction).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Each proxy appends the address it saw: read from the right, past our own proxies. Only
    // entries right of the first unreadable one were written by proxies we trust.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:80`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .map(canonical)
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// IPv6 clients are counted per /64: one host usually controls the whole prefix, so counting
/// single addresses would let it rotate past every limit.
fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        IpAddr::V4(_) => ip,
    }
}

/// An account as the login throttle knows it: a digest of the normalized email, so a long
/// email costs no more memory than a short one.
type AccountKey = [u8; 16];

fn account_key(email: &str) -> AccountKey {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn quota(rate: Rate) -> Quota {
    let requests = NonZeroU32::new(rate.requests).unwrap_or(NonZeroU32::MIN);
    let per = Duration::from_secs(u64::from(rate.per_seconds.max(1))) / requests.get();
    Quota::with_period(per.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(requests))
        .allow_burst(requests)
}

/// Whole seconds until `until`, at least 1 (a `Retry-After` of 0 invites a retry storm).
fn seconds_until(until: Instant, now: Instant) -> u64 {
    let wait = until.saturating_duration_since(now);
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

pub(crate) fn limited(retry_after_seconds: u64) -> CoreError {
    CoreError::RateLimited {
        retry_after_seconds,
    }
}

/// A device user-code entry (a lookup or a decision, on the API or the console) behind the
/// per-address gate: refused while the address is blocked; a code that is unknown, expired or
/// already decided (`NotFound`) is charged to the address, and the one that finds its budget
/// spent is answered 429. The per-user count of the device flow still applies underneath.
pub async fn device_entry<T>(
    state: &AppState,
    ip: IpAddr,
    entry: impl std::future::Future<Output = Result<T, CoreError>>,
) -> Result<T, CoreError> {
    let throttles = &state.throttles;
    if throttles.enabled {
        throttles.device_entry.check(&ip)?;
    }
    let result = entry.await;
    if throttles.enabled && matches!(result, Err(CoreError::NotFound)) {
        let blocked = throttles.device_entry.failed(&ip, ip);
        throttles.prune_early_if_large();
        if let Some(seconds) = blocked {
            return Err(limited(seconds));
        }
    }
    result
}

/// A login behind the login throttles, for the API and the console alike: refused before the
/// password is hashed when a failure budget is spent; a wrong email or password is charged to
/// the account and the address.
pub async fn login(
    state: &AppState,
    ip: IpAddr,
    email: &str,
    password: &Password,
    user_agent: Option<&str>,
) -> Result<IssuedTokens, CoreError> {
    state.throttles.check_login(email, ip)?;
    match state.accounts.login(email, password, user_agent).await {
        Err(CoreError::Unauthenticated(AuthFailure::InvalidCredentials)) => {
            Err(match state.throttles.login_failed(email, ip) {
                Some(seconds) => limited(seconds),
                None => CoreError::Unauthenticated(AuthFailure::InvalidCredentials),
            })
        }
        other => other,
    }
}

/// One keyed limiter, pruned.
struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(rate: Rate) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::dashmap(quota(rate)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `key`'s budget; when it is spent, how long until one is back.
    fn take(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// A budget of failures: attempts are free while it lasts; the failure that finds it spent
/// blocks the key (`B`, which may be finer than the budget's own key) until the budget has
/// room for one more failure.
struct FailureGate<K: Hash + Eq + Clone, B: Hash + Eq> {
    budget: Limiter<K>,
    blocked: DashMap<B, Instant>,
}

impl<K: Hash + Eq + Clone, B: Hash + Eq> FailureGate<K, B> {
    fn new(rate: Rate) -> Self {
        Self {
            budget: Limiter::new(rate),
            blocked: DashMap::new(),
        }
    }

    /// Refused while `block` is blocked.
    fn check(&self, block: &B) -> Result<(), CoreError> {
        let Some(until) = self.blocked.get(block).map(|until| *until) else {
            return Ok(());
        };
        let now = Instant::now();
        if until > now {
            Err(limited(seconds_until(until, now)))
        } else {
            Ok(())
        }
    }

    /// Charges a failure to `key`; when its budget was already spent, blocks `block` and says
    /// for how many seconds.
    fn failed(&self, key: &K, block: B) -> Option<u64> {
        let wait = self.budget.take(key).err()?;
        let now = Instant::now();
        let until = now + wait;
        self.blocked.insert(block, until);
        Some(seconds_until(until, now))
    }

    fn prune(&self) {
        self.budget.prune();
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
    }
}

/// Every throttle of one instance. With `rate_limits.enabled = false` every check passes.
pub struct Throttles {
    enabled: bool,
    /// Failed logins per account; spent, it blocks the (account, address) pairs that fail.
    login_account: FailureGate<AccountKey, (AccountKey, IpAddr)>,
    /// Failed logins per address; spent, it blocks the address.
    login_address: FailureGate<IpAddr, IpAddr>,
    register: Limiter<IpAddr>,
    refresh: Limiter<IpAddr>,
    device: Limiter<IpAddr>,
    /// Leak reports (`POST /v1/leaks`) per address.
    leak_reports: Limiter<IpAddr>,
    verify: FailureGate<IpAddr, IpAddr>,
    /// Wrong device user codes per address; spent, it blocks the address's code entries.
    device_entry: FailureGate<IpAddr, IpAddr>,
    last_early_prune: Mutex<Instant>,
}

impl Throttles {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            enabled: settings.enabled,
            login_account: FailureGate::new(settings.login_per_account),
            login_address: FailureGate::new(settings.login_per_address),
            register: Limiter::new(settings.register_per_address),
            refresh: Limiter::new(settings.refresh_per_address),
            device: Limiter::new(settings.device_per_address),
            leak_reports: Limiter::new(settings.leak_reports_per_address),
            verify: FailureGate::new(settings.verify_failures_per_address),
            device_entry: FailureGate::new(settings.device_entry_failures_per_address),
            last_early_prune: Mutex::new(Instant::now()),
        }
    }

    /// Before a password is checked: refused when the address has spent its failure budget,
    /// or when the account has spent its own and this address has failed on it since. An
    /// address that has not been failing still gets its attempt, so an attacker cannot lock a
    /// victim out of their account.
    pub fn check_login(&self, email: &str, ip: IpAddr) -> Result<(), CoreError> {
        if !self.enabled {
            return Ok(());
        }
        self.login_address.check(&ip)?;
        self.login_account.check(&(account_key(email), ip))
    }

    /// After a wrong email or password: charges the account and the address. `Some(seconds)`
    /// when this failure found a budget spent: the attempt is answered 429 rather than 401.
    pub fn login_failed(&self, email: &str, ip: IpAddr) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        let account = account_key(email);
        let by_account = self.login_account.failed(&account, (account, ip));
        let by_address = self.login_address.failed(&ip, ip);
        self.prune_early_if_large();
        by_account.max(by_address)
    }

    pub fn register(&self, ip: IpAddr) -> Result<(), CoreError> {
        self.take(&self.register, ip)
    }

    pub fn refresh(&self, ip: IpAddr) -> Result<(), CoreError> {
        self.take(&self.refresh, ip)
    }

    pub fn device_code(&self, ip: IpAddr) -> Result<(), CoreError> {
        self.take(&self.device, ip)
    }

    /// A leak report from `ip` (`POST /v1/leaks`, which needs no credential).
    pub fn leak_report(&self, ip: IpAddr) -> Result<(), CoreError> {
        self.take(&self.leak_reports, ip)
    }

    /// Before a key is checked: refused while the address is blocked for failed checks.
    pub fn check_verify(&self, ip: IpAddr) -> Result<(), CoreError> {
        if !self.enabled {
            return Ok(());
        }
        self.verify.check(&ip)
    }

    /// After a key check failed; `Some(seconds)` when the address's budget was already spent.
    pub fn verify_failed(&self, ip: IpAddr) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        let blocked = self.verify.failed(&ip, ip);
        self.prune_early_if_large();
        blocked
    }

    fn take(&self, limiter: &Limiter<IpAddr>, ip: IpAddr) -> Result<(), CoreError> {
        if !self.enabled {
            return Ok(());
        }
        let result = limiter.take(&ip).map_err(|wait| {
            let now = Instant::now();
            limited(seconds_until(now + wait, now))
        });
        self.prune_early_if_large();
        result
    }

    /// Drops every key whose budget has refilled. Run every [`PRUNE_INTERVAL`].
    pub fn prune(&self) {
        self.login_account.prune();
        self.login_address.prune();
        self.register.prune();
        self.refresh.prune();
        self.device.prune();
        self.leak_reports.prune();
        self.verify.prune();
        self.device_entry.prune();
    }

    /// Keys tracked over all limiters (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.login_account.budget.limiter.len()
            + self.login_address.budget.limiter.len()
            + self.register.limiter.len()
            + self.refresh.limiter.len()
            + self.device.limiter.len()
            + self.leak_reports.limiter.len()
            + self.verify.budget.limiter.len()
    }

    /// A flood of fresh addresses between two prunes: prune now, at most once a second.
    fn prune_early_if_large(&self) {
        let large = [
            self.login_account.budget.limiter.len(),
            self.login_address.budget.limiter.len(),
            self.register.limiter.len(),
            self.refresh.limiter.len(),
            self.device.limiter.len(),
            self.verify.budget.limiter.len(),
            self.login_account.blocked.len(),
            self.login_address.blocked.len(),
            self.verify.blocked.len(),
        ]
        .into_iter()
        .any(|len| len > EARLY_PRUNE_KEYS);
        if !large {
            return;
        }
        let now = Instant::now();
        {
            let mut last = self
                .last_early_prune
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        self.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        let spoofed = headers(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("8.8.8.8"), &spoofed, &trusted), ip("8.8.8.8"));
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &trusted), ip("1.1.1.1"));
        // The right-most untrusted entry: the left ones are whatever the client sent.
        let chain = headers(&["6.6.6.6, 2.2.2.2", "10.0.0.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &trusted), ip("2.2.2.2"));
        // Garbage stops the walk at the last proxy that wrote a readable entry.
        let garbage = headers(&["2.2.2.2, nonsense, 10.0.0.7"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbage, &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers(&[]), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers(&["[2001:db8::1]:443"]), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("::ffff:8.8.8.8"), &spoofed, &[]),
            ip("8.8.8.8")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a = throttle_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = throttle_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = throttle_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_spent_account_blocks_failing_addresses_only() {
        let settings = RateLimitSettings {
            login_per_account: Rate::new(3, 3600),
            ..RateLimitSettings::default()
        };
        let throttles = Throttles::new(&settings);
        let attacker: IpAddr = "203.0.113.1".parse().unwrap();
        let victim: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            throttles
                .check_login("Victim@example.com", attacker)
                .unwrap();
            assert_eq!(throttles.login_failed("victim@example.com", attacker), None);
        }
        assert!(throttles
            .login_failed("victim@example.com", attacker)
            .is_some());
        assert!(matches!(
            throttles.check_login("victim@example.com", attacker),
            Err(CoreError::RateLimited { retry_after_seconds }) if retry_after_seconds >= 1
        ));
        throttles.check_login("victim@example.com", victim).unwrap();
        throttles
            .check_login("other@example.com", attacker)
            .unwrap();
        throttles.prune();
        assert!(throttles
            .check_login("victim@example.com", attacker)
            .is_err());
    }

    #[test]
    fn pruning_forgets_refilled_keys() {
        let settings = RateLimitSettings {
            // One request back every 100 ms.
            register_per_address: Rate::new(10, 1),
            ..RateLimitSettings::default()
        };
        let throttles = Throttles::new(&settings);
        for n in 0..50u8 {
            throttles.register(IpAddr::from([10, 0, 0, n])).unwrap();
        }
        assert!(throttles.tracked_keys() >= 50);
        // governor keeps a key one emission interval past its refill, to be safe: 200 ms.
        std::thread::sleep(Duration::from_millis(400));
        throttles.prune();
        assert_eq!(throttles.tracked_keys(), 0);
    }

    #[test]
    fn disabled_throttles_pass_everything() {
        let settings = RateLimitSettings {
            enabled: false,
            register_per_address: Rate::new(1, 3600),
            ..RateLimitSettings::default()
        };
        let throttles = Throttles::new(&settings);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..5 {
            throttles.register(ip).unwrap();
            assert_eq!(throttles.login_failed("a@example.com", ip), None);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn ips() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
                // IPv4-mapped IPv6, which must count as the IPv4 address.
                any::<[u8; 4]>()
                    .prop_map(|v4| IpAddr::V6(std::net::Ipv4Addr::from(v4).to_ipv6_mapped())),
                // From a small pool, so that trusted nets and entries overlap often.
                (0u8..4).prop_map(|last| IpAddr::from([10, 0, 0, last])),
            ]
        }

        /// X-Forwarded-For entries: addresses in every spelling, and garbage.
        fn entries() -> impl Strategy<Value = String> {
            prop_oneof![
                ips().prop_map(|ip| ip.to_string()),
                (ips(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port).to_string()),
                "\\PC{0,20}",
                "[0-9.:\\[\\], ]{0,30}",
            ]
        }

        fn xff() -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec(
                proptest::collection::vec(entries(), 0..4).prop_map(|list| list.join(",")),
                0..3,
            )
        }

        fn trusted() -> impl Strategy<Value = Vec<IpNet>> {
            proptest::collection::vec(
                prop_oneof![
                    (0u8..=32)
                        .prop_map(|len| IpNet::new(IpAddr::from([10, 0, 0, 0]), len).unwrap()),
                    (ips(), 0u8..=32).prop_map(|(ip, len)| IpNet::new(
                        canonical(ip),
                        len.min(if ip.is_ipv4() { 32 } else { 128 })
                    )
                    .unwrap()),
                ],
                0..3,
            )
        }

        fn header_map(values: &[String]) -> HeaderMap {
            let mut headers = HeaderMap::new();
            for value in values {
                if let Ok(value) = value.parse() {
                    headers.append("x-forwarded-for", value);
                }
            }
            headers
        }

        proptest! {
            #[test]
            fn an_untrusted_peer_is_the_client_whatever_it_sends(peer in ips(), values in xff(), trusted in trusted()) {
                let peer_canonical = canonical(peer);
                prop_assume!(!trusted.iter().any(|net| net.contains(&peer_canonical)));
                prop_assert_eq!(client_ip(peer, &header_map(&values), &trusted), peer_canonical);
            }

            #[test]
            fn the_client_is_the_peer_or_a_forwarded_entry(peer in ips(), values in xff(), trusted in trusted()) {
                let headers = header_map(&values);
                let client = client_ip(peer, &headers, &trusted);
                let forwarded: Vec<IpAddr> = values
                    .iter()
                    .flat_map(|value| value.split(','))
                    .filter_map(|entry| parse_forwarded(entry.trim()))
                    .collect();
                prop_assert!(client == canonical(peer) || forwarded.contains(&client), "{client} from {values:?}");
                // Mapped addresses never reach the throttles as IPv6.
                if let IpAddr::V6(v6) = client {
                    prop_assert!(v6.to_ipv4_mapped().is_none());
                }
                let _ = throttle_key(client);
            }

            #[test]
            fn every_spelling_of_an_address_parses_to_it(ip in ips(), port in any::<u16>()) {
                prop_assert_eq!(parse_forwarded(&ip.to_string()), Some(canonical(ip)));
                prop_assert_eq!(parse_forwarded(&SocketAddr::new(ip, port).to_string()), Some(canonical(ip)));
            }
        }
    }
}
