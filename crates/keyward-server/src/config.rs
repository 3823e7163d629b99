//! Configuration: defaults, then a TOML file, then `KEYWARD_*` environment variables, then
//! command-line flags; loaded once and validated into a typed [`Config`]. A bad value stops
//! start-up with a message naming the setting by its dotted name.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use keyward_core::{KeyAlphabet, KeyFormat};

use crate::gateway::GatewayConfig;
use serde::{Deserialize, Serialize};

/// Variables of the CLI and the test suite that share the prefix but are not server settings.
const NOT_SETTINGS: &[&str] = &["KEYWARD_URL", "KEYWARD_API_KEY", "KEYWARD_CONFIG_DIR"];

/// The settings as written in the file (SPEC §7). Every field has a safe default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    /// Base of links and `iss` of tokens; default `http://<listen>`.
    pub public_url: Option<String>,
    /// `text` (default) or `json` log lines.
    pub log_format: String,
    /// CIDRs whose `X-Forwarded-For` is believed (SPEC §7); nobody else's is. In the
    /// environment a comma-separated list: `KEYWARD_TRUSTED_PROXIES=10.0.0.0/8,::1/128`.
    #[serde(deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
    pub rate_limits: RateLimitSettings,
    /// `redis://…`: where instances share the rate limits of keys (`keys.rate_limit_store`).
    pub redis_url: Option<String>,
    pub database: DatabaseSettings,
    pub keys: KeySettings,
    pub sessions: SessionSettings,
    pub device: DeviceSettings,
    pub limits: LimitSettings,
    pub usage: UsageSettings,
    pub gateway: GatewaySettings,
    pub webhooks: WebhookSettings,
    pub leaks: LeakSettings,
}

/// Webhook delivery (SPEC §4 "Webhooks", SECURITY.md "Webhooks").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// How often each instance looks for due deliveries.
    pub poll_interval_ms: u64,
    /// How long a receiver may take to answer an attempt.
    pub timeout_seconds: u64,
    /// Deliver to targets that resolve to loopback, private, link-local or unspecified
    /// addresses. Off by default: a user's webhook must not reach the server's own network
    /// (SSRF). Turn it on only where every user is trusted, or for tests.
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            timeout_seconds: 10,
            allow_private_targets: false,
        }
    }
}

/// Leak reports (SPEC §4 "Leak reports").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakSettings {
    /// Revoke a reported live key at once.
    pub auto_revoke: bool,
    /// The keys GitHub signs its secret-scanning reports with, as its
    /// `/meta/public_keys/secret_scanning` lists them. None: `/v1/leaks/github` refuses all.
    pub github_public_keys: Vec<GithubPublicKeySettings>,
}

impl Default for LeakSettings {
    fn default() -> Self {
        Self {
            auto_revoke: true,
            github_public_keys: Vec::new(),
        }
    }
}

/// `{key_identifier = "…", key = "-----BEGIN PUBLIC KEY-----…"}`: a PEM SPKI ECDSA P-256 key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubPublicKeySettings {
    pub key_identifier: String,
    pub key: String,
}

/// A GitHub secret-scanning key, parsed.
#[derive(Debug, Clone)]
pub struct GithubPublicKey {
    pub key_identifier: String,
    pub key: p256::ecdsa::VerifyingKey,
}

/// A list, or one string of comma-separated items (as an environment variable gives it).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(deserializer)? {
        ListOrCommas::List(list) => list,
        ListOrCommas::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `{requests, per_seconds}`: at most `requests` in a burst, refilled evenly over
/// `per_seconds` (a GCRA quota: one request comes back every `per_seconds / requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub requests: u32,
    pub per_seconds: u32,
}

impl Rate {
    pub const fn new(requests: u32, per_seconds: u32) -> Self {
        Self {
            requests,
            per_seconds,
        }
    }
}

