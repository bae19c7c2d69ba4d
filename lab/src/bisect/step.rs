//! `lab bisect-step`: one step of `git bisect run` on the commit being tested.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{append_record, describe, git, judge, project_dir, CaseFailure, StepRecord, Verdict};
use crate::build::{self, BuildOptions};
use crate::cache::Cache;
use crate::definition::{KernelsDir, Source};
use crate::suite::{self, SuiteOptions};
use crate::vm::{Outcome, VmConfig};

/// What `lab bisect-step` was asked to do.
pub struct StepArgs {
    /// Tree mode: build every commit with this definition's fragments, profile and patches. Without
    /// it, the commit's subject names the definition (the synthetic history of `--kernels`).
    pub kernel: Option<String>,
    pub log: Option<PathBuf>,
    /// The suite binaries (the driver builds them once); none: build them here.
    pub exes: Vec<PathBuf>,
    pub filter: Option<String>,
    pub judge_as: Option<String>,
}

/// One bisection step on the commit git is testing (the current directory's BISECT_HEAD, or HEAD in a
/// checkout-mode bisect): build, boot, run the selected cases, and append the verdict to the log.
pub fn step(args: &StepArgs, kernels: &KernelsDir, cache: &Cache, vm_config: &dyn Fn(&str, &Path) -> anyhow::Result<VmConfig>) -> anyhow::Result<StepRecord> {
    let repo = std::env::current_dir()?;
    let commit = git(&repo, &["rev-parse", "--verify", "-q", "BISECT_HEAD"]).or_else(|_| git(&repo, &["rev-parse", "--verify", "HEAD"]))?;
    let subject = git(&repo, &["log", "-1", "--format=%s", &commit])?;
    let def = match &args.kernel {
        Some(kernel) => {
            let mut def = kernels.load(kernel)?;
            anyhow::ensure!(!def.source.is_prebuilt(), "{kernel} is a prebuilt image: there is no source to put the commit in");
            def.source = Source::Git { path: repo.clone(), rev: commit.clone() };
            def.name = format!("{kernel}-{}", &commit[..12]);
            def
        }
        None => kernels.load(&subject)?,
    };
    let project = project_dir(kernels)?;
    let out = project.join("results").join("bisect");
    let log = args.log.clone().unwrap_or_else(|| out.join("steps.jsonl"));
    let exes = if args.exes.is_empty() { suite::build_binaries(&project)? } else { args.exes.clone() };
    let mut record = StepRecord {
        commit: commit.clone(),
        subject,
        kernel: def.name.clone(),
        verdict: Verdict::Skip,
        reason: String::new(),
        build_seconds: 0.0,
        run_seconds: 0.0,
        cached: false,
        guest: None,
        failures: vec![],
    };
    eprintln!("lab bisect-step: testing {} {} as {}", &commit[..12], record.subject, def.name);
    let started = Instant::now();
    let built = build::build(&def, kernels, cache, &BuildOptions::default());
    record.build_seconds = started.elapsed().as_secs_f64();
    // Removing a tree takes about a minute of I/O here; it overlaps the guest run instead of adding to it.
    let dropping = args.kernel.is_some().then(|| {
        let (cache, commit) = (cache.clone(), commit.clone());
        std::thread::spawn(move || drop_build_tree(&cache, &commit))
    });
    match built {
        Err(e) => record.reason = build_failure(&format!("{e:#}")),
        Ok(built) => {
            record.cached = built.cached;
            let cfg = vm_config(&def.name, &built.entry.kernel_image())?;
            // The step's results stay with the bisect's, not among the kernel's own runs.
            let keep = out.join("steps").join(if args.kernel.is_some() { &commit[..12] } else { def.name.as_str() });
            let opts = SuiteOptions { filter: args.filter.clone(), results: Some(keep), judge_as: args.judge_as.clone(), ..Default::default() };
            let started = Instant::now();
            let run = suite::run(&def, &built.entry, &project, &exes, cfg, &opts)?;
            judge_run(&mut record, &run, started.elapsed().as_secs_f64());
        }
    }
    if let Some(dropping) = dropping {
        let _ = dropping.join();
    }
    append_record(&log, &record)?;
    Ok(record)
}

/// The step's verdict on its guest run, with the failing cases' evidence.
fn judge_run(record: &mut StepRecord, run: &suite::SuiteRun, run_seconds: f64) {
    record.run_seconds = run_seconds;
    let (verdict, reason) = judge(&run.guest.outcome, &run.report.cases);
    record.verdict = verdict;
    record.reason = match &run.guest.outcome {
        Outcome::Exited { .. } => reason,
        _ => format!("{reason}; console: {}", run.cfg.console_log.display()),
    };
    record.guest = Some(describe(&run.guest.outcome));
    record.failures = run
        .report
        .cases
        .iter()
        .filter(|c| c.status == crate::cases::Status::Failed)
        .map(|c| CaseFailure { case: c.name.clone(), text: crate::cases::failure_excerpt(c.failure.as_deref().unwrap_or(""), 40) })
        .collect();
}

/// A commit's build tree serves one step; keeping each (~3 GB) would fill the disk in one bisection.
/// Its cache entry stays, so bisecting the range again boots without building.
fn drop_build_tree(cache: &Cache, commit: &str) {
    // `build` names a git source's tree after its identity "git:<commit>", slugged and cut to 40 characters.
    let prefix = format!("git_{}", &commit[..36.min(commit.len())]);
    let Ok(entries) = std::fs::read_dir(cache.path("work")) else { return };
    let started = Instant::now();
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
            eprintln!("lab bisect-step: dropped the build tree of {} ({:.0}s)", &commit[..12.min(commit.len())], started.elapsed().as_secs_f64());
        }
    }
}

/// Why a commit was skipped for not building: the compiler's first error up front (the table
/// shows one line), then the error's head and the log's tail.
fn build_failure(error: &str) -> String {
    let first = error.lines().find(|l| l.contains("error:") || l.contains("Error ")).or(error.lines().next()).unwrap_or("");
    format!("does not build: {}\n{}", first.trim(), abridge(error, 2, 12))
}

/// The first `head` and last `tail` lines of a long text, so a build error keeps its cause and its
/// compiler output without the whole log.
fn abridge(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail + 1 {
        return lines.join("\n");
    }
    format!("{}\n...\n{}", lines[..head].join("\n"), lines[lines.len() - tail..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_build_error_keeps_its_head_and_tail() {
        let text: Vec<String> = (1..=40).map(|i| format!("l{i}")).collect();
        assert_eq!(abridge(&text.join("\n"), 1, 2), "l1\n...\nl39\nl40");
        assert_eq!(abridge("a\nb", 1, 2), "a\nb");
    }
}
