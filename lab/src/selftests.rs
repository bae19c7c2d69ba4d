//! The kernel's own sockmap selftests, beside the lab's suite: `test_progs` limited to the sockmap
//! tests and `test_sockmap`, from the kernel tree's `tools/testing/selftests/bpf`, built with
//! Debian's clang-19, the tree's own libbpf and bpftool, and the kernel's BTF; booted and run in the
//! same kind of guest as the suite; reported per test as passed, failed or skipped (with why).
//!
//! The build never touches a kept kernel build tree (another lab may be compiling in it): the
//! selftests' part of the source is unpacked under the cache's `selftests/src/`, pruned to the
//! sockmap tests (a full `test_progs` is ~900 BPF objects and the test kernel modules; the sockmap
//! tests need 14 objects and no module), and built into `selftests/out/KEY/`. KEY covers the
//! source, clang and the kernel's BTF (the BPF programs' `vmlinux.h` is dumped from it): each
//! mutant's BTF differed from its base's (measured), so each has a build of its own (25-70 s);
//! `selftests/index/` points a kernel's cache entry at its build.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache, Entry, KeyHasher};
use crate::definition::Definition;
use crate::kconfig::KernelConfig;
use crate::progress::Step;
use crate::{process, source};

/// Bump when the way the selftests are built changes, so old builds stop matching.
const RECIPE: &str = "sockmap-lab selftests recipe 2: pruned to sockmap, clang-19, BPF_STRICT_BUILD=0; watchdog and kTLS flags";

/// The `test_progs` tests that exercise sockmap, sk_msg and sk_skb (those a tree has).
pub const TEST_PROGS_TESTS: &[&str] = &["sockmap_basic", "sockmap_listen", "sockmap_redir", "sockmap_strp", "sockmap_ktls"];

/// BPF objects built beside the skeletons: `test_sockmap` loads these two by file name. The third
/// is `bench sockmap`'s program; `lab bench --upstream` builds the bench in a tree of its own
/// (`crate::bench::upstream::build`) and does not use this copy.
const EXTRA_PROGS: &[&str] = &["test_sockmap_kern", "test_sockhash_kern", "bench_sockmap_prog"];

/// Where Debian's clang-19 keeps unsuffixed `clang`, `llc`, `llvm-strip`: first on the build's PATH,
/// so the tree's Makefiles (and libbpf's, bpftool's) pick them without knowing the suffix.
pub(crate) const LLVM_BIN: &str = "/usr/lib/llvm-19/bin";

/// The kernel config a test needs. On a kernel without it the test is not run and is reported
/// skipped with the reason, never failed (nor passed). `kernels/config/selftests.config` sets them.
pub const REQUIREMENTS: &[(&str, &str, &str)] = &[("sockmap_ktls", "CONFIG_TLS", "kTLS (TCP_ULP \"tls\")")];

/// What a finished selftests build holds; `manifest.json` in its folder, written last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildManifest {
    pub key: String,
    pub source: String,
    pub clang: String,
    /// The kernel whose BTF the programs were compiled against (any kernel with the same BTF uses
    /// the build).
    pub btf_from: String,
    pub build_seconds: f64,
    /// test_progs tests built in; the others the tree has are in `not_built` with the reason.
    pub tests: Vec<String>,
    pub not_built: Vec<NotBuilt>,
    pub test_sockmap: bool,
    /// Changes the lab made to the tree's harness (not to any test), each with why.
    pub harness_changes: Vec<String>,
    /// This test_progs has a watchdog (`-w`, since 6.15): a stuck test is ended, named.
    #[serde(default)]
    pub watchdog: bool,
    /// This test_sockmap runs kTLS variants of its tests (before 6.16; later trees moved them to
    /// test_progs' sockmap_ktls).
    #[serde(default)]
    pub test_sockmap_ktls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotBuilt {
    pub test: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: BuildManifest,
    pub cached: bool,
}

/// The selftests' part of a source tree: what the selftests Makefile, libbpf, bpftool and
/// resolve_btfids read (bpftool compiles `kernel/bpf/disasm.c`, libbpf runs `scripts/bpf_doc.py`).
pub(crate) const SUBTREES: &[&str] = &["tools", "scripts", "include/uapi", "kernel/bpf", "arch/x86/include", "Makefile"];

/// Build (or find) the selftests for a built kernel.
pub fn build(def: &Definition, entry: &Entry, cache: &Cache) -> anyhow::Result<Built> {
    // Keyed by the recipe too: a lab that builds them differently does not reuse an older build.
    let index = cache.path("selftests/index").join(KeyHasher::default().part("recipe", RECIPE.as_bytes()).part("entry", entry.manifest.key.as_bytes()).finish());
    if let Some(found) = std::fs::read_to_string(&index).ok().and_then(|key| load(cache, key.trim())) {
        return Ok(found);
    }
    let clang = ensure_clang()?;
    let (resolved, vmlinux) = inputs(def, entry, cache)?;
    let mut key = KeyHasher::default();
    key.part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).part("clang", clang.as_bytes());
    key.part("btf", btf_digest(&vmlinux)?.as_bytes());
    let key = key.finish();
    let out = cache.path("selftests/out").join(&key);
    std::fs::create_dir_all(&out)?;
    let _lock = cache::lock(&cache.path("selftests/out").join(format!("{key}.lock")))?;
    let built = match load(cache, &key) {
        Some(found) => found,
        None => {
            let src = prepared_source(&resolved, cache)?;
            compile(def, &src, &out, &vmlinux, &resolved.identity, &clang, &key)?
        }
    };
    std::fs::create_dir_all(cache.path("selftests/index"))?;
    std::fs::write(index, &key)?;
    Ok(built)
}

/// The kernel's source and its BTF (a vmlinux): a source build's own, or for a prebuilt image the
/// matching source package and the vmlinux inside its vmlinuz.
pub(crate) fn inputs(def: &Definition, entry: &Entry, cache: &Cache) -> anyhow::Result<(source::ResolvedSource, PathBuf)> {
    if entry.manifest.prebuilt {
        return prebuilt_inputs(def, entry, cache);
    }
    let vmlinux = entry.manifest.vmlinux.as_ref().map(|v| entry.dir.join(v)).context("the kernel's cache entry has no vmlinux (its BTF)")?;
    Ok((source::resolve(&def.source, cache)?, vmlinux))
}

fn load(cache: &Cache, key: &str) -> Option<Built> {
    let dir = cache.path("selftests/out").join(key);
    let manifest = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).ok()?).ok()?;
    Some(Built { dir, manifest, cached: true })
}

