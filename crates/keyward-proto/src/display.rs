//! How usage numbers read, the same in the terminal (`keyward usage`) and in the console:
//! `1,234`, `98.2%`, `0.35 ms`.

/// `1234567` → `1,234,567`.
pub fn thousands(number: i64) -> String {
    let digits: Vec<char> = number.unsigned_abs().to_string().chars().collect();
    // Groups of three counted from the right.
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|group| group.iter().collect())
        .collect();
    let sign = if number < 0 { "-" } else { "" };
    format!("{sign}{}", groups.join(","))
}

/// A success rate (0–1) as `98.2%`, never rounded to 100.0% while something failed nor to
/// 0.0% while something succeeded: 2 failures in 10,000 requests are not "100.0% succeeded".
pub fn percent(rate: f64) -> String {
    let rate = rate.clamp(0.0, 1.0);
    let text = format!("{:.1}", rate * 100.0);
    let text = match text.as_str() {
        "100.0" if rate < 1.0 => "99.9".to_owned(),
        "0.0" if rate > 0.0 => "0.1".to_owned(),
        _ => text,
    };
    format!("{text}%")
}

/// Milliseconds with the precision that matters at their size: `0.35 ms`, `4.2 ms`, `1,250 ms`.
pub fn milliseconds(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "? ms".to_owned();
    }
    if ms < 0.01 {
        "<0.01 ms".to_owned()
    } else if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        // f64 → i64 saturates; no metered duration comes near it.
        format!("{} ms", thousands(ms.round() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1234), "-1,234");
        assert_eq!(milliseconds(0.35), "0.35 ms");
        assert_eq!(milliseconds(0.004), "<0.01 ms");
        assert_eq!(milliseconds(4.2), "4.2 ms");
        assert_eq!(milliseconds(1250.4), "1,250 ms");
        assert_eq!(percent(0.982), "98.2%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(percent(0.99999), "99.9%");
        assert_eq!(percent(0.00001), "0.1%");
        assert_eq!(percent(0.0), "0.0%");
    }
}
