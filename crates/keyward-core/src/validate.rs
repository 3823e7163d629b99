//! Parsed domain values: each type has a private field and a `parse` constructor, so holding one
//! means it passed the rules of SPEC §1 and §4.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::Regex;

use crate::secret::Password;

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are literals of this module, covered by its tests.
    #[allow(clippy::expect_used)]
    cell.get_or_init(|| Regex::new(pattern).expect("valid literal regex"))
}

/// An email address, trimmed and lower-cased (emails compare case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        static RE: OnceLock<Regex> = OnceLock::new();
        let value = raw.trim().to_lowercase();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        // Deliberately simple (one `@`, a dotted domain, no spaces or control characters): the
        // real check of an address is mail reaching it, not a grammar.
        let re = regex(
            &RE,
            r"^[^@\s\x00-\x1f]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$",
        );
        if !re.is_match(&value) {
            return Err("must be an email address such as ada@example.com".into());
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }
}

const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

fn is_common_password(candidate: &str) -> bool {
    static SET: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    let set = SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    });
    set.contains(candidate.to_lowercase().as_str())
}

impl Password {
    /// A new password: 8 to 128 characters, not in the list of common passwords.
    pub fn parse(raw: String) -> Result<Self, String> {
        let length = raw.chars().count();
        if length < 8 {
            return Err("must be at least 8 characters".into());
        }
        if length > 128 {
            return Err("must be at most 128 characters".into());
        }
        if is_common_password(&raw) {
            return Err("is too common; choose a less guessable password".into());
        }
        Ok(Self::new_unchecked(raw))
    }
}

