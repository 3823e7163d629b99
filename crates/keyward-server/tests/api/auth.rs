//! Accounts, sessions and access tokens (SPEC §4).