/// A prebuilt Debian image has no tree: its selftests come from the `linux-source-X.Y` package of
/// exactly the image's version (Debian builds both from one source), and its BTF from the vmlinux
/// inside its vmlinuz (the decompressed payload is an ELF that keeps `.BTF`). Without that package
/// version, say so: a neighbouring version's tests could test what this kernel does not have.
fn prebuilt_inputs(def: &Definition, entry: &Entry, cache: &Cache) -> anyhow::Result<(source::ResolvedSource, PathBuf)> {
    let image_version = entry.manifest.source.split_once('=').map(|(_, v)| v.to_string()).unwrap_or_default();
    let mut numbers = entry.manifest.release.split(|c: char| !c.is_ascii_digit());
    let line = format!("{}.{}", numbers.next().unwrap_or(""), numbers.next().unwrap_or(""));
    let package = format!("linux-source-{line}");
    let resolved = source::resolve(&crate::definition::Source::DebianSource { package: package.clone() }, cache)
        .with_context(|| format!("{}: a prebuilt image has no tree, and {package} (its source package) is not available", def.name))?;
    let source_version = resolved.identity.split_once('=').map(|(_, v)| v).unwrap_or_default();
    anyhow::ensure!(
        source_version == image_version,
        "{}: a prebuilt image has no tree, and the lab's {package} is {source_version}, not the image's {image_version}: \
         the selftests cannot be built for exactly this kernel (run them on a source build of the line)",
        def.name
    );
    let src = prepared_source(&resolved, cache)?;
    let vmlinux = cache.path("selftests/vmlinux").join(&entry.manifest.key);
    if !vmlinux.is_file() {
        std::fs::create_dir_all(cache.path("selftests/vmlinux"))?;
        let tmp = vmlinux.with_extension(format!("tmp.{}", std::process::id()));
        let file = std::fs::File::create(&tmp)?;
        duct::cmd!("sh", src.join("scripts/extract-vmlinux"), entry.kernel_image()).stdout_file(file).stderr_capture().run()
            .with_context(|| format!("extracting vmlinux (for its BTF) from {}", entry.kernel_image().display()))?;
        std::fs::rename(&tmp, &vmlinux)?;
    }
    Ok((resolved, vmlinux))
}

/// clang-19's version line, installing Debian's clang-19 first when it is missing.
pub(crate) fn ensure_clang() -> anyhow::Result<String> {
    let clang = Path::new(LLVM_BIN).join("clang");
    if !clang.is_file() {
        eprintln!("lab: installing clang-19 llvm-19 lld-19 with apt-get (the selftests need a newer clang than 14)");
        let status = std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "clang-19", "llvm-19", "lld-19", "rsync", "libcap-dev", "libzstd-dev"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        anyhow::ensure!(status.success() && clang.is_file(), "`apt-get install clang-19 llvm-19 lld-19` failed (run as root, or install them)");
    }
    let version = process::output(&clang.display().to_string(), &["--version"])?;
    Ok(version.lines().next().unwrap_or("").to_string())
}

/// A digest of the kernel's BTF: two kernels with the same types compile the same programs.
fn btf_digest(vmlinux: &Path) -> anyhow::Result<String> {
    let tmp = tempfile::NamedTempFile::new()?;
    process::output("objcopy", &["-O", "binary", "--only-section=.BTF", &vmlinux.display().to_string(), &tmp.path().display().to_string()])
        .with_context(|| format!("reading the BTF of {}", vmlinux.display()))?;
    let bytes = std::fs::read(tmp.path())?;
    anyhow::ensure!(!bytes.is_empty(), "{} has no BTF (.BTF section); the selftests' programs need it", vmlinux.display());
    Ok(KeyHasher::default().part("btf", &bytes).finish())
}

/// The selftests' part of the source, unpacked once per source and pruned to the sockmap tests.
fn prepared_source(resolved: &source::ResolvedSource, cache: &Cache) -> anyhow::Result<PathBuf> {
    let slug: String = resolved.identity.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let tag = KeyHasher::default().part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).finish();
    let dir = cache.path("selftests/src").join(format!("{slug}-{}", &tag[..12]));
    std::fs::create_dir_all(cache.path("selftests/src"))?;
    let _lock = cache::lock(&dir.with_extension("lock"))?;
    if dir.join(".lab-ready").is_file() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let step = Step::start(&format!("selftests: unpacking {} of {}", SUBTREES.join(", "), resolved.identity));
    extract_subtrees(resolved, &dir)?;
    let bpf = dir.join("tools/testing/selftests/bpf");
    anyhow::ensure!(bpf.join("Makefile").is_file(), "{} has no tools/testing/selftests/bpf", resolved.identity);
    prune(&bpf)?;
    std::fs::write(dir.join(".lab-ready"), "")?;
    step.finish("pruned to the sockmap tests");
    Ok(dir)
}

pub(crate) fn extract_subtrees(resolved: &source::ResolvedSource, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    let result = match &resolved.commit {
        Some(commit) => {
            let mut args = vec!["-C".to_string(), resolved.origin.display().to_string(), "archive".into(), "--format=tar".into(), "--prefix=linux/".into(), commit.clone()];
            args.extend(SUBTREES.iter().map(|s| s.to_string()));
            duct::cmd("git", args).pipe(duct::cmd!("tar", "-x", "--strip-components=1", "-C", dest)).stderr_capture().run()
        }
        None => {
            // The tarball's top folder has the package's name: match the subtrees one level down.
            let mut args: Vec<String> = vec!["-xf".into(), resolved.origin.display().to_string(), "--strip-components=1".into(), "-C".into(), dest.display().to_string()];
            args.extend(["--wildcards".into(), "--no-wildcards-match-slash".into()]);
            args.extend(SUBTREES.iter().map(|s| format!("*/{s}")));
            duct::cmd("tar", args).stderr_capture().run()
        }
    };
    result.map(|_| ()).with_context(|| format!("unpacking the selftests of {} into {}", resolved.origin.display(), dest.display()))
}

/// Keep only the sockmap tests and the BPF programs they include as skeletons (plus
/// [`EXTRA_PROGS`]): `test_progs` is made of whatever `prog_tests/*.c` and `progs/*.c` hold.
fn prune(bpf: &Path) -> anyhow::Result<()> {
    let mut progs: Vec<String> = EXTRA_PROGS.iter().map(|p| p.to_string()).collect();
    for entry in std::fs::read_dir(bpf.join("prog_tests"))? {
        let path = entry?.path();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "c") {
            if TEST_PROGS_TESTS.contains(&stem.as_str()) {
                progs.extend(skeletons(&std::fs::read_to_string(&path)?));
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    for entry in std::fs::read_dir(bpf.join("progs"))? {
        let path = entry?.path();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "c") && !progs.contains(&stem) {
            std::fs::remove_file(&path)?;
        }
    }
    // A tests.h generated before pruning would list tests whose code is gone.
    let _ = std::fs::remove_file(bpf.join("prog_tests/tests.h"));
    Ok(())
}

/// The BPF programs a test includes as `#include "NAME.skel.h"`.
pub fn skeletons(test_source: &str) -> Vec<String> {
    test_source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#include \"")?.strip_suffix(".skel.h\"").map(str::to_string))
        .collect()
}

/// The one harness change: since 6.18 `test_progs` registers a session key for signed programs and
/// exits silently with 255 when the kernel has no keyring (the lab's kernels have none). Only the
/// signed light skeletons need it, which this build leaves out; the start goes on with a warning.
const SESSION_KEY_FATAL: &str = "\t\t\t\t   test_progs_verification_cert_len);\n\tif (err < 0)\n\t\treturn err;";
const SESSION_KEY_WARN: &str = "\t\t\t\t   test_progs_verification_cert_len);\n\tif (err < 0)\n\t\tfprintf(stderr, \"WARNING! sockmap-lab: no session key (kernel without CONFIG_KEYS): signed programs cannot load\\n\");";

fn adapt_harness(bpf: &Path) -> anyhow::Result<Vec<String>> {
    let file = bpf.join("test_progs.c");
    let text = std::fs::read_to_string(&file)?;
    if !text.contains(SESSION_KEY_FATAL) {
        return Ok(vec![]);
    }
    std::fs::write(&file, text.replace(SESSION_KEY_FATAL, SESSION_KEY_WARN))?;
    Ok(vec!["test_progs.c: a failed session-key registration (no CONFIG_KEYS) warns instead of exiting 255; only signed light skeletons need the key, and they are not built".into()])
}

/// The make command line: the runner's own rules, with what the sockmap tests do not need
/// emptied on the command line (which overrides the Makefile's assignments): the light and linked
/// skeletons it names by file, the extra files (test kernel modules, urandom_read, ...), libarena
/// (clang-19 crashes on it), and permissive mode (7.x) so a test that does not compile is left out
/// and reported rather than failing the build.
fn make_args(src: &Path, out: &Path, vmlinux: &Path, jobs: usize) -> Vec<String> {
    let mut args = common_make_args(src, out, vmlinux, jobs);
    // Only the extra programs this tree has (bench_sockmap_prog came with 6.16).
    let progs = src.join("tools/testing/selftests/bpf/progs");
    let extra = EXTRA_PROGS.iter().filter(|p| progs.join(format!("{p}.c")).is_file()).map(|p| format!("{p}.bpf.o"));
    for target in ["test_progs".to_string(), "test_sockmap".to_string()].into_iter().chain(extra) {
        args.push(out.join(target).display().to_string());
    }
    args
}

/// The selftests Makefile's command line without its targets: the tree, the output, the BTF, and
/// what the lab's builds leave out (see [`make_args`]).
pub(crate) fn common_make_args(src: &Path, out: &Path, vmlinux: &Path, jobs: usize) -> Vec<String> {
    let mut args = vec![
        "-C".to_string(),
        src.join("tools/testing/selftests/bpf").display().to_string(),
        format!("-j{jobs}"),
        format!("OUTPUT={}", out.display()),
        format!("VMLINUX_BTF={}", vmlinux.display()),
    ];
    for empty in ["TRUNNER_EXTRA_FILES", "LSKELS", "LSKELS_SIGNED", "LSKELS_EXTRA", "LINKED_SKELS", "LIBARENA_SKEL", "LIBARENA_ASAN_SKEL", "TEST_KMODS"] {
        args.push(format!("{empty}="));
    }
    args.extend(["BPF_STRICT_BUILD=0", "SKIP_DOCS=1", "SKIP_LLVM=1", "SKIP_LIBBFD=1"].map(String::from));
    args
}

/// The build's PATH: clang-19's unsuffixed tools first, so the tree's Makefiles pick them.
pub(crate) fn llvm_path() -> anyhow::Result<std::ffi::OsString> {
    Ok(std::env::join_paths(std::iter::once(PathBuf::from(LLVM_BIN)).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())))?)
}

