//! `lab bench`: each redirect path against plain TCP and AF_UNIX, per message size; and
//! `lab bench-plot`, which draws a finished bench's plots (and prints its tables) again from its
//! JSON, without a guest.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Context;
use crate::bench::{upstream, BenchReport, Comparison, KernelBench};
use crate::render;

#[derive(clap::Args)]
pub struct Args {
    kernel: String,
    /// A second kernel, benched in the same session, side by side.
    #[arg(long)]
    vs: Option<String>,
    /// Guest boots per kernel (the spread of the ratios comes from these).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Run the kernel tree's own `bench sockmap` (selftests/bpf/benchs, since 6.16) instead of
    /// the lab's bench: each of its modes, with `--vs` beside `lab bench`'s ratios for the pair.
    #[arg(long)]
    upstream: bool,
    /// With --upstream: seconds measured per mode (the bench's -d).
    #[arg(long, default_value_t = 5, requires = "upstream")]
    duration: u32,
    /// With --upstream: warm-up seconds per mode, left out (the bench's -w).
    #[arg(long, default_value_t = 1, requires = "upstream")]
    warmup: u32,
    /// With --upstream --vs: the `lab bench --vs` run folder of the same pair to compare with
    /// (default: results/bench/<kernel>-vs-<kernel2>/latest).
    #[arg(long, requires = "upstream")]
    ours: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PlotArgs {
    /// A bench's run folder (e.g. results/bench/debian-6.12/latest): its JSON files are read and
    /// its SVGs written again.
    dir: PathBuf,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<u8> {
    if args.upstream {
        return upstream(ctx, &args);
    }
    let (mut report, session) = crate::bench::run(&ctx.kernels, &ctx.cache, &args.kernel, args.vs.as_deref(), args.runs)?;
    report.files = write(&report, &session.dir)?;
    session.publish()?;
    print!("{}", render::bench::report(&report));
    Ok(0)
}

/// `lab bench --upstream`: the kernel's own `bench sockmap`, a line per mode as it finishes, then
/// the tables; JSON (per kernel, and the comparison) and the text beside the raw output.
fn upstream(ctx: &Context, args: &Args) -> anyhow::Result<u8> {
    let settings = upstream::Settings { warmup: args.warmup, duration: args.duration, runs: args.runs };
    let req = upstream::Request { kernel: &args.kernel, vs: args.vs.as_deref(), settings, ours: args.ours.as_deref() };
    let mut on_event = |event: upstream::Event| {
        if let Some(line) = render::bench_upstream::event_line(&event) {
            println!("{line}");
        }
    };
    let (mut report, session) = upstream::run(&ctx.kernels, &ctx.cache, &req, &mut on_event)?;
    report.files = write_upstream(&report, &session.dir)?;
    session.publish()?;
    print!("{}", render::bench_upstream::report(&report));
    let failed = report.kernels.iter().flat_map(|k| &k.modes).any(|m| m.path.as_deref().is_some_and(|p| p != "tcp") && m.rcv_mb_per_s.is_none());
    Ok(u8::from(failed))
}

fn write_upstream(report: &upstream::UpstreamReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for k in &report.kernels {
        files.push(put(dir, &format!("{}.json", k.kernel), &serde_json::to_string_pretty(k)?)?);
    }
    if let Some(cmp) = &report.comparison {
        files.push(put(dir, &format!("{}-vs-{}.json", cmp.base, cmp.other), &serde_json::to_string_pretty(cmp)?)?);
    }
    files.push(put(dir, "summary.txt", &render::bench_upstream::report(report))?);
    Ok(files)
}

/// The plots drawn again, and the tables printed again, from what the bench wrote.
pub fn plot(_ctx: &Context, args: PlotArgs) -> anyhow::Result<u8> {
    let mut report = read(&args.dir)?;
    report.files = write_plots(&report, &args.dir)?;
    print!("{}", render::bench::report(&report));
    Ok(0)
}

/// Write each kernel's JSON and plots (and the comparison's) into `dir`; returns the files written.
pub fn write(report: &BenchReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    for bench in &report.kernels {
        files.push(put(dir, &format!("{}.json", bench.kernel), &serde_json::to_string_pretty(bench)?)?);
    }
    if let Some(cmp) = &report.comparison {
        files.push(put(dir, &format!("{}-vs-{}.json", cmp.base, cmp.other), &serde_json::to_string_pretty(cmp)?)?);
    }
    files.extend(write_plots(report, dir)?);
    Ok(files)
}

fn put(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let file = dir.join(name);
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Per kernel `<kernel>.svg` (MB/s) and `<kernel>-ratios.svg` (over plain TCP); with a comparison
/// the same two for the pair, the ratios with the second kernel over the first beside them.
fn write_plots(report: &BenchReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for bench in &report.kernels {
        files.push(put(dir, &format!("{}.svg", bench.kernel), &render::plot::throughput(&[bench]))?);
        files.push(put(dir, &format!("{}-ratios.svg", bench.kernel), &render::plot::ratios(&[bench], None))?);
    }
    if let Some(cmp) = &report.comparison {
        let both: Vec<&KernelBench> = report.kernels.iter().collect();
        let name = format!("{}-vs-{}", cmp.base, cmp.other);
        files.push(put(dir, &format!("{name}.svg"), &render::plot::throughput(&both))?);
        files.push(put(dir, &format!("{name}-ratios.svg"), &render::plot::ratios(&both, Some(cmp)))?);
    }
    Ok(files)
}

/// A bench run folder read back: every `<kernel>.json`, and the comparison when there is one (its
/// base first, as the bench ran them).
pub fn read(dir: &Path) -> anyhow::Result<BenchReport> {
    let mut kernels: Vec<KernelBench> = Vec::new();
    let mut comparison: Option<Comparison> = None;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten().map(|e| e.path()).collect();
    names.sort();
    for file in names.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))?;
        if value.get("base").is_some() {
            comparison = Some(serde_json::from_value(value).with_context(|| format!("{}: not a bench comparison", file.display()))?);
        } else {
            kernels.push(serde_json::from_value(value).with_context(|| format!("{}: not a kernel's bench", file.display()))?);
        }
    }
    anyhow::ensure!(!kernels.is_empty(), "{} holds no bench JSON", dir.display());
    if let Some(cmp) = &comparison {
        kernels.sort_by_key(|k| k.kernel != cmp.base);
    }
    Ok(BenchReport { kernels, comparison, wall_seconds: 0.0, files: vec![] })
}
