//! Kernel definitions: `kernels/NAME.toml`, parsed and checked before anything expensive happens.
//!
//! Every error names the file and the field, because a definition is usually written by hand and the
//! first thing a user needs is where to look.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A definition as written in the TOML file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    #[serde(default)]
    description: String,
    /// Another definition this one builds on: its source, patches and fragments come first.
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    patches: Option<PathBuf>,
    #[serde(default)]
    config: Vec<PathBuf>,
    #[serde(default)]
    profile: Profile,
    #[serde(default)]
    matrix: bool,
    #[serde(default)]
    mutant: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum RawSource {
    DebianSource { package: String },
    Git { path: PathBuf, rev: String },
    Tarball { path: Option<PathBuf>, url: Option<String>, sha256: Option<String> },
    DebianImage { package: String },
}

/// Which extra fragment goes on top of the lab's base config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    #[default]
    Default,
    /// KASAN, lockdep and kmemleak: slower, but turns silent corruption into a splat.
    Debug,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Debug => "debug",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Profile::Default),
            "debug" => Ok(Profile::Debug),
            other => Err(format!("unknown profile `{other}` (expected `default` or `debug`)")),
        }
    }
}

/// Where a kernel comes from, with every path made absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Debian's `linux-source-X.Y` package: a tarball under /usr/src.
    DebianSource { package: String },
    /// A commit of a local git tree; the tree itself is only read.
    Git { path: PathBuf, rev: String },
    /// A tarball on disk, optionally pinned by hash.
    TarballPath { path: PathBuf, sha256: Option<String> },
    /// A tarball fetched over HTTP(S); the hash is mandatory so a build is reproducible.
    TarballUrl { url: String, sha256: String },
    /// A prebuilt Debian `linux-image-*` package, booted with its own modules.
    DebianImage { package: String },
}

impl Source {
    pub fn is_prebuilt(&self) -> bool {
        matches!(self, Source::DebianImage { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Source::DebianSource { package } => format!("debian source {package}"),
            Source::Git { path, rev } => format!("git {}@{rev}", path.display()),
            Source::TarballPath { path, .. } => format!("tarball {}", path.display()),
            Source::TarballUrl { url, .. } => format!("tarball {url}"),
            Source::DebianImage { package } => format!("prebuilt {package}"),
        }
    }
}

/// A checked definition, ready for the build stages.
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub source: Source,
    /// Patch files in the order they are applied.
    pub patches: Vec<PathBuf>,
    /// The definition's own fragments, applied after the lab's base and profile fragments.
    pub config: Vec<PathBuf>,
    pub profile: Profile,
    pub matrix: bool,
    /// For a deliberately broken kernel: what it breaks. The suite must fail on it.
    pub mutant: Option<String>,
    /// The definition this one is stacked on (a mutant's unmutated kernel: its control).
    pub base: Option<String>,
}

/// A definition error: the file, the field (when one is to blame) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid kernel definition {}", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DefinitionError {}

/// Errors looking a definition up by name.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("unknown kernel `{name}`: no {dir}/{name}.toml. Known kernels: {known}")]
    Unknown { name: String, dir: String, known: String },
    #[error(transparent)]
    Invalid(#[from] DefinitionError),
    #[error("cannot read kernel definitions in {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

/// The folder holding the definitions (and their fragments and patches).
#[derive(Debug, Clone)]
pub struct KernelsDir {
    pub dir: PathBuf,
}

impl KernelsDir {
    /// `LAB_KERNELS` wins; otherwise the `kernels/` of the project the current directory is in, and
    /// failing that the one this binary was built from.
    pub fn locate() -> KernelsDir {
        if let Some(dir) = std::env::var_os("LAB_KERNELS") {
            return KernelsDir { dir: PathBuf::from(dir) };
        }
        if let Ok(cwd) = std::env::current_dir() {
            for dir in cwd.ancestors() {
                let candidate = dir.join("kernels");
                if candidate.join("config").join("lab.config").is_file() {
                    return KernelsDir { dir: candidate };
                }
            }
        }
        KernelsDir { dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("kernels") }
    }

    pub fn names(&self) -> Result<Vec<String>, LookupError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|source| LookupError::Io { dir: self.dir.display().to_string(), source })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn load(&self, name: &str) -> Result<Definition, LookupError> {
        let file = self.dir.join(format!("{name}.toml"));
        if name.contains('/') || !file.is_file() {
            let known = self.names().unwrap_or_default().join(", ");
            return Err(LookupError::Unknown {
                name: name.to_string(),
                dir: self.dir.display().to_string(),
                known: if known.is_empty() { "(none)".into() } else { known },
            });
        }
        Ok(load_file(&file)?)
    }

    pub fn load_all(&self) -> Result<Vec<Result<Definition, DefinitionError>>, LookupError> {
        Ok(self.names()?.iter().map(|n| load_file(&self.dir.join(format!("{n}.toml")))).collect())
    }
}

