//! `lab matrix`: the suite over many kernels; a table of kernels × paths, the cases that differ,
//! JUnit per kernel.

use std::path::Path;

use super::Context;
use crate::matrix::{self, Difference, Row};
use crate::{render, suite};

#[derive(clap::Args)]
pub struct Args {
    /// Kernels (default: every definition with `matrix = true`).
    kernels: Vec<String>,
    /// Guests at once (default: the number of cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
    /// stopped sooner: that is a stuck case).
    #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
    timeout: u64,
}

/// `matrix.json`: every row with its kernel's own run id, and the cases that differ.
#[derive(serde::Serialize)]
struct MatrixJson<'a> {
    run: &'a str,
    date: &'a str,
    rows: &'a [Row],
    differences: &'a [Difference],
    wall_seconds: f64,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    let names = if args.kernels.is_empty() { matrix::default_kernels(&ctx.kernels)? } else { args.kernels };
    anyhow::ensure!(!names.is_empty(), "no kernels: name some, or mark definitions with `matrix = true`");
    let project = ctx.project()?;
    let exes = suite::build_binaries(&project)?;
    let jobs = args.jobs.unwrap_or_else(super::default_jobs);
    let started = std::time::Instant::now();
    let run = crate::runs::start(&project.join("results").join("matrix"))?;
    let make_cfg = |name: &str, kimg: &Path| ctx.vm_config(name, kimg, args.timeout);
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
    std::fs::write(out.join("matrix.md"), render::matrix::matrix_md(&rows, &details, wall, jobs))?;
    let json = MatrixJson { run: &run.id, date: &run.date, rows: &rows, differences: &diffs, wall_seconds: wall };
    std::fs::write(out.join("matrix.json"), serde_json::to_string_pretty(&json)?)?;
    run.publish()?;
    print!("{}", render::matrix::matrix_table(&rows, false));
    print!("{details}");
    println!("wall time {wall:.0}s; results: {} (matrix.md, matrix.json, junit/; also results/matrix/latest)", out.display());
    Ok(if rows.iter().all(|r| r.green()) { 0 } else { 1 })
}
