//! `lab bisect`: the first bad commit for a failing case, found by git's own `git bisect run` with
//! the lab as the step command (`lab bisect-step`).
//!
//! Tree mode bisects good..bad of the user's kernel tree in a worktree added with `--no-checkout`:
//! git keeps bisect state per worktree, and the step reads the commit from BISECT_HEAD and builds it
//! like any git source (through `git archive`), so nothing is ever checked out, neither the user's
//! tree nor a copy of it. Kernels mode bisects an ordered list of definitions (Debian's prebuilt
//! point releases) through a synthetic history of one empty commit per kernel, its subject naming
//! the kernel: no source to build, but the same step, git's skip handling, and the same report.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::build::{self, BuildOptions};
use crate::cache::Cache;
use crate::definition::{KernelsDir, Source};
use crate::process;
use crate::suite::{self, CaseResult, Status, SuiteOptions};
use crate::vm::{Outcome, VmConfig};

/// `git bisect run`'s conventions for the step's exit code.
pub const EXIT_GOOD: u8 = 0;
pub const EXIT_BAD: u8 = 1;
pub const EXIT_SKIP: u8 = 125;
/// 128 and up make git stop bisecting: for the lab's own failures, which say nothing about the commit.
pub const EXIT_ABORT: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Good,
    Bad,
    Skip,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Good => EXIT_GOOD,
            Verdict::Bad => EXIT_BAD,
            Verdict::Skip => EXIT_SKIP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Skip => "skip",
        }
    }

    /// For tables and step lines, where a bad step should stand out.
    fn label(self) -> &'static str {
        if self == Verdict::Bad {
            "BAD"
        } else {
            self.name()
        }
    }
}

/// A step's verdict on a guest run of the selected cases, and the reason in words. A broken kernel
/// (panic, oops) is bad; one that cannot be judged (no boot, a hang, nothing ran) is skipped, so a
/// commit that breaks something else does not pass for the culprit.
pub fn judge(outcome: &Outcome, cases: &[CaseResult]) -> (Verdict, String) {
    match outcome {
        Outcome::Panicked { line } => (Verdict::Bad, format!("the guest kernel panicked: {line}")),
        Outcome::Oopsed { line, .. } => (Verdict::Bad, format!("the guest kernel oopsed: {line}")),
        Outcome::Hung { after_secs, hint, silent_secs } => (
            Verdict::Skip,
            format!(
                "the guest hung: {} ({})",
                crate::vm::hang_reason(*after_secs, *silent_secs),
                hint.as_deref().unwrap_or("no lockup report on the console")
            ),
        ),
        Outcome::VmFailed { code } => (Verdict::Skip, format!("the guest did not boot (vng exited {code})")),
        Outcome::Exited { code } => {
            let failed: Vec<&str> = cases.iter().filter(|c| c.status == Status::Failed).map(|c| c.name.as_str()).collect();
            let unsupported = cases.iter().filter(|c| c.status == Status::Unsupported).count();
            if !failed.is_empty() {
                (Verdict::Bad, format!("{} of {} selected case(s) failed: {}", failed.len(), cases.len(), failed.join(", ")))
            } else if cases.is_empty() {
                (Verdict::Skip, format!("the guest ran no cases (the suite exited {code})"))
            } else if *code != 0 {
                (Verdict::Skip, format!("the suite exited {code} but no case failed"))
            } else if unsupported > 0 {
                (Verdict::Good, format!("{} selected case(s) passed, {unsupported} unsupported", cases.len() - unsupported))
            } else {
                (Verdict::Good, format!("{} selected case(s) passed", cases.len()))
            }
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Exited { code } => format!("exited {code}"),
        Outcome::Panicked { line } => format!("panicked: {line}"),
        Outcome::Oopsed { line, code } => format!("oopsed ({line}); the suite exited {code}"),
        Outcome::Hung { after_secs, .. } => format!("hung; killed after {after_secs}s"),
        Outcome::VmFailed { code } => format!("failed before the suite started (vng exited {code})"),
    }
}

/// One line of the step log (`steps.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub commit: String,
    pub subject: String,
    /// The kernel the step booted: in tree mode the bisected definition on this commit.
    pub kernel: String,
    pub verdict: Verdict,
    pub reason: String,
    pub build_seconds: f64,
    pub run_seconds: f64,
    /// The kernel came from the cache: nothing was compiled.
    #[serde(default)]
    pub cached: bool,
    /// How the guest run ended; none when the kernel did not build.
    #[serde(default)]
    pub guest: Option<String>,
    #[serde(default)]
    pub failures: Vec<CaseFailure>,
}

