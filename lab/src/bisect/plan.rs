//! What a bisection will do, worked out before anything is built: the mode (a tree's commits or
//! a list of kernels), the scratch folder, the step command git runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{git, project_dir, Rev};
use crate::cache::Cache;
use crate::definition::KernelsDir;

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

pub enum Mode {
    Tree { tree: PathBuf, kernel: String, good: Rev, bad: Rev, commits: usize },
    Kernels { list: Vec<String> },
}

/// A bisection worked out before anything is built.
pub struct Plan {
    pub mode: Mode,
    pub scratch: PathBuf,
    pub out: PathBuf,
    pub log: PathBuf,
}

impl Plan {
    pub fn new(opts: &Options, kernels: &KernelsDir, cache: &Cache) -> anyhow::Result<Plan> {
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

    pub fn step_command(&self, opts: &Options, exes: &[PathBuf]) -> anyhow::Result<Vec<String>> {
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
}

pub fn steps_for(candidates: usize) -> usize {
    (candidates.max(1) as f64).log2().ceil() as usize
}

/// Remove scratch repositories of bisections whose lab is gone (the reaper did not get to run:
/// a reboot, a SIGKILL of both), and make the user's tree forget such worktrees.
pub fn sweep_stale(root: &Path, tree: Option<&PathBuf>) {
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

/// Copy the suite binaries aside, so that a rebuild of the project during a long bisection does not
/// change what the later steps run.
pub fn freeze_suite(exes: &[PathBuf], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    exes.iter()
        .map(|exe| {
            let copy = dir.join(exe.file_name().context("a suite binary without a name")?);
            std::fs::copy(exe, &copy).with_context(|| format!("copying {}", exe.display()))?;
            Ok(copy)
        })
        .collect()
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
}
