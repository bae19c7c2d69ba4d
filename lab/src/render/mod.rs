//! Everything the lab prints or writes for people and CI, one module per output: the engines
//! (suite, matrix, mutants, bench, bisect) hand over typed results, and only this tree decides how
//! they read. Nothing here runs a guest or a build.

pub mod bench;
pub mod bench_upstream;
pub mod bisect;
pub mod junit;
pub mod kernels;
pub mod matrix;
pub mod mutants;
pub mod plot;
pub mod selftests;
pub mod suite;
pub mod table;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::Status;
    use crate::matrix::{Row, RowState};
    use crate::mutants::tests::{case, report, LEAKY};

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
        assert_eq!(suite::case_line(&shut), "KNOWN        tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing (known finding: tcp-bpf-sendmsg-after-shut-wr)");
        let text = suite::summary(&run);
        assert!(text.contains("known finding tcp-bpf-sendmsg-after-shut-wr: sends after SHUT_WR (upstream: unfixed)"), "{text}");
        let counts = |path: &str| text.lines().find(|l| l.starts_with(path)).map(|l| l.split_whitespace().skip(1).take(3).collect::<Vec<_>>());
        assert_eq!(counts("tx_to_rx "), Some(vec!["0", "0", "1"]), "{text}");
        assert_eq!(counts("rx_to_tx "), Some(vec!["0", "1", "0"]), "{text}");
        let json: serde_json::Value = serde_json::to_value(&run).unwrap();
        assert_eq!(json["totals"]["known"], 1);
        assert_eq!(json["cases"][0]["finding"], "tcp-bpf-sendmsg-after-shut-wr");
        let row = Row { kernel: "debian-6.12".into(), state: RowState::Ran, report: Some(run) };
        assert!(!row.green());
        assert_eq!(matrix::cells(&row), ["0/0/1/0", "-", "-", "0/1/0/0", "0/1/1/0"]);
        let xml = junit::junit(&row);
        assert!(xml.contains("failures=\"2\""), "{xml}");
        assert!(xml.contains("<failure message=\"known finding tcp-bpf-sendmsg-after-shut-wr: "), "{xml}");
        assert!(xml.contains("type=\"known-finding\""), "{xml}");
        assert!(matrix::matrix_details(std::slice::from_ref(&row), &[], 5).contains("KNOWN tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing (known finding: tcp-bpf-sendmsg-after-shut-wr)"));
    }

    #[test]
    fn the_mutant_table_shows_the_control_and_what_is_not_a_catch() {
        let caught = crate::mutants::MutantVerdict { mutant: "mutant-a".into(), caught: true, control: "base-k: 1 passed, 0 failed".into(), ..Default::default() };
        let missed = crate::mutants::MutantVerdict { mutant: "mutant-b".into(), evidence: "a|b".into(), ..Default::default() };
        let table = mutants::mutant_table(&[caught, missed]);
        assert!(table.contains("| mutant-a |  | base-k: 1 passed, 0 failed | caught | - | - |  | - | - |"), "{table}");
        assert!(table.contains("| **MISSED** |") && table.contains("a\\|b"), "{table}");
    }
}
