//! `lab bisect` without a VM: the step's verdicts and exit codes, the step log, git's conclusions,
//! the worktree left behind (none), the dry-run plan, and a commit that does not build being skipped
//! (on the stand-in kernel tree). The full bisection boots kernels: that is `make lab-bisect`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{kernels_dir, text, Lab};
use lab::bisect::{self, CaseFailure, Conclusion, StepRecord, Verdict};
use lab::suite::{CaseResult, Status};
use lab::vm::Outcome;

fn case(name: &str, status: Status) -> CaseResult {
    let failure = (status == Status::Failed).then(|| "-    bytes: 1024\n+    bytes: 0".to_string());
    CaseResult { name: name.into(), path: lab::suite::path_of(name), status, observation: None, failure, snapshot: None, finding: None }
}

#[test]
fn verdicts_map_to_git_bisect_run_exit_codes_with_a_reason() {
    let passed = [case("tx_to_rx_via_sockmap_over_ipv4_1kib", Status::Passed)];
    let failed = [case("tx_to_rx_via_sockmap_over_ipv4_1kib", Status::Failed), case("tx_to_rx_via_sockmap_over_ipv4_1b", Status::Passed)];
    let judge = |outcome: Outcome, cases: &[CaseResult]| {
        let (verdict, reason) = bisect::judge(&outcome, cases);
        (verdict.exit_code(), reason)
    };

    let (code, reason) = judge(Outcome::Exited { code: 0 }, &passed);
    assert_eq!((code, reason.as_str()), (0, "1 selected case(s) passed"));
    let (code, reason) = judge(Outcome::Exited { code: 1 }, &failed);
    assert_eq!(code, 1);
    assert_eq!(reason, "1 of 2 selected case(s) failed: tx_to_rx_via_sockmap_over_ipv4_1kib");
    let (code, reason) = judge(Outcome::Panicked { line: "Kernel panic - not syncing: Fatal exception".into() }, &[]);
    assert_eq!(code, 1);
    assert!(reason.contains("panicked") && reason.contains("Fatal exception"), "{reason}");
    let (code, reason) = judge(Outcome::Oopsed { line: "BUG: kernel NULL pointer dereference".into(), code: 0 }, &passed);
    assert_eq!(code, 1, "an oops is bad even when the cases pass");
    assert!(reason.contains("oopsed: BUG: kernel NULL pointer"), "{reason}");

    let (code, reason) = judge(Outcome::Hung { after_secs: 600, hint: Some("watchdog: BUG: soft lockup - CPU#0 stuck".into()), silent_secs: None }, &[]);
    assert_eq!(code, 125);
    assert!(reason.contains("hung") && reason.contains("600s") && reason.contains("soft lockup"), "{reason}");
    let (code, reason) = judge(Outcome::Hung { after_secs: 5, hint: None, silent_secs: None }, &[]);
    assert_eq!(code, 125);
    assert!(reason.contains("no lockup report"), "{reason}");
    let (code, reason) = judge(Outcome::VmFailed { code: 255 }, &[]);
    assert_eq!(code, 125);
    assert!(reason.contains("did not boot"), "{reason}");
    let (code, reason) = judge(Outcome::Exited { code: 101 }, &[]);
    assert_eq!(code, 125, "a guest that ran nothing says nothing about the commit");
    assert!(reason.contains("ran no cases"), "{reason}");

    assert_eq!(bisect::EXIT_ABORT, 255, "the lab's own failures must stop git (>= 128), not mark the commit bad");
}

fn record(commit: &str, verdict: Verdict) -> StepRecord {
    StepRecord {
        commit: commit.into(),
        subject: format!("subject of {commit}"),
        kernel: format!("debian-6.12-{}", &commit[..12]),
        verdict,
        reason: "why\nand more".into(),
        build_seconds: 95.5,
        run_seconds: 17.25,
        cached: false,
        guest: Some("exited 1".into()),
        failures: vec![CaseFailure { case: "tx_to_rx_via_sockmap_over_ipv4_1kib".into(), text: "-    bytes: 1024\n+    bytes: 0".into() }],
    }
}

