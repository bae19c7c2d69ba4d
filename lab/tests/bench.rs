//! `lab bench`'s output is well formed: a canned guest sample goes through the host's parser,
//! summary, comparison, renderer and writers; and one tiny real bench runs in a guest and goes
//! through the same. Nothing here asserts a figure or a duration: under TCG on a shared host they
//! mean nothing to a test.

mod common;

use lab::bench::{self, BenchReport, GuestResults, KernelBench, PATHS};
use lab::vm::Accel;

/// A real `benchcases` output (debian-6.12 under TCG; sizes 16 B, 1 KiB, 64 KiB; 3 runs per point).
const SAMPLE: &str = include_str!("fixtures/bench-guest.json");

fn sample() -> GuestResults {
    bench::parse_guest(SAMPLE).expect("the sample parses")
}

/// The plot's data lines: plotters draws axes and ticks as thin polylines too, a series 2 px wide.
fn data_lines(svg: &str) -> usize {
    svg.split("<polyline").skip(1).filter(|tag| tag.split('>').next().unwrap_or("").contains(r#"stroke-width="2""#)).count()
}

/// Every path has a row for every size, with figures, and the table and plot say so.
fn assert_complete(bench: &KernelBench) {
    for &path in PATHS {
        for &size in &bench.settings.sizes {
            let t = bench.throughput.iter().find(|t| t.path == path && t.size == size);
            let t = t.unwrap_or_else(|| panic!("no throughput row for {path} at {size} B"));
            assert!(t.mb_per_s.is_some_and(|s| s.min <= s.median && s.median <= s.max && s.min > 0.0), "{t:?}");
            assert!(t.switches_per_message.is_some() && t.system_switches_per_message.is_some(), "{t:?}");
            assert!(t.vs_tcp.is_some(), "{t:?}");
        }
        for &size in &bench.settings.latency_sizes {
            let l = bench.latency.iter().find(|l| l.path == path && l.size == size).unwrap();
            assert!(l.one_way_p50_us.zip(l.one_way_p99_us).is_some_and(|(p50, p99)| p50.median <= p99.max), "{l:?}");
            assert!(l.round_trip_p50_us.is_some() && l.vs_tcp.is_some(), "{l:?}");
        }
    }
}

#[test]
fn a_guest_sample_becomes_a_table_json_and_a_plot() {
    let mut broken = sample();
    let point = broken.throughput.iter_mut().find(|p| p.path == "rx_to_tx" && p.size == 1024).unwrap();
    point.runs.truncate(1);
    point.error = Some("run 3: receiving: stalled: nothing arrived for 5s after 0 bytes".into());

    let base = bench::summarize("debian-6.12", "6.12.117", Accel::Tcg, 1, vec![sample(), broken], vec![20.0, 21.0]).unwrap();
    assert_complete(&base);
    let tcp = base.throughput.iter().find(|t| t.path == "tcp" && t.size == 16).unwrap();
    assert_eq!(tcp.vs_tcp.unwrap().median, 1.0, "TCP over itself");
    assert_eq!(tcp.mb_per_s.unwrap().n, 6, "two boots of three runs");
    assert_eq!(tcp.vs_tcp.unwrap().n, 2, "one ratio per boot");
    let failed = base.throughput.iter().find(|t| t.path == "rx_to_tx" && t.size == 1024).unwrap();
    assert_eq!(failed.errors, vec!["boot 2: run 3: receiving: stalled: nothing arrived for 5s after 0 bytes"]);

    let other = bench::summarize("debian-6.1", "6.1.158", Accel::Tcg, 1, vec![sample(), sample()], vec![20.0, 20.0]).unwrap();
    let comparison = bench::compare(&base, &other);
    assert_eq!(comparison.throughput.len(), PATHS.len() * 3);
    let same = comparison.throughput.iter().find(|r| r.path == "tcp" && r.size == 16).unwrap();
    assert_eq!(same.ratio.unwrap().median, 1.0, "identical boots compare as 1");

    let dir = tempfile::tempdir().unwrap();
    let mut report = BenchReport { kernels: vec![base, other], comparison: Some(comparison), wall_seconds: 100.0, files: vec![] };
    report.files = lab::cli::bench::write(&report, dir.path()).unwrap();
    let names: Vec<String> = report.files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "debian-6.12.json",
            "debian-6.1.json",
            "debian-6.12-vs-debian-6.1.json",
            "debian-6.12.svg",
            "debian-6.12-ratios.svg",
            "debian-6.1.svg",
            "debian-6.1-ratios.svg",
            "debian-6.12-vs-debian-6.1.svg",
            "debian-6.12-vs-debian-6.1-ratios.svg"
        ]
    );

    // The JSON reads back as what was written, for later comparisons.
    let back: KernelBench = serde_json::from_str(&std::fs::read_to_string(dir.path().join("debian-6.12.json")).unwrap()).unwrap();
    assert_eq!(back.boots.len(), 2);
    assert_eq!(back.throughput.len(), report.kernels[0].throughput.len());

    let svg = std::fs::read_to_string(dir.path().join("debian-6.12.svg")).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(data_lines(&svg), PATHS.len(), "a line per path");
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    assert!(svg.contains("TCG"), "the plot says the figures are emulated");
    let both = std::fs::read_to_string(dir.path().join("debian-6.12-vs-debian-6.1.svg")).unwrap();
    assert_eq!(data_lines(&both), 2 * PATHS.len());
    // Ratios: a line per path but TCP (TCP over itself is the thin reference line at 1); with a second
    // kernel, both kernels' lines, and beside them the second over the first for every path.
    let ratios = std::fs::read_to_string(dir.path().join("debian-6.12-ratios.svg")).unwrap();
    assert_eq!(data_lines(&ratios), PATHS.len() - 1, "{ratios}");
    assert!(ratios.contains("each path / plain TCP") && !ratios.contains("NaN"), "{ratios}");
    let pair = std::fs::read_to_string(dir.path().join("debian-6.12-vs-debian-6.1-ratios.svg")).unwrap();
    assert_eq!(data_lines(&pair), 2 * (PATHS.len() - 1) + PATHS.len(), "{pair}");
    assert!(pair.contains("debian-6.1 / debian-6.12"), "{pair}");

    // The plots are drawn again from the run folder's JSON alone, as `lab bench-plot` does.
    let back = lab::cli::bench::read(dir.path()).unwrap();
    assert_eq!(back.kernels.iter().map(|k| k.kernel.as_str()).collect::<Vec<_>>(), ["debian-6.12", "debian-6.1"]);
    assert!(back.comparison.is_some());

    let text = lab::render::bench::report(&report);
    assert!(text.contains("under TCG") && text.contains("read the ratios"), "{text}");
    for label in ["16 B", "1 KiB", "64 KiB"] {
        assert!(text.contains(label), "{label} column: {text}");
    }
    for path in PATHS {
        assert!(
            text.lines().filter(|l| l.starts_with(&format!("{path} "))).count() >= 3,
            "{path}: throughput, switches, latency rows: {text}"
        );
    }
    assert!(text.contains("x "), "ratios with their spread: {text}");
    assert!(text.contains("throughput rx_to_tx 1 KiB: boot 2: run 3"), "{text}");
    assert!(text.contains("debian-6.1 / debian-6.12"), "{text}");
    assert!(text.contains("debian-6.12-vs-debian-6.1.svg"), "{text}");
}

