//! The lab's own view of Debian's archive: bookworm, trixie, trixie-backports and sid, for kernel
//! source packages and prebuilt images. It lives under the cache (`apt/`) with its own sources list,
//! package lists and archive folder, and is only ever used to *download* packages: nothing from it
//! is installed on the host, whose apt sources stay as they are (adding trixie or sid there would
//! upgrade the host).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cache::Cache;
use crate::process;

/// What a 7.x `linux-image-*` package is made of: each prefix plus the image's own suffix.
pub const IMAGE_PARTS: [&str; 3] = ["linux-binary-", "linux-modules-", "linux-base-"];

/// The suites the lab looks in, newest last. The mirror is the host's own Debian mirror.
pub const SUITES: &[&str] = &["bookworm", "trixie", "trixie-backports", "sid"];
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Package lists older than this are fetched again before a look-up.
const LISTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub struct AptView {
    dir: PathBuf,
}

/// One version of a package as the view sees it, and the suite that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub version: String,
    pub suite: String,
}

impl AptView {
    /// Open (and on first use, write) the view under the cache.
    pub fn open(cache: &Cache) -> anyhow::Result<AptView> {
        let dir = cache.path("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let view = AptView { dir };
        let list = sources_list(&host_mirror());
        if std::fs::read_to_string(view.sources()).ok().as_deref() != Some(list.as_str()) {
            std::fs::write(view.sources(), list)?;
        }
        Ok(view)
    }

    fn sources(&self) -> PathBuf {
        self.dir.join("sources.list")
    }

    /// apt's options that make it read and write only the view's files.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::sourcelist={}", self.sources().display()),
            "Dir::Etc::sourceparts=/dev/null".to_string(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "Dir::State::status=/dev/null".to_string(),
            // The lists are written as root into the cache, which apt's sandbox user may not enter.
            "APT::Sandbox::User=root".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all: Vec<String> = self.options();
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        process::output(program, &refs)
    }

    /// apt keeps the server's dates on the lists it fetches, so the view stamps its own updates.
    fn stamp(&self) -> PathBuf {
        self.dir.join("updated")
    }

    fn lists_fresh(&self) -> bool {
        let modified = std::fs::metadata(self.stamp()).and_then(|m| m.modified());
        modified.is_ok_and(|t| t.elapsed().is_ok_and(|age| age < LISTS_MAX_AGE))
    }

    /// Fetch the package lists of every suite.
    pub fn update(&self) -> anyhow::Result<()> {
        eprintln!("lab: updating the lab's apt view ({}) under {}", SUITES.join(", "), self.dir.display());
        self.run("apt-get", &["-qq", "update"]).context("apt-get update of the lab's apt view")?;
        std::fs::write(self.stamp(), b"")?;
        Ok(())
    }

    fn update_if_stale(&self) -> anyhow::Result<()> {
        if !self.lists_fresh() {
            self.update()?;
        }
        Ok(())
    }

    /// Every version of `package` the view knows, with its suite.
    pub fn versions(&self, package: &str) -> anyhow::Result<Vec<Candidate>> {
        self.update_if_stale()?;
        let policy = self.run("apt-cache", &["policy", package])?;
        Ok(parse_policy(&policy))
    }

    /// Package names that start with `prefix`.
    pub fn package_names(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        self.update_if_stale()?;
        Ok(self.run("apt-cache", &["pkgnames", prefix])?.lines().map(str::to_string).collect())
    }

    /// Debian's prebuilt 7.x images the view knows (the generic amd64 flavour), with the suite each
    /// comes from: what `lab kernels add-debian` offers beyond bookworm's 6.1 and 6.12.
    pub fn kernel_images(&self) -> anyhow::Result<Vec<KernelImage>> {
        let mut known = std::collections::BTreeSet::new();
        for prefix in IMAGE_PARTS {
            known.extend(self.package_names(&format!("{prefix}7."))?);
        }
        let mut images = Vec::new();
        for package in self.package_names("linux-image-7.")? {
            let Some(version) = image_version(&package) else { continue };
            if let Some(best) = self.versions(&package)?.into_iter().next() {
                let missing = missing_parts(&package, &known);
                images.push(KernelImage { version, package, suite: best.suite, missing });
            }
        }
        Ok(images)
    }

    /// Download the candidate version of `package` into `dir` (once) and return the `.deb`.
    pub fn download(&self, package: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        let candidates = self.versions(package)?;
        let Some(best) = candidates.first() else {
            bail!("{package}: neither the host's apt nor the lab's apt view ({}) knows it", SUITES.join(", "));
        };
        // apt names a downloaded file PACKAGE_VERSION_ARCH.deb with the version's ':' escaped.
        let stem = format!("{package}_{}_", best.version.replace(':', "%3a"));
        if let Some(deb) = find_deb(dir, &stem) {
            return Ok(deb);
        }
        eprintln!("lab: downloading {package} {} from {} (lab's apt view)", best.version, best.suite);
        let spec = format!("{package}={}", best.version);
        let mut all = self.options();
        all.extend(["download".to_string(), spec]);
        let out = std::process::Command::new("apt-get").args(&all).current_dir(dir).output().context("cannot run apt-get")?;
        if !out.status.success() {
            bail!("`apt-get download {package}` (lab's apt view) failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        find_deb(dir, &stem).with_context(|| format!("apt-get download {package} left no .deb in {}", dir.display()))
    }
}

/// A prebuilt kernel image as the view offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    pub version: String,
    pub package: String,
    pub suite: String,
    /// Parts the image depends on that the archive no longer carries (Debian's 7.0 and 7.1 images
    /// lost their linux-modules-* and linux-base-*): without its modules (9p, virtio) the image
    /// cannot boot under vng.
    pub missing: Vec<String>,
}

/// The parts of `image` (`linux-image-V-amd64`) that are not among the `known` package names.
fn missing_parts(image: &str, known: &std::collections::BTreeSet<String>) -> Vec<String> {
    let suffix = image.strip_prefix("linux-image-").unwrap_or(image);
    IMAGE_PARTS.iter().map(|p| format!("{p}{suffix}")).filter(|part| !known.contains(part)).collect()
}

/// `linux-image-7.2.12+deb13-amd64` → `7.2.12`; other flavours (cloud, rt, dbg) are not lab kernels.
fn image_version(package: &str) -> Option<String> {
    let rest = package.strip_prefix("linux-image-")?.strip_suffix("-amd64")?;
    let (version, deb) = rest.split_once('+')?;
    let numeric = version.split('.').count() == 3 && version.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numeric && deb.starts_with("deb") && deb[3..].bytes().all(|b| b.is_ascii_digit())).then(|| version.to_string())
}

/// The `.deb` in `dir` whose file name starts with `stem` (`PACKAGE_` or `PACKAGE_VERSION_`).
pub fn find_deb(dir: &Path, stem: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(stem) && n.to_string_lossy().ends_with(".deb")))
}

