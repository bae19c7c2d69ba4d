//! The redirect-path suite: build the `testcases` test binaries on the host, run them in a guest,
//! and turn libtest's output plus the per-case result files into typed case results.
//!
//! The guest sees the host's filesystem, so the binaries built here run there as they are; only
//! the run's own results folder is writable from the guest (reviewing included: the `.snap.new`
//! files go there too, so two runs never touch each other's files, nor `snapshots/`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cache::Entry;
use crate::definition::{Definition, Profile};
use crate::findings;
// Re-exported for the lab's integration tests and older callers; the lab itself reads them from `cases`.
pub use crate::cases::{failure_excerpt, path_of, tally, CaseResult, Status, Tally, PATHS};
use crate::process;
use crate::runs;
use crate::progress::Step;
pub use crate::shards::Ignored;
use crate::shards::{self, Part, Selection, Shard};
use crate::vm::{self, GuestRun, VmConfig};

/// Everything one suite run established, written as `summary.json` in its results folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub kernel: String,
    /// The run's id: its results are `results/<kernel>/runs/<run>/` (empty for a bisect step,
    /// whose results are the step's own folder).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run: String,
    pub release: String,
    pub accel: String,
    /// How the guest run ended (exited, panicked, hung...).
    pub guest: serde_json::Value,
    pub guest_seconds: f64,
    /// How many guests the cases were dealt to (`guest_seconds` is the longest one's).
    #[serde(default = "one")]
    pub guests: usize,
    pub cases: Vec<CaseResult>,
    /// How many cases the suite binaries list for the filter: every one of them must end with a
    /// verdict, or the run says which did not.
    #[serde(default)]
    pub listed: usize,
    /// Whether libtest started running cases in the guest: a guest that fails before that says
    /// nothing about the kernel's data path (a boot failure), whatever it did.
    #[serde(default)]
    pub suite_started: bool,
    /// What went wrong with the run itself, beside failing cases: a suite binary that exited
    /// non-zero with no failed case, a binary that never reported its exit.
    #[serde(default)]
    pub problems: Vec<String>,
    /// vng delivered none of the guest command's output, and the verdicts were read from the
    /// kernel console, where the guest had printed them (seen on a host under heavy load).
    #[serde(default)]
    pub output_from_console: bool,
    /// Why a first attempt was thrown away and the guest booted again (a boot failure), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<String>,
    /// Cases by verdict over the whole run, known findings apart from plain failures.
    #[serde(default)]
    pub totals: Tally,
    /// The known findings that explain failures of this run: id → title and upstream status.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub findings: std::collections::BTreeMap<String, String>,
    /// The kernel family whose snapshots judged every case (`--judge-as`), when not the guest's own:
    /// such a run says how the kernel compares with that family, not whether it is right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_as: Option<String>,
}

fn one() -> usize {
    1
}

impl RunReport {
    /// Fills in what is derived from the cases: the totals and the findings that explain some.
    pub fn with_findings(mut self, known: &[findings::Finding]) -> RunReport {
        self.totals = Tally::of(&self.cases);
        self.findings = known
            .iter()
            .filter(|f| self.cases.iter().any(|c| c.is_known_finding() && c.finding.as_deref() == Some(f.id.as_str())))
            .map(|f| (f.id.clone(), format!("{} (upstream: {})", f.title, f.upstream)))
            .collect();
        self
    }

    pub fn count(&self, status: Status) -> usize {
        self.cases.iter().filter(|c| c.status == status).count()
    }

    /// A case that did not pass, was not unsupported or ignored, or a run that went wrong: the
    /// run is not a pass.
    pub fn failed(&self) -> bool {
        self.cases.iter().any(|c| c.status.is_failure()) || !self.problems.is_empty()
    }

    /// The suite's cases that ended with a verdict (not crashed, not left unrun), without the
    /// whole-run pseudo-case (kmemleak): what "ran no cases" counts.
    pub fn with_verdict(&self) -> usize {
        self.cases.iter().filter(|c| c.name != KMEMLEAK_CASE && !c.status.no_verdict()).count()
    }
}

#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Only cases whose name contains this.
    pub filter: Option<String>,
    /// Write `.snap.new` files instead of failing on a changed snapshot.
    pub review: bool,
    /// Test-only: the case whose name contains this aborts its test binary (a crash in the middle
    /// of a suite, to prove the lab reports it).
    pub abort_case: Option<String>,
    /// Compare with this kernel family's snapshot variants instead of the guest's own family.
    pub judge_as: Option<String>,
    /// Write into this folder (emptied first) instead of a new run of `results/<kernel>/`: a
    /// bisect step keeps its results with the bisect's.
    pub results: Option<PathBuf>,
    /// Guests to deal the cases to, side by side ([`shards`]); 0 and 1 both mean one.
    pub guests: usize,
}

/// A finished suite run: the report, the raw guest run, and where the results are.
pub struct SuiteRun {
    pub report: RunReport,
    pub guest: GuestRun,
    pub results: PathBuf,
    pub cfg: VmConfig,
    /// The run's folder under `results/<kernel>/runs/`, to be published as `latest` once every
    /// output is written (none when the caller chose the folder).
    pub run: Option<runs::Run>,
}

/// Where `kernel`'s runs go: `results/<kernel>/runs/<id>/`, `results/<kernel>/latest`.
pub fn results_group(project: &Path, kernel: &str) -> PathBuf {
    project.join("results").join(kernel)
}

