//! Running a case end to end: guest check, fresh namespace, observation, snapshot, result file.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bpf::Config;
use crate::guest::{enter_fresh_netns, kernel_family, kernel_release, require_guest};
use crate::observation::{Observation, Status};
use crate::rig::{observe, Rig, Scenario};

/// Runs one case named `name`: sets `scenario` up with `config`, lets `body` act on it, and checks
/// the observation against the case's snapshot.
pub fn run_case(name: &str, scenario: Scenario, config: Config, body: impl FnOnce(&mut Rig<'_>)) {
    require_guest();
    enter_fresh_netns().expect("entering a fresh network namespace");
    let observation = observe(scenario, config, body);
    check(name, &observation);
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
    /// or "failed" (did not match its snapshot).
    status: &'static str,
    kernel: &'a str,
    /// The snapshot file compared against, relative to snapshots/.
    snapshot: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    observation: &'a Observation,
}

/// Compares with snapshots/<name>@<kernel family>.snap when that exists (kernel series that behave
/// differently on purpose), else with snapshots/<name>.snap; then writes the result file.
fn check(name: &str, observation: &Observation) {
    let release = kernel_release();
    let family = kernel_family(&release);
    let dir = snapshot_dir();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let snapshot = if dir.join(format!("{name}@{family}.snap")).exists() {
        settings.set_snapshot_suffix(family.as_str());
        format!("{name}@{family}.snap")
    } else {
        format!("{name}.snap")
    };

    let outcome =
        panic::catch_unwind(AssertUnwindSafe(|| settings.bind(|| insta::assert_json_snapshot!(name, observation))));

    let failure = outcome.as_ref().err().map(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "snapshot assertion failed".to_string())
    });
    let status = match (&failure, observation.status) {
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
        failure,
        observation,
    });

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
