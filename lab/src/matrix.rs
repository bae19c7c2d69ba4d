//! The kernel matrix: the same suite over many kernels, each run independent of the others (a
//! kernel that fails to build or boot is a red row, and the matrix goes on), then a comparison of
//! what each case observed on each kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::build::{self, BuildOptions};
use crate::cache::Cache;
use crate::definition::{Definition, KernelsDir};
use crate::suite::{self, RunReport, SuiteRun};
use crate::vm::{Outcome, VmConfig};

/// How one kernel's row ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RowState {
    /// The suite ran to the end; the report says what passed.
    Ran,
    /// The definition did not load or the kernel did not build.
    BuildFailed { error: String },
    /// The guest panicked, oopsed, hung or never started.
    GuestFailed { outcome: serde_json::Value, console_tail: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub kernel: String,
    pub state: RowState,
    pub report: Option<RunReport>,
}

impl Row {
    pub fn green(&self) -> bool {
        matches!(self.state, RowState::Ran) && self.report.as_ref().is_some_and(|r| !r.failed())
    }
}

/// A case whose observation is not the same on every kernel that ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Difference {
    pub case: String,
    /// Field (dotted JSON path) → value per kernel, for the fields that differ.
    pub fields: BTreeMap<String, BTreeMap<String, String>>,
}

/// The kernels a matrix covers by default: every definition marked `matrix = true`.
pub fn default_kernels(kernels: &KernelsDir) -> anyhow::Result<Vec<String>> {
    Ok(kernels.load_all()?.into_iter().filter_map(Result::ok).filter(|d| d.matrix).map(|d| d.name).collect())
}

/// What became of one kernel: its definition (when it loaded) and the suite run, or why there is none.
pub struct KernelRun {
    pub name: String,
    pub def: Option<Definition>,
    pub run: anyhow::Result<SuiteRun>,
}

/// What every kernel's run shares: where definitions and the cache are, the suite binaries, and
/// how to make a kernel's VM configuration (`vm_config` decides KVM or TCG).
pub struct Runner<'a> {
    pub kernels: &'a KernelsDir,
    pub cache: &'a Cache,
    pub exes: &'a [PathBuf],
    pub project: &'a Path,
    pub vm_config: &'a (dyn Fn(&str, &Path) -> anyhow::Result<VmConfig> + Sync),
    /// Boot again, once, a guest that failed before the suite started (and say so in the report):
    /// for mutants, whose verdict must rest on the suite, not on a flaky boot.
    pub retry_boot: bool,
    /// Called with the run that counts (after any retry), to write its outputs and make it
    /// `latest`; a thrown-away first boot keeps its run folder and is never published.
    pub publish: &'a (dyn Fn(&SuiteRun) -> anyhow::Result<()> + Sync),
}

impl Runner<'_> {
    /// Run the suite on each kernel and hand each outcome to `finish` as soon as it is known.
    /// Builds take turns (they use every core); up to `jobs` guests run at once. Results come back
    /// in `names` order.
    pub fn run_each<T: Send>(&self, names: &[String], jobs: usize, finish: &(dyn Fn(KernelRun) -> T + Sync)) -> Vec<(String, T)> {
        let queue = Mutex::new(names.iter().cloned().collect::<std::collections::VecDeque<_>>());
        let builds = Mutex::new(());
        let done = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..jobs.max(1) {
                s.spawn(|| loop {
                    let Some(name) = queue.lock().unwrap().pop_front() else { break };
                    let outcome = finish(self.run_one(&name, &builds));
                    done.lock().unwrap().push((name, outcome));
                });
            }
        });
        let mut done = done.into_inner().unwrap();
        done.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
        done
    }

    /// The matrix: one row per kernel, green or red.
    pub fn matrix(&self, names: &[String], jobs: usize) -> Vec<Row> {
        let finish = |k: KernelRun| {
            let row = match k.run {
                Ok(run) => Row::from_run(&run),
                Err(e) => Row { kernel: k.name.clone(), state: RowState::BuildFailed { error: format!("{e:#}") }, report: None },
            };
            eprintln!("lab: matrix: {}: {}", k.name, if row.green() { "green" } else { "RED" });
            row
        };
        self.run_each(names, jobs, &finish).into_iter().map(|(_, row)| row).collect()
    }

    fn run_one(&self, name: &str, builds: &Mutex<()>) -> KernelRun {
        let def = match self.kernels.load(name) {
            Ok(d) => d,
            Err(e) => return KernelRun { name: name.to_string(), def: None, run: Err(e.into()) },
        };
        let built = {
            let _turn = builds.lock().unwrap();
            build::build(&def, self.kernels, self.cache, &BuildOptions::default())
        };
        let run = built.and_then(|built| {
            let attempt = || {
                (self.vm_config)(name, &built.entry.kernel_image())
                    .and_then(|cfg| suite::run(&def, &built.entry, self.project, self.exes, cfg, &suite::SuiteOptions::default()))
            };
            match attempt() {
                Ok(first) if self.retry_boot && !first.report.suite_started => {
                    let why = first.guest.outcome.describe();
                    eprintln!("lab: {name}: the guest failed before the suite started ({why}); booting it once more");
                    attempt().map(|mut again| {
                        again.report.retried = Some(why);
                        again
                    })
                }
                other => other,
            }
        });
        let run = run.and_then(|run| (self.publish)(&run).map(|()| run));
        KernelRun { name: name.to_string(), def: Some(def), run }
    }
}