/// Throttling of the routes an attacker hammers (issue 8, SECURITY.md "Brute force and
/// abuse"). Counted in memory, per instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Failed logins of one account (email), from any address.
    pub login_per_account: Rate,
    /// Failed logins from one client address, whatever the account.
    pub login_per_address: Rate,
    /// Registrations attempted from one client address.
    pub register_per_address: Rate,
    /// Refresh-token exchanges from one client address.
    pub refresh_per_address: Rate,
    /// Device codes issued to one client address.
    pub device_per_address: Rate,
    /// Failed key checks from one client address: `valid: false` from `/v1/keys/verify` and
    /// 401s from bad API keys.
    pub verify_failures_per_address: Rate,
    /// Wrong device user codes entered from one client address (on top of the 10 per user
    /// per 10 minutes the device flow keeps in the database).
    pub device_entry_failures_per_address: Rate,
    /// Leak reports (`POST /v1/leaks`, no credential) from one client address.
    pub leak_reports_per_address: Rate,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            login_per_account: Rate::new(10, 300),
            login_per_address: Rate::new(50, 300),
            register_per_address: Rate::new(20, 3600),
            refresh_per_address: Rate::new(600, 60),
            device_per_address: Rate::new(30, 600),
            verify_failures_per_address: Rate::new(300, 60),
            device_entry_failures_per_address: Rate::new(20, 600),
            leak_reports_per_address: Rate::new(30, 60),
        }
    }
}

impl RateLimitSettings {
    /// Every per-route rate with its dotted name.
    pub fn rates(&self) -> [(&'static str, Rate); 8] {
        [
            ("rate_limits.login_per_account", self.login_per_account),
            ("rate_limits.login_per_address", self.login_per_address),
            (
                "rate_limits.register_per_address",
                self.register_per_address,
            ),
            ("rate_limits.refresh_per_address", self.refresh_per_address),
            ("rate_limits.device_per_address", self.device_per_address),
            (
                "rate_limits.verify_failures_per_address",
                self.verify_failures_per_address,
            ),
            (
                "rate_limits.device_entry_failures_per_address",
                self.device_entry_failures_per_address,
            ),
            (
                "rate_limits.leak_reports_per_address",
                self.leak_reports_per_address,
            ),
        ]
    }
}

/// The gateway (SPEC §4 "Verification"): a second listener that guards an upstream HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Address of the gateway listener; none = no gateway.
    pub listen: Option<String>,
    /// Base URL requests are forwarded to (`http://` or `https://`); its path prefixes theirs.
    pub upstream: Option<String>,
    /// How long the upstream may take to start answering before the client gets 504.
    pub timeout_seconds: u64,
    /// Scopes some requests need beyond a valid credential; every matching rule applies.
    pub routes: Vec<GatewayRouteSettings>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: None,
            upstream: None,
            timeout_seconds: 30,
            routes: Vec::new(),
        }
    }
}

/// `{route = "POST /flows/*", scopes = ["flows:invoke"]}`: a method (or none for every method)
/// and a path pattern where `*` is one segment, or everything below when it comes last.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRouteSettings {
    pub route: String,
    pub scopes: Vec<String>,
}

/// Metering (SPEC §4 "Usage"): the queue between requests and the batch writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// `false` meters nothing: for installations that bill elsewhere, and benchmarks.
    pub enabled: bool,
    /// Usage events held in memory before new ones are dropped (and counted in `/metrics`).
    pub queue_capacity: usize,
    /// Events that make the writer write at once.
    pub batch_size: usize,
    /// The writer writes at least this often.
    pub flush_interval_ms: u64,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_capacity: 100_000,
            batch_size: 1_000,
            flush_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Most connections per instance.
    pub max_connections: u32,
    /// How long a request waits for a connection before answering 503 `unavailable`.
    pub connect_timeout_seconds: u64,
    /// Longest a statement may run (PostgreSQL `statement_timeout`, SQLite busy timeout).
    pub statement_timeout_seconds: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout_seconds: 3,
            statement_timeout_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    pub prefix: String,
    pub alphabet: String,
    pub length: usize,
    pub checksum: bool,
    pub max_per_user: u32,
    pub create_on_register: bool,
    /// Keys the verification cache holds at most (about 200 bytes each); 0 turns it off.
    pub cache_capacity: u32,
    /// Where the rate limits of keys are counted: `auto` (Redis with `redis_url`, else the
    /// database on PostgreSQL, else memory), `memory`, `redis` or `database`.
    pub rate_limit_store: crate::keylimits::RateLimitStore,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    pub access_token_ttl_seconds: i64,
    pub refresh_token_ttl_days: i64,
    pub refresh_reuse_grace_seconds: i64,
    pub audience: String,
    /// How often each instance rereads the signing keys: after `keyward admin
    /// rotate-signing-key` it signs with the new key within this time.
    pub signing_key_reload_seconds: i64,
}

