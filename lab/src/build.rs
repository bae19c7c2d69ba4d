//! Build: definition → source tree → patches → config → `make` → cache entry.
//!
//! Two keys: the *input key* (source identity, patch and fragment contents, toolchain) is cheap and
//! lets an unchanged definition hit the cache without unpacking anything; the *entry key* hashes the
//! final `.config` instead of the fragments, so two definitions that configure to the same kernel
//! share one entry.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

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
    let mut input = KeyHasher::default();
    input.part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).part("compiler", compiler.as_bytes());
    input.part("profile", def.profile.as_str().as_bytes());
    for p in &def.patches {
        input.part("patch", &std::fs::read(p).with_context(|| format!("reading patch {}", p.display()))?);
    }
    for f in &fragments {
        input.part("fragment", &std::fs::read(f).with_context(|| format!("reading config fragment {}", f.display()))?);
    }
    let input_key = input.finish();
    if !opts.force {
        if let Some(entry) = cache.get_by_input(&input_key) {
            return Ok(Built { entry, cached: true });
        }
    }

    let work = cache.path("work").join(&def.name);
    std::fs::create_dir_all(&work)?;
    let _lock = cache::lock(&work.with_extension("lock"))?;
    let tree = work.join("linux");
    let stamp = work.join("input-key");
    let log = cache.path("logs").join(format!("{}-{}.log", def.name, now_unix()));
    let reusable = tree.join(".config").is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(input_key.as_str());

    if !reusable {
        let _ = std::fs::remove_file(&stamp);
        if tree.exists() {
            std::fs::remove_dir_all(&tree).with_context(|| format!("clearing the old build tree {}", tree.display()))?;
        }
        let step = Step::start(&format!("{}: unpacking {}", def.name, def.source.describe()));
        source::extract(&resolved, &tree)?;
        step.finish("done");
        if !def.patches.is_empty() {
            let step = Step::start(&format!("{}: applying {} patch(es)", def.name, def.patches.len()));
            patches::apply(&tree, &def.patches)?;
            step.finish("applied");
        }
        let step = Step::start(&format!("{}: configuring", def.name));
        kconfig::configure(&tree, &fragments, def.profile, &log)?;
        step.finish("every required symbol is set");
        std::fs::write(&stamp, &input_key)?;
    }

    let config_text = std::fs::read(tree.join(".config"))?;
    let mut entry_key = KeyHasher::default();
    entry_key.part("recipe", RECIPE.as_bytes()).part("source", resolved.identity.as_bytes()).part("compiler", compiler.as_bytes());
    for p in &def.patches {
        entry_key.part("patch", &std::fs::read(p)?);
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
    let release = process::output("make", &["-s", "-C", &tree.display().to_string(), "kernelrelease"])?;
    let entry = cache.insert(&key, |staging| {
        std::fs::copy(tree.join("arch/x86/boot/bzImage"), staging.join("bzImage")).context("copying bzImage")?;
        std::fs::copy(tree.join(".config"), staging.join("config"))?;
        // vmlinux carries the symbols and BTF that tracing and crash analysis want on the host.
        let vmlinux = tree.join("vmlinux");
        let has_vmlinux = vmlinux.is_file() && std::fs::copy(&vmlinux, staging.join("vmlinux")).is_ok();
        Ok(Manifest {
            key: key.clone(),
            definition: def.name.clone(),
            release: release.clone(),
            source: resolved.identity.clone(),
            patches: def.patches.iter().map(|p| file_name(p)).collect(),
            compiler: compiler.clone(),
            prebuilt: false,
            kernel_image: "bzImage".into(),
            vmlinux: has_vmlinux.then(|| "vmlinux".to_string()),
            config: "config".into(),
            created_unix: now_unix(),
            build_seconds: took.as_secs_f64(),
        })
    })?;
    cache.record_input(&input_key, &key)?;
    Ok(Built { entry, cached: false })
}

/// Whether to compile through ccache. A miss costs an extra preprocessor pass (measured: ~15-20% of
/// a cold kernel build on 2 cores), so the very first build on a machine, with nothing to hit, goes
/// without it; every later build uses it and fills it. `LAB_CCACHE=0|1` forces the choice.
fn use_ccache(ccache_dir: &Path) -> bool {
    let installed = process::output("sh", &["-c", "command -v ccache"]).is_ok();
    match std::env::var("LAB_CCACHE").as_deref() {
        Ok("0") => false,
        Ok("1") => installed,
        _ => installed && ccache_dir.is_dir(),
    }
}

/// `make bzImage`, through ccache when it can pay off.
fn compile(def: &Definition, tree: &Path, cache: &Cache, opts: &BuildOptions, log: &Path) -> anyhow::Result<Duration> {
    let mut args: Vec<String> = vec![format!("-j{}", opts.jobs), "bzImage".into()];
    let ccache_dir = std::env::var_os("CCACHE_DIR").map(PathBuf::from).unwrap_or_else(|| cache.path("ccache"));
    let ccache = use_ccache(&ccache_dir);
    if ccache {
        args.push("CC=ccache gcc".into());
    }
    let expr = process::command("make", &args).dir(tree).env("CCACHE_DIR", &ccache_dir);
    let step = Step::start(&format!("{}: compiling (make -j{}{})", def.name, opts.jobs, if ccache { ", ccache" } else { "" }));
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