#[test]
fn the_step_log_is_one_json_record_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bisect/steps.jsonl");
    assert!(bisect::read_log(&log).unwrap().is_empty(), "no log yet: no steps");
    let steps = [record(&"a".repeat(40), Verdict::Good), record(&"b".repeat(40), Verdict::Bad)];
    for s in &steps {
        bisect::append_record(&log, s).unwrap();
    }
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(written.lines().count(), 2);
    let line: serde_json::Value = serde_json::from_str(written.lines().next().unwrap()).unwrap();
    for field in ["commit", "subject", "verdict", "reason", "build_seconds", "run_seconds"] {
        assert!(line.get(field).is_some(), "{field} missing: {line}");
    }
    assert_eq!(line["verdict"], "good");
    assert_eq!(bisect::read_log(&log).unwrap(), steps);

    std::fs::write(&log, format!("{}\nnot json\n", written.lines().next().unwrap())).unwrap();
    let err = bisect::read_log(&log).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn git_bisect_logs_give_the_conclusion() {
    let found = "git bisect start '--no-checkout' 'b' 'a'\n# good: [c6c6] c6\ngit bisect good c6c6\n# first bad commit: [f435] sock_map: do things\n";
    assert_eq!(
        bisect::parse_conclusion(found),
        Some(Conclusion::FirstBad(bisect::Rev { commit: "f435".into(), subject: "sock_map: do things".into() }))
    );
    let undecided = "# skip: [2a] c8\n# only skipped commits left to test\n# possible first bad commit: [d0] c9\n# possible first bad commit: [2a] c8\n";
    match bisect::parse_conclusion(undecided) {
        Some(Conclusion::Undecided(revs)) => assert_eq!(revs.iter().map(|r| r.commit.as_str()).collect::<Vec<_>>(), ["d0", "2a"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(bisect::parse_conclusion("# bad: [d0] c9\n"), None);
}

/// A repository of `n` commits, commit i writing "i" into `f`, plus an uncommitted file of the user's.
fn toy_repo(root: &Path, n: usize) -> (PathBuf, Vec<String>) {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for i in 1..=n {
        std::fs::write(repo.join("f"), format!("{i}\n")).unwrap();
        git(&repo, &["add", "f"]);
        git(&repo, &["commit", "-q", "-m", &format!("c{i}")]);
    }
    std::fs::write(repo.join("mine.txt"), "the user's work in progress").unwrap();
    let commits = git(&repo, &["rev-list", "--reverse", "HEAD"]).lines().map(str::to_string).collect();
    (repo, commits)
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "-C"])
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a user would notice about their tree: HEAD, status, worktrees, bisect state.
fn tree_state(repo: &Path) -> String {
    let bisecting = repo.join(".git/BISECT_LOG").exists();
    format!(
        "{}\n{}\n{}\nbisecting: {bisecting}\n{}",
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["status", "--porcelain"]),
        git(repo, &["worktree", "list", "--porcelain"]),
        git(repo, &["for-each-ref", "refs/bisect"])
    )
}

/// A step command that judges the commit by the number in `f`, like `lab bisect-step` judges a kernel.
fn step(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("n=$(git show BISECT_HEAD:f); {script}")]
}

#[test]
fn git_finds_the_first_bad_commit_in_a_worktree_and_the_tree_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commits) = toy_repo(dir.path(), 12);
    let before = tree_state(&repo);
    let worktree = dir.path().join("scratch/worktree-1");
    let found = bisect::bisect_tree(&repo, &worktree, &commits[0], &commits[11], &step("test $n -lt 7"), &[]).unwrap();
    assert_eq!(found.conclusion, Conclusion::FirstBad(bisect::Rev { commit: commits[6].clone(), subject: "c7".into() }), "{}", found.log);
    assert!(found.log.contains("# first bad commit:"), "{}", found.log);
    assert!(found.end_checks.is_empty(), "an answer between tested commits rests on no end: {:?}", found.end_checks);
    assert!(!worktree.exists(), "the worktree is removed");
    assert_eq!(tree_state(&repo), before, "HEAD, status, worktrees and bisect refs are as before");
}

