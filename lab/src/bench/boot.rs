//! One bench boot: `benchcases` built on the host, run in a guest, its `bench.json` read back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::GuestResults;
use crate::cache::{Cache, Entry};
use crate::progress::Step;
use crate::vm::{self, Accel, GuestRun, Outcome, VmConfig};
use crate::{accel, process};

/// A whole boot's bench is a couple of minutes under TCG; this only catches a guest that hangs.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

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
    let show_point = |line: &str| {
        if let Some(point) = line.trim().strip_prefix("benchcases: ") {
            step.message(point);
        }
    };
    let run = vm::run(&entry.kernel_image(), &command, &cfg, vm::by_line(show_point))?;
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