/// Run the suite binaries on a built kernel; results land in a new run folder of
/// `results/<kernel>/` (see [`runs`]), or in `opts.results`.
pub fn run(def: &Definition, entry: &Entry, project: &Path, exes: &[PathBuf], mut cfg: VmConfig, opts: &SuiteOptions) -> anyhow::Result<SuiteRun> {
    let (results, run) = match &opts.results {
        Some(dir) => {
            fresh_dir(dir)?;
            (dir.clone(), None)
        }
        None => {
            let run = runs::start(&results_group(project, &def.name))?;
            (run.dir.clone(), Some(run))
        }
    };
    cfg.rwdirs.push(results.clone());
    // libtest prints every case's name and verdict, so a long quiet spell is a stuck case: found in
    // minutes, while the total timeout only has to bound a whole suite on a slow host.
    cfg.silence.get_or_insert(SUITE_SILENCE * wait_scale(def.profile));
    let listed = list_binaries(exes, opts.filter.as_deref())?;
    let findings = findings::load(&project.join("snapshots"))?;
    let kernel = findings::Kernel::new(&entry.manifest.release, &def.patches);
    let ignored = plan_ignored(exes, opts.filter.as_deref(), |test| findings::may_run_ignored(&findings, &kernel, test))?;
    let plan = shards::plan(&listed, &ignored, opts.filter.as_deref(), opts.guests);
    let guests = run_guests(def, entry, &plan, &results, project, &cfg, opts)?;
    let mut read = Verdicts::default();
    for (shard, guest) in plan.iter().zip(&guests) {
        read.add(shard, guest, &listed, &results, plan.len());
    }
    read.in_listing_order(&listed);
    read.cases.extend(kmemleak_case(&results, plan.len()));
    findings::annotate(&mut read.cases, &findings, &kernel, &project.join("snapshots"));
    let (guest, worst) = shards::merge(guests);
    cfg.console_log = shards::console_log(&cfg.console_log, worst);
    let report = RunReport {
        kernel: def.name.clone(),
        run: run.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        release: entry.manifest.release.clone(),
        accel: cfg.accel.as_str().into(),
        guest: serde_json::to_value(&guest.outcome)?,
        guest_seconds: guest.wall.as_secs_f64(),
        guests: plan.len(),
        problems: read.problems,
        output_from_console: read.from_console,
        suite_started: read.started,
        listed: listed.iter().map(|(_, c)| c.len()).sum(),
        cases: read.cases,
        retried: None,
        totals: Tally::default(),
        findings: Default::default(),
        judged_as: opts.judge_as.clone(),
    }
    .with_findings(&findings);
    std::fs::write(results.join("summary.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(SuiteRun { report, guest, results, cfg, run })
}

/// Boot one guest per shard of `plan`, side by side, each with its own script and console log.
fn run_guests(def: &Definition, entry: &Entry, plan: &[Shard], results: &Path, project: &Path, cfg: &VmConfig, opts: &SuiteOptions) -> anyhow::Result<Vec<GuestRun>> {
    let where_ = if plan.len() == 1 { "the guest".to_string() } else { format!("{} guests", plan.len()) };
    let step = Step::start(&format!("{}: running the suite in {where_} ({})", def.name, cfg.accel.as_str()));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let image = entry.kernel_image();
    let runs: Vec<anyhow::Result<GuestRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .iter()
            .map(|shard| {
                let mut cfg = cfg.clone();
                cfg.console_log = shards::console_log(&cfg.console_log, shard.index);
                let script = guest_script(&shard.parts, results, project, opts, def.profile, &kmemleak_file(shard.index, plan.len()));
                let (step, done, image) = (&step, &done, &image);
                s.spawn(move || {
                    let on_line = vm::by_line(|line| {
                        if line.starts_with("test ") && line.contains(" ... ") {
                            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            step.message(&format!("{n} cases; {}", line.trim()));
                        }
                    });
                    vm::run(image, &["sh".into(), "-c".into(), script], &cfg, on_line)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a guest's thread panicked")))).collect()
    });
    let runs = runs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    step.finish(&format!("{} cases", done.into_inner()));
    Ok(runs)
}

/// What the guests of a run established, read one guest at a time.
#[derive(Default)]
struct Verdicts {
    /// By libtest name, in the order the guests reported them.
    named: Vec<(String, CaseResult)>,
    /// In listing order, once every guest is read.
    cases: Vec<CaseResult>,
    problems: Vec<String>,
    started: bool,
    from_console: bool,
}

impl Verdicts {
    /// `guest`'s verdicts on the cases of its `shard` (one of `of`), and what went wrong with it.
    fn add(&mut self, shard: &Shard, guest: &GuestRun, listed: &[(PathBuf, Vec<String>)], results: &Path, of: usize) {
        let (output, from_console) = suite_output(guest);
        let cases = collect_verdicts(&output, results, &shard.cases(listed));
        let ran: Vec<PathBuf> = shard.parts.iter().filter(|p| binary_args(p).0.is_some()).map(|p| p.exe.clone()).collect();
        let who = if of == 1 { String::new() } else { format!("guest {} of {of}: ", shard.index + 1) };
        let plain: Vec<CaseResult> = cases.iter().map(|(_, c)| c.clone()).collect();
        self.problems.extend(run_problems(&output, &ran, &plain).into_iter().map(|p| format!("{who}{p}")));
        self.started |= suite_started(&output);
        self.from_console |= from_console;
        self.named.extend(cases);
    }

    /// The cases in the order the binaries list them, whichever guest ran each, so that runs with
    /// any number of guests read alike.
    fn in_listing_order(&mut self, listed: &[(PathBuf, Vec<String>)]) {
        let order: std::collections::HashMap<&str, usize> = listed.iter().flat_map(|(_, c)| c).enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut named = std::mem::take(&mut self.named);
        named.sort_by_key(|(test, _)| order.get(test.as_str()).copied().unwrap_or(usize::MAX));
        self.cases = named.into_iter().map(|(_, c)| c).collect();
    }
}

/// The suite's output: the guest command's own, or, when vng delivered none of it while the kernel
/// console holds libtest's lines, the console's (colours stripped); and whether it is the console's.
fn suite_output(guest: &GuestRun) -> (String, bool) {
    let output = String::from_utf8_lossy(&guest.stdout).into_owned();
    if suite_started(&output) {
        return (output, false);
    }
    let console = strip_ansi_escapes::strip_str(&guest.console);
    if suite_started(&console) {
        (console, true)
    } else {
        (output, false)
    }
}

/// Build the suite's test binaries (host side) and return their paths.
pub fn build_binaries(project: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let step = Step::start("building the suite");
    let mut exes = Vec::new();
    for msg in process::cargo_artifacts(project, &["test", "-p", "testcases", "--no-run"])? {
        let is_test_target = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, true, Some(exe)) = (msg["profile"]["test"] == true, is_test_target, msg["executable"].as_str()) {
            exes.push(PathBuf::from(exe));
        }
    }
    anyhow::ensure!(!exes.is_empty(), "cargo built no test binaries for the suite");
    step.finish(&format!("{} test binaries", exes.len()));
    Ok(exes)
}

/// How long a suite guest may print nothing before it counts as hung (times [`wait_scale`]).
pub const SUITE_SILENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// A debug kernel under TCG is several times slower: the cases' bounded waits stretch with it.
fn wait_scale(profile: Profile) -> u32 {
    match profile {
        Profile::Debug => 6,
        Profile::Default => 1,
    }
}

/// Each binary's [`Ignored`] for `filter`, in the order of `exes`; `may_run` judges a case by its
/// libtest name ([`findings::may_run_ignored`]).
pub fn plan_ignored(exes: &[PathBuf], filter: Option<&str>, may_run: impl Fn(&str) -> bool) -> anyhow::Result<Vec<Ignored>> {
    let mut plans = Vec::new();
    for exe in exes {
        let (run, skip) = list_tests(exe, filter, true)?.into_iter().partition(|t| may_run(t));
        plans.push(Ignored { run, skip });
    }
    Ok(plans)
}

/// A guest's script: runs each binary of `parts`, one case at a time, with the `#[ignore]`d cases
/// its [`Ignored`] says it may run (the others are reported ignored, as libtest would); kmemleak's
/// report goes to `kmemleak` in `results`.
pub fn guest_script(parts: &[Part], results: &Path, project: &Path, opts: &SuiteOptions, profile: Profile, kmemleak: &str) -> String {
    let review = opts.review;
    let wait_scale = wait_scale(profile);
    let mut script = format!(
        "export LAB_IN_GUEST=1 LAB_RESULTS_DIR={} INSTA_WORKSPACE_ROOT={} INSTA_PENDING_DIR={} INSTA_UPDATE={} INSTA_FORCE_PASS=0 CI=1 LAB_WAIT_SCALE={wait_scale} LAB_TEST_ABORT_CASE={} LAB_JUDGE_AS={}; rc=0; ",
        shell_words::quote(&results.display().to_string()),
        shell_words::quote(&project.display().to_string()),
        shell_words::quote(&pending_dir(results).display().to_string()),
        if review { "new" } else { "no" },
        shell_words::quote(opts.abort_case.as_deref().unwrap_or("")),
        shell_words::quote(opts.judge_as.as_deref().unwrap_or("")),
    );
    // kmemleak (debug kernels) reports per boot: forget what boot itself left, so that what remains
    // after the suite is the suite's.
    script.push_str(&format!(
        "KML={KMEMLEAK}; [ -e $KML ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null; \
         if [ -w $KML ]; then echo scan > $KML; echo clear > $KML; fi; "
    ));
    for part in parts {
        let (args, skipped) = binary_args(part);
        for test in skipped {
            script.push_str(&format!("echo {}; ", shell_words::quote(&format!("test {test} ... ignored"))));
        }
        let Some(args) = args else { continue };
        // libtest's own summary line is lost when the binary dies: its exit status is printed so the
        // host can tell a binary that crashed from one that finished.
        script.push_str(&format!(
            "{}; code=$?; echo; echo \"{EXIT_MARKER}{} exited $code\"; [ $code = 0 ] || rc=1; ",
            shell_words::join(&args),
            binary_name(&part.exe),
        ));
    }
    // kmemleak only reports objects older than 5 s (MSECS_MIN_AGE) and suggests a second scan
    // against false positives, so this one wait is the kernel's rule, not a guess.
    script.push_str(&format!(
        "if [ -w $KML ]; then sleep 6; echo scan > $KML; echo scan > $KML; cat $KML > {}; fi; ",
        shell_words::quote(&results.join(kmemleak).display().to_string()),
    ));
    script.push_str("exit $rc");
    script
}

/// A binary's command line for its [`Part`] (none when the part is only cases it must not run),
/// and the ignored cases it must not run (their verdict is printed for them).
fn binary_args(part: &Part) -> (Option<Vec<String>>, Vec<String>) {
    let mut args = vec![part.exe.display().to_string(), "--test-threads=1".to_string()];
    let ignored = &part.ignored;
    let skipped = if ignored.run.is_empty() { Vec::new() } else { ignored.skip.clone() };
    if !ignored.run.is_empty() {
        args.push("--include-ignored".to_string());
    }
    match &part.select {
        Selection::Filter(filter) => {
            // libtest's --skip is a substring match: full names match only themselves.
            args.extend(skipped.iter().flat_map(|t| ["--skip".to_string(), t.clone()]));
            args.extend(filter.clone());
        }
        Selection::Exact(names) => {
            let run: Vec<String> = names.iter().filter(|n| !skipped.contains(n)).cloned().collect();
            if run.is_empty() {
                // libtest with no name runs every case.
                return (None, skipped);
            }
            args.push("--exact".to_string());
            args.extend(run);
        }
    }
    (Some(args), skipped)
}

/// Where a review run's `.snap.new` files go: in the run's own folder, not beside the snapshots,
/// where another run would overwrite them (or delete them, insta's cleanup of a passing case).
/// `cargo insta review` finds them with `INSTA_PENDING_DIR` set to this folder.
pub fn pending_dir(results: &Path) -> PathBuf {
    results.join("pending")
}

/// What the guest prints after each suite binary: `sockmap-lab: suite binary NAME exited CODE`.
const EXIT_MARKER: &str = "sockmap-lab: suite binary ";

fn binary_name(exe: &Path) -> String {
    exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The cases each suite binary lists for `filter`, by libtest name: what a complete run must
/// report a verdict for. Listing runs on the host (it starts no case) and uses libtest's own filter.
pub fn list_cases(exes: &[PathBuf], filter: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(list_binaries(exes, filter)?.into_iter().flat_map(|(_, cases)| cases).collect())
}

/// [`list_cases`], binary by binary.
pub fn list_binaries(exes: &[PathBuf], filter: Option<&str>) -> anyhow::Result<Vec<(PathBuf, Vec<String>)>> {
    exes.iter().map(|exe| Ok((exe.clone(), list_tests(exe, filter, false)?))).collect()
}

/// One binary's tests for `filter` (only the `#[ignore]`d ones with `ignored`).
fn list_tests(exe: &Path, filter: Option<&str>, ignored: bool) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new(exe)
        .arg("--list")
        .args(ignored.then_some("--ignored"))
        .args(filter)
        .output()
        .with_context(|| format!("cannot run {} --list", exe.display()))?;
    anyhow::ensure!(out.status.success(), "{} --list failed: {}", exe.display(), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_suffix(": test")).map(str::to_string).collect())
}

/// Whether libtest got as far as running cases.
pub fn suite_started(output: &str) -> bool {
    output.lines().any(|l| l.starts_with("running ") && l.ends_with(" tests") || l.starts_with("test ") && l.contains(" ... "))
}

/// Each suite binary's exit code as the guest printed it.
fn binary_exits(output: &str) -> Vec<(String, i32)> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(EXIT_MARKER)?.rsplit_once(" exited "))
        .filter_map(|(name, code)| Some((name.to_string(), code.trim().parse().ok()?)))
        .collect()
}