#[test]
fn skips_around_the_culprit_leave_git_undecided_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commits) = toy_repo(dir.path(), 10);
    let before = tree_state(&repo);
    let worktree = dir.path().join("scratch/worktree-2");
    let script = "if [ $n -ge 7 ] && [ $n -le 8 ]; then exit 125; fi; test $n -lt 7";
    let found = bisect::bisect_tree(&repo, &worktree, &commits[0], &commits[9], &step(script), &[]).unwrap();
    let Conclusion::Undecided(revs) = &found.conclusion else { panic!("{found:?}") };
    let mut candidates: Vec<&str> = revs.iter().map(|r| r.subject.as_str()).collect();
    candidates.sort();
    assert_eq!(candidates, ["c7", "c8", "c9"]);
    assert!(!worktree.exists());
    assert_eq!(tree_state(&repo), before);

    let mut skipped = record(&commits[6], Verdict::Skip);
    skipped.reason = "does not build: net/ipv4/tcp_bpf.c:42:1: error: expected ';'".into();
    let report = lab::render::bisect::report(&found, &[skipped], 9, Duration::from_secs(125), false);
    assert!(report.contains("git cannot decide"), "{report}");
    assert!(report.contains(&format!("{} c7  [skip: does not build: net/ipv4/tcp_bpf.c", commits[6])), "{report}");
    assert!(report.contains("not tested (the bad end)"), "{report}");
}

#[test]
fn a_step_that_fails_for_the_lab_stops_git_and_the_worktree_still_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commits) = toy_repo(dir.path(), 6);
    let before = tree_state(&repo);
    let worktree = dir.path().join("scratch/worktree-3");
    let err = bisect::bisect_tree(&repo, &worktree, &commits[0], &commits[5], &step("exit 255"), &[]).unwrap_err();
    assert!(err.to_string().contains("without an answer"), "{err:#}");
    assert!(!worktree.exists());
    assert_eq!(tree_state(&repo), before);
}

fn answer(conclusion: Conclusion) -> bisect::Bisection {
    bisect::Bisection { conclusion, log: String::new(), end_checks: vec![] }
}

#[test]
fn an_answer_next_to_an_untested_end_is_checked_against_that_end() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, commits) = toy_repo(dir.path(), 8);
    let rev = |i: usize| bisect::Rev { commit: commits[i].clone(), subject: format!("c{}", i + 1) };
    let run = |script: &str, n: usize| {
        let worktree = dir.path().join(format!("scratch/worktree-{n}"));
        let found = bisect::bisect_tree(&repo, &worktree, &commits[0], &commits[7], &step(script), &[]).unwrap();
        assert!(!worktree.exists());
        found
    };

    // A case failing everywhere: git names the first commit after good, which the good end refutes.
    let found = run("exit 1", 1);
    assert_eq!(found.conclusion, Conclusion::FirstBad(rev(1)));
    assert_eq!(found.end_checks, [bisect::EndCheck { rev: rev(0), assumed: Verdict::Good, found: Verdict::Bad }]);
    let report = lab::render::bisect::report(&found, &[], 7, Duration::from_secs(1), false);
    assert!(report.contains(&format!("no answer: the good end {} c1 is bad", commits[0])), "{report}");
    assert!(!report.contains("first bad commit"), "{report}");

    // Nothing failing: git names the bad end, which passes.
    let found = run("exit 0", 2);
    assert_eq!(found.end_checks, [bisect::EndCheck { rev: rev(7), assumed: Verdict::Bad, found: Verdict::Good }]);
    let report = lab::render::bisect::report(&found, &[], 7, Duration::from_secs(1), false);
    assert!(report.contains("no answer: the bad end") && report.contains("nothing in the range breaks them"), "{report}");

    // A real culprit right after good: the good end is checked and the answer stands.
    let found = run("test $n -lt 2", 3);
    assert_eq!(found.conclusion, Conclusion::FirstBad(rev(1)));
    assert_eq!(found.end_checks, [bisect::EndCheck { rev: rev(0), assumed: Verdict::Good, found: Verdict::Good }]);
    let report = lab::render::bisect::report(&found, &[], 7, Duration::from_secs(1), false);
    assert!(report.contains(&format!("first bad commit: {} c2", commits[1])), "{report}");
    assert!(report.contains(&format!("checked: the good end {}, which git takes on trust, is good", &commits[0][..12])), "{report}");
    assert_eq!(tree_state(&repo).lines().next(), Some(commits[7].as_str()));
}