/// A failed case and libtest's text for it: the snapshot diff or the panic message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFailure {
    pub case: String,
    pub text: String,
}

pub fn append_record(log: &Path, record: &StepRecord) -> anyhow::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening the step log {}", log.display()))?;
    writeln!(file, "{}", serde_json::to_string(record)?)?;
    Ok(())
}

/// The step log's records in the order the steps ran; a missing log is an empty one.
pub fn read_log(log: &Path) -> anyhow::Result<Vec<StepRecord>> {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading the step log {}", log.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}: not a step record", log.display(), i + 1)))
        .collect()
}

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
/// checkout-mode bisect): build, boot, run the selected cases, log, and answer with git's exit code.
pub fn step(args: &StepArgs, kernels: &KernelsDir, cache: &Cache, vm_config: &dyn Fn(&str, &Path) -> anyhow::Result<VmConfig>) -> u8 {
    match try_step(args, kernels, cache, vm_config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab bisect-step: {e:#}\nlab bisect-step: stopping the bisection: this is the lab's failure, not the commit's");
            EXIT_ABORT
        }
    }
}

fn try_step(args: &StepArgs, kernels: &KernelsDir, cache: &Cache, vm_config: &dyn Fn(&str, &Path) -> anyhow::Result<VmConfig>) -> anyhow::Result<u8> {
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
            let started = Instant::now();
            // The step's results stay with the bisect's, not among the kernel's own runs.
            let keep = out.join("steps").join(if args.kernel.is_some() { &commit[..12] } else { def.name.as_str() });
            let opts = SuiteOptions { filter: args.filter.clone(), results: Some(keep), judge_as: args.judge_as.clone(), ..Default::default() };
            let run = suite::run(&def, &built.entry, &project, &exes, cfg, &opts)?;
            record.run_seconds = started.elapsed().as_secs_f64();
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
                .filter(|c| c.status == Status::Failed)
                .map(|c| CaseFailure { case: c.name.clone(), text: suite::failure_excerpt(c.failure.as_deref().unwrap_or(""), 40) })
                .collect();
        }
    }
    if let Some(dropping) = dropping {
        let _ = dropping.join();
    }
    append_record(&log, &record)?;
    println!(
        "lab bisect-step: {} {}: {} ({}; build {:.0}s, run {:.0}s)",
        &commit[..12],
        record.subject,
        record.verdict.label(),
        record.reason.lines().next().unwrap_or(""),
        record.build_seconds,
        record.run_seconds
    );
    Ok(record.verdict.exit_code())
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

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let repo = repo.display().to_string();
    let mut all = vec!["-C", repo.as_str(), "-c", "user.name=sockmap-lab", "-c", "user.email=lab@localhost"];
    all.extend_from_slice(args);
    process::output("git", &all)
}

fn project_dir(kernels: &KernelsDir) -> anyhow::Result<PathBuf> {
    Ok(kernels.dir.parent().context("the kernels folder has no parent")?.canonicalize()?)
}

/// A commit as git names it in a bisection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rev {
    pub commit: String,
    pub subject: String,
}

impl Rev {
    fn resolve(repo: &Path, rev: &str) -> anyhow::Result<Rev> {
        let commit = git(repo, &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")])
            .with_context(|| format!("`{rev}` does not name a commit in {}", repo.display()))?;
        let subject = git(repo, &["log", "-1", "--format=%s", &commit])?;
        Ok(Rev { commit, subject })
    }

    fn short(&self) -> &str {
        &self.commit[..12.min(self.commit.len())]
    }
}

/// How a bisection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion {
    FirstBad(Rev),
    /// Skipped commits hide the answer: it is one of these.
    Undecided(Vec<Rev>),
}

