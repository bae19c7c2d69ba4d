//! The kernel cache, outside the clone (default `~/.cache/sockmap-lab`, `LAB_CACHE` overrides).
//!
//! Layout:
//! - `kernels/KEY/`   complete entries only: artifacts plus `manifest.json`;
//! - `index/INPUT`    maps a cheap input key (source identity, patches, fragments, toolchain) to an
//!                    entry key, so an unchanged definition is found without unpacking its source;
//! - `tmp/`           staging: an entry is assembled here and renamed into `kernels/` in one step,
//!                    so an interrupted or failed build can leave only staging debris, never a half entry;
//! - `work/NAME/`     the last build tree of each definition, kept for incremental rebuilds;
//! - `downloads/`, `logs/`, `ccache/`, `accel.json`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a cache entry holds and how it came to be.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub key: String,
    pub definition: String,
    /// `uname -r` of the kernel.
    pub release: String,
    pub source: String,
    pub patches: Vec<String>,
    pub compiler: String,
    pub prebuilt: bool,
    /// Paths relative to the entry.
    pub kernel_image: String,
    pub vmlinux: Option<String>,
    pub config: String,
    pub created_unix: u64,
    pub build_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Entry {
    pub fn kernel_image(&self) -> PathBuf {
        self.dir.join(&self.manifest.kernel_image)
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join(&self.manifest.config)
    }
}

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

/// A sha256 over labelled parts; labels keep ("ab","c") and ("a","bc") apart.
#[derive(Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn part(&mut self, label: &str, bytes: &[u8]) -> &mut Self {
        for chunk in [label.as_bytes(), bytes] {
            self.0.update((chunk.len() as u64).to_le_bytes());
            self.0.update(chunk);
        }
        self
    }
    pub fn finish(&self) -> String {
        hex::encode(self.0.clone().finalize())[..32].to_string()
    }
}

impl Cache {
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("LAB_CACHE") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".cache").join("sockmap-lab")
    }

    pub fn open_default() -> anyhow::Result<Cache> {
        Cache::open(&Cache::default_root())
    }

    /// Open (creating) a cache and sweep staging directories whose builder is gone.
    pub fn open(root: &Path) -> anyhow::Result<Cache> {
        for sub in ["kernels", "index", "tmp", "work", "downloads", "logs"] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create the cache at {}", root.display()))?;
        }
        let cache = Cache { root: root.to_path_buf() };
        cache.sweep_staging();
        Ok(cache)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    fn sweep_staging(&self) {
        let Ok(entries) = std::fs::read_dir(self.path("tmp")) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: Option<i32> = name.rsplit('.').nth(1).and_then(|p| p.parse().ok());
            // SAFETY: kill(pid, 0) only checks that the process exists.
            let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// A complete entry, if there is one for `key`.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let dir = self.path("kernels").join(key);
        let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        Some(Entry { dir, manifest })
    }

    /// The entry an input key was last resolved to, if it is still present.
    pub fn get_by_input(&self, input_key: &str) -> Option<Entry> {
        let key = std::fs::read_to_string(self.path("index").join(input_key)).ok()?;
        self.get(key.trim())
    }

    pub fn record_input(&self, input_key: &str, key: &str) -> anyhow::Result<()> {
        let dest = self.path("index").join(input_key);
        let tmp = self.path("index").join(format!(".{input_key}.{}", std::process::id()));
        std::fs::write(&tmp, key)?;
        std::fs::rename(&tmp, &dest)?;
        Ok(())
    }

    /// Build an entry: `fill` writes the artifacts into a staging directory and returns the
    /// manifest; only when it succeeds is the directory moved into place (atomically).
    pub fn insert(&self, key: &str, fill: impl FnOnce(&Path) -> anyhow::Result<Manifest>) -> anyhow::Result<Entry> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let staging = self.path("tmp").join(format!("{key}.{}.{nanos}", std::process::id()));
        std::fs::create_dir_all(&staging)?;
        let result = fill(&staging).and_then(|manifest| {
            let text = serde_json::to_string_pretty(&manifest)?;
            // The manifest goes last: an entry without one is never read as complete.
            std::fs::write(staging.join("manifest.json"), text)?;
            let dest = self.path("kernels").join(key);
            if dest.exists() {
                // Another builder finished the same key first; its entry is as good as ours.
                std::fs::remove_dir_all(&staging)?;
            } else {
                std::fs::rename(&staging, &dest).context("moving the new entry into the cache")?;
            }
            Ok(())
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.get(key).context("the new cache entry cannot be read back")
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut list: Vec<Entry> = std::fs::read_dir(self.path("kernels"))
            .map(|rd| rd.flatten().filter_map(|e| self.get(&e.file_name().to_string_lossy())).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| (&a.manifest.definition, a.manifest.created_unix).cmp(&(&b.manifest.definition, b.manifest.created_unix)));
        list
    }

    /// Remove the entries of one definition, or everything (entries, build trees, logs).
    pub fn clean(&self, definition: Option<&str>) -> anyhow::Result<usize> {
        let mut removed = 0;
        for entry in self.entries() {
            if definition.is_none_or(|d| d == entry.manifest.definition) {
                std::fs::remove_dir_all(&entry.dir)?;
                removed += 1;
            }
        }
        // Build trees are shared between definitions (a kernel and its mutants), so only a full
        // clean removes them.
        if definition.is_none() {
            for sub in ["work", "index", "tmp", "logs"] {
                let _ = std::fs::remove_dir_all(self.path(sub));
                std::fs::create_dir_all(self.path(sub))?;
            }
        }
        Ok(removed)
    }
}

