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
//! size per path), and with a second kernel `<kernel>-vs-<kernel2>.json` and `.svg`. Each boot's
//! guest output stays under `raw/<kernel>/boot-<n>/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::build::{self, BuildOptions};
use crate::cache::{Cache, Entry};
use crate::definition::KernelsDir;
use crate::progress::Step;
use crate::vm::{self, Accel, GuestRun, Outcome, VmConfig};
use crate::{accel, process, runs, suite};

/// The baseline every path is compared with.
pub const BASELINE: &str = "tcp";
/// Rows in this order: baselines first, then the four paths as the suite orders them.
pub const PATHS: &[&str] = &["tcp", "unix", "tx_to_rx", "rx_to_rx", "tx_to_tx", "rx_to_tx"];

/// A whole boot's bench is a couple of minutes under TCG; this only catches a guest that hangs.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

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
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub system_switches: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRun {
    pub samples: u64,
    pub one_way_p50_us: f64,
    pub one_way_p99_us: f64,
    pub round_trip_p50_us: f64,
    pub round_trip_p99_us: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub system_switches: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stats { median, min: v[0], max: v[n - 1], n })
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

/// Bench `kernel` (and `vs`, side by side) over `runs` guest boots each, write the JSON and SVG
/// outputs to a run folder under `results/bench/`, and return the report.
pub fn run(kernels: &KernelsDir, cache: &Cache, kernel: &str, vs: Option<&str>, runs: u32) -> anyhow::Result<BenchReport> {
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
    let mut report = BenchReport { kernels: benches, comparison, wall_seconds: started.elapsed().as_secs_f64(), files: vec![] };
    report.files = write(&report, out)?;
    session.publish()?;
    Ok(report)
}

/// Build `benchcases` on the host (the guest sees the host's filesystem and runs it in place). The
/// dev profile, optimised for this one crate by the workspace's Cargo.toml: its dependencies are
/// shared with the suite's build, and nothing of theirs is on the per-message path.
pub fn build_binary(project: &Path) -> anyhow::Result<PathBuf> {
    let step = Step::start("building the bench");
    let exe = process::cargo_artifacts(project, &["build", "-p", "benchcases"])?
        .into_iter()
        .filter(|msg| msg["target"]["name"] == "benchcases")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo built no benchcases executable")?;
    step.finish(&exe.display().to_string());
    Ok(exe)
}

/// Under TCG a wake-up across vCPUs waits for the host to schedule the idle vCPU's thread, which on a
/// busy host takes milliseconds instead of the microseconds of a real IPI: with two vCPUs some runs
/// came out 100 times slower than their neighbours. One vCPU keeps every hand-off on one CPU, so
/// TCG figures are CPU cost per message. KVM keeps two, sender and receiver in parallel as on
/// real hardware.
fn bench_cpus(accel: Accel) -> u32 {
    match accel {
        Accel::Kvm => 2,
        Accel::Tcg => 1,
    }
}

/// A VM configuration for benching `kimg`, with the accelerator chosen for this host.
pub fn vm_config(cache: &Cache, name: &str, kimg: &Path) -> anyhow::Result<VmConfig> {
    let mut cfg = accel::vm_config(cache, &format!("bench-{name}"), kimg, GUEST_TIMEOUT)?;
    cfg.cpus = bench_cpus(cfg.accel);
    Ok(cfg)
}

/// One boot: run `exe` (with `args`, e.g. smaller sizes) in the guest, writing into `dir`, and read
/// what it wrote. Anything but a clean exit is an error carrying the guest's output and console.
pub fn boot_once(
    label: &str,
    entry: &Entry,
    exe: &Path,
    dir: &Path,
    mut cfg: VmConfig,
    args: &[String],
) -> anyhow::Result<(GuestResults, GuestRun)> {
    cfg.rwdirs.push(dir.to_path_buf());
    let mut command =
        vec!["env".to_string(), "LAB_IN_GUEST=1".into(), format!("LAB_RESULTS_DIR={}", dir.display()), exe.display().to_string()];
    command.extend(args.iter().cloned());
    let step = Step::start(&format!("{label} ({})", cfg.accel.as_str()));
    let mut pending = String::new();
    let run = vm::run(&entry.kernel_image(), &command, &cfg, |bytes| {
        pending.push_str(&String::from_utf8_lossy(bytes));
        while let Some(nl) = pending.find('\n') {
            let line: String = pending.drain(..=nl).collect();
            if let Some(point) = line.trim().strip_prefix("benchcases: ") {
                step.message(point);
            }
        }
    })?;
    let output = || process::tail(&String::from_utf8_lossy(&run.stdout), 30);
    match &run.outcome {
        Outcome::Exited { code: 0 } => {}
        outcome => anyhow::bail!(
            "{label}: the guest did not finish the bench cleanly ({outcome:?}); its output:\n{}\n--- kernel console (last 30 lines; full log {}) ---\n{}",
            output(),
            cfg.console_log.display(),
            run.console_tail(30)
        ),
    }
    let file = dir.join("bench.json");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{label}: the guest wrote no {}; its output:\n{}", file.display(), output()))?;
    let results = parse_guest(&text).with_context(|| format!("{label}: reading {}", file.display()))?;
    step.finish(&format!("{} throughput and {} latency points", results.throughput.len(), results.latency.len()));
    Ok((results, run))
}

