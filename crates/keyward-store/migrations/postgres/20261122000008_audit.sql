-- The audit log (keyward-core's audit.rs): one row per security event. `seq` orders the rows
-- (newest first for `GET /v1/audit`); `id` is the public id, also the page cursor. No secret is
-- ever stored here: only ids, a bounded control-free user agent and a short note.
CREATE TABLE audit_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    -- NULL for events no tenant owns (a signing-key rotation): shown to no tenant.
    tenant_id TEXT,
    -- A user id, or 'operator' for `keyward admin` commands.
    actor TEXT NOT NULL,
    user_id TEXT,
    event TEXT NOT NULL,
    client_address TEXT,
    user_agent TEXT CHECK (user_agent IS NULL OR char_length(user_agent) <= 256),
    key_id TEXT,
    session_id TEXT,
    detail TEXT CHECK (detail IS NULL OR char_length(detail) <= 200),
    -- Unix seconds.
    created_at BIGINT NOT NULL
);
-- A tenant's newest-first pages.
CREATE INDEX audit_events_tenant_seq ON audit_events (tenant_id, seq DESC);