/// A run whose receiver did not verify every message, or counted other bytes than were sent, gives
/// no figure: it is the point's error instead.
#[test]
fn a_run_whose_content_check_failed_is_an_error_not_a_figure() {
    let mut boot = sample();
    let point = boot.throughput.iter_mut().find(|p| p.path == "tx_to_rx" && p.size == 16).unwrap();
    let runs = point.runs.len();
    point.runs[0].verified_messages -= 1;
    point.runs[1].bytes += 16;
    let summary = bench::summarize("debian-6.12", "6.12.117", Accel::Tcg, 1, vec![boot], vec![20.0]).unwrap();
    let t = summary.throughput.iter().find(|t| t.path == "tx_to_rx" && t.size == 16).unwrap();
    assert_eq!(t.mb_per_s.unwrap().n, runs - 2, "{t:?}");
    assert_eq!(t.errors.len(), 1, "{t:?}");
    assert!(t.errors[0].starts_with("boot 1: measured run 1: ") && t.errors[0].contains("measured run 2: "), "{t:?}");
    assert!(t.errors[0].contains("messages verified in order"), "{t:?}");
    let sound = bench::summarize("debian-6.12", "6.12.117", Accel::Tcg, 1, vec![sample()], vec![20.0]).unwrap();
    assert!(sound.throughput.iter().all(|t| t.errors.is_empty()), "the real sample is sound");
}