pub fn parse_guest(text: &str) -> anyhow::Result<GuestResults> {
    serde_json::from_str(text).context("the guest's bench.json does not match what lab expects (benchcases out of step with lab::bench?)")
}

/// Keyed by (the path's row in PATHS, size): the path, and its point in each boot (by boot index,
/// so that boot i of one path pairs with boot i of another).
type Points<'a, T> = BTreeMap<(usize, usize), (String, Vec<Option<&'a GuestPoint<T>>>)>;

/// Each path's point in each boot, in table order.
fn by_point<'a, T>(boots: &'a [GuestResults], points: impl Fn(&'a GuestResults) -> &'a [GuestPoint<T>]) -> Points<'a, T> {
    let mut map: Points<T> = BTreeMap::new();
    for (i, boot) in boots.iter().enumerate() {
        for point in points(boot) {
            let order = PATHS.iter().position(|p| *p == point.path).unwrap_or(PATHS.len());
            map.entry((order, point.size)).or_insert_with(|| (point.path.clone(), vec![None; boots.len()])).1[i] = Some(point);
        }
    }
    map
}

/// For each boot, the median of `value` over the point's runs in that boot.
fn boot_medians<T>(point: &[Option<&GuestPoint<T>>], value: impl Fn(&T) -> f64) -> Vec<Option<f64>> {
    point.iter().map(|&p| Stats::of(p?.runs.iter().map(&value)).map(|s| s.median)).collect()
}

/// Per-boot ratios `top[i] / bottom[i]`, skipping boots where either side has no figure.
fn paired_ratio(top: &[Option<f64>], bottom: &[Option<f64>]) -> Option<Stats> {
    Stats::of(top.iter().zip(bottom).filter_map(|(t, b)| Some((*t)? / (*b)?)))
}

fn errors<T>(points: &[Option<&GuestPoint<T>>]) -> Vec<String> {
    points.iter().enumerate().filter_map(|(i, &p)| p?.error.as_ref().map(|e| format!("boot {}: {e}", i + 1))).collect()
}

fn mb_per_s(r: &ThroughputRun) -> f64 {
    r.bytes as f64 / r.seconds / 1e6
}

fn one_way_p50(r: &LatencyRun) -> f64 {
    r.one_way_p50_us
}

/// Why a throughput run's figure cannot be trusted, if it cannot: the receiver's content check did
/// not find every message the sender wrote, or more or fewer bytes than were sent arrived.
fn unsound(run: &ThroughputRun, size: usize) -> Option<String> {
    let sent = run.messages * size as u64;
    (run.verified_messages != run.messages || run.bytes != sent).then(|| {
        format!(
            "{} messages ({sent} bytes) sent, {} bytes received, {} messages verified in order",
            run.messages, run.bytes, run.verified_messages
        )
    })
}

/// Takes the runs whose measurement is wrong out of the figures, into the point's error.
fn drop_unsound(boot: &mut GuestResults) {
    for point in &mut boot.throughput {
        let size = point.size;
        let mut bad = Vec::new();
        let mut index = 0;
        point.runs.retain(|run| {
            index += 1;
            let why = unsound(run, size);
            bad.extend(why.as_ref().map(|why| format!("measured run {index}: {why}")));
            why.is_none()
        });
        if !bad.is_empty() {
            let earlier = point.error.take().into_iter();
            point.error = Some(earlier.chain(bad).collect::<Vec<_>>().join("; "));
        }
    }
}