/// A user's display name: 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        plain_text(raw, 100).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tenant's name: 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        plain_text(raw, 100).map(Self)
    }

    /// The default name of a new user's tenant: the email itself.
    pub fn for_email(email: &Email) -> Self {
        Self(email.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn plain_text(raw: &str, max: usize) -> Result<String, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

/// An API key's name: 1–64 characters, starting with a letter; letters, digits, space, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let length = raw.chars().count();
        if length == 0 {
            return Err("must not be empty".into());
        }
        if length > 64 {
            return Err("must be at most 64 characters".into());
        }
        if !raw.chars().next().is_some_and(char::is_alphabetic) {
            return Err("must start with a letter".into());
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')))
        {
            return Err(format!(
                "may contain only letters, digits, space, '-', '_' and '.'; found {bad:?}"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }
}

/// An API key's description: up to 500 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().count() > 500 {
            return Err("must be at most 500 characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }
}

/// `expires_in_days`: 1–3650.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiresInDays(u16);

impl ExpiresInDays {
    pub fn parse(days: i64) -> Result<Self, String> {
        if !(1..=3650).contains(&days) {
            return Err("must be an integer from 1 to 3650, or null for no expiry".into());
        }
        Ok(Self(days as u16))
    }

    pub fn days(self) -> i64 {
        i64::from(self.0)
    }
}

/// One scope: built-in `read` ⊂ `write` ⊂ `admin`, or free-form `^[a-z][a-z0-9_.:-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    pub const READ: &'static str = "read";
    pub const WRITE: &'static str = "write";
    pub const ADMIN: &'static str = "admin";

    pub fn parse(raw: &str) -> Result<Self, String> {
        static RE: OnceLock<Regex> = OnceLock::new();
        if regex(&RE, r"^[a-z][a-z0-9_.:-]{0,63}$").is_match(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a scope: 1-64 characters, a lowercase letter then [a-z0-9_.:-]"
            ))
        }
    }

    pub fn read() -> Self {
        Self(Self::READ.into())
    }

    pub fn write() -> Self {
        Self(Self::WRITE.into())
    }

    pub fn admin() -> Self {
        Self(Self::ADMIN.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of scopes, with the hierarchy: `admin` covers everything, `write` covers `read`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// At most 50 scopes; duplicates collapse.
    pub fn parse(raw: &[String]) -> Result<Self, String> {
        if raw.len() > 50 {
            return Err("at most 50 scopes".into());
        }
        raw.iter()
            .map(|scope| Scope::parse(scope))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    pub fn admin() -> Self {
        Self(BTreeSet::from([Scope::admin()]))
    }

    /// Scopes read back from storage (space-separated). They were parsed when the key was
    /// made, so this skips the grammar check: it runs on every verification.
    pub fn from_stored(stored: &str) -> Self {
        Self(
            stored
                .split_whitespace()
                .map(|scope| Scope(scope.to_owned()))
                .collect(),
        )
    }

    pub fn to_stored(&self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|scope| scope.as_str().to_owned()).collect()
    }

    /// Whether this set grants `needed`, through the hierarchy.
    pub fn grants(&self, needed: &Scope) -> bool {
        let has = |name: &str| self.0.iter().any(|scope| scope.as_str() == name);
        has(Scope::ADMIN)
            || has(needed.as_str())
            || (needed.as_str() == Scope::READ && has(Scope::WRITE))
    }

    pub fn grants_all(&self, needed: &Scopes) -> bool {
        needed.iter().all(|scope| self.grants(scope))
    }
}

/// A key's `meta`: a JSON object of at most 4 KiB serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMeta(serde_json::Map<String, serde_json::Value>);

impl KeyMeta {
    pub const MAX_BYTES: usize = 4096;

    pub fn parse(value: serde_json::Value) -> Result<Self, String> {
        let serde_json::Value::Object(map) = value else {
            return Err("must be a JSON object".into());
        };
        let size = serde_json::to_string(&map)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > Self::MAX_BYTES {
            return Err(format!("must be at most {} bytes as JSON", Self::MAX_BYTES));
        }
        Ok(Self(map))
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.clone())
    }

    /// The object itself, to serialize without a copy.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    pub fn to_stored(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }

    pub fn from_stored(stored: &str) -> Option<Self> {
        match serde_json::from_str(stored) {
            Ok(serde_json::Value::Object(map)) => Some(Self(map)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@@example.com",
            "ada@-example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert!(Password::parse("password".into()).is_err());
        assert!(Password::parse("Password1".into()).is_err());
        assert!(Password::parse("12345678".into()).is_err());
        assert!(Password::parse("correct horse battery staple".into()).is_ok());
        // characters, not bytes
        assert!(Password::parse("ééééééé".into()).is_err());
        assert!(Password::parse("éééééééé".into()).is_ok());
    }

    #[test]
    fn key_names() {
        for good in ["a", "ci", "Prod key-1_v2.0", "Ünïcode"] {
            assert!(KeyName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            " lead",
            "-x",
            "bad/name",
            "tab\tname",
            "emoji🔑",
        ] {
            assert!(KeyName::parse(bad).is_err(), "{bad}");
        }
        assert!(KeyName::parse(&"a".repeat(64)).is_ok());
        assert!(KeyName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn scope_hierarchy() {
        let write = Scopes::parse(&["write".into()]).unwrap();
        assert!(write.grants(&Scope::read()));
        assert!(write.grants(&Scope::write()));
        assert!(!write.grants(&Scope::admin()));
        let admin = Scopes::admin();
        assert!(admin.grants(&Scope::parse("billing:read").unwrap()));
        let read = Scopes::parse(&["read".into(), "files:get".into()]).unwrap();
        assert!(!read.grants(&Scope::write()));
        assert!(read.grants(&Scope::parse("files:get").unwrap()));
        assert!(!read.grants(&Scope::parse("files:put").unwrap()));
        assert!(Scopes::parse(&["Read".into()]).is_err());
        assert!(Scopes::parse(&["".into()]).is_err());
    }

    #[test]
    fn meta_must_be_small_object() {
        assert!(KeyMeta::parse(serde_json::json!({"plan": "pro"})).is_ok());
        assert!(KeyMeta::parse(serde_json::json!([1, 2])).is_err());
        assert!(KeyMeta::parse(serde_json::json!("x")).is_err());
        assert!(KeyMeta::parse(serde_json::json!({"big": "x".repeat(5000)})).is_err());
    }

    #[test]
    fn expiry_days() {
        assert!(ExpiresInDays::parse(0).is_err());
        assert!(ExpiresInDays::parse(1).is_ok());
        assert!(ExpiresInDays::parse(3650).is_ok());
        assert!(ExpiresInDays::parse(3651).is_err());
        assert!(ExpiresInDays::parse(-5).is_err());
    }

    proptest! {
        #[test]
        fn scope_parse_matches_grammar(raw in "\\PC{0,70}") {
            let ok = Scope::parse(&raw).is_ok();
            let expected = !raw.is_empty()
                && raw.len() <= 64
                && raw.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
            prop_assert_eq!(ok, expected);
        }

        #[test]
        fn valid_scopes_round_trip(raw in "[a-z][a-z0-9_.:-]{0,63}") {
            let scope = Scope::parse(&raw).unwrap();
            prop_assert_eq!(scope.as_str(), raw.as_str());
        }

        #[test]
        fn key_name_rules(raw in "\\PC{0,70}") {
            let ok = KeyName::parse(&raw).is_ok();
            let count = raw.chars().count();
            let expected = (1..=64).contains(&count)
                && raw.chars().next().is_some_and(char::is_alphabetic)
                && raw.chars().all(|c| c.is_alphanumeric() || " -_.".contains(c));
            prop_assert_eq!(ok, expected);
        }

        #[test]
        fn generated_emails_parse_lowercased(local in "[A-Za-z0-9._+-]{1,30}", domain in "[a-z0-9]{1,20}", tld in "[a-z]{2,6}") {
            let raw = format!("{local}@{domain}.{tld}");
            let email = Email::parse(&raw).unwrap();
            prop_assert_eq!(email.as_str(), raw.to_lowercase());
        }

        #[test]
        fn email_parse_never_panics_and_has_one_at(raw in "\\PC{0,80}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
                prop_assert!(!email.as_str().contains(' '));
            }
        }
    }

    /// JSON values of every kind, nested a few levels deep.
    fn json_values() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            // Quarters are exact in binary, so they read back equal from the stored text.
            (-4000i32..4000).prop_map(|n| serde_json::Value::from(f64::from(n) / 4.0)),
            "\\PC{0,300}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("\\PC{0,20}", inner, 0..8)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn description_accepts_iff_at_most_500_characters(raw in "\\PC{0,520}") {
            let ok = Description::parse(&raw).is_ok();
            prop_assert_eq!(ok, raw.chars().count() <= 500);
            if let Ok(description) = Description::parse(&raw) {
                prop_assert_eq!(description.as_str(), raw.as_str());
            }
        }

        #[test]
        fn plain_text_names_accept_iff_trimmed_1_to_100_without_controls(raw in "(\\PC|[\\t\\n\\x00\\x7f]){0,110}") {
            let trimmed = raw.trim();
            let expected = !trimmed.is_empty()
                && trimmed.chars().count() <= 100
                && !trimmed.chars().any(char::is_control);
            prop_assert_eq!(UserName::parse(&raw).is_ok(), expected);
            prop_assert_eq!(TenantName::parse(&raw).is_ok(), expected);
            if let Ok(name) = UserName::parse(&raw) {
                prop_assert_eq!(name.as_str(), trimmed);
            }
        }

        #[test]
        fn password_accepts_iff_8_to_128_characters_and_not_common(raw in "\\PC{0,140}") {
            let count = raw.chars().count();
            let expected = (8..=128).contains(&count) && !is_common_password(&raw);
            prop_assert_eq!(Password::parse(raw).is_ok(), expected);
        }

        #[test]
        fn every_common_password_is_refused_in_any_case(index in any::<prop::sample::Index>(), upper in any::<bool>()) {
            let list: Vec<&str> = COMMON_PASSWORDS
                .lines()
                .map(str::trim)
                .filter(|line| line.chars().count() >= 8 && !line.starts_with('#'))
                .collect();
            let common = list[index.index(list.len())];
            let spelled = if upper { common.to_uppercase() } else { common.to_owned() };
            prop_assert!(Password::parse(spelled).is_err());
        }

        #[test]
        fn meta_accepts_iff_an_object_of_at_most_4_kib(value in json_values()) {
            let expected = value.as_object().is_some_and(|_| value.to_string().len() <= KeyMeta::MAX_BYTES);
            let parsed = KeyMeta::parse(value.clone());
            prop_assert_eq!(parsed.is_ok(), expected);
            if let Ok(meta) = parsed {
                // What is stored reads back as the same object.
                prop_assert_eq!(KeyMeta::from_stored(&meta.to_stored()), Some(meta.clone()));
                prop_assert_eq!(meta.to_value(), value);
            }
        }

        #[test]
        fn meta_from_stored_never_panics(stored in "\\PC{0,200}") {
            if let Some(meta) = KeyMeta::from_stored(&stored) {
                prop_assert!(meta.to_value().is_object());
            }
        }

        #[test]
        fn expiry_accepts_iff_1_to_3650(days in any::<i64>()) {
            let parsed = ExpiresInDays::parse(days);
            prop_assert_eq!(parsed.is_ok(), (1..=3650).contains(&days));
            if let Ok(parsed) = parsed {
                prop_assert_eq!(parsed.days(), days);
            }
        }

        #[test]
        fn scopes_accept_iff_every_scope_does_and_round_trip(raw in proptest::collection::vec("[a-z][a-z0-9_.:-]{0,10}|\\PC{0,12}", 0..6)) {
            let expected = raw.iter().all(|scope| Scope::parse(scope).is_ok());
            let parsed = Scopes::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), expected, "{:?}", parsed);
            if let Ok(scopes) = parsed {
                // Stored and read back, the set grants exactly what it granted before.
                let stored = Scopes::from_stored(&scopes.to_stored());
                prop_assert_eq!(stored.to_strings(), scopes.to_strings());
                for scope in &raw {
                    prop_assert!(scopes.grants(&Scope::parse(scope).unwrap()));
                }
            }
        }

        #[test]
        fn scopes_from_stored_never_panics(stored in "\\PC{0,100}") {
            let _ = Scopes::from_stored(&stored).to_strings();
        }
    }
}
