//! Build: definition → source tree → patches → config → `make` → cache entry.
//!
//! Two keys: the *input key* (source identity, patch and fragment contents, toolchain) is cheap and
//! lets an unchanged definition hit the cache without unpacking anything; the *entry key* hashes the
//! final `.config` instead of the fragments, so two definitions that configure to the same kernel
//! share one entry.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache, Entry, KeyHasher, Manifest};
use crate::definition::{Definition, KernelsDir};
use crate::progress::Step;
use crate::{kconfig, patches, process, source};

/// Bump when the way the lab builds changes, so old entries stop matching.
const RECIPE: &str = "sockmap-lab build recipe 1: tinyconfig + fragments, make bzImage";

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub jobs: usize,
    /// Rebuild even when the cache has the kernel.
    pub force: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        BuildOptions { jobs: cores + 1, force: false }
    }
}

#[derive(Debug, Clone)]
pub struct Built {
    pub entry: Entry,
    /// True when nothing was compiled.
    pub cached: bool,
}

/// The toolchain versions that go into the keys: a compiler or pahole upgrade changes the kernel.
fn toolchain() -> String {
    let first_line = |prog: &str, arg: &str| {
        process::output(prog, &[arg]).map(|o| o.lines().next().unwrap_or("").to_string()).unwrap_or_else(|_| format!("{prog}: none"))
    };
    format!("{}; pahole {}", first_line("gcc", "--version"), first_line("pahole", "--version"))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Build (or find in the cache) the kernel a definition describes.
pub fn build(def: &Definition, kernels: &KernelsDir, cache: &Cache, opts: &BuildOptions) -> anyhow::Result<Built> {
    let step = Step::start(&format!("{}: resolving source", def.name));
    let resolved = source::resolve(&def.source, cache)?;
    step.finish(&resolved.identity);
    if def.source.is_prebuilt() {
        return unpack_prebuilt(def, &resolved, cache);
    }

    let compiler = toolchain();
    let fragments = kconfig::fragments(&kernels.dir, def);
    let tree_key = tree_key(def, &resolved, &compiler, &fragments)?;
    let series = AppliedPatch::read_all(&def.patches)?;
    let mut input = KeyHasher::default();
    input.part("tree", tree_key.as_bytes());
    for p in &series {
        input.part("patch", p.sha256.as_bytes());
    }
    let input_key = input.finish();
    if !opts.force {
        if let Some(entry) = cache.get_by_input(&input_key) {
            return Ok(Built { entry, cached: true });
        }
    }

    let work = cache.path("work").join(format!("{}-{}", slug(&resolved.identity), &tree_key[..12]));
    std::fs::create_dir_all(&work)?;
    let _lock = cache::lock(&work.join("lock"))?;
    let tree = work.join("linux");
    let log = cache.path("logs").join(format!("{}-{}.log", def.name, now_unix()));
    let mut state = WorkState::load(&work);
    if !(tree.join(".config").is_file() && state.tree_key == tree_key) {
        state = unpack(def, &resolved, &work, &tree, &tree_key)?;
    }
    if state.applied != series {
        switch_patches(def, &work, &tree, &mut state, &series)?;
    }
    if !state.configured {
        let step = Step::start(&format!("{}: configuring", def.name));
        kconfig::configure(&tree, &fragments, def.profile, &log)?;
        step.finish("every required symbol is set");
        state.configured = true;
        state.save(&work)?;
    }

    let config_text = std::fs::read(tree.join(".config"))?;
    let mut entry_key = KeyHasher::default();
    entry_key.part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).part("compiler", compiler.as_bytes());
    for p in &series {
        entry_key.part("patch", p.sha256.as_bytes());
    }
    entry_key.part("config", &config_text);
    let key = entry_key.finish();
    if !opts.force {
        if let Some(entry) = cache.get(&key) {
            cache.record_input(&input_key, &key)?;
            return Ok(Built { entry, cached: true });
        }
    }

    let took = compile(def, &tree, cache, opts, &log)?;
    let entry = install(def, &resolved, &compiler, &key, &tree, took, cache)?;
    cache.record_input(&input_key, &key)?;
    Ok(Built { entry, cached: false })
}

/// The tree key covers what a build tree is made of apart from patches: definitions that differ
/// only in their patch series (a kernel and its mutants) share one tree and rebuild incrementally.
fn tree_key(def: &Definition, resolved: &source::ResolvedSource, compiler: &str, fragments: &[PathBuf]) -> anyhow::Result<String> {
    let mut tree_hash = KeyHasher::default();
    tree_hash.part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).part("compiler", compiler.as_bytes());
    tree_hash.part("profile", def.profile.as_str().as_bytes());
    for f in fragments {
        tree_hash.part("fragment", &std::fs::read(f).with_context(|| format!("reading config fragment {}", f.display()))?);
    }
    Ok(tree_hash.finish())
}