#[test]
fn the_report_names_the_commit_shows_the_evidence_and_every_step() {
    let first_bad = "f".repeat(40);
    let steps = [record(&"a".repeat(40), Verdict::Good), record(&first_bad, Verdict::Bad)];
    let found = answer(Conclusion::FirstBad(bisect::Rev { commit: first_bad.clone(), subject: "sock_map: ignore ingress".into() }));
    let report = lab::render::bisect::report(&found, &steps, 17, Duration::from_secs(430), false);
    assert!(report.contains(&format!("first bad commit: {first_bad} sock_map: ignore ingress")), "{report}");
    assert!(report.contains("evidence from its step (debian-6.12-ffffffffffff): why"), "{report}");
    assert!(report.contains("guest: exited 1"), "{report}");
    assert!(report.contains("--- tx_to_rx_via_sockmap_over_ipv4_1kib ---\n-    bytes: 1024\n+    bytes: 0"), "{report}");
    assert!(report.contains("2 step(s) for 17 commit(s) after good, wall time 7m10s"), "{report}");
    assert!(report.contains("1  aaaaaaaaaaaa  good     1m36s  17s  subject of aaaa"), "{report}");

    // The answer is the bad end, never tested: the closest bad step's evidence stands in.
    let untested = answer(Conclusion::FirstBad(bisect::Rev { commit: "e".repeat(40), subject: "tip".into() }));
    let report = lab::render::bisect::report(&untested, &steps, 17, Duration::from_secs(1), false);
    assert!(report.contains("evidence from the closest bad step, ffffffffffff"), "{report}");
}

#[test]
fn kernel_ranges_are_ordered_by_version_within_one_family() {
    let kernels = lab::definition::KernelsDir { dir: common::project_root().join("kernels") };
    let list = bisect::kernel_list(&kernels, "prebuilt-6.12.107..prebuilt-6.12.117").unwrap();
    assert_eq!(list.first().map(String::as_str), Some("prebuilt-6.12.107"));
    assert_eq!(list.last().map(String::as_str), Some("prebuilt-6.12.117"));
    assert!(list.iter().all(|n| n.starts_with("prebuilt-6.12.")), "{list:?}");
    let mut sorted = list.clone();
    sorted.sort_by_key(|n| n.rsplit('.').next().unwrap().parse::<u32>().unwrap());
    assert_eq!(list, sorted);
    assert_eq!(bisect::kernel_list(&kernels, "prebuilt-6.1.0-56,prebuilt-6.12.117").unwrap(), ["prebuilt-6.1.0-56", "prebuilt-6.12.117"]);
    let err = bisect::kernel_list(&kernels, "prebuilt-6.12.117..prebuilt-6.12.107").unwrap_err().to_string();
    assert!(err.contains("must come before"), "{err}");
    let err = bisect::kernel_list(&kernels, "debian-6.1..prebuilt-6.12.117").unwrap_err().to_string();
    assert!(err.contains("not one family"), "{err}");
}

