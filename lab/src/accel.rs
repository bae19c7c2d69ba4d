//! KVM or TCG. `/dev/kvm` existing proves nothing (nested KVM on some hosts creates VMs that never
//! get past the decompressor), so the lab boots a real guest under KVM once, with a short timeout,
//! and remembers the answer for this host. `LAB_ACCEL=kvm|tcg` overrides.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::process;
use crate::vm::{self, Accel, Outcome, VmConfig};

/// How long a KVM guest gets to run `true`. A working KVM guest does it in a few seconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProbeRecord {
    host: String,
    decision: Decision,
}

/// What identifies "this host" for the cached probe: a QEMU, host kernel or CPU change re-probes.
pub fn host_fingerprint() -> String {
    let qemu = process::output("qemu-system-x86_64", &["--version"]).unwrap_or_default();
    let kernel = process::output("uname", &["-r"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(str::to_string))
        .unwrap_or_default();
    format!("{} | {kernel} | {cpu}", qemu.lines().next().unwrap_or(""))
}

fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// The decision, from its inputs; `probe` is only called when nothing else decides.
pub fn decide(
    override_: Option<&str>,
    kvm_device: bool,
    cached: Option<Decision>,
    probe: impl FnOnce() -> Decision,
) -> anyhow::Result<(Decision, bool)> {
    match override_.map(str::trim) {
        Some("kvm") => return Ok((Decision { accel: Accel::Kvm, reason: "LAB_ACCEL=kvm".into() }, false)),
        Some("tcg") => return Ok((Decision { accel: Accel::Tcg, reason: "LAB_ACCEL=tcg".into() }, false)),
        Some("") | Some("auto") | None => {}
        Some(other) => anyhow::bail!("LAB_ACCEL=`{other}` is not one of kvm, tcg, auto"),
    }
    if !kvm_device {
        return Ok((Decision { accel: Accel::Tcg, reason: "/dev/kvm is missing or not writable".into() }, false));
    }
    if let Some(d) = cached {
        return Ok((d, false));
    }
    Ok((probe(), true))
}

/// Choose the accelerator for booting `kimg`, probing (and caching) when needed.
pub fn choose(cache: &Cache, kimg: &Path, reprobe: bool) -> anyhow::Result<Decision> {
    let record_path = cache.path("accel.json");
    let host = host_fingerprint();
    let cached = if reprobe {
        None
    } else {
        std::fs::read_to_string(&record_path)
            .ok()
            .and_then(|t| serde_json::from_str::<ProbeRecord>(&t).ok())
            .filter(|r| r.host == host)
            .map(|r| r.decision)
    };
    let override_ = std::env::var("LAB_ACCEL").ok();
    let (decision, probed) = decide(override_.as_deref(), kvm_device_usable(), cached, || probe(cache, kimg))?;
    if probed {
        let record = ProbeRecord { host, decision: decision.clone() };
        let _ = std::fs::write(&record_path, serde_json::to_string_pretty(&record).unwrap_or_default());
    }
    Ok(decision)
}

/// The lab's usual VM configuration for booting `kimg`, with the accelerator chosen for this host;
/// callers adjust what they need (CPUs, writable directories...).
pub fn vm_config(cache: &Cache, name: &str, kimg: &Path, timeout: Duration) -> anyhow::Result<VmConfig> {
    let decision = choose(cache, kimg, false)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    Ok(VmConfig {
        accel: decision.accel,
        memory: "2G".into(),
        cpus: 2,
        timeout,
        silence: None,
        show_console: false,
        rwdirs: vec![],
        cwd: None,
        // The pid too: two runs of one kernel started in the same millisecond keep a log each.
        console_log: cache.path("logs").join(format!("console-{name}-{stamp}-{}.log", std::process::id())),
    })
}

/// Boot `kimg` under KVM and see whether a command runs.
fn probe(cache: &Cache, kimg: &Path) -> Decision {
    eprintln!("lab: probing whether KVM can boot a guest here (at most {}s, once per host)", PROBE_TIMEOUT.as_secs());
    let cfg = VmConfig {
        accel: Accel::Kvm,
        memory: "512M".into(),
        cpus: 1,
        timeout: PROBE_TIMEOUT,
        silence: None,
        show_console: false,
        rwdirs: vec![],
        cwd: Some("/".into()),
        console_log: cache.path("logs").join("kvm-probe-console.log"),
    };
    let decision = judge_probe(vm::run(kimg, &["true".to_string()], &cfg, |_| {}));
    eprintln!("lab: using {}: {}", decision.accel.as_str(), decision.reason);
    decision
}

/// KVM only when the probe guest ran its command and exited 0; anything else falls back to TCG,
/// with the reason (the console's last words for a failure).
fn judge_probe(result: anyhow::Result<vm::GuestRun>) -> Decision {
    let (accel, reason) = match result {
        Ok(run) => match run.outcome {
            Outcome::Exited { code: 0 } => (Accel::Kvm, format!("a KVM guest ran a command in {:.1}s", run.wall.as_secs_f64())),
            Outcome::Hung { .. } => (Accel::Tcg, format!("a KVM guest did not finish booting within {}s (nested KVM?)", PROBE_TIMEOUT.as_secs())),
            other => {
                let why = run.console.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
                (Accel::Tcg, format!("a KVM guest failed: {other:?}: {why}"))
            }
        },
        Err(e) => (Accel::Tcg, format!("the KVM probe could not run: {e:#}")),
    };
    Decision { accel, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> Decision {
        panic!("must not probe")
    }

    #[test]
    fn override_wins_without_probing() {
        let (d, probed) = decide(Some("tcg"), true, None, never).unwrap();
        assert_eq!((d.accel, probed), (Accel::Tcg, false));
        let (d, _) = decide(Some("kvm"), false, None, never).unwrap();
        assert_eq!(d.accel, Accel::Kvm);
        assert!(decide(Some("hvf"), true, None, never).unwrap_err().to_string().contains("hvf"));
    }

    #[test]
    fn no_device_means_tcg_without_probing() {
        let (d, probed) = decide(None, false, None, never).unwrap();
        assert_eq!((d.accel, probed), (Accel::Tcg, false));
    }

    #[test]
    fn a_device_that_cannot_boot_falls_back_to_tcg() {
        let failing = || Decision { accel: Accel::Tcg, reason: "hung".into() };
        let (d, probed) = decide(None, true, None, failing).unwrap();
        assert_eq!((d.accel, probed), (Accel::Tcg, true));
        let working = || Decision { accel: Accel::Kvm, reason: "ok".into() };
        assert_eq!(decide(Some("auto"), true, None, working).unwrap().0.accel, Accel::Kvm);
    }

    fn probe_run(outcome: Outcome, console: &str) -> anyhow::Result<vm::GuestRun> {
        Ok(vm::GuestRun { outcome, stdout: vec![], console: console.into(), wall: std::time::Duration::from_secs(3) })
    }

    #[test]
    fn only_a_probe_guest_that_ran_its_command_means_kvm() {
        assert_eq!(judge_probe(probe_run(Outcome::Exited { code: 0 }, "")).accel, Accel::Kvm);
        let hung = judge_probe(probe_run(Outcome::Hung { after_secs: 45, hint: None, silent_secs: None }, "Decompressing Linux..."));
        assert_eq!(hung.accel, Accel::Tcg);
        assert!(hung.reason.contains("did not finish booting"), "{}", hung.reason);
        let msr = "qemu-system-x86_64: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
        let failed = judge_probe(probe_run(Outcome::VmFailed { code: 255 }, msr));
        assert_eq!(failed.accel, Accel::Tcg);
        assert!(failed.reason.contains("kvm_buf_set_msrs"), "the reason quotes the console: {}", failed.reason);
        assert_eq!(judge_probe(probe_run(Outcome::Exited { code: 1 }, "")).accel, Accel::Tcg);
        assert_eq!(judge_probe(Err(anyhow::anyhow!("cannot start vng"))).accel, Accel::Tcg);
    }

    #[test]
    fn a_cached_answer_is_reused() {
        let cached = Decision { accel: Accel::Tcg, reason: "probed earlier".into() };
        let (d, probed) = decide(None, true, Some(cached.clone()), never).unwrap();
        assert_eq!((d, probed), (cached, false));
    }
}
