//! The API key format of SPEC §1: `<prefix><body>[<checksum>]`.
//!
//! The checksum lets a secret scanner (and this server) tell a real Keyward key from random
//! text without any lookup: [`KeyFormat::matches`] refuses a mistyped or forged key before the
//! store is touched.

use rand::Rng;

use crate::secret::ApiKeySecret;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8; 16] = b"0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlphabet {
    Base62,
    Hex,
}

impl KeyAlphabet {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "base62" => Ok(Self::Base62),
            "hex" => Ok(Self::Hex),
            other => Err(format!(
                "unknown alphabet {other:?}: use \"base62\" or \"hex\""
            )),
        }
    }

    fn symbols(self) -> &'static [u8] {
        match self {
            Self::Base62 => BASE62,
            Self::Hex => HEX,
        }
    }

    fn contains(self, byte: u8) -> bool {
        match self {
            Self::Base62 => byte.is_ascii_alphanumeric(),
            Self::Hex => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        }
    }

    fn bits_per_symbol(self) -> f64 {
        (self.symbols().len() as f64).log2()
    }

    /// Digits of a CRC32 in this alphabet: 6 in base62 (62^6 > 2^32), 8 in hex.
    fn checksum_len(self) -> usize {
        match self {
            Self::Base62 => 6,
            Self::Hex => 8,
        }
    }

    /// The checksum digits, most significant first, zero-padded, on the stack.
    fn checksum_digits(self, mut value: u32) -> ([u8; 8], usize) {
        let symbols = self.symbols();
        let base = symbols.len() as u32;
        let mut digits = [b'0'; 8];
        let width = self.checksum_len();
        for slot in digits[..width].iter_mut().rev() {
            *slot = symbols[(value % base) as usize];
            value /= base;
        }
        (digits, width)
    }

    fn encode_checksum(self, value: u32, out: &mut String) {
        let (digits, width) = self.checksum_digits(value);
        out.extend(digits[..width].iter().map(|&d| d as char));
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("keys.prefix: {0:?} must match [a-z0-9_]{{0,16}}")]
    Prefix(String),
    #[error("keys.length: {length} {alphabet} characters give {bits:.0} bits of entropy; at least 128 are needed (use {minimum} or more)")]
    TooWeak {
        length: usize,
        alphabet: &'static str,
        bits: f64,
        minimum: usize,
    },
    #[error("keys.length: {0} is over the maximum of 256")]
    TooLong(usize),
}

/// A deployment's key format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: String,
    alphabet: KeyAlphabet,
    length: usize,
    checksum: bool,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            prefix: "kw_".into(),
            alphabet: KeyAlphabet::Base62,
            length: 32,
            checksum: true,
        }
    }
}

