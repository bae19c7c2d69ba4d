//! Reports of a suite run: one line per case, a per-path summary, and the same as JSON on disk.

use serde::{Deserialize, Serialize};

use crate::definition::Definition;
use crate::suite::{self, CaseResult, RunReport, Status, SuiteRun};
use crate::matrix::{Difference, Row, RowState};
use crate::vm::Outcome;

/// The per-case line printed while reporting; a failure a known finding explains says which.
pub fn case_line(case: &CaseResult) -> String {
    match (&case.finding, case.is_known_finding()) {
        (Some(id), true) => format!("{:<12} {} (known finding: {id})", case.label(), case.name),
        _ => format!("{:<12} {}", case.label(), case.name),
    }
}

/// The human summary: failures with their evidence, then counts per path.
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    for case in report.cases.iter().filter(|c| matches!(c.status, Status::Failed | Status::Crashed)) {
        let known = case.finding.as_ref().filter(|_| case.is_known_finding()).map(|id| format!(" (known finding: {id})")).unwrap_or_default();
        out.push_str(&format!("\n--- {} {}{known} ---\n", case.label(), case.name));
        if let Some(text) = &case.failure {
            out.push_str(&suite::failure_excerpt(text, 40));
            out.push('\n');
        }
    }
    let not_run: Vec<&str> = report.cases.iter().filter(|c| c.status == Status::NotRun).map(|c| c.name.as_str()).collect();
    if let Some(first) = not_run.first() {
        out.push_str(&format!("\nNOT RUN: {} listed case(s) never started (first: {first})\n", not_run.len()));
    }
    for problem in &report.problems {
        out.push_str(&format!("\nRUN PROBLEM: {problem}\n"));
    }
    if let Some(why) = &report.retried {
        out.push_str(&format!("\nretried: the first boot was thrown away ({why})\n"));
    }
    out.push_str(&format!(
        "\n{} on {} ({}), suite ran {:.0}s in the guest; {} of {} listed cases have a verdict\n",
        report.kernel,
        report.release,
        report.accel,
        report.guest_seconds,
        report.with_verdict(),
        report.listed,
    ));
    for (id, what) in &report.findings {
        out.push_str(&format!("known finding {id}: {what}\n"));
    }
    // "failed" counts every case without a pass that no known finding explains: failures, crashes
    // and cases never run; "known" the failures a known kernel finding explains (not passes either).
    let line = |name: &str, t: &suite::Tally| {
        format!("{name:<10} {:>7} {:>7} {:>7} {:>12} {:>8}\n", t.passed, t.failed, t.known, t.unsupported, t.ignored)
    };
    out.push_str(&format!("{:<10} {:>7} {:>7} {:>7} {:>12} {:>8}\n", "path", "passed", "failed", "known", "unsupported", "ignored"));
    for (path, t) in suite::tally(&report.cases) {
        out.push_str(&line(&path, &t));
    }
    out.push_str(&line("total", &suite::Tally::of(&report.cases)));
    out
}

/// Write a finished suite run's own outputs beside its cases (`junit.xml` and `summary.md`, what a
/// CI job per kernel publishes), then make it the kernel's `latest`: only a complete run is.
pub fn finish_run(run: &SuiteRun) -> anyhow::Result<()> {
    let row = Row::from_run(run);
    std::fs::write(run.results.join("junit.xml"), junit(&row))?;
    std::fs::write(run.results.join("summary.md"), matrix_table(std::slice::from_ref(&row), true))?;
    match &run.run {
        Some(folder) => folder.publish(),
        None => Ok(()),
    }
}

/// Whether the suite caught one mutant, and with what.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
            return MutantVerdict::not_run(def, format!("boot failed: the guest {}{retried}", describe_outcome(&run.guest.outcome)));
        }
        let passes_on_control = |name: &str| {
            control.is_none_or(|c| c.cases.iter().any(|k| k.name == name && matches!(k.status, Status::Passed | Status::Unsupported)))
        };
        let (failed, excused): (Vec<&CaseResult>, Vec<&CaseResult>) =
            report.cases.iter().filter(|c| c.status == Status::Failed).partition(|c| passes_on_control(&c.name));
        let own: Vec<CaseResult> = failed.iter().map(|c| (*c).clone()).collect();
        let caught_by = suite::tally(&own)
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
            let what = accounting_evidence(failure).unwrap_or_else(|| first_difference(failure));
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

    pub fn line(&self) -> String {
        let verdict = if self.not_run { "NOT RUN" } else if self.caught { "caught" } else { "MISSED" };
        format!("{}: {verdict} ({})", self.mutant, self.evidence)
    }
}

