//! `lab bench`: throughput and latency of the sockmap redirect paths against plain TCP and AF_UNIX,
//! measured by `benchcases` inside a guest, summarised on the host.
//!
//! `runs` is the number of guest boots per kernel. Each boot runs every point (path × size) with
//! discarded warm-up runs and then `repeats` measured runs. With a second kernel the boots alternate
//! between the two kernels, so boot i of each ran at nearly the same time on this (shared) host and
//! their ratio is paired. Figures are read as ratios: to plain TCP at the same size in the same boot,
//! and between kernels; each ratio's spread is over the boots.
//!
//! Outputs, in a run folder of `results/bench/<kernel>/` (`results/bench/<kernel>-vs-<kernel2>/`
//! with a second kernel; `latest` is the last run, see [`crate::runs`]): `<kernel>.json` (summary
//! plus every boot's raw guest results, for later comparison), `<kernel>.svg` (MB/s against message
//! size per path), `<kernel>-ratios.svg` (each path over plain TCP), and with a second kernel
//! `<kernel>-vs-<kernel2>.json`, `.svg` and `-ratios.svg` (also kernel2 over kernel). Each boot's
//! guest output stays under `raw/<kernel>/boot-<n>/`. This module measures and summarises; the
//! command writes the files (`crate::cli::bench`) and `crate::render` draws them.


mod boot;
mod stats;
pub mod upstream;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::build::{self, BuildOptions};
use crate::cache::Cache;
use crate::definition::KernelsDir;
use crate::vm::{Accel, GuestRun};
use crate::{runs, suite};

pub use boot::{boot_once, build_binary, parse_guest, vm_config};
pub use stats::{compare, summarize, Stats};

/// The baseline every path is compared with.
pub const BASELINE: &str = "tcp";
/// Rows in this order: baselines first, then the four paths as the suite orders them.
pub const PATHS: &[&str] = &["tcp", "unix", "tx_to_rx", "rx_to_rx", "tx_to_tx", "rx_to_tx"];