/// The conclusion `git bisect log` records, if it has one.
pub fn parse_conclusion(bisect_log: &str) -> Option<Conclusion> {
    let rev = |rest: &str| {
        let (commit, subject) = rest.trim().strip_prefix('[')?.split_once(']')?;
        Some(Rev { commit: commit.to_string(), subject: subject.trim().to_string() })
    };
    let mut possible = Vec::new();
    for line in bisect_log.lines() {
        if let Some(found) = line.strip_prefix("# first bad commit:").and_then(rev) {
            return Some(Conclusion::FirstBad(found));
        }
        if let Some(found) = line.strip_prefix("# possible first bad commit:").and_then(rev) {
            possible.push(found);
        }
    }
    (!possible.is_empty()).then_some(Conclusion::Undecided(possible))
}

/// A scratch repository (the worktree, or the synthetic history) that must go when the bisection
/// ends: on drop, or, when the lab is killed (its Ctrl-C handler exits without unwinding), by a
/// reaper process that outlives it.
struct Scratch {
    dir: PathBuf,
    /// The user's tree, whose worktree list must forget the worktree.
    tree: Option<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(tree) = &self.tree {
            let _ = git(tree, &["worktree", "prune"]);
        }
    }
}

/// Waits for the lab to die, then interrupts the command it watches (`git bisect run`, or a step:
/// the step's own handler stops its build or VM) and removes the scratch repository. Stopped when
/// the command ends.
struct Reaper(Child);

impl Reaper {
    fn spawn(scratch: &Scratch, pgid: u32) -> anyhow::Result<Reaper> {
        const SCRIPT: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -INT -"$2" 2>/dev/null; sleep 2
rm -rf "$3"
[ -z "$4" ] || git -C "$4" worktree prune"#;
        let tree = scratch.tree.as_ref().map(|t| t.display().to_string()).unwrap_or_default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SCRIPT, "lab-bisect-reaper", &std::process::id().to_string(), &pgid.to_string()])
            .arg(&scratch.dir)
            .arg(tree)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        process::in_own_group(&mut cmd);
        Ok(Reaper(cmd.spawn().context("starting the cleanup watcher")?))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        process::kill_group(self.0.id() as i32);
        let _ = self.0.wait();
    }
}

/// What a bisection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bisection {
    pub conclusion: Conclusion,
    /// `git bisect log`.
    pub log: String,
    /// The ends the answer rests on that git never tested, tested afterwards.
    pub end_checks: Vec<EndCheck>,
}

/// git takes the good and bad ends on trust. When the answer sits right after the good end, or is
/// the bad end itself, that trust is all it rests on (a suite failing everywhere names the first
/// commit), so the lab tests that end once git is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndCheck {
    pub rev: Rev,
    /// What the bisection assumed: good for the good end, bad for the bad end.
    pub assumed: Verdict,
    pub found: Verdict,
}

impl EndCheck {
    /// The end is the opposite of what it was said to be: the answer is meaningless.
    pub fn contradicts(&self) -> bool {
        self.found != self.assumed && self.found != Verdict::Skip
    }
}

/// Start a command in its own process group with a reaper behind it, echo its stdout, and return
/// its exit status with what it printed.
fn run_watched(scratch: &Scratch, mut cmd: Command, env: &[(&str, PathBuf)]) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
    cmd.current_dir(&scratch.dir).stdin(Stdio::null()).stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    process::in_own_group(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the bisection's command")?;
    let _reaper = Reaper::spawn(scratch, child.id())?;
    let mut transcript = Vec::new();
    for line in BufReader::new(child.stdout.take().context("the command's output")?).lines() {
        let line = line?;
        println!("{line}");
        transcript.push(line);
    }
    Ok((child.wait()?, transcript))
}

/// The commits the bisection itself judged (the ends given at the start are not among them).
fn tested_commits(bisect_log: &str) -> Vec<String> {
    bisect_log
        .lines()
        .skip_while(|l| !l.starts_with("git bisect start"))
        .filter_map(|l| ["# good: [", "# bad: [", "# skip: ["].iter().find_map(|p| l.strip_prefix(p)))
        .filter_map(|rest| rest.split_once(']').map(|(c, _)| c.to_string()))
        .collect()
}

