//! Webhooks and leak reports (SPEC §4): the wire types of `/v1/webhooks*` and `/v1/leaks*`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Absolute `http://` or `https://` URL, at most 2048 characters.
    pub url: String,
    /// At least one of `key.created`, `key.revoked`, `key.rotated`, `key.expiring`,
    /// `key.leaked`, `credits.low`, `session.reuse_detected`.
    pub events: Vec<String>,
}

/// A webhook as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// `whk_…`
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
}

/// A webhook as created: the only time its signing secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub view: WebhookView,
    /// `whsec_` and the base64 of 32 random bytes (the Standard Webhooks convention): the
    /// HMAC-SHA256 key of `webhook-signature`. It is never shown again.
    pub secret: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// An attempt got a 2xx answer.
    Delivered,
    /// Every attempt of the retry schedule failed.
    Failed,
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttemptView {
    pub at: String,
    /// The receiver's HTTP status; `null` when none came (refused target, connection error,
    /// timeout).
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// `msg_…`: also the `webhook-id` header of every attempt.
    pub id: String,
    pub event: String,
    pub status: DeliveryStatus,
    pub created_at: String,
    /// When the next attempt is due; `null` once delivered or failed.
    pub next_attempt_at: Option<String>,
    /// Oldest first.
    pub attempts: Vec<DeliveryAttemptView>,
}

/// `GET /v1/webhooks/{id}/deliveries`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// `POST /v1/leaks`: a key someone found where it should not be.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReportRequest {
    pub key: Secret,
    /// Where it was found (kept in the owner's audit log and the `key.leaked` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Whether a reported token was a live key; nothing more is ever said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakLabel {
    TruePositive,
    FalsePositive,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeakReportResponse {
    pub label: LeakLabel,
}

/// One match of GitHub's secret-scanning partner program (`POST /v1/leaks/github` takes an
/// array of them). Unknown fields are ignored: GitHub may add some.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GithubLeak {
    pub token: Secret,
    #[serde(rename = "type", default)]
    pub token_type: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
}

/// One answer of `POST /v1/leaks/github`, in the order of the report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GithubLeakLabel {
    pub token_raw: Secret,
    pub token_type: String,
    pub label: LeakLabel,
}
