//! `lab selftests`: the kernel tree's own sockmap selftests (test_progs -t sockmap*, test_sockmap)
//! built for a kernel and run in a guest: a line per test, a summary, results as JSON and JUnit.

use super::Context;
use crate::build::{self, BuildOptions};
use crate::render::selftests::{render_selftests, selftest_line, selftests_junit};
use crate::selftests::{self, SelftestsRun};
use crate::vm::Outcome;

#[derive(clap::Args)]
pub struct Args {
    kernel: String,
    /// A test_progs selector (`sockmap_basic`, `sockmap_basic/sockmap recover`) or `test_sockmap`.
    filter: Option<String>,
    /// Give up on the guest after this many seconds (one quiet for 300 s is stopped sooner).
    #[arg(long, default_value_t = 1800, env = "LAB_TIMEOUT")]
    timeout: u64,
    /// Build them (and the kernel) only; do not boot.
    #[arg(long)]
    build_only: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let def = ctx.kernels.load(&args.kernel)?;
    let built = build::build(&def, &ctx.kernels, &ctx.cache, &BuildOptions::default())?;
    let started = std::time::Instant::now();
    let tests = selftests::build(&def, &built.entry, &ctx.cache)?;
    println!(
        "selftests for {}: {} ({:.0}s{}; built {:.0}s): {}",
        def.name,
        tests.manifest.tests.join(", "),
        started.elapsed().as_secs_f64(),
        if tests.cached { ", cached" } else { "" },
        tests.manifest.build_seconds,
        tests.dir.display()
    );
    if args.build_only {
        return Ok(0);
    }
    let project = ctx.project()?;
    let cfg = ctx.vm_config(&def.name, &built.entry.kernel_image(), args.timeout)?;
    let run = selftests::run(&def, &built.entry, &tests, &project, cfg, args.filter.as_deref())?;
    publish(&run)?;
    for r in &run.report.results {
        println!("{}", selftest_line(r));
    }
    print!("{}", render_selftests(&run.report));
    let latest = selftests::results_group(&project, &def.name).join(crate::runs::LATEST);
    println!("results: {} (also {})", run.results.join("summary.json").display(), latest.display());
    if !matches!(run.guest.outcome, Outcome::Exited { .. }) {
        return Ok(super::guest_exit(&def.name, &run.guest, &run.cfg));
    }
    Ok(if run.report.failed() { 1 } else { 0 })
}

/// Write a selftests run's JUnit and summary beside its results, then make it `latest` (the hook
/// `lab mutants --selftests` and `lab matrix --selftests` hand the engine, too).
pub fn publish(run: &SelftestsRun) -> anyhow::Result<()> {
    std::fs::write(run.results.join("junit.xml"), selftests_junit(&run.report))?;
    std::fs::write(run.results.join("summary.txt"), render_selftests(&run.report))?;
    run.run.publish()
}