/// Run the step on `rev` (pointing BISECT_HEAD at it, which is all the step reads) and map its exit
/// code as git would.
fn check_end(scratch: &Scratch, rev: Rev, assumed: Verdict, step: &[String], env: &[(&str, PathBuf)]) -> anyhow::Result<EndCheck> {
    println!("lab bisect: git never tested the {} end {} {}, and the answer rests on it: testing it", assumed.name(), rev.short(), rev.subject);
    git(&scratch.dir, &["update-ref", "--no-deref", "BISECT_HEAD", &rev.commit])?;
    let mut cmd = Command::new(&step[0]);
    cmd.args(&step[1..]);
    let (status, _) = run_watched(scratch, cmd, env)?;
    let found = match status.code() {
        Some(0) => Verdict::Good,
        Some(125) => Verdict::Skip,
        Some(c) if (1..128).contains(&c) => Verdict::Bad,
        _ => bail!("the step on the {} end failed ({status}): the lab's failure, not the commit's", assumed.name()),
    };
    Ok(EndCheck { rev, assumed, found })
}

/// `git bisect start --no-checkout BAD GOOD` and `git bisect run STEP` in `scratch`, showing git's
/// output as it comes, then the check of an end the answer rests on.
fn bisect(scratch: &Scratch, good: &str, bad: &str, step: &[String], env: &[(&str, PathBuf)]) -> anyhow::Result<Bisection> {
    let repo = &scratch.dir;
    let (good, bad) = (Rev::resolve(repo, good)?, Rev::resolve(repo, bad)?);
    println!("{}", git(repo, &["bisect", "start", "--no-checkout", &bad.commit, &good.commit])?);
    // Adjacent good and bad: git concludes at start, and there is nothing to run.
    if parse_conclusion(&git(repo, &["bisect", "log"])?).is_none() {
        let mut cmd = Command::new("git");
        cmd.args(["bisect", "run"]).args(step);
        let (status, transcript) = run_watched(scratch, cmd, env)?;
        if parse_conclusion(&git(repo, &["bisect", "log"])?).is_none() {
            bail!(
                "git bisect run stopped without an answer ({status}); its last lines:\n{}",
                transcript[transcript.len().saturating_sub(12)..].join("\n")
            );
        }
    }
    let log = git(repo, &["bisect", "log"])?;
    let conclusion = parse_conclusion(&log).context("git bisect log has no conclusion")?;
    let mut end_checks = Vec::new();
    if let Conclusion::FirstBad(first) = &conclusion {
        let tested = tested_commits(&log);
        let parents = git(repo, &["rev-list", "--parents", "-n", "1", &first.commit])?;
        if first.commit == bad.commit && !tested.contains(&bad.commit) {
            end_checks.push(check_end(scratch, bad.clone(), Verdict::Bad, step, env)?);
        }
        if parents.split_whitespace().skip(1).any(|p| p == good.commit) && !tested.contains(&good.commit) {
            end_checks.push(check_end(scratch, good.clone(), Verdict::Good, step, env)?);
        }
    }
    Ok(Bisection { conclusion, log, end_checks })
}

/// Bisect good..bad of `tree` with `step` as git's step command, in a worktree at `worktree`
/// (removed afterwards whatever happens; the user's checkout, index and HEAD are never touched).
pub fn bisect_tree(tree: &Path, worktree: &Path, good: &str, bad: &str, step: &[String], env: &[(&str, PathBuf)]) -> anyhow::Result<Bisection> {
    let scratch = Scratch { dir: worktree.to_path_buf(), tree: Some(tree.to_path_buf()) };
    if let Some(parent) = worktree.parent() {
        std::fs::create_dir_all(parent)?;
    }
    git(tree, &["worktree", "add", "--detach", "--no-checkout", &worktree.display().to_string(), bad])?;
    bisect(&scratch, good, bad, step, env)
}

/// Bisect an ordered list of kernels (first good, last bad) through a synthetic history at `dir`.
pub fn bisect_kernels(list: &[String], dir: &Path, step: &[String], env: &[(&str, PathBuf)]) -> anyhow::Result<Bisection> {
    let scratch = Scratch { dir: dir.to_path_buf(), tree: None };
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q"])?;
    for name in list {
        git(dir, &["-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", name])?;
    }
    let commits: Vec<String> = git(dir, &["rev-list", "--reverse", "HEAD"])?.lines().map(str::to_string).collect();
    bisect(&scratch, &commits[0], &commits[commits.len() - 1], step, env)
}