/// How a guest run ended, in words for a verdict.
pub fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Exited { code } => format!("exited {code} before running a case"),
        Outcome::Panicked { line } => format!("panicked: {line}"),
        Outcome::Oopsed { line, .. } => format!("oopsed: {line}"),
        Outcome::Hung { after_secs, silent_secs, .. } => format!("hung: {}", crate::vm::hang_reason(*after_secs, *silent_secs)),
        Outcome::VmFailed { code } => format!("VM did not start (vng exited {code})"),
    }
}

/// The control column: the base kernel's own totals.
pub fn control_summary(control: &RunReport) -> String {
    let failing = control.cases.iter().filter(|c| c.status.is_failure()).count();
    format!("{}: {} passed, {failing} failed", control.kernel, control.count(Status::Passed))
}

/// The lines of a failure that say what differed: snapshot diff lines (`-`/`+`) or the panic message.
fn first_difference(failure: &str) -> String {
    // insta prints "  22    22 │+      \"received\": 0,": keep the sign and the text after the gutter.
    let diff: Vec<String> = failure
        .lines()
        .filter_map(|l| l.split_once('│').map(|(_, rest)| rest))
        .filter(|l| l.starts_with('-') || l.starts_with('+'))
        .map(|l| format!("{}{}", &l[..1], l[1..].split_whitespace().collect::<Vec<_>>().join(" ")))
        .take(4)
        .collect();
    if !diff.is_empty() {
        return diff.join(" ");
    }
    // A plain panic: the message is the line after "panicked at FILE:LINE:".
    let mut lines = failure.lines().skip_while(|l| !l.contains("panicked at"));
    let at = lines.next().unwrap_or("").trim();
    lines.find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).unwrap_or_else(|| at.to_string())
}

/// The selftests column of the mutant table: caught (how many tests, the first), missed, or why not run.
fn selftests_cell(s: Option<&crate::selftests::MutantSelftests>) -> String {
    let Some(s) = s else { return "-".into() };
    let text = match s.caught {
        Some(true) if s.caught_by.is_empty() => format!("caught: {}", s.evidence),
        Some(true) => format!("caught by {} test(s): {}", s.caught_by.len(), s.evidence),
        Some(false) => format!("**missed** ({})", s.evidence),
        None => format!("not run: {}", s.evidence),
    };
    text.replace('|', "\\|").chars().take(200).collect()
}

/// Both tools on each mutant: which catches it, and the mutants only one of them catches.
pub fn both_tools_summary(verdicts: &[MutantVerdict]) -> String {
    let judged: Vec<&MutantVerdict> = verdicts.iter().filter(|v| !v.not_run && v.selftests.as_ref().is_some_and(|s| s.caught.is_some())).collect();
    if judged.is_empty() {
        return String::new();
    }
    let by_selftests = |v: &MutantVerdict| v.selftests.as_ref().and_then(|s| s.caught) == Some(true);
    let only = |lab: bool| judged.iter().filter(|v| v.caught == lab && by_selftests(v) != lab).map(|v| v.mutant.as_str()).collect::<Vec<_>>().join(", ");
    format!(
        "\nOf {} mutants run by both: the lab's suite catches {}, the kernel's selftests {}; only the suite: {}; only the selftests: {}\n",
        judged.len(),
        judged.iter().filter(|v| v.caught).count(),
        judged.iter().filter(|v| by_selftests(v)).count(),
        Some(only(true)).filter(|s| !s.is_empty()).unwrap_or_else(|| "none".into()),
        Some(only(false)).filter(|s| !s.is_empty()).unwrap_or_else(|| "none".into()),
    )
}

