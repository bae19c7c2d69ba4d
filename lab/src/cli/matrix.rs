//! `lab matrix`: the suite over many kernels; a table of kernels × paths, the cases that differ,
//! JUnit per kernel.

use std::path::Path;

use super::{Context, VmConfigFn};
use crate::matrix::{self, Difference, Row};
use crate::selftests::{self, PublishFn, SelftestsOutcome};
use crate::{render, suite};

#[derive(clap::Args)]
pub struct Args {
    /// Kernels (default: every definition with `matrix = true`).
    kernels: Vec<String>,
    #[command(flatten)]
    guests: super::Guests,
    /// Also run the kernel's own sockmap selftests on each kernel (a second table).
    #[arg(long)]
    selftests: bool,
}

/// `matrix.json`: every row with its kernel's own run id, and the cases that differ.
#[derive(serde::Serialize)]
struct MatrixJson<'a> {
    run: &'a str,
    date: &'a str,
    rows: &'a [Row],
    differences: &'a [Difference],
    wall_seconds: f64,
    /// `lab matrix --selftests`: each kernel's selftests totals, or why they did not run.
    selftests: Vec<serde_json::Value>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let names = if args.kernels.is_empty() { matrix::default_kernels(&ctx.kernels)? } else { args.kernels };
    anyhow::ensure!(!names.is_empty(), "no kernels: name some, or mark definitions with `matrix = true`");
    let project = ctx.project()?;
    let exes = suite::build_binaries(&project)?;
    let jobs = args.guests.jobs();
    let started = std::time::Instant::now();
    let run = crate::runs::start(&project.join("results").join("matrix"))?;
    let make_cfg = |name: &str, kimg: &Path| ctx.vm_config(name, kimg, args.guests.timeout);
    let runner = ctx.runner(&exes, &project, &make_cfg, false);
    let rows = runner.matrix(&names, jobs);
    let diffs = matrix::differences(&rows);
    let wall = started.elapsed().as_secs_f64();
    let out = &run.dir;
    std::fs::create_dir_all(out.join("junit"))?;
    for row in &rows {
        std::fs::write(out.join("junit").join(format!("{}.xml", row.kernel)), render::junit::junit(row))?;
    }
    let details = render::matrix::matrix_details(&rows, &diffs, 20);
    let hooks: (&VmConfigFn<'_>, &PublishFn<'_>) = (&make_cfg, &super::selftests::publish);
    let selftests = if args.selftests { selftests::run_many(&ctx.kernels, &ctx.cache, &project, &names, jobs, hooks) } else { vec![] };
    let selftests_md = render::selftests::matrix_selftests_section(&selftests);
    std::fs::write(out.join("matrix.md"), render::matrix::matrix_md(&rows, &details, &selftests_md, wall, jobs))?;
    let selftests_json = selftests.iter().map(selftests_json).collect();
    let json = MatrixJson { run: &run.id, date: &run.date, rows: &rows, differences: &diffs, wall_seconds: wall, selftests: selftests_json };
    std::fs::write(out.join("matrix.json"), serde_json::to_string_pretty(&json)?)?;
    run.publish()?;
    print!("{}", render::matrix::matrix_table(&rows, false));
    print!("{details}{selftests_md}");
    println!("wall time {wall:.0}s; results: {} (matrix.md, matrix.json, junit/; also results/matrix/latest)", out.display());
    Ok(if rows.iter().all(|r| r.green()) && selftests_green(ctx, &selftests) { 0 } else { 1 })
}

/// Whether the selftests leave the matrix green. A prebuilt image without its exact source package
/// cannot have them: its row says so and does not redden the matrix.
fn selftests_green(ctx: &Context, outcomes: &[SelftestsOutcome]) -> bool {
    let is_prebuilt = |k: &str| ctx.kernels.load(k).is_ok_and(|d| d.source.is_prebuilt());
    outcomes.iter().all(|(k, r)| match r {
        Ok(r) => !r.failed(),
        Err(_) => is_prebuilt(k),
    })
}

fn selftests_json((kernel, outcome): &SelftestsOutcome) -> serde_json::Value {
    match outcome {
        Ok(r) => serde_json::json!({"kernel": kernel, "run": r.run, "totals": r.totals, "failed": r.failed(), "problems": r.problems}),
        Err(e) => serde_json::json!({"kernel": kernel, "error": e}),
    }
}