/// The Debian image package for a version: `6.1.0-47` → linux-image-6.1.0-47-amd64-unsigned,
/// `6.12.117` → linux-image-6.12.117+deb12-amd64-unsigned.
pub fn debian_image_package(version: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = version.split(['.', '-']).collect();
    match parts.as_slice() {
        ["6", "1", "0", abi] if digits(abi) => Some(format!("linux-image-6.1.0-{abi}-amd64-unsigned")),
        ["6", "12", point] if digits(point) => Some(format!("linux-image-6.12.{point}+deb12-amd64-unsigned")),
        _ => None,
    }
}

/// Write `kernels/prebuilt-VERSION.toml` for each version (or for every one apt knows, with `all`),
/// leaving existing files alone. `newer` are the 7.x images of the lab's apt view. Returns (name,
/// written?, suite) per definition.
pub fn add_debian_images(kernels: &KernelsDir, versions: &[String], all: bool, newer: &[crate::apt::KernelImage]) -> anyhow::Result<Vec<(String, bool, String)>> {
    let mut versions: Vec<String> = versions.to_vec();
    if all {
        let names = crate::process::output("apt-cache", &["pkgnames", "linux-image-6."])?;
        for pkg in names.lines() {
            let version = pkg
                .strip_prefix("linux-image-")
                .and_then(|v| v.strip_suffix("-amd64-unsigned"))
                .map(|v| v.trim_end_matches("+deb12").to_string());
            if let Some(v) = version.filter(|v| debian_image_package(v).as_deref() == Some(pkg)) {
                versions.push(v);
            }
        }
        versions.extend(newer.iter().filter(|i| i.missing.is_empty()).map(|i| i.version.clone()));
        versions.sort_by_key(|v| v.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>());
        versions.dedup();
    }
    anyhow::ensure!(!versions.is_empty(), "name versions (6.1.0-47, 6.12.117) or pass --all");
    let mut written = Vec::new();
    for v in versions {
        let (package, suite) = match debian_image_package(&v) {
            Some(p) => (p, "bookworm".to_string()),
            None => newer
                .iter()
                .find(|i| i.version == v)
                .map(|i| (i.package.clone(), i.suite.clone()))
                .ok_or_else(|| anyhow::anyhow!("`{v}` is not a Debian 6.1.0-NN or 6.12.NNN version, nor a 7.x image the lab's apt view knows"))?,
        };
        if let Some(image) = newer.iter().find(|i| i.version == v && !i.missing.is_empty()) {
            anyhow::bail!(
                "{} ({}) cannot boot: it depends on {}, which Debian's archive no longer carries (bookworm, trixie, trixie-backports, sid)",
                image.package,
                image.suite,
                image.missing.join(", ")
            );
        }
        let name = format!("prebuilt-{v}");
        let file = kernels.dir.join(format!("{name}.toml"));
        if file.exists() {
            written.push((name, false, suite));
            continue;
        }
        let text = format!(
            "# Written by `lab kernels add-debian`.\nname = \"{name}\"\ndescription = \"Debian's own {v} image ({suite}), booted with its modules; nothing to build\"\nmatrix = true\n\n[source]\nkind = \"debian-image\"\npackage = \"{package}\"\n"
        );
        parse(&file, &text).map_err(anyhow::Error::from)?;
        std::fs::write(&file, text)?;
        written.push((name, true, suite));
    }
    Ok(written)
}

