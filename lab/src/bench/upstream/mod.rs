//! `lab bench --upstream`: the kernel tree's own `bench sockmap` (selftests/bpf/benchs, since
//! 6.16) as a peer of `lab bench`. Its `bench` is built from the kernel's source ([`build`]), each
//! of its modes runs for a few seconds in a guest ([`guest`]), its per-second lines and summary are
//! read back ([`parse`]) and summed up per mode here; with a second kernel, boots alternate as in
//! `lab bench --vs` and every mode gets the ratio between the kernels, beside `lab bench`'s own
//! ratio for the same path when a `lab bench --vs` of the pair is at hand.
//!
//! What the bench measures (read in `bench_sockmap.c`): one producer thread `sendfile()`s a 128 KiB
//! file over and over into a non-blocking socket; a sockmap program redirects it (or passes it);
//! one consumer reads the far socket and checks every byte. It reports per second the producer's
//! MB/s, the BPF program's MB/s (its summary averages this one) and the consumer's MB/s: one
//! message size, large; so it compares with `lab bench`'s largest messages.

pub mod build;
pub mod guest;
pub mod parse;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Stats;
use crate::build::BuildOptions;
use crate::cache::Cache;
use crate::definition::KernelsDir;
use crate::vm::Accel;
use crate::{runs, suite};
pub use build::{BenchBuild, BuiltBench};
pub use parse::{Iteration, ModeRun, Summary};

/// How long each mode runs, and how many boots per kernel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// `-w`: seconds measured but left out (of the bench's summary and of the lab's figures).
    pub warmup: u32,
    /// `-d`: seconds measured.
    pub duration: u32,
    /// Guest boots per kernel; every boot runs every mode.
    pub runs: u32,
}

/// Which `lab bench` path a mode is: the redirect it makes (read in `bench_sockmap.c`'s comment
/// and `setup_*_sockmap()`), or none for the modes that redirect nothing.
pub fn our_path(mode: &str) -> Option<&'static str> {
    match mode {
        // send(c1) -> p1's stream verdict -> c2's receive queue
        "rx-verdict-ingress" => Some("rx_to_rx"),
        // send(c1) -> p1's stream verdict -> p2's send queue -> c2
        "rx-verdict-egress" => Some("rx_to_tx"),
        // send(p2) -> p2's sk_msg verdict -> c2's receive queue
        "tx-verdict-ingress" => Some("tx_to_rx"),
        // send(p1) -> p1's sk_msg verdict -> p2's send queue -> c2
        "tx-verdict-egress" => Some("tx_to_tx"),
        "rx-normal" | "tx-normal" => Some("tcp"),
        _ => None,
    }
}

/// One mode on one kernel, over every boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeSummary {
    pub mode: String,
    pub path: Option<String>,
    /// Over every measured second of every boot (10^6 bytes per second).
    pub rcv_mb_per_s: Option<Stats>,
    pub bpf_mb_per_s: Option<Stats>,
    pub send_mb_per_s: Option<Stats>,
    /// The bench's own summary figure (mean BPF MB/s of a boot), over the boots.
    pub summary_mb_per_s: Option<Stats>,
    /// Bytes per `sendfile()` call and per `read()` call (medians of per-second ratios).
    pub bytes_per_send: Option<Stats>,
    pub bytes_per_read: Option<Stats>,
    /// `boot N: why`, for every boot whose run of the mode gave no figure.
    pub errors: Vec<String>,
}

/// One kernel's upstream bench: `<kernel>.json` in the run folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelUpstream {
    pub kernel: String,
    pub release: String,
    pub accel: Accel,
    pub cpus: u32,
    pub settings: Settings,
    pub build: BenchBuild,
    pub boot_seconds: Vec<f64>,
    pub modes: Vec<ModeSummary>,
    /// Every boot's runs, as the guest printed them.
    pub boots: Vec<Vec<ModeRun>>,
}

/// Which way a ratio between two kernels points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Faster,
    Slower,
    /// Within 3 % of 1, or boots on both sides of 1.
    Even,
}

