//! `lab bench --upstream`'s words: a line per event as it goes, then per kernel a table of the
//! kernel's `bench sockmap` modes, and with `--vs` the ratios beside `lab bench`'s for the same path.

use std::fmt::Write as _;

use super::bench::{num, size_label};
use super::table::{self, Align};
use crate::bench::upstream::{Event, KernelUpstream, ModeRatio, UpstreamComparison, UpstreamReport};
use crate::bench::Stats;

/// One line per event (None: nothing worth a line).
pub fn event_line(event: &Event) -> Option<String> {
    match event {
        Event::Built { kernel, dir, cached, seconds, build } => Some(format!(
            "upstream bench for {kernel}: {} in {seconds:.0}s ({}, {}): {}",
            if *cached { "found built" } else { "built" },
            build.source,
            build.clang,
            dir.join("bench").display()
        )),
        Event::ModeDone { kernel, boot, run } => Some(match &run.error {
            None => format!("{kernel} boot {boot}: {:<20} {}", run.mode, run.summary.map_or("-".into(), |s| format!("summary {} MB/s", num(s.bpf_mb_per_s)))),
            Some(e) => format!("{kernel} boot {boot}: {:<20} no figure: {}", run.mode, e.lines().next().unwrap_or("")),
        }),
    }
}

/// `median min-max` (MB/s), or `-`.
fn spread(s: Option<Stats>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} {}-{}", num(s.median), num(s.min), num(s.max)),
        Some(s) => num(s.median),
        None => "-".into(),
    }
}

fn ratio(s: Option<Stats>) -> String {
    match s {
        Some(r) if r.n > 1 => format!("{:.2}x {:.2}-{:.2} n{}", r.median, r.min, r.max, r.n),
        Some(r) => format!("{:.2}x n{}", r.median, r.n),
        None => "-".into(),
    }
}

fn kib(s: Option<Stats>) -> String {
    s.map_or("-".into(), |s| num(s.median / 1024.0))
}

fn heading(out: &mut String, k: &KernelUpstream) {
    let s = &k.settings;
    let _ = writeln!(out, "{} ({}): the kernel's own `bench sockmap`, guest on {} vCPU under {}", k.kernel, k.release, k.cpus, k.accel.as_str().to_uppercase());
    let _ = writeln!(
        out,
        "{} guest boot(s); each mode: `bench sockmap -c 2 -p 1 -a -w {} -d {} --MODE` ({} warm-up second(s) left out); bench built from {} with {} in {:.0}s",
        k.boot_seconds.len(),
        s.warmup,
        s.duration,
        s.warmup,
        k.build.source,
        k.build.clang,
        k.build.build_seconds
    );
    for change in &k.build.harness_changes {
        let _ = writeln!(out, "harness change: {change}");
    }
}

fn modes_table(out: &mut String, k: &KernelUpstream) {
    let _ = writeln!(out, "\nPer mode, MB/s over every measured second of every boot (median min-max); KiB per call are medians.");
    let _ = writeln!(out, "received: what the consumer read (and checked byte by byte); sent: what sendfile() returned; BPF saw: the bytes the");
    let _ = writeln!(out, "program ran on (a TX verdict runs again on a send that is retried), which the bench's own summary averages:");
    let rows: Vec<Vec<String>> = k
        .modes
        .iter()
        .map(|m| {
            vec![
                m.mode.clone(),
                m.path.clone().unwrap_or_else(|| "(no redirect)".into()),
                spread(m.rcv_mb_per_s),
                spread(m.send_mb_per_s),
                spread(m.bpf_mb_per_s),
                spread(m.summary_mb_per_s),
                kib(m.bytes_per_send),
                kib(m.bytes_per_read),
                if m.errors.is_empty() { String::new() } else { format!("{} of {} boots gave no figure", m.errors.len(), k.boots.len()) },
            ]
        })
        .collect();
    let header = ["mode", "lab bench path", "received", "sent", "BPF saw", "bench summary", "KiB/sendfile", "KiB/read", ""];
    let mut align = vec![Align::Right; header.len()];
    align[0] = Align::Left;
    align[1] = Align::Left;
    align[8] = Align::Left;
    out.push_str(&table::plain(&header, &rows, &align));
}

fn errors(out: &mut String, k: &KernelUpstream) {
    let lines: Vec<String> = k.modes.iter().flat_map(|m| m.errors.iter().map(move |e| format!("  {} {}", m.mode, e.replace('\n', "\n    ")))).collect();
    if !lines.is_empty() {
        let _ = writeln!(out, "\nModes that gave no figure (the bench's own words):\n{}", lines.join("\n"));
    }
}

fn ours_cells(r: &ModeRatio) -> [String; 3] {
    match &r.ours {
        Some(o) => [format!("{} {}", ratio(Some(o.ratio)), size_label(o.size)), o.direction.label().into(), r.agrees().map_or("-".into(), |a| if a { "agree".into() } else { "DISAGREE".into() })],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

fn comparison(out: &mut String, cmp: &UpstreamComparison) {
    let _ = writeln!(
        out,
        "\n{} / {}, upstream `bench sockmap` (above 1, {} is faster; boot i of each paired) beside `lab bench` at its largest messages:",
        cmp.other, cmp.base, cmp.other
    );
    let rows: Vec<Vec<String>> = cmp
        .modes
        .iter()
        .map(|r| {
            let [ours, ours_dir, agree] = ours_cells(r);
            vec![r.mode.clone(), r.path.clone().unwrap_or_else(|| "-".into()), ratio(r.rcv), ratio(r.summary), r.direction.map_or("-".into(), |d| d.label().into()), ours, ours_dir, agree]
        })
        .collect();
    let header = ["mode", "path", "received", "bench summary", "upstream says", "lab bench", "lab bench says", "tools"];
    let mut align = vec![Align::Left; header.len()];
    align[2] = Align::Right;
    align[3] = Align::Right;
    align[5] = Align::Right;
    out.push_str(&table::plain(&header, &rows, &align));
    let _ = writeln!(out, "faster/slower: every boot's ratio on that side of 1 and the median at least 3% off; else even");
    match &cmp.ours_from {
        Some(dir) => {
            let _ = writeln!(out, "lab bench figures from {}", dir.display());
        }
        None => {
            let _ = writeln!(out, "no `lab bench {} --vs {}` found (run it, or point --ours at its folder): the lab bench columns are empty", cmp.base, cmp.other);
        }
    }
}

pub fn report(report: &UpstreamReport) -> String {
    let mut out = String::new();
    for (i, k) in report.kernels.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        heading(&mut out, k);
        modes_table(&mut out, k);
        errors(&mut out, k);
    }
    if let Some(cmp) = &report.comparison {
        comparison(&mut out, cmp);
    }
    if report.wall_seconds > 0.0 {
        let _ = writeln!(out, "\nwall time: {:.0}s", report.wall_seconds);
    }
    for file in &report.files {
        let _ = writeln!(out, "results: {}", file.display());
    }
    out
}
