-- The device authorization grant (RFC 8628), PostgreSQL (the SQLite schema with its types).
-- The device code appears only as its SHA-256; the API key a redemption mints is stored in
-- api_keys like any other, never here.

CREATE TABLE device_codes (
    device_code_hash  BYTEA PRIMARY KEY,
    user_code         TEXT NOT NULL UNIQUE,
    client_name       TEXT,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    interval_seconds  BIGINT NOT NULL,
    last_polled_at    BIGINT,
    user_id           TEXT REFERENCES users(id),
    tenant_id         TEXT REFERENCES tenants(id),
    approved_at       BIGINT,
    denied_at         BIGINT,
    redeemed_at       BIGINT,
    key_id            TEXT
);
CREATE INDEX device_codes_by_expiry ON device_codes(expires_at);

-- Failed approvals (unknown, expired or already decided user codes), counted per user so that
-- user codes cannot be guessed; old rows are deleted as new ones come.
CREATE TABLE device_approval_failures (
    user_id    TEXT NOT NULL REFERENCES users(id),
    failed_at  BIGINT NOT NULL
);
CREATE INDEX device_approval_failures_by_user ON device_approval_failures(user_id, failed_at);