impl Direction {
    /// Faster (slower) only when every boot's ratio is above (below) 1 and the median is at least
    /// 3 % off: with three boots a side the spread decides, not one lucky pair.
    pub fn of(ratio: &Stats) -> Direction {
        if ratio.min > 1.0 && ratio.median >= 1.03 {
            Direction::Faster
        } else if ratio.max < 1.0 && ratio.median <= 0.97 {
            Direction::Slower
        } else {
            Direction::Even
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Direction::Faster => "faster",
            Direction::Slower => "slower",
            Direction::Even => "even",
        }
    }
}

/// `lab bench`'s ratio for the same path, from a `lab bench --vs` of the same pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OursRatio {
    pub size: usize,
    pub ratio: Stats,
    pub direction: Direction,
}

/// One mode, `other` over `base`, one ratio of medians per pair of boots that ran side by side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeRatio {
    pub mode: String,
    pub path: Option<String>,
    /// Consumer MB/s, other / base.
    pub rcv: Option<Stats>,
    /// The bench's summary figure (BPF MB/s), other / base.
    pub summary: Option<Stats>,
    pub direction: Option<Direction>,
    pub ours: Option<OursRatio>,
}

impl ModeRatio {
    /// Whether the two tools point the same way; None when either has no figure.
    pub fn agrees(&self) -> Option<bool> {
        Some(self.direction? == self.ours.as_ref()?.direction)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamComparison {
    pub base: String,
    pub other: String,
    /// The `lab bench` run folder the `ours` ratios come from, if one was found.
    pub ours_from: Option<PathBuf>,
    pub modes: Vec<ModeRatio>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamReport {
    pub kernels: Vec<KernelUpstream>,
    pub comparison: Option<UpstreamComparison>,
    pub wall_seconds: f64,
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

/// What the engine tells its caller as it goes (the command renders them).
#[derive(Debug, Clone)]
pub enum Event {
    Built { kernel: String, dir: PathBuf, cached: bool, seconds: f64, build: BenchBuild },
    ModeDone { kernel: String, boot: u32, run: ModeRun },
}

/// What `lab bench --upstream` was asked for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub kernel: &'a str,
    pub vs: Option<&'a str>,
    pub settings: Settings,
    /// A `lab bench --vs` run folder of the same pair (default: `results/bench/<k>-vs-<k2>/latest`).
    pub ours: Option<&'a Path>,
}

/// Where `lab bench --upstream` runs go: `results/bench-upstream/<kernel>[-vs-<k2>]/`.
pub fn results_group(project: &Path, names: &[&str]) -> PathBuf {
    project.join("results").join("bench-upstream").join(names.join("-vs-"))
}

/// Build each kernel and the tree's bench, boot each kernel `runs` times (alternating), run every
/// mode, and sum up; the run folder is returned unpublished, for the caller to write into.
pub fn run(kernels: &KernelsDir, cache: &Cache, req: &Request<'_>, on_event: &mut dyn FnMut(Event)) -> anyhow::Result<(UpstreamReport, runs::Run)> {
    anyhow::ensure!(req.settings.runs >= 1 && req.settings.duration >= 1 && req.settings.warmup >= 1, "--runs, --duration and --warmup must be at least 1");
    let started = Instant::now();
    let project = kernels.dir.parent().context("the kernels folder has no parent")?.canonicalize()?;
    let mut targets = Vec::new();
    for name in std::iter::once(req.kernel).chain(req.vs) {
        let def = kernels.load(name)?;
        let built = crate::build::build(&def, kernels, cache, &BuildOptions::default())?;
        let t0 = Instant::now();
        let bench = build::build(&def, &built.entry, cache)?;
        on_event(Event::Built { kernel: def.name.clone(), dir: bench.dir.clone(), cached: bench.cached, seconds: t0.elapsed().as_secs_f64(), build: bench.build.clone() });
        targets.push((def.name, built.entry, bench));
    }
    let names: Vec<&str> = targets.iter().map(|(n, _, _)| n.as_str()).collect();
    let session = runs::start(&results_group(&project, &names))?;
    let mut boots: Vec<Vec<(Vec<ModeRun>, f64)>> = targets.iter().map(|_| Vec::new()).collect();
    let mut guests = Vec::new();
    for boot in 1..=req.settings.runs {
        for ((name, entry, bench), done) in targets.iter().zip(&mut boots) {
            let dir = session.dir.join("raw").join(name).join(format!("boot-{boot}"));
            suite::fresh_dir(&dir)?;
            let cfg = guest::vm_config(cache, name, &entry.kernel_image(), bench.build.modes.len(), &req.settings)?;
            if boot == 1 {
                guests.push((cfg.accel, cfg.cpus));
            }
            let label = format!("{name}: upstream bench boot {boot}/{}", req.settings.runs);
            let (runs, guest) = guest::boot_once(&label, entry, &bench.dir, &bench.build.modes, &req.settings, &dir, cfg)?;
            for run in &runs {
                on_event(Event::ModeDone { kernel: name.clone(), boot, run: run.clone() });
            }
            done.push((runs, guest.wall.as_secs_f64()));
        }
    }
    let kernels_done: Vec<KernelUpstream> = targets
        .iter()
        .zip(boots)
        .zip(guests)
        .map(|(((name, entry, bench), done), (accel, cpus))| {
            let (boots, seconds): (Vec<_>, Vec<_>) = done.into_iter().unzip();
            summarize(name, &entry.manifest.release, accel, cpus, req.settings, &bench.build, boots, seconds)
        })
        .collect();
    let comparison = match kernels_done.as_slice() {
        [base, other] => {
            let ours_dir = req.ours.map(Path::to_path_buf).unwrap_or_else(|| project.join("results/bench").join(names.join("-vs-")).join(runs::LATEST));
            let ours = read_ours(&ours_dir, &base.kernel, &other.kernel)?;
            Some(compare(base, other, ours.as_ref().map(|o| (ours_dir.as_path(), o))))
        }
        _ => None,
    };
    let report = UpstreamReport { kernels: kernels_done, comparison, wall_seconds: started.elapsed().as_secs_f64(), files: vec![] };
    Ok((report, session))
}

/// Every boot's runs of each mode summed up.
#[allow(clippy::too_many_arguments)]
pub fn summarize(kernel: &str, release: &str, accel: Accel, cpus: u32, settings: Settings, build: &BenchBuild, boots: Vec<Vec<ModeRun>>, boot_seconds: Vec<f64>) -> KernelUpstream {
    let modes = build.modes.iter().map(|mode| summarize_mode(mode, &boots, settings.warmup)).collect();
    KernelUpstream { kernel: kernel.into(), release: release.into(), accel, cpus, settings, build: build.clone(), boot_seconds, modes, boots }
}

/// The mode's run in each boot (None where the boot lacks it).
fn runs_of<'a>(boots: &'a [Vec<ModeRun>], mode: &str) -> Vec<Option<&'a ModeRun>> {
    boots.iter().map(|b| b.iter().find(|r| r.mode == mode)).collect()
}

/// A run's measured seconds, if it gave figures (a run with an error gives none).
fn sound(run: Option<&ModeRun>, warmup: u32) -> Vec<Iteration> {
    run.filter(|r| r.error.is_none()).map(|r| r.measured(warmup).copied().collect()).unwrap_or_default()
}

fn summarize_mode(mode: &str, boots: &[Vec<ModeRun>], warmup: u32) -> ModeSummary {
    let runs = runs_of(boots, mode);
    let seconds: Vec<Iteration> = runs.iter().flat_map(|r| sound(*r, warmup)).collect();
    let over = |f: fn(&Iteration) -> f64| Stats::of(seconds.iter().map(f));
    let per_call = |bytes: fn(&Iteration) -> f64, calls: fn(&Iteration) -> f64| Stats::of(seconds.iter().filter(|i| calls(i) > 0.0).map(|i| bytes(i) * 1e6 / calls(i)));
    let errors = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            None => Some(format!("boot {}: not run", i + 1)),
            Some(r) => r.error.as_ref().map(|e| format!("boot {}: {e}", i + 1)),
        })
        .collect();
    ModeSummary {
        mode: mode.into(),
        path: our_path(mode).map(String::from),
        rcv_mb_per_s: over(|i| i.rcv_mb_per_s),
        bpf_mb_per_s: over(|i| i.bpf_mb_per_s),
        send_mb_per_s: over(|i| i.send_mb_per_s),
        summary_mb_per_s: Stats::of(runs.iter().filter_map(|r| r.filter(|r| r.error.is_none())?.summary.map(|s| s.bpf_mb_per_s))),
        bytes_per_send: per_call(|i| i.send_mb_per_s, |i| i.send_calls_per_s),
        bytes_per_read: per_call(|i| i.rcv_mb_per_s, |i| i.read_calls_per_s),
        errors,
    }
}

