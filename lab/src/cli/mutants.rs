//! `lab mutants`: the suite on every mutant beside its control; passes only if each is caught.
//! Writes this run's table and merges its rows into `results/mutants.{md,json}`.

use std::path::Path;

use anyhow::Context as _;

use super::{Context, VmConfigFn};
use crate::matrix::KernelRun;
use crate::mutants::{self, MutantVerdict};
use crate::render::mutants::{both_tools_summary, mutant_table, verdict_line};
use crate::selftests::{self, PublishFn, SelftestsOutcome};
use crate::{runs, suite};

#[derive(clap::Args)]
pub struct Args {
    /// Mutant definitions to run (default: every definition with a `mutant` field).
    names: Vec<String>,
    #[command(flatten)]
    guests: super::Guests,
    /// Also run the kernel's own sockmap selftests on each mutant and control: a second
    /// column says whether they catch it, and with which test.
    #[arg(long)]
    selftests: bool,
    /// Run only the kernel's selftests on the mutants and their controls, and fill in their
    /// column of results/mutants.md (the suite's verdicts stay those of its last run).
    #[arg(long, conflicts_with = "selftests")]
    selftests_only: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    if args.selftests_only {
        return selftests_only(ctx, &args);
    }
    let project = ctx.project()?;
    let defs = mutants::select(&ctx.kernels, &args.names)?;
    let session = runs::start(&project.join("results").join("mutants"))?;
    let exes = suite::build_binaries(&project)?;
    let order = mutants::run_list(&defs);
    let make_cfg = |name: &str, kimg: &Path| ctx.vm_config(name, kimg, args.guests.timeout);
    // Mutants are independent kernels, like the matrix's rows: builds take turns, guests overlap.
    let runner = ctx.runner(&exes, &project, &make_cfg, true);
    let builds = std::sync::Mutex::new(());
    let hooks: (&VmConfigFn<'_>, &PublishFn<'_>) = (&make_cfg, &super::selftests::publish);
    // With --selftests each kernel's selftests run right after its suite, in the same worker: a
    // session cut short still has both tools' results for every kernel it finished.
    let finish = |k: KernelRun| {
        let selftests = args.selftests.then(|| selftests::selftests_of(&ctx.kernels, &ctx.cache, &project, &k.name, hooks, &builds));
        let state = match &k.run {
            Ok(run) => format!("{} of {} cases with a verdict, guest {}", run.report.with_verdict(), run.report.listed, guest_kind(run)),
            Err(e) => format!("error: {e:#}"),
        };
        eprintln!("lab: mutants: {} done ({state})", k.name);
        (k, selftests)
    };
    let jobs = args.guests.jobs();
    let (suite_runs, selftests_runs): (Vec<(String, KernelRun)>, Vec<Option<SelftestsOutcome>>) =
        runner.run_each(&order, jobs, &finish).into_iter().map(|(name, (k, s))| ((name, k), s)).unzip();
    let verdicts: Vec<MutantVerdict> = mutants::verdicts(&defs, suite_runs)
        .into_iter()
        .map(|v| MutantVerdict { run: session.id.clone(), date: session.date.clone(), ..v })
        .collect();
    let selftests_runs: Vec<SelftestsOutcome> = selftests_runs.into_iter().flatten().collect();
    let verdicts = if args.selftests { mutants::attach_selftests(&defs, verdicts, &selftests_runs) } else { verdicts };
    for v in &verdicts {
        eprintln!("{}", verdict_line(v));
    }
    // This run's own table, whole; then its rows into the table of every mutant.
    print!("{}{}", mutant_table(&verdicts), both_tools_summary(&verdicts));
    write_table(&session.dir, &verdicts)?;
    session.publish()?;
    let names: Vec<String> = mutants::all_mutants(&ctx.kernels)?.into_iter().map(|d| d.name).collect();
    let merged = update_table(&project.join("results"), &verdicts, &names)?;
    let (this_run, all) = (session.dir.join("mutants.md"), project.join("results/mutants.md"));
    println!("results: {} (this run); {} ({} of {} mutants)", this_run.display(), all.display(), merged.len(), names.len());
    Ok(if verdicts.iter().all(|v| v.caught) { 0 } else { 1 })
}

/// `lab mutants --selftests-only`: the kernel's selftests on the mutants and their controls, their
/// column written into the rows `results/mutants.json` has (each row keeps the suite verdict of
/// the run that gave it): the suite need not run again to compare the two tools.
fn selftests_only(ctx: &Context, args: &Args) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let defs = mutants::select(&ctx.kernels, &args.names)?;
    let results = project.join("results");
    let stored: Vec<MutantVerdict> = match std::fs::read_to_string(results.join("mutants.json")) {
        Ok(text) => serde_json::from_str(&text).context("reading results/mutants.json")?,
        Err(_) => vec![],
    };
    let rows: Vec<MutantVerdict> = defs
        .iter()
        .map(|d| stored.iter().find(|v| v.mutant == d.name).cloned().unwrap_or_else(|| MutantVerdict::not_run(d, "the suite has not run on it (lab mutants)".into())))
        .collect();
    let make_cfg = |name: &str, kimg: &Path| ctx.vm_config(name, kimg, args.guests.timeout);
    let hooks: (&VmConfigFn<'_>, &PublishFn<'_>) = (&make_cfg, &super::selftests::publish);
    let jobs = args.guests.jobs();
    let runs = selftests::run_many(&ctx.kernels, &ctx.cache, &project, &mutants::run_list(&defs), jobs, hooks);
    let fresh = mutants::attach_selftests(&defs, rows, &runs);
    print!("{}{}", mutant_table(&fresh), both_tools_summary(&fresh));
    let all: Vec<String> = mutants::all_mutants(&ctx.kernels)?.into_iter().map(|d| d.name).collect();
    let _turn = crate::cache::lock(&results.join(".mutants.lock"))?;
    let merged: Vec<MutantVerdict> = all
        .iter()
        .filter_map(|name| fresh.iter().find(|v| v.mutant == *name).or_else(|| stored.iter().find(|v| v.mutant == *name)).cloned())
        .collect();
    write_table(&results, &merged)?;
    println!("results: {} (the selftests column of {} mutant(s) updated)", results.join("mutants.md").display(), fresh.len());
    Ok(if fresh.iter().all(|v| v.selftests.as_ref().is_some_and(|s| s.caught.is_some())) { 0 } else { 1 })
}

fn guest_kind(run: &suite::SuiteRun) -> String {
    serde_json::to_value(&run.guest.outcome).ok().and_then(|v| v["kind"].as_str().map(String::from)).unwrap_or_default()
}

fn write_table(dir: &Path, verdicts: &[MutantVerdict]) -> anyhow::Result<()> {
    runs::write(&dir.join("mutants.md"), &mutant_table(verdicts))?;
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
    let merged = mutants::merge(table, fresh, mutants);
    write_table(results, &merged)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutants::tests::{names, verdict};

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
}