/// The device authorization grant (RFC 8628) of `keyward login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSettings {
    /// Lifetime of a device code and its user code.
    pub code_ttl_seconds: i64,
    /// Seconds a client waits between polls (each `slow_down` adds 5 for that code).
    pub interval_seconds: i64,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            code_ttl_seconds: 600,
            interval_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub body_bytes: usize,
    /// Password hashes computed at once (argon2id, 19 MiB each); default: the number of CPUs.
    pub password_hash_concurrency: Option<usize>,
    /// Logins, registrations and password changes that may wait for a hashing thread; past
    /// that they get 503 `unavailable` with `Retry-After` at once. Default: 16 per thread.
    pub password_hash_queue: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7777".into(),
            database_url: "sqlite://keyward.db".into(),
            public_url: None,
            redis_url: None,
            log_format: "text".into(),
            trusted_proxies: Vec::new(),
            rate_limits: RateLimitSettings::default(),
            database: DatabaseSettings::default(),
            keys: KeySettings::default(),
            sessions: SessionSettings::default(),
            device: DeviceSettings::default(),
            limits: LimitSettings::default(),
            usage: UsageSettings::default(),
            gateway: GatewaySettings::default(),
            webhooks: WebhookSettings::default(),
            leaks: LeakSettings::default(),
        }
    }
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            prefix: "kw_".into(),
            alphabet: "base62".into(),
            length: 32,
            checksum: true,
            max_per_user: 10,
            create_on_register: false,
            cache_capacity: 1_000_000,
            rate_limit_store: crate::keylimits::RateLimitStore::Auto,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            access_token_ttl_seconds: 900,
            refresh_token_ttl_days: 30,
            refresh_reuse_grace_seconds: 10,
            audience: "keyward".into(),
            signing_key_reload_seconds: 30,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            body_bytes: 65_536,
            password_hash_concurrency: None,
            password_hash_queue: None,
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub gateway_listen: Option<String>,
    pub upstream: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub pool: keyward_store::PoolSettings,
    pub public_url: String,
    pub json_logs: bool,
    pub key_format: KeyFormat,
    /// `trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `None` when no gateway is configured.
    pub gateway: Option<GatewayConfig>,
    /// `leaks.github_public_keys`, parsed.
    pub github_public_keys: Vec<GithubPublicKey>,
    pub settings: Settings,
}

