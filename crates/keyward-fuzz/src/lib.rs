//! A fuzz harness for the key and token parsers that runs on the stable toolchain.
//!
//! cargo-fuzz (libFuzzer) and the coverage-guided engines behind `cargo bolero` need a nightly
//! compiler and sanitizer instrumentation; CI here is stable. What this harness does instead:
//! start from real, valid inputs (generated keys, signed access tokens, user codes) and apply
//! seeded, structure-aware mutations, including ones that decode a JWT segment, change the
//! JSON inside and re-encode it, which reach the parsers behind the base64 layer. Each target
//! checks properties, not just "no panic":
//!
//! - `key-format`: [`KeyFormat::matches`] agrees with an independent model (prefix, length,
//!   alphabet, CRC-32 written out here), so a mutated key is accepted only if it is a
//!   well-formed key, and one changed symbol is always refused.
//! - `access-token`: [`TokenSigner::verify`] never panics and never accepts any string but a
//!   token it issued, unchanged; tokens of another deployment's signer are refused.
//! - `user-code`: [`UserCode::parse`] accepts only 8 letters of its alphabet and round-trips.
//! - `jwt-shape`: [`looks_like_jwt`], which sends a credential to the token or the key path,
//!   agrees with its definition.
//!
//! Refresh tokens and device codes have no parser: they are opaque, hashed (SHA-256) and looked
//! up; the API-level schemathesis run (.ci/schemathesis.sh) sends them arbitrary strings.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_core::{
    KeyAlphabet, KeyFormat, SessionId, SystemClock, TenantId, TokenSigner, UserCode, UserId,
    USER_CODE_ALPHABET,
};
use keyward_server::extract::looks_like_jwt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    KeyFormat,
    AccessToken,
    UserCode,
    JwtShape,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::KeyFormat,
        Target::AccessToken,
        Target::UserCode,
        Target::JwtShape,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::KeyFormat => "key-format",
            Target::AccessToken => "access-token",
            Target::UserCode => "user-code",
            Target::JwtShape => "jwt-shape",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|target| target.name() == name)
    }
}

