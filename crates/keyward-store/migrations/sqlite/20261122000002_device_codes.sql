-- The device authorization grant (RFC 8628). The device code appears only as its SHA-256; the
-- API key a redemption mints is stored in api_keys like any other, never here.

CREATE TABLE device_codes (
    device_code_hash  BLOB PRIMARY KEY,
    user_code         TEXT NOT NULL UNIQUE,
    client_name       TEXT,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    interval_seconds  INTEGER NOT NULL,
    last_polled_at    INTEGER,
    user_id           TEXT REFERENCES users(id),
    tenant_id         TEXT REFERENCES tenants(id),
    approved_at       INTEGER,
    denied_at         INTEGER,
    redeemed_at       INTEGER,
    key_id            TEXT
);
CREATE INDEX device_codes_by_expiry ON device_codes(expires_at);

-- Failed approvals (unknown, expired or already decided user codes), counted per user so that
-- user codes cannot be guessed; old rows are deleted as new ones come.
CREATE TABLE device_approval_failures (
    user_id    TEXT NOT NULL REFERENCES users(id),
    failed_at  INTEGER NOT NULL
);
CREATE INDEX device_approval_failures_by_user ON device_approval_failures(user_id, failed_at);
