//! `lab mutants`: the suite on each deliberately broken kernel, beside its unmutated base (the
//! control) in the same session, so that a catch is a check the mutant alone makes fail.

use std::path::Path;

use anyhow::Context;

use crate::cache::Cache;
use crate::definition::{Definition, KernelsDir};
use crate::matrix::{KernelRun, Runner};
use crate::report::{self, MutantVerdict};
use crate::runs;
use crate::suite::{self, RunReport};
use crate::vm::VmConfig;

/// How a kernel's VM configuration is made (the accelerator is chosen per host).
type VmConfigFn<'a> = dyn Fn(&str, &Path) -> anyhow::Result<VmConfig> + Sync + 'a;

/// Every mutant definition, in the definitions' order.
fn all_mutants(kernels: &KernelsDir) -> anyhow::Result<Vec<Definition>> {
    Ok(kernels.load_all()?.into_iter().filter_map(Result::ok).filter(|d| d.mutant.is_some()).collect())
}

/// The mutants named (all of them when none is), checked to be mutants with a base.
fn select(kernels: &KernelsDir, names: &[String]) -> anyhow::Result<Vec<Definition>> {
    let defs: Vec<Definition> = if names.is_empty() {
        all_mutants(kernels)?
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
    vm_config: &VmConfigFn<'_>,
    selftests: bool,
) -> anyhow::Result<u8> {
    let defs = select(kernels, names)?;
    let session = runs::start(&project.join("results").join("mutants"))?;
    let exes = suite::build_binaries(project)?;
    let order = run_list(&defs);
    // Mutants are independent kernels, like the matrix's rows: builds take turns, guests overlap.
    let runner = Runner { kernels, cache, exes: &exes, project, vm_config, retry_boot: true };
    let builds = std::sync::Mutex::new(());
    // With --selftests each kernel's selftests run right after its suite, in the same worker: a
    // session cut short still has both tools' results for every kernel it finished.
    let finish = |k: KernelRun| {
        let selftests = selftests.then(|| selftests_of(kernels, cache, project, &k.name, vm_config, &builds));
        let state = match &k.run {
            Ok(run) => format!("{} of {} cases with a verdict, guest {}", run.report.with_verdict(), run.report.listed, serde_json::to_value(&run.guest.outcome).ok().and_then(|v| v["kind"].as_str().map(String::from)).unwrap_or_default()),
            Err(e) => format!("error: {e:#}"),
        };
        eprintln!("lab: mutants: {} done ({state})", k.name);
        (k, selftests)
    };
    let (suite_runs, selftests_runs): (Vec<(String, KernelRun)>, Vec<Option<SelftestsOutcome>>) =
        runner.run_each(&order, jobs, &finish).into_iter().map(|(name, (k, s))| ((name, k), s)).unzip();
    let verdicts: Vec<MutantVerdict> = verdicts(&defs, suite_runs)
        .into_iter()
        .map(|v| MutantVerdict { run: session.id.clone(), date: session.date.clone(), ..v })
        .collect();
    let selftests_runs: Vec<SelftestsOutcome> = selftests_runs.into_iter().flatten().collect();
    let verdicts = if selftests { attach_selftests(&defs, verdicts, &selftests_runs) } else { verdicts };
    for v in &verdicts {
        eprintln!("{}", v.line());
    }
    // This run's own table, whole; then its rows into the table of every mutant.
    let table = report::mutant_table(&verdicts);
    print!("{table}{}", report::both_tools_summary(&verdicts));
    write_table(&session.dir, &verdicts)?;
    session.publish()?;
    let names: Vec<String> = all_mutants(kernels)?.into_iter().map(|d| d.name).collect();
    let merged = update_table(&project.join("results"), &verdicts, &names)?;
    println!("results: {} (this run); {} ({} of {} mutants)", session.dir.join("mutants.md").display(), project.join("results/mutants.md").display(), merged.len(), names.len());
    Ok(if verdicts.iter().all(|v| v.caught) { 0 } else { 1 })
}

/// `lab mutants --selftests-only`: the kernel's selftests on the mutants and their controls, their
/// column written into the rows `results/mutants.json` has (each row keeps the suite verdict of
/// the run that gave it): the suite need not run again to compare the two tools.
pub fn selftests_only(
    kernels: &KernelsDir,
    cache: &Cache,
    project: &Path,
    names: &[String],
    jobs: usize,
    vm_config: &VmConfigFn<'_>,
) -> anyhow::Result<u8> {
    let defs = select(kernels, names)?;
    let results = project.join("results");
    let stored: Vec<MutantVerdict> = match std::fs::read_to_string(results.join("mutants.json")) {
        Ok(text) => serde_json::from_str(&text).context("reading results/mutants.json")?,
        Err(_) => vec![],
    };
    let rows: Vec<MutantVerdict> = defs
        .iter()
        .map(|d| stored.iter().find(|v| v.mutant == d.name).cloned().unwrap_or_else(|| MutantVerdict::not_run(d, "the suite has not run on it (lab mutants)".into())))
        .collect();
    let fresh = attach_selftests(&defs, rows, &run_selftests(kernels, cache, project, &run_list(&defs), jobs, vm_config));
    print!("{}{}", report::mutant_table(&fresh), report::both_tools_summary(&fresh));
    let all: Vec<String> = all_mutants(kernels)?.into_iter().map(|d| d.name).collect();
    let _turn = crate::cache::lock(&results.join(".mutants.lock"))?;
    let merged: Vec<MutantVerdict> = all
        .iter()
        .filter_map(|name| fresh.iter().find(|v| v.mutant == *name).or_else(|| stored.iter().find(|v| v.mutant == *name)).cloned())
        .collect();
    write_table(&results, &merged)?;
    println!("results: {} (the selftests column of {} mutant(s) updated)", results.join("mutants.md").display(), fresh.len());
    Ok(if fresh.iter().all(|v| v.selftests.as_ref().is_some_and(|s| s.caught.is_some())) { 0 } else { 1 })
}

use crate::selftests::{run_many as run_selftests, selftests_of, SelftestsOutcome};

/// Each mutant's selftests judged against its control's, into its row.
fn attach_selftests(defs: &[Definition], verdicts: Vec<MutantVerdict>, runs: &[SelftestsOutcome]) -> Vec<MutantVerdict> {
    let report_of = |name: &str| runs.iter().find(|(n, _)| n == name).map(|(_, r)| r.as_ref().map_err(String::as_str)).unwrap_or(Err("not run"));
    verdicts
        .into_iter()
        .map(|v| {
            let base = defs.iter().find(|d| d.name == v.mutant).and_then(|d| d.base.clone()).unwrap_or_default();
            let selftests = crate::selftests::judge(report_of(&v.mutant), report_of(&base));
            MutantVerdict { selftests: Some(selftests), ..v }
        })
        .collect()
}

fn write_table(dir: &Path, verdicts: &[MutantVerdict]) -> anyhow::Result<()> {
    runs::write(&dir.join("mutants.md"), &report::mutant_table(verdicts))?;
    runs::write(&dir.join("mutants.json"), &serde_json::to_string_pretty(verdicts)?)
}

/// `results/mutants.{json,md}`: every mutant's newest verdict, whichever run gave it, so a run on
/// a few mutants updates their rows and leaves the others'. Runs finishing together take turns.
fn update_table(results: &Path, fresh: &[MutantVerdict], mutants: &[String]) -> anyhow::Result<Vec<MutantVerdict>> {
    let _turn = crate::cache::lock(&results.join(".mutants.lock"))?;
    let file = results.join("mutants.json");
    let table: Vec<MutantVerdict> = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let merged = merge(table, fresh, mutants);
    write_table(results, &merged)?;
    Ok(merged)
}

/// Each mutant's newest verdict (by run id, which sorts by start: of two runs finishing together
/// the one started later wins), in `mutants` order; rows of mutants no longer defined are dropped.
pub fn merge(table: Vec<MutantVerdict>, fresh: &[MutantVerdict], mutants: &[String]) -> Vec<MutantVerdict> {
    mutants
        .iter()
        .filter_map(|name| {
            let older = table.iter().filter(|v| v.mutant == *name);
            // max_by_key keeps the last of equals: a fresh row beats a stored one of the same run.
            older.chain(fresh.iter().filter(|v| v.mutant == *name)).max_by_key(|v| v.run.as_str()).cloned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(mutant: &str, caught: bool, run: &str) -> MutantVerdict {
        MutantVerdict {
            mutant: mutant.into(),
            breaks: "x".into(),
            caught,
            not_run: false,
            caught_by: vec![],
            checks: String::new(),
            evidence: format!("from run {run}"),
            control: String::new(),
            run: run.into(),
            date: String::new(),
            selftests: None,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_run_on_some_mutants_updates_their_rows_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let all = names(&["mutant-a", "mutant-b", "mutant-c"]);
        let full = [verdict("mutant-a", true, "20261201T000000.000Z-1-0"), verdict("mutant-b", true, "20261201T000000.000Z-1-0"), verdict("mutant-c", false, "20261201T000000.000Z-1-0")];
        update_table(dir.path(), &full, &all).unwrap();
        let subset = [verdict("mutant-b", false, "20261202T000000.000Z-2-0")];
        let table = update_table(dir.path(), &subset, &all).unwrap();
        let rows: Vec<(&str, bool, &str)> = table.iter().map(|v| (v.mutant.as_str(), v.caught, v.run.as_str())).collect();
        assert_eq!(
            rows,
            [("mutant-a", true, "20261201T000000.000Z-1-0"), ("mutant-b", false, "20261202T000000.000Z-2-0"), ("mutant-c", false, "20261201T000000.000Z-1-0")]
        );
        let on_disk: Vec<MutantVerdict> = serde_json::from_str(&std::fs::read_to_string(dir.path().join("mutants.json")).unwrap()).unwrap();
        assert_eq!(on_disk.len(), 3);
        let md = std::fs::read_to_string(dir.path().join("mutants.md")).unwrap();
        assert_eq!(md.lines().filter(|l| l.starts_with("| mutant-")).count(), 3, "{md}");
    }

    #[test]
    fn the_table_shows_both_tools_and_the_mutants_only_one_catches() {
        let with = |mutant: &str, lab: bool, selftests: Option<bool>| MutantVerdict {
            selftests: Some(crate::selftests::MutantSelftests {
                caught: selftests,
                caught_by: if selftests == Some(true) { vec!["test_progs:sockmap_basic/x".into()] } else { vec![] },
                evidence: "test_progs:sockmap_basic/x: FAIL".into(),
                control: "base: 805 passed, 0 failed, 1 skipped".into(),
            }),
            ..verdict(mutant, lab, "r")
        };
        let rows = [with("mutant-a", true, Some(true)), with("mutant-b", true, Some(false)), with("mutant-c", false, Some(true)), with("mutant-d", true, None)];
        let table = report::mutant_table(&rows);
        assert!(table.contains("| kernel selftests |"), "{table}");
        assert!(table.contains("caught by 1 test(s): test_progs:sockmap_basic/x: FAIL"), "{table}");
        assert!(table.contains("**missed**"), "{table}");
        let summary = report::both_tools_summary(&rows);
        assert_eq!(
            summary.trim(),
            "Of 3 mutants run by both: the lab's suite catches 2, the kernel's selftests 2; only the suite: mutant-b; only the selftests: mutant-c"
        );
        assert_eq!(report::both_tools_summary(&[verdict("mutant-a", true, "r")]), "");
    }

    #[test]
    fn the_newest_run_wins_and_gone_mutants_leave_the_table() {
        let (old, new) = ("20261201T000000.000Z-1-0", "20261202T000000.000Z-2-0");
        // A run started earlier that finishes later does not overwrite a newer verdict.
        let merged = merge(vec![verdict("mutant-a", true, new)], &[verdict("mutant-a", false, old)], &names(&["mutant-a"]));
        assert_eq!(merged[0].run, new);
        // Rows from before run ids (no `run` field) are kept until a run replaces them.
        let legacy: Vec<MutantVerdict> =
            serde_json::from_str(r#"[{"mutant": "mutant-a", "breaks": "x", "caught": true, "caught_by": [], "evidence": "e"}, {"mutant": "mutant-gone", "breaks": "x", "caught": true, "caught_by": [], "evidence": "e"}]"#).unwrap();
        let merged = merge(legacy.clone(), &[], &names(&["mutant-a", "mutant-b"]));
        assert_eq!(merged.iter().map(|v| v.mutant.as_str()).collect::<Vec<_>>(), ["mutant-a"]);
        assert_eq!(merge(legacy, &[verdict("mutant-a", false, old)], &names(&["mutant-a"]))[0].run, old);
    }
}