/// Parse and check one definition file.
pub fn load_file(file: &Path) -> Result<Definition, DefinitionError> {
    let text = std::fs::read_to_string(file).map_err(|e| DefinitionError {
        file: file.to_path_buf(),
        field: None,
        message: format!("cannot read it: {e}"),
    })?;
    parse(file, &text)
}

type Blame<'a> = &'a dyn Fn(Option<&str>, String) -> DefinitionError;

/// Parse a definition's text; `file` names it in errors and anchors its relative paths.
pub fn parse(file: &Path, text: &str) -> Result<Definition, DefinitionError> {
    let err = |field: Option<&str>, message: String| DefinitionError {
        file: file.to_path_buf(),
        field: field.map(str::to_string),
        message,
    };
    let raw = parse_toml(text, &err)?;
    let base = file.parent().unwrap_or(Path::new("."));
    check_name(&raw.name, file, &err)?;
    let based_on = load_base(&raw, base, &err)?;
    let source = match (raw.source.clone(), &based_on) {
        (_, Some(def)) => def.source.clone(),
        (Some(source), None) => check_source(source, base, &err)?,
        (None, None) => return Err(err(Some("source"), "is missing: name a source, or a `base` definition to build on".into())),
    };
    check_builds_on(&raw, &source, &err)?;

    let mut patches = match &raw.patches {
        None => Vec::new(),
        Some(dir) => crate::patches::series(&absolute(base, dir))
            .map_err(|e| err(Some("patches"), e.to_string()))?,
    };
    let mut config = Vec::new();
    if let Some(def) = &based_on {
        patches.splice(0..0, def.patches.iter().cloned());
        config.extend(def.config.iter().cloned());
    }

    for (i, fragment) in raw.config.iter().enumerate() {
        let path = absolute(base, fragment);
        if !path.is_file() {
            return Err(err(
                Some(&format!("config[{i}]")),
                format!("fragment {} does not exist", path.display()),
            ));
        }
        config.push(path);
    }

    Ok(Definition {
        name: raw.name,
        description: raw.description,
        file: file.to_path_buf(),
        source,
        patches,
        config,
        profile: raw.profile,
        matrix: raw.matrix,
        mutant: raw.mutant,
        base: raw.base,
    })
}

fn parse_toml(text: &str, err: Blame) -> Result<RawDefinition, DefinitionError> {
    toml::from_str(text).map_err(|e| {
        // toml blames a span; an unknown key inside a tagged table is blamed on the whole table, so
        // look for the key's own line to point the user at it.
        let mut span = e.span();
        if let Some(unknown) = e.message().strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            let from = span.as_ref().map(|s| s.start).unwrap_or(0);
            if let Some(offset) = key_line(text, from, unknown) {
                span = Some(offset..offset + unknown.len());
            }
        }
        let field = span.as_ref().and_then(|span| key_at(text, span.start));
        err(field.as_deref(), e.message().to_string() + &location(text, span))
    })
}

fn check_name(name: &str, file: &Path, err: Blame) -> Result<(), DefinitionError> {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if name != stem {
        return Err(err(
            Some("name"),
            format!("is `{name}` but the file is {stem}.toml; the name is how `lab` finds it, so they must match"),
        ));
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(err(Some("name"), "must be non-empty and use only letters, digits, `-`, `_` and `.`".into()));
    }
    Ok(())
}

/// The definition `base` names, loaded: a mutant or a series stacks on its source and patches.
fn load_base(raw: &RawDefinition, base: &Path, err: Blame) -> Result<Option<Definition>, DefinitionError> {
    let Some(name) = &raw.base else {
        if raw.mutant.is_some() {
            return Err(err(
                Some("base"),
                "a mutant names the kernel it breaks (`base = \"...\"`): the lab stacks it on that kernel and runs the base as its control".into(),
            ));
        }
        return Ok(None);
    };
    if raw.source.is_some() {
        return Err(err(Some("source"), format!("comes from the base `{name}`; a definition with `base` has no source of its own")));
    }
    let file = base.join(format!("{name}.toml"));
    if !file.is_file() || name == &raw.name {
        return Err(err(Some("base"), format!("`{name}` is not another definition in {}", base.display())));
    }
    let def = load_file(&file).map_err(|e| err(Some("base"), format!("`{name}` does not load: {e}")))?;
    if def.source.is_prebuilt() {
        return Err(err(Some("base"), format!("`{name}` is a prebuilt image; only a source build can be stacked on")));
    }
    Ok(Some(def))
}