/// Hold an exclusive lock on `path` (created) for the guard's lifetime: two `lab` processes building
/// the same definition take turns instead of sharing a work tree.
pub struct LockGuard {
    _file: std::fs::File,
}

pub fn lock(path: &Path) -> anyhow::Result<LockGuard> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    anyhow::ensure!(rc == 0, "cannot lock {}", path.display());
    Ok(LockGuard { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(key: &str) -> Manifest {
        Manifest {
            key: key.into(),
            definition: "demo".into(),
            release: "6.12.117".into(),
            source: "s".into(),
            patches: vec![],
            compiler: "gcc".into(),
            prebuilt: false,
            kernel_image: "bzImage".into(),
            vmlinux: None,
            config: "config".into(),
            created_unix: 1,
            build_seconds: 0.0,
        }
    }

    #[test]
    fn key_parts_are_separated() {
        let a = KeyHasher::default().part("x", b"ab").part("y", b"c").finish();
        let b = KeyHasher::default().part("x", b"a").part("y", b"bc").finish();
        assert_ne!(a, b);
        assert_eq!(a, KeyHasher::default().part("x", b"ab").part("y", b"c").finish());
    }

    #[test]
    fn insert_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let err = cache.insert("k1", |staging| {
            std::fs::write(staging.join("bzImage"), "half")?;
            anyhow::bail!("build failed")
        });
        assert!(err.is_err());
        assert!(cache.get("k1").is_none());
        assert!(!dir.path().join("kernels/k1").exists());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "staging is cleaned up");

        let entry = cache
            .insert("k1", |staging| {
                std::fs::write(staging.join("bzImage"), "image")?;
                Ok(manifest("k1"))
            })
            .unwrap();
        assert_eq!(std::fs::read_to_string(entry.kernel_image()).unwrap(), "image");
        assert_eq!(cache.entries().len(), 1);
    }

    #[test]
    fn an_interrupted_build_leaves_no_entry_and_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        // What a killed builder leaves: staging named after a pid that no longer exists.
        let debris = dir.path().join("tmp/k2.999999999.1");
        std::fs::create_dir_all(&debris).unwrap();
        std::fs::write(debris.join("bzImage"), "half").unwrap();
        // An entry directory without its manifest is not an entry either.
        std::fs::create_dir_all(dir.path().join("kernels/k3")).unwrap();
        assert!(cache.get("k2").is_none() && cache.get("k3").is_none());
        assert!(cache.entries().is_empty());
        Cache::open(dir.path()).unwrap();
        assert!(!debris.exists(), "dead builder's staging is swept");
    }

    #[test]
    fn input_index_points_at_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        cache.insert("k", |_| Ok(manifest("k"))).unwrap();
        assert!(cache.get_by_input("in").is_none());
        cache.record_input("in", "k").unwrap();
        assert_eq!(cache.get_by_input("in").unwrap().manifest.key, "k");
        cache.clean(Some("demo")).unwrap();
        assert!(cache.get_by_input("in").is_none(), "a removed entry is not found through the index");
    }
}
