//! One suite run split across several guests of the same kernel image.
//!
//! A guest runs its cases one at a time, because what a case checks belongs to the whole guest:
//! the kernel log it scans for splats, /proc/net/sockstat, kmemleak. So one guest keeps about one
//! core busy. Several guests of the same image, each dealt its share of the cases, use the others,
//! and every check stays exact: each guest is a kernel of its own, with its own log and counters.
//! Cases are dealt in listing order, round robin, so every guest gets a like mix of paths, sizes
//! and families (the listing is sorted: neighbours are alike in cost).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vm::{GuestRun, Outcome};

/// A suite binary's `#[ignore]`d cases (each crashes kernels with a finding): the ones this kernel
/// may run, and the ones it must not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ignored {
    pub run: Vec<String>,
    pub skip: Vec<String>,
}

/// Which of a binary's cases a guest runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// The run's own filter (libtest's substring match), or every case: a run in one guest.
    Filter(Option<String>),
    /// Exactly these cases (libtest `--exact`): a guest's share. Never empty.
    Exact(Vec<String>),
}

/// One suite binary's part of a guest's run.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub exe: PathBuf,
    pub select: Selection,
    pub ignored: Ignored,
}

/// What one guest runs: `parts` in order, only the binaries with a case in its share.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub parts: Vec<Part>,
}

impl Shard {
    /// The cases this guest must give a verdict for, of `listed` (each binary's cases).
    pub fn cases(&self, listed: &[(PathBuf, Vec<String>)]) -> Vec<String> {
        let whole = |exe: &Path| listed.iter().find(|(e, _)| e == exe).map(|(_, c)| c.clone()).unwrap_or_default();
        self.parts
            .iter()
            .flat_map(|p| match &p.select {
                Selection::Exact(names) => names.clone(),
                Selection::Filter(_) => whole(&p.exe),
            })
            .collect()
    }
}

/// Deal the `listed` cases of each binary (with its [`Ignored`]) to `guests` guests. One guest, or
/// fewer than two cases, runs the binaries whole under `filter`, as libtest would.
pub fn plan(listed: &[(PathBuf, Vec<String>)], ignored: &[Ignored], filter: Option<&str>, guests: usize) -> Vec<Shard> {
    let total: usize = listed.iter().map(|(_, c)| c.len()).sum();
    let guests = guests.min(total).max(1);
    let none = Ignored::default();
    if guests == 1 {
        let parts = listed
            .iter()
            .zip(ignored.iter().chain(std::iter::repeat(&none)))
            .map(|((exe, _), ignored)| Part { exe: exe.clone(), select: Selection::Filter(filter.map(str::to_string)), ignored: ignored.clone() })
            .collect();
        return vec![Shard { index: 0, parts }];
    }
    let mut shards: Vec<Shard> = (0..guests).map(|index| Shard { index, parts: Vec::new() }).collect();
    let mut next = 0;
    for ((exe, cases), ignored) in listed.iter().zip(ignored.iter().chain(std::iter::repeat(&none))) {
        let mut dealt: Vec<Vec<String>> = vec![Vec::new(); guests];
        for case in cases {
            dealt[next % guests].push(case.clone());
            next += 1;
        }
        for (shard, names) in shards.iter_mut().zip(dealt).filter(|(_, names)| !names.is_empty()) {
            let own = |list: &[String]| list.iter().filter(|t| names.contains(t)).cloned().collect();
            let ignored = Ignored { run: own(&ignored.run), skip: own(&ignored.skip) };
            shard.parts.push(Part { exe: exe.clone(), select: Selection::Exact(names), ignored });
        }
    }
    shards
}

/// How bad a guest's end is, for choosing the one that speaks for the run.
fn severity(outcome: &Outcome) -> (u8, i32) {
    match outcome {
        Outcome::Panicked { .. } => (4, 0),
        Outcome::Oopsed { .. } => (3, 0),
        Outcome::Hung { .. } => (2, 0),
        Outcome::VmFailed { .. } => (1, 0),
        Outcome::Exited { code } => (0, *code),
    }
}

/// The guests of one run as one: the worst outcome (a panic anywhere is the run's panic), every
/// guest's output in shard order, every console under a header with the worst one last (so a
/// console tail shows it), and the longest wall time (they ran side by side). Returns the index
/// of the guest whose outcome it is.
pub fn merge(runs: Vec<GuestRun>) -> (GuestRun, usize) {
    let count = runs.len();
    let worst = runs.iter().enumerate().max_by_key(|(i, r)| (severity(&r.outcome), std::cmp::Reverse(*i))).map_or(0, |(i, _)| i);
    let wall = runs.iter().map(|r| r.wall).max().unwrap_or(Duration::ZERO);
    let stdout = runs.iter().flat_map(|r| r.stdout.iter().copied()).collect();
    let mut order: Vec<usize> = (0..count).filter(|i| *i != worst).collect();
    order.push(worst);
    let console = if count == 1 {
        runs[0].console.clone()
    } else {
        order.iter().map(|&i| format!("=== guest {} of {count} ===\n{}", i + 1, runs[i].console)).collect::<Vec<_>>().join("\n")
    };
    let outcome = runs.into_iter().nth(worst).map(|r| r.outcome).unwrap_or(Outcome::Exited { code: 0 });
    (GuestRun { outcome, stdout, console, wall }, worst)
}