/// Turn a kernel's boots into its summary.
pub fn summarize(
    kernel: &str,
    release: &str,
    accel: Accel,
    cpus: u32,
    mut boots: Vec<GuestResults>,
    boot_seconds: Vec<f64>,
) -> anyhow::Result<KernelBench> {
    boots.iter_mut().for_each(drop_unsound);
    let settings = boots.first().context("no boots to summarise")?.settings.clone();
    let all = |points: &[Option<&GuestPoint<ThroughputRun>>], f: &dyn Fn(&ThroughputRun) -> f64| {
        Stats::of(points.iter().flatten().flat_map(|p| p.runs.iter().map(f)))
    };
    let tput = by_point(&boots, |b| &b.throughput);
    let tcp_tput = |size| tput.iter().find(|((_, s), (path, _))| *s == size && path == BASELINE).map(|(_, point)| point);
    let throughput = tput
        .iter()
        .map(|(&(_, size), (path, points))| ThroughputSummary {
            path: path.clone(),
            size,
            mb_per_s: all(points, &mb_per_s),
            messages_per_s: all(points, &|r| r.messages as f64 / r.seconds),
            switches_per_message: all(points, &|r| (r.voluntary_switches + r.involuntary_switches) as f64 / r.messages as f64),
            system_switches_per_message: all(points, &|r| r.system_switches as f64 / r.messages as f64),
            vs_tcp: tcp_tput(size).and_then(|(_, tcp)| paired_ratio(&boot_medians(points, mb_per_s), &boot_medians(tcp, mb_per_s))),
            errors: errors(points),
        })
        .collect();

    let all = |points: &[Option<&GuestPoint<LatencyRun>>], f: &dyn Fn(&LatencyRun) -> f64| {
        Stats::of(points.iter().flatten().flat_map(|p| p.runs.iter().map(f)))
    };
    let lat = by_point(&boots, |b| &b.latency);
    let tcp_lat = |size| lat.iter().find(|((_, s), (path, _))| *s == size && path == BASELINE).map(|(_, point)| point);
    let latency = lat
        .iter()
        .map(|(&(_, size), (path, points))| LatencySummary {
            path: path.clone(),
            size,
            one_way_p50_us: all(points, &one_way_p50),
            one_way_p99_us: all(points, &|r| r.one_way_p99_us),
            round_trip_p50_us: all(points, &|r| r.round_trip_p50_us),
            round_trip_p99_us: all(points, &|r| r.round_trip_p99_us),
            switches_per_request: all(points, &|r| (r.voluntary_switches + r.involuntary_switches) as f64 / r.samples as f64),
            system_switches_per_request: all(points, &|r| r.system_switches as f64 / r.samples as f64),
            vs_tcp: tcp_lat(size).and_then(|(_, tcp)| paired_ratio(&boot_medians(points, one_way_p50), &boot_medians(tcp, one_way_p50))),
            errors: errors(points),
        })
        .collect();

    Ok(KernelBench {
        kernel: kernel.to_string(),
        release: release.to_string(),
        accel,
        cpus,
        settings,
        boot_seconds,
        throughput,
        latency,
        boots,
    })
}

/// `other` over `base`, pairing boot i of each (they ran one after the other).
pub fn compare(base: &KernelBench, other: &KernelBench) -> Comparison {
    fn ratios<T>(
        base: &[GuestResults],
        other: &[GuestResults],
        points: fn(&GuestResults) -> &[GuestPoint<T>],
        value: fn(&T) -> f64,
    ) -> Vec<Ratio> {
        let theirs = by_point(other, points);
        by_point(base, points)
            .iter()
            .map(|(key, (path, ours))| Ratio {
                path: path.clone(),
                size: key.1,
                ratio: theirs.get(key).and_then(|(_, theirs)| paired_ratio(&boot_medians(theirs, value), &boot_medians(ours, value))),
            })
            .collect()
    }
    Comparison {
        base: base.kernel.clone(),
        other: other.kernel.clone(),
        throughput: ratios(&base.boots, &other.boots, |b| &b.throughput, mb_per_s),
        latency: ratios(&base.boots, &other.boots, |b| &b.latency, one_way_p50),
    }
}