/// What the run's exit statuses say that its cases do not: a binary that exited non-zero with no
/// failed or crashed case (something outside the cases went wrong), a binary that never reported.
fn run_problems(output: &str, exes: &[PathBuf], cases: &[CaseResult]) -> Vec<String> {
    let exits = binary_exits(output);
    let failing = cases.iter().any(|c| matches!(c.status, Status::Failed | Status::Crashed));
    let mut problems = Vec::new();
    for exe in exes {
        let name = binary_name(exe);
        match exits.iter().find(|(n, _)| *n == name) {
            None if suite_started(output) => problems.push(format!("suite binary {name} never reported its exit (the guest stopped while it ran)")),
            None => {}
            Some((_, code)) if *code != 0 && !failing => {
                problems.push(format!("suite binary {name} exited {code} with no failed case"))
            }
            Some(_) => {}
        }
    }
    problems
}

/// The case libtest announced last without a verdict: the one running when its binary died.
fn running_case(output: &str, finished: &[(String, Status, Option<String>)]) -> Option<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.split_once(" ... ").map(|(name, _)| name.trim().to_string()))
        .filter(|name| !finished.iter().any(|c| c.0 == *name))
        .last()
}

/// The guest output from the crashed case's `test NAME ...` line on: its last words.
fn crash_context(output: &str, name: &str) -> String {
    let start = output.find(&format!("test {name} ... ")).unwrap_or(0);
    let after: Vec<&str> = output[start..].lines().take(40).collect();
    after.join("\n")
}

