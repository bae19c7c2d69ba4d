//! The kernel tree's own `bench` binary (`tools/testing/selftests/bpf/bench`), built the way the
//! selftests are (`crate::selftests`: the tree's Makefile, Debian's clang-19, the tree's libbpf and
//! bpftool), pruned to its sockmap benchmark.
//!
//! Its own unpacked copy of the selftests' part of the source (`selftests/src/<source>-bench-<tag>`;
//! the selftests' copy is pruned of the bench's programs, and editing it would rebuild test_progs),
//! in which two files are changed, each printed with every run: the Makefile links `bench` from
//! `bench_sockmap.o` alone among the benchmarks, and `bench.c` lists only the sockmap benchmark.
//! Measured on 7.3.4: the full `bench` does not link against a lab kernel's BTF, because
//! `crypto_bench.c` needs `struct bpf_crypto_params` (CONFIG_CRYPTO's kfuncs, which the lab's
//! kernels leave out); and the sockmap benchmark needs one BPF program instead of ~25.
//!
//! Keyed by the source and clang, not by the kernel's BTF: `bench_sockmap_prog.c` includes only
//! the uapi `linux/bpf.h` (checked in 7.3.4), so its program is the same whatever BTF made
//! `vmlinux.h`, and both kernels of `--vs` run the same binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache, Entry, KeyHasher};
use crate::definition::Definition;
use crate::progress::Step;
use crate::{process, selftests, source};

/// Bump when the way the bench is built changes, so old builds stop matching.
const RECIPE: &str = "sockmap-lab upstream bench recipe 1: bench pruned to sockmap, clang-19";

/// Where the benchmark lives in a tree (since 6.16).
pub const BENCH_SOURCE: &str = "tools/testing/selftests/bpf/benchs/bench_sockmap.c";

/// What a finished bench build holds; `bench-manifest.json` in its folder, written last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchBuild {
    pub key: String,
    pub source: String,
    pub clang: String,
    /// The kernel whose BTF made `vmlinux.h` (the sockmap program does not use it).
    pub btf_from: String,
    pub build_seconds: f64,
    /// Changes the lab made to the tree's bench harness (not to the benchmark), each with why.
    pub harness_changes: Vec<String>,
    /// The benchmark's mode options this tree's `bench_sockmap.c` has (`rx-verdict-ingress`, ...).
    pub modes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BuiltBench {
    pub dir: PathBuf,
    pub build: BenchBuild,
    pub cached: bool,
}

impl BuiltBench {
    pub fn binary(&self) -> PathBuf {
        self.dir.join("bench")
    }
}

/// Build (or find) the tree's `bench` for a built kernel. A tree without `bench_sockmap.c` (before
/// 6.16) is an error that names the file: there is nothing to run.
pub fn build(def: &Definition, entry: &Entry, cache: &Cache) -> anyhow::Result<BuiltBench> {
    let clang = selftests::ensure_clang()?;
    let (resolved, vmlinux) = selftests::inputs(def, entry, cache)?;
    let key = KeyHasher::default().part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).part("clang", clang.as_bytes()).finish();
    let out = cache.path("selftests/out").join(format!("bench-{key}"));
    if let Some(found) = load(&out) {
        return Ok(found);
    }
    let started = Instant::now();
    // Checked first: a tree without the benchmark leaves no empty build folder behind.
    let src = prepared_source(&resolved, cache, &def.name)?;
    std::fs::create_dir_all(&out)?;
    let _lock = cache::lock(&out.with_extension("lock"))?;
    if let Some(found) = load(&out) {
        return Ok(found);
    }
    let harness_changes = harness_changes(&src.join("tools/testing/selftests/bpf"))?;
    compile(&def.name, &src, &out, &vmlinux)?;
    let build = BenchBuild {
        key,
        source: resolved.identity.clone(),
        clang,
        btf_from: def.name.clone(),
        build_seconds: started.elapsed().as_secs_f64(),
        harness_changes,
        modes: modes(&std::fs::read_to_string(src.join(BENCH_SOURCE))?),
    };
    std::fs::write(out.join("bench-manifest.json"), serde_json::to_string_pretty(&build)?)?;
    Ok(BuiltBench { dir: out, build, cached: false })
}

fn load(out: &Path) -> Option<BuiltBench> {
    let build = serde_json::from_str(&std::fs::read_to_string(out.join("bench-manifest.json")).ok()?).ok()?;
    out.join("bench").is_file().then(|| BuiltBench { dir: out.to_path_buf(), build, cached: true })
}

