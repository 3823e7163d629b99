//! The harness as part of `cargo test`: each target for a few seconds from a fixed seed, so a
//! failure reproduces (`cargo run --release -p keyward-fuzz -- --target NAME --seed 8`).

use std::time::Duration;

use keyward_fuzz::{run, Target};

/// Fixed: the same inputs on every run, so CI cannot flip.
const SEED: u64 = 8;
/// Per target; together about 16 s on the CI machine, in the debug profile.
const BUDGET: Duration = Duration::from_secs(4);

fn fuzz(target: Target) {
    match run(target, SEED, BUDGET, 2_000_000) {
        Ok(cases) => assert!(cases > 0, "{} ran no case", target.name()),
        Err(failure) => panic!("{}: {failure}", target.name()),
    }
}

#[test]
fn key_format() {
    fuzz(Target::KeyFormat);
}

#[test]
fn access_token() {
    fuzz(Target::AccessToken);
}

#[test]
fn user_code() {
    fuzz(Target::UserCode);
}

#[test]
fn jwt_shape() {
    fuzz(Target::JwtShape);
}