/// A fresh build tree from the source, nothing applied or configured yet.
fn unpack(def: &Definition, resolved: &source::ResolvedSource, work: &Path, tree: &Path, tree_key: &str) -> anyhow::Result<WorkState> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).with_context(|| format!("clearing the old build tree {}", tree.display()))?;
    }
    let step = Step::start(&format!("{}: unpacking {}", def.name, def.source.describe()));
    source::extract(resolved, tree)?;
    step.finish("done");
    let state = WorkState { tree_key: tree_key.to_string(), applied: vec![], configured: false };
    state.save(work)?;
    Ok(state)
}

/// The built kernel into the cache under `key`, with its manifest.
fn install(def: &Definition, resolved: &source::ResolvedSource, compiler: &str, key: &str, tree: &Path, took: Duration, cache: &Cache) -> anyhow::Result<Entry> {
    let release = process::output("make", &["-s", "-C", &tree.display().to_string(), "kernelrelease"])?;
    cache.insert(key, |staging| {
        std::fs::copy(tree.join("arch/x86/boot/bzImage"), staging.join("bzImage")).context("copying bzImage")?;
        std::fs::copy(tree.join(".config"), staging.join("config"))?;
        // vmlinux carries the symbols and BTF that tracing and crash analysis want on the host.
        let vmlinux = tree.join("vmlinux");
        let has_vmlinux = vmlinux.is_file() && std::fs::copy(&vmlinux, staging.join("vmlinux")).is_ok();
        Ok(Manifest {
            key: key.to_string(),
            definition: def.name.clone(),
            release: release.clone(),
            source: resolved.identity.clone(),
            patches: def.patches.iter().map(|p| file_name(p)).collect(),
            compiler: compiler.to_string(),
            prebuilt: false,
            kernel_image: "bzImage".into(),
            vmlinux: has_vmlinux.then(|| "vmlinux".to_string()),
            config: "config".into(),
            created_unix: now_unix(),
            build_seconds: took.as_secs_f64(),
        })
    })
}

/// A patch as applied to a build tree: its name and a hash of its code ([`patches::code_digest`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AppliedPatch {
    name: String,
    sha256: String,
    #[serde(skip)]
    path: PathBuf,
}

impl PartialEq for AppliedPatch {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.sha256 == other.sha256
    }
}

impl AppliedPatch {
    fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<AppliedPatch>> {
        paths
            .iter()
            .map(|p| {
                Ok(AppliedPatch { name: file_name(p), sha256: patches::code_digest(p)?, path: p.clone() })
            })
            .collect()
    }
}

/// What a kept build tree holds: which tree it is, which patches are on it, whether it is configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct WorkState {
    tree_key: String,
    applied: Vec<AppliedPatch>,
    configured: bool,
}

impl WorkState {
    fn load(work: &Path) -> WorkState {
        std::fs::read_to_string(work.join("state.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    fn save(&self, work: &Path) -> anyhow::Result<()> {
        let tmp = work.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(tmp, work.join("state.json"))?;
        Ok(())
    }
}

/// Take the tree from its current patches to `wanted`: reverse what is applied (from the copies
/// kept at apply time, since the user may have edited the originals), then apply the new series.
/// Reverting and patching give the touched files fresh mtimes, so make rebuilds exactly those.
fn switch_patches(def: &Definition, work: &Path, tree: &Path, state: &mut WorkState, wanted: &[AppliedPatch]) -> anyhow::Result<()> {
    let kept = work.join("applied");
    if !state.applied.is_empty() {
        let step = Step::start(&format!("{}: reverting {} patch(es) of the previous build", def.name, state.applied.len()));
        let copies: Vec<PathBuf> = state.applied.iter().enumerate().map(|(i, p)| kept.join(format!("{i:04}-{}", p.name))).collect();
        if let Err(e) = patches::revert(tree, &copies) {
            // A tree we cannot bring back to pristine is rebuilt from scratch next time.
            *state = WorkState::default();
            state.save(work)?;
            return Err(e.context("the kept build tree could not be reverted; it will be unpacked afresh on the next build"));
        }
        step.finish("reverted");
    }
    state.applied.clear();
    state.configured = false;
    state.save(work)?;
    let _ = std::fs::remove_dir_all(&kept);
    if wanted.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&kept)?;
    let step = Step::start(&format!("{}: applying {} patch(es)", def.name, wanted.len()));
    let paths: Vec<PathBuf> = wanted.iter().map(|p| p.path.clone()).collect();
    patches::apply(tree, &paths)?;
    for (i, p) in wanted.iter().enumerate() {
        std::fs::copy(&p.path, kept.join(format!("{i:04}-{}", p.name)))?;
    }
    state.applied = wanted.to_vec();
    state.save(work)?;
    step.finish("applied");
    Ok(())
}

fn slug(identity: &str) -> String {
    identity.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).take(40).collect()
}

