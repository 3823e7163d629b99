//! Counts the SQL statements this process runs, by verb and table, for `/metrics`
//! (`keyward_db_statements_total`): how the benchmarks show that verifying a cached key reads
//! nothing and writes nothing, and what the background tasks cost.
//!
//! Every statement of the store goes through `query` or `query_scalar` (in `sql.rs`), which
//! call [`counted`]. The SQL is static text, so its verb and table are slices of it.

use std::collections::BTreeMap;
use std::sync::Mutex;

static COUNTS: Mutex<BTreeMap<(&'static str, &'static str), u64>> = Mutex::new(BTreeMap::new());

/// One line of [`statement_counts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementCount {
    /// `SELECT`, `INSERT`, `UPDATE`, `DELETE`…
    pub verb: &'static str,
    /// The first table the statement names.
    pub table: &'static str,
    pub count: u64,
}

/// Counts one run of `sql`, and gives it back.
pub(crate) fn counted(sql: &'static str) -> &'static str {
    let key = classify(sql);
    if let Ok(mut counts) = COUNTS.lock() {
        *counts.entry(key).or_insert(0) += 1;
    }
    sql
}

/// Every statement this process ran since it started, by verb and table.
pub fn statement_counts() -> Vec<StatementCount> {
    COUNTS.lock().map_or_else(
        |_| Vec::new(),
        |counts| {
            counts
                .iter()
                .map(|(&(verb, table), &count)| StatementCount { verb, table, count })
                .collect()
        },
    )
}

fn words(sql: &'static str) -> impl Iterator<Item = &'static str> {
    sql.split(|c: char| c.is_whitespace() || c == '(' || c == ',')
        .filter(|word| !word.is_empty())
}

/// The verb, and the table after `FROM`, `INTO` or `UPDATE` (the first one named).
fn classify(sql: &'static str) -> (&'static str, &'static str) {
    let mut words = words(sql);
    let verb = words.next().unwrap_or("");
    let table = match verb {
        "UPDATE" => words.next(),
        _ => {
            let mut previous = "";
            words.find(|word| {
                let found = matches!(previous, "FROM" | "INTO");
                previous = word;
                found
            })
        }
    };
    (verb, table.unwrap_or("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_by_verb_and_first_table() {
        assert_eq!(
            classify("SELECT id, key_hash FROM api_keys WHERE key_hash = $1"),
            ("SELECT", "api_keys")
        );
        assert_eq!(
            classify("INSERT INTO usage_days (tenant_id) VALUES ($1)"),
            ("INSERT", "usage_days")
        );
        assert_eq!(
            classify("UPDATE instances SET seen_seq = $1"),
            ("UPDATE", "instances")
        );
        assert_eq!(
            classify("DELETE FROM key_changes WHERE changed_at < $1"),
            ("DELETE", "key_changes")
        );
        assert_eq!(classify("SELECT 1"), ("SELECT", "-"));
    }

    #[test]
    fn each_run_is_counted() {
        let sql = "SELECT x FROM statements_test_table";
        let before = count_of("statements_test_table");
        counted(sql);
        counted(sql);
        assert_eq!(count_of("statements_test_table"), before + 2);
    }

    fn count_of(table: &str) -> u64 {
        statement_counts()
            .iter()
            .filter(|line| line.table == table)
            .map(|line| line.count)
            .sum()
    }
}