/// Patches, fragments and a profile need a source build; a mutant needs its patch.
fn check_builds_on(raw: &RawDefinition, source: &Source, err: Blame) -> Result<(), DefinitionError> {
    if raw.mutant.is_some() && raw.patches.is_none() {
        return Err(err(Some("mutant"), "a mutant is a patched kernel: it needs `patches`".into()));
    }
    if source.is_prebuilt() {
        if raw.patches.is_some() {
            return Err(err(Some("patches"), "a prebuilt image cannot be patched; use a source definition".into()));
        }
        if !raw.config.is_empty() {
            return Err(err(Some("config"), "a prebuilt image has its own config; fragments need a source build".into()));
        }
        if raw.profile != Profile::Default {
            return Err(err(Some("profile"), "a prebuilt image cannot be rebuilt with the debug profile".into()));
        }
    }
    Ok(())
}

/// A source as written, checked: each error names the `source.*` field to blame.
fn check_source(raw: RawSource, base: &Path, err: Blame) -> Result<Source, DefinitionError> {
    Ok(match raw {
        RawSource::DebianSource { package } => {
            if !package.starts_with("linux-source-") {
                return Err(err(
                    Some("source.package"),
                    format!("`{package}` is not a Debian kernel source package (expected linux-source-X.Y)"),
                ));
            }
            Source::DebianSource { package }
        }
        RawSource::Git { path, rev } => {
            if rev.trim().is_empty() {
                return Err(err(Some("source.rev"), "must name a commit, tag or branch".into()));
            }
            Source::Git { path: absolute(base, &path), rev }
        }
        RawSource::Tarball { path, url, sha256 } => {
            if let Some(hash) = &sha256 {
                if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(err(Some("source.sha256"), format!("`{hash}` is not a sha256 (64 hex digits)")));
                }
            }
            match (path, url) {
                (Some(path), None) => Source::TarballPath {
                    path: absolute(base, &path),
                    sha256: sha256.map(|h| h.to_lowercase()),
                },
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("file://")) {
                        return Err(err(Some("source.url"), format!("`{url}` is not an http(s) or file URL")));
                    }
                    let Some(sha256) = sha256 else {
                        return Err(err(
                            Some("source.sha256"),
                            "is required with `url`: a downloaded tarball is only used once its hash is checked".into(),
                        ));
                    };
                    Source::TarballUrl { url, sha256: sha256.to_lowercase() }
                }
                (Some(_), Some(_)) => {
                    return Err(err(Some("source"), "a tarball takes either `path` or `url`, not both".into()))
                }
                (None, None) => return Err(err(Some("source"), "a tarball needs `path` or `url`".into())),
            }
        }
        RawSource::DebianImage { package } => {
            if !package.starts_with("linux-image-") {
                return Err(err(
                    Some("source.package"),
                    format!("`{package}` is not a Debian kernel image package (expected linux-image-...)"),
                ));
            }
            Source::DebianImage { package }
        }
    })
}

fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Byte offset of the first line at or after `from` that assigns `key`.
fn key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos >= from.saturating_sub(line.len()) {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(pos + (line.len() - trimmed.len()));
                }
            }
        }
        pos += line.len();
    }
    None
}

