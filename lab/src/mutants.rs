//! `lab mutants`: the suite on each deliberately broken kernel, beside its unmutated base (the
//! control) in the same session, so that a catch is a check the mutant alone makes fail.

use serde::{Deserialize, Serialize};

use crate::definition::{Definition, KernelsDir};
use crate::matrix::KernelRun;
use crate::cases::{self, CaseResult, Status};
use crate::selftests::SelftestsOutcome;
use crate::suite::{RunReport, SuiteRun};
use crate::vm::Outcome;

/// Every mutant definition, in the definitions' order.
pub fn all_mutants(kernels: &KernelsDir) -> anyhow::Result<Vec<Definition>> {
    Ok(kernels.load_all()?.into_iter().filter_map(Result::ok).filter(|d| d.mutant.is_some()).collect())
}

/// The mutants named (all of them when none is), checked to be mutants with a base.
pub fn select(kernels: &KernelsDir, names: &[String]) -> anyhow::Result<Vec<Definition>> {
    let defs: Vec<Definition> = if names.is_empty() {
        all_mutants(kernels)?
    } else {
        names.iter().map(|n| kernels.load(n)).collect::<Result<_, _>>()?
    };
    anyhow::ensure!(!defs.is_empty(), "no mutant definitions (a definition with `mutant = \"...\"`) in {}", kernels.dir.display());
    for def in &defs {
        anyhow::ensure!(def.mutant.is_some(), "{} is not a mutant (it has no `mutant` field)", def.name);
    }
    Ok(defs)
}

/// Every distinct base, then the mutants: controls first, so they are built before their mutants.
pub fn run_list(defs: &[Definition]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for base in defs.iter().filter_map(|d| d.base.clone()) {
        if !names.contains(&base) {
            names.push(base);
        }
    }
    names.extend(defs.iter().map(|d| d.name.clone()));
    names
}

/// Judge each mutant against its control's report; a control that did not run leaves its mutants
/// without a verdict.
pub fn verdicts(defs: &[Definition], runs: Vec<(String, KernelRun)>) -> Vec<MutantVerdict> {
    let mut controls: Vec<(String, Result<RunReport, String>)> = Vec::new();
    let mut mutants = Vec::new();
    for (name, k) in runs {
        match defs.iter().find(|d| d.name == name) {
            Some(def) => mutants.push((def, k)),
            None => controls.push((name, control_report(k))),
        }
    }
    mutants
        .into_iter()
        .map(|(def, k)| {
            let control = controls.iter().find(|(n, _)| Some(n) == def.base.as_ref()).map(|(_, c)| c);
            match (k.run, control) {
                (Err(e), _) => MutantVerdict::not_run(def, format!("{e:#}")),
                // Its own boot failure says more than its control's state.
                (Ok(run), _) if !run.report.suite_started => MutantVerdict::judge(def, &run, None),
                (Ok(_), Some(Err(why))) => MutantVerdict::not_run(def, format!("its control {} is not usable: {why}", def.base.as_deref().unwrap_or("?"))),
                (Ok(run), control) => MutantVerdict::judge(def, &run, control.and_then(|c| c.as_ref().ok())),
            }
        })
        .collect()
}

/// A control is usable when its suite ran to the end.
fn control_report(k: KernelRun) -> Result<RunReport, String> {
    let run = k.run.map_err(|e| format!("{e:#}"))?;
    let report = run.report;
    if !report.suite_started || !matches!(run.guest.outcome, Outcome::Exited { .. }) {
        return Err(format!("its guest {}", run.guest.outcome.describe()));
    }
    if report.cases.iter().any(|c| c.status.no_verdict()) {
        return Err("its suite did not finish every case".into());
    }
    Ok(report)
}

/// Each mutant's selftests judged against its control's, into its row.
pub fn attach_selftests(defs: &[Definition], verdicts: Vec<MutantVerdict>, runs: &[SelftestsOutcome]) -> Vec<MutantVerdict> {
    let report_of = |name: &str| runs.iter().find(|(n, _)| n == name).map(|(_, r)| r.as_ref().map_err(String::as_str)).unwrap_or(Err("not run"));
    verdicts
        .into_iter()
        .map(|v| {
            let base = defs.iter().find(|d| d.name == v.mutant).and_then(|d| d.base.clone()).unwrap_or_default();
            let selftests = crate::selftests::judge(report_of(&v.mutant), report_of(&base));
            MutantVerdict { selftests: Some(selftests), ..v }
        })
        .collect()
}

