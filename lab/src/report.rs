//! Reports of a suite run: one line per case, a per-path summary, and the same as JSON on disk.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::suite::{self, CaseResult, Status};

/// Everything one `lab test` run established, written as `summary.json` in its results folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub kernel: String,
    pub release: String,
    pub accel: String,
    /// How the guest run ended (exited, panicked, hung...).
    pub guest: serde_json::Value,
    pub guest_seconds: f64,
    pub cases: Vec<CaseResult>,
}

impl RunReport {
    pub fn count(&self, status: Status) -> usize {
        self.cases.iter().filter(|c| c.status == status).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Status::Failed) > 0
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }
}

/// The per-case line printed while reporting.
pub fn case_line(case: &CaseResult) -> String {
    format!("{:<12} {}", case.status.label(), case.name)
}

/// The human summary: failures with their evidence, then counts per path.
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    for case in report.cases.iter().filter(|c| c.status == Status::Failed) {
        out.push_str(&format!("\n--- FAILED {} ---\n", case.name));
        if let Some(text) = &case.failure {
            out.push_str(&suite::failure_excerpt(text, 40));
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "\n{} on {} ({}), suite ran {:.0}s in the guest\n",
        report.kernel, report.release, report.accel, report.guest_seconds
    ));
    out.push_str(&format!("{:<10} {:>7} {:>7} {:>12} {:>8}\n", "path", "passed", "failed", "unsupported", "ignored"));
    for (path, [p, f, u, i]) in suite::tally(&report.cases) {
        out.push_str(&format!("{path:<10} {p:>7} {f:>7} {u:>12} {i:>8}\n"));
    }
    out.push_str(&format!(
        "{:<10} {:>7} {:>7} {:>12} {:>8}\n",
        "total",
        report.count(Status::Passed),
        report.count(Status::Failed),
        report.count(Status::Unsupported),
        report.count(Status::Ignored)
    ));
    out
}
