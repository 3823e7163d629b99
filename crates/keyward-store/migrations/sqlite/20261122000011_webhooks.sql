-- Webhooks (keyward-core's webhooks.rs): a user's endpoints, the delivery queue and every
-- attempt. `secret` is the Standard Webhooks signing secret (`whsec_…`), kept in the clear
-- because every instance must sign with it (SECURITY.md); it grants nothing at Keyward.
CREATE TABLE webhooks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    url TEXT NOT NULL CHECK (length(url) <= 2048),
    -- The subscribed event names, space-separated with a space at each end
    -- (' key.created key.revoked '), so `events LIKE '% key.revoked %'` finds subscribers.
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    -- Unix seconds.
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_owner ON webhooks (user_id, tenant_id);

-- One row per event and webhook. A row is sent by whichever instance leases it (`lease`,
-- `lease_until`, set by a conditional UPDATE), so exactly one instance makes each attempt.
CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- `msg_…`: the `webhook-id` header.
    id TEXT NOT NULL UNIQUE,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    -- The exact body of every attempt.
    payload TEXT NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    status TEXT NOT NULL,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    -- When pending: when the next attempt is due.
    next_attempt_at BIGINT,
    lease TEXT,
    lease_until BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (lease);

CREATE TABLE webhook_attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    -- NULL when no answer came.
    status_code BIGINT,
    error TEXT CHECK (error IS NULL OR length(error) <= 200),
    duration_ms BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, seq);

-- Keys whose `key.expiring` event was emitted: each once, whichever instance scanned.
CREATE TABLE key_expiry_notices (
    key_id TEXT PRIMARY KEY,
    notified_at BIGINT NOT NULL
);
