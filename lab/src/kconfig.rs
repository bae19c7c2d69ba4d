//! Kernel configuration: tinyconfig, the lab's fragments merged with the kernel's own
//! `merge_config.sh`, `olddefconfig`, then a check that every symbol the lab depends on survived.
//!
//! Kconfig silently drops a requested symbol whose dependencies are not met, so the check after
//! `olddefconfig` is the only way to learn that a kernel cannot run the suite before booting it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::definition::{Definition, Profile};
use crate::process;

/// A symbol (or a set of alternatives) the lab needs, and why.
pub struct Requirement {
    pub any_of: &'static [&'static str],
    pub why: &'static str,
}

const fn req(any_of: &'static [&'static str], why: &'static str) -> Requirement {
    Requirement { any_of, why }
}

/// What every lab kernel must have, built in.
pub const REQUIRED: &[Requirement] = &[
    req(&["BPF_SYSCALL"], "the bpf() syscall"),
    req(&["BPF_JIT"], "JIT-compiled programs and BPF trampolines"),
    req(&["NET_SOCK_MSG"], "sk_msg programs and the TX redirect paths"),
    req(&["BPF_STREAM_PARSER"], "sk_skb stream parser/verdict programs (the RX paths)"),
    req(&["INET"], "TCP and UDP sockets"),
    req(&["IPV6"], "the IPv6 cases"),
    req(&["UNIX"], "AF_UNIX cases and virtme-ng itself"),
    req(&["NET_NS"], "one network namespace per case"),
    req(&["DEBUG_INFO_BTF"], "CO-RE relocations and fentry"),
    req(&["FUNCTION_TRACER"], "fentry attachment"),
    req(&["DYNAMIC_FTRACE_WITH_DIRECT_CALLS"], "BPF trampolines for fentry"),
    req(&["KPROBES"], "the kprobe fallback of the accounting probe"),
    req(&["KPROBE_EVENTS"], "attaching BPF to kprobes"),
    req(&["BPF_EVENTS"], "BPF tracing programs"),
    req(&["PERF_EVENTS"], "attaching tracing programs through perf events"),
    req(&["9P_FS", "VIRTIO_FS"], "virtme-ng's root filesystem (9p or virtiofs)"),
    req(&["NET_9P_VIRTIO", "VIRTIO_FS"], "the transport for virtme-ng's root filesystem"),
    req(&["BLOCK"], "mounting virtme-ng's root (the root-mount path needs the block layer)"),
    req(&["VIRTIO_PCI", "VIRTIO_MMIO"], "virtio devices"),
    req(&["VIRTIO_CONSOLE"], "virtme-ng's script I/O ports (command output and exit code)"),
    req(&["SERIAL_8250_CONSOLE"], "the console log the lab reads for panics and splats"),
    req(&["DEVTMPFS"], "/dev in the guest"),
    req(&["TMPFS"], "writable scratch directories in the guest"),
    req(&["ACPI"], "powering the guest off when the command ends"),
    req(&["BINFMT_SCRIPT"], "running the guest command through a shell script"),
    req(&["PROC_SYSCTL", "SYSCTL"], "/proc/sys (the accounting check reads net/core/mem_pcpu_rsv; SYSCTL from 7.x on)"),
];

/// What the debug profile adds on top.
pub const REQUIRED_DEBUG: &[Requirement] = &[
    req(&["KASAN"], "out-of-bounds and use-after-free reports"),
    req(&["PROVE_LOCKING"], "lockdep"),
    req(&["DEBUG_KMEMLEAK"], "kmemleak"),
];

/// A parsed `.config`: symbol (without `CONFIG_`) to value; unset symbols are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig(pub BTreeMap<String, String>);

