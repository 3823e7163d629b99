//! `keyward usage`: the metered requests of the caller's tenant (or of one key) per UTC day,
//! as a one-line summary and a bar chart. [`render`] is pure, so the chart is tested without a
//! server or a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;

use clap::Args;
use keyward_client::{UsageDay, UsageResponse};

use keyward_client::proto::display::{milliseconds, percent, thousands};

use super::{ClientArgs, Context, Failure};

/// Cells of the busiest day's bar: with the date and counts up to 30 characters
/// (`1,234 ok, 56 failed, 7 in flight`), a line fits 80 columns.
const BAR_WIDTH: usize = 36;

const SUCCEEDED: char = '█';
const FAILED: char = '▒';
const IN_FLIGHT: char = '░';

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Days to show, today (UTC) included: 1-90 [default: 30]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=90))]
    pub days: Option<u32>,
    /// Show one of your keys (key_…, as `keyward keys list` shows it) instead of the tenant
    #[arg(long = "key", value_name = "ID")]
    pub key_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `keyward usage`: the API's report as JSON, or a summary and a chart.
pub async fn run(args: UsageArgs) -> Result<(), Failure> {
    let context = Context::load(&args.client)?;
    let client = context.client()?;
    let report = client
        .usage(args.days, args.key_id.as_deref())
        .await
        .map_err(|error| context.fail(error))?;
    if context.json {
        return context.print_json(&report);
    }
    let label = match &args.key_id {
        Some(id) => format!("key {id}"),
        // The report carries no tenant name; asked after the report so that a refreshed
        // session is not refreshed twice. The name is a nicety: without it the report stands.
        None => match client.me().await {
            Ok(me) => format!("tenant {:?}", me.tenant.name),
            Err(_) => "your tenant".to_owned(),
        },
    };
    print!("{}", render(&report, use_color(), &label));
    Ok(())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything
/// (https://no-color.org).
fn use_color() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// The report as text: a summary line, then one bar per day (oldest first) and a legend.
/// `label` names what was measured (`tenant "acme"`, `key key_…`). With `color` false the
/// text holds no escape sequence: the characters alone tell the parts apart.
pub fn render(report: &UsageResponse, color: bool, label: &str) -> String {
    let mut out = String::new();
    let parts: Vec<Parts> = report.days.iter().map(Parts::of).collect();
    let busiest = parts.iter().map(Parts::total).max().unwrap_or(0);
    if busiest == 0 && report.executions <= 0 {
        let _ = writeln!(
            out,
            "No metered requests in the last {} ({} to {}) for {label}.",
            plural(
                i64::try_from(report.days.len()).unwrap_or(i64::MAX),
                "day",
                "days"
            ),
            report.from,
            report.to
        );
        out.push_str("Verify calls and gateway requests made with a key are metered.\n");
        return out;
    }

    let _ = writeln!(
        out,
        "Usage of {label} from {} to {}: {}",
        report.from,
        report.to,
        summary(report)
    );
    out.push('\n');
    for (day, parts) in report.days.iter().zip(&parts) {
        let cells = parts.cells(busiest);
        let mut line = format!("{}  ", day.date);
        let drawn = cells.iter().sum::<usize>();
        for ((count, glyph), colour) in cells
            .iter()
            .zip([SUCCEEDED, FAILED, IN_FLIGHT])
            .zip([GREEN, RED, DIM])
        {
            if *count == 0 {
                continue;
            }
            let run: String = std::iter::repeat_n(glyph, *count).collect();
            if color {
                let _ = write!(line, "{colour}{run}{RESET}");
            } else {
                line.push_str(&run);
            }
        }
        // Padding by cells, not by bytes, keeps the counts aligned with or without escapes.
        line.extend(std::iter::repeat_n(' ', BAR_WIDTH.saturating_sub(drawn)));
        let _ = writeln!(line, "  {}", parts.counts());
        out.push_str(&line);
    }
    out.push('\n');
    let legend = [
        (SUCCEEDED, GREEN, "succeeded"),
        (FAILED, RED, "failed"),
        (IN_FLIGHT, DIM, "in flight"),
    ]
    .map(|(glyph, colour, meaning)| {
        if color {
            format!("{colour}{glyph}{RESET} {meaning}")
        } else {
            format!("{glyph} {meaning}")
        }
    });
    let _ = writeln!(
        out,
        "{}   (a full bar is {}, the busiest day)",
        legend.join("  "),
        plural(busiest, "request", "requests")
    );
    out
}

/// `1,234 executions, 98.2% succeeded, 3 failed, 1 in flight, average 4.2 ms`.
fn summary(report: &UsageResponse) -> String {
    let mut text = plural(report.executions.max(0), "execution", "executions");
    match report.success_rate {
        Some(rate) => {
            let _ = write!(
                text,
                ", {} succeeded, {} failed",
                percent(rate),
                thousands(report.failed)
            );
        }
        None => text.push_str(", no completed requests"),
    }
    if report.in_flight > 0 {
        let _ = write!(text, ", {} in flight", thousands(report.in_flight));
    }
    if let (Some(_), Some(average)) = (report.success_rate, report.avg_duration_ms) {
        let _ = write!(text, ", average {}", milliseconds(average));
    }
    text
}

/// `1 request`, `1,234 requests`.
fn plural(count: i64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(count),
        if count == 1 { one } else { many }
    )
}