/// Read libtest's human output: `test NAME ... ok|FAILED|ignored`, then the failures section.
pub fn parse_libtest(output: &str) -> Vec<(String, Status, Option<String>)> {
    let verdict = |word: &str| match word.trim() {
        "ok" => Some(Status::Passed),
        "FAILED" => Some(Status::Failed),
        v if v.starts_with("ignored") => Some(Status::Ignored),
        _ => None,
    };
    let mut cases: Vec<(String, Status, Option<String>)> = Vec::new();
    // Output a case prints outside libtest's capture (insta's "stored new snapshot" notice in review
    // mode) lands between "test NAME ... " and its verdict; the verdict then ends a later line.
    let mut pending: Option<String> = None;
    for line in output.lines() {
        if let Some((name, rest)) = line.strip_prefix("test ").and_then(|r| r.split_once(" ... ")) {
            match verdict(rest) {
                Some(status) => cases.push((name.trim().to_string(), status, None)),
                None => pending = Some(name.trim().to_string()),
            }
            continue;
        }
        if let Some(name) = pending.as_ref() {
            if let Some(status) = line.split_whitespace().last().and_then(verdict) {
                cases.push((name.clone(), status, None));
                pending = None;
            }
        }
    }
    // libtest prints "---- NAME stdout ----" followed by the captured output and panic message.
    let mut current: Option<(String, String)> = None;
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            if let Some(done) = current.take() {
                sections.push(done);
            }
            current = Some((name.to_string(), String::new()));
        } else if line == "failures:" || line.starts_with("test result:") {
            if let Some(done) = current.take() {
                sections.push(done);
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    for (name, text) in sections {
        if let Some(case) = cases.iter_mut().find(|c| c.0 == name) {
            case.2 = Some(text.trim_end().to_string());
        }
    }
    cases
}

/// The result files the cases wrote, by libtest name (each file's `test` field).
fn result_files(results: &Path) -> std::collections::HashMap<String, serde_json::Value> {
    std::fs::read_dir(results)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter_map(|v| Some((v["test"].as_str()?.to_string(), v)))
                .collect()
        })
        .unwrap_or_default()
}

