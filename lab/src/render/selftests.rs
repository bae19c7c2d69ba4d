//! `lab selftests`' words: a line per selftest, the summary of a run (failures, problems, a table
//! of counts per program), its JUnit (through quick-junit, like [`super::junit`]), and the matrix's
//! selftests table (`lab matrix --selftests`).

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::table::{self, Align};
use crate::selftests::{SelftestsOutcome, SelftestsReport, TestResult, Totals, Verdict};

/// One line per selftest, like [`super::suite::case_line`]; a skip says why.
pub fn selftest_line(r: &TestResult) -> String {
    match (&r.status, &r.reason) {
        (Verdict::Skipped, Some(why)) => format!("{:<12} {}: {} ({why})", r.status.label(), r.program, r.name),
        _ => format!("{:<12} {}: {}", r.status.label(), r.program, r.name),
    }
}

/// The summary of a selftests run: failures with their log lines, problems, counts per program.
pub fn render_selftests(report: &SelftestsReport) -> String {
    let mut out = String::new();
    for r in report.failing() {
        out.push_str(&format!("\n--- FAILED {}: {} ---\n{}\n", r.program, r.name, r.reason.as_deref().unwrap_or("(no log lines)")));
    }
    for problem in &report.problems {
        out.push_str(&format!("\nRUN PROBLEM: {problem}\n"));
    }
    let b = &report.build;
    out.push_str(&format!(
        "\n{} on {} ({}): the kernel's sockmap selftests ({}, {}), guest ran {:.0}s; built in {:.0}s against {}'s BTF\n",
        report.kernel, report.release, report.accel, b.source, b.clang, report.guest_seconds, b.build_seconds, b.btf_from
    ));
    for change in &b.harness_changes {
        out.push_str(&format!("harness change: {change}\n"));
    }
    let row = |name: &str, t: Totals| vec![name.to_string(), t.passed.to_string(), t.failed.to_string(), t.skipped.to_string()];
    let mut rows = Vec::new();
    for program in ["test_progs", "test_sockmap"] {
        let t = Totals::of(report.results.iter().filter(|r| r.program == program));
        if t != Totals::default() {
            rows.push(row(program, t));
        }
    }
    rows.push(row("total", report.totals));
    let align = [Align::Left, Align::Right, Align::Right, Align::Right];
    out.push_str(&table::plain(&["program", "passed", "failed", "skipped"], &rows, &align));
    out
}

/// JUnit XML for a selftests run: one testcase per selftest (classname `<kernel>.selftests.<program>`),
/// and one `error` testcase (`<kernel>.selftests`, `run`) per problem of the run (an oops, a hang).
pub fn selftests_junit(report: &SelftestsReport) -> String {
    let mut suite = TestSuite::new(report.kernel.as_str());
    for problem in &report.problems {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(problem.as_str()).set_type("run");
        let mut test = TestCase::new("run", status);
        test.set_classname(format!("{}.selftests", report.kernel)).set_time(Duration::ZERO);
        suite.add_test_case(test);
    }
    for r in &report.results {
        let reason = r.reason.as_deref().unwrap_or("");
        let status = match r.status {
            Verdict::Passed => TestCaseStatus::success(),
            Verdict::Failed => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message("failed").set_type("selftest").set_description(reason);
                status
            }
            Verdict::Skipped => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(reason);
                status
            }
        };
        let mut test = TestCase::new(r.name.as_str(), status);
        test.set_classname(format!("{}.selftests.{}", report.kernel, r.program)).set_time(Duration::ZERO);
        suite.add_test_case(test);
    }
    let seconds = Duration::from_secs_f64(report.guest_seconds.max(0.0));
    suite.set_time(seconds);
    let mut junit = Report::new("sockmap-lab selftests");
    junit.set_time(seconds).add_test_suite(suite);
    // Serialising into a String fails only on a writer error, which a String does not have.
    junit.to_string().expect("JUnit serialises into memory")
}

/// The matrix's selftests table (`lab matrix --selftests`): per kernel, the kernel's own sockmap
/// selftests passed/failed/skipped, and what went wrong (a prebuilt image says it has no tree).
pub fn matrix_selftests_table(outcomes: &[SelftestsOutcome]) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|(kernel, outcome)| match outcome {
            Ok(r) => {
                let mut notes: Vec<String> = r.failing().take(3).map(|t| t.id()).collect();
                notes.extend(r.problems.iter().map(|p| p.lines().next().unwrap_or("").to_string()));
                let t = r.totals;
                let verdict = if r.failed() { "FAIL" } else { "pass" };
                let notes = if notes.is_empty() { "-".into() } else { notes.join("; ") };
                vec![kernel.clone(), verdict.into(), t.passed.to_string(), t.failed.to_string(), t.skipped.to_string(), notes]
            }
            Err(e) => {
                let why: String = e.lines().next().unwrap_or("").chars().take(200).collect();
                vec![kernel.clone(), "not run".into(), "-".into(), "-".into(), "-".into(), why]
            }
        })
        .collect();
    table::markdown(&["kernel", "selftests", "passed", "failed", "skipped", "failing tests, problems"], &rows)
}

/// The section `lab matrix --selftests` adds to `matrix.md` and prints (empty without the flag).
pub fn matrix_selftests_section(outcomes: &[SelftestsOutcome]) -> String {
    if outcomes.is_empty() {
        return String::new();
    }
    format!("\n## The kernel's own sockmap selftests\n\n{}", matrix_selftests_table(outcomes))
}