/// One boot's figures for a mode: the median consumer MB/s of its measured seconds, and the
/// bench's own summary (None where the run gave no figure).
#[derive(Debug, Clone, Copy)]
struct BootFigure {
    rcv: Option<f64>,
    summary: Option<f64>,
}

fn boot_figures(k: &KernelUpstream, mode: &str) -> Vec<BootFigure> {
    runs_of(&k.boots, mode)
        .into_iter()
        .map(|r| BootFigure {
            rcv: Stats::of(sound(r, k.settings.warmup).iter().map(|i| i.rcv_mb_per_s)).map(|s| s.median),
            summary: r.filter(|r| r.error.is_none()).and_then(|r| r.summary).map(|s| s.bpf_mb_per_s),
        })
        .collect()
}

/// `other` over `base`, mode by mode, boot i with boot i; beside `lab bench`'s ratio at its
/// largest message size for the same path, when `ours` (a comparison of the same pair) is given.
pub fn compare(base: &KernelUpstream, other: &KernelUpstream, ours: Option<(&Path, &super::Comparison)>) -> UpstreamComparison {
    let modes = base
        .build
        .modes
        .iter()
        .map(|mode| {
            let (b, o) = (boot_figures(base, mode), boot_figures(other, mode));
            let ratio = |pick: fn(&BootFigure) -> Option<f64>| Stats::of(b.iter().zip(&o).filter_map(|(b, o)| Some(pick(o)? / pick(b)?)));
            let rcv = ratio(|f| f.rcv);
            let path = our_path(mode);
            ModeRatio {
                mode: mode.clone(),
                path: path.map(String::from),
                summary: ratio(|f| f.summary),
                direction: rcv.as_ref().map(Direction::of),
                rcv,
                ours: ours.and_then(|(_, cmp)| ours_ratio(cmp, path?)),
            }
        })
        .collect();
    UpstreamComparison { base: base.kernel.clone(), other: other.kernel.clone(), ours_from: ours.map(|(dir, _)| dir.to_path_buf()), modes }
}