/// Every setting's dotted name, derived from the defaults so the list cannot drift.
pub fn setting_names() -> BTreeSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = value {
            for (key, child) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                if child.is_object() {
                    walk(&name, child, out);
                } else {
                    out.insert(name);
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    if let Ok(defaults) = serde_json::to_value(Settings::default()) {
        walk("", &defaults, &mut names);
    }
    names
}

/// `KEYWARD_KEYS__LENGTH` → `keys.length`.
fn setting_of_variable(variable: &str) -> Option<String> {
    variable
        .strip_prefix("KEYWARD_")
        .map(|rest| rest.to_lowercase().replace("__", "."))
}

impl Config {
    /// Loads file → environment → flags, validates, and returns warnings to log once logging
    /// is up (unknown `KEYWARD_*` variables).
    pub fn load(
        file: Option<&PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "--config: file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let known = setting_names();
        let mut warnings = Vec::new();
        let mut variables = Vec::new();
        for (name, value) in env {
            if !name.starts_with("KEYWARD_")
                || NOT_SETTINGS.contains(&name.as_str())
                || name.starts_with("KEYWARD_TEST_")
            {
                continue;
            }
            match setting_of_variable(&name) {
                Some(setting) if known.contains(&setting) => variables.push((name, value)),
                _ => warnings.push(format!(
                    "ignoring environment variable {name}: it names no setting"
                )),
            }
        }
        // The validated variables, not the process environment: what `load` was given is
        // exactly what it uses (tests pass their own), and values parse as figment parses env.
        for (name, value) in &variables {
            if let Some(setting) = setting_of_variable(name) {
                let parsed = value
                    .parse::<figment::value::Value>()
                    .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
                figment = figment.merge(Serialized::default(&setting, parsed));
            }
        }
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        if let Some(listen) = &overrides.gateway_listen {
            figment = figment.merge(Serialized::default("gateway.listen", listen));
        }
        if let Some(upstream) = &overrides.upstream {
            figment = figment.merge(Serialized::default("gateway.upstream", upstream));
        }
        let settings: Settings = figment
            .extract()
            .map_err(|error| describe_figment_error(error, &variables))?;
        Ok((Self::from_settings(settings)?, warnings))
    }

    /// Validates settings built in code (tests) or loaded by [`Config::load`].
    pub fn from_settings(settings: Settings) -> Result<Self, ConfigError> {
        let bad = |name: &str, message: String| Err(ConfigError(format!("{name}: {message}")));
        let listen: SocketAddr = match settings.listen.parse() {
            Ok(addr) => addr,
            Err(_) => {
                return bad(
                    "listen",
                    format!(
                        "{:?} is not an address such as 127.0.0.1:7777",
                        settings.listen
                    ),
                )
            }
        };
        if keyward_store::Backend::of_url(&settings.database_url).is_none() {
            return bad(
                "database_url",
                "must start with sqlite:// or postgres://".into(),
            );
        }
        match &settings.redis_url {
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                return bad(
                    "redis_url",
                    "must start with redis:// or rediss:// (e.g. redis://127.0.0.1:6379)".into(),
                )
            }
            None if settings.keys.rate_limit_store == crate::keylimits::RateLimitStore::Redis => {
                return bad(
                    "keys.rate_limit_store",
                    "\"redis\" needs redis_url to be set".into(),
                )
            }
            _ => {}
        }
        let public_url = match &settings.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(url) => {
                return bad(
                    "public_url",
                    format!("{url:?} must start with http:// or https://"),
                )
            }
            None => format!("http://{listen}"),
        };
        let json_logs = match settings.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return bad(
                    "log_format",
                    format!("{other:?} must be \"text\" or \"json\""),
                )
            }
        };
        let alphabet = KeyAlphabet::parse(&settings.keys.alphabet)
            .map_err(|message| ConfigError(format!("keys.alphabet: {message}")))?;
        let key_format = KeyFormat::new(
            &settings.keys.prefix,
            alphabet,
            settings.keys.length,
            settings.keys.checksum,
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        let ranges: [(&str, i64, i64, i64); 18] = [
            (
                "webhooks.poll_interval_ms",
                settings.webhooks.poll_interval_ms as i64,
                10,
                60_000,
            ),
            (
                "webhooks.timeout_seconds",
                settings.webhooks.timeout_seconds as i64,
                1,
                60,
            ),
            (
                "gateway.timeout_seconds",
                settings.gateway.timeout_seconds as i64,
                1,
                3600,
            ),
            (
                "usage.queue_capacity",
                settings.usage.queue_capacity as i64,
                1,
                10_000_000,
            ),
            (
                "usage.batch_size",
                settings.usage.batch_size as i64,
                1,
                1_000_000,
            ),
            (
                "usage.flush_interval_ms",
                settings.usage.flush_interval_ms as i64,
                // "Events show within 5 seconds" (SPEC §4): the writer must run sooner.
                10,
                4_000,
            ),
            (
                "database.max_connections",
                i64::from(settings.database.max_connections),
                1,
                1000,
            ),
            (
                "database.connect_timeout_seconds",
                settings.database.connect_timeout_seconds as i64,
                1,
                300,
            ),
            (
                "database.statement_timeout_seconds",
                settings.database.statement_timeout_seconds as i64,
                1,
                3600,
            ),
            (
                "keys.max_per_user",
                i64::from(settings.keys.max_per_user),
                1,
                100_000,
            ),
            (
                "keys.cache_capacity",
                i64::from(settings.keys.cache_capacity),
                0,
                100_000_000,
            ),
            (
                "sessions.access_token_ttl_seconds",
                settings.sessions.access_token_ttl_seconds,
                // 1 s lets the end-to-end tests see a token expire without waiting a minute.
                1,
                86_400,
            ),
            (
                "sessions.refresh_token_ttl_days",
                settings.sessions.refresh_token_ttl_days,
                1,
                3650,
            ),
            (
                "sessions.refresh_reuse_grace_seconds",
                settings.sessions.refresh_reuse_grace_seconds,
                0,
                3600,
            ),
            (
                // At most 300: a retired key keeps verifying that long past the token lifetime
                // (`keyward_core::RETIRED_KEY_GRACE_SECONDS`).
                "sessions.signing_key_reload_seconds",
                settings.sessions.signing_key_reload_seconds,
                1,
                300,
            ),
            (
                "device.code_ttl_seconds",
                settings.device.code_ttl_seconds,
                60,
                86_400,
            ),
            (
                "device.interval_seconds",
                settings.device.interval_seconds,
                1,
                60,
            ),
            (
                "limits.body_bytes",
                settings.limits.body_bytes as i64,
                1024,
                16 * 1024 * 1024,
            ),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return bad(name, format!("{value} is out of range {min}..={max}"));
            }
        }
        if settings.sessions.audience.trim().is_empty() {
            return bad("sessions.audience", "must not be empty".into());
        }
        if settings.limits.password_hash_concurrency == Some(0) {
            return bad(
                "limits.password_hash_concurrency",
                "must be at least 1".into(),
            );
        }
        if settings.limits.password_hash_queue == Some(0) {
            return bad("limits.password_hash_queue", "must be at least 1".into());
        }
        for (name, rate) in settings.rate_limits.rates() {
            if !(1..=1_000_000).contains(&rate.requests) {
                return bad(
                    &format!("{name}.requests"),
                    format!("{} is out of range 1..=1000000", rate.requests),
                );
            }
            if !(1..=86_400).contains(&rate.per_seconds) {
                return bad(
                    &format!("{name}.per_seconds"),
                    format!("{} is out of range 1..=86400", rate.per_seconds),
                );
            }
        }
        let trusted_proxies = parse_trusted_proxies(&settings.trusted_proxies)?;
        let gateway = GatewayConfig::from_settings(&settings.gateway).map_err(ConfigError)?;
        let github_public_keys = parse_github_keys(&settings.leaks.github_public_keys)?;
        Ok(Self {
            github_public_keys,
            trusted_proxies,
            listen,
            gateway,
            database_url: settings.database_url.clone(),
            pool: keyward_store::PoolSettings {
                max_connections: settings.database.max_connections,
                connect_timeout: std::time::Duration::from_secs(
                    settings.database.connect_timeout_seconds,
                ),
                statement_timeout: std::time::Duration::from_secs(
                    settings.database.statement_timeout_seconds,
                ),
            },
            public_url,
            json_logs,
            key_format,
            settings,
        })
    }
}