fn compile(def: &Definition, src: &Path, out: &Path, vmlinux: &Path, identity: &str, clang: &str, key: &str) -> anyhow::Result<Built> {
    let bpf = src.join("tools/testing/selftests/bpf");
    let harness_changes = adapt_harness(&bpf)?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) + 1;
    let log = out.join("build.log");
    let path = llvm_path()?;
    // A binary linked before its test objects existed (permissive mode) would not be relinked.
    let _ = std::fs::remove_file(out.join("test_progs"));
    let started = Instant::now();
    let step = Step::start(&format!("{}: building the kernel's sockmap selftests (clang-19, make -j{jobs})", def.name));
    let mut done = 0usize;
    let result = process::run_logged(process::command("make", make_args(src, out, vmlinux, jobs)).env("PATH", path), &log, |line| {
        let line = line.trim_start();
        if ["CLNG-BPF", "GEN-SKEL", "TEST-OBJ", "EXT-OBJ", "BINARY", "CC ", "LINK"].iter().any(|p| line.starts_with(p)) {
            done += 1;
            step.message(&format!("{done} steps; {line}"));
        }
    });
    if let Err(e) = result {
        drop(step);
        return Err(e.context(format!("building the selftests of {identity} failed (log: {})", log.display())));
    }
    let build_log = std::fs::read_to_string(&log).unwrap_or_default();
    let (tests, not_built) = built_tests(&bpf, out, &build_log)?;
    if !out.join("test_progs").is_file() && !out.join("test_sockmap").is_file() {
        bail!("the selftests build made neither test_progs nor test_sockmap (log: {})", log.display());
    }
    let manifest = BuildManifest {
        key: key.to_string(),
        source: identity.to_string(),
        clang: clang.to_string(),
        btf_from: def.name.clone(),
        build_seconds: started.elapsed().as_secs_f64(),
        tests,
        not_built,
        test_sockmap: out.join("test_sockmap").is_file() && out.join("test_sockmap_kern.bpf.o").is_file(),
        harness_changes,
        watchdog: std::fs::read_to_string(bpf.join("test_progs.c")).unwrap_or_default().contains("watchdog-timeout"),
        test_sockmap_ktls: std::fs::read_to_string(bpf.join("test_sockmap.c")).unwrap_or_default().contains("test_selftests_ktls"),
    };
    step.finish(&format!("{} test_progs tests, {} not built", manifest.tests.len(), manifest.not_built.len()));
    std::fs::write(out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    Ok(Built { dir: out.to_path_buf(), manifest, cached: false })
}

/// Which of the tree's sockmap tests made it into `test_progs`, and why the others did not
/// (the first compiler error naming the test or one of its programs).
fn built_tests(bpf: &Path, out: &Path, log: &str) -> anyhow::Result<(Vec<String>, Vec<NotBuilt>)> {
    let (mut tests, mut not_built) = (vec![], vec![]);
    for test in TEST_PROGS_TESTS {
        if !bpf.join("prog_tests").join(format!("{test}.c")).is_file() {
            continue;
        }
        if out.join(format!("{test}.test.o")).is_file() && out.join("test_progs").is_file() {
            tests.push(test.to_string());
            continue;
        }
        let progs = skeletons(&std::fs::read_to_string(bpf.join("prog_tests").join(format!("{test}.c")))?);
        let reason = first_error(log, test, &progs).unwrap_or_else(|| "did not compile (see the build log)".into());
        not_built.push(NotBuilt { test: test.to_string(), reason });
    }
    Ok((tests, not_built))
}

/// The first `error:` line of the log that names the test's source or one of its programs.
pub fn first_error(log: &str, test: &str, progs: &[String]) -> Option<String> {
    let names: Vec<String> = std::iter::once(format!("{test}.c")).chain(progs.iter().map(|p| format!("{p}.c"))).collect();
    log.lines()
        .find(|l| l.contains("error:") && names.iter().any(|n| l.contains(n.as_str())))
        .map(|l| l.trim().chars().take(300).collect())
}

/// Whether the kernel has a symbol: built in, or a module where the guest boots with the kernel's
/// modules (a prebuilt image); a source build's bzImage boots without its modules.
fn has(config: &KernelConfig, symbol: &str, modules: bool) -> bool {
    match config.get(symbol.trim_start_matches("CONFIG_")) {
        Some("y") => true,
        Some("m") => modules,
        _ => false,
    }
}

/// Tests the kernel's config cannot run: (test, reason).
pub fn unmet_requirements(config: &KernelConfig, tests: &[String], modules: bool) -> Vec<(String, String)> {
    REQUIREMENTS
        .iter()
        .filter(|(test, symbol, _)| tests.iter().any(|t| t == test) && !has(config, symbol, modules))
        .map(|(test, symbol, what)| (test.to_string(), format!("the kernel lacks {symbol} ({what}); kernels/config/selftests.config sets it")))
        .collect()
}

// ---- running them ------------------------------------------------------------------------------

