//! The spec files of a directory, found the one way both `rolloutctl
//! validate DIR` and the daemon's specs directory find them: `*.yaml` and
//! `*.yml` files, hidden entries skipped, symlinks followed (as a git-sync
//! checkout needs) with loops detected, and bounded ([`MAX_DEPTH`],
//! [`MAX_FILES`], [`MAX_BYTES`]). The one place this crate touches the file
//! system; everything else takes `(name, text)` pairs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Directories deeper than this under the specs directory are an error.
pub const MAX_DEPTH: usize = 16;
/// More spec files than this is an error.
pub const MAX_FILES: usize = 10_000;
/// More bytes of spec files than this in all is an error.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The spec files under `dir`, sorted, or why the directory could not be
/// scanned completely.
pub fn scan_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    let mut bytes = 0u64;
    walk(dir, 0, &mut visited, &mut out, &mut bytes)?;
    out.sort();
    Ok(out)
}

fn walk(
    dir: &Path,
    depth: usize,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    bytes: &mut u64,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{}: more than {MAX_DEPTH} directories deep",
            dir.display()
        ));
    }
    let real = std::fs::canonicalize(dir)
        .map_err(|e| format!("{}: cannot resolve: {e}", dir.display()))?;
    if !visited.insert(real.clone()) {
        return Err(format!(
            "{}: symlink loop (it leads back to {})",
            dir.display(),
            real.display()
        ));
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
        let p = entry.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // Follows symlinks, as a git-sync checkout needs.
        let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(&p, depth + 1, visited, out, bytes)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(p);
            *bytes += meta.len();
            if out.len() > MAX_FILES {
                return Err(format!("more than {MAX_FILES} spec files"));
            }
            if *bytes > MAX_BYTES {
                return Err(format!("more than {MAX_BYTES} bytes of spec files"));
            }
        }
    }
    Ok(())
}