/// Whether to compile through ccache. A miss costs an extra preprocessor pass (measured: ~15-20% of
/// a cold kernel build on 2 cores), so the very first build on a machine, with nothing to hit, goes
/// without it; every later build uses it and fills it. `LAB_CCACHE=0|1` forces the choice.
/// The answer is the ccache binary to compile through, if any.
fn use_ccache(ccache_dir: &Path) -> Option<PathBuf> {
    let installed = process::output("sh", &["-c", "command -v ccache"]).ok().map(|p| PathBuf::from(p.trim()));
    match std::env::var("LAB_CCACHE").as_deref() {
        Ok("0") => None,
        Ok("1") => installed,
        _ => installed.filter(|_| ccache_dir.is_dir()),
    }
}

/// `make bzImage`, through ccache when it can pay off.
fn compile(def: &Definition, tree: &Path, cache: &Cache, opts: &BuildOptions, log: &Path) -> anyhow::Result<Duration> {
    let args: Vec<String> = vec![format!("-j{}", opts.jobs), "bzImage".into()];
    let ccache_dir = std::env::var_os("CCACHE_DIR").map(PathBuf::from).unwrap_or_else(|| cache.path("ccache"));
    let ccache = use_ccache(&ccache_dir);
    let mut expr = process::command("make", &args).dir(tree);
    if let Some(binary) = &ccache {
        // ccache goes in front of gcc on PATH rather than into CC: Kbuild records every object's
        // command line and rebuilds an object whose command changed, so `CC=ccache gcc` after a
        // build without ccache recompiled the whole kept tree. On PATH, the command stays `gcc ...`.
        let bin = masquerade_dir(cache, binary)?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))?;
        // Debug info embeds the build directory, so ccache keys on it by default; without that, a
        // hit from another tree (another profile's, a fresh unpack) is still a valid object for the lab.
        expr = expr
            .env("PATH", path)
            .env("CCACHE_DIR", &ccache_dir)
            .env("CCACHE_NOHASHDIR", "1")
            .env("CCACHE_BASEDIR", tree);
    }
    let step = Step::start(&format!("{}: compiling (make -j{}{})", def.name, opts.jobs, if ccache.is_some() { ", ccache" } else { "" }));
    let mut objects = 0usize;
    let mut last = Instant::now();
    let result = process::run_logged(expr, log, |line| {
        let line = line.trim_start();
        if line.starts_with("CC ") || line.starts_with("AS ") || line.starts_with("LD ") {
            objects += 1;
            step.message(&format!("{objects} objects; {line}"));
            step.heartbeat(Duration::from_secs(30), &mut last, &format!("{objects} objects built"));
        }
    });
    if let Err(e) = result {
        drop(step);
        return Err(e.context(format!("building {} failed; the cache was not touched", def.name)));
    }
    // From now on this machine has something to build on; later builds go through ccache.
    let _ = std::fs::create_dir_all(&ccache_dir);
    Ok(step.finish(&format!("{objects} objects")))
}

/// A folder whose `gcc` is ccache (ccache's masquerade mode: it runs the next `gcc` on PATH).
fn masquerade_dir(cache: &Cache, ccache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.path("ccache-bin");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("gcc");
    if std::fs::read_link(&link).ok().as_deref() != Some(ccache) {
        // Replaced atomically: a concurrent build never sees the link missing.
        let tmp = dir.join(format!("gcc.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(ccache, &tmp)?;
        std::fs::rename(&tmp, &link)?;
    }
    Ok(dir)
}

/// A prebuilt Debian image: unpack the `.deb` into a cache entry, modules and all.
fn unpack_prebuilt(def: &Definition, resolved: &source::ResolvedSource, cache: &Cache) -> anyhow::Result<Built> {
    let key = KeyHasher::default().part("prebuilt", resolved.identity.as_bytes()).finish();
    if let Some(entry) = cache.get(&key) {
        return Ok(Built { entry, cached: true });
    }
    let step = Step::start(&format!("{}: unpacking {}", def.name, file_name(&resolved.origin)));
    let entry = cache.insert(&key, |staging| {
        let release = source::unpack_image(&resolved.origin, staging)?;
        let config = format!("boot/config-{release}");
        let parsed = kconfig::KernelConfig::parse(&std::fs::read_to_string(staging.join(&config)).unwrap_or_default());
        kconfig::verify(&parsed, def.profile, true, &PathBuf::from(&config))?;
        Ok(Manifest {
            key: key.clone(),
            definition: def.name.clone(),
            release: release.clone(),
            source: resolved.identity.clone(),
            patches: vec![],
            compiler: "debian".into(),
            prebuilt: true,
            kernel_image: format!("boot/vmlinuz-{release}"),
            vmlinux: None,
            config,
            created_unix: now_unix(),
            build_seconds: 0.0,
        })
    })?;
    step.finish(&entry.manifest.release);
    Ok(Built { entry, cached: false })
}
