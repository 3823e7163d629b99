-- The key-change feed (see keyward-store's feed.rs): how every instance's verification cache
-- hears of the key changes any instance makes. Numbers come from the one-row counter, whose
-- row lock makes them commit in order.
CREATE TABLE key_change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO key_change_counter (id, seq) VALUES (1, 0);

CREATE TABLE key_changes (
    seq BIGINT PRIMARY KEY,
    key_hash BLOB NOT NULL,
    -- Unix milliseconds, for pruning.
    changed_at BIGINT NOT NULL
);

-- Every running instance: how far it has read the feed, and when it last said so (Unix ms).
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    seen_seq BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