/// A selftest's verdict as the lab reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    Failed,
    /// Not run, or run and skipped by the test itself: never a pass. `reason` says why.
    Skipped,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "ok",
            Verdict::Failed => "FAILED",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One selftest (a test_progs subtest, a test_progs test without subtests, or a test_sockmap test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// `test_progs` or `test_sockmap`.
    pub program: String,
    /// `sockmap_basic/sockmap create_update_free`, `sockmap::txmsg test passthrough`; a name the
    /// program repeats gets ` #N` (its number) from the second time on, so every name is one test.
    pub name: String,
    pub status: Verdict,
    /// Why it was skipped, or the failing lines of its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TestResult {
    /// `test_progs:sockmap_basic/sockmap create_update_free`: what the mutant table names.
    pub fn id(&self) -> String {
        format!("{}:{}", self.program, self.name)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Totals {
    pub fn of<'a>(results: impl IntoIterator<Item = &'a TestResult>) -> Totals {
        let mut t = Totals::default();
        for r in results {
            match r.status {
                Verdict::Passed => t.passed += 1,
                Verdict::Failed => t.failed += 1,
                Verdict::Skipped => t.skipped += 1,
            }
        }
        t
    }
}

/// One `lab selftests` run, written as `summary.json` in its results folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelftestsReport {
    pub kernel: String,
    pub run: String,
    pub release: String,
    pub accel: String,
    /// How the guest run ended (exited, panicked, hung...).
    pub guest: serde_json::Value,
    pub guest_seconds: f64,
    pub build: BuildManifest,
    pub results: Vec<TestResult>,
    /// What went wrong with the run itself: a program that died without its summary, exited
    /// non-zero with no failed test, or never started.
    pub problems: Vec<String>,
    pub totals: Totals,
}

impl SelftestsReport {
    /// Red: a failed test or a run problem (a skip is not a failure, but is never a pass either).
    pub fn failed(&self) -> bool {
        self.totals.failed > 0 || !self.problems.is_empty()
    }

    pub fn failing(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|r| r.status == Verdict::Failed)
    }
}

/// The `test_progs` verdict lines: `#12/3    test/subtest:OK` or `#12       test:FAIL`.
fn progs_line(line: &str) -> Option<(u32, Option<u32>, &str, Verdict)> {
    let rest = line.strip_prefix('#')?;
    let (number, rest) = rest.split_once(|c: char| c.is_whitespace())?;
    let (test, sub) = match number.split_once('/') {
        Some((t, s)) => (t.trim().parse().ok()?, Some(s.trim().parse().ok()?)),
        None => (number.parse().ok()?, None),
    };
    let (name, verdict) = rest.trim().rsplit_once(':')?;
    let verdict = match verdict {
        "OK" => Verdict::Passed,
        "FAIL" => Verdict::Failed,
        "SKIP" => Verdict::Skipped,
        _ => return None,
    };
    Some((test, sub, name.trim(), verdict))
}

/// `test_progs` output to results: subtests, and tests that have none. A test that failed while
/// none of its subtests did (its setup) is kept as `test (outside its subtests)`.
pub fn parse_test_progs(output: &str) -> Vec<TestResult> {
    let mut results: Vec<TestResult> = vec![];
    let mut log: Vec<&str> = vec![];
    let mut with_subtests: Vec<u32> = vec![];
    // After the run test_progs prints every failed test's log and verdict again.
    for line in output.lines().take_while(|l| l.trim_end() != "All error logs:") {
        let Some((test, sub, name, verdict)) = progs_line(line.trim_end()) else {
            log.push(line);
            continue;
        };
        let detail = (verdict != Verdict::Passed).then(|| failure_lines(&log)).flatten();
        log.clear();
        let top = name.split('/').next().unwrap_or(name);
        let subtests_failed = results.iter().any(|r| r.name.starts_with(&format!("{top}/")) && r.status == Verdict::Failed);
        let name = match sub {
            Some(_) => {
                with_subtests.push(test);
                name.to_string()
            }
            None if !with_subtests.contains(&test) => name.to_string(),
            None if verdict == Verdict::Failed && !subtests_failed => format!("{name} (outside its subtests)"),
            None => continue,
        };
        let name = unique(&results, "test_progs", name, sub.unwrap_or(test));
        results.push(TestResult { program: "test_progs".into(), name, status: verdict, reason: detail });
    }
    results
}

/// The lines of a test's log that say what failed (test_progs prints `func:FAIL:what`), else its tail.
fn failure_lines(log: &[&str]) -> Option<String> {
    let failing: Vec<&str> = log.iter().copied().filter(|l| l.contains(":FAIL:") || l.contains("SKIP")).collect();
    let lines = if failing.is_empty() { log.iter().rev().take(5).rev().copied().collect() } else { failing };
    let text = lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).take(8).collect::<Vec<_>>().join("\n");
    (!text.is_empty()).then_some(text)
}

fn unique(results: &[TestResult], program: &str, name: String, number: u32) -> String {
    if results.iter().any(|r| r.program == program && r.name == name) {
        format!("{name} #{number}")
    } else {
        name
    }
}

/// `test_sockmap` output (`#3/ 2  sockmap::txmsg test redirect wait send mem:OK`). Its forked
/// children repeat the parent's unflushed lines, so a number seen again replaces the earlier one.
pub fn parse_test_sockmap(output: &str) -> Vec<TestResult> {
    let mut by_number: std::collections::BTreeMap<u32, TestResult> = Default::default();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix('#') else { continue };
        let Some((number, rest)) = rest.split_once('/') else { continue };
        let Ok(number) = number.trim().parse::<u32>() else { continue };
        let rest = rest.trim_start().trim_start_matches(|c: char| c.is_ascii_digit()).trim();
        let Some((name, verdict)) = rest.rsplit_once(':') else { continue };
        let status = match verdict.trim() {
            "OK" => Verdict::Passed,
            "FAIL" => Verdict::Failed,
            "SKIP" => Verdict::Skipped,
            _ => continue,
        };
        by_number.insert(number, TestResult { program: "test_sockmap".into(), name: name.trim().to_string(), status, reason: None });
    }
    let mut results: Vec<TestResult> = vec![];
    for (number, mut r) in by_number {
        r.name = unique(&results, "test_sockmap", r.name, number);
        results.push(r);
    }
    results
}

/// Printed around each program in the guest, so the host can split the output and tell a
/// program that finished from one that died: `@@lab-selftests end test_progs 0`.
const MARK: &str = "@@lab-selftests";

/// What to run: the built tests, minus those the kernel cannot run, narrowed by the filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// `test_progs -t` names (empty: test_progs is not run).
    pub test_progs: Vec<String>,
    /// `test_progs -d` names: built, but the kernel lacks what they need.
    pub denied: Vec<String>,
    pub test_sockmap: bool,
    /// `test_sockmap -b` entries (a test's prefix, map or title containing one is not run).
    pub sockmap_blacklist: Vec<String>,
    /// test_progs takes `-w` (its watchdog).
    pub watchdog: bool,
    /// Results known before the guest boots: tests not built, or not runnable on this kernel.
    pub skipped: Vec<TestResult>,
}

