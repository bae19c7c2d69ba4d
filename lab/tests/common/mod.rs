//! Helpers shared by the integration tests: run the real `lab` binary with its own cache and
//! kernels folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Lab {
    pub cache: PathBuf,
    pub kernels: PathBuf,
    pub envs: Vec<(String, String)>,
}

impl Lab {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lab"));
        cmd.args(args).env("LAB_CACHE", &self.cache).env("LAB_KERNELS", &self.kernels).env_remove("LAB_ACCEL");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("lab runs")
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A kernels folder holding the real lab fragments, plus whatever the test writes.
pub fn kernels_dir(root: &Path) -> PathBuf {
    let dir = root.join("kernels");
    std::fs::create_dir_all(dir.join("config")).unwrap();
    for f in ["lab.config", "debug.config"] {
        std::fs::copy(project_root().join("kernels/config").join(f), dir.join("config").join(f)).unwrap();
    }
    dir
}

/// The fake kernel tree as a tarball, like a release tarball (one top-level folder).
pub fn fake_kernel_tarball(root: &Path) -> PathBuf {
    let staging = root.join("tarball-src");
    let top = staging.join("linux-fake");
    std::fs::create_dir_all(&staging).unwrap();
    let status = Command::new("cp").arg("-r").arg(project_root().join("lab/tests/fixtures/fake-kernel")).arg(&top).status().unwrap();
    assert!(status.success());
    let tarball = root.join("linux-fake.tar.gz");
    let status = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&staging).arg("linux-fake").status().unwrap();
    assert!(status.success());
    tarball
}

impl Lab {
    /// The user's real cache and the project's kernels: boot tests reuse what `make lab-test` built.
    pub fn real() -> Lab {
        let cache = std::env::var_os("LAB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/sockmap-lab"));
        Lab { cache, kernels: project_root().join("kernels"), envs: vec![] }
    }
}
