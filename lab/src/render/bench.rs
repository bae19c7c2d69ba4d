//! `lab bench`'s terminal report: per kernel, throughput (with the ratio to TCP), context switches
//! and latency; then the comparison between kernels; then where the files are.

use std::fmt::Write as _;

use super::table::{self, Align};
use crate::bench::{BenchReport, Comparison, KernelBench, Stats, ThroughputSummary, BASELINE, PATHS};
use crate::vm::Accel;

pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Three significant figures or so, whatever the magnitude.
pub fn num(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// A ratio with the number of boots it rests on (`n3`), and `!` when a boot's run of the point
/// failed: a ratio over fewer boots than were made must say so.
fn ratio_cell(ratio: Option<Stats>, failed: bool) -> String {
    let mark = if failed { "!" } else { "" };
    match ratio {
        Some(r) if r.n > 1 => format!("{:.2}x {:.2}-{:.2} n{}{mark}", r.median, r.min, r.max, r.n),
        Some(r) => format!("{:.2}x n{}{mark}", r.median, r.n),
        None => format!("-{mark}"),
    }
}

fn accel_note(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "",
        Accel::Tcg => "; TCG emulates the CPU, so absolute figures are not real-machine figures: read the ratios",
    }
}

/// Rows of paths, columns of sizes; `cell` gives a path's text at a size (two lines at most).
fn grid(sizes: &[usize], cell: impl Fn(&str, usize) -> String) -> String {
    let labels: Vec<String> = sizes.iter().map(|&s| size_label(s)).collect();
    let header: Vec<&str> = std::iter::once("path").chain(labels.iter().map(String::as_str)).collect();
    let rows: Vec<Vec<String>> =
        PATHS.iter().map(|&path| std::iter::once(path.to_string()).chain(sizes.iter().map(|&size| cell(path, size))).collect()).collect();
    let mut align = vec![Align::Right; header.len()];
    align[0] = Align::Left;
    table::plain(&header, &rows, &align)
}

fn heading(out: &mut String, bench: &KernelBench) {
    let s = &bench.settings;
    let accel = bench.accel.as_str().to_uppercase();
    let _ = writeln!(out, "{} ({}), guest on {} vCPU under {accel}{}", bench.kernel, bench.release, bench.cpus, accel_note(bench.accel));
    let _ = writeln!(
        out,
        "{} guest boot(s); in each, every point ran {} warm-up (discarded) + {} measured runs, paths taking turns; {} ms per throughput run, {} ms per latency run",
        bench.boots.len(),
        s.warmup,
        s.repeats,
        s.point_ms,
        s.latency_ms
    );
}

fn throughput(out: &mut String, bench: &KernelBench) {
    let spread = if bench.boots.len() > 1 { " (median, min-max over the boots)" } else { "" };
    let _ = writeln!(out, "\nThroughput, MB/s (median of all runs), and under it the ratio to plain TCP{spread}:");
    let find = |path: &str, size: usize| bench.throughput.iter().find(|t| t.path == path && t.size == size);
    out.push_str(&grid(&bench.settings.sizes, |path, size| match find(path, size) {
        Some(t) if path == BASELINE => mb_cell(t),
        Some(t) => format!("{}\n{}", mb_cell(t), ratio_cell(t.vs_tcp, !t.errors.is_empty())),
        None => "-".into(),
    }));
    let failed: Vec<String> = bench
        .throughput
        .iter()
        .filter(|t| !t.errors.is_empty())
        .map(|t| format!("  {} {}: {}", t.path, size_label(t.size), t.errors.join("; ")))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "nK = the ratio rests on K boots; ! = a boot's run of the point failed and is left out:\n{}", failed.join("\n"));
    }
    let _ = writeln!(out, "\nContext switches per message (median), this process / the whole guest:");
    out.push_str(&grid(&bench.settings.sizes, |path, size| {
        find(path, size)
            .and_then(|t| Some(format!("{} / {}", num(t.switches_per_message?.median), num(t.system_switches_per_message?.median))))
            .unwrap_or_else(|| "-".into())
    }));
    if bench.throughput.iter().any(|t| t.tcp_segments_per_message.is_some()) {
        let _ = writeln!(out, "\nTCP segments sent per message (median; the whole guest: data and ACKs, every hop):");
        out.push_str(&grid(&bench.settings.sizes, |path, size| {
            find(path, size).and_then(|t| Some(num(t.tcp_segments_per_message?.median))).unwrap_or_else(|| "-".into())
        }));
    }
}

