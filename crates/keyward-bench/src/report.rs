//! The results as Markdown: the header (command, cores, load), one table row per measurement,
//! the ratios measured in the same run, then warnings and notes.

use std::fmt::Write as _;

use crate::load::{percentile_ms, CpuUse, Measurement};

/// One measurement, reduced to what the table shows.
pub struct Summary {
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
    pub errors_described: String,
    pub cpu: Option<CpuUse>,
}

/// keyward's CPU time per answered request, in µs: its share of a core over the window
/// divided by the answers per second. It separates what the server spends from what the
/// generator, sharing the same two cores, lets it answer.
pub fn cpu_per_answer_us(summary: &Summary) -> Option<f64> {
    let percent = summary.cpu?.keyward?;
    (summary.requests_per_second > 0.0).then(|| percent * 10_000.0 / summary.requests_per_second)
}

impl Summary {
    pub fn of(measurement: &Measurement) -> Self {
        Self {
            requests_per_second: measurement.requests_per_second,
            p50_ms: percentile_ms(&measurement.latencies_us, 50.0),
            p99_ms: percentile_ms(&measurement.latencies_us, 99.0),
            errors: measurement.errors.total(),
            errors_described: measurement.errors.describe(),
            cpu: measurement.cpu,
        }
    }
}

pub struct Row {
    pub scenario: String,
    pub outcome: Result<Summary, String>,
    /// The row this one is compared with, and how to name it in the ratio column.
    pub compared_with: Option<(usize, String)>,
}

/// A line of the ratio table: `numerator / denominator`, optionally each divided by its own
/// baseline first (`(a / a_base) / (b / b_base)`), which cancels drift between two servers.
pub struct RatioLine {
    pub label: String,
    pub numerator: usize,
    pub denominator: usize,
    pub normalised_by: Option<(usize, usize)>,
}

#[derive(Default)]
pub struct Report {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
    pub ratios: Vec<RatioLine>,
    /// Advice: the run is valid, but read it with this in mind.
    pub warnings: Vec<String>,
    /// Findings that make the numbers wrong (a setting keyward ignored); they fail the run.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// Further Markdown blocks (tables of statements, memory, checks), shown after the ratios.
    pub sections: Vec<String>,
    /// The goals of issue 7 and whether this run met them.
    pub targets: Vec<TargetLine>,
}

/// One goal: what was wanted, what was measured, and the verdict (`None`: not measured).
pub struct TargetLine {
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Report {
    /// Adds a row and returns its index.
    pub fn row(
        &mut self,
        scenario: impl Into<String>,
        outcome: Result<Summary, String>,
        compared_with: Option<(usize, &str)>,
    ) -> usize {
        self.rows.push(Row {
            scenario: scenario.into(),
            outcome,
            compared_with: compared_with.map(|(index, name)| (index, name.to_owned())),
        });
        self.rows.len() - 1
    }

    pub fn target(
        &mut self,
        goal: impl Into<String>,
        measured: impl Into<String>,
        met: Option<bool>,
    ) {
        self.targets.push(TargetLine {
            goal: goal.into(),
            measured: measured.into(),
            met,
        });
    }

    /// requests/s, p50 and p99 of a row, when it succeeded.
    pub fn numbers(&self, index: usize) -> Option<(f64, Option<f64>, Option<f64>)> {
        let summary = self.summary(index)?;
        Some((summary.requests_per_second, summary.p50_ms, summary.p99_ms))
    }

    pub fn ratio(&mut self, label: &str, numerator: usize, denominator: usize) {
        self.ratios.push(RatioLine {
            label: label.into(),
            numerator,
            denominator,
            normalised_by: None,
        });
    }

    pub fn normalised_ratio(
        &mut self,
        label: &str,
        (numerator, numerator_base): (usize, usize),
        (denominator, denominator_base): (usize, usize),
    ) {
        self.ratios.push(RatioLine {
            label: label.into(),
            numerator,
            denominator,
            normalised_by: Some((numerator_base, denominator_base)),
        });
    }

    /// Whether anything went wrong: a failed scenario or a measurement with errors.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
            || self.rows.iter().any(|row| match &row.outcome {
                Ok(summary) => summary.errors > 0,
                Err(_) => true,
            })
    }

    fn summary(&self, index: usize) -> Option<&Summary> {
        self.rows.get(index)?.outcome.as_ref().ok()
    }

