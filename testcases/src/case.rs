//! Running a case end to end: guest check, fresh namespace, observation, accounting, snapshot,
//! result file.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::accounting::{Accounting, Audit, Ledger, Mechanism};
use crate::bpf::Config;
use crate::guest::{capture_libbpf_log, enter_fresh_netns, kernel_release, require_guest, snapshot_family};
use crate::observation::{Observation, Status};
use crate::rig::{observe, Rig, Scenario};

/// Runs one case named `name`: sets `scenario` up with `config`, lets `body` act on it, and checks
/// the observation, and how every socket of the case died, against the case's snapshot. A socket
/// that did not die clean, a kernel splat or sockstat off its baseline fails the case whatever the
/// snapshot says, so that reviewing snapshots cannot make such a case pass.
pub fn run_case(name: &str, scenario: Scenario, config: Config, body: impl FnOnce(&mut Rig<'_>)) {
    require_guest();
    abort_if_asked(name);
    let started = std::time::Instant::now();
    capture_libbpf_log();
    enter_fresh_netns().expect("entering a fresh network namespace");
    let audit = Audit::begin();
    let mechanism = audit.mechanism();
    let mut ledger = Ledger::default();
    let (observation, stalls) = observe(scenario, config, &mut ledger, body);
    let (accounting, unclean) = audit.finish(&ledger);
    let observed = Observed { observation, accounting };
    check(name, &observed, mechanism, unclean, &stalls, started.elapsed().as_secs_f64());
}

/// The lab's test-only crash switch (`lab test --abort-case`): the named case kills its whole test
/// binary, as a segfault or an OOM kill would, to prove that the lab reports a suite that died.
fn abort_if_asked(name: &str) {
    let wanted = std::env::var("LAB_TEST_ABORT_CASE").unwrap_or_default();
    if !wanted.is_empty() && name.contains(&wanted) {
        // Straight to the stream: libtest's capture of eprintln! dies with the process.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "lab: {name}: aborting the test binary on purpose (LAB_TEST_ABORT_CASE={wanted})");
        std::process::abort();
    }
}

/// What a case's snapshot holds.
#[derive(Debug, Serialize)]
struct Observed {
    #[serde(flatten)]
    observation: Observation,
    accounting: Accounting,
}

/// The top-level snapshots/ folder.
fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testcases/ sits in the workspace root").join("snapshots")
}

/// What lands in $LAB_RESULTS_DIR/<case>.json for the host runner.
#[derive(Serialize)]
struct CaseResult<'a> {
    case: &'a str,
    /// libtest's name for the case (rstest's generated path), to join with libtest's own report.
    test: Option<&'a str>,
    /// "passed", "unsupported" (matched its snapshot, and the kernel does not support the path),
    /// or "failed" (did not match its snapshot, or its sockets did not all die clean).
    status: &'static str,
    kernel: &'a str,
    /// The snapshot file compared against, relative to snapshots/.
    snapshot: String,
    /// How the accounting probe hooked the socket destructors.
    accounting_probe: Mechanism,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    /// Guest wall time the case took up to its check, for finding where the suite's time goes.
    seconds: f64,
    observation: &'a Observed,
}

/// Compares with snapshots/<name>@<kernel family>.snap when that exists (kernel series that behave
/// differently on purpose), else with snapshots/<name>.snap; then writes the result file. `unclean`
/// is the accounting's evidence against the case, if any; `stalls` the waits that gave up, which a
/// failure starts with (a passing case may wait out a bound on purpose, for data that must not come).
fn check(name: &str, observed: &Observed, mechanism: Mechanism, unclean: Option<String>, stalls: &[String], seconds: f64) {
    let release = kernel_release();
    let family = snapshot_family(&release, std::env::var("LAB_JUDGE_AS").ok().as_deref());
    let dir = snapshot_dir();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let snapshot = if let Some(feature) = observed.observation.lacks {
        format!("none: the kernel lacks {feature}")
    } else if dir.join(format!("{name}@{family}.snap")).exists() {
        settings.set_snapshot_suffix(family.as_str());
        format!("{name}@{family}.snap")
    } else {
        format!("{name}.snap")
    };

    // A kernel without the feature shows nothing of what the snapshot is about: the case is
    // unsupported, and its sockets are still held to the accounting.
    let outcome = match observed.observation.lacks {
        Some(_) => Ok(()),
        None => panic::catch_unwind(AssertUnwindSafe(|| settings.bind(|| insta::assert_json_snapshot!(name, observed)))),
    };

    let mismatch = outcome.as_ref().err().map(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "snapshot assertion failed".to_string())
    });
    let unclean = unclean.map(|evidence| format!("accounting: {name} did not end clean:\n{evidence}"));
    let failure = match (&mismatch, &unclean) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(one.clone()),
        (Some(mismatch), Some(unclean)) => Some(format!("{unclean}\n{mismatch}")),
    };
    let stalled = (!stalls.is_empty()).then(|| stalls.join("\n"));
    let failure = match (failure, &stalled) {
        (Some(failure), Some(stalled)) => Some(format!("{stalled}\n{failure}")),
        (failure, _) => failure,
    };
    let status = match (&failure, observed.observation.status) {
        (Some(_), _) => "failed",
        (None, Status::Supported) => "passed",
        (None, Status::Unsupported) => "unsupported",
    };
    let thread = std::thread::current();
    write_result(&CaseResult {
        case: name,
        test: thread.name(),
        status,
        kernel: &release,
        snapshot,
        accounting_probe: mechanism,
        failure,
        seconds,
        observation: observed,
    });

    // libtest shows what a failing case printed next to its panic: the lab reads it from there.
    if let Some(stalled) = stalled.filter(|_| mismatch.is_some() || unclean.is_some()) {
        eprintln!("{stalled}");
    }
    if let Some(unclean) = unclean {
        let also = if mismatch.is_some() { "\n(and the snapshot does not match: see above)" } else { "" };
        panic!("{unclean}{also}");
    }
    if let Err(payload) = outcome {
        panic::resume_unwind(payload);
    }
}

fn write_result(result: &CaseResult<'_>) {
    let Some(dir) = std::env::var_os("LAB_RESULTS_DIR") else { return };
    let path = Path::new(&dir).join(format!("{}.json", result.case));
    let json = serde_json::to_vec_pretty(result).expect("results serialise");
    std::fs::write(&path, json).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
}
