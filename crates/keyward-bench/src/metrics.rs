//! Reading keyward's `/metrics` (Prometheus text format): the key cache gauges and the SQL
//! statement counters, so a row can say how many statements of each kind one request cost.
//! Only what the bench needs is parsed: `name{label="value",...} number` lines.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use keyward_proto::paths;

use crate::http::Call;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

/// SQL statements by (verb, table), as counted by `keyward_db_statements_total`.
pub type Statements = BTreeMap<(String, String), f64>;

impl Scrape {
    pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Self> {
        let answer = Call::get(addr, paths::METRICS).send().await?;
        if !answer.status.is_success() {
            bail!("GET {} answered {}", paths::METRICS, answer.status);
        }
        let text = std::str::from_utf8(&answer.body).context("/metrics is not UTF-8")?;
        Ok(Self::parse(text))
    }

    pub fn parse(text: &str) -> Self {
        Self {
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The sum of every sample of `name` (whatever its labels); `None` when absent, so a
    /// metric this build does not have is told apart from a zero.
    pub fn value(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for sample in self.samples.iter().filter(|sample| sample.name == name) {
            *found.get_or_insert(0.0) += sample.value;
        }
        found
    }

    /// `keyward_db_statements_total` by verb and table.
    pub fn statements(&self) -> Statements {
        let mut counts = Statements::new();
        for sample in &self.samples {
            if sample.name != "keyward_db_statements_total" {
                continue;
            }
            let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_default();
            *counts.entry((label("verb"), label("table"))).or_default() += sample.value;
        }
        counts
    }
}

/// `after - before`, per (verb, table), leaving out the ones that did not move.
pub fn statements_between(before: &Statements, after: &Statements) -> Statements {
    after
        .iter()
        .filter_map(|(key, &count)| {
            let delta = count - before.get(key).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| (key.clone(), delta))
        })
        .collect()
}

/// Whether the verb writes (anything but a `SELECT`).
pub fn is_write(verb: &str) -> bool {
    !verb.eq_ignore_ascii_case("SELECT")
}

/// Parses `name{a="x",b="y"} 12` or `name 12` (an optional timestamp after the value is
/// ignored); comments and blank lines give `None`.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].find('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(char::is_whitespace)?;
            (&line[..space], BTreeMap::new(), &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"`; label values here never hold quotes or commas (verbs and table names), but
/// escaped quotes are handled anyway.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let equals = rest.find('=')?;
        let name = rest[..equals].trim().to_owned();
        let after = rest[equals + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (index, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break index,
                c => value.push(c),
            }
        };
        labels.insert(name, value);
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP keyward_db_statements SQL statements this process ran
# TYPE keyward_db_statements counter
keyward_db_statements_total{verb=\"SELECT\",table=\"api_keys\"} 12
keyward_db_statements_total{verb=\"SELECT\",table=\"key_changes\"} 300
keyward_db_statements_total{verb=\"UPDATE\",table=\"instances\"} 7
keyward_key_cache_entries 1000
keyward_key_cache_serving 1
keyward_http_requests_total{route=\"/healthz\",status=\"200\"} 5 1700000000
keyward_http_requests_total{route=\"/v1/keys/verify\",status=\"200\"} 6
";

    #[test]
    fn samples_are_parsed_with_their_labels() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.samples.len(), 7);
        assert_eq!(scrape.value("keyward_key_cache_entries"), Some(1000.0));
        assert_eq!(scrape.value("keyward_key_cache_serving"), Some(1.0));
        assert_eq!(scrape.value("keyward_http_requests_total"), Some(11.0));
        assert_eq!(scrape.value("keyward_key_cache_hits_total"), None);
        let statements = scrape.statements();
        assert_eq!(
            statements.get(&("SELECT".into(), "api_keys".into())),
            Some(&12.0)
        );
        assert_eq!(
            statements.get(&("UPDATE".into(), "instances".into())),
            Some(&7.0)
        );
    }

    #[test]
    fn label_values_may_hold_escapes_and_spaces() {
        let sample = parse_line(r#"m{a="x \"y\", z",b="2"} 3.5"#).expect("parses");
        assert_eq!(
            sample.labels.get("a").map(String::as_str),
            Some("x \"y\", z")
        );
        assert_eq!(sample.labels.get("b").map(String::as_str), Some("2"));
        assert_eq!(sample.value, 3.5);
        assert!(parse_line("# comment").is_none());
        assert!(parse_line("broken{a=\"x\" 3").is_none());
        assert!(parse_line("novalue").is_none());
    }

    #[test]
    fn differences_leave_out_what_did_not_move() {
        let before = Scrape::parse(TEXT).statements();
        let after = Scrape::parse(
            "keyward_db_statements_total{verb=\"SELECT\",table=\"api_keys\"} 12\n\
             keyward_db_statements_total{verb=\"SELECT\",table=\"key_changes\"} 350\n\
             keyward_db_statements_total{verb=\"INSERT\",table=\"usage_daily\"} 2\n",
        )
        .statements();
        let delta = statements_between(&before, &after);
        assert_eq!(delta.len(), 2);
        assert_eq!(
            delta.get(&("SELECT".into(), "key_changes".into())),
            Some(&50.0)
        );
        assert_eq!(
            delta.get(&("INSERT".into(), "usage_daily".into())),
            Some(&2.0)
        );
        assert!(is_write("INSERT") && is_write("UPDATE") && !is_write("SELECT"));
    }
}
