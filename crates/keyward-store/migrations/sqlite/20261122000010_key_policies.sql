-- Key policies (SPEC §4 "Key policies"). A key disabled by its owner has `disabled_at` (Unix
-- seconds) until enabled again; NULL while enabled. A rate limit is `rate_limit_requests` per
-- `rate_limit_per_seconds` (both NULL: none). Credits: `credits_remaining` (NULL: no credits)
-- and an optional refill of `credits_refill_amount` each `credits_refill_interval` ('daily' or
-- 'monthly'), applied lazily by the spending statement; `credits_refilled_at` is the start of
-- the period last refilled, `credits_reference` the amount `credits.low` compares with.
ALTER TABLE api_keys ADD COLUMN disabled_at BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_limit_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_limit_per_seconds BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_amount BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_interval TEXT;
ALTER TABLE api_keys ADD COLUMN credits_refilled_at BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_reference BIGINT;

-- The rate limits of keys when instances share them through the database: the GCRA's
-- theoretical arrival time of each key, in microseconds since the Unix epoch.
CREATE TABLE key_rate_limits (
    key_id  TEXT PRIMARY KEY,
    tat     BIGINT NOT NULL
);
