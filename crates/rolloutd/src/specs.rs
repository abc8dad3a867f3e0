//! `--specs-dir`: the directory (a git checkout) is the desired state. Every
//! `*.yaml`/`*.yml` under it is applied at start and re-read every reconcile
//! interval; a file whose content did not change is not re-applied. An
//! invalid file is logged with file:line:column and skipped, without
//! stopping the others, and what it applied before stays. A rollout whose
//! document disappeared from the directory is no longer managed (its
//! traffic is left as it is).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rollout_core::Time;
use rollout_store::{Change, Store};
use tracing::{info, warn};

/// What the last sync saw: per file, a hash of its text and the rollouts it defined.
#[derive(Debug, Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, (u64, Vec<String>)>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(p);
        }
    }
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Applies the directory; returns the rollouts that were created or changed.
pub async fn sync(
    store: &Store,
    dir: &Path,
    state: &mut DirState,
    now: Time,
) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.sort();
    let mut texts: HashMap<PathBuf, String> = HashMap::new();
    for p in &paths {
        match std::fs::read_to_string(p) {
            Ok(t) => {
                texts.insert(p.clone(), t);
            }
            Err(e) => warn!(file = %p.display(), error = %e, "cannot read spec file"),
        }
    }
    // Templates defined anywhere in the directory or already stored may be
    // named by any file.
    let mut known: BTreeSet<String> = store.templates().await?.into_keys().collect();
    for (p, t) in &texts {
        let mut set = rollout_spec::SpecSet::default();
        let mut diags = Vec::new();
        rollout_spec::parse_source(&p.display().to_string(), t, &mut set, &mut diags);
        known.extend(
            set.templates
                .iter()
                .map(|t| t.value.metadata.name.to_string()),
        );
    }
    let known: Vec<String> = known.into_iter().collect();
    let mut changed = Vec::new();
    let mut seen = BTreeMap::new();
    for p in &paths {
        let Some(text) = texts.get(p) else { continue };
        let h = hash(text);
        if let Some((old, names)) = state.files.get(p) {
            if *old == h {
                seen.insert(p.clone(), (h, names.clone()));
                continue;
            }
        }
        let name = p.display().to_string();
        match rollout_spec::load([(name.as_str(), text.as_str())], &known) {
            Ok(set) => {
                let applied = store.apply(&set, &name, now, false).await?;
                for a in &applied {
                    if a.change != Change::Unchanged {
                        info!(file = %name, kind = a.kind, name = %a.name, change = a.change.as_str(), "applied");
                        if a.kind == "Rollout" {
                            changed.push(a.name.clone());
                        }
                    }
                }
                let names = set
                    .rollouts
                    .iter()
                    .map(|r| r.value.metadata.name.to_string())
                    .collect();
                seen.insert(p.clone(), (h, names));
            }
            Err(diags) => {
                for d in diags {
                    warn!(file = %name, "{d}");
                }
                // Keep what this file applied before.
                if let Some(prev) = state.files.get(p) {
                    seen.insert(p.clone(), prev.clone());
                }
            }
        }
    }
    let now_defined: BTreeSet<&String> = seen.values().flat_map(|(_, n)| n).collect();
    for (p, (_, names)) in &state.files {
        for n in names {
            if !now_defined.contains(n) && store.delete_rollout(n).await? {
                info!(file = %p.display(), rollout = %n, "document removed: no longer managed; traffic left as it is");
            }
        }
    }
    state.files = seen;
    Ok(changed)
}