const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";
const KMEMLEAK_FILE: &str = "kmemleak.txt";
/// The pseudo-case that carries kmemleak's verdict on the whole run (kernels built with kmemleak).
pub const KMEMLEAK_CASE: &str = "kmemleak_after_suite";

/// Where a guest writes kmemleak's report: the run's own file, or one per guest.
fn kmemleak_file(index: usize, of: usize) -> String {
    if of == 1 {
        KMEMLEAK_FILE.to_string()
    } else {
        format!("kmemleak.guest{}.txt", index + 1)
    }
}

/// kmemleak's report after the suite, as one more case: objects nobody references are a leak some
/// case caused, though kmemleak cannot say which. The reports of `guests` guests become one; a
/// guest that wrote none (it did not get that far) leaves the case not run, never clean.
fn kmemleak_case(results: &Path, guests: usize) -> Option<CaseResult> {
    if guests > 1 {
        let reports: Vec<Option<String>> = (0..guests).map(|i| std::fs::read_to_string(results.join(kmemleak_file(i, guests))).ok()).collect();
        if reports.iter().all(Option::is_none) {
            return None;
        }
        let missing: Vec<String> = (0..guests).filter(|i| reports[*i].is_none()).map(|i| format!("{}", i + 1)).collect();
        if !missing.is_empty() {
            let why = format!("not run: kmemleak: guest(s) {} of {guests} wrote no report (the suite did not finish there), so their leaks are unknown", missing.join(", "));
            return Some(CaseResult { name: KMEMLEAK_CASE.into(), path: "other".into(), status: Status::NotRun, observation: None, failure: Some(why), snapshot: None, finding: None });
        }
        let merged: Vec<String> = reports.iter().flatten().enumerate().map(|(i, r)| format!("=== guest {} of {guests} ===\n{r}", i + 1)).collect();
        std::fs::write(results.join(KMEMLEAK_FILE), merged.join("\n")).ok()?;
    }
    let report = std::fs::read_to_string(results.join(KMEMLEAK_FILE)).ok()?;
    let leaks = report.matches("unreferenced object").count();
    let (status, failure) = if leaks == 0 {
        (Status::Passed, None)
    } else {
        let shown: String = report.lines().take(60).collect::<Vec<_>>().join("\n");
        (Status::Failed, Some(format!("kmemleak: {leaks} unreferenced objects after the suite:\n{shown}")))
    };
    let observation = serde_json::json!({ "unreferenced_objects": leaks });
    Some(CaseResult { name: KMEMLEAK_CASE.into(), path: "other".into(), status, observation: Some(observation), failure, snapshot: None, finding: None })
}

/// Merge libtest's verdicts with the result files the cases wrote into `results`, and account for
/// every `listed` case: one without a verdict crashed (the one that was running) or was not run.
pub fn collect(output: &str, results: &Path, listed: &[String]) -> Vec<CaseResult> {
    let mut cases: Vec<CaseResult> = collect_verdicts(output, results, listed).into_iter().map(|(_, c)| c).collect();
    cases.extend(kmemleak_case(results, 1));
    cases
}

/// [`collect`] without kmemleak's pseudo-case (one guest's cases), each with its libtest name.
fn collect_verdicts(output: &str, results: &Path, listed: &[String]) -> Vec<(String, CaseResult)> {
    let mut records = result_files(results);
    let mut verdicts = parse_libtest(output);
    let running = running_case(output, &verdicts);
    for name in listed {
        if verdicts.iter().any(|c| c.0 == *name) {
            continue;
        }
        let (status, why) = if running.as_deref() == Some(name.as_str()) {
            (Status::Crashed, format!("crashed: no verdict, the case was running when its test binary died; guest output from its start:\n{}", crash_context(output, name)))
        } else {
            (Status::NotRun, "not run: the suite stopped before this case started".to_string())
        };
        verdicts.push((name.clone(), status, Some(why)));
    }
    verdicts
        .into_iter()
        .map(|(test, mut status, failure)| {
            let record = records.remove(&test);
            if status == Status::Passed && record.as_ref().is_some_and(|r| r["status"] == "unsupported") {
                status = Status::Unsupported;
            }
            // The case's own name (what its snapshot is called) reads better than rstest's.
            let name = record.as_ref().and_then(|r| r["case"].as_str()).map(str::to_string).unwrap_or_else(|| test.clone());
            let snapshot = record.as_ref().and_then(|r| r["snapshot"].as_str()).map(str::to_string);
            let observation = record.and_then(|r| r.get("observation").cloned());
            (test, CaseResult { path: path_of(&name), name, status, observation, failure, snapshot, finding: None })
        })
        .collect()
}

/// Make a fresh, empty results folder.
pub fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 3 tests
test tx_to_rx::map_1_Sockmap::family_1_Ipv4::payload_1_OneByte ... ok
test rx_to_tx::map_2_Sockhash::family_3_Udp::payload_2_OneKib ... ok
test tx_to_tx_via_sockmap_over_ipv4_drop ... FAILED

failures:

