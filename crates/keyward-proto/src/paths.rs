//! Route paths, written in full, shared by the server's router and the clients.

pub const REGISTER: &str = "/v1/auth/register";
pub const LOGIN: &str = "/v1/auth/login";
pub const REFRESH: &str = "/v1/auth/refresh";
pub const LOGOUT: &str = "/v1/auth/logout";
pub const ME: &str = "/v1/auth/me";
pub const PASSWORD: &str = "/v1/auth/password";
pub const DEVICE_CODE: &str = "/v1/auth/device/code";
pub const DEVICE_TOKEN: &str = "/v1/auth/device/token";
pub const DEVICE_APPROVE: &str = "/v1/auth/device/approve";
pub const KEYS: &str = "/v1/keys";
/// `axum` path syntax; clients substitute `{id}`.
pub const KEY: &str = "/v1/keys/{id}";
pub const KEY_ROTATE: &str = "/v1/keys/{id}/rotate";
pub const KEYS_VERIFY: &str = "/v1/keys/verify";
pub const WEBHOOKS: &str = "/v1/webhooks";
pub const WEBHOOK: &str = "/v1/webhooks/{id}";
pub const WEBHOOK_DELIVERIES: &str = "/v1/webhooks/{id}/deliveries";
pub const LEAKS: &str = "/v1/leaks";
pub const LEAKS_GITHUB: &str = "/v1/leaks/github";
pub const USAGE: &str = "/v1/usage";
pub const AUDIT: &str = "/v1/audit";
pub const TENANT: &str = "/v1/tenant";
pub const JWKS: &str = "/.well-known/jwks.json";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";
pub const OPENAPI: &str = "/openapi.json";
