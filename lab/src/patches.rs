//! Patch series: an ordered folder of `*.patch` files, applied to a scratch tree.
//!
//! Each patch is dry-run first, so a patch that does not apply leaves the tree as the previous patch
//! left it, and the error can name the patch, the file and the hunk (with its `@@` header) that failed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The patches of a series folder, in order: the `series` file when present (quilt's format, `#`
/// comments), otherwise every `*.patch` sorted by name.
pub fn series(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.is_dir() {
        return Err(format!("patch folder {} does not exist", dir.display()));
    }
    let series_file = dir.join("series");
    if series_file.is_file() {
        let text = std::fs::read_to_string(&series_file)
            .map_err(|e| format!("cannot read {}: {e}", series_file.display()))?;
        let mut patches = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(name) = line.split_whitespace().next() else { continue };
            let path = dir.join(name);
            if !path.is_file() {
                return Err(format!(
                    "{}:{}: patch `{name}` is listed but {} does not exist",
                    series_file.display(),
                    lineno + 1,
                    path.display()
                ));
            }
            patches.push(path);
        }
        return Ok(patches);
    }
    let mut patches: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read patch folder {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    if patches.is_empty() {
        return Err(format!("patch folder {} holds no *.patch files and no series file", dir.display()));
    }
    Ok(patches)
}

