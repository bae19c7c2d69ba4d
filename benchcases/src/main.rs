//! sockmap redirect-path benchmarks, run inside a lab guest by `lab bench`: throughput per message
//! size and small-message latency for each redirect path and for plain TCP and AF_UNIX, in one VM.
//!
//! Every point gets warm-up runs (discarded: they pay for TCP window growth and first-touch
//! allocations) and then measured runs. Paths take turns within each repetition, so a slow moment
//! of the (shared, often emulated) host hits every path alike and the ratios between them hold.
//! The results go, as JSON, to $LAB_RESULTS_DIR/bench.json, or to stdout without it; progress goes
//! to stderr. Raw runs only: `lab bench` does the statistics.

mod bpf;
mod measure;
mod path;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use bpf::Bpf;
use measure::{LatencyRun, ThroughputRun};
use path::{Endpoints, Path};

#[derive(Parser, Serialize)]
#[command(about = "sockmap redirect-path benchmarks (inside a lab guest only: `lab bench`)")]
struct Settings {
    /// Message sizes for throughput, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256, 1024, 4096, 16384, 65536])]
    sizes: Vec<usize>,
    /// How long each throughput run sends, in milliseconds.
    #[arg(long, default_value_t = 100)]
    point_ms: u64,
    /// Request sizes for latency, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [16])]
    latency_sizes: Vec<usize>,
    /// How long each latency run goes on (at least 100 requests), in milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// Discarded runs before the measured ones, per point.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Measured runs per point.
    #[arg(long, default_value_t = 5)]
    repeats: u32,
}

#[derive(Serialize)]
struct Output<'a> {
    release: String,
    settings: &'a Settings,
    throughput: Vec<Point<ThroughputRun>>,
    latency: Vec<Point<LatencyRun>>,
}

/// One path at one size: its measured runs, and why it stopped short if it did.
#[derive(Serialize)]
struct Point<T> {
    path: &'static str,
    size: usize,
    runs: Vec<T>,
    error: Option<String>,
}

fn main() -> ExitCode {
    let settings = Settings::parse();
    // It loads BPF programs into the kernel and floods loopback as root: not for a developer's host.
    if std::env::var_os("LAB_IN_GUEST").is_none() {
        eprintln!("benchcases runs only inside a lab guest: use `lab bench`");
        return ExitCode::from(2);
    }
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: &Settings) -> anyhow::Result<()> {
    // Loaded once for the whole bench: the verifier is slow under emulation.
    let programs: BTreeMap<&str, Result<Bpf, String>> = Path::ALL
        .into_iter()
        .filter_map(|p| Some((p.name(), Bpf::load(p.redirect()?).map_err(|e| format!("{e:#}")))))
        .collect();
    let throughput = measure_all(settings, &settings.sizes, &programs, false, |ends, size| {
        measure::throughput(ends, size, Duration::from_millis(settings.point_ms))
    });
    let latency = measure_all(settings, &settings.latency_sizes, &programs, true, |ends, size| {
        measure::latency(ends, size, Duration::from_millis(settings.latency_ms))
    });
    let output = Output { release: release()?, settings, throughput, latency };
    let json = serde_json::to_string_pretty(&output)?;
    match std::env::var_os("LAB_RESULTS_DIR") {
        Some(dir) => std::fs::write(std::path::Path::new(&dir).join("bench.json"), json)?,
        None => println!("{json}"),
    }
    Ok(())
}

/// Every path at every size: per size, fresh sockets for each path, then the warm-up runs and the
/// measured ones with the paths taking turns. A path that fails at a size is dropped from it.
fn measure_all<T>(
    settings: &Settings,
    sizes: &[usize],
    programs: &BTreeMap<&str, Result<Bpf, String>>,
    nodelay: bool,
    mut measure: impl FnMut(&Endpoints, usize) -> anyhow::Result<T>,
) -> Vec<Point<T>> {
    let mut points = Vec::new();
    for &size in sizes {
        let mut at_size: Vec<(Point<T>, Option<Endpoints>)> = Path::ALL
            .into_iter()
            .map(|path| {
                let ends = match programs.get(path.name()) {
                    Some(Err(why)) => Err(anyhow::anyhow!("{why}")),
                    Some(Ok(bpf)) => path::connect(path, Some(bpf), nodelay),
                    None => path::connect(path, None, nodelay),
                };
                match ends {
                    Ok(ends) => (Point { path: path.name(), size, runs: Vec::new(), error: None }, Some(ends)),
                    Err(e) => (
                        Point { path: path.name(), size, runs: Vec::new(), error: Some(format!("setup: {e:#}")) },
                        None,
                    ),
                }
            })
            .collect();
        for round in 0..settings.warmup + settings.repeats {
            for (point, ends) in &mut at_size {
                let Some(sockets) = ends else { continue };
                match measure(sockets, size) {
                    Ok(run) if round >= settings.warmup => point.runs.push(run),
                    Ok(_) => {}
                    Err(e) => {
                        point.error = Some(format!("run {}: {e:#}", round + 1));
                        *ends = None;
                    }
                }
            }
        }
        for (point, _) in &at_size {
            let outcome = point.error.clone().unwrap_or_else(|| format!("{} runs", point.runs.len()));
            eprintln!("benchcases: {} {} B{}: {outcome}", point.path, size, if nodelay { " (latency)" } else { "" });
        }
        points.extend(at_size.into_iter().map(|(point, _)| point));
    }
    points.sort_by_key(|p| (Path::ALL.iter().position(|q| q.name() == p.path), p.size));
    points
}

fn release() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string())
}