    /// requests/s, p50, p99 and keyward's CPU per answer of `a` divided by those of `b`.
    fn divide(&self, a: usize, b: usize) -> Option<[Option<f64>; 4]> {
        let (a, b) = (self.summary(a)?, self.summary(b)?);
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        };
        Some([
            ratio(Some(a.requests_per_second), Some(b.requests_per_second)),
            ratio(a.p50_ms, b.p50_ms),
            ratio(a.p99_ms, b.p99_ms),
            ratio(cpu_per_answer_us(a), cpu_per_answer_us(b)),
        ])
    }

    fn ratio_values(&self, line: &RatioLine) -> Option<[Option<f64>; 4]> {
        let direct = self.divide(line.numerator, line.denominator)?;
        let Some((numerator_base, denominator_base)) = line.normalised_by else {
            return Some(direct);
        };
        let bases = self.divide(numerator_base, denominator_base)?;
        let mut values = [None; 4];
        for (value, (x, y)) in values.iter_mut().zip(direct.into_iter().zip(bases)) {
            *value = match (x, y) {
                (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                _ => None,
            };
        }
        Some(values)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### keyward-bench\n");
        for line in &self.header {
            let _ = writeln!(out, "- {line}");
        }
        if self.has_problems() {
            let _ = writeln!(
                out,
                "\n**THIS RUN HAD ERRORS OR FAILED SCENARIOS: the numbers below are not \
                 trustworthy. See the warnings.**"
            );
        }

        let _ = writeln!(
            out,
            "\n| scenario | requests/s | p50 ms | p99 ms | errors | ratio | CPU % of a core: generator / keyward / upstream / rest of the machine | keyward CPU µs per answer |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---|---:|");
        for (index, row) in self.rows.iter().enumerate() {
            match &row.outcome {
                Ok(summary) => {
                    let ratio = match &row.compared_with {
                        None => "baseline".to_owned(),
                        Some((baseline, name)) => match self.divide(index, *baseline) {
                            Some([Some(rps), _, _, _]) => format!("{rps:.2}× {name} (requests/s)"),
                            _ => format!("– ({name} missing)"),
                        },
                    };
                    let errors = if summary.errors == 0 {
                        "0".to_owned()
                    } else {
                        format!("**{}**", summary.errors)
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                        row.scenario,
                        summary.requests_per_second,
                        milliseconds(summary.p50_ms),
                        milliseconds(summary.p99_ms),
                        errors,
                        ratio,
                        cpu(summary.cpu),
                        cpu_per_answer_us(summary)
                            .map_or("–".to_owned(), |us| format!("{us:.1}")),
                    );
                }
                Err(_) => {
                    let _ = writeln!(
                        out,
                        "| {} | **FAILED** | – | – | – | – | – | – |",
                        row.scenario
                    );
                }
            }
        }

        let lines: Vec<(&RatioLine, [Option<f64>; 4])> = self
            .ratios
            .iter()
            .filter_map(|line| Some((line, self.ratio_values(line)?)))
            .collect();
        if !lines.is_empty() {
            let _ = writeln!(
                out,
                "\n| ratio (same run) | requests/s | p50 | p99 | keyward CPU per answer |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for (line, [rps, p50, p99, cpu]) in lines {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    line.label,
                    times(rps),
                    times(p50),
                    times(p99),
                    times(cpu)
                );
            }
        }

        for section in &self.sections {
            let _ = writeln!(out, "\n{}", section.trim_end());
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\n| target (issue 7) | measured | verdict |");
            let _ = writeln!(out, "|---|---|---|");
            for target in &self.targets {
                let verdict = match target.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "not measured",
                };
                let _ = writeln!(out, "| {} | {} | {verdict} |", target.goal, target.measured);
            }
        }

        let mut warnings = self.problems.clone();
        warnings.extend(self.warnings.iter().cloned());
        for row in &self.rows {
            match &row.outcome {
                Ok(summary) if summary.errors > 0 => warnings.push(format!(
                    "{}: {} errors ({})",
                    row.scenario, summary.errors, summary.errors_described
                )),
                Err(failure) => warnings.push(format!("{} FAILED: {failure}", row.scenario)),
                Ok(_) => {}
            }
        }
        if !warnings.is_empty() {
            let _ = writeln!(out, "\n**Warnings**\n");
            for warning in &warnings {
                let _ = writeln!(out, "- **{}**", one_line(warning));
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nNotes\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

fn milliseconds(value: Option<f64>) -> String {
    match value {
        Some(ms) if ms < 10.0 => format!("{ms:.3}"),
        Some(ms) => format!("{ms:.1}"),
        None => "–".into(),
    }
}

fn times(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |value| format!("{value:.2}×"))
}

fn cpu(value: Option<CpuUse>) -> String {
    let Some(cpu) = value else {
        return "–".into();
    };
    let part = |value: Option<f64>| value.map_or_else(|| "–".into(), |v| format!("{v:.0}"));
    format!(
        "{} / {} / {} / {}",
        part(Some(cpu.generator)),
        part(cpu.keyward),
        part(cpu.upstream),
        part(cpu.others)
    )
}

/// Multi-line messages (keyward's output) folded for a Markdown list item.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ⏎ ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rps: f64, keyward: Option<f64>) -> Summary {
        Summary {
            requests_per_second: rps,
            p50_ms: None,
            p99_ms: None,
            errors: 0,
            errors_described: String::new(),
            cpu: Some(CpuUse {
                generator: 50.0,
                keyward,
                upstream: None,
                others: None,
            }),
        }
    }

    #[test]
    fn cpu_per_answer_is_core_time_over_answers() {
        // 95 % of a core for 50 000 answers a second: 19 µs each.
        let us = cpu_per_answer_us(&summary(50_000.0, Some(95.0))).unwrap();
        assert!((us - 19.0).abs() < 1e-9, "{us}");
        assert_eq!(cpu_per_answer_us(&summary(0.0, Some(95.0))), None);
        assert_eq!(cpu_per_answer_us(&summary(50_000.0, None)), None);
    }
}
