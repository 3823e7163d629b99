-- Keyward schema, PostgreSQL (the SQLite schema with its types). Times are Unix seconds (UTC); secrets appear only as SHA-256 hashes.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    email          TEXT NOT NULL UNIQUE,
    name           TEXT,
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    created_at  BIGINT NOT NULL,
    spent_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE api_keys (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    user_id          TEXT NOT NULL REFERENCES users(id),
    key_hash         BYTEA NOT NULL UNIQUE,
    key_start        TEXT NOT NULL,
    key_end          TEXT NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT,
    scopes           TEXT NOT NULL,
    meta             TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT,
    expires_in_days  BIGINT,
    last_used_at     BIGINT,
    revoked_at       BIGINT
);
CREATE INDEX api_keys_by_owner ON api_keys(user_id, tenant_id, seq);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    private_key  BYTEA NOT NULL,
    public_key   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
);
