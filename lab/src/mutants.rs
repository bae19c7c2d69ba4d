//! `lab mutants`: the suite on each deliberately broken kernel, beside its unmutated base (the
//! control) in the same session, so that a catch is a check the mutant alone makes fail.

use std::path::Path;

use crate::cache::Cache;
use crate::definition::{Definition, KernelsDir};
use crate::matrix::{KernelRun, Runner};
use crate::report::{self, MutantVerdict};
use crate::suite::{self, RunReport};
use crate::vm::VmConfig;

/// The mutants named (all of them when none is), checked to be mutants with a base.
fn select(kernels: &KernelsDir, names: &[String]) -> anyhow::Result<Vec<Definition>> {
    let defs: Vec<Definition> = if names.is_empty() {
        kernels.load_all()?.into_iter().filter_map(Result::ok).filter(|d| d.mutant.is_some()).collect()
    } else {
        names.iter().map(|n| kernels.load(n)).collect::<Result<_, _>>()?
    };
    anyhow::ensure!(!defs.is_empty(), "no mutant definitions (a definition with `mutant = \"...\"`) in {}", kernels.dir.display());
    for def in &defs {
        anyhow::ensure!(def.mutant.is_some(), "{} is not a mutant (it has no `mutant` field)", def.name);
    }
    Ok(defs)
}

/// Every distinct base, then the mutants: controls first, so they are built before their mutants.
fn run_list(defs: &[Definition]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for base in defs.iter().filter_map(|d| d.base.clone()) {
        if !names.contains(&base) {
            names.push(base);
        }
    }
    names.extend(defs.iter().map(|d| d.name.clone()));
    names
}

/// Judge each mutant against its control's report; a control that did not run leaves its mutants
/// without a verdict.
pub fn verdicts(defs: &[Definition], runs: Vec<(String, KernelRun)>) -> Vec<MutantVerdict> {
    let mut controls: Vec<(String, Result<RunReport, String>)> = Vec::new();
    let mut mutants = Vec::new();
    for (name, k) in runs {
        match defs.iter().find(|d| d.name == name) {
            Some(def) => mutants.push((def, k)),
            None => controls.push((name, control_report(k))),
        }
    }
    mutants
        .into_iter()
        .map(|(def, k)| {
            let control = controls.iter().find(|(n, _)| Some(n) == def.base.as_ref()).map(|(_, c)| c);
            match (k.run, control) {
                (Err(e), _) => MutantVerdict::not_run(def, format!("{e:#}")),
                // Its own boot failure says more than its control's state.
                (Ok(run), _) if !run.report.suite_started => MutantVerdict::judge(def, &run, None),
                (Ok(_), Some(Err(why))) => MutantVerdict::not_run(def, format!("its control {} is not usable: {why}", def.base.as_deref().unwrap_or("?"))),
                (Ok(run), control) => MutantVerdict::judge(def, &run, control.and_then(|c| c.as_ref().ok())),
            }
        })
        .collect()
}

/// A control is usable when its suite ran to the end.
fn control_report(k: KernelRun) -> Result<RunReport, String> {
    let run = k.run.map_err(|e| format!("{e:#}"))?;
    let report = run.report;
    if !report.suite_started || !matches!(run.guest.outcome, crate::vm::Outcome::Exited { .. }) {
        return Err(format!("its guest {}", report::describe_outcome(&run.guest.outcome)));
    }
    if report.cases.iter().any(|c| c.status.no_verdict()) {
        return Err("its suite did not finish every case".into());
    }
    Ok(report)
}

pub fn run(
    kernels: &KernelsDir,
    cache: &Cache,
    project: &Path,
    names: &[String],
    jobs: usize,
    vm_config: &(dyn Fn(&str, &Path) -> anyhow::Result<VmConfig> + Sync),
) -> anyhow::Result<u8> {
    let defs = select(kernels, names)?;
    let exes = suite::build_binaries(project)?;
    let order = run_list(&defs);
    // Mutants are independent kernels, like the matrix's rows: builds take turns, guests overlap.
    let runner = Runner { kernels, cache, exes: &exes, project, vm_config, retry_boot: true };
    let finish = |k: KernelRun| {
        let state = match &k.run {
            Ok(run) => format!("{} of {} cases with a verdict, guest {}", run.report.with_verdict(), run.report.listed, serde_json::to_value(&run.guest.outcome).ok().and_then(|v| v["kind"].as_str().map(String::from)).unwrap_or_default()),
            Err(e) => format!("error: {e:#}"),
        };
        eprintln!("lab: mutants: {} done ({state})", k.name);
        k
    };
    let verdicts = verdicts(&defs, runner.run_each(&order, jobs, &finish));
    for v in &verdicts {
        eprintln!("{}", v.line());
    }
    let table = report::mutant_table(&verdicts);
    print!("{table}");
    let out = project.join("results").join("mutants.md");
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, &table)?;
    std::fs::write(out.with_extension("json"), serde_json::to_string_pretty(&verdicts)?)?;
    println!("results: {}", out.display());
    Ok(if verdicts.iter().all(|v| v.caught) { 0 } else { 1 })
}