/// The stand-in kernel tree as a git history; the last commit breaks `make bzImage`.
fn fake_kernel_history(root: &Path) -> (Lab, PathBuf) {
    let kernels = kernels_dir(root);
    std::fs::write(kernels.join("fake.toml"), "name = \"fake\"\n[source]\nkind = \"tarball\"\npath = \"/nonexistent.tar.gz\"\n").unwrap();
    let repo = root.join("linux");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(common::project_root().join("lab/tests/fixtures/fake-kernel"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    for i in 1..=3 {
        std::fs::write(repo.join("net/demo.c"), format!("int demo = {i};\n")).unwrap();
        git(&repo, &["commit", "-q", "-am", &format!("net: demo {i}")]);
    }
    let makefile = std::fs::read_to_string(repo.join("Makefile")).unwrap().replace("\t@case \"$$FAKE_BUILD\" in", "\t@case fail in");
    std::fs::write(repo.join("Makefile"), makefile).unwrap();
    git(&repo, &["commit", "-q", "-am", "kbuild: break the build"]);
    let lab = Lab { cache: root.join("cache"), kernels, envs: vec![("CCACHE_DISABLE".into(), "1".into())] };
    (lab, repo)
}

#[test]
fn the_dry_run_prints_the_plan_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (lab, repo) = fake_kernel_history(dir.path());
    let before = tree_state(&repo);
    let good = git(&repo, &["rev-parse", "HEAD~4"]);
    let out = lab.run(&["bisect", "--dry-run", "--tree", repo.to_str().unwrap(), "--good", "HEAD~4", "--bad", "HEAD", "--kernel", "fake", "tx_to_rx::"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("good:     {good} base")), "{t}");
    assert!(t.contains("bad:") && t.contains("kbuild: break the build"), "{t}");
    assert!(t.contains("range:    4 commit(s) after good, about 2 step(s)"), "{t}");
    assert!(t.contains("git worktree add --detach --no-checkout"), "{t}");
    assert!(t.contains("step:     git bisect run ") && t.contains(" bisect-step --kernel fake --log "), "{t}");
    assert!(t.contains(" -- tx_to_rx::\n"), "the filter reaches the step: {t}");
    assert!(t.contains("cases:"), "{t}");
    assert_eq!(tree_state(&repo), before);
    assert!(!dir.path().join("results").exists(), "a dry run writes no results");
    assert!(!lab.cache.join("bisect").exists() || std::fs::read_dir(lab.cache.join("bisect")).unwrap().count() == 0);

    let out = lab.run(&["bisect", "--dry-run", "--tree", repo.to_str().unwrap(), "--good", "HEAD", "--bad", "HEAD~4", "--kernel", "fake"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not an ancestor of --bad"), "{}", text(&out));
}

#[test]
fn a_commit_that_does_not_build_is_skipped_with_the_compiler_error() {
    let dir = tempfile::tempdir().unwrap();
    let (lab, repo) = fake_kernel_history(dir.path());
    let log = dir.path().join("steps.jsonl");
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let out = lab
        .cmd(&["bisect-step", "--kernel", "fake", "--log", log.to_str().unwrap(), "--exe", "/bin/true", "--", "tx_to_rx::"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let steps = bisect::read_log(&log).unwrap();
    assert_eq!(steps.len(), 1);
    let s = &steps[0];
    assert_eq!((s.commit.as_str(), s.subject.as_str(), s.verdict), (head.as_str(), "kbuild: break the build", Verdict::Skip));
    assert!(s.reason.starts_with("does not build:") && s.reason.contains("error: expected ';'"), "{}", s.reason);
    assert!(s.guest.is_none());
    assert!(
        text(&out).contains(&format!("{} kbuild: break the build: skip (does not build: net/ipv4/tcp_bpf.c:42:1: error: expected ';'", &head[..12])),
        "{}",
        text(&out)
    );
    let trees: Vec<_> = std::fs::read_dir(lab.cache.join("work")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(trees.is_empty(), "the commit's build tree is dropped: {trees:?}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the tree is only read");
}

/// git reads any exit code from 1 to 127 but 125 as "bad": a step that fails before it could judge
/// its commit (a bad argument, a definition that does not load) must exit 255 so git stops.
#[test]
fn a_step_that_cannot_start_stops_git_rather_than_blaming_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let lab = common::Lab { cache: dir.path().join("cache"), kernels: common::kernels_dir(dir.path()), envs: vec![] };
    for args in [&["bisect-step", "--kernel", "no-such-kernel"][..], &["bisect-step", "--no-such-flag"][..]] {
        let out = lab.run(args);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {}", common::text(&out));
    }
    // Everything else keeps the lab's own error code.
    assert_eq!(lab.run(&["build", "no-such-kernel"]).status.code(), Some(2));
    assert_eq!(lab.run(&["--no-such-flag"]).status.code(), Some(2));
}