/// The mutant table, as Markdown (it reads fine in a terminal too).
pub fn mutant_table(verdicts: &[MutantVerdict]) -> String {
    let mut out = String::from(
        "| mutant | breaks | control | verdict | failing cases | checks that failed | evidence | kernel selftests | run |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for v in verdicts {
        let evidence: String = v.evidence.replace('|', "\\|").chars().take(240).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            v.mutant,
            v.breaks,
            if v.control.is_empty() { "-" } else { v.control.as_str() },
            if v.not_run { "**NOT RUN**" } else if v.caught { "caught" } else { "**MISSED**" },
            if v.caught_by.is_empty() { "-".to_string() } else { v.caught_by.join(", ") },
            if v.checks.is_empty() { "-" } else { v.checks.as_str() },
            evidence,
            selftests_cell(v.selftests.as_ref()),
            if v.date.is_empty() { "-" } else { v.date.as_str() },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn case(name: &str, status: Status) -> CaseResult {
        let failed = status == Status::Failed;
        CaseResult {
            name: name.into(),
            path: suite::path_of(name),
            status,
            observation: failed.then(|| serde_json::json!({"accounting": {"sockets": {"b": "leaked"}, "splats": []}})),
            failure: failed.then(|| "accounting: x did not end clean:\nleaked socket: b (cookie 4099) not destroyed within 5s\n".into()),
            snapshot: None,
            finding: None,
        }
    }

    fn report(kernel: &str, cases: Vec<CaseResult>, suite_started: bool) -> RunReport {
        RunReport {
            kernel: kernel.into(),
            run: String::new(),
            release: "6.12.117".into(),
            accel: "tcg".into(),
            guest: serde_json::Value::Null,
            guest_seconds: 1300.0,
            listed: cases.len(),
            cases,
            suite_started,
            problems: vec![],
            retried: None,
            totals: Default::default(),
            findings: Default::default(),
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

    const LEAKY: &str = "rx_to_tx_via_sockmap_over_ipv4_1kib";

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
            assert!(!v.caught && v.not_run, "{outcome:?} must not be a catch: {}", v.line());
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
        assert!(!v.caught, "a failure the base kernel has too is not the mutant's: {}", v.line());
        assert!(v.evidence.contains("fail on the control too"), "{}", v.evidence);
        assert_eq!(v.control, "base-k: 0 passed, 1 failed");
        let clean_control = report("base-k", vec![case(LEAKY, Status::Passed)], true);
        let v = MutantVerdict::judge(&def, &run, Some(&clean_control));
        assert!(v.caught && v.caught_by == ["rx_to_tx: 1"], "{}", v.line());
        assert!(mutant_table(&[v]).contains("| base-k: 1 passed, 0 failed | caught |"));
    }

    #[test]
    fn a_known_finding_is_shown_apart_from_plain_failures_everywhere() {
        let mut shut = case("tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing", Status::Failed);
        shut.finding = Some("tcp-bpf-sendmsg-after-shut-wr".into());
        let plain = case(LEAKY, Status::Failed);
        let finding = crate::findings::parse(
            "[[finding]]\nid='tcp-bpf-sendmsg-after-shut-wr'\ntitle='sends after SHUT_WR'\ncases=['x']\nkernels=['6.12']\nevidence='e'\nupstream='unfixed'\n[[finding.differs]]\nat='/a'\nequals=1\n",
        )
        .unwrap();
        let run = report("debian-6.12", vec![shut.clone(), plain], true).with_findings(&finding);
        assert!(run.failed());
        assert_eq!((run.totals.failed, run.totals.known, run.totals.passed), (1, 1, 0));
        assert_eq!(case_line(&shut), "KNOWN        tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing (known finding: tcp-bpf-sendmsg-after-shut-wr)");
        let text = render(&run);
        assert!(text.contains("known finding tcp-bpf-sendmsg-after-shut-wr: sends after SHUT_WR (upstream: unfixed)"), "{text}");
        assert!(text.contains("tx_to_rx         0       0       1"), "{text}");
        assert!(text.contains("rx_to_tx         0       1       0"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&run).unwrap();
        assert_eq!(json["totals"]["known"], 1);
        assert_eq!(json["cases"][0]["finding"], "tcp-bpf-sendmsg-after-shut-wr");
        let row = Row { kernel: "debian-6.12".into(), state: RowState::Ran, report: Some(run) };
        assert!(!row.green());
        assert_eq!(crate::matrix::cells(&row), ["0/0/1/0", "-", "-", "0/1/0/0", "0/1/1/0"]);
        let xml = junit(&row);
        assert!(xml.contains("failures=\"2\""), "{xml}");
        assert!(xml.contains("<failure message=\"known finding tcp-bpf-sendmsg-after-shut-wr: "), "{xml}");
        assert!(xml.contains("type=\"known-finding\""), "{xml}");
        assert!(matrix_details(std::slice::from_ref(&row), &[], 5).contains("KNOWN tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing (known finding: tcp-bpf-sendmsg-after-shut-wr)"));
    }

    #[test]
    fn evidence_is_the_first_diff_lines_without_the_gutter() {
        let failure = "Snapshot: x\n-old snapshot\n+new results\n   21    21 │       \"expected\": 1024,\n         22 │+      \"received\": 0,\n   23       │-      \"content\": \"matches\"\n";
        assert_eq!(first_difference(failure), "+\"received\": 0, -\"content\": \"matches\"");
        assert_eq!(first_difference("thread 'x' panicked at a.rs:1:1:\nleaked socket b"), "leaked socket b");
    }
}

/// The matrix table: kernels as rows, paths as columns, each cell passed/failed/unsupported.
pub fn matrix_table(rows: &[Row], markdown: bool) -> String {
    let mut header: Vec<String> = vec!["kernel".into(), "release".into(), "verdict".into()];
    header.extend(suite::PATHS.iter().map(|p| p.to_string()));
    header.push("total".into());
    let mut lines: Vec<Vec<String>> = Vec::new();
    for row in rows {
        let release = row.report.as_ref().map(|r| r.release.clone()).unwrap_or_else(|| "-".into());
        let verdict = if row.green() { "pass".to_string() } else { "FAIL".to_string() };
        let mut line = vec![row.kernel.clone(), release, verdict];
        line.extend(crate::matrix::cells(row));
        lines.push(line);
    }
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len())));
        for l in &lines {
            out.push_str(&format!("| {} |\n", l.join(" | ")));
        }
        out.push_str("\nCells: passed/failed/known/unsupported (known: failures a known kernel finding explains, see snapshots/FINDINGS.toml; still failures).\n");
    } else {
        let widths: Vec<usize> =
            (0..header.len()).map(|i| lines.iter().filter_map(|l| l.get(i)).map(String::len).chain([header[i].len()]).max().unwrap_or(0)).collect();
        let fmt = |cols: &[String]| cols.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect::<Vec<_>>().join("  ");
        out.push_str(&fmt(&header));
        out.push('\n');
        for l in &lines {
            out.push_str(fmt(l).trim_end());
            out.push('\n');
        }
        out.push_str("(cells: passed/failed/known/unsupported; known = failures a known kernel finding explains, still failures)\n");
    }
    out
}

