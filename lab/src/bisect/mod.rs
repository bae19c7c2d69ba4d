//! `lab bisect`: the first bad commit for a failing case, found by git's own `git bisect run` with
//! the lab as the step command (`lab bisect-step`).
//!
//! Tree mode bisects good..bad of the user's kernel tree in a worktree added with `--no-checkout`:
//! git keeps bisect state per worktree, and the step reads the commit from BISECT_HEAD and builds it
//! like any git source (through `git archive`), so nothing is ever checked out, neither the user's
//! tree nor a copy of it. Kernels mode bisects an ordered list of definitions (Debian's prebuilt
//! point releases) through a synthetic history of one empty commit per kernel, its subject naming
//! the kernel: no source to build, but the same step, git's skip handling, and the same report.


mod git;
pub mod plan;
mod step;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cases::{CaseResult, Status};
use crate::definition::KernelsDir;
use crate::vm::Outcome;

pub use git::{bisect_kernels, bisect_tree};
pub(crate) use git::git;
pub use plan::{freeze_suite, kernel_list, sweep_stale, Mode, Options, Plan};
pub use step::{step, StepArgs};

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
    pub fn label(self) -> &'static str {
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

pub(crate) fn describe(outcome: &Outcome) -> String {
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

pub(crate) fn project_dir(kernels: &KernelsDir) -> anyhow::Result<PathBuf> {
    Ok(kernels.dir.parent().context("the kernels folder has no parent")?.canonicalize()?)
}

/// A commit as git names it in a bisection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rev {
    pub commit: String,
    pub subject: String,
}

impl Rev {
    pub(crate) fn resolve(repo: &Path, rev: &str) -> anyhow::Result<Rev> {
        let commit = git(repo, &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")])
            .with_context(|| format!("`{rev}` does not name a commit in {}", repo.display()))?;
        let subject = git(repo, &["log", "-1", "--format=%s", &commit])?;
        Ok(Rev { commit, subject })
    }

    pub fn short(&self) -> &str {
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

