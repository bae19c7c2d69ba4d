//! `lab bisect`: plan, then (unless a dry run) bisect with git and report; and `lab bisect-step`,
//! the step git runs on each commit.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::Context;
use crate::bisect::{self, Conclusion, EndCheck, Mode, Options, Plan, Rev, StepArgs, StepRecord, EXIT_ABORT};
use crate::{render, suite};

#[derive(clap::Args)]
pub struct Args {
    /// The kernel tree to bisect (left untouched: bisected in a worktree).
    #[arg(long, conflicts_with = "kernels", requires_all = ["good", "bad"])]
    tree: Option<PathBuf>,
    #[arg(long, requires = "tree")]
    good: Option<String>,
    #[arg(long, requires = "tree")]
    bad: Option<String>,
    /// Build every commit with this definition's config fragments, profile and patches.
    #[arg(long, default_value = "debian-6.12", conflicts_with = "kernels")]
    kernel: String,
    /// Bisect kernel definitions instead, nothing built: `A..B` (ordered by version) or `A,B,C`.
    #[arg(long, required_unless_present = "tree")]
    kernels: Option<String>,
    /// Only cases whose name contains this (libtest's filter).
    filter: Option<String>,
    /// Print the plan (worktree, range, step command, selected cases) and stop.
    #[arg(long)]
    dry_run: bool,
    /// Per step: a guest still running after this many seconds is a hang (the commit is skipped).
    #[arg(long, default_value_t = 600, env = "LAB_TIMEOUT")]
    timeout: u64,
    /// Judge every step by this kernel family's snapshots (e.g. `6.1` over 6.1..7.3 finds the
    /// first release that no longer behaves as 6.1 did), instead of each kernel's own family.
    #[arg(long)]
    judge_as: Option<String>,
}

#[derive(clap::Args)]
pub struct StepCli {
    /// Tree mode: the definition to build the commit with; without it the commit's subject names the kernel.
    #[arg(long)]
    kernel: Option<String>,
    /// The JSON-lines step log (default: results/bisect/steps.jsonl).
    #[arg(long)]
    log: Option<PathBuf>,
    /// A suite binary (repeatable; default: build the suite).
    #[arg(long)]
    exe: Vec<PathBuf>,
    #[arg(long, default_value_t = 600, env = "LAB_TIMEOUT")]
    timeout: u64,
    #[arg(long)]
    judge_as: Option<String>,
    filter: Option<String>,
}

/// What `results/bisect/result.json` holds.
#[derive(Serialize)]
struct Summary<'a> {
    /// None when there is no answer: undecided, or an end is not what it was said to be.
    first_bad: Option<&'a Rev>,
    /// When skips hid the answer: the commits it is among.
    candidates: &'a [Rev],
    end_checks: &'a [EndCheck],
    commits: usize,
    steps: &'a [StepRecord],
    wall_seconds: f64,
}

/// Exit code 0 with an answer, 1 without one (skips left git undecided, or an end is not what it
/// was said to be).
pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let opts = Options {
        tree: args.tree,
        good: args.good,
        bad: args.bad,
        kernel: args.kernel,
        kernels: args.kernels,
        filter: args.filter,
        dry_run: args.dry_run,
        timeout: args.timeout,
        judge_as: args.judge_as,
    };
    let plan = Plan::new(&opts, &ctx.kernels, &ctx.cache)?;
    bisect::sweep_stale(&ctx.cache.path("bisect"), match &plan.mode {
        Mode::Tree { tree, .. } => Some(tree),
        Mode::Kernels { .. } => None,
    });
    let exes = suite::build_binaries(&ctx.project()?);
    let cases = match &exes {
        Ok(exes) => suite::list_cases(exes, opts.filter.as_deref()),
        Err(e) => Err(anyhow::anyhow!("building the suite failed: {e:#}")),
    };
    if opts.dry_run {
        let step = plan.step_command(&opts, exes.as_deref().unwrap_or(&[]))?;
        print!("{}", render::bisect::plan(&plan, &step, &cases, opts.filter.as_deref()));
        return Ok(0);
    }
    let (exes, cases) = (exes?, cases?);
    anyhow::ensure!(!cases.is_empty(), "the filter selects no case: every step would judge nothing");
    suite::fresh_dir(&plan.out)?;
    let exes = bisect::freeze_suite(&exes, &plan.out.join("suite"))?;
    let step = plan.step_command(&opts, &exes)?;
    print!("{}", render::bisect::plan(&plan, &step, &Ok(cases), opts.filter.as_deref()));
    bisect_and_report(ctx, &plan, &step)
}

fn bisect_and_report(ctx: &Context, plan: &Plan, step: &[String]) -> anyhow::Result<u8> {
    let env = [("LAB_KERNELS", ctx.kernels.dir.canonicalize()?), ("LAB_CACHE", ctx.cache.root.clone())];
    let started = Instant::now();
    let found = match &plan.mode {
        Mode::Tree { tree, good, bad, .. } => bisect::bisect_tree(tree, &plan.scratch, &good.commit, &bad.commit, step, &env)?,
        Mode::Kernels { list } => bisect::bisect_kernels(list, &plan.scratch, step, &env)?,
    };
    let wall = started.elapsed();
    std::fs::write(plan.out.join("git-bisect.log"), &found.log)?;
    let steps = bisect::read_log(&plan.log)?;
    let candidates = match &plan.mode {
        Mode::Tree { commits, .. } => *commits,
        Mode::Kernels { list } => list.len() - 1,
    };
    let kernels_mode = matches!(plan.mode, Mode::Kernels { .. });
    print!("{}", render::bisect::report(&found, &steps, candidates, wall, kernels_mode));
    let sound = !found.end_checks.iter().any(EndCheck::contradicts);
    let (first_bad, undecided) = match &found.conclusion {
        Conclusion::FirstBad(rev) => (sound.then_some(rev), &[][..]),
        Conclusion::Undecided(revs) => (None, revs.as_slice()),
    };
    let summary =
        Summary { first_bad, candidates: undecided, end_checks: &found.end_checks, commits: candidates, steps: &steps, wall_seconds: wall.as_secs_f64() };
    std::fs::write(plan.out.join("result.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("results: {} (result.json, steps.jsonl, git-bisect.log, steps/)", plan.out.display());
    Ok(if first_bad.is_some() { 0 } else { 1 })
}

/// One `git bisect run` step: exits 0 good, 1 bad, 125 skip; the lab's own failure stops git.
pub fn step(ctx: &Context, args: StepCli) -> u8 {
    let step_args = StepArgs { kernel: args.kernel, log: args.log, exes: args.exe, filter: args.filter, judge_as: args.judge_as };
    let timeout = args.timeout;
    match bisect::step(&step_args, &ctx.kernels, &ctx.cache, &|name, kimg| ctx.vm_config(name, kimg, timeout)) {
        Ok(record) => {
            println!("{}", render::bisect::step_line(&record));
            record.verdict.exit_code()
        }
        Err(e) => {
            eprintln!("lab bisect-step: {e:#}\nlab bisect-step: stopping the bisection: this is the lab's failure, not the commit's");
            EXIT_ABORT
        }
    }
}
