//! `lab bisect`'s words: the plan, the line each step prints for git's log, and the report (the
//! answer, the evidence for it, and a table of every step).

use super::table::{self, Align};
use crate::bisect::{plan::steps_for, Bisection, Conclusion, EndCheck, Mode, Plan, Rev, StepRecord, Verdict};

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}

/// The plan, before anything is built (all `--dry-run` prints).
pub fn plan(plan: &Plan, step: &[String], cases: &anyhow::Result<Vec<String>>, filter: Option<&str>) -> String {
    let mut out = String::from("lab bisect plan\n");
    match &plan.mode {
        Mode::Tree { tree, kernel, good, bad, commits } => {
            out.push_str(&format!("  tree:     {} (its checkout, index and HEAD are left alone)\n", tree.display()));
            out.push_str(&format!("  worktree: {} (git worktree add --detach --no-checkout; removed afterwards)\n", plan.scratch.display()));
            out.push_str(&format!("  good:     {} {}\n  bad:      {} {}\n", good.commit, good.subject, bad.commit, bad.subject));
            out.push_str(&format!("  range:    {commits} commit(s) after good, about {} step(s)\n", steps_for(*commits)));
            out.push_str(&format!("  kernel:   every commit built with {kernel}'s config fragments, profile and patches\n"));
        }
        Mode::Kernels { list } => {
            out.push_str(&format!("  kernels:  {} (first good, last bad; nothing is built)\n", list.join(", ")));
            out.push_str(&format!("  history:  {} (one empty commit per kernel; removed afterwards)\n", plan.scratch.display()));
            out.push_str(&format!("  range:    {} kernel(s) after good, about {} step(s)\n", list.len() - 1, steps_for(list.len() - 1)));
        }
    }
    out.push_str(&format!("  step:     git bisect run {}\n", shell_words::join(step)));
    out.push_str(&format!("  log:      {} (one JSON line per step)\n", plan.log.display()));
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

/// What `lab bisect-step` prints when it has answered git.
pub fn step_line(record: &StepRecord) -> String {
    format!(
        "lab bisect-step: {} {}: {} ({}; build {:.0}s, run {:.0}s)",
        short(&record.commit),
        record.subject,
        record.verdict.label(),
        record.reason.lines().next().unwrap_or(""),
        record.build_seconds,
        record.run_seconds
    )
}

fn evidence(out: &mut String, whose: &str, s: &StepRecord) {
    out.push_str(&format!("evidence from {whose} ({}): {}\n", s.kernel, s.reason));
    out.push_str(&format!("guest: {}\n", s.guest.as_deref().unwrap_or("-")));
    for f in s.failures.iter().take(3) {
        out.push_str(&format!("--- {} ---\n{}\n", f.case, f.text));
    }
}

/// The answer, the evidence for it, and every step.
pub fn report(found: &Bisection, steps: &[StepRecord], candidates: usize, wall: std::time::Duration, kernels_mode: bool) -> String {
    let name = |rev: &Rev| if kernels_mode { rev.subject.clone() } else { format!("{} {}", rev.commit, rev.subject) };
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
        Conclusion::FirstBad(rev) => first_bad(&mut out, found, rev, steps, kernels_mode, &name(rev)),
        Conclusion::Undecided(revs) => {
            let what = if kernels_mode { "kernels" } else { "commits" };
            out.push_str(&format!("\ngit cannot decide: skipped {what} hide the first bad one, which is one of:\n"));
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
    let what = if kernels_mode { "kernel(s)" } else { "commit(s)" };
    out.push_str(&format!("\n{} step(s) for {candidates} {what} after good, wall time {}\n", steps.len(), minutes(wall.as_secs_f64())));
    out.push_str(&step_table(steps, kernels_mode));
    out
}

fn first_bad(out: &mut String, found: &Bisection, rev: &Rev, steps: &[StepRecord], kernels_mode: bool, name: &str) {
    out.push_str(&format!("\nfirst bad {}: {name}\n", if kernels_mode { "kernel" } else { "commit" }));
    // Any bad step shows the failure when the answer's own was not run; the last is the closest.
    let own = steps.iter().find(|s| s.commit == rev.commit && s.verdict == Verdict::Bad);
    match own.or_else(|| steps.iter().rev().find(|s| s.verdict == Verdict::Bad)) {
        None => out.push_str("evidence: no step tested a bad kernel\n"),
        Some(s) if own.is_some() => evidence(out, "its step", s),
        Some(s) => evidence(out, &format!("the closest bad step, {}", short(&s.commit)), s),
    }
    for check in &found.end_checks {
        let end = check.assumed.name();
        let which = if kernels_mode { check.rev.subject.clone() } else { short(&check.rev.commit).to_string() };
        out.push_str(&if check.found == Verdict::Skip {
            format!("unchecked: the {end} end {which} could not be tested (skipped); the answer assumes it is {end}\n")
        } else {
            format!("checked: the {end} end {which}, which git takes on trust, is {end}\n")
        });
    }
}

fn step_table(steps: &[StepRecord], kernels_mode: bool) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let build = if s.cached { "cached".to_string() } else { minutes(s.build_seconds) };
            let detail = if kernels_mode { String::new() } else { format!("{} ", s.subject) };
            let reason: String = s.reason.lines().next().unwrap_or("").chars().take(100).collect();
            let what = if kernels_mode { s.subject.clone() } else { short(&s.commit).to_string() };
            vec![(i + 1).to_string(), what, s.verdict.label().to_string(), build, minutes(s.run_seconds), format!("{detail}[{reason}]")]
        })
        .collect();
    let header = ["#", if kernels_mode { "KERNEL" } else { "COMMIT" }, "VERDICT", "BUILD", "RUN", "SUBJECT / REASON"];
    table::plain(&header, &rows, &[Align::Left, Align::Left, Align::Left, Align::Right, Align::Right, Align::Left])
}

fn minutes(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}