impl Row {
    /// A row from a finished suite run: green or red by its cases, red when the guest misbehaved.
    pub fn from_run(run: &SuiteRun) -> Row {
        let state = match &run.guest.outcome {
            Outcome::Exited { .. } if run.report.with_verdict() > 0 => RowState::Ran,
            outcome => RowState::GuestFailed {
                outcome: serde_json::to_value(outcome).unwrap_or_default(),
                console_tail: run.guest.console_tail(30),
            },
        };
        Row { kernel: run.report.kernel.clone(), state, report: Some(run.report.clone()) }
    }
}

/// Flatten a JSON value into dotted paths, so two observations can be compared field by field.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The cases whose observations differ between kernels, with the differing fields.
pub fn differences(rows: &[Row]) -> Vec<Difference> {
    let mut by_case: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
    for row in rows {
        let Some(report) = &row.report else { continue };
        for case in &report.cases {
            let mut fields = BTreeMap::new();
            match &case.observation {
                Some(obs) => flatten("", obs, &mut fields),
                None => {
                    fields.insert("status".into(), format!("{:?}", case.status).to_lowercase());
                }
            }
            by_case.entry(case.name.clone()).or_default().insert(row.kernel.clone(), fields);
        }
    }
    let mut diffs = Vec::new();
    for (case, per_kernel) in by_case {
        if per_kernel.len() < 2 {
            continue;
        }
        let keys: std::collections::BTreeSet<&String> = per_kernel.values().flat_map(|f| f.keys()).collect();
        let mut fields = BTreeMap::new();
        for key in keys {
            let values: BTreeMap<String, String> =
                per_kernel.iter().map(|(k, f)| (k.clone(), f.get(key).cloned().unwrap_or_else(|| "(absent)".into()))).collect();
            let first = values.values().next();
            if values.values().any(|v| Some(v) != first) {
                fields.insert(key.clone(), values);
            }
        }
        if !fields.is_empty() {
            diffs.push(Difference { case, fields });
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{CaseResult, Status};

    fn row(kernel: &str, received: u64) -> Row {
        let case = CaseResult {
            name: "tx_to_rx_via_sockmap_over_ipv4_1b".into(),
            path: "tx_to_rx".into(),
            status: Status::Passed,
            observation: Some(serde_json::json!({"delivered": {"b": {"received": received}}, "status": "supported"})),
            failure: None,
            snapshot: None,
            finding: None,
        };
        Row {
            kernel: kernel.into(),
            state: RowState::Ran,
            report: Some(RunReport {
                kernel: kernel.into(),
                run: String::new(),
                release: "x".into(),
                accel: "tcg".into(),
                guest: serde_json::json!({"kind": "exited", "code": 0}),
                guest_seconds: 1.0,
                guests: 1,
                cases: vec![case],
                listed: 1,
                suite_started: true,
                problems: vec![],
                output_from_console: false,
                retried: None,
                totals: Default::default(),
                findings: Default::default(),
                judged_as: None,
            }),
        }
    }

    #[test]
    fn differing_fields_are_reported_per_kernel() {
        let diffs = differences(&[row("a", 1), row("b", 1), row("c", 0)]);
        assert_eq!(diffs.len(), 1);
        let field = &diffs[0].fields["delivered.b.received"];
        assert_eq!(field["a"], "1");
        assert_eq!(field["c"], "0");
        assert!(differences(&[row("a", 1), row("b", 1)]).is_empty());
    }
}