/// One day's counts, never negative.
struct Parts {
    succeeded: i64,
    failed: i64,
    in_flight: i64,
}

impl Parts {
    fn of(day: &UsageDay) -> Self {
        Self {
            succeeded: day.succeeded.max(0),
            failed: day.failed.max(0),
            in_flight: day.in_flight.max(0),
        }
    }

    fn total(&self) -> i64 {
        self.succeeded
            .saturating_add(self.failed)
            .saturating_add(self.in_flight)
    }

    /// Cells of the succeeded, failed and in-flight parts. The bar is proportional to the
    /// busiest day; every non-zero part gets at least one cell, so a single failure among
    /// thousands of successes still shows.
    fn cells(&self, busiest: i64) -> [usize; 3] {
        let total = self.total();
        if total == 0 || busiest == 0 {
            return [0; 3];
        }
        let values = [self.succeeded, self.failed, self.in_flight];
        let non_zero = values.iter().filter(|value| **value > 0).count();
        let scaled =
            (i128::from(total) * BAR_WIDTH as i128 + i128::from(busiest) / 2) / i128::from(busiest);
        let length = usize::try_from(scaled)
            .unwrap_or(BAR_WIDTH)
            .clamp(non_zero, BAR_WIDTH);
        let mut cells = values.map(|value| {
            if value == 0 {
                0
            } else {
                let share = i128::from(value) * length as i128 / i128::from(total);
                usize::try_from(share).unwrap_or(length).max(1)
            }
        });
        // Floors and minimums leave the sum off by a few cells; the largest part absorbs it,
        // and it can: it holds at least a third of the bar.
        let largest = (0..3).max_by_key(|index| values[*index]).unwrap_or(0);
        let sum: usize = cells.iter().sum();
        cells[largest] = (cells[largest] + length).saturating_sub(sum).max(1);
        cells
    }

    /// `120 ok, 3 failed, 1 in flight`; a day without requests is `0`.
    fn counts(&self) -> String {
        if self.total() == 0 {
            return "0".to_owned();
        }
        let mut text = format!("{} ok", thousands(self.succeeded));
        if self.failed > 0 {
            let _ = write!(text, ", {} failed", thousands(self.failed));
        }
        if self.in_flight > 0 {
            let _ = write!(text, ", {} in flight", thousands(self.in_flight));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, succeeded: i64, failed: i64, in_flight: i64) -> UsageDay {
        UsageDay {
            date: date.into(),
            total: succeeded + failed + in_flight,
            succeeded,
            failed,
            in_flight,
        }
    }

    fn report(days: Vec<UsageDay>) -> UsageResponse {
        let sum = |field: fn(&UsageDay) -> i64| days.iter().map(field).sum::<i64>();
        let (succeeded, failed, in_flight) = (
            sum(|day| day.succeeded),
            sum(|day| day.failed),
            sum(|day| day.in_flight),
        );
        let completed = succeeded + failed;
        UsageResponse {
            from: days.first().map(|day| day.date.clone()).unwrap_or_default(),
            to: days.last().map(|day| day.date.clone()).unwrap_or_default(),
            executions: succeeded + failed + in_flight,
            succeeded,
            failed,
            in_flight,
            success_rate: (completed > 0).then(|| succeeded as f64 / completed as f64),
            avg_duration_ms: (completed > 0).then_some(0.35),
            days,
        }
    }

    fn bar_of(line: &str) -> String {
        line.chars()
            .filter(|c| [SUCCEEDED, FAILED, IN_FLIGHT].contains(c))
            .collect()
    }

    fn count(text: &str, glyph: char) -> usize {
        text.chars().filter(|c| *c == glyph).count()
    }

    #[test]
    fn bars_are_proportional_to_the_busiest_day() {
        let text = render(
            &report(vec![
                day("2026-11-20", 100, 0, 0),
                day("2026-11-21", 50, 0, 0),
                day("2026-11-22", 25, 0, 0),
            ]),
            false,
            "tenant \"acme\"",
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("Usage of tenant \"acme\" from 2026-11-20 to 2026-11-22: 175"),
            "{text}"
        );
        let chart: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|line| line.starts_with("2026-"))
            .collect();
        assert_eq!(chart.len(), 3, "{text}");
        assert_eq!(bar_of(chart[0]).chars().count(), BAR_WIDTH, "{text}");
        assert_eq!(bar_of(chart[1]).chars().count(), BAR_WIDTH / 2, "{text}");
        assert_eq!(bar_of(chart[2]).chars().count(), BAR_WIDTH / 4, "{text}");
        assert!(chart[0].ends_with("  100 ok"), "{text}");
        // The counts line up whatever the bar's length.
        let column = |line: &str| line.chars().skip(12).position(|c| c.is_ascii_digit());
        assert_eq!(column(chart[0]), column(chart[2]), "{text}");
    }

