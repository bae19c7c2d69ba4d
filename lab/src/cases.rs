//! What a suite run observed, case by case: the verdicts, the per-path counts, and the words a
//! failure gives. Below the suite run and the findings that judge it, so both can use it.

use serde::{Deserialize, Serialize};

use crate::process;

/// The four data paths, in the order of their complexity.
pub const PATHS: &[&str] = &["tx_to_rx", "rx_to_rx", "tx_to_tx", "rx_to_tx"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// The kernel does not support this combination (e.g. a family in a sockmap); recorded in the
    /// snapshot, counted apart from passes.
    Unsupported,
    Ignored,
    /// The case was running when its test binary died (abort, signal, a panic across threads):
    /// libtest never printed its verdict.
    Crashed,
    /// Listed by the test binary but never started: a case before it crashed the binary, or the
    /// guest died.
    #[serde(rename = "not-run")]
    NotRun,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "ok",
            Status::Failed => "FAILED",
            Status::Unsupported => "unsupported",
            Status::Ignored => "ignored",
            Status::Crashed => "CRASHED",
            Status::NotRun => "NOT RUN",
        }
    }

    /// Whether this status makes a run red: a failure, or no verdict at all.
    pub fn is_failure(self) -> bool {
        self == Status::Failed || self.no_verdict()
    }

    /// The case never finished: it crashed its binary or never started.
    pub fn no_verdict(self) -> bool {
        matches!(self, Status::Crashed | Status::NotRun)
    }
}

/// One case's result as the lab reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseResult {
    pub name: String,
    /// tx_to_rx, rx_to_rx, tx_to_tx, rx_to_tx, or "other".
    pub path: String,
    pub status: Status,
    /// What the case observed (from its result file), when it wrote one.
    pub observation: Option<serde_json::Value>,
    /// libtest's failure output for this case: the panic message or snapshot diff.
    pub failure: Option<String>,
    /// The snapshot the case was compared with (relative to snapshots/), from its result file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The known kernel finding (snapshots/FINDINGS.toml) that explains this failure: the case is
    /// still failed, only named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

impl CaseResult {
    /// A failure that a known kernel finding explains.
    pub fn is_known_finding(&self) -> bool {
        self.status == Status::Failed && self.finding.is_some()
    }

    /// The verdict word for this case: "KNOWN" for a failure a known finding explains.
    pub fn label(&self) -> &'static str {
        if self.is_known_finding() {
            "KNOWN"
        } else {
            self.status.label()
        }
    }
}

pub fn path_of(name: &str) -> String {
    // The path is the first path-shaped word: case names read "<path>_via_<map>_over_<family>_...",
    // and rstest prefixes them with the test function, which is named after the path too.
    let found = name
        .split([':', '/'])
        .flat_map(|part| PATHS.iter().filter(move |p| part.starts_with(*p)))
        .next();
    found.map(|p| p.to_string()).unwrap_or_else(|| "other".into())
}

/// One path's (or the whole run's) cases by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub passed: usize,
    /// Plain failures, crashes and cases never run: every case without a pass that no known
    /// finding explains.
    pub failed: usize,
    /// Failures a known kernel finding explains: not passes, counted apart from plain failures.
    pub known: usize,
    pub unsupported: usize,
    pub ignored: usize,
}

impl Tally {
    pub fn of<'a>(cases: impl IntoIterator<Item = &'a CaseResult>) -> Tally {
        let mut t = Tally::default();
        for case in cases {
            t.add(case);
        }
        t
    }

    fn add(&mut self, case: &CaseResult) {
        let slot = match case.status {
            _ if case.is_known_finding() => &mut self.known,
            Status::Passed => &mut self.passed,
            Status::Unsupported => &mut self.unsupported,
            Status::Ignored => &mut self.ignored,
            // No verdict is no pass: counted with the failures (the report names them apart).
            Status::Failed | Status::Crashed | Status::NotRun => &mut self.failed,
        };
        *slot += 1;
    }

    fn total(&self) -> usize {
        self.passed + self.failed + self.known + self.unsupported + self.ignored
    }
}

/// Counts per path (in [`PATHS`] order, then any other path), paths without cases left out.
pub fn tally(cases: &[CaseResult]) -> Vec<(String, Tally)> {
    let mut rows: Vec<(String, Tally)> = PATHS.iter().map(|p| (p.to_string(), Tally::default())).collect();
    for case in cases {
        let idx = match rows.iter().position(|(p, _)| *p == case.path) {
            Some(i) => i,
            None => {
                rows.push((case.path.clone(), Tally::default()));
                rows.len() - 1
            }
        };
        rows[idx].1.add(case);
    }
    rows.retain(|(_, counts)| counts.total() > 0);
    rows
}

/// Keep only the failure text that helps: libtest's section can hold a long captured stdout.
pub fn failure_excerpt(text: &str, lines: usize) -> String {
    process::tail(text, lines)
}

/// The lines of a failure that say what differed: snapshot diff lines (`-`/`+`) or the panic message.
pub fn first_difference(failure: &str) -> String {
    // insta prints "  22    22 │+      \"received\": 0,": keep the sign and the text after the gutter.
    let diff: Vec<String> = failure
        .lines()
        .filter_map(|l| l.split_once('│').map(|(_, rest)| rest))
        .filter(|l| l.starts_with('-') || l.starts_with('+'))
        .map(|l| format!("{}{}", &l[..1], l[1..].split_whitespace().collect::<Vec<_>>().join(" ")))
        .take(4)
        .collect();
    if !diff.is_empty() {
        return diff.join(" ");
    }
    // A plain panic: the message is the line after "panicked at FILE:LINE:".
    let mut lines = failure.lines().skip_while(|l| !l.contains("panicked at"));
    let at = lines.next().unwrap_or("").trim();
    lines.find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_the_first_diff_lines_without_the_gutter() {
        let failure = "Snapshot: x\n-old snapshot\n+new results\n   21    21 │       \"expected\": 1024,\n         22 │+      \"received\": 0,\n   23       │-      \"content\": \"matches\"\n";
        assert_eq!(first_difference(failure), "+\"received\": 0, -\"content\": \"matches\"");
        assert_eq!(first_difference("thread 'x' panicked at a.rs:1:1:\nleaked socket b"), "leaked socket b");
    }
}
