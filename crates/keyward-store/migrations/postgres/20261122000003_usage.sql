-- Metering: usage events rolled up into one row per tenant, key and UTC day. Writes are
-- additive upserts (`total = usage_daily.total + excluded.total`), so several instances never
-- lose counts, and reading 30 days costs the same whatever the traffic.
-- `day` is the Unix day number (seconds / 86400, UTC). `completed` = succeeded + failed; the
-- rest of `total` is requests still in flight. No foreign keys: the writer stays one statement.

CREATE TABLE usage_daily (
    tenant_id        TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    day              BIGINT NOT NULL,
    total            BIGINT NOT NULL,
    succeeded        BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    duration_ms_sum  BIGINT NOT NULL,
    completed        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key_id, day)
);
CREATE INDEX usage_daily_by_tenant_day ON usage_daily(tenant_id, day);