/// Write each kernel's JSON and SVG (and the comparison's) into `dir`; returns the files written.
pub fn write(report: &BenchReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let mut put = |name: String, text: String| -> anyhow::Result<()> {
        let file = dir.join(name);
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        files.push(file);
        Ok(())
    };
    for bench in &report.kernels {
        put(format!("{}.json", bench.kernel), serde_json::to_string_pretty(bench)?)?;
        put(format!("{}.svg", bench.kernel), svg(&[bench]))?;
    }
    if let Some(cmp) = &report.comparison {
        let name = format!("{}-vs-{}", cmp.base, cmp.other);
        put(format!("{name}.json"), serde_json::to_string_pretty(cmp)?)?;
        put(format!("{name}.svg"), svg(&report.kernels.iter().collect::<Vec<_>>()))?;
    }
    Ok(files)
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Three significant figures or so, whatever the magnitude.
fn num(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// A ratio with the number of boots it rests on (`n3`), and `!` when a boot's run of the point
/// failed: a ratio over fewer boots than were made must say so.
fn ratio_cell(ratio: Option<Stats>, failed: bool) -> String {
    let mark = if failed { "!" } else { "" };
    match ratio {
        Some(r) if r.n > 1 => format!("{:.2}x {:.2}-{:.2} n{}{mark}", r.median, r.min, r.max, r.n),
        Some(r) => format!("{:.2}x n{}{mark}", r.median, r.n),
        None => format!("-{mark}"),
    }
}

fn accel_note(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "",
        Accel::Tcg => "; TCG emulates the CPU, so absolute figures are not real-machine figures: read the ratios",
    }
}

const CELL: usize = 21;

/// Rows of paths, columns of sizes; each cell is up to two lines.
fn grid(out: &mut String, sizes: &[usize], rows: &[(&str, Vec<[String; 2]>)]) {
    let _ = write!(out, "{:<10}", "path");
    for &size in sizes {
        let _ = write!(out, "{:>CELL$}", size_label(size));
    }
    out.push('\n');
    for (path, cells) in rows {
        for line in 0..2 {
            if line == 1 && cells.iter().all(|c| c[1].is_empty()) {
                continue;
            }
            let _ = write!(out, "{:<10}", if line == 0 { *path } else { "" });
            for cell in cells {
                let _ = write!(out, "{:>CELL$}", cell[line]);
            }
            out.push('\n');
        }
    }
}

fn kernel_section(out: &mut String, bench: &KernelBench) {
    let s = &bench.settings;
    let _ = writeln!(
        out,
        "{} ({}), guest on {} vCPU under {}{}",
        bench.kernel,
        bench.release,
        bench.cpus,
        bench.accel.as_str().to_uppercase(),
        accel_note(bench.accel)
    );
    let _ = writeln!(
        out,
        "{} guest boot(s); in each, every point ran {} warm-up (discarded) + {} measured runs, paths taking turns; {} ms per throughput run, {} ms per latency run",
        bench.boots.len(),
        s.warmup,
        s.repeats,
        s.point_ms,
        s.latency_ms
    );
    let spread = if bench.boots.len() > 1 { " (median, min-max over the boots)" } else { "" };
    let _ = writeln!(out, "\nThroughput, MB/s (median of all runs), and under it the ratio to plain TCP{spread}:");
    let sizes = &s.sizes;
    let cell = |path: &str, size: usize| bench.throughput.iter().find(|t| t.path == path && t.size == size);
    let rows: Vec<(&str, Vec<[String; 2]>)> = PATHS
        .iter()
        .map(|&path| {
            let cells = sizes
                .iter()
                .map(|&size| match cell(path, size) {
                    Some(t) => [
                        t.mb_per_s.map_or_else(|| "error".into(), |m| num(m.median)),
                        if path == BASELINE { String::new() } else { ratio_cell(t.vs_tcp, !t.errors.is_empty()) },
                    ],
                    None => ["-".into(), String::new()],
                })
                .collect();
            (path, cells)
        })
        .collect();
    grid(out, sizes, &rows);
    let failed: Vec<String> = bench
        .throughput
        .iter()
        .filter(|t| !t.errors.is_empty())
        .map(|t| format!("  {} {}: {}", t.path, size_label(t.size), t.errors.join("; ")))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "nK = the ratio rests on K boots; ! = a boot's run of the point failed and is left out:\n{}", failed.join("\n"));
    }

    let _ = writeln!(out, "\nContext switches per message (median), this process / the whole guest:");
    let rows: Vec<(&str, Vec<[String; 2]>)> = PATHS
        .iter()
        .map(|&path| {
            let cells = sizes
                .iter()
                .map(|&size| {
                    let text = cell(path, size)
                        .and_then(|t| {
                            Some(format!("{} / {}", num(t.switches_per_message?.median), num(t.system_switches_per_message?.median)))
                        })
                        .unwrap_or_else(|| "-".into());
                    [text, String::new()]
                })
                .collect();
            (path, cells)
        })
        .collect();
    grid(out, sizes, &rows);

    for &size in &s.latency_sizes {
        let _ = writeln!(
            out,
            "\nLatency of a {} request (µs, median over runs of each run's percentile): request over the path, reply over AF_UNIX{}",
            size_label(size),
            if bench.boots.len() > 1 { "; ratio: median, min-max over the boots" } else { "" }
        );
        let _ = writeln!(
            out,
            "{:<10}{:>10}{:>10}{:>12}{:>10}{:>20}{:>14}",
            "path", "1-way p50", "p99", "r-trip p50", "p99", "1-way p50 vs tcp", "switches/req"
        );
        for &path in PATHS {
            let Some(l) = bench.latency.iter().find(|l| l.path == path && l.size == size) else { continue };
            let med = |s: Option<Stats>| s.map_or_else(|| "error".into(), |s| num(s.median));
            let _ = writeln!(
                out,
                "{:<10}{:>10}{:>10}{:>12}{:>10}{:>20}{:>14}",
                path,
                med(l.one_way_p50_us),
                med(l.one_way_p99_us),
                med(l.round_trip_p50_us),
                med(l.round_trip_p99_us),
                if path == BASELINE { String::new() } else { ratio_cell(l.vs_tcp, false) },
                l.switches_per_request
                    .zip(l.system_switches_per_request)
                    .map_or_else(|| "-".into(), |(p, s)| format!("{} / {}", num(p.median), num(s.median))),
            );
        }
    }

    let failures: Vec<String> = bench
        .throughput
        .iter()
        .flat_map(|t| t.errors.iter().map(move |e| format!("throughput {} {}: {e}", t.path, size_label(t.size))))
        .chain(bench.latency.iter().flat_map(|l| l.errors.iter().map(move |e| format!("latency {} {}: {e}", l.path, size_label(l.size)))))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nPoints that failed (their runs before the failure still count):");
        for f in failures {
            let _ = writeln!(out, "  {f}");
        }
    }
}