/// Red rows with their reasons, then cases whose observations differ between kernels.
pub fn matrix_details(rows: &[Row], diffs: &[Difference], max_cases: usize) -> String {
    let mut out = String::new();
    for row in rows.iter().filter(|r| !r.green()) {
        out.push_str(&format!("\n{} is red:\n", row.kernel));
        match &row.state {
            RowState::BuildFailed { error } => out.push_str(&format!("  {}\n", suite::failure_excerpt(error, 15).replace('\n', "\n  "))),
            RowState::GuestFailed { outcome, console_tail } => {
                out.push_str(&format!("  guest: {outcome}\n  {}\n", console_tail.replace('\n', "\n  ")))
            }
            RowState::Ran => {
                for case in row.report.iter().flat_map(|r| &r.cases).filter(|c| c.status == Status::Failed) {
                    let known = case.finding.as_ref().map(|id| format!(" (known finding: {id})")).unwrap_or_default();
                    out.push_str(&format!("  {} {}{known}: {}\n", case.label(), case.name, first_difference(case.failure.as_deref().unwrap_or(""))));
                }
            }
        }
    }
    if !diffs.is_empty() {
        out.push_str(&format!("\n{} case(s) observe differently across kernels:\n", diffs.len()));
        for d in diffs.iter().take(max_cases) {
            out.push_str(&format!("  {}\n", d.case));
            for (field, values) in d.fields.iter().take(4) {
                let per: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("    {field}: {}\n", per.join("  ")));
            }
        }
        if diffs.len() > max_cases {
            out.push_str(&format!("  ... and {} more (matrix.json has them all)\n", diffs.len() - max_cases));
        }
    }
    out
}