/// `leaks.github_public_keys`: each a non-empty identifier and a PEM SPKI P-256 key.
fn parse_github_keys(
    items: &[GithubPublicKeySettings],
) -> Result<Vec<GithubPublicKey>, ConfigError> {
    use p256::pkcs8::DecodePublicKey as _;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let name = format!("leaks.github_public_keys[{index}]");
            let identifier = item.key_identifier.trim();
            if identifier.is_empty() || identifier.len() > 256 {
                return Err(ConfigError(format!(
                    "{name}.key_identifier: must be 1 to 256 characters"
                )));
            }
            let key =
                p256::ecdsa::VerifyingKey::from_public_key_pem(item.key.trim()).map_err(|_| {
                    ConfigError(format!(
                        "{name}.key: not a PEM public key (-----BEGIN PUBLIC KEY-----) of \
                         ECDSA P-256, as GitHub's /meta/public_keys/secret_scanning lists them"
                    ))
                })?;
            Ok(GithubPublicKey {
                key_identifier: identifier.to_owned(),
                key,
            })
        })
        .collect()
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
fn parse_trusted_proxies(items: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    ConfigError(format!(
                        "trusted_proxies: {item:?} is not a CIDR such as 10.0.0.0/8 or an address"
                    ))
                })
        })
        .collect()
}