/// The selftests' part of the source, unpacked once per source for the bench; checked for
/// `bench_sockmap.c` before anything is built.
fn prepared_source(resolved: &source::ResolvedSource, cache: &Cache, kernel: &str) -> anyhow::Result<PathBuf> {
    let slug: String = resolved.identity.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let tag = KeyHasher::default().part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).finish();
    let dir = cache.path("selftests/src").join(format!("{slug}-bench-{}", &tag[..12]));
    // On a new machine nothing has made the folder yet, and the lock file goes beside the tree.
    std::fs::create_dir_all(cache.path("selftests/src"))?;
    let _lock = cache::lock(&dir.with_extension("lock"))?;
    if !dir.join(".lab-ready").is_file() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let step = Step::start(&format!("upstream bench: unpacking the selftests of {}", resolved.identity));
        selftests::extract_subtrees(resolved, &dir)?;
        if dir.join(BENCH_SOURCE).is_file() {
            prune_bench(&dir.join("tools/testing/selftests/bpf"))?;
        }
        std::fs::write(dir.join(".lab-ready"), "")?;
        step.finish(&dir.display().to_string());
    }
    anyhow::ensure!(
        dir.join(BENCH_SOURCE).is_file(),
        "{kernel}: its source ({}) has no {BENCH_SOURCE}: the kernel's `bench sockmap` came with Linux 6.16, so there is nothing to run on this tree",
        resolved.identity
    );
    Ok(dir)
}

/// The objects of the `benchs/*.c` files other than sockmap's (`bench_count.o`, ...).
fn other_benchmarks(bpf: &Path) -> anyhow::Result<Vec<String>> {
    let mut objects = vec![];
    for entry in std::fs::read_dir(bpf.join("benchs"))? {
        let path = entry?.path();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "c") && stem.starts_with("bench_") && stem != "bench_sockmap" {
            objects.push(format!("{stem}.o"));
        }
    }
    objects.sort();
    Ok(objects)
}

/// The arrays of `bench.c` that name every benchmark (`benchs[]`) and its options (`bench_parsers[]`).
const ARRAYS: &[&str] = &["static const struct bench *benchs[]", "static const struct argp_child bench_parsers[]"];

/// Whether an entry of those arrays stays: sockmap's, the terminator, preprocessor lines, comments.
fn keep_entry(entry: &str) -> bool {
    let t = entry.trim();
    t.contains("sockmap") || t == "{}," || t.is_empty() || t.starts_with('#') || t.starts_with("/*")
}

/// `bench.c` with only the sockmap benchmark in `benchs[]` and `bench_parsers[]` (an entry may span
/// lines: it ends where its braces balance). Many benchmarks are defined through macros, so the
/// entries are chosen by what they name, not by the symbols the other files define.
pub fn keep_only_sockmap(text: &str) -> String {
    let (mut out, mut entry) = (String::new(), String::new());
    let mut in_array = false;
    for line in text.split_inclusive('\n') {
        if !in_array {
            in_array = ARRAYS.iter().any(|a| line.starts_with(a));
            out.push_str(line);
            continue;
        }
        if entry.is_empty() && line.trim_start().starts_with("};") {
            in_array = false;
            out.push_str(line);
            continue;
        }
        entry.push_str(line);
        if entry.matches('{').count() <= entry.matches('}').count() {
            if keep_entry(&entry) {
                out.push_str(&entry);
            }
            entry.clear();
        }
    }
    out
}

/// The Makefile's `$(OUTPUT)/bench:` rule without the other benchmarks' objects.
pub fn drop_objects(makefile: &str, objects: &[String]) -> String {
    let mut in_rule = false;
    let mut out = String::new();
    for line in makefile.split_inclusive('\n') {
        if line.starts_with("$(OUTPUT)/bench:") && !line.contains("LDLIBS") {
            in_rule = true;
        } else if in_rule && !line.trim_end().ends_with('\\') {
            in_rule = false;
        }
        let object = line.trim().trim_end_matches('\\').trim().strip_prefix("$(OUTPUT)/").unwrap_or("");
        if in_rule && objects.iter().any(|o| o == object) {
            continue;
        }
        out.push_str(line);
    }
    out
}

/// Prune the tree's bench to its sockmap benchmark, once, right after unpacking.
fn prune_bench(bpf: &Path) -> anyhow::Result<()> {
    let objects = other_benchmarks(bpf)?;
    let makefile = bpf.join("Makefile");
    let text = std::fs::read_to_string(&makefile)?;
    std::fs::write(&makefile, drop_objects(&text, &objects))?;
    let bench_c = bpf.join("bench.c");
    let text = std::fs::read_to_string(&bench_c)?;
    std::fs::write(&bench_c, keep_only_sockmap(&text))?;
    Ok(())
}

/// What [`prune_bench`] changed, in words for every run's report.
fn harness_changes(bpf: &Path) -> anyhow::Result<Vec<String>> {
    let objects = other_benchmarks(bpf)?;
    Ok(vec![format!(
        "Makefile and bench.c: `bench` is linked with the sockmap benchmark alone ({} other benchmarks left out: their BPF programs need what the lab's kernels lack, e.g. crypto_bench's CONFIG_CRYPTO kfuncs)",
        objects.len()
    )])
}

