use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lab::build::{self, BuildOptions};
use lab::cache::Cache;
use lab::definition::KernelsDir;
use lab::vm::{self, Outcome, VmConfig};
use lab::{accel, process, suite};

/// Exit codes for guest trouble, distinct from the lab's own errors (2) so scripts can tell them apart.
const EXIT_LAB_ERROR: u8 = 2;
const EXIT_PANIC: u8 = 121;
const EXIT_OOPS: u8 = 122;
const EXIT_VM_FAILED: u8 = 123;
const EXIT_HUNG: u8 = 124;

#[derive(Parser)]
#[command(name = "lab", version, about = "Build kernels, boot them under virtme-ng, and run the sockmap suite in them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a kernel definition (or find it in the cache).
    Build {
        kernel: String,
        /// Rebuild even if the cache has it.
        #[arg(long)]
        force: bool,
        /// Parallel make jobs (default: cores + 1).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Boot a kernel and run a command in it; the command's exit code becomes lab's.
    Run {
        kernel: String,
        /// Give up on the guest after this many seconds and report a hang.
        #[arg(long, default_value_t = 300, env = "LAB_TIMEOUT")]
        timeout: u64,
        /// Also give up when the guest prints nothing (console or command) for this many seconds.
        #[arg(long)]
        silence: Option<u64>,
        #[arg(long, default_value = "2G")]
        memory: String,
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Show the kernel console live (it is always kept in a log).
        #[arg(long)]
        console: bool,
        /// A host directory the guest may write to (repeatable).
        #[arg(long)]
        rwdir: Vec<PathBuf>,
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Run the redirect-path suite in a guest: one line per case, a summary, results as JSON.
    Test {
        kernel: String,
        /// Only cases whose name contains this (libtest's filter).
        filter: Option<String>,
        /// Write `.snap.new` files for changed snapshots instead of failing; review them with
        /// `cargo insta review`.
        #[arg(long)]
        review: bool,
        /// Build the kernel with this profile instead of the definition's (`debug`: KASAN, lockdep).
        #[arg(long)]
        profile: Option<lab::definition::Profile>,
        /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
        /// stopped sooner: that is a stuck case).
        #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
        timeout: u64,
        /// Test-only: the case whose name contains this aborts its test binary mid-suite, to show
        /// how the lab reports a suite that died.
        #[arg(long, hide = true)]
        abort_case: Option<String>,
        /// Judge every case by this kernel family's snapshots (`6.1`, `6.12`: the base snapshots)
        /// instead of the guest's own family.
        #[arg(long)]
        judge_as: Option<String>,
    },
    /// Build the kernel tree's own sockmap selftests (test_progs -t sockmap*, test_sockmap) for a
    /// kernel and run them in a guest: one line per test, a summary, results as JSON and JUnit.
    Selftests {
        kernel: String,
        /// A test_progs selector (`sockmap_basic`, `sockmap_basic/sockmap recover`) or `test_sockmap`.
        filter: Option<String>,
        /// Give up on the guest after this many seconds (one quiet for 300 s is stopped sooner).
        #[arg(long, default_value_t = 1800, env = "LAB_TIMEOUT")]
        timeout: u64,
        /// Build them (and the kernel) only; do not boot.
        #[arg(long)]
        build_only: bool,
    },
    /// Run the suite on every mutant (deliberately broken kernel); passes only if each is caught.
    Mutants {
        /// Mutant definitions to run (default: every definition with a `mutant` field).
        names: Vec<String>,
        /// Guests at once (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
        /// stopped sooner: that is a stuck case).
        #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
        timeout: u64,
        /// Also run the kernel's own sockmap selftests on each mutant and control: a second
        /// column says whether they catch it, and with which test.
        #[arg(long)]
        selftests: bool,
        /// Run only the kernel's selftests on the mutants and their controls, and fill in their
        /// column of results/mutants.md (the suite's verdicts stay those of its last run).
        #[arg(long, conflicts_with = "selftests")]
        selftests_only: bool,
    },
    /// Run the suite over many kernels: a table of kernels × paths, the cases that differ, JUnit.
    Matrix {
        /// Kernels (default: every definition with `matrix = true`).
        kernels: Vec<String>,
        /// Guests at once (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Give up on a guest after this many seconds (a guest that prints nothing for 300 s is
        /// stopped sooner: that is a stuck case).
        #[arg(long, default_value_t = 3600, env = "LAB_TIMEOUT")]
        timeout: u64,
        /// Also run the kernel's own sockmap selftests on each kernel (a second table).
        #[arg(long)]
        selftests: bool,
    },
    /// Manage kernel definitions.
    Kernels {
        #[command(subcommand)]
        action: KernelsAction,
    },
    /// Benchmark each redirect path against plain TCP and AF_UNIX, per message size.
    Bench {
        kernel: String,
        /// A second kernel, benched in the same session, side by side.
        #[arg(long)]
        vs: Option<String>,
        /// Guest boots per kernel (the spread of the ratios comes from these).
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// List kernel definitions and what the cache holds.
    List,
    /// Remove cache entries and build trees (of one kernel, or all).
    Clean { kernel: Option<String> },
    /// Find the first bad commit of a kernel tree (or the first bad kernel of a list) for the cases
    /// FILTER selects, with `git bisect run` and the lab as the step.
    Bisect {
        /// The kernel tree to bisect (left untouched: bisected in a worktree).
        #[arg(long, conflicts_with = "kernels", requires_all = ["good", "bad"])]
        tree: Option<PathBuf>,
        #[arg(long, requires = "tree")]
        good: Option<String>,
        #[arg(long, requires = "tree")]
        bad: Option<String>,
        /// Build every commit with this definition's config fragments, profile and patches.
        #[arg(long, default_value = "debian-6.12", conflicts_with = "kernels")]
        kernel: String,
        /// Bisect kernel definitions instead, nothing built: `A..B` (ordered by version) or `A,B,C`.
        #[arg(long, required_unless_present = "tree")]
        kernels: Option<String>,
        /// Only cases whose name contains this (libtest's filter).
        filter: Option<String>,
        /// Print the plan (worktree, range, step command, selected cases) and stop.
        #[arg(long)]
        dry_run: bool,
        /// Per step: a guest still running after this many seconds is a hang (the commit is skipped).
        #[arg(long, default_value_t = 600, env = "LAB_TIMEOUT")]
        timeout: u64,
        /// Judge every step by this kernel family's snapshots (e.g. `6.1` over 6.1..7.3 finds the
        /// first release that no longer behaves as 6.1 did), instead of each kernel's own family.
        #[arg(long)]
        judge_as: Option<String>,
    },
    /// One `git bisect run` step on the commit being tested: exits 0 good, 1 bad, 125 skip.
    #[command(hide = true)]
    BisectStep {
        /// Tree mode: the definition to build the commit with; without it the commit's subject names the kernel.
        #[arg(long)]
        kernel: Option<String>,
        /// The JSON-lines step log (default: results/bisect/steps.jsonl).
        #[arg(long)]
        log: Option<PathBuf>,
        /// A suite binary (repeatable; default: build the suite).
        #[arg(long)]
        exe: Vec<PathBuf>,
        #[arg(long, default_value_t = 600, env = "LAB_TIMEOUT")]
        timeout: u64,
        #[arg(long)]
        judge_as: Option<String>,
        filter: Option<String>,
    },
    /// Show whether guests run under KVM or TCG here, and why.
    Accel {
        /// Kernel to probe with.
        #[arg(default_value = "debian-6.12")]
        kernel: String,
        /// Ignore the cached answer and probe again.
        #[arg(long)]
        reprobe: bool,
    },
}

#[derive(Subcommand)]
enum KernelsAction {
    /// Write definitions for prebuilt Debian kernels: `6.1.0-47`, `6.12.117`, or `--all` that apt knows.
    AddDebian {
        versions: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    process::install_interrupt_handler();
    // Under `git bisect run` any code from 1 to 127 but 125 means "bad commit": a lab that fails
    // before a step could judge its commit must stop git instead (exit 255), not blame the commit.
    let lab_error = if std::env::args().nth(1).as_deref() == Some("bisect-step") { lab::bisect::EXIT_ABORT } else { EXIT_LAB_ERROR };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(lab_error);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(_) if process::interrupted() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(lab_error)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let kernels = KernelsDir::locate();
    let cache = Cache::open_default()?;
    match cli.command {
        Command::Build { kernel, force, jobs } => {
            let def = kernels.load(&kernel)?;
            let mut opts = BuildOptions { force, ..Default::default() };
            if let Some(j) = jobs {
                opts.jobs = j;
            }
            let built = build::build(&def, &kernels, &cache, &opts)?;
            let m = &built.entry.manifest;
            println!(
                "{} {} ({}): {}",
                def.name,
                m.release,
                if built.cached { "cached, nothing compiled" } else { "built" },
                built.entry.kernel_image().display()
            );
            Ok(0)
        }
        Command::Run { kernel, timeout, silence, memory, cpus, console, rwdir, command } => {
            let def = kernels.load(&kernel)?;
            let built = build::build(&def, &kernels, &cache, &BuildOptions::default())?;
            let kimg = built.entry.kernel_image();
            let mut cfg = vm_config(&cache, &def.name, &kimg, timeout)?;
            cfg.silence = silence.map(Duration::from_secs);
            cfg.memory = memory;
            cfg.cpus = cpus;
            cfg.show_console = console;
            cfg.rwdirs = rwdir;
            let run = vm::run(&kimg, &command, &cfg, |bytes| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            })?;
            report(&def.name, &run, &cfg)
        }
        Command::Test { kernel, filter, review, profile, timeout, abort_case, judge_as } => {
            let mut def = kernels.load(&kernel)?;
            if let Some(p) = profile.filter(|p| *p != def.profile) {
                // A different kernel deserves its own name: results, logs and `lab list` would
                // otherwise mix the debug build's runs with the definition's own.
                def.name = format!("{}-{}", def.name, p.as_str());
                def.profile = p;
            }
            let built = build::build(&def, &kernels, &cache, &BuildOptions::default())?;
            let project = project_dir(&kernels)?;
            let exes = suite::build_binaries(&project)?;
            let cfg = vm_config(&cache, &def.name, &built.entry.kernel_image(), timeout)?;
            let opts = suite::SuiteOptions { filter, review, abort_case, judge_as, results: None };
            let run = suite::run(&def, &built.entry, &project, &exes, cfg, &opts)?;
            // The same per-kernel outputs the matrix writes, so a CI job per kernel can publish them.
            lab::report::finish_run(&run)?;
            for case in &run.report.cases {
                println!("{}", lab::report::case_line(case));
            }
            print!("{}", lab::report::render(&run.report));
            println!("results: {} (also {})", run.results.join("summary.json").display(), suite::results_group(&project, &def.name).join(lab::runs::LATEST).display());
            if !matches!(run.guest.outcome, Outcome::Exited { .. }) {
                return report(&def.name, &run.guest, &run.cfg);
            }
            if run.report.with_verdict() == 0 {
                eprintln!("error: the guest ran no cases; its output:\n{}", process::tail(&String::from_utf8_lossy(&run.guest.stdout), 40));
                return Ok(1);
            }
            if review {
                println!(
                    "review changed snapshots with: INSTA_PENDING_DIR={} cargo insta review --workspace-root {}",
                    suite::pending_dir(&run.results).display(),
                    project.display()
                );
                // A known finding's .snap.new is the kernel bug written down: accepting it would
                // make the bug the expectation.
                let known: Vec<&str> = run.report.cases.iter().filter(|c| c.is_known_finding()).map(|c| c.name.as_str()).collect();
                if let Some(first) = known.first() {
                    println!("reject the .snap.new of the {} case(s) that fail with a known kernel finding (first: {first}): they record the bug (snapshots/FINDINGS.toml)", known.len());
                }
            }
            Ok(if run.report.failed() { 1 } else { 0 })
        }
        Command::Selftests { kernel, filter, timeout, build_only } => {
            let def = kernels.load(&kernel)?;
            let built = build::build(&def, &kernels, &cache, &BuildOptions::default())?;
            let started = std::time::Instant::now();
            let tests = lab::selftests::build(&def, &built.entry, &cache)?;
            println!(
                "selftests for {}: {} ({:.0}s{}; built {:.0}s): {}",
                def.name,
                tests.manifest.tests.join(", "),
                started.elapsed().as_secs_f64(),
                if tests.cached { ", cached" } else { "" },
                tests.manifest.build_seconds,
                tests.dir.display()
            );
            if build_only {
                return Ok(0);
            }
            let project = project_dir(&kernels)?;
            let cfg = vm_config(&cache, &def.name, &built.entry.kernel_image(), timeout)?;
            let run = lab::selftests::run(&def, &built.entry, &tests, &project, cfg, filter.as_deref())?;
            lab::report::finish_selftests(&run)?;
            for r in &run.report.results {
                println!("{}", lab::report::selftest_line(r));
            }
            print!("{}", lab::report::render_selftests(&run.report));
            println!("results: {} (also {})", run.results.join("summary.json").display(), lab::selftests::results_group(&project, &def.name).join(lab::runs::LATEST).display());
            if !matches!(run.guest.outcome, Outcome::Exited { .. }) {
                return report(&def.name, &run.guest, &run.cfg);
            }
            Ok(if run.report.failed() { 1 } else { 0 })
        }
        Command::Mutants { names, jobs, timeout, selftests, selftests_only } => {
            let project = project_dir(&kernels)?;
            let make_cfg = |name: &str, kimg: &std::path::Path| vm_config(&cache, name, kimg, timeout);
            let jobs = jobs.unwrap_or_else(default_jobs);
            if selftests_only {
                return lab::mutants::selftests_only(&kernels, &cache, &project, &names, jobs, &make_cfg);
            }
            lab::mutants::run(&kernels, &cache, &project, &names, jobs, &make_cfg, selftests)
        }
        Command::Matrix { kernels: names, jobs, timeout, selftests } => {
            let names = if names.is_empty() { lab::matrix::default_kernels(&kernels)? } else { names };
            anyhow::ensure!(!names.is_empty(), "no kernels: name some, or mark definitions with `matrix = true`");
            let project = project_dir(&kernels)?;
            let exes = suite::build_binaries(&project)?;
            let jobs = jobs.unwrap_or_else(default_jobs);
            let started = std::time::Instant::now();
            let run = lab::runs::start(&project.join("results").join("matrix"))?;
            let make_cfg = |name: &str, kimg: &std::path::Path| vm_config(&cache, name, kimg, timeout);
            let runner = lab::matrix::Runner { kernels: &kernels, cache: &cache, exes: &exes, project: &project, vm_config: &make_cfg, retry_boot: false };
            let rows = runner.matrix(&names, jobs);
            let diffs = lab::matrix::differences(&rows);
            let wall = started.elapsed().as_secs_f64();
            let out = &run.dir;
            std::fs::create_dir_all(out.join("junit"))?;
            for row in &rows {
                std::fs::write(out.join("junit").join(format!("{}.xml", row.kernel)), lab::report::junit(row))?;
            }
            let details = lab::report::matrix_details(&rows, &diffs, 20);
            let selftests = if selftests { lab::selftests::run_many(&kernels, &cache, &project, &names, jobs, &make_cfg) } else { vec![] };
            // A prebuilt image without its exact source package cannot have them: its row says so
            // and does not redden the matrix.
            let is_prebuilt = |k: &str| kernels.load(k).is_ok_and(|d| d.source.is_prebuilt());
            let selftests_green = selftests.iter().all(|(k, r)| match r {
                Ok(r) => !r.failed(),
                Err(_) => is_prebuilt(k),
            });
            let selftests_md = if selftests.is_empty() { String::new() } else { format!("\n## The kernel's own sockmap selftests\n\n{}", lab::report::matrix_selftests_table(&selftests)) };
            let md = format!(
                "# sockmap-lab matrix\n\n{}\n```\n{}```\n{selftests_md}\nWall time: {wall:.0}s, {} guest(s) at once.\n",
                lab::report::matrix_table(&rows, true),
                details,
                jobs
            );
            std::fs::write(out.join("matrix.md"), md)?;
            let selftests_json: Vec<serde_json::Value> = selftests
                .iter()
                .map(|(k, r)| match r {
                    Ok(r) => serde_json::json!({"kernel": k, "run": r.run, "totals": r.totals, "failed": r.failed(), "problems": r.problems}),
                    Err(e) => serde_json::json!({"kernel": k, "error": e}),
                })
                .collect();
            let json = serde_json::json!({"run": run.id, "date": run.date, "rows": rows, "differences": diffs, "wall_seconds": wall, "selftests": selftests_json});
            std::fs::write(out.join("matrix.json"), serde_json::to_string_pretty(&json)?)?;
            run.publish()?;
            print!("{}", lab::report::matrix_table(&rows, false));
            print!("{details}{selftests_md}");
            println!("wall time {wall:.0}s; results: {} (matrix.md, matrix.json, junit/; also results/matrix/latest)", out.display());
            Ok(if rows.iter().all(|r| r.green()) && selftests_green { 0 } else { 1 })
        }
        Command::Kernels { action: KernelsAction::AddDebian { versions, all } } => {
            let needs_view = all || versions.iter().any(|v| lab::definition::debian_image_package(v).is_none());
            let newer = if needs_view {
                lab::apt::AptView::open(&cache)?.kernel_images()?
            } else {
                vec![]
            };
            let written = lab::definition::add_debian_images(&kernels, &versions, all, &newer)?;
            for (name, created, suite) in &written {
                println!("{} kernels/{name}.toml ({suite})", if *created { "wrote" } else { "kept " });
            }
            Ok(0)
        }
        Command::Bench { kernel, vs, runs } => {
            let report = lab::bench::run(&kernels, &cache, &kernel, vs.as_deref(), runs)?;
            print!("{}", lab::bench::render(&report));
            Ok(0)
        }
        Command::List => {
            let entries = cache.entries();
            println!("{:<22} {:<14} {:<8} {}", "KERNEL", "SOURCE", "MATRIX", "CACHED");
            for def in kernels.load_all()? {
                match def {
                    Ok(def) => {
                        let cached: Vec<String> = entries
                            .iter()
                            .filter(|e| e.manifest.definition == def.name)
                            .map(|e| format!("{} [{}]", e.manifest.release, &e.manifest.key[..8]))
                            .collect();
                        let kind = match &def.source {
                            lab::definition::Source::DebianSource { .. } => "debian-source",
                            lab::definition::Source::Git { .. } => "git",
                            lab::definition::Source::TarballPath { .. } | lab::definition::Source::TarballUrl { .. } => "tarball",
                            lab::definition::Source::DebianImage { .. } => "debian-image",
                        };
                        println!(
                            "{:<22} {:<14} {:<8} {}",
                            def.name,
                            kind,
                            if def.matrix { "yes" } else { "" },
                            if cached.is_empty() { "-".to_string() } else { cached.join(", ") }
                        );
                    }
                    Err(e) => println!("{e}"),
                }
            }
            println!("cache: {}", cache.root.display());
            Ok(0)
        }
        Command::Clean { kernel } => {
            if let Some(k) = &kernel {
                kernels.load(k)?;
            }
            let n = cache.clean(kernel.as_deref())?;
            println!("removed {n} cache entr{}", if n == 1 { "y" } else { "ies" });
            Ok(0)
        }
        Command::Bisect { tree, good, bad, kernel, kernels: range, filter, dry_run, timeout, judge_as } => {
            let opts = lab::bisect::Options { tree, good, bad, kernel, kernels: range, filter, dry_run, timeout, judge_as };
            lab::bisect::run(&opts, &kernels, &cache)
        }
        Command::BisectStep { kernel, log, exe, timeout, judge_as, filter } => {
            let args = lab::bisect::StepArgs { kernel, log, exes: exe, filter, judge_as };
            Ok(lab::bisect::step(&args, &kernels, &cache, &|name, kimg| vm_config(&cache, name, kimg, timeout)))
        }
        Command::Accel { kernel, reprobe } => {
            let def = kernels.load(&kernel)?;
            let built = build::build(&def, &kernels, &cache, &BuildOptions::default())?;
            let d = accel::choose(&cache, &built.entry.kernel_image(), reprobe).context("choosing the accelerator")?;
            println!("{}: {}", d.accel.as_str(), d.reason);
            Ok(0)
        }
    }
}

/// One guest per core.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn project_dir(kernels: &KernelsDir) -> anyhow::Result<std::path::PathBuf> {
    Ok(kernels.dir.parent().context("the kernels folder has no parent")?.canonicalize()?)
}

/// A VM configuration for a kernel image, with the accelerator chosen for this host.
fn vm_config(cache: &Cache, name: &str, kimg: &std::path::Path, timeout: u64) -> anyhow::Result<VmConfig> {
    accel::vm_config(cache, name, kimg, Duration::from_secs(timeout))
}

/// Turn a guest run into lab's exit code, explaining anything that is not a plain exit.
fn report(kernel: &str, run: &vm::GuestRun, cfg: &VmConfig) -> anyhow::Result<u8> {
    let console = || format!("--- kernel console (last 40 lines; full log {}) ---\n{}", cfg.console_log.display(), run.console_tail(40));
    Ok(match &run.outcome {
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
                vm::hang_reason(*after_secs, *silent_secs),
                hint.as_deref().unwrap_or("no lockup report on the console"),
                console()
            );
            EXIT_HUNG
        }
        Outcome::VmFailed { code } => {
            eprintln!("error: the {kernel} VM failed before the command started (vng exited {code}; {} accel)\n{}", cfg.accel.as_str(), console());
            EXIT_VM_FAILED
        }
    })
}