/// Each mutant's newest verdict (by run id, which sorts by start: of two runs finishing together
/// the one started later wins), in `mutants` order; rows of mutants no longer defined are dropped.
pub fn merge(table: Vec<MutantVerdict>, fresh: &[MutantVerdict], mutants: &[String]) -> Vec<MutantVerdict> {
    mutants
        .iter()
        .filter_map(|name| {
            let older = table.iter().filter(|v| v.mutant == *name);
            // max_by_key keeps the last of equals: a fresh row beats a stored one of the same run.
            older.chain(fresh.iter().filter(|v| v.mutant == *name)).max_by_key(|v| v.run.as_str()).cloned()
        })
        .collect()
}

/// Whether the suite caught one mutant, and with what.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MutantVerdict {
    pub mutant: String,
    pub breaks: String,
    pub caught: bool,
    /// The mutant's guest never ran the suite (boot failure, lab error): neither caught nor missed.
    #[serde(default)]
    pub not_run: bool,
    /// Failing cases per path, e.g. "tx_to_rx: 25" (only cases that pass on the control).
    pub caught_by: Vec<String>,
    /// Which checks failed, e.g. "accounting 12, splat 12, payload 3" (cases per kind).
    #[serde(default)]
    pub checks: String,
    /// The first failing case and the first lines of what differed, or the kernel splat; an
    /// accounting or splat failure is preferred, since that is what an accounting mutant must trip.
    pub evidence: String,
    /// The unmutated base kernel's run in the same session: what a catch is measured against.
    #[serde(default)]
    pub control: String,
    /// The `lab mutants` run that gave this verdict (`results/mutants/runs/<run>/`) and when it
    /// started: the table in `results/` merges runs, so each row says which one it comes from.
    #[serde(default)]
    pub run: String,
    #[serde(default)]
    pub date: String,
    /// The kernel's own sockmap selftests on the same mutant and control (`lab mutants --selftests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selftests: Option<crate::selftests::MutantSelftests>,
}

/// What kind of check a failing case tripped, read from its observation: `accounting` (a socket died
/// unclean, leaked, or sockstat did not return), `splat` (the kernel log), else `payload` (where the
/// bytes went, errnos, readiness: the rest of the snapshot).
pub fn failed_checks(case: &CaseResult) -> Vec<&'static str> {
    let acct = case.observation.as_ref().and_then(|o| o.get("accounting"));
    let mut kinds = Vec::new();
    let unclean_socket = acct
        .and_then(|a| a.get("sockets"))
        .and_then(|s| s.as_object())
        .is_some_and(|s| s.values().any(|v| v != "clean"));
    let sockstat_off = acct
        .and_then(|a| a.get("sockstat"))
        .and_then(|s| s.as_object())
        .is_some_and(|s| s.values().any(|v| v.as_i64().is_some_and(|n| n != 0)));
    if unclean_socket || sockstat_off {
        kinds.push("accounting");
    }
    if acct.and_then(|a| a.get("splats")).and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty()) {
        kinds.push("splat");
    }
    if kinds.is_empty() {
        kinds.push("payload");
    }
    kinds
}

