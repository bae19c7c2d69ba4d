//! Known kernel findings: a reviewed list (`snapshots/FINDINGS.toml`) of places where a kernel does
//! otherwise than a case's snapshot (what a correct kernel does) because of a kernel bug.
//!
//! A finding never turns a failure into a pass: it only names it. And it names only a failure that
//! looks exactly like it: the case's observation must differ from its snapshot in the places the
//! finding lists, with the values it lists, and nowhere else, on a kernel the finding applies to.
//! Any other failure of the same case stays a plain failure.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use crate::cases::{CaseResult, Status};

pub const FILE: &str = "FINDINGS.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsFile {
    #[serde(default, rename = "finding")]
    findings: Vec<Finding>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    pub id: String,
    pub title: String,
    /// Case names, `*` matching any run of characters.
    pub cases: Vec<String>,
    /// Kernel families (major.minor) the finding was shown on or read in the source of.
    pub kernels: Vec<String>,
    /// Patch series (folder names under kernels/) that fix it: a kernel built with one of them
    /// does not have the finding, so its failure there is a plain one.
    #[serde(default)]
    pub unless_patched: Vec<String>,
    /// `#[ignore]`d cases (libtest names) that crash a kernel with this finding: they run only
    /// where a series in `unless_patched` fixes it (a crash would end the whole suite run).
    #[serde(default)]
    pub crashes: Vec<String>,
    pub evidence: String,
    pub upstream: String,
    /// What the failure looks like: the only places the observation may differ from the snapshot.
    pub differs: Vec<Difference>,
}

/// One place (a JSON pointer into the case's observation) where the finding makes the kernel
/// differ from the snapshot, and what it puts there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    pub at: String,
    /// The observed value there, exactly.
    #[serde(default)]
    pub equals: Option<Value>,
    /// Text the observed value's JSON must contain (for values that vary run to run); for an
    /// array, every element must (one unrelated splat among the expected ones is another failure).
    #[serde(default)]
    pub contains: Option<String>,
    /// Whether the failure must differ here (false: it may, e.g. a WARN_ON_ONCE that only the
    /// first occurrence per boot logs).
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// What a finding's applicability is judged on.
#[derive(Debug, Clone, Default)]
pub struct Kernel {
    pub release: String,
    /// The patch series the kernel was built with (folder names).
    pub series: Vec<String>,
}

