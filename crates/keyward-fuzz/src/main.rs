//! `cargo run --release -p keyward-fuzz -- [--seconds N] [--seed S] [--target NAME]`: mutates
//! real keys and access tokens for a while and stops at the first broken property.

use std::process::ExitCode;
use std::time::Duration;

use keyward_fuzz::{run, Target};

fn main() -> ExitCode {
    let mut seconds = 30u64;
    let mut seed: Option<u64> = None;
    let mut targets = Target::ALL.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let parsed = match (arg.as_str(), value.as_deref()) {
            ("--seconds", Some(v)) => v.parse().map(|v| seconds = v).is_ok(),
            ("--seed", Some(v)) => v.parse().map(|v| seed = Some(v)).is_ok(),
            ("--target", Some(v)) => Target::parse(v).map(|t| targets = vec![t]).is_some(),
            _ => false,
        };
        if !parsed {
            eprintln!(
                "usage: keyward-fuzz [--seconds N] [--seed S] [--target {}]",
                Target::ALL.map(Target::name).join("|")
            );
            return ExitCode::from(2);
        }
    }
    let seed = seed.unwrap_or_else(rand::random);
    let per_target = Duration::from_secs(seconds) / targets.len() as u32;
    for target in targets {
        match run(target, seed, per_target, u64::MAX) {
            Ok(cases) => println!("{}: {cases} cases, no failure (seed {seed})", target.name()),
            Err(failure) => {
                eprintln!(
                    "{}: {failure}\nreproduce with --target {} --seed {seed}",
                    target.name(),
                    target.name()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
