//! The git side of a bisection: a scratch repository (a worktree of the user's tree, or a synthetic
//! history of kernels) that never outlives the lab, `git bisect run` in it with the step as its
//! command, and the check of an end git took on trust.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use super::{parse_conclusion, Bisection, Conclusion, EndCheck, Rev, Verdict};
use crate::process;

pub(crate) fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let repo = repo.display().to_string();
    let mut all = vec!["-C", repo.as_str(), "-c", "user.name=sockmap-lab", "-c", "user.email=lab@localhost"];
    all.extend_from_slice(args);
    process::output("git", &all)
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