/// The kernels `A..B` spans (definitions named like A, ordered by the version in their names) or
/// those `A,B,C` lists, in order.
pub fn kernel_list(kernels: &KernelsDir, spec: &str) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = match spec.split_once("..") {
        Some((first, last)) => {
            let family = |n: &str| n[..n.find(|c: char| c.is_ascii_digit()).unwrap_or(n.len())].to_string();
            anyhow::ensure!(
                family(first) == family(last) && !family(first).is_empty(),
                "`{first}` and `{last}` are not one family of kernels (a common name before the version, like `prebuilt-`)"
            );
            for name in [first, last] {
                kernels.load(name)?;
            }
            let (from, to) = (version_key(first), version_key(last));
            anyhow::ensure!(from < to, "`{first}..{last}`: the good kernel must come before the bad one");
            let mut list: Vec<String> = kernels
                .names()?
                .into_iter()
                .filter(|n| family(n) == family(first) && version_key(n) >= from && version_key(n) <= to)
                .collect();
            list.sort_by_key(|n| version_key(n));
            list
        }
        None => spec.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    for name in &list {
        kernels.load(name)?;
    }
    anyhow::ensure!(list.len() >= 2, "`{spec}` names {} kernel(s); bisecting needs a good and a bad one", list.len());
    Ok(list)
}

/// The numbers in a kernel's name: prebuilt-6.12.107 → [6, 12, 107], prebuilt-6.1.0-56 → [6, 1, 0, 56].
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(u64::MAX)).collect()
}

/// What `lab bisect` was asked.
pub struct Options {
    pub tree: Option<PathBuf>,
    pub good: Option<String>,
    pub bad: Option<String>,
    /// The definition whose config, profile and patches every commit is built with.
    pub kernel: String,
    /// Kernels mode: `A..B` or `A,B,C`.
    pub kernels: Option<String>,
    pub filter: Option<String>,
    pub dry_run: bool,
    pub timeout: u64,
    pub judge_as: Option<String>,
}

enum Mode {
    Tree { tree: PathBuf, kernel: String, good: Rev, bad: Rev, commits: usize },
    Kernels { list: Vec<String> },
}

/// A bisection worked out before anything is built.
struct Plan {
    mode: Mode,
    scratch: PathBuf,
    out: PathBuf,
    log: PathBuf,
}

impl Plan {
    fn new(opts: &Options, kernels: &KernelsDir, cache: &Cache) -> anyhow::Result<Plan> {
        let out = project_dir(kernels)?.join("results").join("bisect");
        let pid = std::process::id();
        let mode = match (&opts.tree, &opts.kernels) {
            (Some(tree), None) => {
                let (Some(good), Some(bad)) = (&opts.good, &opts.bad) else { bail!("--tree needs --good REV and --bad REV") };
                let tree = tree.canonicalize().with_context(|| format!("kernel tree {}", tree.display()))?;
                git(&tree, &["rev-parse", "--git-dir"]).with_context(|| format!("{} is not a git repository", tree.display()))?;
                let def = kernels.load(&opts.kernel)?;
                anyhow::ensure!(
                    !def.source.is_prebuilt(),
                    "--kernel {}: a prebuilt image has no source to replace; name a source definition (debian-6.12), or bisect prebuilt kernels with --kernels",
                    opts.kernel
                );
                let (good, bad) = (Rev::resolve(&tree, good)?, Rev::resolve(&tree, bad)?);
                anyhow::ensure!(good.commit != bad.commit, "--good and --bad are the same commit");
                anyhow::ensure!(
                    git(&tree, &["merge-base", "--is-ancestor", &good.commit, &bad.commit]).is_ok(),
                    "--good {} is not an ancestor of --bad {}: git bisect looks for the change between them",
                    good.short(),
                    bad.short()
                );
                let commits = git(&tree, &["rev-list", "--count", &format!("{}..{}", good.commit, bad.commit)])?.parse()?;
                Mode::Tree { tree, kernel: opts.kernel.clone(), good, bad, commits }
            }
            (None, Some(spec)) => Mode::Kernels { list: kernel_list(kernels, spec)? },
            _ => bail!("say what to bisect: --tree PATH --good REV --bad REV, or --kernels A..B"),
        };
        let scratch = cache.path("bisect").join(match mode {
            Mode::Tree { .. } => format!("worktree-{pid}"),
            Mode::Kernels { .. } => format!("kernels-{pid}"),
        });
        Ok(Plan { mode, scratch, log: out.join("steps.jsonl"), out })
    }

