//! The usage chart of the console: an inline SVG drawn on the server, so the console needs no
//! chart library, no CDN and no script. One stacked bar per day (succeeded at the bottom,
//! failed above it, requests still in flight on top), heights proportional to the busiest
//! day, each with a `<title>` tooltip and `data-*` attributes carrying its numbers.

use keyward_proto::{UsageDay, UsageResponse};
use maud::{html, Markup};

/// The drawing's coordinate space; the SVG scales to its container's width.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
/// Room for the y-axis labels on the left and the dates below.
const LEFT: f64 = 44.0;
/// Room on the right for the last date label, centred under the last bar.
const RIGHT: f64 = 20.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 8.0;

pub const SUCCEEDED_COLOR: &str = "#1f8a4c";
pub const FAILED_COLOR: &str = "#c62f2f";
pub const IN_FLIGHT_COLOR: &str = "#9aa3b5";

/// The chart of `report`'s days, oldest on the left.
pub fn usage_chart(report: &UsageResponse) -> Markup {
    let days = &report.days;
    let busiest = days.iter().map(|day| day.total).max().unwrap_or(0).max(1);
    let plot_height = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT - RIGHT) / days.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let scale = |count: i64| count.max(0) as f64 / busiest as f64 * plot_height;
    let baseline = HEIGHT - BOTTOM;
    let label_every = days.len().div_ceil(6).max(1);
    html! {
        // Scaled as a whole (the default `xMidYMid meet`), so the text is never stretched; on a
        // narrow screen the chart keeps a minimum width and scrolls in its wrapper.
        svg.chart role="img" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            xmlns="http://www.w3.org/2000/svg"
            aria-label={ "Requests per day from " (report.from) " to " (report.to) } {
            // Grid and y-axis: 0, half and the busiest day's total.
            @for (count, y) in [(0, baseline), (busiest / 2, baseline - scale(busiest / 2)), (busiest, TOP)] {
                line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) {}
                text.axis x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (count) }
            }
            @for (index, day) in days.iter().enumerate() {
                @let x = LEFT + index as f64 * slot + (slot - bar) / 2.0;
                @let succeeded = scale(day.succeeded);
                @let failed = scale(day.failed);
                @let in_flight = scale(day.in_flight);
                g.day data-date=(day.date) data-total=(day.total)
                    data-succeeded=(day.succeeded) data-failed=(day.failed)
                    data-in-flight=(day.in_flight) tabindex="0" {
                    title { (tooltip(day)) }
                    // The whole slot answers the hover, so a zero day has a tooltip too.
                    rect.hover x=(LEFT + index as f64 * slot) y=(TOP) width=(slot) height=(plot_height) fill="transparent" {}
                    rect.succeeded x=(x) y=(baseline - succeeded) width=(bar) height=(succeeded) fill=(SUCCEEDED_COLOR) {}
                    rect.failed x=(x) y=(baseline - succeeded - failed) width=(bar) height=(failed) fill=(FAILED_COLOR) {}
                    rect.in-flight x=(x) y=(baseline - succeeded - failed - in_flight) width=(bar) height=(in_flight) fill=(IN_FLIGHT_COLOR) {}
                    @if day.total == 0 {
                        // A zero day is drawn as a tick on the baseline, not as nothing.
                        line.zero x1=(x) x2=(x + bar) y1=(baseline) y2=(baseline) {}
                    }
                    @if index % label_every == 0 || index + 1 == days.len() {
                        text.axis x=(x + bar / 2.0) y=(HEIGHT - 8.0) text-anchor="middle" {
                            (day.date.get(5..).unwrap_or(&day.date))
                        }
                    }
                }
            }
        }
    }
}

/// `2026-11-20: 123 requests (120 succeeded, 3 failed)`, plus the running ones when any.
pub fn tooltip(day: &UsageDay) -> String {
    let plural = if day.total == 1 {
        "request"
    } else {
        "requests"
    };
    let mut text = format!(
        "{}: {} {plural} ({} succeeded, {} failed",
        day.date, day.total, day.succeeded, day.failed
    );
    if day.in_flight > 0 {
        text.push_str(&format!(", {} in flight", day.in_flight));
    }
    text.push(')');
    text
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
        UsageResponse {
            from: days.first().map(|d| d.date.clone()).unwrap_or_default(),
            to: days.last().map(|d| d.date.clone()).unwrap_or_default(),
            executions: days.iter().map(|d| d.total).sum(),
            succeeded: days.iter().map(|d| d.succeeded).sum(),
            failed: days.iter().map(|d| d.failed).sum(),
            in_flight: days.iter().map(|d| d.in_flight).sum(),
            success_rate: None,
            avg_duration_ms: None,
            days,
        }
    }

    /// The `height` of the `rect` of `class` in the `n`th day group.
    fn height(svg: &str, n: usize, class: &str) -> f64 {
        let group = svg.split("<g class=\"day\"").nth(n + 1).expect("day group");
        let rect = group
            .split("<rect")
            .find(|rect| rect.contains(&format!("class=\"{class}\"")))
            .expect("rect");
        rect.split("height=\"")
            .nth(1)
            .expect("height")
            .split('"')
            .next()
            .expect("value")
            .parse()
            .expect("number")
    }

    #[test]
    fn bars_are_proportional_and_stacked() {
        let svg = usage_chart(&report(vec![
            day("2026-11-20", 100, 0, 0),
            day("2026-11-21", 40, 10, 0),
            day("2026-11-22", 0, 0, 0),
        ]))
        .into_string();
        let full = height(&svg, 0, "succeeded");
        assert!(full > 100.0, "the busiest day fills the plot: {full}");
        assert!((height(&svg, 1, "succeeded") - full * 0.4).abs() < 1e-6);
        assert!((height(&svg, 1, "failed") - full * 0.1).abs() < 1e-6);
        assert_eq!(height(&svg, 2, "succeeded"), 0.0);
        assert_eq!(svg.matches("<g class=\"day\"").count(), 3);
        assert!(svg.contains(FAILED_COLOR) && svg.contains(SUCCEEDED_COLOR));
    }

    #[test]
    fn zero_days_are_drawn_and_every_bar_carries_its_numbers() {
        let svg = usage_chart(&report(vec![
            day("2026-11-21", 0, 0, 0),
            day("2026-11-22", 3, 1, 2),
        ]))
        .into_string();
        assert!(
            svg.contains("class=\"zero\""),
            "a zero day has a baseline tick"
        );
        assert!(svg.contains("<title>2026-11-21: 0 requests (0 succeeded, 0 failed)</title>"));
        assert!(svg.contains(
            "<title>2026-11-22: 6 requests (3 succeeded, 1 failed, 2 in flight)</title>"
        ));
        assert!(svg.contains(
            "data-date=\"2026-11-22\" data-total=\"6\" data-succeeded=\"3\" data-failed=\"1\""
        ));
        assert!(height(&svg, 1, "in-flight") > 0.0);
    }

    #[test]
    fn an_empty_report_draws_without_dividing_by_zero() {
        let svg = usage_chart(&report(vec![day("2026-11-22", 0, 0, 0)])).into_string();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
