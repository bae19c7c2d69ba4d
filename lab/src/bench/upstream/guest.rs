//! One boot of the kernel's `bench sockmap`: every mode in turn, each between markers, in a guest
//! configured like `lab bench`'s (one vCPU under TCG).

use std::path::Path;
use std::time::Duration;

use super::parse::{self, ModeRun, MARK};
use super::Settings;
use crate::cache::{Cache, Entry};
use crate::progress::Step;
use crate::vm::{self, GuestRun};

/// The bench's own arguments for a mode: `bench_sockmap.c`'s `validate()` requires two consumers,
/// one producer and `-a` (threads pinned: on one vCPU all of them to CPU 0).
pub fn bench_args(mode: &str, settings: &Settings) -> Vec<String> {
    ["sockmap", "-c", "2", "-p", "1", "-a"].map(String::from).into_iter()
        .chain(["-w".into(), settings.warmup.to_string(), "-d".into(), settings.duration.to_string(), format!("--{mode}")])
        .collect()
}

/// Longest a mode may run: its warm-up and duration, plus setup; past it `timeout` ends it.
fn mode_limit(settings: &Settings) -> u64 {
    u64::from(settings.warmup + settings.duration) + 60
}

/// The guest's script: each mode between markers, the bench run in place (the host's folder is
/// read-only in the guest; the bench writes only its `tmpfile()`).
pub fn script(bench_dir: &Path, modes: &[String], settings: &Settings) -> String {
    let dir = shell_words::quote(&bench_dir.display().to_string()).into_owned();
    let mut script = format!("cd {dir} || exit 3; ");
    for mode in modes {
        let mut cmd = vec!["timeout".to_string(), "-k".into(), "5".into(), mode_limit(settings).to_string(), "./bench".into()];
        cmd.extend(bench_args(mode, settings));
        script.push_str(&format!("echo \"{MARK} begin {mode}\"; {} 2>&1; c=$?; echo; echo \"{MARK} end {mode} $c\"; ", shell_words::join(&cmd)));
    }
    script.push_str("exit 0");
    script
}

/// A VM for the bench: `lab bench`'s (one vCPU under TCG), with a timeout covering every mode.
pub fn vm_config(cache: &Cache, name: &str, kimg: &Path, modes: usize, settings: &Settings) -> anyhow::Result<vm::VmConfig> {
    let mut cfg = crate::bench::vm_config(cache, &format!("upstream-{name}"), kimg)?;
    cfg.timeout = Duration::from_secs(300 + modes as u64 * mode_limit(settings));
    Ok(cfg)
}

/// One boot: every mode, read back. The raw output goes to `dir/output.log`. A guest that did not
/// exit cleanly still gives the modes it finished; the ones after read "never started".
pub fn boot_once(label: &str, entry: &Entry, bench_dir: &Path, modes: &[String], settings: &Settings, dir: &Path, cfg: vm::VmConfig) -> anyhow::Result<(Vec<ModeRun>, GuestRun)> {
    let command = vec!["sh".to_string(), "-c".into(), script(bench_dir, modes, settings)];
    let step = Step::start(&format!("{label} ({})", cfg.accel.as_str()));
    let begin = format!("{MARK} begin ");
    let show_mode = |line: &str| {
        if let Some(mode) = line.trim().strip_prefix(&begin) {
            step.message(mode);
        }
    };
    let run = vm::run(&entry.kernel_image(), &command, &cfg, vm::by_line(show_mode))?;
    let output = String::from_utf8_lossy(&run.stdout).into_owned();
    std::fs::write(dir.join("output.log"), &output)?;
    let mut runs: Vec<ModeRun> = modes.iter().map(|m| parse::mode_run(&output, m)).collect();
    if !matches!(run.outcome, vm::Outcome::Exited { .. }) {
        let why = format!("the guest {} (console: {})", run.outcome.describe(), cfg.console_log.display());
        for r in runs.iter_mut().filter(|r| r.exit.is_none()) {
            r.error = Some(format!("{why}; {}", r.error.as_deref().unwrap_or("")));
        }
    }
    step.finish(&format!("{} of {} modes gave figures", runs.iter().filter(|r| r.error.is_none()).count(), runs.len()));
    Ok((runs, run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_runs_between_markers_with_the_options_the_benchmark_requires() {
        let settings = Settings { warmup: 1, duration: 5, runs: 3 };
        let script = script(Path::new("/c/bench out"), &["rx-verdict-ingress".into(), "tx-pass".into()], &settings);
        assert!(script.starts_with("cd '/c/bench out' || exit 3; "), "{script}");
        assert!(script.contains(&format!("echo \"{MARK} begin rx-verdict-ingress\"; timeout -k 5 66 ./bench sockmap -c 2 -p 1 -a -w 1 -d 5 --rx-verdict-ingress 2>&1; c=$?; echo; echo \"{MARK} end rx-verdict-ingress $c\"; ")), "{script}");
        assert!(script.contains("--tx-pass") && script.ends_with("exit 0"), "{script}");
    }
}