    fn step_command(&self, opts: &Options, exes: &[PathBuf]) -> anyhow::Result<Vec<String>> {
        let mut cmd = vec![std::env::current_exe()?.display().to_string(), "bisect-step".to_string()];
        if let Mode::Tree { kernel, .. } = &self.mode {
            cmd.extend(["--kernel".to_string(), kernel.clone()]);
        }
        cmd.extend(["--log".to_string(), self.log.display().to_string(), "--timeout".to_string(), opts.timeout.to_string()]);
        for exe in exes {
            cmd.extend(["--exe".to_string(), exe.display().to_string()]);
        }
        if let Some(family) = &opts.judge_as {
            cmd.extend(["--judge-as".to_string(), family.clone()]);
        }
        if let Some(f) = &opts.filter {
            cmd.extend(["--".to_string(), f.clone()]);
        }
        Ok(cmd)
    }

    fn render(&self, step: &[String], cases: &anyhow::Result<Vec<String>>, filter: Option<&str>) -> String {
        let mut out = String::from("lab bisect plan\n");
        match &self.mode {
            Mode::Tree { tree, kernel, good, bad, commits } => {
                out.push_str(&format!("  tree:     {} (its checkout, index and HEAD are left alone)\n", tree.display()));
                out.push_str(&format!("  worktree: {} (git worktree add --detach --no-checkout; removed afterwards)\n", self.scratch.display()));
                out.push_str(&format!("  good:     {} {}\n  bad:      {} {}\n", good.commit, good.subject, bad.commit, bad.subject));
                out.push_str(&format!("  range:    {commits} commit(s) after good, about {} step(s)\n", steps_for(*commits)));
                out.push_str(&format!("  kernel:   every commit built with {kernel}'s config fragments, profile and patches\n"));
            }
            Mode::Kernels { list } => {
                out.push_str(&format!("  kernels:  {} (first good, last bad; nothing is built)\n", list.join(", ")));
                out.push_str(&format!("  history:  {} (one empty commit per kernel; removed afterwards)\n", self.scratch.display()));
                out.push_str(&format!("  range:    {} kernel(s) after good, about {} step(s)\n", list.len() - 1, steps_for(list.len() - 1)));
            }
        }
        out.push_str(&format!("  step:     git bisect run {}\n", shell_words::join(step)));
        out.push_str(&format!("  log:      {} (one JSON line per step)\n", self.log.display()));
        let filter = filter.map(|f| format!("`{f}`")).unwrap_or_else(|| "no filter (every case)".into());
        match cases {
            Ok(cases) => {
                out.push_str(&format!("  cases:    {} selected by {filter}\n", cases.len()));
                for case in cases.iter().take(20) {
                    out.push_str(&format!("            {case}\n"));
                }
                if cases.len() > 20 {
                    out.push_str(&format!("            ... and {} more\n", cases.len() - 20));
                }
            }
            Err(e) => out.push_str(&format!("  cases:    not listed ({e:#})\n")),
        }
        out
    }
}

fn steps_for(candidates: usize) -> usize {
    (candidates.max(1) as f64).log2().ceil() as usize
}

/// Remove scratch repositories of bisections whose lab is gone (the reaper did not get to run:
/// a reboot, a SIGKILL of both), and make the user's tree forget such worktrees.
fn sweep_stale(root: &Path, tree: Option<&PathBuf>) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid: Option<i32> = name.rsplit('-').next().and_then(|p| p.parse().ok());
        // SAFETY: kill(pid, 0) only checks that the process exists.
        if pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    if let Some(tree) = tree {
        let _ = git(tree, &["worktree", "prune"]);
    }
}

/// What `results/bisect/result.json` holds.
#[derive(Serialize)]
struct Summary<'a> {
    /// None when there is no answer: undecided, or an end is not what it was said to be.
    first_bad: Option<&'a Rev>,
    /// When skips hid the answer: the commits it is among.
    candidates: &'a [Rev],
    end_checks: &'a [EndCheck],
    commits: usize,
    steps: &'a [StepRecord],
    wall_seconds: f64,
}

/// Copy the suite binaries aside, so that a rebuild of the project during a long bisection does not
/// change what the later steps run.
fn freeze_suite(exes: &[PathBuf], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    exes.iter()
        .map(|exe| {
            let copy = dir.join(exe.file_name().context("a suite binary without a name")?);
            std::fs::copy(exe, &copy).with_context(|| format!("copying {}", exe.display()))?;
            Ok(copy)
        })
        .collect()
}

