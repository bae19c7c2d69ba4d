//! The build pipeline end to end through the `lab` binary, on a stand-in kernel tree (a tarball
//! source) so it runs in seconds: definition errors, patch failures, config verification, cache
//! keying, build failures and interrupted builds.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fake_kernel_tarball, kernels_dir, text, Lab};

struct Fixture {
    _root: tempfile::TempDir,
    lab: Lab,
    tarball: std::path::PathBuf,
    counter: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let kernels = kernels_dir(root.path());
    let tarball = fake_kernel_tarball(root.path());
    let counter = root.path().join("builds");
    let lab = Lab {
        cache: root.path().join("cache"),
        kernels,
        envs: vec![("FAKE_COUNTER".into(), counter.display().to_string()), ("CCACHE_DISABLE".into(), "1".into())],
    };
    Fixture { _root: root, lab, tarball, counter }
}

impl Fixture {
    fn define(&self, name: &str, extra: &str) {
        let text = format!(
            "name = \"{name}\"\n{extra}\n[source]\nkind = \"tarball\"\npath = \"{}\"\n",
            self.tarball.display()
        );
        std::fs::write(self.lab.kernels.join(format!("{name}.toml")), text).unwrap();
    }

    fn builds(&self) -> usize {
        std::fs::read_to_string(&self.counter).map(|t| t.lines().count()).unwrap_or(0)
    }

    fn entries(&self) -> usize {
        std::fs::read_dir(self.lab.cache.join("kernels")).map(|d| d.count()).unwrap_or(0)
    }
}