impl KernelConfig {
    pub fn parse(text: &str) -> KernelConfig {
        let map = text
            .lines()
            .filter_map(|l| l.strip_prefix("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KernelConfig(map)
    }

    pub fn get(&self, symbol: &str) -> Option<&str> {
        self.0.get(symbol).map(String::as_str)
    }

    fn is_enabled(&self, symbol: &str, allow_module: bool) -> bool {
        match self.get(symbol) {
            Some("y") => true,
            Some("m") => allow_module,
            _ => false,
        }
    }
}

/// The symbols a configuration lacks, each with the reason the lab needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSymbols {
    pub config: PathBuf,
    pub missing: Vec<(String, &'static str)>,
}

impl fmt::Display for MissingSymbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the kernel config {} lacks {} symbol(s) the lab needs (after olddefconfig; a dependency is probably unmet):",
            self.config.display(),
            self.missing.len()
        )?;
        for (symbol, why) in &self.missing {
            writeln!(f, "  {symbol} is not set: needed for {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MissingSymbols {}

/// Check `config` against the lab's requirements. Prebuilt distribution kernels may have a
/// requirement as a module, which the guest loads; the lab's own builds must have it built in.
pub fn verify(config: &KernelConfig, profile: Profile, allow_module: bool, path: &Path) -> Result<(), MissingSymbols> {
    let extra: &[Requirement] = if profile == Profile::Debug { REQUIRED_DEBUG } else { &[] };
    let missing: Vec<_> = REQUIRED
        .iter()
        .chain(extra)
        .filter(|r| !r.any_of.iter().any(|s| config.is_enabled(s, allow_module)))
        .map(|r| (r.any_of.iter().map(|s| format!("CONFIG_{s}")).collect::<Vec<_>>().join(" or "), r.why))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingSymbols { config: path.to_path_buf(), missing })
    }
}

/// The fragments for a definition, in merge order: the lab's base, the profile's, the definition's.
pub fn fragments(kernels_dir: &Path, def: &Definition) -> Vec<PathBuf> {
    let config_dir = kernels_dir.join("config");
    let mut list = vec![config_dir.join("lab.config")];
    if def.profile == Profile::Debug {
        list.push(config_dir.join("debug.config"));
    }
    list.extend(def.config.iter().cloned());
    list
}

/// Symbols a fragment asked for that the final config does not have, as `CONFIG_X=wanted (got ...)`.
/// These are warnings: a user fragment may ask for a symbol that this kernel version does not know.
pub fn unmet_requests(fragment_texts: &[String], config: &KernelConfig) -> Vec<String> {
    let mut unmet = Vec::new();
    for text in fragment_texts {
        for line in text.lines() {
            let line = line.trim();
            let (symbol, wanted) = if let Some(rest) = line.strip_prefix("CONFIG_") {
                match rest.split_once('=') {
                    Some((s, v)) => (s, Some(v)),
                    None => continue,
                }
            } else if let Some(rest) = line.strip_prefix("# CONFIG_") {
                match rest.strip_suffix(" is not set") {
                    Some(s) => (s, None),
                    None => continue,
                }
            } else {
                continue;
            };
            let got = config.get(symbol);
            let matches = match wanted {
                Some("n") | None => got.is_none(),
                Some(w) => got == Some(w),
            };
            if !matches {
                unmet.push(format!("CONFIG_{symbol}={} (got {})", wanted.unwrap_or("n"), got.unwrap_or("n")));
            }
        }
    }
    unmet
}

/// Configure `tree` and return the final config. `log` collects kconfig's chatter.
pub fn configure(tree: &Path, fragments: &[PathBuf], profile: Profile, log: &Path) -> anyhow::Result<KernelConfig> {
    for f in fragments {
        anyhow::ensure!(f.is_file(), "config fragment {} does not exist", f.display());
    }
    process::run_logged(process::command("make", ["tinyconfig"]).dir(tree), log, |_| {})
        .context("`make tinyconfig` failed")?;
    let merge = tree.join("scripts/kconfig/merge_config.sh");
    anyhow::ensure!(merge.is_file(), "{} is missing: is {} a kernel tree?", merge.display(), tree.display());
    let mut args = vec!["-m".to_string(), ".config".to_string()];
    args.extend(fragments.iter().map(|f| f.display().to_string()));
    process::run_logged(process::command("sh", std::iter::once(merge.display().to_string()).chain(args)).dir(tree), log, |_| {})
        .context("merge_config.sh failed")?;
    process::run_logged(process::command("make", ["olddefconfig"]).dir(tree), log, |_| {})
        .context("`make olddefconfig` failed")?;
    let path = tree.join(".config");
    let config = KernelConfig::parse(&std::fs::read_to_string(&path).context("reading the final .config")?);

    let texts: Vec<String> = fragments.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect();
    for unmet in unmet_requests(&texts, &config) {
        eprintln!("warning: a config fragment asked for {unmet}");
    }
    verify(&config, profile, false, &path)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_config() -> String {
        REQUIRED.iter().map(|r| format!("CONFIG_{}=y\n", r.any_of[0])).collect()
    }

    #[test]
    fn a_complete_config_passes_and_every_requirement_is_enforced_on_its_own() {
        verify(&KernelConfig::parse(&full_config()), Profile::Default, false, Path::new(".config")).unwrap();
        // Not circular: each requirement, taken away alone, must fail the check and be the one named.
        for r in REQUIRED {
            let text: String = full_config().lines().filter(|l| !r.any_of.iter().any(|s| l.starts_with(&format!("CONFIG_{s}=")))).map(|l| format!("{l}\n")).collect();
            let err = verify(&KernelConfig::parse(&text), Profile::Default, false, Path::new(".config"))
                .expect_err(&format!("a config without {:?} must not pass", r.any_of));
            assert_eq!(err.missing.len(), 1, "{:?}: {err}", r.any_of);
            assert!(err.missing[0].0.contains(r.any_of[0]), "{:?}: {err}", r.any_of);
        }
    }

    #[test]
    fn each_missing_symbol_is_named_with_its_reason() {
        let text = full_config()
            .replace("CONFIG_NET_SOCK_MSG=y\n", "# CONFIG_NET_SOCK_MSG is not set\n")
            .replace("CONFIG_DEBUG_INFO_BTF=y\n", "");
        let err = verify(&KernelConfig::parse(&text), Profile::Default, false, Path::new("/t/.config")).unwrap_err();
        let names: Vec<_> = err.missing.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["CONFIG_NET_SOCK_MSG", "CONFIG_DEBUG_INFO_BTF"]);
        let text = err.to_string();
        assert!(text.contains("/t/.config"), "{text}");
        assert!(text.contains("CONFIG_NET_SOCK_MSG is not set: needed for sk_msg programs"), "{text}");
    }

