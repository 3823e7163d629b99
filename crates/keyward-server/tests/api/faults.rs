// Connection faults on PostgreSQL: requests fail fast with 503, nothing is half-written, and
// the server recovers by itself.

#[allow(unused_imports)]
use super::kit::*;