/// One hunk `patch` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedHunk {
    pub file: String,
    pub number: usize,
    /// The hunk's `@@ -a,b +c,d @@ context` line, from the patch file.
    pub header: Option<String>,
    pub at_line: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct PatchError {
    pub patch: PathBuf,
    pub hunks: Vec<FailedHunk>,
    /// What `patch` said, for the cases the hunks do not cover (a missing file, a reversed patch).
    pub output: String,
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.patch.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        write!(f, "patch {name} does not apply ({})", self.patch.display())?;
        for h in &self.hunks {
            write!(f, "\n  {}: hunk #{} FAILED", h.file, h.number)?;
            if let Some(line) = h.at_line {
                write!(f, " at line {line}")?;
            }
            if let Some(header) = &h.header {
                write!(f, "\n    {header}")?;
            }
        }
        if self.hunks.is_empty() {
            for line in self.output.lines().filter(|l| !l.trim().is_empty()) {
                write!(f, "\n  patch: {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for PatchError {}

/// Apply `patches` in order to `tree` with GNU patch.
/// SHA-256 of what `patch` changes in the tree, not of its commit message: rewording a message (to
/// add what the lab measured, say) must not cost a kernel rebuild.
pub fn code_digest(patch: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read(patch).with_context(|| format!("reading patch {}", patch.display()))?;
    Ok(hex::encode(Sha256::digest(patch_code(&String::from_utf8_lossy(&text)))))
}

/// The diff part of a patch: from its first `diff --git` (or `--- `) line, without git format-patch's
/// trailing signature (`-- ` and the git version), which differs between machines.
fn patch_code(text: &str) -> &str {
    let start = ["diff --git ", "--- "]
        .iter()
        .find_map(|marker| if text.starts_with(marker) { Some(0) } else { text.find(&format!("\n{marker}")).map(|i| i + 1) })
        .unwrap_or(0);
    let body = &text[start..];
    match body.rsplit_once("\n-- \n") {
        Some((code, signature)) if signature.lines().count() <= 2 => code,
        _ => body,
    }
}

pub fn apply(tree: &Path, patches: &[PathBuf]) -> anyhow::Result<()> {
    for patch in patches {
        let run = |dry: bool| -> anyhow::Result<(bool, String)> {
            let mut cmd = Command::new("patch");
            cmd.args(["-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-r", "-", "-i"])
                .arg(patch)
                .current_dir(tree);
            if dry {
                cmd.arg("--dry-run");
            }
            let out = cmd.output().map_err(|e| anyhow::anyhow!("cannot run `patch` (install it: apt-get install patch): {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            Ok((out.status.success(), text))
        };
        let (ok, output) = run(true)?;
        if !ok {
            let text = std::fs::read_to_string(patch).unwrap_or_default();
            return Err(PatchError { patch: patch.clone(), hunks: failed_hunks(&output, &text), output }.into());
        }
        let (ok, output) = run(false)?;
        anyhow::ensure!(ok, "patch {} passed its dry run but failed to apply:\n{output}", patch.display());
    }
    Ok(())
}

/// Undo `patches` (applied in this order) by reverse-applying them last to first.
pub fn revert(tree: &Path, patches: &[PathBuf]) -> anyhow::Result<()> {
    for patch in patches.iter().rev() {
        let out = Command::new("patch")
            .args(["-p1", "-R", "--batch", "--no-backup-if-mismatch", "-r", "-", "-i"])
            .arg(patch)
            .current_dir(tree)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run `patch`: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "reverting {} failed: {}",
            patch.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Read `patch`'s report ("checking file X" / "Hunk #N FAILED at L.") and find each hunk's header.
fn failed_hunks(output: &str, patch_text: &str) -> Vec<FailedHunk> {
    let mut file = String::new();
    let mut hunks = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("checking file ").or_else(|| line.strip_prefix("patching file ")) {
            file = rest.trim().trim_matches('\'').to_string();
        } else if let Some(rest) = line.strip_prefix("Hunk #") {
            if !rest.contains("FAILED") {
                continue;
            }
            let number = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let at_line = rest
                .split(" at ")
                .nth(1)
                .and_then(|s| s.trim_end_matches('.').split_whitespace().next())
                .and_then(|n| n.trim_end_matches('.').parse().ok());
            hunks.push(FailedHunk { header: hunk_header(patch_text, &file, number), file: file.clone(), number, at_line });
        }
    }
    hunks
}

/// The `@@` line of hunk `number` (1-based) of `file` in a unified diff.
fn hunk_header(patch_text: &str, file: &str, number: usize) -> Option<String> {
    let mut in_file = false;
    let mut seen = 0;
    for line in patch_text.lines() {
        if let Some(target) = line.strip_prefix("+++ ") {
            let target = target.split('\t').next().unwrap_or("").trim();
            let stripped = target.split_once('/').map(|(_, rest)| rest).unwrap_or(target);
            in_file = stripped == file;
            seen = 0;
        } else if in_file && line.starts_with("@@") {
            seen += 1;
            if seen == number {
                return Some(line.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_patch_is_known_by_its_code_not_its_message_or_signature() {
        let diff = "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n";
        let one = format!("From 1 Mon Sep 17 00:00:00 2001\nSubject: x\n\nwhy\n---\n f | 2 +-\n\n{diff}-- \n2.39.5\n\n");
        let two = format!("From 2 Mon Sep 17 00:00:00 2001\nSubject: x\n\nwhy, measured\n---\n f | 2 +-\n\n{diff}-- \n2.47.1\n");
        assert_eq!(super::patch_code(&one), super::patch_code(&two));
        assert_eq!(super::patch_code(&one), diff.trim_end_matches('\n'));
        assert_ne!(super::patch_code(&one), super::patch_code(&one.replace("+b", "+c")));
        // A plain diff without a header is all code.
        assert_eq!(super::patch_code(diff), diff);
    }

    use super::*;

    const PATCH: &str = "\
--- a/net/demo.c
+++ b/net/demo.c
@@ -1,3 +1,3 @@ int demo(void)
 one
-two
+TWO
 three
@@ -5,3 +5,3 @@ int other(void)
 five
-six
+SIX
 seven
";

    fn tree(content: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/demo.c"), content).unwrap();
        dir
    }

    #[test]
    fn applies_a_clean_series_in_order() {
        let t = tree("one\ntwo\nthree\nfour\nfive\nsix\nseven\n");
        let p = tempfile::tempdir().unwrap();
        std::fs::write(p.path().join("0001-demo.patch"), PATCH).unwrap();
        apply(t.path(), &series(p.path()).unwrap()).unwrap();
        let out = std::fs::read_to_string(t.path().join("net/demo.c")).unwrap();
        assert_eq!(out, "one\nTWO\nthree\nfour\nfive\nSIX\nseven\n");
    }

    #[test]
    fn a_failing_hunk_is_named_and_the_tree_is_untouched() {
        // Hunk 1 applies, hunk 2 cannot: the dry run must keep hunk 1 from landing half a patch.
        let original = "one\ntwo\nthree\nfour\nFIVE\nsix?\nSEVEN\n";
        let t = tree(original);
        let p = tempfile::tempdir().unwrap();
        std::fs::write(p.path().join("0001-demo.patch"), PATCH).unwrap();
        let err = apply(t.path(), &series(p.path()).unwrap()).unwrap_err();
        let err = err.downcast::<PatchError>().unwrap();
        assert_eq!(err.hunks.len(), 1, "{err}");
        assert_eq!(err.hunks[0].file, "net/demo.c");
        assert_eq!(err.hunks[0].number, 2);
        assert_eq!(err.hunks[0].header.as_deref(), Some("@@ -5,3 +5,3 @@ int other(void)"));
        let text = err.to_string();
        assert!(text.contains("patch 0001-demo.patch does not apply"), "{text}");
        assert!(text.contains("net/demo.c: hunk #2 FAILED"), "{text}");
        assert_eq!(std::fs::read_to_string(t.path().join("net/demo.c")).unwrap(), original);
    }

    #[test]
    fn a_patch_for_a_missing_file_says_so() {
        let t = tempfile::tempdir().unwrap();
        let p = tempfile::tempdir().unwrap();
        std::fs::write(p.path().join("0001-demo.patch"), PATCH).unwrap();
        let err = apply(t.path(), &series(p.path()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("0001-demo.patch does not apply"), "{err}");
        assert!(err.contains("can't find file") || err.contains("No file to patch"), "{err}");
    }

    #[test]
    fn series_file_sets_the_order_and_names_a_missing_patch() {
        let p = tempfile::tempdir().unwrap();
        std::fs::write(p.path().join("b.patch"), PATCH).unwrap();
        std::fs::write(p.path().join("a.patch"), PATCH).unwrap();
        std::fs::write(p.path().join("series"), "# order matters\nb.patch\na.patch -p1\n").unwrap();
        let order: Vec<_> = series(p.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(order, ["b.patch", "a.patch"]);
        std::fs::write(p.path().join("series"), "b.patch\nmissing.patch\n").unwrap();
        let err = series(p.path()).unwrap_err();
        assert!(err.contains("series:2") && err.contains("missing.patch"), "{err}");
    }
}
