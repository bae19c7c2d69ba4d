//! `lab mutants`' words: a line per verdict while the run goes on, and the Markdown table
//! (`mutants.md`, which reads fine in a terminal too).

use super::table;
use crate::mutants::MutantVerdict;

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
                or_dash(&v.date),
            ]
        })
        .collect();
    let header = ["mutant", "breaks", "control", "verdict", "failing cases", "checks that failed", "evidence", "run"];
    table::markdown(&header, &rows)
}