#[test]
fn a_guest_binary_out_of_step_with_the_parser_is_an_error() {
    let mut value: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
    value["throughput"][0]["runs"][0].as_object_mut().unwrap().remove("bytes");
    let err = bench::parse_guest(&value.to_string()).unwrap_err();
    assert!(format!("{err:#}").contains("bytes"), "{err:#}");
}

/// A real boot (about 20 s under TCG, after the kernel and the bench binary are built): the guest
/// binary's output goes through the host's parser and renderer. Runs of 100 ms: a 10 ms run on a
/// guest sharing its cores with builds and other guests was seen to send nothing at all.
#[test]
fn a_tiny_bench_runs_in_a_real_guest() {
    let project = common::project_root().canonicalize().unwrap();
    let kernels = lab::definition::KernelsDir { dir: project.join("kernels") };
    let cache = lab::cache::Cache::open(&common::Lab::real().cache).unwrap();
    let def = kernels.load("debian-6.12").unwrap();
    let built = lab::build::build(&def, &kernels, &cache, &lab::build::BuildOptions::default()).unwrap();
    let exe = bench::build_binary(&project).unwrap();
    // Under the project, not /tmp: the guest sees the host's /tmp through an overlay of its own.
    let dir = tempfile::tempdir_in(project.join("target")).unwrap();
    let cfg = bench::vm_config(&cache, "debian-6.12", &built.entry.kernel_image()).unwrap();
    let (accel, cpus) = (cfg.accel, cfg.cpus);
    let args: Vec<String> =
        ["--sizes", "16,4096", "--point-ms", "100", "--latency-ms", "10", "--warmup", "0", "--repeats", "2"].map(String::from).to_vec();
    let (results, run) = bench::boot_once("smoke", &built.entry, &exe, dir.path(), cfg, &args).unwrap();

    assert_eq!(results.release, built.entry.manifest.release);
    assert_eq!(results.throughput.len(), PATHS.len() * 2);
    for point in &results.throughput {
        assert_eq!((point.runs.len(), &point.error), (2, &None), "{} {} B", point.path, point.size);
        for r in &point.runs {
            assert!(r.messages > 0 && r.seconds > 0.0, "{r:?}");
            // Three separate sources: the sender's count of whole messages, the receiver's count of
            // bytes (it reads what is queued beyond the expected count too), and the receiver's
            // check of each message's stamp (its sequence number) at its own stream offsets.
            assert_eq!(r.verified_messages, r.messages, "every message sent arrived stamped in order: {} {r:?}", point.path);
            assert_eq!(r.bytes, r.messages * point.size as u64, "no byte more or less than sent arrived: {} {r:?}", point.path);
        }
    }
    for point in &results.latency {
        assert_eq!((point.runs.len(), &point.error), (2, &None), "{} latency", point.path);
        assert!(point.runs.iter().all(|r| r.samples >= 100), "{point:?}");
    }

    let summary =
        bench::summarize("debian-6.12", &built.entry.manifest.release, accel, cpus, vec![results], vec![run.wall.as_secs_f64()]).unwrap();
    assert_complete(&summary);
    let report = BenchReport { kernels: vec![summary], comparison: None, wall_seconds: run.wall.as_secs_f64(), files: vec![] };
    let text = lab::render::bench::report(&report);
    assert!(text.contains(&format!("under {}", accel.as_str().to_uppercase())), "{text}");
    assert!(!text.contains("error") && !text.contains("failed"), "{text}");
}