/// A guest's own console log beside the run's: `console-x.log` → `console-x.guest2.log`.
pub fn console_log(log: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return log.to_path_buf();
    }
    log.with_extension(format!("guest{}.log", index + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Vec<(PathBuf, Vec<String>)> {
        vec![
            (PathBuf::from("/t/redirect"), ["r::a", "r::b", "r::c"].map(String::from).to_vec()),
            (PathBuf::from("/t/teardown"), ["t::a", "t::crash"].map(String::from).to_vec()),
        ]
    }

    #[test]
    fn one_guest_runs_the_binaries_whole_under_the_filter() {
        let shards = plan(&listed(), &[], Some("r::"), 1);
        assert_eq!(shards.len(), 1);
        assert!(shards[0].parts.iter().all(|p| p.select == Selection::Filter(Some("r::".into()))));
        assert_eq!(shards[0].parts.len(), 2, "a binary the filter empties still reports 0 tests");
    }

    #[test]
    fn cases_are_dealt_round_robin_and_each_is_run_by_exactly_one_guest() {
        let ignored = [Ignored::default(), Ignored { run: vec![], skip: vec!["t::crash".into()] }];
        let shards = plan(&listed(), &ignored, None, 2);
        let names = |s: &Shard| s.parts.iter().map(|p| (p.exe.display().to_string(), p.select.clone())).collect::<Vec<_>>();
        let exact = |n: &[&str]| Selection::Exact(n.iter().map(|s| s.to_string()).collect());
        assert_eq!(names(&shards[0]), [("/t/redirect".to_string(), exact(&["r::a", "r::c"])), ("/t/teardown".to_string(), exact(&["t::crash"]))]);
        assert_eq!(names(&shards[1]), [("/t/redirect".to_string(), exact(&["r::b"])), ("/t/teardown".to_string(), exact(&["t::a"]))]);
        assert_eq!(shards[0].parts[1].ignored.skip, ["t::crash"], "the skip goes with the case");
        assert!(shards[1].parts[1].ignored.skip.is_empty());
    }

    #[test]
    fn no_guest_boots_without_cases() {
        let shards = plan(&listed(), &[], None, 8);
        assert_eq!(shards.len(), 5);
        assert!(shards.iter().all(|s| s.parts.iter().all(|p| matches!(&p.select, Selection::Exact(n) if !n.is_empty()))));
        let one = plan(&[(PathBuf::from("/t/x"), vec!["x::only".into()])], &[], Some("only"), 4);
        assert_eq!(one[0].parts[0].select, Selection::Filter(Some("only".into())), "one case: one guest, the plain way");
    }

    fn guest(outcome: Outcome, out: &str, console: &str, secs: u64) -> GuestRun {
        GuestRun { outcome, stdout: out.as_bytes().to_vec(), console: console.into(), wall: Duration::from_secs(secs) }
    }

    #[test]
    fn the_worst_guest_speaks_for_the_run_and_its_console_comes_last() {
        let runs = vec![
            guest(Outcome::Exited { code: 0 }, "a\n", "boot 1", 100),
            guest(Outcome::Panicked { line: "Kernel panic - not syncing: x".into() }, "b\n", "boot 2\npanic", 40),
            guest(Outcome::Exited { code: 1 }, "c\n", "boot 3", 90),
        ];
        let (run, worst) = merge(runs);
        assert_eq!(worst, 1);
        assert!(matches!(run.outcome, Outcome::Panicked { .. }));
        assert_eq!(run.stdout, b"a\nb\nc\n");
        assert!(run.console.ends_with("=== guest 2 of 3 ===\nboot 2\npanic"), "{}", run.console);
        assert_eq!(run.wall, Duration::from_secs(100), "side by side: the longest");
        let (exited, worst) = merge(vec![guest(Outcome::Exited { code: 0 }, "", "", 1), guest(Outcome::Exited { code: 1 }, "", "", 1)]);
        assert_eq!((worst, exited.outcome), (1, Outcome::Exited { code: 1 }), "a failing exit beats a clean one");
    }

    #[test]
    fn each_guest_logs_its_console_beside_the_first() {
        let log = Path::new("/c/logs/console-k-1-2.log");
        assert_eq!(console_log(log, 0), log);
        assert_eq!(console_log(log, 1), Path::new("/c/logs/console-k-1-2.guest2.log"));
    }
}
