-- An operator can disable a user (`keyward admin disable-user`): Unix seconds when it was
-- done, NULL while the user is enabled. A disabled user cannot sign in, their sessions are
-- revoked, and their API keys do not load for verification until they are enabled again.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
