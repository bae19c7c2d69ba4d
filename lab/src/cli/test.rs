//! `lab test`: the redirect-path suite in a guest, a line per case, a summary, results on disk.

use super::Context;
use crate::build::{self, BuildOptions};
use crate::render;
use crate::suite::{self, SuiteRun};
use crate::vm::Outcome;

#[derive(clap::Args)]
pub struct Args {
    kernel: String,
    /// Only cases whose name contains this (libtest's filter).
    filter: Option<String>,
    /// Write `.snap.new` files for changed snapshots instead of failing; review them with
    /// `cargo insta review`.
    #[arg(long)]
    review: bool,
    /// Build the kernel with this profile instead of the definition's (`debug`: KASAN, lockdep).
    #[arg(long)]
    profile: Option<crate::definition::Profile>,
    /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
    /// stopped sooner: that is a stuck case).
    #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
    timeout: u64,
    /// Deal the cases to this many guests of the kernel, side by side (default: one per core, at
    /// most 4). Each guest is a kernel of its own, so every case's checks stay exact.
    #[arg(long, env = "LAB_GUESTS")]
    guests: Option<usize>,
    /// Test-only: the case whose name contains this aborts its test binary mid-suite, to show
    /// how the lab reports a suite that died.
    #[arg(long, hide = true)]
    abort_case: Option<String>,
    /// Judge every case by this kernel family's snapshots (`6.1`, `6.12`: the base snapshots)
    /// instead of the guest's own family.
    #[arg(long)]
    judge_as: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let mut def = ctx.kernels.load(&args.kernel)?;
    if let Some(p) = args.profile.filter(|p| *p != def.profile) {
        // A different kernel deserves its own name: results, logs and `lab list` would
        // otherwise mix the debug build's runs with the definition's own.
        def.name = format!("{}-{}", def.name, p.as_str());
        def.profile = p;
    }
    let built = build::build(&def, &ctx.kernels, &ctx.cache, &BuildOptions::default())?;
    let project = ctx.project()?;
    let exes = suite::build_binaries(&project)?;
    let cfg = ctx.vm_config(&def.name, &built.entry.kernel_image(), args.timeout)?;
    let review = args.review;
    let guests = args.guests.unwrap_or_else(|| super::default_jobs().min(4));
    let opts = suite::SuiteOptions { filter: args.filter, review, abort_case: args.abort_case, judge_as: args.judge_as, results: None, guests };
    let run = suite::run(&def, &built.entry, &project, &exes, cfg, &opts)?;
    // The same per-kernel outputs the matrix writes, so a CI job per kernel can publish them.
    super::publish_suite_run(&run)?;
    for case in &run.report.cases {
        println!("{}", render::suite::case_line(case));
    }
    print!("{}", render::suite::summary(&run.report));
    let latest = suite::results_group(&project, &def.name).join(crate::runs::LATEST);
    println!("results: {} (also {})", run.results.join("summary.json").display(), latest.display());
    if !matches!(run.guest.outcome, Outcome::Exited { .. }) {
        return Ok(super::guest_exit(&def.name, &run.guest, &run.cfg));
    }
    if run.report.with_verdict() == 0 {
        let output = crate::process::tail(&String::from_utf8_lossy(&run.guest.stdout), 40);
        eprintln!("error: the guest ran no cases; its output:\n{output}");
        return Ok(1);
    }
    if review {
        review_hint(&run, &project);
    }
    Ok(if run.report.failed() { 1 } else { 0 })
}

fn review_hint(run: &SuiteRun, project: &std::path::Path) {
    println!(
        "review changed snapshots with: INSTA_PENDING_DIR={} cargo insta review --workspace-root {}",
        suite::pending_dir(&run.results).display(),
        project.display()
    );
    // A known finding's .snap.new is the kernel bug written down: accepting it would make the bug
    // the expectation.
    let known: Vec<&str> = run.report.cases.iter().filter(|c| c.is_known_finding()).map(|c| c.name.as_str()).collect();
    if let Some(first) = known.first() {
        println!("reject the .snap.new of the {} case(s) that fail with a known kernel finding (first: {first}): they record the bug (snapshots/FINDINGS.toml)", known.len());
    }
}