#[test]
fn a_second_build_compiles_nothing_and_a_change_rebuilds() {
    let f = fixture();
    f.define("fake", "");
    let out = f.lab.run(&["build", "fake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("fake 0.0.1-fake (built)"), "{}", text(&out));
    assert_eq!(f.builds(), 1);

    let out = f.lab.run(&["build", "fake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cached, nothing compiled"), "{}", text(&out));
    assert_eq!(f.builds(), 1, "the second build must not run make");

    // A fragment that changes the final config is a different kernel.
    std::fs::write(f.lab.kernels.join("config/extra.config"), "CONFIG_EXTRA_FEATURE=y\n").unwrap();
    f.define("fake", "config = [\"config/extra.config\"]");
    let out = f.lab.run(&["build", "fake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.builds(), 2);
    assert_eq!(f.entries(), 2);

    // A fragment edit that leaves the final config unchanged is found by the config hash.
    std::fs::write(f.lab.kernels.join("config/extra.config"), "# a comment\nCONFIG_EXTRA_FEATURE=y\n").unwrap();
    let out = f.lab.run(&["build", "fake"]);
    assert!(text(&out).contains("cached, nothing compiled"), "{}", text(&out));
    assert_eq!(f.builds(), 2);

    let out = f.lab.run(&["list"]);
    assert!(text(&out).contains("0.0.1-fake"), "{}", text(&out));
}

#[test]
fn a_failed_build_shows_the_log_tail_and_leaves_the_cache_alone() {
    let f = fixture();
    f.define("fake", "");
    let mut cmd = f.lab.cmd(&["build", "fake"]);
    cmd.env("FAKE_BUILD", "fail");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("building fake failed; the cache was not touched"), "{msg}");
    assert!(msg.contains("tcp_bpf.c:42:1: error: expected ';'"), "the compiler error is shown: {msg}");
    assert!(msg.contains("full log:"), "{msg}");
    assert_eq!(f.entries(), 0);

    // The same definition builds once the failure is gone, reusing the kept tree.
    let out = f.lab.run(&["build", "fake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.entries(), 1);
}

#[test]
fn an_interrupted_build_leaves_no_entry() {
    // Ctrl-C from a terminal, or SIGTERM from a CI runner or `timeout`: both must take make down too.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let f = fixture();
        f.define("fake", "");
        let mut cmd = f.lab.cmd(&["build", "fake"]);
        cmd.env("FAKE_BUILD", "slow");
        let mut child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while f.builds() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(f.builds(), 1, "make started");
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "signal {signal}");
        assert_eq!(f.entries(), 0, "no half entry");
        std::thread::sleep(Duration::from_millis(300));
        let ps = std::process::Command::new("pgrep").args(["-f", "sleep 60"]).output().unwrap();
        assert!(ps.stdout.is_empty(), "make's children were killed (signal {signal})");

        let out = f.lab.run(&["build", "fake"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(f.entries(), 1);
    }
}

#[test]
fn a_patch_that_does_not_apply_names_patch_and_hunk() {
    let f = fixture();
    let patches = f.lab.kernels.join("patches/broken");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(patches.join("0001-fine.patch"), "--- a/net/demo.c\n+++ b/net/demo.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n").unwrap();
    std::fs::write(
        patches.join("0002-stale.patch"),
        "--- a/net/demo.c\n+++ b/net/demo.c\n@@ -1,3 +1,3 @@ static int demo(void)\n one\n-zwei\n+ZWEI\n three\n",
    )
    .unwrap();
    f.define("fake", "patches = \"patches/broken\"");
    let out = f.lab.run(&["build", "fake"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("patch 0002-stale.patch does not apply"), "{msg}");
    assert!(msg.contains("net/demo.c: hunk #1 FAILED"), "{msg}");
    assert!(msg.contains("@@ -1,3 +1,3 @@ static int demo(void)"), "{msg}");
    assert_eq!(f.builds(), 0);
    assert_eq!(f.entries(), 0);
}

#[test]
fn a_missing_required_symbol_is_named() {
    let f = fixture();
    std::fs::write(f.lab.kernels.join("config/nosockmsg.config"), "# CONFIG_NET_SOCK_MSG is not set\n# CONFIG_ACPI is not set\n").unwrap();
    f.define("fake", "config = [\"config/nosockmsg.config\"]");
    let out = f.lab.run(&["build", "fake"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("CONFIG_NET_SOCK_MSG is not set: needed for sk_msg programs"), "{msg}");
    assert!(msg.contains("CONFIG_ACPI is not set: needed for powering the guest off"), "{msg}");
    assert_eq!(f.builds(), 0);
}

#[test]
fn bad_definitions_are_clear_errors() {
    let f = fixture();
    std::fs::write(f.lab.kernels.join("typo.toml"), "name = \"typo\"\n[source]\nkind = \"debian-source\"\npackag = \"linux-source-6.12\"\n").unwrap();
    let out = f.lab.run(&["build", "typo"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("typo.toml") && msg.contains("packag") && msg.contains("line 4"), "{msg}");

    let out = f.lab.run(&["run", "no-such-kernel", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown kernel `no-such-kernel`"), "{}", text(&out));

    let patches = f.lab.kernels.join("patches/gap");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(patches.join("series"), "0001-gone.patch\n").unwrap();
    f.define("gap", "patches = \"patches/gap\"");
    let out = f.lab.run(&["build", "gap"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("field `patches`") && msg.contains("0001-gone.patch"), "{msg}");

    // `lab list` still lists the good ones and names the broken file.
    f.define("fake", "");
    let out = f.lab.run(&["list"]);
    assert!(out.status.success());
    let msg = text(&out);
    assert!(msg.contains("fake") && msg.contains("typo.toml"), "{msg}");
}

#[test]
fn a_bad_tarball_hash_is_refused() {
    let f = fixture();
    let text_ = format!(
        "name = \"pinned\"\n[source]\nkind = \"tarball\"\npath = \"{}\"\nsha256 = \"{}\"\n",
        f.tarball.display(),
        "0".repeat(64)
    );
    std::fs::write(f.lab.kernels.join("pinned.toml"), text_).unwrap();
    let out = f.lab.run(&["build", "pinned"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("the definition expects 0000"), "{}", text(&out));
}

#[test]
fn git_sources_build_a_commit_and_leave_the_tree_alone() {
    let f = fixture();
    let repo = f.lab.cache.parent().unwrap().join("repo");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-kernel");
    std::process::Command::new("cp").arg("-r").arg(&src).arg(&repo).status().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "base"]);
    std::fs::write(repo.join("uncommitted.txt"), "user's work").unwrap();
    std::fs::write(
        f.lab.kernels.join("tree.toml"),
        format!("name = \"tree\"\n[source]\nkind = \"git\"\npath = \"{}\"\nrev = \"HEAD\"\n", repo.display()),
    )
    .unwrap();
    let out = f.lab.run(&["build", "tree"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(git(&["status", "--porcelain"]), "?? uncommitted.txt", "the user's tree is untouched");
    assert!(!repo.join(".config").exists());
}

#[test]
fn a_patched_variant_shares_the_tree_and_switching_back_reverts_it() {
    let f = fixture();
    let patches = f.lab.kernels.join("patches/mutant");
    std::fs::create_dir_all(&patches).unwrap();
    std::fs::write(patches.join("0001-m.patch"), "--- a/net/demo.c\n+++ b/net/demo.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n").unwrap();
    f.define("fake", "");
    f.define("fake-mutant", "patches = \"patches/mutant\"");
    for name in ["fake", "fake-mutant"] {
        let out = f.lab.run(&["build", name]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let work: Vec<_> = std::fs::read_dir(f.lab.cache.join("work")).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert_eq!(work.len(), 1, "one shared build tree");
    let demo = work[0].path().join("linux/net/demo.c");
    assert_eq!(std::fs::read_to_string(&demo).unwrap(), "one\nTWO\nthree\n");
    let out = f.lab.run(&["build", "--force", "fake"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&demo).unwrap(), "one\ntwo\nthree\n", "the mutant's patch was reverted");
    assert_eq!(f.builds(), 3);
    assert_eq!(f.entries(), 2);
}

/// Kbuild rebuilds every object whose recorded command changed, so ccache must not show up in CC:
/// a kept tree built once without it would otherwise be recompiled in full when it is turned on.
#[test]
fn ccache_is_on_path_and_leaves_the_compiler_command_alone() {
    let ccache = std::process::Command::new("sh").args(["-c", "readlink -f \"$(command -v ccache)\""]).output().expect("sh runs");
    let ccache = String::from_utf8_lossy(&ccache.stdout).trim().to_string();
    // `make deps` installs ccache; without it this test would check nothing, so it says so loudly.
    if ccache.is_empty() {
        panic!("ccache is not installed (`make deps` installs it): cannot check how the build puts it on PATH");
    }
    let mut f = fixture();
    let tools = f._root.path().join("tools");
    f.lab.envs.push(("FAKE_TOOLS".into(), tools.display().to_string()));
    for (i, with) in ["0", "1"].iter().enumerate() {
        f.lab.envs.push(("LAB_CCACHE".into(), with.to_string()));
        f.define("fake", &format!("config = [\"config/c{i}.config\"]"));
        std::fs::write(f.lab.kernels.join(format!("config/c{i}.config")), format!("CONFIG_FAKE_{i}=y\n")).unwrap();
        let out = f.lab.run(&["build", "fake"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let seen = std::fs::read_to_string(&tools).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 2, "{seen}");
    assert!(lines.iter().all(|l| l.starts_with("CC=cc ")), "the compiler command is the same with and without ccache: {seen}");
    assert!(!lines[0].ends_with(&format!("gcc={ccache}")), "LAB_CCACHE=0 compiles with plain gcc: {seen}");
    assert!(lines[1].ends_with(&format!("gcc={ccache}")), "LAB_CCACHE=1 puts ccache first on PATH: {seen}");
}