/// The terminal report: per kernel, throughput (with the ratio to TCP), the kernel's context
/// switches, latency; then the comparison between kernels; then where the files are.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    for (i, bench) in report.kernels.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        kernel_section(&mut out, bench);
    }
    if let Some(cmp) = &report.comparison {
        let _ = writeln!(
            out,
            "\n{} / {}, throughput (MB/s ratio; above 1, {} is faster), boot i of each paired:",
            cmp.other, cmp.base, cmp.other
        );
        let sizes: Vec<usize> = report.kernels[0].settings.sizes.clone();
        let rows: Vec<(&str, Vec<[String; 2]>)> = PATHS
            .iter()
            .map(|&path| {
                let cells = sizes
                    .iter()
                    .map(|&size| {
                        [ratio_cell(cmp.throughput.iter().find(|r| r.path == path && r.size == size).and_then(|r| r.ratio), false), String::new()]
                    })
                    .collect();
                (path, cells)
            })
            .collect();
        grid(&mut out, &sizes, &rows);
        let _ = writeln!(out, "\n{} / {}, one-way latency p50 (above 1, {} is slower):", cmp.other, cmp.base, cmp.other);
        for r in &cmp.latency {
            let _ = writeln!(out, "{:<10}{:>8}{:>CELL$}", r.path, size_label(r.size), ratio_cell(r.ratio, false));
        }
    }
    let _ = writeln!(out, "\nwall time: {:.0}s", report.wall_seconds);
    for file in &report.files {
        let _ = writeln!(out, "results: {}", file.display());
    }
    out
}