---- tx_to_tx_via_sockmap_over_ipv4_drop stdout ----
Snapshot: tx_to_tx_via_sockmap_over_ipv4_drop
-    bytes: 0
+    bytes: 1
thread 'tx_to_tx_via_sockmap_over_ipv4_drop' panicked at tests/redirect.rs:10:5:
snapshot assertion for 'tx_to_tx_via_sockmap_over_ipv4_drop' failed

failures:
    tx_to_tx_via_sockmap_over_ipv4_drop

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s
";

    #[test]
    fn libtest_output_becomes_cases_with_their_failure_text() {
        let cases = parse_libtest(OUTPUT);
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].1, Status::Passed);
        let failed = &cases[2];
        assert_eq!(failed.1, Status::Failed);
        let text = failed.2.as_deref().unwrap();
        assert!(text.contains("+    bytes: 1") && text.contains("panicked"), "{text}");
    }

    #[test]
    fn kmemleak_reports_become_one_case_that_fails_only_on_a_leak() {
        let dir = tempfile::tempdir().unwrap();
        assert!(collect(OUTPUT, dir.path(), &[]).iter().all(|c| c.name != KMEMLEAK_CASE), "no report, no case");
        std::fs::write(dir.path().join(KMEMLEAK_FILE), "").unwrap();
        let clean = collect(OUTPUT, dir.path(), &[]).into_iter().find(|c| c.name == KMEMLEAK_CASE).unwrap();
        assert_eq!((clean.status, clean.path.as_str()), (Status::Passed, "other"));
        let report = "unreferenced object 0xffff888003b1c000 (size 1024):\n  comm \"kworker/0:1\"\n  backtrace:\n    sk_psock_init+0x2a/0x300\n";
        std::fs::write(dir.path().join(KMEMLEAK_FILE), report).unwrap();
        let leak = collect(OUTPUT, dir.path(), &[]).into_iter().find(|c| c.name == KMEMLEAK_CASE).unwrap();
        assert_eq!(leak.status, Status::Failed);
        assert!(leak.failure.unwrap().contains("1 unreferenced objects after the suite:\nunreferenced object 0xffff888003b1c000"));
    }

    #[test]
    fn the_kmemleak_reports_of_several_guests_make_one_case() {
        let dir = tempfile::tempdir().unwrap();
        assert!(kmemleak_case(dir.path(), 2).is_none(), "no guest reported: no case");
        std::fs::write(dir.path().join("kmemleak.guest1.txt"), "").unwrap();
        std::fs::write(dir.path().join("kmemleak.guest2.txt"), "unreferenced object 0xffff888003b1c000 (size 64):\n").unwrap();
        let case = kmemleak_case(dir.path(), 3).unwrap();
        assert_eq!(case.status, Status::NotRun, "guest 3 wrote no report: nothing is said clean");
        assert!(case.failure.unwrap().contains("guest(s) 3 of 3 wrote no report"));
        let case = kmemleak_case(dir.path(), 2).unwrap();
        assert_eq!(case.status, Status::Failed);
        assert!(case.failure.unwrap().contains("1 unreferenced objects after the suite:\n=== guest 1 of 2 ===\n\n=== guest 2 of 2 ==="));
    }

    #[test]
    fn the_cases_of_several_guests_read_in_listing_order() {
        let dir = tempfile::tempdir().unwrap();
        let listed = vec![(PathBuf::from("/t/r"), ["r::a", "r::b", "r::c"].map(String::from).to_vec())];
        let mut read = Verdicts::default();
        read.named.extend(collect_verdicts("test r::b ... ok\n", dir.path(), &["r::b".to_string()]));
        read.named.extend(collect_verdicts("test r::a ... ok\ntest r::c ... FAILED\n", dir.path(), &["r::a".to_string(), "r::c".to_string()]));
        read.in_listing_order(&listed);
        let got: Vec<(&str, Status)> = read.cases.iter().map(|c| (c.name.as_str(), c.status)).collect();
        assert_eq!(got, [("r::a", Status::Passed), ("r::b", Status::Passed), ("r::c", Status::Failed)]);
    }

    #[test]
    fn a_verdict_after_interleaved_output_is_still_read() {
        let out = "test tx_to_rx::a ... stored new snapshot /work/main/snapshots/x.snap.new\nok\ntest tx_to_rx::b ... \ninfo: something\nFAILED\n";
        let cases = parse_libtest(out);
        assert_eq!(cases.iter().map(|c| (c.0.as_str(), c.1)).collect::<Vec<_>>(), [("tx_to_rx::a", Status::Passed), ("tx_to_rx::b", Status::Failed)]);
    }

    #[test]
    fn result_files_mark_unsupported_cases() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rx_to_tx_via_sockhash_over_udp_1kib.json"),
            r#"{"case":"rx_to_tx_via_sockhash_over_udp_1kib","test":"rx_to_tx::map_2_Sockhash::family_3_Udp::payload_2_OneKib","status":"unsupported","observation":{"error":"EOPNOTSUPP"}}"#,
        )
        .unwrap();
        let cases = collect(OUTPUT, dir.path(), &[]);
        assert_eq!(cases[1].status, Status::Unsupported);
        assert_eq!(cases[1].name, "rx_to_tx_via_sockhash_over_udp_1kib");
        assert_eq!(cases[1].observation.as_ref().unwrap()["error"], "EOPNOTSUPP");
        assert_eq!(cases[1].path, "rx_to_tx");
        let rows = tally(&cases);
        let t = |passed, failed, unsupported| Tally { passed, failed, unsupported, ..Tally::default() };
        assert_eq!(rows, vec![("tx_to_rx".to_string(), t(1, 0, 0)), ("tx_to_tx".into(), t(0, 1, 0)), ("rx_to_tx".into(), t(0, 0, 1))]);
    }

    #[test]
    fn a_review_writes_its_new_snapshots_into_its_own_run_folder() {
        let results = Path::new("/p/results/k/runs/20261202T210356.123Z-7-0");
        let opts = SuiteOptions { review: true, ..Default::default() };
        let script = &guest_script(&whole("/t/redirect-0123"), results, Path::new("/p"), &opts, Profile::Default, KMEMLEAK_FILE);
        assert!(script.contains("INSTA_PENDING_DIR=/p/results/k/runs/20261202T210356.123Z-7-0/pending "), "{script}");
        assert!(script.contains("INSTA_UPDATE=new "), "{script}");
    }

    #[test]
    fn judging_as_a_family_reaches_the_guest() {
        let opts = SuiteOptions { judge_as: Some("6.1".into()), ..Default::default() };
        let script = &guest_script(&whole("/t/redirect-0123"), Path::new("/r"), Path::new("/p"), &opts, Profile::Default, KMEMLEAK_FILE);
        assert!(script.contains(" LAB_JUDGE_AS=6.1;"), "{script}");
        let script = &guest_script(&whole("/t/redirect-0123"), Path::new("/r"), Path::new("/p"), &SuiteOptions::default(), Profile::Default, KMEMLEAK_FILE);
        assert!(script.contains(" LAB_JUDGE_AS='';"), "{script}");
    }

    /// One binary, run whole (no filter, no ignored case allowed).
    fn whole(exe: &str) -> Vec<Part> {
        vec![Part { exe: PathBuf::from(exe), select: Selection::Filter(None), ignored: Ignored::default() }]
    }

    #[test]
    fn only_the_ignored_cases_a_fix_allows_run() {
        let script = |ignored: Ignored| {
            let parts = [Part { exe: PathBuf::from("/t/redirect-0123"), select: Selection::Filter(None), ignored }];
            guest_script(&parts, Path::new("/r"), Path::new("/p"), &SuiteOptions::default(), Profile::Default, KMEMLEAK_FILE)
        };
        let none = script(Ignored { run: vec![], skip: vec!["m::panics".into()] });
        assert!(!none.contains("--include-ignored") && !none.contains("--skip"), "libtest reports them ignored itself: {none}");
        let some = script(Ignored { run: vec!["m::fixed".into()], skip: vec!["m::panics".into()] });
        assert!(some.contains("'--test-threads=1' --include-ignored --skip m::panics;"), "{some}");
        assert!(some.contains("echo 'test m::panics ... ignored'; "), "the skipped case still gets its verdict: {some}");
        let verdicts = parse_libtest("test m::panics ... ignored\ntest m::fixed ... ok\n");
        assert_eq!(verdicts.iter().map(|v| v.1).collect::<Vec<_>>(), [Status::Ignored, Status::Passed]);
    }

    #[test]
    fn a_guest_runs_exactly_its_share_and_never_a_binary_with_nothing_left_to_run() {
        let part = |names: &[&str], ignored: Ignored| Part {
            exe: PathBuf::from("/t/teardown-1"),
            select: Selection::Exact(names.iter().map(|n| n.to_string()).collect()),
            ignored,
        };
        let script = |parts: &[Part]| guest_script(parts, Path::new("/r"), Path::new("/p"), &SuiteOptions::default(), Profile::Default, "kmemleak.guest2.txt");
        let share = script(&[part(&["t::a", "t::b"], Ignored::default())]);
        assert!(share.contains("/t/teardown-1 '--test-threads=1' --exact t::a t::b;"), "{share}");
        assert!(share.contains("> /r/kmemleak.guest2.txt;"), "{share}");
        let fixed = script(&[part(&["t::a", "t::crash", "t::fixed"], Ignored { run: vec!["t::fixed".into()], skip: vec!["t::crash".into()] })]);
        assert!(fixed.contains("--include-ignored --exact t::a t::fixed;"), "{fixed}");
        assert!(fixed.contains("echo 'test t::crash ... ignored'; "), "{fixed}");
        let only_skipped = script(&[part(&["t::crash"], Ignored { run: vec!["t::fixed".into()], skip: vec!["t::crash".into()] })]);
        assert!(!only_skipped.contains("/t/teardown-1 "), "--exact with no name would run every case: {only_skipped}");
        assert!(only_skipped.contains("echo 'test t::crash ... ignored'; "), "{only_skipped}");
    }

    #[test]
    fn verdicts_that_only_reached_the_console_are_read_from_there() {
        // As the console had them: CRLF, colours, a kernel message cutting into a case's line.
        let console = "[    1.0] virtme-ng-init: running\r\nrunning 2 tests\r\n\
            test t::a ... clocksource: Long readout interval, skipping watchdog check\r\n\
            \x1b[32mok\x1b[m\x0f\r\n\
            test t::b ... \x1b[31mFAILED\x1b[m\x0f\r\n";
        let guest = GuestRun { outcome: crate::vm::Outcome::Exited { code: 1 }, stdout: vec![], console: console.into(), wall: std::time::Duration::from_secs(1) };
        let (output, from_console) = suite_output(&guest);
        assert!(from_console);
        let verdicts: Vec<_> = parse_libtest(&output).into_iter().map(|v| (v.0, v.1)).collect();
        assert_eq!(verdicts, [("t::a".to_string(), Status::Passed), ("t::b".to_string(), Status::Failed)]);
        let quiet = GuestRun { console: "[    1.0] booting\n".into(), ..guest };
        assert!(!suite_output(&quiet).1, "nothing to read there either");
    }

    /// A binary that aborts in the middle of the suite: libtest's line for the running case has no
    /// verdict and the rest never start.
    const ABORTED: &str = "\
running 3 tests
test tx_to_rx::a ... ok
test tx_to_rx::b ... lab: aborting on purpose
sockmap-lab: suite binary redirect-0123 exited 134
";

    #[test]
    fn a_listed_case_without_a_verdict_crashed_and_the_ones_after_it_were_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let listed = ["tx_to_rx::a", "tx_to_rx::b", "tx_to_rx::c"].map(String::from);
        let cases = collect(ABORTED, dir.path(), &listed);
        let got: Vec<(&str, Status)> = cases.iter().map(|c| (c.name.as_str(), c.status)).collect();
        assert_eq!(got, [("tx_to_rx::a", Status::Passed), ("tx_to_rx::b", Status::Crashed), ("tx_to_rx::c", Status::NotRun)]);
        assert!(cases[1].failure.as_deref().unwrap().contains("lab: aborting on purpose"), "the crash shows the guest output around it");
        assert_eq!(tally(&cases), vec![("tx_to_rx".to_string(), Tally { passed: 1, failed: 2, ..Tally::default() })]);
    }

    fn report(cases: Vec<CaseResult>, problems: Vec<String>) -> RunReport {
        RunReport {
            run: String::new(),
            kernel: "k".into(),
            release: "r".into(),
            accel: "tcg".into(),
            guest: serde_json::json!({"kind": "exited", "code": 0}),
            guest_seconds: 1.0,
            guests: 1,
            cases,
            listed: 0,
            suite_started: true,
            problems,
            output_from_console: false,
            retried: None,
            totals: Tally::default(),
            findings: Default::default(),
            judged_as: None,
        }
    }

    #[test]
    fn a_run_judged_by_another_family_says_so_in_its_summary() {
        let judged = RunReport { judged_as: Some("6.1".into()), ..report(vec![], vec![]) };
        assert!(crate::render::suite::summary(&judged).contains("judged by the 6.1 family's snapshots"));
        assert!(!crate::render::suite::summary(&report(vec![], vec![])).contains("judged by"));
        let json = serde_json::to_value(&judged).unwrap();
        assert_eq!(json["judged_as"], "6.1", "summary.json names the family too");
    }

    #[test]
    fn a_crashed_or_unrun_case_or_a_run_problem_fails_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let listed = ["tx_to_rx::a", "tx_to_rx::b"].map(String::from);
        let only_passes: Vec<_> = collect(ABORTED, dir.path(), &listed[..1]);
        assert!(!report(only_passes.clone(), vec![]).failed());
        assert!(report(collect(ABORTED, dir.path(), &listed), vec![]).failed());
        assert!(report(only_passes, vec!["x".into()]).failed());
    }

    #[test]
    fn a_binary_that_exits_non_zero_with_no_failed_case_is_a_problem() {
        let exes = [PathBuf::from("/t/redirect-0123")];
        let out = "running 1 tests\ntest tx_to_rx::a ... ok\nsockmap-lab: suite binary redirect-0123 exited 101\n";
        let cases = collect(out, Path::new("/nonexistent"), &["tx_to_rx::a".into()]);
        assert_eq!(run_problems(out, &exes, &cases), ["suite binary redirect-0123 exited 101 with no failed case"]);
        let fine = out.replace("exited 101", "exited 0");
        assert!(run_problems(&fine, &exes, &cases).is_empty());
        let died = "running 1 tests\ntest tx_to_rx::a ... ok\n";
        assert_eq!(run_problems(died, &exes, &cases), ["suite binary redirect-0123 never reported its exit (the guest stopped while it ran)"]);
    }

    fn known(name: &str) -> CaseResult {
        CaseResult {
            name: name.into(),
            path: path_of(name),
            status: Status::Failed,
            observation: None,
            failure: Some("snapshot assertion failed".into()),
            snapshot: None,
            finding: Some("tcp-bpf-sendmsg-after-shut-wr".into()),
        }
    }

    #[test]
    fn a_known_finding_is_counted_apart_and_never_as_a_pass() {
        let pass = CaseResult { finding: None, status: Status::Passed, failure: None, ..known("tx_to_rx::a") };
        let cases = vec![pass, known("tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing")];
        assert_eq!(tally(&cases), vec![("tx_to_rx".to_string(), Tally { passed: 1, known: 1, ..Tally::default() })]);
        let run = report(cases, vec![]);
        assert!(run.failed(), "a run whose only failure is a known finding is still red");
        assert_eq!(run.count(Status::Passed), 1);
        // A finding on a case that did not fail names nothing.
        let odd = CaseResult { status: Status::Passed, ..known("tx_to_rx::b") };
        assert!(!odd.is_known_finding());
        assert_eq!(Tally::of([&odd]), Tally { passed: 1, ..Tally::default() });
    }

    #[test]
    fn the_kmemleak_case_is_not_a_suite_case() {
        let kml = CaseResult { name: KMEMLEAK_CASE.into(), path: "other".into(), status: Status::Passed, observation: None, failure: None, snapshot: None, finding: None };
        assert_eq!(report(vec![kml], vec![]).with_verdict(), 0);
    }

    #[test]
    fn the_suite_started_once_libtest_runs_cases() {
        assert!(!suite_started("[    1.0] booting\nsockmap-lab: guest command starting\n"));
        assert!(suite_started("\nrunning 386 tests\n"));
    }

    #[test]
    fn paths_are_read_from_names() {
        assert_eq!(path_of("rx_to_rx_via_sockhash_over_vsock_1b"), "rx_to_rx");
        assert_eq!(path_of("lifecycle::tx_to_tx_via_sockmap_over_ipv4_pass"), "tx_to_tx");
        assert_eq!(path_of("something_else"), "other");
    }
}