/// What `benchcases` writes (its `Output`); every field is required, so a guest binary out of step
/// with this parser fails loudly instead of reading as zeros.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestResults {
    pub release: String,
    pub settings: GuestSettings,
    pub throughput: Vec<GuestPoint<ThroughputRun>>,
    pub latency: Vec<GuestPoint<LatencyRun>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestSettings {
    pub sizes: Vec<usize>,
    pub point_ms: u64,
    pub latency_sizes: Vec<usize>,
    pub latency_ms: u64,
    pub warmup: u32,
    pub repeats: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestPoint<T> {
    pub path: String,
    pub size: usize,
    pub runs: Vec<T>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRun {
    pub messages: u64,
    pub bytes: u64,
    /// Messages the guest's receiver found stamped in order (its content check).
    pub verified_messages: u64,
    pub seconds: f64,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRun {
    pub samples: u64,
    pub one_way_p50_us: f64,
    pub one_way_p99_us: f64,
    pub round_trip_p50_us: f64,
    pub round_trip_p99_us: f64,
    #[serde(flatten)]
    pub counters: Counters,
}

/// What the kernel counted during a run (benchcases' `Switches`, flattened into each run's JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counters {
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub system_switches: u64,
    /// Absent from benches run before the lab counted segments.
    #[serde(default)]
    pub tcp_segments: Option<u64>,
}

impl Counters {
    /// This process's context switches, voluntary or not.
    pub fn switches(&self) -> f64 {
        (self.voluntary_switches + self.involuntary_switches) as f64
    }
}

/// One path at one size over every boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputSummary {
    pub path: String,
    pub size: usize,
    /// Over every measured run of every boot (10^6 bytes per second).
    pub mb_per_s: Option<Stats>,
    pub messages_per_s: Option<Stats>,
    /// This process's context switches (voluntary + involuntary) per message sent.
    pub switches_per_message: Option<Stats>,
    /// The whole guest's (/proc/stat ctxt), kworkers included.
    pub system_switches_per_message: Option<Stats>,
    /// The whole guest's TCP segments sent (data and ACKs, every hop) per message.
    #[serde(default)]
    pub tcp_segments_per_message: Option<Stats>,
    /// MB/s over plain TCP's at this size: one ratio of medians per boot.
    pub vs_tcp: Option<Stats>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencySummary {
    pub path: String,
    pub size: usize,
    /// Each over the runs of every boot, of each run's percentile.
    pub one_way_p50_us: Option<Stats>,
    pub one_way_p99_us: Option<Stats>,
    pub round_trip_p50_us: Option<Stats>,
    pub round_trip_p99_us: Option<Stats>,
    pub switches_per_request: Option<Stats>,
    pub system_switches_per_request: Option<Stats>,
    /// One-way p50 over plain TCP's: one ratio of medians per boot (above 1 is slower).
    pub vs_tcp: Option<Stats>,
    pub errors: Vec<String>,
}

/// One kernel's bench: `<kernel>.json` in the bench's run folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelBench {
    pub kernel: String,
    pub release: String,
    pub accel: Accel,
    pub cpus: u32,
    pub settings: GuestSettings,
    /// Seconds each boot took, boot to power-off.
    pub boot_seconds: Vec<f64>,
    pub throughput: Vec<ThroughputSummary>,
    pub latency: Vec<LatencySummary>,
    /// Every boot's results as the guest wrote them.
    pub boots: Vec<GuestResults>,
}

/// `other` over `base`, per path and size, one ratio of medians per pair of boots that ran side by side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub base: String,
    pub other: String,
    /// MB/s, other / base: above 1, `other` is faster.
    pub throughput: Vec<Ratio>,
    /// One-way p50, other / base: above 1, `other` is slower.
    pub latency: Vec<Ratio>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub path: String,
    pub size: usize,
    pub ratio: Option<Stats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub kernels: Vec<KernelBench>,
    pub comparison: Option<Comparison>,
    pub wall_seconds: f64,
    /// What was written, for the closing lines of the rendering.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

/// Bench `kernel` (and `vs`, side by side) over `runs` guest boots each, in a new run folder under
/// `results/bench/`; returns the report and the folder, for the caller to write the outputs into
/// and publish.
pub fn run(kernels: &KernelsDir, cache: &Cache, kernel: &str, vs: Option<&str>, runs: u32) -> anyhow::Result<(BenchReport, runs::Run)> {
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let started = Instant::now();
    let project = kernels.dir.parent().context("the kernels folder has no parent")?.canonicalize()?;
    let mut targets = Vec::new();
    for name in std::iter::once(kernel).chain(vs) {
        let def = kernels.load(name)?;
        let built = build::build(&def, kernels, cache, &BuildOptions::default())?;
        targets.push((def.name, built.entry));
    }
    let exe = build_binary(&project)?;
    // A run of its own, per kernel or per pair: two benches at once keep their boots apart.
    let group = project.join("results").join("bench").join(targets.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join("-vs-"));
    let session = runs::start(&group)?;
    let out = &session.dir;
    let mut boots: Vec<Vec<(GuestResults, GuestRun)>> = targets.iter().map(|_| Vec::new()).collect();
    let mut guests = Vec::new();
    for boot in 1..=runs {
        for ((name, entry), done) in targets.iter().zip(&mut boots) {
            let dir = out.join("raw").join(name).join(format!("boot-{boot}"));
            suite::fresh_dir(&dir)?;
            let cfg = vm_config(cache, name, &entry.kernel_image())?;
            if boot == 1 {
                guests.push((cfg.accel, cfg.cpus));
            }
            let label = format!("{name}: bench boot {boot}/{runs}");
            done.push(boot_once(&label, entry, &exe, &dir, cfg, &[])?);
        }
    }
    let benches: Vec<KernelBench> = targets
        .iter()
        .zip(boots)
        .zip(guests)
        .map(|(((name, entry), done), (accel, cpus))| {
            let wall = done.iter().map(|(_, run)| run.wall.as_secs_f64()).collect();
            summarize(name, &entry.manifest.release, accel, cpus, done.into_iter().map(|(results, _)| results).collect(), wall)
        })
        .collect::<anyhow::Result<_>>()?;
    let comparison = match benches.as_slice() {
        [base, other] => Some(compare(base, other)),
        _ => None,
    };
    let report = BenchReport { kernels: benches, comparison, wall_seconds: started.elapsed().as_secs_f64(), files: vec![] };
    Ok((report, session))
}