    #[test]
    fn failed_and_in_flight_parts_show_even_when_small() {
        let text = render(
            &report(vec![
                day("2026-11-21", 1000, 1, 1),
                day("2026-11-22", 3, 3, 0),
            ]),
            false,
            "key key_1",
        );
        let chart: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("2026-"))
            .collect();
        let busy = bar_of(chart[0]);
        assert_eq!(busy.chars().count(), BAR_WIDTH, "{text}");
        assert_eq!(count(&busy, FAILED), 1, "{text}");
        assert_eq!(count(&busy, IN_FLIGHT), 1, "{text}");
        assert!(
            chart[0].ends_with("1,000 ok, 1 failed, 1 in flight"),
            "{text}"
        );
        // A small day: at least one cell per part, succeeded drawn first.
        let small = bar_of(chart[1]);
        assert!(
            small.starts_with(SUCCEEDED) && small.ends_with(FAILED),
            "{text}"
        );
        assert!(chart[1].ends_with("3 ok, 3 failed"), "{text}");
        assert!(text.contains("▒ failed"), "{text}");
        assert!(
            text.contains(
                "1,008 executions, 99.6% succeeded, 4 failed, 1 in flight, average 0.35 ms"
            ),
            "{text}"
        );
    }

    #[test]
    fn days_without_requests_have_an_empty_bar_and_zero() {
        let text = render(
            &report(vec![day("2026-11-21", 0, 0, 0), day("2026-11-22", 4, 0, 0)]),
            false,
            "tenant \"acme\"",
        );
        let empty = text
            .lines()
            .find(|line| line.starts_with("2026-11-21"))
            .unwrap();
        assert_eq!(bar_of(empty), "", "{text}");
        assert!(empty.ends_with(" 0"), "{text}");
        assert!(!empty.contains("ok"), "{text}");
    }

    #[test]
    fn colour_is_escape_sequences_only_when_asked() {
        let usage = report(vec![day("2026-11-22", 8, 2, 1)]);
        let plain = render(&usage, false, "tenant \"acme\"");
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = render(&usage, true, "tenant \"acme\"");
        assert!(
            coloured.contains(&format!("{GREEN}{SUCCEEDED}")),
            "{coloured}"
        );
        assert!(coloured.contains(&format!("{RED}{FAILED}")), "{coloured}");
        assert!(coloured.contains(RESET), "{coloured}");
        // The same text once the escapes are taken out.
        let stripped = [GREEN, RED, DIM, RESET]
            .iter()
            .fold(coloured.clone(), |text, code| text.replace(code, ""));
        assert_eq!(stripped, plain);
    }

    #[test]
    fn a_report_of_zeros_says_so_and_draws_nothing() {
        let usage = report(
            (10..17)
                .map(|n| day(&format!("2026-11-{n}"), 0, 0, 0))
                .collect(),
        );
        let text = render(&usage, true, "tenant \"acme\"");
        assert!(
            text.starts_with("No metered requests in the last 7 days (2026-11-10 to 2026-11-16)"),
            "{text}"
        );
        assert!(!text.contains('%') && !text.contains('\x1b'), "{text}");
        assert!(!text.contains(SUCCEEDED), "{text}");
    }

    #[test]
    fn only_in_flight_requests_have_no_rate_or_average() {
        let text = render(
            &report(vec![day("2026-11-22", 0, 0, 2)]),
            false,
            "key key_1",
        );
        assert!(
            text.contains("2 executions, no completed requests, 2 in flight\n"),
            "{text}"
        );
        assert!(!text.contains('%') && !text.contains("average"), "{text}");
    }
}