/// `lab bench`'s ratio for a path at its largest message size.
fn ours_ratio(cmp: &super::Comparison, path: &str) -> Option<OursRatio> {
    let r = cmp.throughput.iter().filter(|r| r.path == path && r.ratio.is_some()).max_by_key(|r| r.size)?;
    let ratio = r.ratio?;
    Some(OursRatio { size: r.size, ratio, direction: Direction::of(&ratio) })
}

/// The comparison of a `lab bench --vs` run folder, if it holds one of exactly this pair.
pub fn read_ours(dir: &Path, base: &str, other: &str) -> anyhow::Result<Option<super::Comparison>> {
    let file = dir.join(format!("{base}-vs-{other}.json"));
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let cmp: super::Comparison = serde_json::from_str(&text).with_context(|| format!("{}: not a `lab bench --vs` comparison", file.display()))?;
    Ok((cmp.base == base && cmp.other == other).then_some(cmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: &str, rcv: &[f64], error: Option<&str>) -> ModeRun {
        let iterations = rcv.iter().enumerate().map(|(i, &r)| Iteration { iter: i as u32, send_mb_per_s: r, send_calls_per_s: 10.0, bpf_mb_per_s: r, rcv_mb_per_s: r, read_calls_per_s: 20.0 }).collect();
        let summary = error.is_none().then(|| Summary { total_mb: 1, bpf_mb_per_s: rcv.iter().skip(1).sum::<f64>() / (rcv.len() - 1) as f64 });
        ModeRun { mode: mode.into(), exit: Some(if error.is_some() { 1 } else { 0 }), iterations, summary, error: error.map(String::from) }
    }

    fn kernel(name: &str, boots: Vec<Vec<ModeRun>>) -> KernelUpstream {
        let build = BenchBuild { key: "k".into(), source: "s".into(), clang: "c".into(), btf_from: name.into(), build_seconds: 1.0, harness_changes: vec![], modes: vec!["rx-verdict-ingress".into(), "rx-normal".into()] };
        summarize(name, "7.3.4", Accel::Tcg, 1, Settings { warmup: 1, duration: 2, runs: boots.len() as u32 }, &build, boots, vec![1.0])
    }

    #[test]
    fn the_warm_up_and_failed_runs_give_no_figure_and_boots_pair_up() {
        let base = kernel("a", vec![vec![run("rx-verdict-ingress", &[100.0, 10.0, 12.0], None), run("rx-normal", &[], Some("unknown sockmap bench mode"))]; 2]);
        let other = kernel("b", vec![vec![run("rx-verdict-ingress", &[1.0, 50.0, 60.0], None), run("rx-normal", &[], Some("unknown sockmap bench mode"))]; 2]);
        let m = &base.modes[0];
        assert_eq!((m.rcv_mb_per_s.unwrap().median, m.rcv_mb_per_s.unwrap().n), (11.0, 4));
        assert_eq!(m.bytes_per_send.unwrap().min, 1e6);
        assert_eq!(m.path.as_deref(), Some("rx_to_rx"));
        assert!(m.errors.is_empty());
        let normal = &base.modes[1];
        assert_eq!((normal.rcv_mb_per_s, normal.errors.len()), (None, 2));
        assert_eq!(normal.errors[0], "boot 1: unknown sockmap bench mode");
        let ours = crate::bench::Comparison {
            base: "a".into(),
            other: "b".into(),
            throughput: vec![
                crate::bench::Ratio { path: "rx_to_rx".into(), size: 16, ratio: Stats::of([0.5]) },
                crate::bench::Ratio { path: "rx_to_rx".into(), size: 65536, ratio: Stats::of([6.9, 7.0, 7.1]) },
            ],
            latency: vec![],
        };
        let cmp = compare(&base, &other, Some((Path::new("/r"), &ours)));
        let r = &cmp.modes[0];
        assert_eq!((r.rcv.unwrap().median, r.direction, r.summary.unwrap().median), (5.0, Some(Direction::Faster), 5.0));
        let o = r.ours.as_ref().unwrap();
        assert_eq!((o.size, o.direction, r.agrees()), (65536, Direction::Faster, Some(true)));
        assert_eq!((cmp.modes[1].rcv, cmp.modes[1].agrees()), (None, None));
    }

    #[test]
    fn a_direction_needs_every_boot_on_its_side() {
        let d = |v: &[f64]| Direction::of(&Stats::of(v.iter().copied()).unwrap());
        assert_eq!(d(&[1.1, 1.2, 1.3]), Direction::Faster);
        assert_eq!(d(&[0.8, 0.9, 0.95]), Direction::Slower);
        assert_eq!(d(&[0.79, 0.94, 1.01]), Direction::Even);
        assert_eq!(d(&[1.01, 1.02, 1.02]), Direction::Even);
        assert_eq!(our_path("tx-verdict-ingress"), Some("tx_to_rx"));
        assert_eq!(our_path("tx-pass"), None);
    }
}