/// `lab bisect`: plan, then (unless a dry run) bisect and report. Exit code 0 with an answer, 1
/// without one (skips left git undecided, or an end is not what it was said to be).
pub fn run(opts: &Options, kernels: &KernelsDir, cache: &Cache) -> anyhow::Result<u8> {
    let plan = Plan::new(opts, kernels, cache)?;
    sweep_stale(&cache.path("bisect"), match &plan.mode {
        Mode::Tree { tree, .. } => Some(tree),
        Mode::Kernels { .. } => None,
    });
    let project = project_dir(kernels)?;
    let exes = suite::build_binaries(&project);
    let cases = match &exes {
        Ok(exes) => suite::list_cases(exes, opts.filter.as_deref()),
        Err(e) => Err(anyhow::anyhow!("building the suite failed: {e:#}")),
    };
    if opts.dry_run {
        let step = plan.step_command(opts, exes.as_deref().unwrap_or(&[]))?;
        print!("{}", plan.render(&step, &cases, opts.filter.as_deref()));
        return Ok(0);
    }
    let (exes, cases) = (exes?, cases?);
    anyhow::ensure!(!cases.is_empty(), "the filter selects no case: every step would judge nothing");
    suite::fresh_dir(&plan.out)?;
    let exes = freeze_suite(&exes, &plan.out.join("suite"))?;
    let step = plan.step_command(opts, &exes)?;
    print!("{}", plan.render(&step, &Ok(cases), opts.filter.as_deref()));

    let env = [("LAB_KERNELS", kernels.dir.canonicalize()?), ("LAB_CACHE", cache.root.clone())];
    let started = Instant::now();
    let found = match &plan.mode {
        Mode::Tree { tree, good, bad, .. } => bisect_tree(tree, &plan.scratch, &good.commit, &bad.commit, &step, &env)?,
        Mode::Kernels { list } => bisect_kernels(list, &plan.scratch, &step, &env)?,
    };
    let wall = started.elapsed();
    std::fs::write(plan.out.join("git-bisect.log"), &found.log)?;
    let steps = read_log(&plan.log)?;
    let candidates = match &plan.mode {
        Mode::Tree { commits, .. } => *commits,
        Mode::Kernels { list } => list.len() - 1,
    };
    let kernels_mode = matches!(plan.mode, Mode::Kernels { .. });
    print!("{}", render_report(&found, &steps, candidates, wall, kernels_mode));
    let sound = !found.end_checks.iter().any(EndCheck::contradicts);
    let (first_bad, undecided) = match &found.conclusion {
        Conclusion::FirstBad(rev) => (sound.then_some(rev), &[][..]),
        Conclusion::Undecided(revs) => (None, revs.as_slice()),
    };
    let summary = Summary {
        first_bad,
        candidates: undecided,
        end_checks: &found.end_checks,
        commits: candidates,
        steps: &steps,
        wall_seconds: wall.as_secs_f64(),
    };
    std::fs::write(plan.out.join("result.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("results: {} (result.json, steps.jsonl, git-bisect.log, steps/)", plan.out.display());
    Ok(if first_bad.is_some() { 0 } else { 1 })
}

fn evidence(out: &mut String, whose: &str, s: &StepRecord) {
    out.push_str(&format!("evidence from {whose} ({}): {}\n", s.kernel, s.reason));
    out.push_str(&format!("guest: {}\n", s.guest.as_deref().unwrap_or("-")));
    for f in s.failures.iter().take(3) {
        out.push_str(&format!("--- {} ---\n{}\n", f.case, f.text));
    }
}

/// The answer, the evidence for it, and every step.
pub fn render_report(found: &Bisection, steps: &[StepRecord], candidates: usize, wall: Duration, kernels_mode: bool) -> String {
    let name = |rev: &Rev| if kernels_mode { rev.subject.clone() } else { format!("{} {}", rev.commit, rev.subject) };
    let short = |c: &str| c[..12.min(c.len())].to_string();
    let mut out = String::new();
    match &found.conclusion {
        Conclusion::FirstBad(_) if found.end_checks.iter().any(EndCheck::contradicts) => {
            let wrong = found.end_checks.iter().find(|c| c.contradicts()).expect("checked above");
            out.push_str(&format!("\nno answer: the {} end {} is {}\n", wrong.assumed.name(), name(&wrong.rev), wrong.found.name()));
            out.push_str(if wrong.assumed == Verdict::Good {
                "the selected cases fail before the range too, so git's answer (the first commit after good) means nothing:\n\
                 bisect from an older --good, or, if they fail everywhere, look at the suite\n"
            } else {
                "the selected cases pass at the bad end: nothing in the range breaks them\n"
            });
            if let Some(s) = steps.iter().rev().find(|s| s.commit == wrong.rev.commit) {
                evidence(&mut out, "its step", s);
            }
        }
        Conclusion::FirstBad(rev) => {
            out.push_str(&format!("\nfirst bad {}: {}\n", if kernels_mode { "kernel" } else { "commit" }, name(rev)));
            // Any bad step shows the failure when the answer's own was not run; the last is the closest.
            let own = steps.iter().find(|s| s.commit == rev.commit && s.verdict == Verdict::Bad);
            match own.or_else(|| steps.iter().rev().find(|s| s.verdict == Verdict::Bad)) {
                None => out.push_str("evidence: no step tested a bad kernel\n"),
                Some(s) if own.is_some() => evidence(&mut out, "its step", s),
                Some(s) => evidence(&mut out, &format!("the closest bad step, {}", short(&s.commit)), s),
            }
            for check in &found.end_checks {
                let end = check.assumed.name();
                let which = if kernels_mode { check.rev.subject.clone() } else { short(&check.rev.commit) };
                out.push_str(&if check.found == Verdict::Skip {
                    format!("unchecked: the {end} end {which} could not be tested (skipped); the answer assumes it is {end}\n")
                } else {
                    format!("checked: the {end} end {which}, which git takes on trust, is {end}\n")
                });
            }
        }
        Conclusion::Undecided(revs) => {
            out.push_str(&format!(
                "\ngit cannot decide: skipped {} hide the first bad one, which is one of:\n",
                if kernels_mode { "kernels" } else { "commits" }
            ));
            for rev in revs {
                let why = steps
                    .iter()
                    .find(|s| s.commit == rev.commit)
                    .map(|s| format!("{}: {}", s.verdict.name(), s.reason.lines().next().unwrap_or("")))
                    .unwrap_or_else(|| "not tested (the bad end)".into());
                out.push_str(&format!("  {}  [{why}]\n", name(rev)));
            }
        }
    }
    out.push_str(&format!(
        "\n{} step(s) for {candidates} {} after good, wall time {}\n",
        steps.len(),
        if kernels_mode { "kernel(s)" } else { "commit(s)" },
        minutes(wall.as_secs_f64())
    ));
    let what = |s: &StepRecord| if kernels_mode { s.subject.clone() } else { short(&s.commit) };
    let width = steps.iter().map(|s| what(s).len()).max().unwrap_or(0).max(12);
    out.push_str(&format!("{:<4} {:<width$} {:<7} {:>8} {:>8}  {}\n", "#", if kernels_mode { "KERNEL" } else { "COMMIT" }, "VERDICT", "BUILD", "RUN", "SUBJECT / REASON"));
    for (i, s) in steps.iter().enumerate() {
        let build = if s.cached { "cached".to_string() } else { minutes(s.build_seconds) };
        let detail = if kernels_mode { String::new() } else { format!("{} ", s.subject) };
        out.push_str(&format!(
            "{:<4} {:<width$} {:<7} {:>8} {:>8}  {detail}[{}]\n",
            i + 1,
            what(s),
            s.verdict.label(),
            build,
            minutes(s.run_seconds),
            s.reason.lines().next().unwrap_or("").chars().take(100).collect::<String>()
        ));
    }
    out
}

fn minutes(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("prebuilt-6.12.107") < version_key("prebuilt-6.12.111"));
        assert!(version_key("prebuilt-6.1.0-56") < version_key("prebuilt-6.12.107"));
        assert_eq!(version_key("prebuilt-6.1.0-47"), [6, 1, 0, 47]);
    }

    #[test]
    fn a_long_build_error_keeps_its_head_and_tail() {
        let text: Vec<String> = (1..=40).map(|i| format!("l{i}")).collect();
        assert_eq!(abridge(&text.join("\n"), 1, 2), "l1\n...\nl39\nl40");
        assert_eq!(abridge("a\nb", 1, 2), "a\nb");
    }
}
