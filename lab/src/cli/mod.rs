//! The subcommands' handlers, one module each: each takes its parsed arguments, drives the stages
//! below it, and prints or writes what `crate::render` makes of their results. `main.rs` only
//! parses the command line and calls one of them.

pub mod accel;
pub mod bench;
pub mod bisect;
pub mod build;
pub mod clean;
pub mod kernels;
pub mod list;
pub mod matrix;
pub mod mutants;
pub mod run;
pub mod selftests;
pub mod test;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::cache::Cache;
use crate::definition::KernelsDir;
use crate::matrix::Runner;
use crate::render;
use crate::suite::SuiteRun;
use crate::vm::{GuestRun, Outcome, VmConfig};

/// Exit codes for guest trouble, distinct from the lab's own errors (2) so scripts can tell them apart.
pub const EXIT_LAB_ERROR: u8 = 2;
pub const EXIT_PANIC: u8 = 121;
pub const EXIT_OOPS: u8 = 122;
pub const EXIT_VM_FAILED: u8 = 123;
pub const EXIT_HUNG: u8 = 124;

/// How the engines get a kernel's VM configuration: its name and image in, KVM or TCG decided.
pub type VmConfigFn<'a> = dyn Fn(&str, &Path) -> anyhow::Result<VmConfig> + Sync + 'a;

/// What every subcommand works with: the definitions and the kernel cache.
pub struct Context {
    pub kernels: KernelsDir,
    pub cache: Cache,
}

impl Context {
    pub fn open() -> anyhow::Result<Context> {
        Ok(Context { kernels: KernelsDir::locate(), cache: Cache::open_default()? })
    }

    /// The project the definitions belong to: where the suite is built and results go.
    pub fn project(&self) -> anyhow::Result<PathBuf> {
        Ok(self.kernels.dir.parent().context("the kernels folder has no parent")?.canonicalize()?)
    }

    /// Runs the suite on many kernels (matrix rows, mutants and their controls), publishing each
    /// kernel's run as `publish_suite_run` does for `lab test`.
    pub fn runner<'a>(&'a self, exes: &'a [PathBuf], project: &'a Path, vm_config: &'a VmConfigFn<'a>, retry_boot: bool) -> Runner<'a> {
        Runner { kernels: &self.kernels, cache: &self.cache, exes, project, vm_config, retry_boot, publish: &publish_suite_run }
    }

    /// A VM configuration for a kernel image, with the accelerator chosen for this host.
    pub fn vm_config(&self, name: &str, kimg: &Path, timeout: u64) -> anyhow::Result<VmConfig> {
        crate::accel::vm_config(&self.cache, name, kimg, Duration::from_secs(timeout))
    }
}

/// One guest per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// How many guests run at once and how long one may run: the same for every subcommand that
/// runs the suite on many kernels.
#[derive(clap::Args)]
pub struct Guests {
    /// Guests at once (default: the number of cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
    /// stopped sooner: that is a stuck case).
    #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
    pub timeout: u64,
}

impl Guests {
    pub fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(default_jobs)
    }
}

/// Write a finished suite run's own outputs beside its cases (`junit.xml` and `summary.md`, what a
/// CI job per kernel publishes), then make it the kernel's `latest`: only a complete run is.
pub fn publish_suite_run(run: &SuiteRun) -> anyhow::Result<()> {
    let row = crate::matrix::Row::from_run(run);
    std::fs::write(run.results.join("junit.xml"), render::junit::junit(&row))?;
    std::fs::write(run.results.join("summary.md"), render::matrix::matrix_table(std::slice::from_ref(&row), true))?;
    match &run.run {
        Some(folder) => folder.publish(),
        None => Ok(()),
    }
}

/// Turn a guest run into lab's exit code, explaining anything that is not a plain exit.
pub fn guest_exit(kernel: &str, run: &GuestRun, cfg: &VmConfig) -> u8 {
    let console = || format!("--- kernel console (last 40 lines; full log {}) ---\n{}", cfg.console_log.display(), run.console_tail(40));
    match &run.outcome {
        Outcome::Exited { code } => (*code).clamp(0, 255) as u8,
        Outcome::Panicked { line } => {
            eprintln!("error: the {kernel} guest kernel panicked: {line}\n{}", console());
            EXIT_PANIC
        }
        Outcome::Oopsed { line, code } => {
            eprintln!("error: the {kernel} guest kernel oopsed (the command exited {code}): {line}\n{}", console());
            EXIT_OOPS
        }
        Outcome::Hung { after_secs, hint, silent_secs } => {
            eprintln!(
                "error: the {kernel} guest hung: {} ({}); the VM was killed\n{}",
                crate::vm::hang_reason(*after_secs, *silent_secs),
                hint.as_deref().unwrap_or("no lockup report on the console"),
                console()
            );
            EXIT_HUNG
        }
        Outcome::VmFailed { code } => {
            eprintln!("error: the {kernel} VM failed before the command started (vng exited {code}; {} accel)\n{}", cfg.accel.as_str(), console());
            EXIT_VM_FAILED
        }
    }
}