fn compile(kernel: &str, src: &Path, out: &Path, vmlinux: &Path) -> anyhow::Result<()> {
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) + 1;
    let mut args = selftests::common_make_args(src, out, vmlinux, jobs);
    args.push(out.join("bench").display().to_string());
    let log = out.join("build.log");
    let _ = std::fs::remove_file(out.join("bench"));
    let step = Step::start(&format!("{kernel}: building the kernel's bench (clang-19, make -j{jobs})"));
    let mut done = 0usize;
    let result = process::run_logged(process::command("make", args).env("PATH", selftests::llvm_path()?), &log, |line| {
        let line = line.trim_start();
        if ["CLNG-BPF", "GEN-SKEL", "CC ", "BINARY", "LINK"].iter().any(|p| line.starts_with(p)) {
            done += 1;
            step.message(&format!("{done} steps; {line}"));
        }
    });
    result.with_context(|| format!("building the kernel's bench failed (log: {})", log.display()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    anyhow::ensure!(
        out.join("bench").is_file(),
        "the bench build made no binary (log: {}); its last lines:\n{}",
        log.display(),
        process::tail(&text, 15)
    );
    step.finish(&out.join("bench").display().to_string());
    Ok(())
}

/// The mode options of `bench_sockmap.c` (its `argp_option` names ending in `-normal`, `-pass`,
/// `-verdict-ingress` or `-verdict-egress`), in the order the source lists them.
pub fn modes(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("{ \"")?.split_once('"').map(|(name, _)| name.to_string()))
        .filter(|n| ["-normal", "-pass", "-verdict-ingress", "-verdict-egress"].iter().any(|s| n.ends_with(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_is_pruned_to_its_sockmap_benchmark() {
        let bench_c = "extern const struct bench bench_sockmap;\nstatic const struct argp_child bench_parsers[] = {\n\t{ &bench_ringbufs_argp, 0, \"Ring buffers benchmark\", 0 },\n\t{ &bench_local_storage_rcu_tasks_trace_argp, 0,\n\t\t\"local_storage RCU Tasks Trace slowdown benchmark\", 0 },\n\t{ &bench_sockmap_argp, 0, \"bpf sockmap benchmark\", 0 },\n\t{},\n};\nstatic const struct bench *benchs[] = {\n\t&bench_count_global,\n#ifdef __x86_64__\n\t&bench_trig_usdt_nop,\n#endif\n\t&bench_sockmap,\n};\nint main(void) { return 0; }\n";
        assert_eq!(
            keep_only_sockmap(bench_c),
            "extern const struct bench bench_sockmap;\nstatic const struct argp_child bench_parsers[] = {\n\t{ &bench_sockmap_argp, 0, \"bpf sockmap benchmark\", 0 },\n\t{},\n};\nstatic const struct bench *benchs[] = {\n#ifdef __x86_64__\n#endif\n\t&bench_sockmap,\n};\nint main(void) { return 0; }\n"
        );
        let makefile = "$(OUTPUT)/bench_sockmap.o: $(OUTPUT)/bench_sockmap_prog.skel.h\n$(OUTPUT)/bench: LDLIBS += -lm\n$(OUTPUT)/bench: $(OUTPUT)/bench.o \\\n\t\t $(TESTING_HELPERS) \\\n\t\t $(OUTPUT)/bench_count.o \\\n\t\t $(OUTPUT)/bench_sockmap.o \\\n\t\t $(OUTPUT)/usdt_1.o \\\n\t\t #\n\t$(call msg,BINARY,,$@)\n$(OUTPUT)/bench_count.o: x\n";
        let objects = ["bench_count.o".to_string()];
        assert_eq!(
            drop_objects(makefile, &objects),
            "$(OUTPUT)/bench_sockmap.o: $(OUTPUT)/bench_sockmap_prog.skel.h\n$(OUTPUT)/bench: LDLIBS += -lm\n$(OUTPUT)/bench: $(OUTPUT)/bench.o \\\n\t\t $(TESTING_HELPERS) \\\n\t\t $(OUTPUT)/bench_sockmap.o \\\n\t\t $(OUTPUT)/usdt_1.o \\\n\t\t #\n\t$(call msg,BINARY,,$@)\n$(OUTPUT)/bench_count.o: x\n"
        );
    }

    #[test]
    fn the_modes_are_read_from_the_benchmarks_options() {
        let src = "static const struct argp_option opts[] = {\n\t{ \"rx-normal\", ARG_FW_RX_NORMAL, NULL, 0,\n\t{ \"rx-strp\", ARG_CTL_RX_STRP, \"Byte\", 0,\n\t{ \"rx-verdict-ingress\", ARG_FW_RX_VERDICT_INGRESS, NULL, 0,\n\t{ \"tx-pass\", ARG_FW_TX_PASS, NULL, 0,\n\t{ \"delay-consumer\", ARG_CONSUMER_DELAY_TIME, \"SEC\", 0,\n";
        assert_eq!(modes(src), ["rx-normal", "rx-verdict-ingress", "tx-pass"]);
    }
}