/// Runs `target` from `seed` until `duration` has passed or `max_cases` inputs were tried.
/// Returns the number of cases, or the first broken property with its input.
pub fn run(target: Target, seed: u64, duration: Duration, max_cases: u64) -> Result<u64, String> {
    let mut mutator = Mutator::new(seed);
    let deadline = Instant::now() + duration;
    let mut cases = 0u64;
    let mut each = |check: &mut dyn FnMut(&mut Mutator) -> Result<(), String>| {
        while cases < max_cases && Instant::now() < deadline {
            // The clock is read once per 64 cases; each case is microseconds.
            for _ in 0..64 {
                check(&mut mutator)?;
                cases += 1;
            }
        }
        Ok::<(), String>(())
    };
    match target {
        Target::KeyFormat => {
            let specs = KeySpec::all();
            let corpus: Vec<(usize, String)> = specs
                .iter()
                .enumerate()
                .flat_map(|(i, spec)| (0..4).map(move |_| (i, spec.format().generate())))
                .map(|(i, key)| (i, key.expose().to_owned()))
                .collect();
            let formats: Vec<KeyFormat> = specs.iter().map(KeySpec::format).collect();
            let seeds: Vec<Vec<u8>> = corpus
                .iter()
                .map(|(_, key)| key.clone().into_bytes())
                .collect();
            each(&mut |m| {
                let pick = m.rng.gen_range(0..corpus.len());
                let (origin_spec, origin) = &corpus[pick];
                let candidate = m.mutate(origin.as_bytes(), &seeds);
                let candidate = String::from_utf8_lossy(&candidate);

                for (spec, format) in specs.iter().zip(&formats) {
                    let got = format.matches(&candidate);
                    if got != spec.model_matches(&candidate) {
                        return Err(format!(
                            "{spec:?}.matches({candidate:?}) = {got}, the model says otherwise"
                        ));
                    }
                }
                let spec = &specs[*origin_spec];
                if spec.checksum
                    && one_symbol_changed(origin, &candidate)
                    && formats[*origin_spec].matches(&candidate)
                {
                    return Err(format!(
                        "{spec:?} accepted {candidate:?}, one symbol away from {origin:?}"
                    ));
                }
                Ok(())
            })?;
        }
        Target::AccessToken => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let signer = runtime.block_on(signer_in(&dir.path().join("fuzz.db")))?;
            let foreign = runtime.block_on(signer_in(&dir.path().join("foreign.db")))?;
            let issue = |signer: &TokenSigner| {
                signer
                    .issue(
                        &UserId::generate(),
                        &TenantId::generate(),
                        &SessionId::generate(),
                    )
                    .map_err(|e| e.to_string())
            };
            let own: Vec<String> = (0..4).map(|_| issue(&signer)).collect::<Result<_, _>>()?;
            let mut seeds: Vec<Vec<u8>> = own.iter().map(|t| t.clone().into_bytes()).collect();
            // Another deployment's tokens: a valid signature under a key this one never had.
            for _ in 0..2 {
                seeds.push(issue(&foreign)?.into_bytes());
            }
            for token in &own {
                runtime
                    .block_on(signer.verify(token))
                    .map_err(|e| format!("a fresh token was refused: {e:?}"))?;
            }
            each(&mut |m| {
                let origin = seeds[m.rng.gen_range(0..seeds.len())].clone();
                let candidate = m.mutate(&origin, &seeds);
                let candidate = String::from_utf8_lossy(&candidate);
                if runtime.block_on(signer.verify(&candidate)).is_ok()
                    && !own.iter().any(|t| *t == candidate)
                {
                    return Err(format!(
                        "verify accepted a token it did not issue: {candidate:?}"
                    ));
                }
                Ok(())
            })?;
        }
        Target::UserCode => {
            let seeds: Vec<Vec<u8>> = (0..8)
                .map(|i| {
                    let code = UserCode::generate();
                    let text = if i % 2 == 0 {
                        code.display()
                    } else {
                        code.normalised().to_lowercase()
                    };
                    text.into_bytes()
                })
                .collect();
            each(&mut |m| {
                let origin = seeds[m.rng.gen_range(0..seeds.len())].clone();
                let candidate = m.mutate(&origin, &seeds);
                let candidate = String::from_utf8_lossy(&candidate);
                if let Ok(code) = UserCode::parse(&candidate) {
                    let normalised = code.normalised();
                    if normalised.len() != 8
                        || !normalised.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))
                    {
                        return Err(format!("{candidate:?} parsed to {normalised:?}"));
                    }
                    if UserCode::parse(&code.display()).as_ref() != Ok(&code) {
                        return Err(format!(
                            "{candidate:?} does not round-trip through its display form"
                        ));
                    }
                }
                Ok(())
            })?;
        }
        Target::JwtShape => {
            let seeds: Vec<Vec<u8>> = [&b"aaa.bbb.ccc"[..], b"kw_0123456789abcdef", b"a.b.", b".."]
                .iter()
                .map(|s| s.to_vec())
                .collect();
            each(&mut |m| {
                let origin = seeds[m.rng.gen_range(0..seeds.len())].clone();
                let candidate = m.mutate(&origin, &seeds);
                let candidate = String::from_utf8_lossy(&candidate);
                let parts: Vec<&str> = candidate.split('.').collect();
                let expected = parts.len() == 3 && !parts[0].is_empty() && !parts[1].is_empty();
                if looks_like_jwt(&candidate) != expected {
                    return Err(format!(
                        "looks_like_jwt({candidate:?}) should be {expected}"
                    ));
                }
                Ok(())
            })?;
        }
    }
    Ok(cases)
}

