//! `lab mutants`: the suite on every mutant beside its control; passes only if each is caught.
//! Writes this run's table and merges its rows into `results/mutants.{md,json}`.

use std::path::Path;

use anyhow::Context as _;

use super::Context;
use crate::matrix::KernelRun;
use crate::mutants::{self, MutantVerdict};
use crate::render::mutants::{mutant_table, verdict_line};
use crate::{runs, suite};

#[derive(clap::Args)]
pub struct Args {
    /// Mutant definitions to run (default: every definition with a `mutant` field).
    names: Vec<String>,
    /// Guests at once (default: the number of cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
    /// stopped sooner: that is a stuck case).
    #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
    timeout: u64,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let defs = mutants::select(&ctx.kernels, &args.names)?;
    let session = runs::start(&project.join("results").join("mutants"))?;
    let exes = suite::build_binaries(&project)?;
    let order = mutants::run_list(&defs);
    let make_cfg = |name: &str, kimg: &Path| ctx.vm_config(name, kimg, args.timeout);
    // Mutants are independent kernels, like the matrix's rows: builds take turns, guests overlap.
    let runner = ctx.runner(&exes, &project, &make_cfg, true);
    let finish = |k: KernelRun| {
        let state = match &k.run {
            Ok(run) => format!("{} of {} cases with a verdict, guest {}", run.report.with_verdict(), run.report.listed, guest_kind(run)),
            Err(e) => format!("error: {e:#}"),
        };
        eprintln!("lab: mutants: {} done ({state})", k.name);
        k
    };
    let jobs = args.jobs.unwrap_or_else(super::default_jobs);
    let verdicts: Vec<MutantVerdict> = mutants::verdicts(&defs, runner.run_each(&order, jobs, &finish))
        .into_iter()
        .map(|v| MutantVerdict { run: session.id.clone(), date: session.date.clone(), ..v })
        .collect();
    for v in &verdicts {
        eprintln!("{}", verdict_line(v));
    }
    // This run's own table, whole; then its rows into the table of every mutant.
    print!("{}", mutant_table(&verdicts));
    write_table(&session.dir, &verdicts)?;
    session.publish()?;
    let names: Vec<String> = mutants::all_mutants(&ctx.kernels)?.into_iter().map(|d| d.name).collect();
    let merged = update_table(&project.join("results"), &verdicts, &names)?;
    let (this_run, all) = (session.dir.join("mutants.md"), project.join("results/mutants.md"));
    println!("results: {} (this run); {} ({} of {} mutants)", this_run.display(), all.display(), merged.len(), names.len());
    Ok(if verdicts.iter().all(|v| v.caught) { 0 } else { 1 })
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