/// The first Debian mirror in the host's apt sources (so the view goes where the host may go).
fn host_mirror() -> String {
    let mut texts: Vec<String> = Vec::new();
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        texts.extend(dir.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()));
    }
    texts.iter().find_map(|t| mirror_in(t)).unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// A mirror URI for the main archive (not -security) in a one-line or deb822 sources text.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            let rest = l.strip_prefix("URIs:").or_else(|| l.strip_prefix("deb ")).unwrap_or("");
            rest.split_whitespace().filter(|w| w.starts_with("http")).map(str::to_string).collect::<Vec<_>>()
        })
        .find(|uri| uri.trim_end_matches('/').ends_with("/debian"))
}

fn sources_list(mirror: &str) -> String {
    SUITES
        .iter()
        .map(|s| format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {s} main\n"))
        .collect()
}

/// `apt-cache policy` output → versions (highest priority first, as apt ranks them) with their suite.
fn parse_policy(text: &str) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '*']).trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            [version, prio] if prio.parse::<i32>().is_ok() && !version.ends_with(':') => current = Some(version.to_string()),
            [prio, _uri, suite_comp, ..] if prio.parse::<i32>().is_ok() => {
                if let Some(version) = current.take() {
                    let suite = suite_comp.split('/').next().unwrap_or(suite_comp).to_string();
                    out.push(Candidate { version, suite });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lists_versions_with_their_suite() {
        let text = "linux-source-7.2:\n  Installed: (none)\n  Candidate: 7.2.13-1\n  Version table:\n     7.2.13-1 500\n        500 http://deb.debian.org/debian sid/main amd64 Packages\n     7.2.12-1~bpo13+1 100\n        100 http://deb.debian.org/debian trixie-backports/main amd64 Packages\n";
        assert_eq!(
            parse_policy(text),
            vec![
                Candidate { version: "7.2.13-1".into(), suite: "sid".into() },
                Candidate { version: "7.2.12-1~bpo13+1".into(), suite: "trixie-backports".into() },
            ]
        );
        assert!(parse_policy("N: Unable to locate package nothing\n").is_empty());
    }

    #[test]
    fn an_image_whose_modules_left_the_archive_says_what_is_missing() {
        let known: std::collections::BTreeSet<String> =
            ["linux-binary-7.0.13+deb13-amd64", "linux-binary-7.3.4+deb13-amd64", "linux-modules-7.3.4+deb13-amd64", "linux-base-7.3.4+deb13-amd64"]
                .map(String::from)
                .into();
        assert!(missing_parts("linux-image-7.3.4+deb13-amd64", &known).is_empty());
        assert_eq!(missing_parts("linux-image-7.0.13+deb13-amd64", &known), ["linux-modules-7.0.13+deb13-amd64", "linux-base-7.0.13+deb13-amd64"]);
    }

    #[test]
    fn only_generic_7x_images_are_lab_kernels() {
        assert_eq!(image_version("linux-image-7.2.12+deb13-amd64").as_deref(), Some("7.2.12"));
        assert_eq!(image_version("linux-image-7.2.13+deb14-amd64").as_deref(), Some("7.2.13"));
        for other in ["linux-image-7.2.12+deb13-cloud-amd64", "linux-image-7.2.12+deb13-amd64-dbg", "linux-image-7.2.12+deb13-rt-amd64", "linux-image-amd64"] {
            assert_eq!(image_version(other), None, "{other}");
        }
    }

    #[test]
    fn mirror_comes_from_the_host_sources_in_either_format() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(mirror_in(deb822).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(mirror_in("# deb http://old/debian x\ndeb http://m/debian/ bookworm main\n").as_deref(), Some("http://m/debian/"));
        assert_eq!(mirror_in("deb http://m/debian-security bookworm-security main\n"), None);
        let list = sources_list("http://m/debian");
        assert!(list.contains("http://m/debian sid main") && list.contains("trixie-backports main"), "{list}");
    }
}