impl Kernel {
    pub fn new(release: &str, patches: &[std::path::PathBuf]) -> Kernel {
        let mut series: Vec<String> =
            patches.iter().filter_map(|p| p.parent()?.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        series.dedup();
        Kernel { release: release.into(), series }
    }

    fn family(&self) -> String {
        let mut parts = self.release.split('.');
        let major = parts.next().unwrap_or_default();
        let minor: String = parts.next().unwrap_or_default().chars().take_while(char::is_ascii_digit).collect();
        format!("{major}.{minor}")
    }
}

/// The reviewed list; an absent file is an empty list, a malformed one an error (a typo must not
/// quietly annotate nothing).
pub fn load(snapshots: &Path) -> anyhow::Result<Vec<Finding>> {
    let file = snapshots.join(FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    parse(&text).with_context(|| format!("invalid findings list {}", file.display()))
}

/// Whether the `#[ignore]`d case `test` (libtest name) may run on `kernel`: only where a finding
/// says it crashes kernels without a fix, and the kernel carries that fix. An ignored case no
/// finding names is never run.
pub fn may_run_ignored(findings: &[Finding], kernel: &Kernel, test: &str) -> bool {
    findings.iter().any(|f| f.fixed_on(kernel) && f.crashes.iter().any(|c| c == test))
}

pub fn parse(text: &str) -> anyhow::Result<Vec<Finding>> {
    let parsed: FindingsFile = toml::from_str(text)?;
    for f in &parsed.findings {
        anyhow::ensure!(!f.differs.is_empty(), "finding {}: `differs` is empty, so any failure would match", f.id);
        for d in &f.differs {
            anyhow::ensure!(d.at.starts_with('/'), "finding {}: `at = {:?}` is not a JSON pointer", f.id, d.at);
            anyhow::ensure!(
                d.equals.is_some() != d.contains.is_some(),
                "finding {}: at {} needs exactly one of `equals` and `contains`",
                f.id,
                d.at
            );
        }
    }
    Ok(parsed.findings)
}

impl Finding {
    pub fn applies_to(&self, kernel: &Kernel) -> bool {
        self.kernels.contains(&kernel.family()) && !self.fixed_on(kernel)
    }

    /// Whether `kernel` carries a series that fixes this finding. Not the same as "does not apply":
    /// a kernel family the finding was never shown on may still have it.
    fn fixed_on(&self, kernel: &Kernel) -> bool {
        self.unless_patched.iter().any(|s| kernel.series.contains(s))
    }

    pub fn names(&self, case: &str) -> bool {
        self.cases.iter().any(|pattern| glob(pattern, case))
    }

    /// Whether `observed` is `expected` (the snapshot) changed by this finding and nothing else.
    pub fn explains(&self, expected: &Value, observed: &Value) -> bool {
        let mut diffs = Vec::new();
        differences(expected, observed, String::new(), &mut diffs);
        let covered_by = |d: &Difference, at: &str| at == d.at || at.starts_with(&format!("{}/", d.at));
        let all_covered = diffs.iter().all(|at| self.differs.iter().any(|d| covered_by(d, at)));
        let each_holds = self.differs.iter().all(|d| {
            let differs_here = diffs.iter().any(|at| covered_by(d, at));
            if !differs_here {
                return !d.required;
            }
            let value = observed.pointer(&d.at);
            match (&d.equals, &d.contains, value) {
                (Some(want), _, Some(got)) => want == got,
                (_, Some(text), Some(Value::Array(items))) => items.iter().all(|i| i.to_string().contains(text.as_str())),
                (_, Some(text), Some(got)) => got.to_string().contains(text.as_str()),
                _ => false,
            }
        });
        !diffs.is_empty() && all_covered && each_holds
    }
}

/// JSON pointers to where `observed` differs from `expected`: the deepest place where both still
/// have the same shape (objects by key, arrays of equal length by index).
fn differences(expected: &Value, observed: &Value, at: String, out: &mut Vec<String>) {
    match (expected, observed) {
        (Value::Object(e), Value::Object(o)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(o.keys()).collect();
            for key in keys {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (e.get(key), o.get(key)) {
                    (Some(e), Some(o)) => differences(e, o, here, out),
                    _ => out.push(here),
                }
            }
        }
        (Value::Array(e), Value::Array(o)) if e.len() == o.len() => {
            for (i, (e, o)) in e.iter().zip(o).enumerate() {
                differences(e, o, format!("{at}/{i}"), out);
            }
        }
        (e, o) if e == o => {}
        _ => out.push(at),
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// A snapshot file's JSON (after insta's `---` header).
pub fn snapshot_json(text: &str) -> Option<Value> {
    let body = text.strip_prefix("---\n")?.split_once("\n---\n")?.1;
    serde_json::from_str(body).ok()
}

/// The finding that explains a failed case, if one does: the case is named by it, the kernel has
/// it, and the observation differs from the snapshot exactly as the finding says.
pub fn explain<'f>(findings: &'f [Finding], kernel: &Kernel, case: &CaseResult, expected: &Value) -> Option<&'f Finding> {
    if case.status != Status::Failed {
        return None;
    }
    let observed = case.observation.as_ref()?;
    findings.iter().find(|f| f.names(&case.name) && f.applies_to(kernel) && f.explains(expected, observed))
}

/// Marks each failed case that a finding explains with the finding's id; the case stays failed.
pub fn annotate(cases: &mut [CaseResult], findings: &[Finding], kernel: &Kernel, snapshots: &Path) {
    for case in cases.iter_mut().filter(|c| c.status == Status::Failed) {
        let Some(file) = case.snapshot.as_ref() else { continue };
        let Some(expected) = std::fs::read_to_string(snapshots.join(file)).ok().and_then(|t| snapshot_json(&t)) else { continue };
        case.finding = explain(findings, kernel, case, &expected).map(|f| f.id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIST: &str = r#"
[[finding]]
id = "shut-wr"
title = "sends after SHUT_WR are redirected"
cases = ["tx_to_rx_via_*_over_ipv4_when_sender_shuts_down_writing"]
kernels = ["6.12"]
evidence = "tcp_bpf_sendmsg checks no SEND_SHUTDOWN"
upstream = "unfixed"

[[finding.differs]]
at = "/steps/1/result"
equals = { ok = 1024 }

[[finding.differs]]
at = "/delivered/b"
equals = { expected = 1024, received = 2048, content = "extra" }

[[finding]]
id = "race"
title = "forward_alloc race"
cases = ["rx_to_rx_*_1000x16b"]
kernels = ["6.1", "6.12"]
unless_patched = ["skmsg-backlog-ingress-lock"]
evidence = "x"
upstream = "unfixed"

[[finding.differs]]
at = "/accounting/sockets/b"
contains = '{"unclean":{"forward_alloc":'

[[finding.differs]]
at = "/accounting/splats"
contains = "inet_sock_destruct"
required = false
"#;

    const SHUT: &str = "tx_to_rx_via_sockmap_over_ipv4_when_sender_shuts_down_writing";
    const RACY: &str = "rx_to_rx_via_sockhash_over_ipv4_1000x16b";

    fn stock() -> Kernel {
        Kernel { release: "6.12.118".into(), series: vec![] }
    }

    fn failed(name: &str, observation: Value) -> CaseResult {
        CaseResult {
            name: name.into(),
            path: crate::cases::path_of(name),
            status: Status::Failed,
            observation: Some(observation),
            failure: Some("snapshot assertion failed".into()),
            snapshot: Some(format!("{name}.snap")),
            finding: None,
        }
    }

    fn shut_expected() -> Value {
        json!({"steps": [{"op": "send", "result": {"ok": 1024}}, {"op": "send", "result": {"error": "EPIPE"}}],
               "delivered": {"b": {"expected": 1024, "received": 1024, "content": "matches"}},
               "accounting": {"sockets": {"b": "clean"}}})
    }

    fn shut_as_the_bug_does() -> Value {
        let mut v = shut_expected();
        v["steps"][1]["result"] = json!({"ok": 1024});
        v["delivered"]["b"] = json!({"expected": 1024, "received": 2048, "content": "extra"});
        v
    }

    fn race_expected() -> Value {
        json!({"delivered": {"b": {"received": 16000}}, "accounting": {"sockets": {"a": "clean", "b": "clean"}}})
    }

    fn race_as_the_bug_does(splat: bool) -> Value {
        let mut v = race_expected();
        v["accounting"]["sockets"]["b"] = json!({"unclean": {"forward_alloc": 848}});
        if splat {
            v["accounting"]["splats"] = json!(["WARNING: CPU: 1 PID: 25 at net/ipv4/af_inet.c:162 inet_sock_destruct"]);
        }
        v
    }

    #[test]
    fn a_failure_that_looks_like_the_finding_is_that_finding() {
        let list = parse(LIST).unwrap();
        let case = failed(SHUT, shut_as_the_bug_does());
        assert_eq!(explain(&list, &stock(), &case, &shut_expected()).map(|f| f.id.as_str()), Some("shut-wr"));
        for splat in [true, false] {
            let case = failed(RACY, race_as_the_bug_does(splat));
            assert_eq!(explain(&list, &stock(), &case, &race_expected()).map(|f| f.id.as_str()), Some("race"), "splat {splat}");
        }
    }

    #[test]
    fn any_other_failure_of_the_same_case_stays_a_plain_failure() {
        let list = parse(LIST).unwrap();
        // The bug, and something else besides: more than the finding explains.
        let mut more = shut_as_the_bug_does();
        more["accounting"]["sockets"]["b"] = json!("leaked");
        // Only half of the bug: the send failed as it should, yet B got extra bytes.
        let mut half = shut_expected();
        half["delivered"]["b"] = json!({"expected": 1024, "received": 2048, "content": "extra"});
        // The same places, other values.
        let mut other = shut_as_the_bug_does();
        other["steps"][1]["result"] = json!({"ok": 512});
        for observed in [more, half, other] {
            assert!(explain(&list, &stock(), &failed(SHUT, observed.clone()), &shut_expected()).is_none(), "{observed}");
        }
        // The race case failing on payload, or on another socket's accounting, or on rmem only.
        let mut payload = race_as_the_bug_does(true);
        payload["delivered"]["b"]["received"] = json!(15984);
        let mut on_a = race_expected();
        on_a["accounting"]["sockets"]["a"] = json!({"unclean": {"forward_alloc": 848}});
        let mut rmem = race_expected();
        rmem["accounting"]["sockets"]["b"] = json!({"unclean": {"rmem_alloc": 4096}});
        let mut another_splat = race_as_the_bug_does(true);
        another_splat["accounting"]["splats"].as_array_mut().unwrap().push(json!("BUG: KASAN: slab-use-after-free in sk_psock_backlog"));
        for observed in [payload, on_a, rmem, another_splat] {
            assert!(explain(&list, &stock(), &failed(RACY, observed.clone()), &race_expected()).is_none(), "{observed}");
        }
    }

    #[test]
    fn a_finding_only_applies_to_the_kernels_and_cases_it_names() {
        let list = parse(LIST).unwrap();
        let case = failed(RACY, race_as_the_bug_does(true));
        let patched = Kernel::new("6.12.118", &["/k/patches/skmsg-backlog-ingress-lock/0001-x.patch".into()]);
        assert_eq!(patched.series, ["skmsg-backlog-ingress-lock"]);
        assert!(explain(&list, &patched, &case, &race_expected()).is_none(), "the lab's fix removes the race");
        let newer = Kernel { release: "7.0.4+deb13-amd64".into(), series: vec![] };
        assert!(explain(&list, &newer, &case, &race_expected()).is_none(), "not shown on 7.0");
        let other_case = failed("rx_to_rx_via_sockhash_over_ipv4_1kib", race_as_the_bug_does(true));
        assert!(explain(&list, &stock(), &other_case, &race_expected()).is_none());
    }

    #[test]
    fn an_ignored_case_runs_only_where_its_crash_is_fixed() {
        let mut list = parse(LIST).unwrap();
        let test = "races::rx_to_rx_panics";
        let patched = Kernel::new("6.12.118", &["/k/patches/skmsg-backlog-ingress-lock/0001-x.patch".into()]);
        assert!(!may_run_ignored(&list, &patched, test), "no finding names it");
        let racy = list.iter_mut().find(|f| !f.unless_patched.is_empty()).unwrap();
        racy.crashes = vec![test.into()];
        assert!(may_run_ignored(&list, &patched, test));
        assert!(!may_run_ignored(&list, &patched, "races::rx_to_rx_panics_too"), "names are exact");
        assert!(!may_run_ignored(&list, &stock(), test));
        // A family the finding was never shown on is not known to be safe.
        let newer = Kernel { release: "7.0.4+deb13-amd64".into(), series: vec![] };
        assert!(!may_run_ignored(&list, &newer, test));
    }

    #[test]
    fn only_a_failed_case_gets_a_finding() {
        let list = parse(LIST).unwrap();
        let mut case = failed(SHUT, shut_as_the_bug_does());
        case.status = Status::Passed;
        assert!(explain(&list, &stock(), &case, &shut_expected()).is_none());
        // Nothing differs: nothing to explain.
        let same = failed(SHUT, shut_expected());
        assert!(explain(&list, &stock(), &same, &shut_expected()).is_none());
    }

    #[test]
    fn annotate_reads_the_snapshot_the_case_was_compared_with() {
        let dir = tempfile::tempdir().unwrap();
        let snap = format!("---\nsource: testcases/src/case.rs\n---\n{}\n", serde_json::to_string_pretty(&shut_expected()).unwrap());
        std::fs::write(dir.path().join(format!("{SHUT}.snap")), snap).unwrap();
        let mut cases = vec![failed(SHUT, shut_as_the_bug_does()), failed(SHUT, shut_expected())];
        cases[1].snapshot = Some("missing.snap".into());
        annotate(&mut cases, &parse(LIST).unwrap(), &stock(), dir.path());
        assert_eq!(cases[0].finding.as_deref(), Some("shut-wr"));
        assert_eq!(cases[0].status, Status::Failed, "a finding is still a failure");
        assert_eq!(cases[1].finding, None);
    }

    #[test]
    fn a_list_that_would_match_anything_is_refused() {
        assert!(parse("[[finding]]\nid='x'\ntitle='t'\ncases=['*']\nkernels=['6.12']\nevidence='e'\nupstream='u'\ndiffers=[]\n").is_err());
        let both = "[[finding]]\nid='x'\ntitle='t'\ncases=['*']\nkernels=['6.12']\nevidence='e'\nupstream='u'\n[[finding.differs]]\nat='/a'\n";
        assert!(parse(both).unwrap_err().to_string().contains("exactly one of"));
    }

    #[test]
    fn the_shipped_list_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshots");
        let list = load(&dir).unwrap();
        assert!(list.iter().any(|f| f.id == "rxrx-backlog-forward-alloc-race"), "{list:?}");
    }

    /// The shipped entries against the shipped snapshots: the observation 6.12.117 recorded for
    /// each case (what the snapshots held before they were corrected) is the finding, and the
    /// race's pointers fit the snapshots' shape.
    #[test]
    fn the_shipped_findings_explain_what_the_kernel_did() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshots");
        let list = load(&dir).unwrap();
        let kernel = Kernel { release: "6.12.117".into(), series: vec![] };
        let snapshot = |name: &str| snapshot_json(&std::fs::read_to_string(dir.join(format!("{name}.snap"))).unwrap()).unwrap();
        let check = |name: &str, id: &str, bug: &dyn Fn(&mut Value)| {
            let expected = snapshot(name);
            let mut observed = expected.clone();
            bug(&mut observed);
            let found = explain(&list, &kernel, &failed(name, observed), &expected).map(|f| f.id.clone());
            assert_eq!(found.as_deref(), Some(id), "{name}");
        };
        for map in ["sockmap", "sockhash"] {
            check(&format!("tx_to_rx_via_{map}_over_ipv4_when_sender_shuts_down_writing"), "tcp-bpf-sendmsg-after-shut-wr", &|v| {
                v["steps"][2]["result"] = json!({"ok": 1024});
                v["steps"][3]["result"] = json!({"ok": 2048});
                v["steps"][3]["content"] = json!("extra");
                v["delivered"]["b"]["received"] = json!(2048);
                v["delivered"]["b"]["content"] = json!("extra");
            });
            check(&format!("rx_to_rx_via_{map}_over_ipv4_when_sender_closes_with_data_in_flight"), "rx-redirect-carries-fin", &|v| {
                v["steps"][4] = json!({"op": "recv", "role": "b", "len": 100, "result": {"ok": 0}, "content": "matches"});
            });
            check(&format!("rx_to_rx_via_{map}_over_ipv4_when_sender_closes_then_target_leaves_the_map"), "rx-redirect-fin-breaks-target-stream", &|v| {
                v["steps"][3] = json!({"op": "recv", "role": "b", "len": 100, "result": {"ok": 0}, "content": "matches"});
                v["steps"][6]["result"] = json!({"ok": 99});
                v["steps"][6]["content"] = json!({"differs_at": {"offset": 0, "expected": 7, "got": 38}});
                v["delivered"]["b"] = json!({"expected": 4196, "received": 4195, "content": {"differs_at": {"offset": 4096, "expected": 7, "got": 38}}, "error": "EPIPE"});
            });
            check(&format!("rx_to_rx_via_{map}_over_ipv6_1000x16b"), "rxrx-backlog-forward-alloc-race", &|v| {
                v["accounting"]["sockets"]["b"] = json!({"unclean": {"forward_alloc": 3248}});
                v["accounting"]["splats"] = json!(["WARNING: CPU: 0 PID: 12 at net/ipv4/af_inet.c:162 inet_sock_destruct+0x1b0/0x1f0"]);
            });
        }
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("rx_to_rx_*_1000x16b", RACY));
        assert!(!glob("rx_to_rx_*_1000x16b", "rx_to_rx_via_sockmap_over_ipv4_1000x16b_more"));
        assert!(!glob("tx_*", RACY));
    }
}