async fn signer_in(path: &std::path::Path) -> Result<TokenSigner, String> {
    let url = format!("sqlite://{}", path.display());
    let store = keyward_store::connect(&url, &keyward_store::PoolSettings::default())
        .await
        .map_err(|e| e.to_string())?;
    TokenSigner::load(
        store,
        Arc::new(SystemClock),
        "http://127.0.0.1:7777".into(),
        "keyward".into(),
        900,
    )
    .await
    .map_err(|e| e.to_string())
}

fn one_symbol_changed(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count() == 1
}

/// A key format, with its parameters kept for the model.
#[derive(Debug)]
struct KeySpec {
    prefix: &'static str,
    hex: bool,
    length: usize,
    checksum: bool,
}

impl KeySpec {
    fn all() -> [KeySpec; 4] {
        [
            KeySpec {
                prefix: "kw_",
                hex: false,
                length: 32,
                checksum: true,
            },
            KeySpec {
                prefix: "ax_",
                hex: true,
                length: 48,
                checksum: true,
            },
            KeySpec {
                prefix: "sk_live_",
                hex: false,
                length: 24,
                checksum: false,
            },
            KeySpec {
                prefix: "",
                hex: true,
                length: 32,
                checksum: false,
            },
        ]
    }

    fn format(&self) -> KeyFormat {
        let alphabet = if self.hex {
            KeyAlphabet::Hex
        } else {
            KeyAlphabet::Base62
        };
        // The specs above are valid formats; a refusal would be a bug the harness reports.
        #[allow(clippy::expect_used)]
        KeyFormat::new(self.prefix, alphabet, self.length, self.checksum)
            .expect("a valid key format")
    }

    fn symbols(&self) -> &'static [u8] {
        if self.hex {
            b"0123456789abcdef"
        } else {
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        }
    }

    /// What a key of this format is, written independently of keyformat.rs.
    fn model_matches(&self, candidate: &str) -> bool {
        let digits = match (self.checksum, self.hex) {
            (false, _) => 0,
            (true, true) => 8,
            (true, false) => 6,
        };
        let Some(rest) = candidate.strip_prefix(self.prefix) else {
            return false;
        };
        if rest.len() != self.length + digits || !rest.bytes().all(|b| self.symbols().contains(&b))
        {
            return false;
        }
        if !self.checksum {
            return true;
        }
        let (body, check) = candidate.split_at(self.prefix.len() + self.length);
        let mut crc = u64::from(crc32fast::hash(body.as_bytes()));
        let base = self.symbols().len() as u64;
        let mut expected = vec![0u8; digits];
        for slot in expected.iter_mut().rev() {
            *slot = self.symbols()[(crc % base) as usize];
            crc /= base;
        }
        check.as_bytes() == expected
    }
}

/// Bytes that matter to these parsers: separators, base64 and JSON punctuation, whitespace.
const INTERESTING_BYTES: &[u8] = b".-_=+/ \t\r\n0Aaz\"{}[]:,\\\x00\x7f\xff";
/// JSON fragments for the inside of a token's header or payload.
const JSON_FRAGMENTS: &[&str] = &[
    "\"alg\":\"none\"",
    "\"alg\":\"HS256\"",
    "\"alg\":\"EdDSA\"",
    "\"typ\":\"JWT\"",
    "\"crit\":[\"exp\"]",
    "\"kid\":\"\"",
    "\"jku\":\"http://x\"",
    "\"exp\":1e999",
    "\"exp\":-1",
    "\"nbf\":null",
    "\"aud\":[\"keyward\"]",
    "null",
    "{}",
    "[]",
    ",",
    "\"",
];

pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// One to four mutations of `input`; `corpus` feeds splices.
    pub fn mutate(&mut self, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut data = input.to_vec();
        for _ in 0..self.rng.gen_range(1..=4) {
            self.mutate_once(&mut data, corpus);
        }
        data
    }

    fn mutate_once(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let len = data.len();
        match self.rng.gen_range(0..11) {
            0 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                data[i] ^= 1 << self.rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                data[i] = self.interesting_byte();
            }
            2 => {
                let i = self.rng.gen_range(0..=len);
                let byte = self.interesting_byte();
                data.insert(i, byte);
            }
            3 if len > 0 => {
                let start = self.rng.gen_range(0..len);
                let end = self.rng.gen_range(start..=len.min(start + 8));
                data.drain(start..end);
            }
            4 if len > 0 => {
                let start = self.rng.gen_range(0..len);
                let end = self.rng.gen_range(start..=len.min(start + 16));
                let copy = data[start..end].to_vec();
                let at = self.rng.gen_range(0..=data.len());
                data.splice(at..at, copy);
            }
            5 if len > 0 => data.truncate(self.rng.gen_range(0..len)),
            6 if !corpus.is_empty() => {
                let other = &corpus[self.rng.gen_range(0..corpus.len())];
                let cut = self.rng.gen_range(0..=len);
                let from = self.rng.gen_range(0..=other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => {
                // Swap in another symbol of the same kind, the change a typo makes.
                let i = self.rng.gen_range(0..len);
                data[i] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    [self.rng.gen_range(0..62)];
            }
            8 | 9 => self.mutate_segment(data),
            _ => self.shuffle_segments(data),
        }
    }

    fn interesting_byte(&mut self) -> u8 {
        if self.rng.gen_bool(0.5) {
            INTERESTING_BYTES[self.rng.gen_range(0..INTERESTING_BYTES.len())]
        } else {
            self.rng.gen()
        }
    }

    /// Decodes one dot-separated base64url segment, changes the bytes inside (the JSON of a
    /// header or payload, or a signature), and encodes it again.
    fn mutate_segment(&mut self, data: &mut Vec<u8>) {
        let mut segments: Vec<Vec<u8>> = data.split(|&b| b == b'.').map(<[u8]>::to_vec).collect();
        let index = self.rng.gen_range(0..segments.len());
        let Ok(mut inner) = URL_SAFE_NO_PAD.decode(&segments[index]) else {
            return;
        };
        let len = inner.len();
        match self.rng.gen_range(0..4) {
            0 if len > 0 => {
                let i = self.rng.gen_range(0..len);
                inner[i] = self.interesting_byte();
            }
            1 => {
                let fragment = JSON_FRAGMENTS[self.rng.gen_range(0..JSON_FRAGMENTS.len())];
                let at = self.rng.gen_range(0..=len);
                inner.splice(at..at, fragment.bytes());
            }
            2 if len > 0 => {
                let start = self.rng.gen_range(0..len);
                let end = self.rng.gen_range(start..=len.min(start + 12));
                inner.drain(start..end);
            }
            _ if len > 0 => {
                let i = self.rng.gen_range(0..len);
                inner[i] ^= 1 << self.rng.gen_range(0..8);
            }
            _ => inner.push(b'}'),
        }
        segments[index] = URL_SAFE_NO_PAD.encode(&inner).into_bytes();
        *data = segments.join(&b'.');
    }

    /// Drops, duplicates or swaps whole dot-separated segments.
    fn shuffle_segments(&mut self, data: &mut Vec<u8>) {
        let mut segments: Vec<Vec<u8>> = data.split(|&b| b == b'.').map(<[u8]>::to_vec).collect();
        let n = segments.len();
        match self.rng.gen_range(0..3) {
            0 if n > 1 => {
                segments.remove(self.rng.gen_range(0..n));
            }
            1 => {
                let copy = segments[self.rng.gen_range(0..n)].clone();
                segments.insert(self.rng.gen_range(0..=n), copy);
            }
            _ if n > 1 => {
                let (a, b) = (self.rng.gen_range(0..n), self.rng.gen_range(0..n));
                segments.swap(a, b);
            }
            _ => segments.push(Vec::new()),
        }
        *data = segments.join(&b'.');
    }
}
