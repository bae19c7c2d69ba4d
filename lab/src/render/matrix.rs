//! The matrix's words: kernels × paths (terminal and Markdown), the red rows with their reasons,
//! and the cases whose observations differ between kernels.

use super::table::{self, Align};
use crate::cases::{self, first_difference, Status};
use crate::matrix::{Difference, Row, RowState};

/// The matrix table: kernels as rows, paths as columns, each cell passed/failed/known/unsupported.
pub fn matrix_table(rows: &[Row], markdown: bool) -> String {
    let mut header: Vec<&str> = vec!["kernel", "release", "verdict"];
    header.extend(cases::PATHS.iter().copied());
    header.push("total");
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let release = row.report.as_ref().map(|r| r.release.clone()).unwrap_or_else(|| "-".into());
            let verdict = if row.green() { "pass" } else { "FAIL" };
            let mut line = vec![row.kernel.clone(), release, verdict.to_string()];
            line.extend(cells(row));
            line
        })
        .collect();
    if markdown {
        table::markdown(&header, &lines)
            + "\nCells: passed/failed/known/unsupported (known: failures a known kernel finding explains, see snapshots/FINDINGS.toml; still failures).\n"
    } else {
        table::plain(&header, &lines, &[Align::Left])
            + "(cells: passed/failed/known/unsupported; known = failures a known kernel finding explains, still failures)\n"
    }
}

/// `matrix.md`: the table, the details, and how long the matrix took.
pub fn matrix_md(rows: &[Row], details: &str, selftests: &str, wall_seconds: f64, jobs: usize) -> String {
    format!(
        "# sockmap-lab matrix\n\n{}\n```\n{details}```\n{selftests}\nWall time: {wall_seconds:.0}s, {jobs} guest(s) at once.\n",
        matrix_table(rows, true)
    )
}

/// Red rows with their reasons, then cases whose observations differ between kernels.
pub fn matrix_details(rows: &[Row], diffs: &[Difference], max_cases: usize) -> String {
    let mut out = String::new();
    for row in rows.iter().filter(|r| !r.green()) {
        out.push_str(&format!("\n{} is red:\n", row.kernel));
        match &row.state {
            RowState::BuildFailed { error } => out.push_str(&format!("  {}\n", cases::failure_excerpt(error, 15).replace('\n', "\n  "))),
            RowState::GuestFailed { outcome, console_tail } => {
                out.push_str(&format!("  guest: {outcome}\n  {}\n", console_tail.replace('\n', "\n  ")))
            }
            RowState::Ran => {
                for case in row.report.iter().flat_map(|r| &r.cases).filter(|c| c.status == Status::Failed) {
                    let known = case.finding.as_ref().map(|id| format!(" (known finding: {id})")).unwrap_or_default();
                    out.push_str(&format!("  {} {}{known}: {}\n", case.label(), case.name, first_difference(case.failure.as_deref().unwrap_or(""))));
                }
            }
        }
    }
    if !diffs.is_empty() {
        out.push_str(&format!("\n{} case(s) observe differently across kernels:\n", diffs.len()));
        for d in diffs.iter().take(max_cases) {
            out.push_str(&format!("  {}\n", d.case));
            for (field, values) in d.fields.iter().take(4) {
                let per: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("    {field}: {}\n", per.join("  ")));
            }
        }
        if diffs.len() > max_cases {
            out.push_str(&format!("  ... and {} more (matrix.json has them all)\n", diffs.len() - max_cases));
        }
    }
    out
}

/// Per-path cell text: passed/failed/known/unsupported, where "known" counts failures a known
/// kernel finding explains (still failures: the row is red).
pub fn cells(row: &Row) -> Vec<String> {
    match (&row.state, &row.report) {
        (RowState::BuildFailed { .. }, _) => vec!["build failed".into()],
        (RowState::GuestFailed { outcome, .. }, _) => vec![format!("guest {}", outcome["kind"].as_str().unwrap_or("failed"))],
        (RowState::Ran, Some(report)) => {
            let tally = cases::tally(&report.cases);
            let cell = |t: &cases::Tally| format!("{}/{}/{}/{}", t.passed, t.failed, t.known, t.unsupported);
            cases::PATHS
                .iter()
                .map(|p| tally.iter().find(|(path, _)| path == p).map_or_else(|| "-".into(), |(_, t)| cell(t)))
                .chain(std::iter::once(cell(&cases::Tally::of(&report.cases))))
                .collect()
        }
        (RowState::Ran, None) => vec!["no report".into()],
    }
}