/// FILTER as `lab test` takes it: a test_progs selector (`sockmap_basic`, `sockmap_basic/sockmap
/// recover`), or `test_sockmap` for that program alone.
pub fn plan(build: &BuildManifest, config: &KernelConfig, modules: bool, filter: Option<&str>) -> Plan {
    let unmet = unmet_requirements(config, &build.tests, modules);
    let only_sockmap = filter.is_some_and(|f| f.contains("test_sockmap"));
    let top = filter.map(|f| f.split('/').next().unwrap_or(f));
    let selected = |test: &str| !only_sockmap && top.is_none_or(|t| test.contains(t));
    let skip = |test: &str, reason: String| TestResult { program: "test_progs".into(), name: test.into(), status: Verdict::Skipped, reason: Some(reason) };
    let mut plan = Plan { test_sockmap: build.test_sockmap && (filter.is_none() || only_sockmap), watchdog: build.watchdog, ..Plan::default() };
    if plan.test_sockmap && build.test_sockmap_ktls && !has(config, "CONFIG_TLS", modules) {
        // Its kTLS variants ("ktls" prefix) and "txmsg test skb" (which turns kTLS on) need TLS.
        plan.sockmap_blacklist = vec!["ktls".into(), "txmsg test skb".into()];
        let reason = "the kernel lacks CONFIG_TLS (kTLS (TCP_ULP \"tls\")); kernels/config/selftests.config sets it".to_string();
        plan.skipped.push(TestResult { program: "test_sockmap".into(), name: "its kTLS tests and \"txmsg test skb\" (-b ktls,txmsg test skb)".into(), status: Verdict::Skipped, reason: Some(reason) });
    }
    for nb in build.not_built.iter().filter(|nb| selected(&nb.test)) {
        plan.skipped.push(skip(&nb.test, format!("not built with clang-19: {}", nb.reason)));
    }
    for test in build.tests.iter().filter(|t| selected(t)) {
        if let Some((_, reason)) = unmet.iter().find(|(t, _)| t == test) {
            plan.denied.push(test.clone());
            plan.skipped.push(skip(test, reason.clone()));
        } else {
            // A subtest selector (`test/subtest`) goes to test_progs as it is.
            let selector = filter.filter(|f| f.contains('/')).map(str::to_string).unwrap_or_else(|| test.clone());
            if !plan.test_progs.contains(&selector) {
                plan.test_progs.push(selector);
            }
        }
    }
    plan
}

/// The guest's script: a private writable copy of the build (the host is mounted read-only), then
/// each program between markers.
pub fn guest_script(build_dir: &Path, results: &Path, plan: &Plan) -> String {
    let q = |p: &Path| shell_words::quote(&p.display().to_string()).into_owned();
    let mut script = format!("W=/tmp/lab-selftests; rm -rf $W && cp -a {} $W && cd $W || exit 3; rc=0; ", q(build_dir));
    if !plan.test_progs.is_empty() {
        let mut cmd = vec!["./test_progs".to_string()];
        if plan.watchdog {
            cmd.extend(["-w".into(), "120".into()]);
        }
        cmd.extend(["-J".into(), results.join("test_progs.json").display().to_string(), "-t".into(), plan.test_progs.join(",")]);
        for d in &plan.denied {
            cmd.extend(["-d".to_string(), d.clone()]);
        }
        script.push_str(&program_block("test_progs", &shell_words::join(&cmd)));
    }
    if plan.test_sockmap {
        // Asked to be line-buffered, so its forked children need not repeat the parent's unwritten
        // lines. Measured: on 6.12 they still did (4,726 lines for 29 tests), which the parser
        // absorbs (a number counts once); and its last result line need not be the test that ran
        // when the kernel oopsed (a child can oops after the parent printed more).
        let mut cmd = vec!["stdbuf".to_string(), "-oL".into(), "./test_sockmap".into()];
        if !plan.sockmap_blacklist.is_empty() {
            cmd.extend(["-b".into(), plan.sockmap_blacklist.join(",")]);
        }
        script.push_str(&program_block("test_sockmap", &shell_words::join(&cmd)));
    }
    script.push_str("exit $rc");
    script
}

fn program_block(name: &str, command: &str) -> String {
    format!("echo \"{MARK} begin {name}\"; {command} 2>&1; c=$?; echo; echo \"{MARK} end {name} $c\"; [ $c = 0 ] || rc=1; ")
}

/// The output between a program's markers, and its exit code when it reached the end marker.
pub fn section<'a>(output: &'a str, name: &str) -> Option<(&'a str, Option<i32>)> {
    let begin = format!("{MARK} begin {name}\n");
    let start = output.find(&begin)? + begin.len();
    let rest = &output[start..];
    let end = format!("{MARK} end {name} ");
    match rest.find(&end) {
        Some(at) => {
            let code = rest[at + end.len()..].lines().next().and_then(|c| c.trim().parse().ok());
            Some((&rest[..at], code))
        }
        None => Some((rest, None)),
    }
}

/// Which program was running when the guest got into trouble (the console's `Comm:` names the
/// task an oops hit; else the program that never reached its end), and its last verdict before.
pub fn running_when(output: &str, console: &str) -> String {
    let programs = ["test_sockmap", "test_progs"];
    let from_console = console.lines().filter_map(|l| l.split_once("Comm: ")).filter_map(|(_, rest)| rest.split_whitespace().next()).find_map(|c| programs.into_iter().find(|p| p.starts_with(c)));
    let unfinished = || programs.into_iter().find(|p| matches!(section(output, p), Some((_, None))));
    let Some(program) = from_console.or_else(unfinished) else {
        return "outside the selftests' programs".into();
    };
    let (text, _) = section(output, program).unwrap_or_default();
    match text.lines().rev().find(|l| l.starts_with('#')) {
        Some(last) => format!("while {program} ran, after `{}`", last.trim()),
        None => format!("while {program} ran, before its first result"),
    }
}

/// Results of each program that ran, and what went wrong with the run itself.
pub fn collect(output: &str, plan: &Plan) -> (Vec<TestResult>, Vec<String>) {
    let mut results = plan.skipped.clone();
    let mut problems = vec![];
    type Parser = fn(&str) -> Vec<TestResult>;
    let programs: [(&str, bool, Parser); 2] = [("test_progs", !plan.test_progs.is_empty(), parse_test_progs), ("test_sockmap", plan.test_sockmap, parse_test_sockmap)];
    for (name, _, parse) in programs.into_iter().filter(|p| p.1) {
        match section(output, name) {
            None => problems.push(format!("{name} never started")),
            Some((text, code)) => {
                let found = parse(text);
                let failed = found.iter().any(|r| r.status == Verdict::Failed);
                match code {
                    None => problems.push(format!("{name} died before its end (no exit status); last lines:\n{}", process::tail(text, 10))),
                    Some(c) if c != 0 && !failed => problems.push(format!("{name} exited {c} with no failed test; last lines:\n{}", process::tail(text, 10))),
                    _ => {}
                }
                if found.is_empty() && code == Some(0) {
                    problems.push(format!("{name} reported no test"));
                }
                results.extend(found);
            }
        }
    }
    (results, problems)
}

/// A finished selftests run: the report, the raw guest run, and where its results are.
pub struct SelftestsRun {
    pub report: SelftestsReport,
    pub guest: crate::vm::GuestRun,
    pub cfg: crate::vm::VmConfig,
    pub results: PathBuf,
    pub run: crate::runs::Run,
}

/// Where `kernel`'s selftests runs go: `results/selftests/<kernel>/runs/<id>/`, `.../latest`.
pub fn results_group(project: &Path, kernel: &str) -> PathBuf {
    project.join("results").join("selftests").join(kernel)
}

