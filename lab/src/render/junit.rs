//! JUnit XML for one kernel's row, through quick-junit (the crate nextest writes its JUnit with):
//! it counts, escapes and drops the characters XML cannot carry (a failure's ANSI colours).

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::cases::{first_difference, CaseResult, Status};
use crate::matrix::{Row, RowState};

/// One testcase per suite case (classname `<kernel>.<path>`); unsupported and ignored cases are
/// `skipped`; a kernel that did not build or boot is one `error` testcase named after the stage.
pub fn junit(row: &Row) -> String {
    let mut suite = TestSuite::new(row.kernel.as_str());
    match &row.state {
        RowState::BuildFailed { error } => {
            suite.add_test_case(stage_error(&row.kernel, "build", "the kernel did not build", error));
        }
        RowState::GuestFailed { outcome, console_tail } => {
            let message = format!("the guest did not finish the suite: {outcome}");
            suite.add_test_case(stage_error(&row.kernel, "guest", &message, console_tail));
        }
        RowState::Ran => {}
    }
    for case in row.report.iter().flat_map(|r| &r.cases) {
        let mut test = TestCase::new(case.name.as_str(), status(case));
        test.set_classname(format!("{}.{}", row.kernel, case.path)).set_time(Duration::ZERO);
        suite.add_test_case(test);
    }
    let seconds = Duration::from_secs_f64(row.report.as_ref().map_or(0.0, |r| r.guest_seconds.max(0.0)));
    suite.set_time(seconds);
    let mut report = Report::new("sockmap-lab");
    report.set_time(seconds).add_test_suite(suite);
    // Serialising into a String fails only on a writer error, which a String does not have.
    report.to_string().expect("JUnit serialises into memory")
}

fn stage_error(kernel: &str, stage: &str, message: &str, text: &str) -> TestCase {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
    status.set_message(message).set_type(stage).set_description(text);
    let mut test = TestCase::new(stage, status);
    test.set_classname(kernel).set_time(Duration::ZERO);
    test
}

/// A known finding is still a failure; its message starts `known finding ID:` so CI shows why.
fn status(case: &CaseResult) -> TestCaseStatus {
    let text = case.failure.as_deref().unwrap_or("");
    match case.status {
        Status::Passed => TestCaseStatus::success(),
        Status::Failed => {
            let (kind, message) = match &case.finding {
                Some(id) => ("known-finding", format!("known finding {id}: {}", first_difference(text))),
                None => ("mismatch", first_difference(text)),
            };
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(message).set_type(kind).set_description(text);
            status
        }
        Status::Unsupported | Status::Ignored => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(if case.status == Status::Unsupported { "unsupported by this kernel" } else { "ignored" });
            status
        }
        Status::Crashed | Status::NotRun => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(case.status.label()).set_type(case.status.label().to_lowercase()).set_description(text);
            status
        }
    }
}
