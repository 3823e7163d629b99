//! keyward-client