/// `lab bench --upstream`: a real boot's output of the kernel's `bench sockmap` (7.3.4, captured by
/// the lab) through the parser, summary, comparison, renderer and JSON; no guest.
#[test]
fn an_upstream_bench_sample_becomes_tables_and_json() {
    use lab::bench::upstream::{self, parse, BenchBuild, Settings};
    const CAPTURED: &str = include_str!("../src/bench/upstream/testdata/bench-sockmap-7.3.4.txt");
    let modes: Vec<String> = ["rx-normal", "rx-pass", "rx-verdict-egress", "rx-verdict-ingress", "tx-normal", "tx-pass", "tx-verdict-ingress", "tx-verdict-egress"].map(String::from).to_vec();
    let build = BenchBuild { key: "k".into(), source: "linux-source-7.3=7.3.4-1~bpo13+1".into(), clang: "clang 19".into(), btf_from: "debian-7.3".into(), build_seconds: 120.0, harness_changes: vec!["x".into()], modes: modes.clone() };
    let boot = || modes.iter().map(|m| parse::mode_run(CAPTURED, m)).collect::<Vec<_>>();
    let settings = Settings { warmup: 1, duration: 5, runs: 2 };
    let base = upstream::summarize("debian-7.3", "7.3.4", Accel::Tcg, 1, settings, &build, vec![boot(), boot()], vec![60.0, 61.0]);
    let other = upstream::summarize("sk-msg-opt-7.3", "7.3.4", Accel::Tcg, 1, settings, &build, vec![boot(), boot()], vec![60.0, 61.0]);
    for m in &base.modes {
        let redirects = m.mode.contains("verdict") || m.mode.contains("pass");
        assert_eq!(m.rcv_mb_per_s.is_some(), redirects, "{m:?}");
        assert_eq!(m.errors.len(), if redirects { 0 } else { 2 }, "{m:?}");
    }
    let ingress = base.modes.iter().find(|m| m.mode == "rx-verdict-ingress").unwrap();
    assert_eq!((ingress.path.as_deref(), ingress.rcv_mb_per_s.unwrap().n), (Some("rx_to_rx"), 12), "6 measured seconds in each of 2 boots");
    let cmp = upstream::compare(&base, &other, None);
    let same = cmp.modes.iter().find(|r| r.mode == "tx-verdict-ingress").unwrap();
    assert_eq!((same.rcv.unwrap().median, same.direction), (1.0, Some(upstream::Direction::Even)));
    let report = upstream::UpstreamReport { kernels: vec![base.clone(), other], comparison: Some(cmp), wall_seconds: 1.0, files: vec![] };
    let text = lab::render::bench_upstream::report(&report);
    assert!(text.contains("rx-verdict-ingress  rx_to_rx"), "{text}");
    assert!(text.contains("unknown sockmap bench mode: 11000"), "{text}");
    assert!(text.contains("sk-msg-opt-7.3 / debian-7.3, upstream `bench sockmap`"), "{text}");
    assert!(text.contains("no `lab bench debian-7.3 --vs sk-msg-opt-7.3` found"), "{text}");
    let json = serde_json::to_string(&base).unwrap();
    let back: upstream::KernelUpstream = serde_json::from_str(&json).unwrap();
    assert_eq!(back.boots, base.boots);
}

/// A tree before 6.16 has no `bench sockmap`: `lab bench --upstream` says so, naming the file,
/// and builds nothing.
#[test]
fn the_upstream_bench_of_a_tree_without_bench_sockmap_is_a_clear_error() {
    let project = common::project_root().canonicalize().unwrap();
    let kernels = lab::definition::KernelsDir { dir: project.join("kernels") };
    let cache = lab::cache::Cache::open(&common::Lab::real().cache).unwrap();
    let def = kernels.load("debian-6.12").unwrap();
    let built = lab::build::build(&def, &kernels, &cache, &lab::build::BuildOptions::default()).unwrap();
    let err = format!("{:#}", lab::bench::upstream::build::build(&def, &built.entry, &cache).unwrap_err());
    assert!(err.contains("has no tools/testing/selftests/bpf/benchs/bench_sockmap.c") && err.contains("6.16"), "{err}");
}
