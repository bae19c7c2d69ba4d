//! `lab mutants`' words: a line per verdict while the run goes on, and the Markdown table
//! (`mutants.md`, which reads fine in a terminal too).

use super::table;
use crate::mutants::MutantVerdict;
use crate::selftests::MutantSelftests;

fn verdict_word(v: &MutantVerdict) -> &'static str {
    if v.not_run {
        "NOT RUN"
    } else if v.caught {
        "caught"
    } else {
        "MISSED"
    }
}

pub fn verdict_line(v: &MutantVerdict) -> String {
    format!("{}: {} ({})", v.mutant, verdict_word(v), v.evidence)
}

pub fn mutant_table(verdicts: &[MutantVerdict]) -> String {
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let rows: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            // A verdict that is not a catch must stand out in the rendered Markdown.
            let verdict = if v.caught && !v.not_run { "caught".to_string() } else { format!("**{}**", verdict_word(v)) };
            vec![
                v.mutant.clone(),
                v.breaks.clone(),
                or_dash(&v.control),
                verdict,
                or_dash(&v.caught_by.join(", ")),
                or_dash(&v.checks),
                v.evidence.chars().take(240).collect(),
                selftests_cell(v.selftests.as_ref()),
                or_dash(&v.date),
            ]
        })
        .collect();
    let header = ["mutant", "breaks", "control", "verdict", "failing cases", "checks that failed", "evidence", "kernel selftests", "run"];
    table::markdown(&header, &rows)
}

/// The selftests column of the mutant table: caught (how many tests, the first), missed, or why not run.
fn selftests_cell(s: Option<&MutantSelftests>) -> String {
    let Some(s) = s else { return "-".into() };
    let text = match s.caught {
        Some(true) if s.caught_by.is_empty() => format!("caught: {}", s.evidence),
        Some(true) => format!("caught by {} test(s): {}", s.caught_by.len(), s.evidence),
        Some(false) => format!("**missed** ({})", s.evidence),
        None => format!("not run: {}", s.evidence),
    };
    text.chars().take(200).collect()
}

/// Both tools on each mutant: which catches it, and the mutants only one of them catches.
pub fn both_tools_summary(verdicts: &[MutantVerdict]) -> String {
    let judged: Vec<&MutantVerdict> = verdicts.iter().filter(|v| !v.not_run && v.selftests.as_ref().is_some_and(|s| s.caught.is_some())).collect();
    if judged.is_empty() {
        return String::new();
    }
    let by_selftests = |v: &MutantVerdict| v.selftests.as_ref().and_then(|s| s.caught) == Some(true);
    let only = |lab: bool| {
        let names: Vec<&str> = judged.iter().filter(|v| v.caught == lab && by_selftests(v) != lab).map(|v| v.mutant.as_str()).collect();
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    };
    format!(
        "\nOf {} mutants run by both: the lab's suite catches {}, the kernel's selftests {}; only the suite: {}; only the selftests: {}\n",
        judged.len(),
        judged.iter().filter(|v| v.caught).count(),
        judged.iter().filter(|v| by_selftests(v)).count(),
        only(true),
        only(false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutants::tests::verdict;

    #[test]
    fn the_table_shows_both_tools_and_the_mutants_only_one_catches() {
        let with = |mutant: &str, lab: bool, selftests: Option<bool>| MutantVerdict {
            selftests: Some(MutantSelftests {
                caught: selftests,
                caught_by: if selftests == Some(true) { vec!["test_progs:sockmap_basic/x".into()] } else { vec![] },
                evidence: "test_progs:sockmap_basic/x: FAIL".into(),
                control: "base: 805 passed, 0 failed, 1 skipped".into(),
            }),
            ..verdict(mutant, lab, "r")
        };
        let rows = [with("mutant-a", true, Some(true)), with("mutant-b", true, Some(false)), with("mutant-c", false, Some(true)), with("mutant-d", true, None)];
        let table = mutant_table(&rows);
        assert!(table.contains("| kernel selftests |"), "{table}");
        assert!(table.contains("caught by 1 test(s): test_progs:sockmap_basic/x: FAIL"), "{table}");
        assert!(table.contains("**missed**"), "{table}");
        let summary = both_tools_summary(&rows);
        assert_eq!(
            summary.trim(),
            "Of 3 mutants run by both: the lab's suite catches 2, the kernel's selftests 2; only the suite: mutant-b; only the selftests: mutant-c"
        );
        assert_eq!(both_tools_summary(&[verdict("mutant-a", true, "r")]), "");
    }
}
