//! Kernel sources: what a definition's source *is* (a cheap, stable identity for the cache key) and
//! how to lay it out as a tree the lab may patch and build. The user's own trees are only read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apt::{find_deb, AptView, IMAGE_PARTS};
use crate::cache::Cache;
use crate::definition::Source;
use crate::process;

/// A source pinned down: `identity` changes exactly when the source's content does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResolvedSource {
    pub identity: String,
    /// What to unpack: a tarball or a `.deb`; for git, the repository.
    pub origin: PathBuf,
    /// For git sources, the commit.
    pub commit: Option<String>,
}

/// Pin a source, installing or downloading it first when needed.
pub fn resolve(source: &Source, cache: &Cache) -> anyhow::Result<ResolvedSource> {
    match source {
        Source::DebianSource { package } if host_knows(package) => {
            let version = ensure_installed(package)?;
            let tarball = debian_source_tarball(package)?;
            Ok(ResolvedSource { identity: format!("{package}={version}"), origin: tarball, commit: None })
        }
        Source::DebianSource { package } => source_from_apt_view(package, cache),
        Source::Git { path, rev } => {
            if !path.join(".git").exists() && !path.join("HEAD").exists() {
                bail!("git source {}: not a git repository", path.display());
            }
            let commit = process::output("git", &["-C", &path.display().to_string(), "rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])
                .with_context(|| format!("git source {}: revision `{rev}` does not name a commit", path.display()))?;
            Ok(ResolvedSource { identity: format!("git:{commit}"), origin: path.clone(), commit: Some(commit) })
        }
        Source::TarballPath { path, sha256 } => {
            anyhow::ensure!(path.is_file(), "tarball {} does not exist", path.display());
            let actual = sha256_file(path)?;
            if let Some(expected) = sha256 {
                anyhow::ensure!(
                    &actual == expected,
                    "tarball {}: sha256 is {actual}, the definition expects {expected}",
                    path.display()
                );
            }
            Ok(ResolvedSource { identity: format!("tarball:sha256:{actual}"), origin: path.clone(), commit: None })
        }
        Source::TarballUrl { url, sha256 } => {
            let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("source.tar");
            let dest = cache.path("downloads").join(format!("{}-{name}", &sha256[..16]));
            if !dest.is_file() || sha256_file(&dest)? != *sha256 {
                let partial = dest.with_extension("partial");
                process::output("curl", &["-fsSL", "-o", &partial.display().to_string(), url])
                    .with_context(|| format!("downloading {url}"))?;
                let actual = sha256_file(&partial)?;
                if actual != *sha256 {
                    let _ = std::fs::remove_file(&partial);
                    bail!("tarball {url}: sha256 is {actual}, the definition expects {sha256}");
                }
                std::fs::rename(&partial, &dest)?;
            }
            Ok(ResolvedSource { identity: format!("tarball:sha256:{sha256}"), origin: dest, commit: None })
        }
        Source::DebianImage { package } => {
            let deb = download_deb(package, cache)?;
            for part in image_parts(&deb)? {
                download_deb(&part, cache)?;
            }
            let version = process::output("dpkg-deb", &["-f", &deb.display().to_string(), "Version"])?;
            Ok(ResolvedSource { identity: format!("{package}={version}"), origin: deb, commit: None })
        }
    }
}

/// Lay the source out at `dest` (which must not exist yet) as a kernel tree.
pub fn extract(resolved: &ResolvedSource, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    let tar_into = |input: duct::Expression| -> anyhow::Result<()> {
        input
            .pipe(duct::cmd!("tar", "-x", "--strip-components=1", "-C", dest))
            .stderr_capture()
            .run()
            .with_context(|| format!("unpacking {} into {}", resolved.origin.display(), dest.display()))?;
        Ok(())
    };
    match &resolved.commit {
        Some(commit) => {
            // An archive of the commit, not a checkout: the user's index, worktree and HEAD stay untouched.
            tar_into(duct::cmd!("git", "-C", &resolved.origin, "archive", "--format=tar", "--prefix=linux/", commit))?
        }
        None => duct::cmd!("tar", "-xf", &resolved.origin, "--strip-components=1", "-C", dest)
            .stderr_capture()
            .run()
            .map(|_| ())
            .with_context(|| format!("unpacking {} into {}", resolved.origin.display(), dest.display()))?,
    }
    anyhow::ensure!(
        dest.join("Makefile").is_file() && dest.join("scripts/kconfig").is_dir(),
        "{} does not unpack to a kernel tree (no top-level Makefile and scripts/kconfig)",
        resolved.origin.display()
    );
    Ok(())
}

/// Install a Debian package if it is missing; return its installed version.
fn ensure_installed(package: &str) -> anyhow::Result<String> {
    let installed = |pkg: &str| -> Option<String> {
        let out = process::output("dpkg-query", &["-W", "-f", "${Status}|${Version}", pkg]).ok()?;
        let (status, version) = out.split_once('|')?;
        status.ends_with("installed").then(|| version.to_string())
    };
    if let Some(v) = installed(package) {
        return Ok(v);
    }
    eprintln!("lab: installing {package} with apt-get");
    let status = std::process::Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    anyhow::ensure!(status.success(), "`apt-get install {package}` failed (run as root, or install it yourself)");
    installed(package).with_context(|| format!("{package} is still not installed after apt-get"))
}

fn debian_source_tarball(package: &str) -> anyhow::Result<PathBuf> {
    let files = process::output("dpkg-query", &["-L", package])?;
    files
        .lines()
        .map(PathBuf::from)
        .find(|p| p.starts_with("/usr/src") && p.to_string_lossy().contains(".tar"))
        .with_context(|| format!("{package} is installed but ships no tarball under /usr/src"))
}

/// Whether the host's own apt can install `package` (or has it): bookworm's kernels come from there.
fn host_knows(package: &str) -> bool {
    process::output("apt-cache", &["policy", package])
        .is_ok_and(|p| p.lines().any(|l| l.trim_start().starts_with("Candidate:") && !l.contains("(none)")))
}

/// A source package the host's suites do not carry (7.x): downloaded through the lab's apt view and
/// unpacked under the cache, never installed on the host.
fn source_from_apt_view(package: &str, cache: &Cache) -> anyhow::Result<ResolvedSource> {
    let view = AptView::open(cache)?;
    let deb = view.download(package, &cache.path("downloads"))?;
    let version = process::output("dpkg-deb", &["-f", &deb.display().to_string(), "Version"])?;
    let unpacked = cache.path("sources").join(format!("{package}_{version}"));
    if !unpacked.join("usr/src").is_dir() {
        let staging = unpacked.with_extension("partial");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        process::output("dpkg", &["-x", &deb.display().to_string(), &staging.display().to_string()])
            .with_context(|| format!("unpacking {}", deb.display()))?;
        std::fs::rename(&staging, &unpacked)?;
    }
    let tarball = std::fs::read_dir(unpacked.join("usr/src"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".tar"))
        .with_context(|| format!("{} ships no tarball under usr/src", deb.display()))?;
    Ok(ResolvedSource { identity: format!("{package}={version}"), origin: tarball, commit: None })
}

/// `apt-get download` a package into the cache (once) and return the `.deb`: from the host's apt when
/// it knows the package, otherwise from the lab's apt view (trixie, trixie-backports, sid images).
fn download_deb(package: &str, cache: &Cache) -> anyhow::Result<PathBuf> {
    let dir = cache.path("downloads");
    if !host_knows(package) {
        return AptView::open(cache)?.download(package, &dir);
    }
    let find = || find_deb(&dir, &format!("{package}_"));
    if let Some(deb) = find() {
        return Ok(deb);
    }
    eprintln!("lab: downloading {package} with apt-get download");
    let out = std::process::Command::new("apt-get")
        .args(["download", package])
        .current_dir(&dir)
        .output()
        .context("cannot run apt-get")?;
    if !out.status.success() {
        bail!(
            "`apt-get download {package}` failed: {}\n(is the package name right? `apt-cache search linux-image` lists what apt knows)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    find().with_context(|| format!("apt-get download {package} left no .deb in {}", dir.display()))
}

/// Since 7.x Debian's `linux-image-*` is a package of links: the kernel is in `linux-binary-*`, the
/// modules in `linux-modules-*` and the config in `linux-base-*`, each pinned to the image's version
/// by its Depends, and all under usr/lib/modules/RELEASE/ instead of boot/.
fn image_parts(deb: &Path) -> anyhow::Result<Vec<String>> {
    let depends = process::output("dpkg-deb", &["-f", &deb.display().to_string(), "Depends"])?;
    Ok(parts_in_depends(&depends))
}

fn parts_in_depends(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| IMAGE_PARTS.iter().any(|p| name.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// Unpack a prebuilt image package (and, for 7.x, its binary and modules packages, downloaded next
/// to it) into `dest` and return the kernel release it carries.
pub fn unpack_image(deb: &Path, dest: &Path) -> anyhow::Result<String> {
    process::output("dpkg", &["-x", &deb.display().to_string(), &dest.display().to_string()])?;
    let folder = deb.parent().unwrap_or(Path::new("."));
    for part in image_parts(deb)? {
        let part_deb = find_deb(folder, &format!("{part}_"))
            .with_context(|| format!("{} needs {part}, which is not downloaded next to it", deb.display()))?;
        process::output("dpkg", &["-x", &part_deb.display().to_string(), &dest.display().to_string()])?;
    }
    move_to_boot(dest)?;
    let boot = dest.join("boot");
    let release = std::fs::read_dir(&boot)
        .with_context(|| format!("{} has no boot/ folder", deb.display()))?
        .flatten()
        .find_map(|e| e.file_name().to_string_lossy().strip_prefix("vmlinuz-").map(str::to_string))
        .with_context(|| format!("{} ships no boot/vmlinuz-*", deb.display()))?;
    // Debian generates modules.dep at install time; virtme needs it to find virtio and 9p modules.
    let moddir = ["lib/modules", "usr/lib/modules"].iter().map(|d| dest.join(d)).find(|d| d.join(&release).is_dir());
    if let Some(moddir) = moddir {
        let base = moddir.parent().and_then(Path::parent).unwrap_or(dest);
        process::output("depmod", &["-b", &base.display().to_string(), &release])
            .context("depmod for the prebuilt image's modules")?;
    }
    Ok(release)
}

/// Give a 7.x layout (usr/lib/modules/RELEASE/{vmlinuz,config}) the boot/ names the lab reads.
fn move_to_boot(dest: &Path) -> anyhow::Result<()> {
    let Ok(releases) = std::fs::read_dir(dest.join("usr/lib/modules")) else { return Ok(()) };
    for dir in releases.flatten().map(|e| e.path()) {
        let release = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for (from, to) in [("vmlinuz", "vmlinuz"), ("config", "config"), ("System.map", "System.map")] {
            if dir.join(from).is_file() && !dest.join("boot").join(format!("{to}-{release}")).exists() {
                std::fs::create_dir_all(dest.join("boot"))?;
                std::fs::rename(dir.join(from), dest.join("boot").join(format!("{to}-{release}")))?;
            }
        }
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_7x_image_names_its_binary_and_modules_packages() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(parts_in_depends(depends), ["linux-base-7.3.4+deb13-amd64", "linux-binary-7.3.4+deb13-amd64", "linux-modules-7.3.4+deb13-amd64"]);
        assert!(parts_in_depends("kmod, linux-base (>= 4.3~), initramfs-tools | linux-initramfs-tool").is_empty());
    }
}
