//! API keys and verification (SPEC §1, §4).