impl KeyFormat {
    pub fn new(
        prefix: &str,
        alphabet: KeyAlphabet,
        length: usize,
        checksum: bool,
    ) -> Result<Self, KeyFormatError> {
        if prefix.len() > 16
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(KeyFormatError::Prefix(prefix.to_owned()));
        }
        if length > 256 {
            return Err(KeyFormatError::TooLong(length));
        }
        let bits = length as f64 * alphabet.bits_per_symbol();
        if bits < 128.0 {
            return Err(KeyFormatError::TooWeak {
                length,
                alphabet: match alphabet {
                    KeyAlphabet::Base62 => "base62",
                    KeyAlphabet::Hex => "hex",
                },
                bits,
                minimum: (128.0 / alphabet.bits_per_symbol()).ceil() as usize,
            });
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            alphabet,
            length,
            checksum,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Length of a whole key of this format.
    pub fn key_len(&self) -> usize {
        self.prefix.len()
            + self.length
            + if self.checksum {
                self.alphabet.checksum_len()
            } else {
                0
            }
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate(&self) -> ApiKeySecret {
        let mut rng = rand::rngs::OsRng;
        let symbols = self.alphabet.symbols();
        let mut key = String::with_capacity(self.key_len());
        key.push_str(&self.prefix);
        for _ in 0..self.length {
            key.push(symbols[rng.gen_range(0..symbols.len())] as char);
        }
        if self.checksum {
            let crc = crc32fast::hash(key.as_bytes());
            self.alphabet.encode_checksum(crc, &mut key);
        }
        ApiKeySecret::new_unchecked(key)
    }

    /// Whether `candidate` has this format: prefix, length, alphabet and checksum. No I/O.
    pub fn matches(&self, candidate: &str) -> bool {
        if candidate.len() != self.key_len() || !candidate.starts_with(&self.prefix) {
            return false;
        }
        let body_end = self.prefix.len() + self.length;
        let bytes = candidate.as_bytes();
        if !bytes[self.prefix.len()..]
            .iter()
            .all(|&b| self.alphabet.contains(b))
        {
            return false;
        }
        if !self.checksum {
            return true;
        }
        let (digits, width) = self
            .alphabet
            .checksum_digits(crc32fast::hash(&bytes[..body_end]));
        digits[..width] == bytes[body_end..]
    }
}

/// `start`: the first 8 characters of a key, kept for display.
pub fn key_start(key: &str) -> String {
    key.chars().take(8).collect()
}

/// `end`: the last 4 characters of a key, kept for display.
pub fn key_end(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_format_is_kw_32_base62_and_6_checksum() {
        let format = KeyFormat::default();
        let key = format.generate();
        assert_eq!(key.expose().len(), 3 + 32 + 6);
        assert!(key.expose().starts_with("kw_"));
        assert!(format.matches(key.expose()));
    }

    #[test]
    fn checksum_is_crc32_ieee_msd_first() {
        // CRC-32 of "kw_" + 32 zeros, as zlib computes it, written in base62 by hand.
        let body = format!("kw_{}", "0".repeat(32));
        let crc = crc32fast::hash(body.as_bytes());
        let mut digits = Vec::new();
        let mut value = crc;
        for _ in 0..6 {
            digits.push(BASE62[(value % 62) as usize] as char);
            value /= 62;
        }
        digits.reverse();
        let key = format!("{body}{}", digits.iter().collect::<String>());
        assert!(KeyFormat::default().matches(&key));
        // Known value: zlib.crc32(b"123456789") == 0xCBF43926
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let mut hex = String::new();
        KeyAlphabet::Hex.encode_checksum(0xCBF4_3926, &mut hex);
        assert_eq!(hex, "cbf43926");
        let mut small = String::new();
        KeyAlphabet::Base62.encode_checksum(61, &mut small);
        assert_eq!(small, "00000z");
    }

    #[test]
    fn other_platform_formats() {
        let ax = KeyFormat::new("ax_", KeyAlphabet::Hex, 48, false).unwrap();
        let key = ax.generate();
        assert_eq!(key.expose().len(), 51);
        assert!(key.expose()[3..].bytes().all(|b| HEX.contains(&b)));
        assert!(ax.matches(key.expose()));
        let bare = KeyFormat::new("", KeyAlphabet::Hex, 64, false).unwrap();
        let key = bare.generate();
        assert_eq!(key.expose().len(), 64);
        assert!(bare.matches(key.expose()));
        assert!(!bare.matches(&key.expose().to_uppercase()));
    }

    #[test]
    fn refuses_weak_or_bad_formats() {
        let err = KeyFormat::new("kw_", KeyAlphabet::Base62, 21, true).unwrap_err();
        assert!(err.to_string().starts_with("keys.length"), "{err}");
        assert!(KeyFormat::new("kw_", KeyAlphabet::Base62, 22, true).is_ok());
        assert!(KeyFormat::new("", KeyAlphabet::Hex, 31, false).is_err());
        assert!(KeyFormat::new("", KeyAlphabet::Hex, 32, false).is_ok());
        assert!(KeyFormat::new("KW_", KeyAlphabet::Base62, 32, true).is_err());
        assert!(KeyFormat::new("a-b", KeyAlphabet::Base62, 32, true).is_err());
        assert!(KeyFormat::new(&"a".repeat(17), KeyAlphabet::Base62, 32, true).is_err());
    }

    #[test]
    fn start_and_end() {
        assert_eq!(key_start("kw_abcdefghij"), "kw_abcde");
        assert_eq!(key_end("kw_abcdefghij"), "ghij");
    }

    fn formats() -> impl Strategy<Value = KeyFormat> {
        (
            "[a-z0-9_]{0,16}",
            prop_oneof![Just(KeyAlphabet::Base62), Just(KeyAlphabet::Hex)],
            32usize..80,
            any::<bool>(),
        )
            .prop_map(|(prefix, alphabet, length, checksum)| {
                KeyFormat::new(&prefix, alphabet, length, checksum).unwrap()
            })
    }

    proptest! {
        #[test]
        fn generated_keys_always_match(format in formats()) {
            let key = format.generate();
            prop_assert_eq!(key.expose().len(), format.key_len());
            prop_assert!(format.matches(key.expose()));
        }

        #[test]
        fn any_single_character_change_is_caught(format in formats(), position in any::<prop::sample::Index>(), replacement in "[0-9A-Za-z]") {
            prop_assume!(format.checksum);
            let key = format.generate();
            let index = position.index(key.expose().len());
            let mut bytes = key.expose().as_bytes().to_vec();
            let new = replacement.as_bytes()[0];
            prop_assume!(bytes[index] != new);
            bytes[index] = new;
            let changed = String::from_utf8(bytes).unwrap();
            // CRC32 detects every single-symbol error in the body; the prefix or checksum part
            // changing is caught by the prefix test or the comparison itself.
            prop_assert!(!format.matches(&changed));
        }

        #[test]
        fn matches_never_panics(format in formats(), candidate in "\\PC{0,100}") {
            let _ = format.matches(&candidate);
        }
    }

    /// A key in `format`'s shape built from arbitrary body symbols, with the checksum computed
    /// independently (a base conversion of the CRC, written out here, not the module's code).
    fn key_from_body(format: &KeyFormat, body_choices: &[prop::sample::Index]) -> String {
        let symbols = format.alphabet.symbols();
        let mut key = format.prefix.clone();
        for choice in body_choices.iter().take(format.length) {
            key.push(symbols[choice.index(symbols.len())] as char);
        }
        if format.checksum {
            let mut crc = u64::from(crc32fast::hash(key.as_bytes()));
            let base = symbols.len() as u64;
            let mut digits = vec![];
            for _ in 0..format.alphabet.checksum_len() {
                digits.push(symbols[(crc % base) as usize] as char);
                crc /= base;
            }
            key.extend(digits.iter().rev());
        }
        key
    }

    proptest! {
        #[test]
        fn any_well_formed_key_matches(
            format in formats(),
            body in proptest::collection::vec(any::<prop::sample::Index>(), 80),
        ) {
            let key = key_from_body(&format, &body);
            prop_assert!(format.matches(&key), "{key}");
        }

        #[test]
        fn matches_iff_prefix_length_alphabet_and_checksum(format in formats(), candidate in "[a-z0-9_]{0,16}[0-9A-Za-z]{0,90}|\\PC{0,100}") {
            let len = format.key_len();
            let shape = candidate.len() == len
                && candidate.starts_with(format.prefix())
                && candidate.as_bytes()[format.prefix().len()..].iter().all(|&b| format.alphabet.contains(b));
            let expected = shape && (!format.checksum || {
                let body_end = format.prefix().len() + format.length;
                let mut expected_checksum = String::new();
                format.alphabet.encode_checksum(crc32fast::hash(&candidate.as_bytes()[..body_end]), &mut expected_checksum);
                candidate[body_end..] == expected_checksum
            });
            prop_assert_eq!(format.matches(&candidate), expected);
        }

        #[test]
        fn any_changed_checksum_digit_is_refused(format in formats(), position in 0usize..8, replacement in any::<prop::sample::Index>()) {
            prop_assume!(format.checksum);
            let key = format.generate();
            let mut bytes = key.expose().as_bytes().to_vec();
            let index = bytes.len() - 1 - position % format.alphabet.checksum_len();
            let symbols = format.alphabet.symbols();
            let new = symbols[replacement.index(symbols.len())];
            prop_assume!(bytes[index] != new);
            bytes[index] = new;
            prop_assert!(!format.matches(&String::from_utf8(bytes).unwrap()));
        }

        #[test]
        fn alphabet_parse_accepts_exactly_two_names(raw in "\\PC{0,10}|base62|hex") {
            let parsed = KeyAlphabet::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), raw == "base62" || raw == "hex");
        }

        #[test]
        fn key_format_new_never_panics(prefix in "\\PC{0,20}", hex in any::<bool>(), length in 0usize..200, checksum in any::<bool>()) {
            let alphabet = if hex { KeyAlphabet::Hex } else { KeyAlphabet::Base62 };
            if let Ok(format) = KeyFormat::new(&prefix, alphabet, length, checksum) {
                // Whatever is accepted yields keys it recognises.
                prop_assert!(format.matches(format.generate().expose()));
            }
        }

        #[test]
        fn start_and_end_never_panic(key in "\\PC{0,50}") {
            prop_assert!(key_start(&key).chars().count() <= 8);
            prop_assert!(key_end(&key).chars().count() <= 4);
        }
    }
}