/// MB/s against message size, both on log scales, a line per path with min-max whiskers. With two
/// kernels, the second one's lines are dashed.
pub fn svg(benches: &[&KernelBench]) -> String {
    const COLOURS: [&str; 6] = ["#000000", "#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
    const _: () = assert!(COLOURS.len() == PATHS.len());
    let (w, h, left, right, top, bottom) = (760.0, 480.0, 70.0, 150.0, 60.0, 50.0);
    let points: Vec<&ThroughputSummary> = benches.iter().flat_map(|b| &b.throughput).filter(|t| t.mb_per_s.is_some()).collect();
    let sizes: Vec<usize> = {
        let mut s: Vec<usize> = points.iter().map(|t| t.size).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let (lo, hi) = points.iter().filter_map(|t| t.mb_per_s).fold((f64::MAX, f64::MIN), |(lo, hi), s| (lo.min(s.min), hi.max(s.max)));
    let (ylo, yhi) = if points.is_empty() { (0.0, 1.0) } else { (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0)) };
    let (xlo, xhi) = match (sizes.first(), sizes.last()) {
        (Some(&a), Some(&b)) if b > a => ((a as f64).log2(), (b as f64).log2()),
        (Some(&a), _) => ((a as f64).log2() - 1.0, (a as f64).log2() + 1.0),
        _ => (0.0, 1.0),
    };
    let x = |size: usize| left + ((size as f64).log2() - xlo) / (xhi - xlo) * (w - left - right);
    let y = |v: f64| top + (yhi - v.max(1e-9).log10()) / (yhi - ylo) * (h - top - bottom);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let title = benches.iter().map(|b| format!("{} ({})", b.kernel, b.release)).collect::<Vec<_>>().join(" vs ");
    let _ = writeln!(s, r#"<text x="{left}" y="22" font-size="15">sockmap redirect throughput: {}</text>"#, xml(&title));
    let subtitle = match benches.first() {
        Some(b) if b.accel == Accel::Tcg => format!("TCG (emulated CPU), {} vCPU: compare the lines, not the absolute MB/s", b.cpus),
        Some(b) => format!("KVM, {} vCPU", b.cpus),
        None => String::new(),
    };
    let _ = writeln!(s, r##"<text x="{left}" y="40" fill="#555">{subtitle}</text>"##);
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let _ = writeln!(s, r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#999"/>"##, x1 - x0, y1 - y0);
    for &size in &sizes {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{y0}" x2="{0:.1}" y2="{y1}" stroke="#eee"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"##,
            x(size),
            y1 + 16.0,
            size_label(size)
        );
    }
    for decade in ylo as i32..=yhi as i32 {
        let v = 10f64.powi(decade);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{0:.1}" x2="{x1}" y2="{0:.1}" stroke="#eee"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            y(v),
            x0 - 6.0,
            y(v) + 4.0,
            if decade < 0 { format!("{v}") } else { format!("{v:.0}") }
        );
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">message size (log scale)</text>"#, (x0 + x1) / 2.0, h - 12.0);
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">MB/s, log scale (median; whiskers: min-max of all runs)</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );

    // The legend names each path's colour once; with two kernels, the line style names the kernel.
    let legend = |s: &mut String, row: usize, colour: &str, dash: &str, label: &str| {
        let ly = top + 10.0 + 18.0 * row as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{3}" y="{4:.1}">{5}</text>"#,
            x1 + 10.0,
            ly,
            x1 + 34.0,
            x1 + 40.0,
            ly + 4.0,
            xml(label)
        );
    };
    for (i, &path) in PATHS.iter().enumerate() {
        legend(&mut s, i, COLOURS[i], "", path);
    }
    for (k, bench) in benches.iter().enumerate() {
        let dash = if k == 0 { "" } else { r#" stroke-dasharray="6 4""# };
        if benches.len() > 1 {
            legend(&mut s, PATHS.len() + 1 + k, "#000000", dash, &bench.kernel);
        }
        for (&path, colour) in PATHS.iter().zip(COLOURS) {
            let series: Vec<(usize, Stats)> =
                bench.throughput.iter().filter(|t| t.path == path).filter_map(|t| Some((t.size, t.mb_per_s?))).collect();
            if series.is_empty() {
                continue;
            }
            let line: Vec<String> = series.iter().map(|(size, st)| format!("{:.1},{:.1}", x(*size), y(st.median))).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"><title>{} {path}</title></polyline>"#,
                line.join(" "),
                xml(&bench.kernel)
            );
            for (size, st) in &series {
                let _ = writeln!(
                    s,
                    r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="{colour}"/><circle cx="{0:.1}" cy="{3:.1}" r="3" fill="{colour}"><title>{4} {path} {5}: {6} MB/s ({7}-{8})</title></circle>"#,
                    x(*size),
                    y(st.min),
                    y(st.max),
                    y(st.median),
                    xml(&bench.kernel),
                    size_label(*size),
                    num(st.median),
                    num(st.min),
                    num(st.max)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle_and_the_extremes() {
        let s = Stats::of([3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert_eq!(Stats::of([f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_boots_and_skip_missing_ones() {
        let r = paired_ratio(&[Some(2.0), None, Some(3.0)], &[Some(4.0), Some(1.0), Some(3.0)]).unwrap();
        assert_eq!((r.median, r.min, r.max, r.n), (0.75, 0.5, 1.0, 2));
    }
}
