//! `lab list`: the definitions, and what the cache holds of each.

use super::table;
use crate::cache::Entry;
use crate::definition::{Definition, DefinitionError, Source};

fn source_kind(source: &Source) -> &'static str {
    match source {
        Source::DebianSource { .. } => "debian-source",
        Source::Git { .. } => "git",
        Source::TarballPath { .. } | Source::TarballUrl { .. } => "tarball",
        Source::DebianImage { .. } => "debian-image",
    }
}

/// A row per definition (its cache entries: release and key); a definition that does not load is
/// listed after the table with its error, which names the file and the field.
pub fn list(defs: &[Result<Definition, DefinitionError>], entries: &[Entry]) -> String {
    let rows: Vec<Vec<String>> = defs
        .iter()
        .flatten()
        .map(|def| {
            let cached: Vec<String> = entries
                .iter()
                .filter(|e| e.manifest.definition == def.name)
                .map(|e| format!("{} [{}]", e.manifest.release, &e.manifest.key[..8]))
                .collect();
            let cached = if cached.is_empty() { "-".to_string() } else { cached.join(", ") };
            vec![def.name.clone(), source_kind(&def.source).to_string(), if def.matrix { "yes" } else { "" }.to_string(), cached]
        })
        .collect();
    let mut out = table::plain(&["KERNEL", "SOURCE", "MATRIX", "CACHED"], &rows, &[]);
    for e in defs.iter().filter_map(|d| d.as_ref().err()) {
        out.push_str(&format!("{e}\n"));
    }
    out
}