fn mb_cell(t: &ThroughputSummary) -> String {
    t.mb_per_s.map_or_else(|| "error".into(), |m| num(m.median))
}

fn latency(out: &mut String, bench: &KernelBench) {
    let med = |s: Option<Stats>| s.map_or_else(|| "error".into(), |s| num(s.median));
    for &size in &bench.settings.latency_sizes {
        let spread = if bench.boots.len() > 1 { "; ratio: median, min-max over the boots" } else { "" };
        let _ = writeln!(
            out,
            "\nLatency of a {} request (µs, median over runs of each run's percentile): request over the path, reply over AF_UNIX{spread}",
            size_label(size)
        );
        let rows: Vec<Vec<String>> = PATHS
            .iter()
            .filter_map(|&path| bench.latency.iter().find(|l| l.path == path && l.size == size))
            .map(|l| {
                let switches = l.switches_per_request.zip(l.system_switches_per_request);
                vec![
                    l.path.clone(),
                    med(l.one_way_p50_us),
                    med(l.one_way_p99_us),
                    med(l.round_trip_p50_us),
                    med(l.round_trip_p99_us),
                    if l.path == BASELINE { String::new() } else { ratio_cell(l.vs_tcp, false) },
                    switches.map_or_else(|| "-".into(), |(p, s)| format!("{} / {}", num(p.median), num(s.median))),
                ]
            })
            .collect();
        let header = ["path", "1-way p50", "p99", "r-trip p50", "p99", "1-way p50 vs tcp", "switches/req"];
        let mut align = vec![Align::Right; header.len()];
        align[0] = Align::Left;
        out.push_str(&table::plain(&header, &rows, &align));
    }
}

fn failures(out: &mut String, bench: &KernelBench) {
    let failures: Vec<String> = bench
        .throughput
        .iter()
        .flat_map(|t| t.errors.iter().map(move |e| format!("throughput {} {}: {e}", t.path, size_label(t.size))))
        .chain(bench.latency.iter().flat_map(|l| l.errors.iter().map(move |e| format!("latency {} {}: {e}", l.path, size_label(l.size)))))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nPoints that failed (their runs before the failure still count):");
        for f in failures {
            let _ = writeln!(out, "  {f}");
        }
    }
}

fn comparison(out: &mut String, cmp: &Comparison, sizes: &[usize]) {
    let _ = writeln!(out, "\n{} / {}, throughput (MB/s ratio; above 1, {} is faster), boot i of each paired:", cmp.other, cmp.base, cmp.other);
    out.push_str(&grid(sizes, |path, size| ratio_cell(cmp.throughput.iter().find(|r| r.path == path && r.size == size).and_then(|r| r.ratio), false)));
    let _ = writeln!(out, "\n{} / {}, one-way latency p50 (above 1, {} is slower):", cmp.other, cmp.base, cmp.other);
    let rows: Vec<Vec<String>> = cmp.latency.iter().map(|r| vec![r.path.clone(), size_label(r.size), ratio_cell(r.ratio, false)]).collect();
    out.push_str(&table::plain(&["path", "size", "ratio"], &rows, &[Align::Left, Align::Right, Align::Right]));
}

pub fn report(report: &BenchReport) -> String {
    let mut out = String::new();
    for (i, bench) in report.kernels.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        heading(&mut out, bench);
        throughput(&mut out, bench);
        latency(&mut out, bench);
        failures(&mut out, bench);
    }
    if let (Some(cmp), Some(first)) = (&report.comparison, report.kernels.first()) {
        comparison(&mut out, cmp, &first.settings.sizes);
    }
    // A report read back from its JSON (`lab bench-plot`) does not know how long the bench took.
    if report.wall_seconds > 0.0 {
        let _ = writeln!(out, "\nwall time: {:.0}s", report.wall_seconds);
    }
    for file in &report.files {
        let _ = writeln!(out, "results: {}", file.display());
    }
    out
}