    #[test]
    fn alternatives_are_accepted_and_named_together() {
        let text = full_config().replace("CONFIG_9P_FS=y\n", "CONFIG_VIRTIO_FS=y\n");
        verify(&KernelConfig::parse(&text), Profile::Default, false, Path::new(".config")).unwrap();
        let text = full_config().replace("CONFIG_9P_FS=y\n", "");
        let err = verify(&KernelConfig::parse(&text), Profile::Default, false, Path::new(".config")).unwrap_err();
        assert_eq!(err.missing[0].0, "CONFIG_9P_FS or CONFIG_VIRTIO_FS");
    }

    #[test]
    fn modules_count_only_for_prebuilt_kernels() {
        let text = full_config().replace("CONFIG_9P_FS=y", "CONFIG_9P_FS=m");
        let config = KernelConfig::parse(&text);
        assert!(verify(&config, Profile::Default, false, Path::new(".config")).is_err());
        verify(&config, Profile::Default, true, Path::new(".config")).unwrap();
    }

    #[test]
    fn debug_profile_needs_its_sanitizers() {
        let err = verify(&KernelConfig::parse(&full_config()), Profile::Debug, false, Path::new(".config")).unwrap_err();
        let names: Vec<_> = err.missing.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["CONFIG_KASAN", "CONFIG_PROVE_LOCKING", "CONFIG_DEBUG_KMEMLEAK"]);
    }

    #[test]
    fn unmet_fragment_requests_are_reported() {
        let config = KernelConfig::parse("CONFIG_A=y\nCONFIG_B=m\n");
        let unmet = unmet_requests(&["CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n".into()], &config);
        assert_eq!(unmet, ["CONFIG_B=y (got m)", "CONFIG_D=y (got n)"]);
    }

    #[test]
    fn shipped_fragments_request_every_required_symbol() {
        // Guards against someone trimming lab.config: each requirement must be asked for there
        // (or be something kconfig selects on its own, listed here).
        let implied = ["DYNAMIC_FTRACE_WITH_DIRECT_CALLS"];
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/config/lab.config")).unwrap();
        let asked = KernelConfig::parse(&text);
        for r in REQUIRED {
            assert!(
                r.any_of.iter().any(|s| asked.get(s) == Some("y") || implied.contains(s)),
                "lab.config does not ask for {:?}",
                r.any_of
            );
        }
        let debug = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/config/debug.config")).unwrap();
        let asked = KernelConfig::parse(&debug);
        for r in REQUIRED_DEBUG {
            assert!(r.any_of.iter().any(|s| asked.get(s) == Some("y")), "debug.config lacks {:?}", r.any_of);
        }
    }
}