/// Boot the kernel and run its selftests; the results land in a new run folder (not yet `latest`:
/// the caller's publish hook (`lab::cli::selftests::publish`) makes it `latest` once everything is written).
pub fn run(def: &Definition, entry: &Entry, built: &Built, project: &Path, mut cfg: crate::vm::VmConfig, filter: Option<&str>) -> anyhow::Result<SelftestsRun> {
    let config = KernelConfig::parse(&std::fs::read_to_string(entry.config()).unwrap_or_default());
    let plan = plan(&built.manifest, &config, entry.manifest.prebuilt, filter);
    let run = crate::runs::start(&results_group(project, &def.name))?;
    cfg.rwdirs.push(run.dir.clone());
    // test_progs prints a line per subtest, and its watchdog (-w 120) ends a stuck test: a guest
    // quiet for 300 s is hung.
    cfg.silence.get_or_insert(crate::suite::SUITE_SILENCE);
    let command = vec!["sh".into(), "-c".into(), guest_script(&built.dir, &run.dir, &plan)];
    let step = Step::start(&format!("{}: running the kernel's sockmap selftests in the guest ({})", def.name, cfg.accel.as_str()));
    let mut done = 0usize;
    let on_line = |line: &str| {
        let end = line.trim_end();
        if line.starts_with('#') && (end.ends_with(":OK") || end.ends_with(":FAIL") || end.ends_with(":SKIP")) {
            done += 1;
            step.message(&format!("{done} results; {}", line.trim()));
        }
    };
    let guest = crate::vm::run(&entry.kernel_image(), &command, &cfg, crate::vm::by_line(on_line))?;
    step.finish(&format!("{done} result lines (test_sockmap repeats some)"));
    let output = String::from_utf8_lossy(&guest.stdout).into_owned();
    std::fs::write(run.dir.join("output.log"), &output)?;
    let (results, mut problems) = collect(&output, &plan);
    if !matches!(guest.outcome, crate::vm::Outcome::Exited { .. }) {
        problems.insert(0, format!("the guest {} {}", guest.outcome.describe(), running_when(&output, &guest.console)));
    }
    let report = SelftestsReport {
        kernel: def.name.clone(),
        run: run.id.clone(),
        release: entry.manifest.release.clone(),
        accel: cfg.accel.as_str().into(),
        guest: serde_json::to_value(&guest.outcome)?,
        guest_seconds: guest.wall.as_secs_f64(),
        build: built.manifest.clone(),
        totals: Totals::of(&results),
        results,
        problems,
    };
    std::fs::write(run.dir.join("summary.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(SelftestsRun { report, guest, cfg, results: run.dir.clone(), run })
}

// ---- beside the suite, on mutants and in the matrix ----------------------------------------------

/// Build (taking turns with other builds: they use every core) and run one kernel's selftests, and
/// hand the run to `publish` (which writes its JUnit and summary and makes it `latest`).
pub fn run_kernel(
    kernels: &crate::definition::KernelsDir,
    cache: &Cache,
    project: &Path,
    name: &str,
    vm_config: &VmConfigFn<'_>,
    publish: &PublishFn<'_>,
    builds: &std::sync::Mutex<()>,
) -> anyhow::Result<SelftestsRun> {
    let def = kernels.load(name)?;
    let (entry, tests) = {
        let _turn = builds.lock().unwrap_or_else(|e| e.into_inner());
        let built = crate::build::build(&def, kernels, cache, &crate::build::BuildOptions::default())?;
        let tests = build(&def, &built.entry, cache)?;
        (built.entry, tests)
    };
    let cfg = vm_config(name, &entry.kernel_image())?;
    let run = run(&def, &entry, &tests, project, cfg, None)?;
    publish(&run)?;
    Ok(run)
}

/// How a kernel's VM configuration is made (the accelerator is chosen per host).
pub type VmConfigFn<'a> = dyn Fn(&str, &Path) -> anyhow::Result<crate::vm::VmConfig> + Sync + 'a;

/// What happens to a finished run before it counts: its outputs written, then made `latest`.
pub type PublishFn<'a> = dyn Fn(&SelftestsRun) -> anyhow::Result<()> + Sync + 'a;

/// One kernel's selftests for a table (mutants, matrix): the report, or why there is none.
pub type SelftestsOutcome = (String, Result<SelftestsReport, String>);

pub fn selftests_of(
    kernels: &crate::definition::KernelsDir,
    cache: &Cache,
    project: &Path,
    name: &str,
    (vm_config, publish): (&VmConfigFn<'_>, &PublishFn<'_>),
    builds: &std::sync::Mutex<()>,
) -> SelftestsOutcome {
    let run = run_kernel(kernels, cache, project, name, vm_config, publish, builds).map(|r| r.report).map_err(|e| format!("{e:#}"));
    let state = match &run {
        Ok(r) => format!("{} passed, {} failed, {} skipped{}", r.totals.passed, r.totals.failed, r.totals.skipped, r.problems.first().map(|p| format!("; {p}")).unwrap_or_default()),
        Err(e) => format!("error: {e}"),
    };
    eprintln!("lab: selftests on {name} done ({state})");
    (name.to_string(), run)
}

/// The selftests on each kernel of the list, `jobs` guests at once (builds take turns).
pub fn run_many(
    kernels: &crate::definition::KernelsDir,
    cache: &Cache,
    project: &Path,
    names: &[String],
    jobs: usize,
    hooks: (&VmConfigFn<'_>, &PublishFn<'_>),
) -> Vec<SelftestsOutcome> {
    let queue = std::sync::Mutex::new(names.iter().cloned().collect::<std::collections::VecDeque<_>>());
    let (builds, done) = (std::sync::Mutex::new(()), std::sync::Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let Some(name) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { break };
                let outcome = selftests_of(kernels, cache, project, &name, hooks, &builds);
                done.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
    done
}

/// Whether the kernel's selftests caught a mutant: a test that fails on it and passes on its
/// control (the base kernel, same session), or a panic, oops or hang while they ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutantSelftests {
    /// None: the selftests did not run on the mutant or its control (`evidence` says why).
    pub caught: Option<bool>,
    /// The tests that caught it (`test_progs:sockmap_basic/...`).
    pub caught_by: Vec<String>,
    pub evidence: String,
    /// The control's totals, e.g. `sk-msg-opt-7.3: 805 passed, 0 failed, 1 skipped`.
    pub control: String,
}

/// Judge one mutant's selftests run against its control's.
pub fn judge(mutant: Result<&SelftestsReport, &str>, control: Result<&SelftestsReport, &str>) -> MutantSelftests {
    let not_run = |why: String, control: String| MutantSelftests { caught: None, caught_by: vec![], evidence: why, control };
    // A control whose kernel oopsed still ran its tests (stock 6.12 oopses in test_sockmap): it
    // is a control for the tests, not for an oops.
    let control = match control {
        Ok(c) if !c.results.is_empty() && matches!(c.guest["kind"].as_str(), Some("exited" | "oopsed")) => c,
        Ok(c) => return not_run(format!("the control's selftests did not finish: {}", c.problems.first().cloned().unwrap_or_else(|| c.guest.to_string())), String::new()),
        Err(why) => return not_run(format!("the control's selftests did not run: {why}"), String::new()),
    };
    let t = control.totals;
    let control_kind = control.guest["kind"].as_str().unwrap_or("?");
    let control_line = format!("{}: {} passed, {} failed, {} skipped{}", control.kernel, t.passed, t.failed, t.skipped, if control_kind == "exited" { String::new() } else { format!(", guest {control_kind}") });
    let mutant = match mutant {
        Ok(m) => m,
        Err(why) => return not_run(format!("not run: {why}"), control_line),
    };
    let passes_on_control = |r: &TestResult| control.results.iter().any(|c| c.id() == r.id() && c.status == Verdict::Passed);
    let caught_by: Vec<String> = mutant.failing().filter(|r| passes_on_control(r)).map(TestResult::id).collect();
    let first = mutant.failing().find(|r| passes_on_control(r)).map(|r| format!("{}: {}", r.id(), r.reason.as_deref().unwrap_or("failed").lines().next().unwrap_or("")));
    let kind = mutant.guest["kind"].as_str().unwrap_or("?");
    let trouble = kind != "exited" && kind != control_kind;
    let (caught, evidence) = match (trouble, first) {
        (true, first) => (true, format!("{} {}{}", kind, mutant.guest.get("line").and_then(|l| l.as_str()).unwrap_or(""), first.map(|f| format!("; {f}")).unwrap_or_default())),
        (false, Some(first)) => (true, first),
        (false, None) if mutant.results.is_empty() => return not_run(format!("no results: {}", mutant.problems.first().map(String::as_str).unwrap_or(kind)), control_line),
        (false, None) => (false, "every selftest that passes on the control passed".into()),
    };
    MutantSelftests { caught: Some(caught), caught_by, evidence, control: control_line }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like test_progs 7.3's output on a kernel without CONFIG_TLS (trimmed).
    const TEST_PROGS: &str = "WARNING! Selftests relying on bpf_testmod.ko will be skipped.
#1/1     sockmap_basic/sockmap create_update_free:OK
#1/2     sockmap_basic/sockhash create_update_free:OK
#1       sockmap_basic:OK
run_tests:PASS:bpf_map_create 0 nsec
test_sockmap_ktls_update_fails_when_sock_has_ulp:PASS:socket 0 nsec
test_sockmap_ktls_update_fails_when_sock_has_ulp:FAIL:setsockopt(TCP_ULP) unexpected error: -1 (errno 2)
#2/1     sockmap_ktls/sockmap_ktls update_fails_when_sock_has_ulp IPv4 SOCKMAP:FAIL
test_sockmap_ktls_update_fails_when_sock_has_ulp:FAIL:setsockopt(TCP_ULP) unexpected error: -1 (errno 2)
#2/3     sockmap_ktls/sockmap_ktls update_fails_when_sock_has_ulp IPv4 SOCKMAP:FAIL
#2       sockmap_ktls:FAIL
#3/7     sockmap_redir/hash sk_skb-to-ingress v_seq   v_str      :OK
#3/8     sockmap_redir/sockmap vsock:SKIP
#3       sockmap_redir:OK
setup:FAIL:netns 0 nsec
#4/1     sockmap_strp/sockmap strp tcp pass:OK
#4       sockmap_strp:FAIL
#5       sockmap_listen:OK

All error logs:
#2/1     sockmap_ktls/sockmap_ktls update_fails_when_sock_has_ulp IPv4 SOCKMAP:FAIL
Summary: 3/5 PASSED, 1 SKIPPED, 2 FAILED
";

    #[test]
    fn test_progs_output_gives_one_result_per_subtest() {
        let results = parse_test_progs(TEST_PROGS);
        let names: Vec<(&str, Verdict)> = results.iter().map(|r| (r.name.as_str(), r.status)).collect();
        assert_eq!(
            names,
            [
                ("sockmap_basic/sockmap create_update_free", Verdict::Passed),
                ("sockmap_basic/sockhash create_update_free", Verdict::Passed),
                ("sockmap_ktls/sockmap_ktls update_fails_when_sock_has_ulp IPv4 SOCKMAP", Verdict::Failed),
                // test_progs gives two subtests one name: the second is told apart by its number.
                ("sockmap_ktls/sockmap_ktls update_fails_when_sock_has_ulp IPv4 SOCKMAP #3", Verdict::Failed),
                ("sockmap_redir/hash sk_skb-to-ingress v_seq   v_str", Verdict::Passed),
                ("sockmap_redir/sockmap vsock", Verdict::Skipped),
                ("sockmap_strp/sockmap strp tcp pass", Verdict::Passed),
                // Failed though every subtest passed: its setup failed, and that is a result too.
                ("sockmap_strp (outside its subtests)", Verdict::Failed),
                // No subtests: the test is the result.
                ("sockmap_listen", Verdict::Passed),
            ]
        );
        assert_eq!(results[2].reason.as_deref(), Some("test_sockmap_ktls_update_fails_when_sock_has_ulp:FAIL:setsockopt(TCP_ULP) unexpected error: -1 (errno 2)"));
        assert!(results.iter().all(|r| r.program == "test_progs"));
        assert_eq!(results[0].id(), "test_progs:sockmap_basic/sockmap create_update_free");
    }

    #[test]
    fn test_sockmap_output_repeated_by_its_children_counts_once() {
        let out = "# 1/ 6  sockmap::txmsg test passthrough:OK
# 2/ 6  sockmap::txmsg test redirect:OK
# 1/ 6  sockmap::txmsg test passthrough:OK
# 2/ 6  sockmap::txmsg test redirect:OK
# 3/ 2  sockmap::txmsg test redirect wait send mem:FAIL
#15/ 6 sockhash::txmsg test passthrough:OK
Pass: 3 Fail: 1
";
        let results = parse_test_sockmap(out);
        let names: Vec<(&str, Verdict)> = results.iter().map(|r| (r.name.as_str(), r.status)).collect();
        assert_eq!(
            names,
            [
                ("sockmap::txmsg test passthrough", Verdict::Passed),
                ("sockmap::txmsg test redirect", Verdict::Passed),
                ("sockmap::txmsg test redirect wait send mem", Verdict::Failed),
                ("sockhash::txmsg test passthrough", Verdict::Passed),
            ]
        );
    }

    fn manifest(tests: &[&str]) -> BuildManifest {
        BuildManifest {
            key: "k".into(),
            source: "linux-source-7.3=7.3.4".into(),
            clang: "clang 19".into(),
            btf_from: "debian-7.3".into(),
            build_seconds: 1.0,
            tests: tests.iter().map(|t| t.to_string()).collect(),
            not_built: vec![NotBuilt { test: "sockmap_strp".into(), reason: "error: x".into() }],
            test_sockmap: true,
            harness_changes: vec![],
            watchdog: true,
            test_sockmap_ktls: false,
        }
    }

    #[test]
    fn a_test_the_kernel_cannot_run_is_skipped_with_the_missing_symbol_never_run() {
        let no_tls = KernelConfig::parse("CONFIG_BPF=y\n# CONFIG_TLS is not set\n");
        let p = plan(&manifest(&["sockmap_basic", "sockmap_ktls"]), &no_tls, false, None);
        assert_eq!(p.test_progs, ["sockmap_basic"]);
        assert_eq!(p.denied, ["sockmap_ktls"]);
        assert!(p.test_sockmap);
        let skipped: Vec<(&str, &str)> = p.skipped.iter().map(|r| (r.name.as_str(), r.reason.as_deref().unwrap_or(""))).collect();
        assert_eq!(skipped[0].0, "sockmap_strp");
        assert!(skipped[0].1.starts_with("not built with clang-19"), "{skipped:?}");
        assert_eq!(skipped[1].0, "sockmap_ktls");
        assert!(skipped[1].1.contains("CONFIG_TLS"), "{skipped:?}");
        // A module does not count: the lab boots a source build without its modules.
        let tls_module = KernelConfig::parse("CONFIG_TLS=m\n");
        assert_eq!(plan(&manifest(&["sockmap_ktls"]), &tls_module, false, None).denied, ["sockmap_ktls"]);
        // A prebuilt image boots with its modules: there a module is enough.
        assert_eq!(plan(&manifest(&["sockmap_ktls"]), &tls_module, true, None).test_progs, ["sockmap_ktls"]);
        let tls = KernelConfig::parse("CONFIG_TLS=y\n");
        assert_eq!(plan(&manifest(&["sockmap_ktls"]), &tls, false, None).test_progs, ["sockmap_ktls"]);
    }

    #[test]
    fn the_filter_selects_a_test_a_subtest_or_test_sockmap() {
        let config = KernelConfig::parse("CONFIG_TLS=y\n");
        let m = manifest(&["sockmap_basic", "sockmap_listen"]);
        let p = plan(&m, &config, false, Some("sockmap_basic/sockmap recover"));
        assert_eq!((p.test_progs.as_slice(), p.test_sockmap), (["sockmap_basic/sockmap recover".to_string()].as_slice(), false));
        let p = plan(&m, &config, false, Some("listen"));
        assert_eq!(p.test_progs, ["sockmap_listen"]);
        let p = plan(&m, &config, false, Some("test_sockmap"));
        assert!(p.test_progs.is_empty() && p.test_sockmap && p.skipped.is_empty());
    }

    #[test]
    fn a_program_that_dies_or_exits_non_zero_without_a_failure_is_a_run_problem() {
        let p = Plan { test_progs: vec!["sockmap_basic".into()], test_sockmap: true, ..Plan::default() };
        let out = format!("{MARK} begin test_progs\n#1/1     sockmap_basic/a:OK\n\n{MARK} end test_progs 255\n{MARK} begin test_sockmap\n# 1/ 6  sockmap::x:OK\n");
        let (results, problems) = collect(&out, &p);
        assert_eq!(results.len(), 2);
        assert!(problems[0].starts_with("test_progs exited 255 with no failed test"), "{problems:?}");
        assert!(problems[1].starts_with("test_sockmap died before its end"), "{problems:?}");
        let (_, problems) = collect("", &p);
        assert_eq!(problems, ["test_progs never started", "test_sockmap never started"]);
    }

    #[test]
    fn the_guest_script_denies_what_the_kernel_lacks_and_marks_each_program() {
        let p = Plan { test_progs: vec!["sockmap_basic".into()], denied: vec!["sockmap_ktls".into()], watchdog: true, ..Plan::default() };
        let script = guest_script(Path::new("/c/out"), Path::new("/r"), &p);
        assert!(script.contains("cp -a /c/out $W"), "{script}");
        assert!(script.contains("./test_progs -w 120 -J /r/test_progs.json -t sockmap_basic -d sockmap_ktls 2>&1"), "{script}");
        assert!(script.contains(&format!("echo \"{MARK} end test_progs $c\"")), "{script}");
        assert!(!script.contains("test_sockmap"), "{script}");
    }

    #[test]
    fn an_oops_is_placed_in_the_program_and_after_the_test_it_hit() {
        let out = format!("{MARK} begin test_sockmap\n# 5/ 6  sockmap::txmsg test ingress redirect:OK\n\n{MARK} end test_sockmap 137\n");
        let console = "BUG: kernel NULL pointer dereference\nCPU: 0 UID: 0 PID: 380 Comm: test_sockmap Not tainted 6.12.118 #1\n";
        assert_eq!(running_when(&out, console), "while test_sockmap ran, after `# 5/ 6  sockmap::txmsg test ingress redirect:OK`");
        let unfinished = format!("{MARK} begin test_progs\n");
        assert_eq!(running_when(&unfinished, ""), "while test_progs ran, before its first result");
    }

    #[test]
    fn an_old_test_sockmap_leaves_out_its_ktls_tests_on_a_kernel_without_tls() {
        let m = BuildManifest { test_sockmap_ktls: true, ..manifest(&["sockmap_basic"]) };
        let p = plan(&m, &KernelConfig::parse(""), false, None);
        assert_eq!(p.sockmap_blacklist, ["ktls", "txmsg test skb"]);
        assert!(guest_script(Path::new("/o"), Path::new("/r"), &p).contains("stdbuf -oL ./test_sockmap -b 'ktls,txmsg test skb'"));
        assert!(p.skipped.iter().any(|r| r.program == "test_sockmap" && r.reason.as_deref().unwrap_or("").contains("CONFIG_TLS")));
        assert!(plan(&m, &KernelConfig::parse("CONFIG_TLS=y\n"), false, None).sockmap_blacklist.is_empty());
    }

    #[test]
    fn skeletons_and_compiler_errors_are_read_from_the_sources_and_the_log() {
        let src = "#include \"test_progs.h\"\n#include \"test_sockmap_listen.skel.h\"\n#include \"sockmap_helpers.h\"\n";
        assert_eq!(skeletons(src), ["test_sockmap_listen"]);
        let log = "  CLNG-BPF x\nprogs/test_sockmap_listen.c:12:3: error: use of undeclared identifier 'x'\nother.c:1: error: y\n";
        assert_eq!(first_error(log, "sockmap_listen", &["test_sockmap_listen".into()]).unwrap(), "progs/test_sockmap_listen.c:12:3: error: use of undeclared identifier 'x'");
        assert_eq!(first_error(log, "sockmap_basic", &[]), None);
    }
}

#[cfg(test)]
mod judge_tests {
    use super::*;

    fn report(kernel: &str, results: &[(&str, Verdict)], guest: serde_json::Value) -> SelftestsReport {
        let results: Vec<TestResult> = results.iter().map(|(n, v)| TestResult { program: "test_progs".into(), name: n.to_string(), status: *v, reason: Some(format!("{n}:FAIL:x")) }).collect();
        SelftestsReport {
            kernel: kernel.into(),
            run: String::new(),
            release: "7.3.4".into(),
            accel: "tcg".into(),
            guest,
            guest_seconds: 1.0,
            build: BuildManifest { key: String::new(), source: String::new(), clang: String::new(), btf_from: String::new(), build_seconds: 0.0, tests: vec![], not_built: vec![], test_sockmap: true, harness_changes: vec![], watchdog: true, test_sockmap_ktls: false },
            totals: Totals::of(&results),
            results,
            problems: vec![],
        }
    }

    #[test]
    fn a_mutant_is_caught_only_by_a_test_that_passes_on_its_control() {
        let exited = serde_json::json!({"kind": "exited", "code": 1});
        let control = report("base", &[("a", Verdict::Passed), ("b", Verdict::Failed), ("c", Verdict::Passed)], exited.clone());
        let mutant = report("m", &[("a", Verdict::Passed), ("b", Verdict::Failed), ("c", Verdict::Failed)], exited.clone());
        let v = judge(Ok(&mutant), Ok(&control));
        assert_eq!((v.caught, v.caught_by.as_slice()), (Some(true), ["test_progs:c".to_string()].as_slice()));
        assert_eq!(v.control, "base: 2 passed, 1 failed, 0 skipped");
        // b fails on the control too: not a catch.
        let only_b = report("m", &[("a", Verdict::Passed), ("b", Verdict::Failed), ("c", Verdict::Passed)], exited.clone());
        assert_eq!(judge(Ok(&only_b), Ok(&control)).caught, Some(false));
        // A panic while they ran is a catch; a control that did not run leaves no verdict.
        let panicked = report("m", &[("a", Verdict::Passed)], serde_json::json!({"kind": "panicked", "line": "Kernel panic"}));
        assert_eq!(judge(Ok(&panicked), Ok(&control)).caught, Some(true));
        // An oops the control has too is no catch; the control's tests still judge the mutant's.
        let oopsed = serde_json::json!({"kind": "oopsed", "line": "BUG: x", "code": 0});
        let oopsing_control = report("base", &[("a", Verdict::Passed), ("c", Verdict::Passed)], oopsed.clone());
        assert_eq!(judge(Ok(&report("m", &[("a", Verdict::Passed), ("c", Verdict::Passed)], oopsed.clone())), Ok(&oopsing_control)).caught, Some(false));
        assert_eq!(judge(Ok(&report("m", &[("a", Verdict::Passed), ("c", Verdict::Failed)], oopsed)), Ok(&oopsing_control)).caught_by, ["test_progs:c"]);
        assert_eq!(judge(Ok(&mutant), Err("build failed")).caught, None);
        assert_eq!(judge(Err("boot failed"), Ok(&control)).caught, None);
    }
}
