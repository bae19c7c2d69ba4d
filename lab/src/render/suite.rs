//! `lab test`'s words: a line per case, then the failures with their evidence and the counts per path.

use super::table::{self, Align};
use crate::cases::{self, CaseResult, Status, Tally};
use crate::suite::RunReport;

/// The per-case line printed while reporting; a failure a known finding explains says which.
pub fn case_line(case: &CaseResult) -> String {
    format!("{:<12} {}{}", case.label(), case.name, known_note(case))
}

fn known_note(case: &CaseResult) -> String {
    case.finding.as_ref().filter(|_| case.is_known_finding()).map(|id| format!(" (known finding: {id})")).unwrap_or_default()
}

/// The human summary: failures with their evidence, then counts per path.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    for case in report.cases.iter().filter(|c| matches!(c.status, Status::Failed | Status::Crashed)) {
        out.push_str(&format!("\n--- {} {}{} ---\n", case.label(), case.name, known_note(case)));
        if let Some(text) = &case.failure {
            out.push_str(&cases::failure_excerpt(text, 40));
            out.push('\n');
        }
    }
    let not_run: Vec<&str> = report.cases.iter().filter(|c| c.status == Status::NotRun).map(|c| c.name.as_str()).collect();
    if let Some(first) = not_run.first() {
        out.push_str(&format!("\nNOT RUN: {} listed case(s) never started (first: {first})\n", not_run.len()));
    }
    for problem in &report.problems {
        out.push_str(&format!("\nRUN PROBLEM: {problem}\n"));
    }
    if report.output_from_console {
        out.push_str("\nnote: vng delivered none of the guest's output; the verdicts were read from the kernel console, where kernel messages may cut into them\n");
    }
    if let Some(why) = &report.retried {
        out.push_str(&format!("\nretried: the first boot was thrown away ({why})\n"));
    }
    out.push_str(&format!(
        "\n{} on {} ({}), suite ran {:.0}s in {}; {} of {} listed cases have a verdict\n",
        report.kernel,
        report.release,
        report.accel,
        report.guest_seconds,
        if report.guests > 1 { format!("{} guests side by side", report.guests) } else { "the guest".to_string() },
        report.with_verdict(),
        report.listed,
    ));
    if let Some(family) = &report.judged_as {
        out.push_str(&format!("judged by the {family} family's snapshots (--judge-as), not this kernel's own\n"));
    }
    for (id, what) in &report.findings {
        out.push_str(&format!("known finding {id}: {what}\n"));
    }
    out.push_str(&tally_table(&report.cases));
    out
}

/// Counts per path and in all. "failed" counts every case without a pass that no known finding
/// explains: failures, crashes and cases never run; "known" the failures a known kernel finding
/// explains (not passes either).
fn tally_table(all: &[CaseResult]) -> String {
    let row = |name: &str, t: &Tally| {
        vec![name.to_string(), t.passed.to_string(), t.failed.to_string(), t.known.to_string(), t.unsupported.to_string(), t.ignored.to_string()]
    };
    let mut rows: Vec<Vec<String>> = cases::tally(all).iter().map(|(path, t)| row(path, t)).collect();
    rows.push(row("total", &Tally::of(all)));
    let right = [Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right];
    table::plain(&["path", "passed", "failed", "known", "unsupported", "ignored"], &rows, &right)
}