fn checks_summary(failed: &[&CaseResult]) -> String {
    ["accounting", "splat", "payload"]
        .iter()
        .map(|kind| (kind, failed.iter().filter(|c| failed_checks(c).contains(kind)).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An accounting failure's own words: "b (cookie ...) destroyed with ... sk_forward_alloc 848", or
/// the leaked socket, and the first splat line.
fn accounting_evidence(failure: &str) -> Option<String> {
    let mut lines = failure.lines().skip_while(|l| !l.starts_with("accounting: "));
    lines.next()?;
    let socket = lines.next()?.trim().to_string();
    let splat = failure.lines().find(|l| l.starts_with("WARNING:") || l.starts_with("BUG:") || l.contains("KASAN"));
    Some(match splat {
        Some(s) => format!("{socket}; {}", s.trim()),
        None => socket,
    })
}

impl MutantVerdict {
    pub fn not_run(def: &Definition, why: String) -> MutantVerdict {
        MutantVerdict {
            mutant: def.name.clone(),
            breaks: def.mutant.clone().unwrap_or_default(),
            caught: false,
            not_run: true,
            caught_by: vec![],
            checks: String::new(),
            evidence: format!("not run: {why}"),
            control: String::new(),
            run: String::new(),
            date: String::new(),
            selftests: None,
        }
    }

    /// A mutant is caught by a check that failed in a case which passes on the control (the
    /// unmutated base kernel, same session), or by a panic, oops or hang after the suite started —
    /// never by a guest that did not get that far, nor by a failure the base kernel has too.
    pub fn judge(def: &Definition, run: &SuiteRun, control: Option<&RunReport>) -> MutantVerdict {
        let report = &run.report;
        let retried = report.retried.as_ref().map(|why| format!(" (retried once; first attempt: {why})")).unwrap_or_default();
        if !report.suite_started {
            return MutantVerdict::not_run(def, format!("boot failed: the guest {}{retried}", run.guest.outcome.describe()));
        }
        let passes_on_control = |name: &str| {
            control.is_none_or(|c| c.cases.iter().any(|k| k.name == name && matches!(k.status, Status::Passed | Status::Unsupported)))
        };
        let (failed, excused): (Vec<&CaseResult>, Vec<&CaseResult>) =
            report.cases.iter().filter(|c| c.status == Status::Failed).partition(|c| passes_on_control(&c.name));
        let own: Vec<CaseResult> = failed.iter().map(|c| (*c).clone()).collect();
        let caught_by = cases::tally(&own)
            .into_iter()
            .map(|(path, t)| (path, t.failed + t.known))
            .filter(|(_, failing)| *failing > 0)
            .map(|(path, failing)| format!("{path}: {failing}"))
            .collect();
        let checks = checks_summary(&failed);
        let by_accounting = failed.iter().find(|c| failed_checks(c) != ["payload"]);
        // The cases that finished before anything else went wrong are evidence too: an accounting
        // mutant must be seen failing a check, not merely making the guest misbehave.
        let case_evidence = by_accounting.or(failed.first()).map(|case| {
            let failure = case.failure.as_deref().unwrap_or("");
            let what = accounting_evidence(failure).unwrap_or_else(|| cases::first_difference(failure));
            format!("{}: {what}", case.name)
        });
        let running = report.cases.iter().find(|c| c.status == Status::Crashed).map(|c| format!(" while {} was running", c.name)).unwrap_or_default();
        let with_cases = |guest: String| match &case_evidence {
            Some(cases) => format!("{cases}; then {guest}{running}"),
            None => format!("{guest}{running}"),
        };
        let (caught, mut evidence) = match &run.guest.outcome {
            Outcome::Exited { .. } => match case_evidence {
                Some(evidence) => (true, evidence),
                None => (false, "every case that passes on the control passed".to_string()),
            },
            Outcome::Panicked { line } | Outcome::Oopsed { line, .. } => (true, with_cases(format!("kernel: {line}"))),
            Outcome::Hung { after_secs, hint, silent_secs } => (
                true,
                with_cases(format!(
                    "guest hung: {}{}",
                    crate::vm::hang_reason(*after_secs, *silent_secs),
                    hint.as_ref().map(|h| format!(": {h}")).unwrap_or_default()
                )),
            ),
            Outcome::VmFailed { code } => (false, format!("the VM did not start (vng exited {code})")),
        };
        if !excused.is_empty() {
            evidence.push_str(&format!(" ({} failing case(s) fail on the control too, not counted: {})", excused.len(), excused[0].name));
        }
        evidence.push_str(&retried);
        MutantVerdict {
            mutant: def.name.clone(),
            breaks: def.mutant.clone().unwrap_or_default(),
            caught,
            not_run: false,
            caught_by,
            checks,
            evidence,
            control: control.map(control_summary).unwrap_or_else(|| "no control run".into()),
            run: String::new(),
            date: String::new(),
            selftests: None,
        }
    }
}

/// The control column: the base kernel's own totals.
pub fn control_summary(control: &RunReport) -> String {
    let failing = control.cases.iter().filter(|c| c.status.is_failure()).count();
    format!("{}: {} passed, {failing} failed", control.kernel, control.count(Status::Passed))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::definition::Definition;

    #[test]
    fn a_failing_case_is_classed_by_the_check_it_tripped() {
        let case = |obs: serde_json::Value| CaseResult {
            name: "rx_to_rx_via_sockmap_over_ipv4_1kib".into(),
            path: "rx_to_rx".into(),
            status: Status::Failed,
            observation: Some(obs),
            failure: None,
            snapshot: None,
            finding: None,
        };
        let clean = serde_json::json!({"sockets": {"a": "clean", "b": "clean"}, "sockstat": {"tcp_inuse": 0}, "splats": []});
        assert_eq!(failed_checks(&case(serde_json::json!({"accounting": clean}))), ["payload"]);
        let unclean = serde_json::json!({"sockets": {"a": "clean", "b": {"unclean": {"forward_alloc": 848}}}, "splats": ["WARNING: at net/ipv4/af_inet.c:156"]});
        assert_eq!(failed_checks(&case(serde_json::json!({"accounting": unclean}))), ["accounting", "splat"]);
        let leaked = serde_json::json!({"sockets": {"b": "leaked"}, "sockstat": {"tcp_inuse": 1}, "splats": []});
        assert_eq!(failed_checks(&case(serde_json::json!({"accounting": leaked}))), ["accounting"]);
        let failure = "accounting: x did not end clean:\nb (cookie 4101, AF_INET SOCK_STREAM, state 7) destroyed with sk_forward_alloc 848\nkernel log:\nWARNING: CPU: 1 PID: 25 at net/ipv4/af_inet.c:156 inet_sock_destruct\n";
        assert_eq!(
            accounting_evidence(failure).unwrap(),
            "b (cookie 4101, AF_INET SOCK_STREAM, state 7) destroyed with sk_forward_alloc 848; WARNING: CPU: 1 PID: 25 at net/ipv4/af_inet.c:156 inet_sock_destruct"
        );
    }

    fn mutant_def(dir: &std::path::Path) -> Definition {
        std::fs::create_dir_all(dir.join("mutants/x")).unwrap();
        std::fs::write(dir.join("mutants/x/0001-x.patch"), "").unwrap();
        std::fs::write(dir.join("base-k.toml"), "name = \"base-k\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\n").unwrap();
        crate::definition::parse(
            &dir.join("mutant-x.toml"),
            "name = \"mutant-x\"\nmutant = \"leaks a psock\"\nbase = \"base-k\"\npatches = \"mutants/x\"\n",
        )
        .unwrap()
    }

    pub(crate) fn case(name: &str, status: Status) -> CaseResult {
        let failed = status == Status::Failed;
        CaseResult {
            name: name.into(),
            path: cases::path_of(name),
            status,
            observation: failed.then(|| serde_json::json!({"accounting": {"sockets": {"b": "leaked"}, "splats": []}})),
            failure: failed.then(|| "accounting: x did not end clean:\nleaked socket: b (cookie 4099) not destroyed within 5s\n".into()),
            snapshot: None,
            finding: None,
        }
    }

    pub(crate) fn report(kernel: &str, cases: Vec<CaseResult>, suite_started: bool) -> RunReport {
        RunReport {
            kernel: kernel.into(),
            run: String::new(),
            release: "6.12.117".into(),
            accel: "tcg".into(),
            guest: serde_json::Value::Null,
            guest_seconds: 1300.0,
            guests: 1,
            listed: cases.len(),
            cases,
            suite_started,
            problems: vec![],
            output_from_console: false,
            retried: None,
            totals: Default::default(),
            findings: Default::default(),
            judged_as: None,
        }
    }

    fn mutant_run(outcome: Outcome, cases: Vec<CaseResult>, suite_started: bool) -> SuiteRun {
        SuiteRun {
            report: report("mutant-x", cases, suite_started),
            guest: crate::vm::GuestRun { outcome, stdout: vec![], console: String::new(), wall: std::time::Duration::from_secs(1300) },
            results: "/tmp/x".into(),
            cfg: crate::vm::VmConfig {
                accel: crate::vm::Accel::Tcg,
                memory: "2G".into(),
                cpus: 2,
                timeout: std::time::Duration::from_secs(3600),
                silence: None,
                show_console: false,
                rwdirs: vec![],
                cwd: None,
                console_log: "/tmp/c.log".into(),
            },
            run: None,
        }
    }

    pub(crate) const LEAKY: &str = "rx_to_tx_via_sockmap_over_ipv4_1kib";

    #[test]
    fn a_mutant_that_hangs_the_guest_still_shows_the_accounting_failures_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let def = mutant_def(dir.path());
        let hung = Outcome::Hung { after_secs: 1300, hint: None, silent_secs: Some(300) };
        let run = mutant_run(hung, vec![case(LEAKY, Status::Failed)], true);
        let v = MutantVerdict::judge(&def, &run, None);
        assert!(v.caught);
        assert_eq!(v.checks, "accounting 1");
        assert!(v.evidence.starts_with("rx_to_tx_via_sockmap_over_ipv4_1kib: leaked socket: b (cookie 4099)"), "{}", v.evidence);
        assert!(v.evidence.ends_with("then guest hung: no output for 300s, 1300s into the run"), "{}", v.evidence);
    }

    #[test]
    fn a_guest_that_fails_before_the_suite_starts_is_not_run_not_caught() {
        let dir = tempfile::tempdir().unwrap();
        let def = mutant_def(dir.path());
        for outcome in [
            Outcome::Hung { after_secs: 300, hint: None, silent_secs: Some(300) },
            Outcome::Panicked { line: "Kernel panic - not syncing: int3".into() },
            Outcome::VmFailed { code: 255 },
        ] {
            let v = MutantVerdict::judge(&def, &mutant_run(outcome.clone(), vec![], false), None);
            assert!(!v.caught && v.not_run, "{outcome:?} must not be a catch: {v:?}");
            assert!(v.evidence.starts_with("not run: boot failed"), "{}", v.evidence);
        }
    }

    #[test]
    fn a_panic_during_the_suite_is_a_catch_named_with_the_running_case() {
        let dir = tempfile::tempdir().unwrap();
        let def = mutant_def(dir.path());
        let panic = Outcome::Panicked { line: "Kernel panic - not syncing: Fatal exception".into() };
        let run = mutant_run(panic, vec![case("tx_to_rx_via_sockmap_over_ipv4_1b", Status::Crashed)], true);
        let v = MutantVerdict::judge(&def, &run, None);
        assert!(v.caught);
        assert!(v.evidence.ends_with("while tx_to_rx_via_sockmap_over_ipv4_1b was running"), "{}", v.evidence);
    }

    #[test]
    fn only_cases_that_pass_on_the_control_catch_a_mutant() {
        let dir = tempfile::tempdir().unwrap();
        let def = mutant_def(dir.path());
        let exited = Outcome::Exited { code: 1 };
        let run = mutant_run(exited, vec![case(LEAKY, Status::Failed)], true);
        let racy_control = report("base-k", vec![case(LEAKY, Status::Failed)], true);
        let v = MutantVerdict::judge(&def, &run, Some(&racy_control));
        assert!(!v.caught, "a failure the base kernel has too is not the mutant's: {v:?}");
        assert!(v.evidence.contains("fail on the control too"), "{}", v.evidence);
        assert_eq!(v.control, "base-k: 0 passed, 1 failed");
        let clean_control = report("base-k", vec![case(LEAKY, Status::Passed)], true);
        let v = MutantVerdict::judge(&def, &run, Some(&clean_control));
        assert!(v.caught && v.caught_by == ["rx_to_tx: 1"], "{v:?}");
        assert_eq!(v.control, "base-k: 1 passed, 0 failed");
    }

    pub(crate) fn verdict(mutant: &str, caught: bool, run: &str) -> MutantVerdict {
        MutantVerdict {
            mutant: mutant.into(),
            breaks: "x".into(),
            caught,
            not_run: false,
            caught_by: vec![],
            checks: String::new(),
            evidence: format!("from run {run}"),
            control: String::new(),
            run: run.into(),
            date: String::new(),
            selftests: None,
        }
    }

    pub(crate) fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_newest_run_wins_and_gone_mutants_leave_the_table() {
        let (old, new) = ("20261201T000000.000Z-1-0", "20261202T000000.000Z-2-0");
        // A run started earlier that finishes later does not overwrite a newer verdict.
        let merged = merge(vec![verdict("mutant-a", true, new)], &[verdict("mutant-a", false, old)], &names(&["mutant-a"]));
        assert_eq!(merged[0].run, new);
        // Rows from before run ids (no `run` field) are kept until a run replaces them.
        let legacy: Vec<MutantVerdict> =
            serde_json::from_str(r#"[{"mutant": "mutant-a", "breaks": "x", "caught": true, "caught_by": [], "evidence": "e"}, {"mutant": "mutant-gone", "breaks": "x", "caught": true, "caught_by": [], "evidence": "e"}]"#).unwrap();
        let merged = merge(legacy.clone(), &[], &names(&["mutant-a", "mutant-b"]));
        assert_eq!(merged.iter().map(|v| v.mutant.as_str()).collect::<Vec<_>>(), ["mutant-a"]);
        assert_eq!(merge(legacy, &[verdict("mutant-a", false, old)], &names(&["mutant-a"]))[0].run, old);
    }
}