fn describe_figment_error(error: figment::Error, variables: &[(String, String)]) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|error| {
            let mut path = error.path.join(".");
            let kind = match &error.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    path = if path.is_empty() {
                        field.clone()
                    } else {
                        format!("{path}.{field}")
                    };
                    "unknown setting".to_owned()
                }
                other => other.to_string(),
            };
            let variable = format!("KEYWARD_{}", path.to_uppercase().replace('.', "__"));
            let source = if variables.iter().any(|(name, _)| *name == variable) {
                format!(" (from environment variable {variable})")
            } else {
                error
                    .metadata
                    .as_ref()
                    .and_then(|metadata| metadata.source.as_ref())
                    .map(|source| format!(" (from {source})"))
                    .unwrap_or_default()
            };
            if path.is_empty() {
                format!("{kind}{source}")
            } else {
                format!("{path}: {kind}{source}")
            }
        })
        .collect();
    ConfigError(lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keyward.toml");
        std::fs::write(&file, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let result = Config::load(Some(&file), env, &Overrides::default());
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let (config, warnings) = load("", &[]).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(config.listen.to_string(), "127.0.0.1:7777");
        assert_eq!(config.database_url, "sqlite://keyward.db");
        assert_eq!(config.public_url, "http://127.0.0.1:7777");
        assert_eq!(config.key_format, KeyFormat::default());
        assert_eq!(config.settings.sessions.access_token_ttl_seconds, 900);
        assert_eq!(config.settings.device.code_ttl_seconds, 600);
        assert_eq!(config.settings.device.interval_seconds, 5);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keyward.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[keys]\nprefix = \"ab_\"\nlength = 40\n",
        )
        .unwrap();
        let env = vec![("KEYWARD_KEYS__LENGTH".to_string(), "48".to_string())];
        let overrides = Overrides {
            listen: Some("127.0.0.1:2".into()),
            ..Overrides::default()
        };
        let (config, _) = Config::load(Some(&file), env, &overrides).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.settings.keys.prefix, "ab_");
        assert_eq!(config.settings.keys.length, 48);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let err = load("[keys]\nlength = 16\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("keys.length"), "{err}");
        let err = load("[keys]\nlenght = 40\n", &[]).unwrap_err().to_string();
        assert!(
            err.contains("keys.lenght") && err.contains("unknown setting"),
            "{err}"
        );
        let err = load("", &[("KEYWARD_KEYS__LENGTH", "abc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.length"), "{err}");
        let err = load("listen = \"nowhere\"\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("listen"), "{err}");
        let err = load("[sessions]\naccess_token_ttl_seconds = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sessions.access_token_ttl_seconds"),
            "{err}"
        );
        let err = load("[keys]\nalphabet = \"base64\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("keys.alphabet"), "{err}");
        let err = load("[device]\ninterval_seconds = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("device.interval_seconds"), "{err}");
    }

    #[test]
    fn trusted_proxies_and_rate_limits_are_checked() {
        let (config, _) = load("", &[]).unwrap();
        assert!(config.trusted_proxies.is_empty(), "trust nobody by default");
        assert!(
            config.settings.rate_limits.enabled,
            "throttling is on by default"
        );
        let (config, _) = load("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n", &[]).unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        let (config, _) = load(
            "",
            &[("KEYWARD_TRUSTED_PROXIES", "127.0.0.1/32, 10.1.0.0/16")],
        )
        .unwrap();
        assert_eq!(
            config.trusted_proxies,
            vec![
                "127.0.0.1/32".parse::<ipnet::IpNet>().unwrap(),
                "10.1.0.0/16".parse().unwrap()
            ]
        );
        let err = load("trusted_proxies = [\"10.0.0.0/33\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("trusted_proxies"), "{err}");
        let err = load("", &[("KEYWARD_TRUSTED_PROXIES", "nonsense")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("trusted_proxies"), "{err}");
        let err = load(
            "[rate_limits.login_per_account]\nrequests = 0\nper_seconds = 60\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("rate_limits.login_per_account.requests"),
            "{err}"
        );
        let err = load(
            "",
            &[("KEYWARD_RATE_LIMITS__REFRESH_PER_ADDRESS__PER_SECONDS", "0")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("rate_limits.refresh_per_address.per_seconds"),
            "{err}"
        );
        let err = load("[rate_limits]\nlogin_per_minute = 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limits.login_per_minute"), "{err}");
        let (config, warnings) = load("", &[("KEYWARD_RATE_LIMITS__ENABLED", "false")]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!config.settings.rate_limits.enabled);
        let err = load("[limits]\npassword_hash_queue = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("limits.password_hash_queue"), "{err}");
    }

    #[test]
    fn webhook_and_leak_settings_are_checked() {
        use p256::pkcs8::EncodePublicKey as _;
        let (config, _) = load("", &[]).unwrap();
        assert!(!config.settings.webhooks.allow_private_targets);
        assert!(config.settings.leaks.auto_revoke);
        assert!(config.github_public_keys.is_empty());
        let err = load("[webhooks]\npoll_interval_ms = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("webhooks.poll_interval_ms"), "{err}");
        let err = load("", &[("KEYWARD_WEBHOOKS__TIMEOUT_SECONDS", "600")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("webhooks.timeout_seconds"), "{err}");
        let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let pem = signing
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let toml =
            format!("[[leaks.github_public_keys]]\nkey_identifier = \"k1\"\nkey = '''\n{pem}'''\n");
        let (config, _) = load(&toml, &[]).unwrap();
        assert_eq!(config.github_public_keys.len(), 1);
        assert_eq!(config.github_public_keys[0].key_identifier, "k1");
        let err = load(
            "[[leaks.github_public_keys]]\nkey_identifier = \"k1\"\nkey = \"nope\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("leaks.github_public_keys[0].key"), "{err}");
        let err = load(
            &format!("[[leaks.github_public_keys]]\nkey_identifier = \"\"\nkey = '''\n{pem}'''\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("leaks.github_public_keys[0].key_identifier"),
            "{err}"
        );
        let err = load("[leaks]\ngithub_public_keys = [{ key = \"x\" }]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaks.github_public_keys"), "{err}");
    }

    #[test]
    fn unknown_variables_warn_and_cli_variables_are_quiet() {
        let (_, warnings) = load(
            "",
            &[
                ("KEYWARD_NOPE", "1"),
                ("KEYWARD_URL", "http://x"),
                ("KEYWARD_API_KEY", "kw_x"),
                ("KEYWARD_TEST_POSTGRES_URL", "postgres://"),
            ],
        )
        .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("KEYWARD_NOPE"));
    }

    #[test]
    fn setting_names_cover_nested_and_optional() {
        let names = setting_names();
        for name in [
            "listen",
            "public_url",
            "keys.length",
            "sessions.audience",
            "device.code_ttl_seconds",
            "device.interval_seconds",
            "limits.body_bytes",
        ] {
            assert!(names.contains(name), "{name}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// TOML values of every type, written as TOML text. JSON string escapes are TOML's too.
        fn toml_values() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (-5i64..100_000).prop_map(|n| n.to_string()),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| format!("{f:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                "\\PC{0,30}".prop_map(|text| serde_json::Value::from(text).to_string()),
                prop_oneof![
                    Just("127.0.0.1:0"),
                    Just("[::1]:80"),
                    Just("10.0.0.0/8"),
                    Just("base62"),
                    Just("hex"),
                    Just("json"),
                    Just("text"),
                    Just("sqlite://x.db"),
                    Just("http://127.0.0.1:9"),
                    Just(""),
                ]
                .prop_map(|text| format!("{text:?}")),
            ];
            leaf.prop_recursive(2, 8, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|items| format!("[{}]", items.join(", "))),
                    proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|pairs| {
                        let mut seen = BTreeSet::new();
                        let fields: Vec<String> = pairs
                            .into_iter()
                            .filter(|(key, _)| seen.insert(key.clone()))
                            .map(|(key, value)| format!("{key} = {value}"))
                            .collect();
                        format!("{{ {} }}", fields.join(", "))
                    }),
                ]
            })
        }

        fn settings() -> impl Strategy<Value = String> {
            proptest::sample::select(setting_names().into_iter().collect::<Vec<_>>())
        }

        /// `a.b.c = v` as a TOML document: table `[a.b]`, then `c = v`.
        fn document(setting: &str, value: &str) -> String {
            match setting.rsplit_once('.') {
                Some((table, key)) => format!("[{table}]\n{key} = {value}\n"),
                None => format!("{setting} = {value}\n"),
            }
        }

        /// The error names the setting by its dotted path, so the operator knows what to fix; or,
        /// for a rule across settings of one table, the other setting of that table (an empty
        /// `gateway.listen` still turns the gateway on, which then needs `gateway.upstream`).
        fn names_the_setting(err: &str, setting: &str) -> bool {
            err.contains(setting)
                || setting
                    .rsplit_once('.')
                    .is_some_and(|(table, _)| err.starts_with(&format!("{table}.")))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn any_toml_value_for_any_setting_loads_or_names_the_setting(setting in settings(), value in toml_values()) {
                let toml = document(&setting, &value);
                if let Err(err) = load(&toml, &[]) {
                    let err = err.to_string();
                    prop_assert!(names_the_setting(&err, &setting), "{toml}\n=> {err}");
                }
            }

            #[test]
            fn any_environment_value_for_any_setting_loads_or_names_the_setting(setting in settings(), value in "\\PC{0,30}|[0-9]{1,12}|true|false") {
                let variable = format!("KEYWARD_{}", setting.to_uppercase().replace('.', "__"));
                if let Err(err) = load("", &[(&variable, &value)]) {
                    let err = err.to_string();
                    prop_assert!(names_the_setting(&err, &setting), "{variable}={value:?}\n=> {err}");
                }
            }
        }
    }
}
