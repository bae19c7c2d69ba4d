//! What the kernel's `bench sockmap` prints, read back: its per-second `Iter` lines and its
//! `Summary` line, per mode, between the markers the guest script prints around each mode.

use serde::{Deserialize, Serialize};

/// Printed around each mode in the guest: `@@lab-upstream-bench begin rx-verdict-ingress`, then
/// `@@lab-upstream-bench end rx-verdict-ingress 0` with the bench's exit status.
pub const MARK: &str = "@@lab-upstream-bench";

/// One `Iter` line: one second of the benchmark (`report_progress()` in `bench_sockmap.c`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Iteration {
    pub iter: u32,
    /// What the producer's `sendfile()` calls moved (10^6 bytes per second), and the calls.
    pub send_mb_per_s: f64,
    pub send_calls_per_s: f64,
    /// What the BPF program saw (its `process_byte` counter): the figure its summary averages.
    pub bpf_mb_per_s: f64,
    /// What the consumer read from the receiving socket (and checked, byte by byte), and its reads.
    pub rcv_mb_per_s: f64,
    pub read_calls_per_s: f64,
}

/// The `Summary: total trans N MB ± X MB/s` line. Despite the `±`, X is the mean of the BPF
/// program's MB/s over the measured seconds (`report_final()`), and N the whole megabytes it saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub total_mb: u64,
    pub bpf_mb_per_s: f64,
}

/// One mode's run in one boot, as the guest printed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeRun {
    pub mode: String,
    /// The bench's exit status; None when it never reached its end marker.
    pub exit: Option<i32>,
    /// Every `Iter` line, warm-up included (`iter < warmup`).
    pub iterations: Vec<Iteration>,
    pub summary: Option<Summary>,
    /// Why this run gives no figure: a non-zero exit, no end, no summary (with its last lines).
    pub error: Option<String>,
}

impl ModeRun {
    /// The seconds after the warm-up: what the bench's own summary averages.
    pub fn measured(&self, warmup: u32) -> impl Iterator<Item = &Iteration> {
        self.iterations.iter().filter(move |i| i.iter >= warmup)
    }
}

/// The number after `label` in `text` (`Speed 12.5 MB/s` → 12.5 for `Speed`).
fn number_after(text: &str, label: &str) -> Option<f64> {
    let at = text.find(label)? + label.len();
    text[at..].split_whitespace().next()?.parse().ok()
}

/// `Iter   3 ( 12.345us): Send Speed 1.2 MB/s (3.0 calls/s), BPF Speed 1.2 MB/s, Rcv Speed 1.1 MB/s (4.0 calls/s)`.
pub fn iteration(line: &str) -> Option<Iteration> {
    let rest = line.trim().strip_prefix("Iter")?;
    let iter = rest.split_whitespace().next()?.parse().ok()?;
    let (_, fields) = rest.split_once("):")?;
    let send = fields.split(", BPF Speed").next()?;
    let rcv = fields.split(", Rcv Speed").nth(1)?;
    Some(Iteration {
        iter,
        send_mb_per_s: number_after(send, "Send Speed")?,
        send_calls_per_s: number_after(send, "(")?,
        bpf_mb_per_s: number_after(fields, "BPF Speed")?,
        rcv_mb_per_s: rcv.split_whitespace().next()?.parse().ok()?,
        read_calls_per_s: number_after(rcv, "(")?,
    })
}

/// `Summary: total trans      640 MB ± 106.803 MB/s`.
pub fn summary(line: &str) -> Option<Summary> {
    let rest = line.trim().strip_prefix("Summary: total trans")?;
    let (total, rest) = rest.split_once("MB")?;
    let mean = rest.trim_start().trim_start_matches('±').split_whitespace().next()?;
    Some(Summary { total_mb: total.trim().parse().ok()?, bpf_mb_per_s: mean.parse().ok()? })
}

/// The output between a mode's markers, and its exit status when it reached the end marker.
pub fn section<'a>(output: &'a str, mode: &str) -> Option<(&'a str, Option<i32>)> {
    let begin = format!("{MARK} begin {mode}\n");
    let start = output.find(&begin)? + begin.len();
    let rest = &output[start..];
    let end = format!("{MARK} end {mode} ");
    match rest.find(&end) {
        Some(at) => Some((&rest[..at], rest[at + end.len()..].lines().next().and_then(|c| c.trim().parse().ok()))),
        None => Some((rest, None)),
    }
}