fn xml_escape(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// JUnit XML for one kernel's row: one testcase per suite case (classname `<kernel>.<path>`);
/// unsupported cases are `skipped`; a kernel that did not build or boot is one `error` testcase.
pub fn junit(row: &Row) -> String {
    let mut cases = String::new();
    let (mut tests, mut failures, mut errors, mut skipped) = (0, 0, 0, 0);
    let seconds = row.report.as_ref().map(|r| r.guest_seconds).unwrap_or(0.0);
    let error_case = |what: &str, message: &str, text: &str| {
        format!(
            "    <testcase classname=\"{k}\" name=\"{what}\" time=\"0\">\n      <error message=\"{m}\" type=\"{what}\">{t}</error>\n    </testcase>\n",
            k = xml_escape(&row.kernel),
            m = xml_escape(message),
            t = xml_escape(text)
        )
    };
    match &row.state {
        RowState::BuildFailed { error } => {
            tests += 1;
            errors += 1;
            cases.push_str(&error_case("build", "the kernel did not build", error));
        }
        RowState::GuestFailed { outcome, console_tail } => {
            tests += 1;
            errors += 1;
            cases.push_str(&error_case("guest", &format!("the guest did not finish the suite: {outcome}"), console_tail));
        }
        RowState::Ran => {}
    }
    for case in row.report.iter().flat_map(|r| &r.cases) {
        tests += 1;
        let body = match case.status {
            Status::Failed => {
                failures += 1;
                let text = case.failure.as_deref().unwrap_or("");
                let (kind, message) = match &case.finding {
                    Some(id) => ("known-finding", format!("known finding {id}: {}", first_difference(text))),
                    None => ("mismatch", first_difference(text)),
                };
                format!("\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n    ", xml_escape(&message), xml_escape(text))
            }
            Status::Unsupported => {
                skipped += 1;
                "\n      <skipped message=\"unsupported by this kernel\"/>\n    ".to_string()
            }
            Status::Ignored => {
                skipped += 1;
                "\n      <skipped message=\"ignored\"/>\n    ".to_string()
            }
            Status::Crashed | Status::NotRun => {
                errors += 1;
                let text = case.failure.as_deref().unwrap_or("");
                format!("\n      <error message=\"{}\" type=\"{}\">{}</error>\n    ", xml_escape(case.status.label()), case.status.label().to_lowercase(), xml_escape(text))
            }
            Status::Passed => String::new(),
        };
        cases.push_str(&format!(
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"0\">{body}</testcase>\n",
            xml_escape(&row.kernel),
            xml_escape(&case.path),
            xml_escape(&case.name)
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"sockmap-lab\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{seconds:.1}\">\n  <testsuite name=\"{k}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{seconds:.1}\">\n{cases}  </testsuite>\n</testsuites>\n",
        k = xml_escape(&row.kernel)
    )
}

// ---- the kernel's own selftests (`lab selftests`) -------------------------------------------------

/// One line per selftest, like [`case_line`]; a skip says why.
pub fn selftest_line(r: &crate::selftests::TestResult) -> String {
    match (&r.status, &r.reason) {
        (crate::selftests::Verdict::Skipped, Some(why)) => format!("{:<12} {}: {} ({why})", r.status.label(), r.program, r.name),
        _ => format!("{:<12} {}: {}", r.status.label(), r.program, r.name),
    }
}

/// The summary of a selftests run: failures with their log lines, problems, counts per program.
pub fn render_selftests(report: &crate::selftests::SelftestsReport) -> String {
    use crate::selftests::Totals;
    let mut out = String::new();
    for r in report.failing() {
        out.push_str(&format!("\n--- FAILED {}: {} ---\n{}\n", r.program, r.name, r.reason.as_deref().unwrap_or("(no log lines)")));
    }
    for problem in &report.problems {
        out.push_str(&format!("\nRUN PROBLEM: {problem}\n"));
    }
    let b = &report.build;
    out.push_str(&format!(
        "\n{} on {} ({}): the kernel's sockmap selftests ({}, {}), guest ran {:.0}s; built in {:.0}s against {}'s BTF\n",
        report.kernel, report.release, report.accel, b.source, b.clang, report.guest_seconds, b.build_seconds, b.btf_from
    ));
    for change in &b.harness_changes {
        out.push_str(&format!("harness change: {change}\n"));
    }
    let line = |name: &str, t: Totals| format!("{name:<14} {:>7} {:>7} {:>8}\n", t.passed, t.failed, t.skipped);
    out.push_str(&format!("{:<14} {:>7} {:>7} {:>8}\n", "program", "passed", "failed", "skipped"));
    for program in ["test_progs", "test_sockmap"] {
        let t = Totals::of(report.results.iter().filter(|r| r.program == program));
        if t != Totals::default() {
            out.push_str(&line(program, t));
        }
    }
    out.push_str(&line("total", report.totals));
    out
}

/// JUnit XML for a selftests run: one testcase per selftest (classname `<kernel>.selftests.<program>`).
pub fn selftests_junit(report: &crate::selftests::SelftestsReport) -> String {
    use crate::selftests::Verdict;
    let t = report.totals;
    let errors = report.problems.len();
    let mut cases = String::new();
    for problem in &report.problems {
        cases.push_str(&format!(
            "    <testcase classname=\"{k}.selftests\" name=\"run\" time=\"0\">\n      <error message=\"{m}\" type=\"run\"/>\n    </testcase>\n",
            k = xml_escape(&report.kernel),
            m = xml_escape(problem)
        ));
    }
    for r in &report.results {
        let reason = xml_escape(r.reason.as_deref().unwrap_or(""));
        let body = match r.status {
            Verdict::Passed => String::new(),
            Verdict::Failed => format!("\n      <failure message=\"failed\" type=\"selftest\">{reason}</failure>\n    "),
            Verdict::Skipped => format!("\n      <skipped message=\"{reason}\"/>\n    "),
        };
        cases.push_str(&format!(
            "    <testcase classname=\"{}.selftests.{}\" name=\"{}\" time=\"0\">{body}</testcase>\n",
            xml_escape(&report.kernel),
            xml_escape(&r.program),
            xml_escape(&r.name)
        ));
    }
    let tests = report.results.len() + errors;
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"sockmap-lab selftests\" tests=\"{tests}\" failures=\"{f}\" errors=\"{errors}\" skipped=\"{s}\" time=\"{secs:.1}\">\n  <testsuite name=\"{k}\" tests=\"{tests}\" failures=\"{f}\" errors=\"{errors}\" skipped=\"{s}\" time=\"{secs:.1}\">\n{cases}  </testsuite>\n</testsuites>\n",
        f = t.failed,
        s = t.skipped,
        secs = report.guest_seconds,
        k = xml_escape(&report.kernel)
    )
}

/// The matrix's selftests table (`lab matrix --selftests`): per kernel, the kernel's own sockmap
/// selftests passed/failed/skipped, and what went wrong (a prebuilt image says it has no tree).
pub fn matrix_selftests_table(outcomes: &[crate::selftests::SelftestsOutcome]) -> String {
    let mut out = String::from("| kernel | selftests | passed | failed | skipped | failing tests, problems |\n|---|---|---|---|---|---|\n");
    for (kernel, outcome) in outcomes {
        let line = match outcome {
            Ok(r) => {
                let mut notes: Vec<String> = r.failing().take(3).map(|t| t.id()).collect();
                notes.extend(r.problems.iter().map(|p| p.lines().next().unwrap_or("").to_string()));
                let t = r.totals;
                format!("| {kernel} | {} | {} | {} | {} | {} |", if r.failed() { "FAIL" } else { "pass" }, t.passed, t.failed, t.skipped, if notes.is_empty() { "-".into() } else { notes.join("; ").replace('|', "\\|") })
            }
            Err(e) => format!("| {kernel} | not run | - | - | - | {} |", e.lines().next().unwrap_or("").replace('|', "\\|").chars().take(200).collect::<String>()),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Write a selftests run's JUnit and summary beside its results, then make it `latest`.
pub fn finish_selftests(run: &crate::selftests::SelftestsRun) -> anyhow::Result<()> {
    std::fs::write(run.results.join("junit.xml"), selftests_junit(&run.report))?;
    std::fs::write(run.results.join("summary.txt"), render_selftests(&run.report))?;
    run.run.publish()
}
