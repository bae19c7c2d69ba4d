//! Real kernels in real guests: the lab's default kernel (built once, then cached) and a prebuilt
//! Debian image. The first run on a fresh machine builds the kernel (about 6 minutes on 2 cores).
//! Guests are heavy, so these tests take turns.

mod common;

use std::sync::Mutex;

use common::{text, Lab};

static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

fn guard() -> std::sync::MutexGuard<'static, ()> {
    ONE_GUEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run lab and also return the QEMU processes it left behind (named after lab's pid).
fn run_and_leftovers(lab: &Lab, args: &[&str]) -> (std::process::Output, Vec<String>) {
    let child = lab.cmd(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let ps = std::process::Command::new("pgrep").args(["-a", "-f", &format!("sockmap-lab-{pid}")]).output().unwrap();
    let left = String::from_utf8_lossy(&ps.stdout).lines().filter(|l| l.contains("qemu")).map(str::to_string).collect();
    (out, left)
}

#[test]
fn default_kernel_boots_runs_a_command_and_passes_its_exit_code() {
    let _g = guard();
    let lab = Lab::real();
    let (out, left) = run_and_leftovers(&lab, &["run", "debian-6.12", "--", "sh", "-c", "uname -r; test -e /sys/kernel/btf/vmlinux && echo btf; exit 7"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(7), "{msg}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Debian moves linux-source-6.12 along its point releases (6.12.117, then .118): any 6.12.N.
    let is_6_12 = |l: &str| l.trim().strip_prefix("6.12.").is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    assert!(stdout.lines().any(is_6_12), "{msg}");
    assert!(stdout.lines().any(|l| l.trim() == "btf"), "{msg}");

    // The kernel is in the cache now: a second build compiles nothing.
    let out = lab.run(&["build", "debian-6.12"]);
    assert!(text(&out).contains("cached, nothing compiled"), "{}", text(&out));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn prebuilt_debian_image_boots_with_its_modules() {
    let _g = guard();
    let lab = Lab::real();
    let out = lab.run(&["run", "prebuilt-6.1.0-56", "--", "uname", "-r"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(0), "{msg}");
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "6.1.0-56-amd64"), "{msg}");
}

#[test]
fn a_hanging_guest_is_reported_and_killed() {
    let _g = guard();
    let lab = Lab::real();
    let started = std::time::Instant::now();
    let (out, left) = run_and_leftovers(&lab, &["run", "--timeout", "30", "debian-6.12", "--", "sleep", "600"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(124), "{msg}");
    assert!(msg.contains("guest hung: no exit within 30s"), "{msg}");
    assert!(msg.contains("kernel console"), "the console tail is shown: {msg}");
    assert!(started.elapsed().as_secs() < 60, "lab itself did not hang");
    assert!(left.is_empty(), "QEMU is gone: {left:?}");
}

#[test]
fn a_silent_guest_is_hung_long_before_the_timeout() {
    let _g = guard();
    let lab = Lab::real();
    let started = std::time::Instant::now();
    let (out, left) = run_and_leftovers(&lab, &["run", "--timeout", "600", "--silence", "25", "debian-6.12", "--", "sh", "-c", "echo working; sleep 600"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(124), "{msg}");
    assert!(msg.contains("guest hung: no output for 25s"), "{msg}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("working"), "{msg}");
    assert!(started.elapsed().as_secs() < 300, "killed for silence, not at the 600 s timeout");
    assert!(left.is_empty(), "QEMU is gone: {left:?}");
}

#[test]
fn a_panicking_guest_is_reported_with_its_console() {
    let _g = guard();
    let lab = Lab::real();
    let (out, left) = run_and_leftovers(&lab, &["run", "--timeout", "120", "debian-6.12", "--", "sh", "-c", "echo c > /proc/sysrq-trigger"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(121), "{msg}");
    assert!(msg.contains("guest kernel panicked"), "{msg}");
    assert!(msg.contains("sysrq"), "the console shows the cause: {msg}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn accelerator_choice_is_explained_and_overridable() {
    let _g = guard();
    let lab = Lab::real();
    let out = lab.run(&["accel"]);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.starts_with("kvm: ") || msg.contains("\ntcg: ") || msg.starts_with("tcg: "), "{msg}");
    let mut cmd = lab.cmd(&["accel"]);
    cmd.env("LAB_ACCEL", "tcg");
    assert!(text(&cmd.output().unwrap()).contains("tcg: LAB_ACCEL=tcg"));
    let mut cmd = lab.cmd(&["accel"]);
    cmd.env("LAB_ACCEL", "hvf");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("LAB_ACCEL=`hvf` is not one of kvm, tcg, auto"), "{}", text(&out));
}

#[test]
fn the_suite_runs_in_a_guest_and_reports_each_case() {
    let _g = guard();
    let lab = Lab::real();
    let out = lab.run(&["test", "debian-6.12", "tx_to_rx::map_1_Sockmap::family_1_Ipv4::"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(0), "{msg}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok           tx_to_rx_via_sockmap_over_ipv4_1mib"), "{msg}");
    // passed, failed, known, unsupported, ignored
    assert!(stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tx_to_rx", "5", "0", "0", "0", "0"]), "{msg}");
}

#[test]
fn a_mutant_kernel_fails_the_suite_naming_the_case_and_the_difference() {
    let _g = guard();
    let lab = Lab::real();
    // The mutant sends every sk_msg redirect to egress: B's peer gets the bytes meant for B.
    let out = lab.run(&["test", "mutant-tx-ignores-ingress", "tx_to_rx::map_1_Sockmap::family_1_Ipv4::payload_2"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("--- FAILED tx_to_rx_via_sockmap_over_ipv4_1kib ---"), "{msg}");
    assert!(msg.contains("tx_to_rx_via_sockmap_over_ipv4_1kib.snap"), "the snapshot is named: {msg}");
    assert!(msg.contains("\"received\": 1024") && msg.contains("\"received\": 0"), "the diff shows where the bytes went: {msg}");
}

#[test]
fn a_case_that_crashes_its_test_binary_fails_the_run_and_the_rest_of_its_guest_count_as_not_run() {
    let _g = guard();
    let lab = Lab::real();
    // The test-only switch makes the 1 KiB case abort(): the binary dies mid-suite, as on a SIGSEGV.
    // Two guests are dealt the five cases in listing order: the 1st, 3rd and 5th to the first,
    // the 1 KiB and the 4th to the second, whose 4th never starts.
    let out = lab.run(&["test", "debian-6.12", "tx_to_rx::map_1_Sockmap::family_1_Ipv4::", "--abort-case", "over_ipv4_1kib", "--guests", "2"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok           tx_to_rx_via_sockmap_over_ipv4_1b"), "the other guest's cases ran: {msg}");
    assert!(stdout.contains("CRASHED      tx_to_rx::map_1_Sockmap::family_1_Ipv4::payload_2_OneKib"), "{msg}");
    assert!(stdout.contains("NOT RUN: 1 listed case(s) never started (first: tx_to_rx::map_1_Sockmap::family_1_Ipv4::payload_4"), "{msg}");
    assert!(stdout.contains("3 of 5 listed cases have a verdict") && stdout.contains("2 guests side by side"), "{msg}");
}

#[test]
fn two_suite_runs_of_one_kernel_at_once_each_keep_their_own_results() {
    let _g = guard();
    let lab = Lab::real();
    let filter = "tx_to_rx::map_1_Sockmap::family_1_Ipv4::payload_1";
    let piped = std::process::Stdio::piped;
    let children: Vec<_> = (0..2).map(|_| lab.cmd(&["test", "debian-6.12", filter]).stdout(piped()).stderr(piped()).spawn().unwrap()).collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let runs: Vec<std::path::PathBuf> = outs
        .iter()
        .map(|out| {
            assert_eq!(out.status.code(), Some(0), "{}", text(out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let summary = stdout.lines().find_map(|l| l.strip_prefix("results: ")?.split(' ').next()).expect("a results line");
            std::path::PathBuf::from(summary).parent().unwrap().to_path_buf()
        })
        .collect();
    assert_ne!(runs[0], runs[1], "each run has a folder of its own");
    for run in &runs {
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["run"].as_str(), run.file_name().and_then(|n| n.to_str()));
        assert_eq!(summary["totals"]["passed"], 1, "{summary}");
        assert!(run.join("tx_to_rx_via_sockmap_over_ipv4_1b.json").is_file() && run.join("junit.xml").is_file());
    }
    let latest = common::project_root().join("results/debian-6.12/latest").canonicalize().unwrap();
    assert!(runs.iter().any(|r| r.canonicalize().unwrap() == latest), "latest is one of the two: {}", latest.display());
}