/// One mode's run read from a boot's whole output.
pub fn mode_run(output: &str, mode: &str) -> ModeRun {
    let Some((text, exit)) = section(output, mode) else {
        return ModeRun { mode: mode.into(), exit: None, iterations: vec![], summary: None, error: Some("never started".into()) };
    };
    let iterations: Vec<Iteration> = text.lines().filter_map(iteration).collect();
    let summary = text.lines().find_map(summary);
    let last = || crate::process::tail(text.trim_end(), 5);
    let error = match (exit, summary) {
        (None, _) => Some(format!("died before its end (no exit status); last lines:\n{}", last())),
        (Some(0), Some(_)) => None,
        (Some(0), None) => Some(format!("exited 0 without its Summary line; last lines:\n{}", last())),
        (Some(code), _) => Some(format!("exited {code}: {}", last())),
    };
    ModeRun { mode: mode.into(), exit, iterations, summary, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One boot of `lab bench --upstream debian-7.3 --runs 1` (7.3.4, TCG, 1 vCPU), the guest's
    /// output as the lab captured it on 2026-12-03: every mode of `./bench sockmap -c 2 -p 1 -a -w 1
    /// -d 5 --MODE` between the lab's markers (`rx-normal` and `tx-normal` are rejected by 7.3.4's
    /// `setup()`, which has no branch for them).
    const CAPTURED: &str = include_str!("testdata/bench-sockmap-7.3.4.txt");

    #[test]
    fn a_captured_run_gives_every_second_and_the_summary() {
        let run = mode_run(CAPTURED, "rx-verdict-ingress");
        assert_eq!(run.error, None, "{run:?}");
        assert_eq!(run.exit, Some(0));
        assert_eq!(run.iterations.len(), 7);
        assert_eq!(run.iterations.iter().map(|i| i.iter).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(run.measured(1).count(), 6);
        let s = run.summary.expect("summary");
        assert!(s.total_mb > 0 && s.bpf_mb_per_s > 0.0, "{s:?}");
        // The summary's figure is the mean of the BPF speeds after the warm-up (to its rounding).
        let mean = run.measured(1).map(|i| i.bpf_mb_per_s).sum::<f64>() / run.measured(1).count() as f64;
        assert!((mean - s.bpf_mb_per_s).abs() < 0.01 * s.bpf_mb_per_s.max(1.0), "{mean} vs {s:?}");
        assert!(run.iterations.iter().all(|i| i.rcv_mb_per_s >= 0.0 && i.send_calls_per_s >= 0.0));
        assert_eq!((run.iterations[1].send_mb_per_s, run.iterations[1].rcv_mb_per_s, run.iterations[1].read_calls_per_s), (804.017, 15.611, 119.1));
        assert_eq!(s, Summary { total_mb: 4196, bpf_mb_per_s: 699.815 });
        for mode in ["rx-pass", "rx-verdict-egress", "tx-pass", "tx-verdict-ingress", "tx-verdict-egress"] {
            let run = mode_run(CAPTURED, mode);
            assert_eq!((run.error.as_deref(), run.iterations.len()), (None, 7), "{mode}");
        }
    }

    #[test]
    fn a_mode_the_bench_rejects_is_an_error_with_its_words() {
        let run = mode_run(CAPTURED, "rx-normal");
        assert_eq!(run.exit, Some(1));
        let error = run.error.expect("an error");
        assert!(error.starts_with("exited 1: ") && error.contains("unknown sockmap bench mode"), "{error}");
        assert_eq!(mode_run(CAPTURED, "rx-strp").error.as_deref(), Some("never started"));
    }

    #[test]
    fn one_line_of_each_kind() {
        let line = "Iter   3 ( 12.345us): Send Speed  101.250 MB/s ( 772.000 calls/s), BPF Speed  100.123 MB/s, Rcv Speed   99.500 MB/s (1540.000 calls/s)";
        let i = iteration(line).unwrap();
        assert_eq!((i.iter, i.send_mb_per_s, i.send_calls_per_s, i.bpf_mb_per_s, i.rcv_mb_per_s, i.read_calls_per_s), (3, 101.25, 772.0, 100.123, 99.5, 1540.0));
        assert_eq!(iteration("Iter   1 (-12.5us): garbage"), None);
        assert_eq!(summary("Summary: total trans      640 MB \u{b1} 106.803 MB/s"), Some(Summary { total_mb: 640, bpf_mb_per_s: 106.803 }));
        let cut = format!("{MARK} begin tx-pass\n{line}\n");
        let run = mode_run(&cut, "tx-pass");
        assert_eq!((run.exit, run.iterations.len()), (None, 1));
        assert!(run.error.unwrap().starts_with("died before its end"));
    }
}