/// The dotted key of the TOML line holding byte `offset`, e.g. `source.kind`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut found = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if offset >= pos && offset < pos + line.len().max(1) {
            if let Some((key, _)) = trimmed.split_once('=') {
                let key = key.trim();
                found = Some(if table.is_empty() { key.to_string() } else { format!("{table}.{key}") });
            } else if !table.is_empty() {
                found = Some(table.clone());
            }
            break;
        }
        pos += line.len();
    }
    found
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_named(name: &str, text: &str) -> Result<Definition, DefinitionError> {
        parse(Path::new(&format!("/nonexistent/kernels/{name}.toml")), text)
    }

    #[test]
    fn parses_a_debian_source_definition() {
        let def = parse_named(
            "debian-6.12",
            "name = \"debian-6.12\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\n",
        )
        .unwrap();
        assert_eq!(def.source, Source::DebianSource { package: "linux-source-6.12".into() });
        assert_eq!(def.profile, Profile::Default);
        assert!(def.patches.is_empty());
    }

    #[test]
    fn parses_every_source_kind() {
        let git = parse_named("g", "name = \"g\"\n[source]\nkind = \"git\"\npath = \"../linux\"\nrev = \"v6.12\"\n").unwrap();
        assert_eq!(git.source, Source::Git { path: "/nonexistent/kernels/../linux".into(), rev: "v6.12".into() });
        let tar = parse_named("t", "name = \"t\"\n[source]\nkind = \"tarball\"\npath = \"/x.tar.xz\"\n").unwrap();
        assert_eq!(tar.source, Source::TarballPath { path: "/x.tar.xz".into(), sha256: None });
        let sha = "a".repeat(64);
        let url = parse_named(
            "u",
            &format!("name = \"u\"\n[source]\nkind = \"tarball\"\nurl = \"https://e/x.tar.xz\"\nsha256 = \"{sha}\"\n"),
        )
        .unwrap();
        assert_eq!(url.source, Source::TarballUrl { url: "https://e/x.tar.xz".into(), sha256: sha });
        let img = parse_named(
            "i",
            "name = \"i\"\n[source]\nkind = \"debian-image\"\npackage = \"linux-image-6.1.0-56-amd64-unsigned\"\n",
        )
        .unwrap();
        assert!(img.source.is_prebuilt());
    }

    #[test]
    fn unknown_field_names_the_field_and_line() {
        let e = parse_named(
            "x",
            "name = \"x\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\nbranch = \"main\"\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/nonexistent/kernels/x.toml"), "{text}");
        assert!(text.contains("branch"), "{text}");
        assert!(text.contains("line 5"), "{text}");
    }

    #[test]
    fn unknown_source_kind_is_named() {
        let e = parse_named("x", "name = \"x\"\n[source]\nkind = \"svn\"\n").unwrap_err();
        assert!(e.to_string().contains("svn"), "{e}");
    }

    #[test]
    fn missing_source_is_named() {
        let e = parse_named("x", "name = \"x\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("source"));
        assert!(e.to_string().contains("is missing: name a source, or a `base`"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_named("x", "name = \"x\"\nmatrix = \"yes\"\n[source]\nkind = \"git\"\npath = \"a\"\nrev = \"b\"\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("matrix"), "{e}");
    }

    #[test]
    fn name_must_match_the_file() {
        let e = parse_named("a", "name = \"b\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.1\"\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
    }

    #[test]
    fn tarball_url_needs_a_hash() {
        let e = parse_named("t", "name = \"t\"\n[source]\nkind = \"tarball\"\nurl = \"https://e/x.tar.xz\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("source.sha256"));
        let e = parse_named("t", "name = \"t\"\n[source]\nkind = \"tarball\"\npath = \"x\"\nsha256 = \"abc\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("source.sha256"));
    }

    #[test]
    fn a_mutant_is_stacked_on_its_base_and_must_name_one() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["fix", "mutants/m"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("fix/0001-fix.patch"), "").unwrap();
        std::fs::write(dir.path().join("mutants/m/0001-break.patch"), "").unwrap();
        std::fs::write(
            dir.path().join("fixed.toml"),
            "name = \"fixed\"\npatches = \"fix\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\n",
        )
        .unwrap();
        let def = parse(&dir.path().join("m.toml"), "name = \"m\"\nmutant = \"x\"\nbase = \"fixed\"\npatches = \"mutants/m\"\n").unwrap();
        let names: Vec<_> = def.patches.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["0001-fix.patch", "0001-break.patch"], "the base's patches first");
        assert_eq!(def.source, Source::DebianSource { package: "linux-source-6.12".into() });
        assert_eq!(def.base.as_deref(), Some("fixed"));
        let no_base = "name = \"m\"\nmutant = \"x\"\npatches = \"mutants/m\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\n";
        let e = parse(&dir.path().join("m.toml"), no_base).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("base"));
        let unknown = parse(&dir.path().join("m.toml"), "name = \"m\"\nmutant = \"x\"\nbase = \"nope\"\npatches = \"mutants/m\"\n").unwrap_err();
        assert!(unknown.to_string().contains("`nope` is not another definition"), "{unknown}");
    }

    #[test]
    fn prebuilt_images_take_no_patches() {
        let e = parse_named(
            "i",
            "name = \"i\"\npatches = \"p\"\n[source]\nkind = \"debian-image\"\npackage = \"linux-image-6.1.0-56-amd64-unsigned\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("patches"));
    }

    #[test]
    fn missing_patch_folder_and_fragment_are_named() {
        let e = parse_named(
            "p",
            "name = \"p\"\npatches = \"nope\"\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("patches"));
        assert!(e.message.contains("nope"), "{e}");
        let e = parse_named(
            "p",
            "name = \"p\"\nconfig = [\"config/nope.config\"]\n[source]\nkind = \"debian-source\"\npackage = \"linux-source-6.12\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("config[0]"));
    }

    #[test]
    fn shipped_definitions_all_parse() {
        let dir = KernelsDir { dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels") };
        let all = dir.load_all().unwrap();
        let names = dir.names().unwrap();
        for required in ["debian-6.12", "debian-6.1", "prebuilt-6.12.117", "prebuilt-6.1.0-56"] {
            assert!(names.iter().any(|n| n == required), "missing shipped definition {required}");
        }
        for def in all {
            def.unwrap();
        }
    }

    #[test]
    fn debian_versions_map_to_image_packages() {
        assert_eq!(debian_image_package("6.1.0-47").as_deref(), Some("linux-image-6.1.0-47-amd64-unsigned"));
        assert_eq!(debian_image_package("6.12.100").as_deref(), Some("linux-image-6.12.100+deb12-amd64-unsigned"));
        assert_eq!(debian_image_package("6.12"), None);
        assert_eq!(debian_image_package("5.10.0-30"), None);
    }

    #[test]
    fn add_debian_writes_parseable_definitions_and_keeps_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let kernels = KernelsDir { dir: dir.path().to_path_buf() };
        let b = |n: &str, w: bool| (n.to_string(), w, "bookworm".to_string());
        let out = add_debian_images(&kernels, &["6.1.0-47".into(), "6.12.100".into()], false, &[]).unwrap();
        assert_eq!(out, [b("prebuilt-6.1.0-47", true), b("prebuilt-6.12.100", true)]);
        let def = kernels.load("prebuilt-6.12.100").unwrap();
        assert_eq!(def.source, Source::DebianImage { package: "linux-image-6.12.100+deb12-amd64-unsigned".into() });
        assert!(def.matrix);
        assert_eq!(add_debian_images(&kernels, &["6.1.0-47".into()], false, &[]).unwrap(), [b("prebuilt-6.1.0-47", false)]);
        assert!(add_debian_images(&kernels, &["7.0".into()], false, &[]).is_err());
        // A 7.x image comes from the lab's apt view, with the suite that serves it.
        let image = |v: &str, missing: &[&str]| crate::apt::KernelImage {
            version: v.into(),
            package: format!("linux-image-{v}+deb13-amd64"),
            suite: "trixie-backports".into(),
            missing: missing.iter().map(|m| m.to_string()).collect(),
        };
        let newer = [image("7.2.12", &[]), image("7.0.13", &["linux-modules-7.0.13+deb13-amd64"])];
        let out = add_debian_images(&kernels, &["7.2.12".into()], false, &newer).unwrap();
        assert_eq!(out, [("prebuilt-7.2.12".to_string(), true, "trixie-backports".to_string())]);
        assert_eq!(kernels.load("prebuilt-7.2.12").unwrap().source, Source::DebianImage { package: newer[0].package.clone() });
        // An image whose parts left the archive is refused by name, and skipped by --all.
        let e = add_debian_images(&kernels, &["7.0.13".into()], false, &newer).unwrap_err().to_string();
        assert!(e.contains("linux-image-7.0.13+deb13-amd64 (trixie-backports) cannot boot") && e.contains("linux-modules-7.0.13"), "{e}");
        assert!(!kernels.dir.join("prebuilt-7.0.13.toml").exists());
    }

    #[test]
    fn unknown_kernel_lists_the_known_ones() {
        let dir = KernelsDir { dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels") };
        let e = dir.load("no-such-kernel").unwrap_err().to_string();
        assert!(e.contains("unknown kernel `no-such-kernel`") && e.contains("debian-6.12"), "{e}");
    }
}
