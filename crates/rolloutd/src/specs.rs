//! `--specs-dir`: the directory (a git checkout) is the desired state. Every
//! `*.yaml`/`*.yml` under it is applied at start and re-read every reconcile
//! interval; a file whose content did not change is not re-applied. An
//! invalid file is logged with file:line:column and skipped, without
//! stopping the others, and what it applied before stays. A rollout whose
//! document disappeared from the directory is no longer managed (its
//! traffic is left as it is). How each file fared is kept for
//! `GET /api/v1/sources`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rollout_core::Time;
use rollout_store::{Change, Store};
use tracing::{info, warn};

/// What the last sync saw: per file, a hash of its text, the rollouts it
/// defined, and how it fared (for `GET /api/v1/sources`).
#[derive(Debug, Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, (u64, Vec<String>)>,
    report: BTreeMap<PathBuf, Source>,
}

/// One file of the specs directory, as the last sync found it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The file.
    pub file: String,
    /// Whether its documents are valid (and applied).
    pub valid: bool,
    /// The Rollouts it manages (for an invalid file: those it applied before).
    pub rollouts: Vec<String>,
    /// Its problems, each with line, column, path and message.
    pub errors: Vec<serde_json::Value>,
}

impl DirState {
    /// How each file fared in the last sync, by path.
    pub fn sources(&self) -> Vec<Source> {
        self.report.values().cloned().collect()
    }
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

/// Watches `dir` (recursively) and says on `tx` whenever something in it
/// changes. The watcher stops when dropped. The daemon also re-reads the
/// whole directory every interval, in case an event is missed (a symlink
/// swapped by git-sync, a network file system).
pub fn watch(
    dir: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            if !matches!(e.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::Recursive)?;
    Ok(watcher)
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
    let mut report = BTreeMap::new();
    for p in &paths {
        let Some(text) = texts.get(p) else { continue };
        let h = hash(text);
        if let Some((old, names)) = state.files.get(p) {
            if *old == h {
                seen.insert(p.clone(), (h, names.clone()));
                if let Some(r) = state.report.get(p) {
                    report.insert(p.clone(), r.clone());
                }
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
                let names: Vec<String> = set
                    .rollouts
                    .iter()
                    .map(|r| r.value.metadata.name.to_string())
                    .collect();
                let source = Source {
                    file: name.clone(),
                    valid: true,
                    rollouts: names.clone(),
                    errors: Vec::new(),
                };
                report.insert(p.clone(), source);
                seen.insert(p.clone(), (h, names));
            }
            Err(diags) => {
                for d in &diags {
                    warn!(file = %name, "{d}");
                }
                // Keep what this file applied before.
                let before = state.files.get(p).cloned();
                report.insert(
                    p.clone(),
                    Source {
                        file: name.clone(),
                        valid: false,
                        rollouts: before.as_ref().map(|b| b.1.clone()).unwrap_or_default(),
                        errors: diags
                            .iter()
                            .map(|d| {
                                serde_json::json!({
                                    "line": d.line,
                                    "column": d.column,
                                    "path": d.path,
                                    "message": d.message,
                                })
                            })
                            .collect(),
                    },
                );
                if let Some(prev) = before {
                    seen.insert(p.clone(), prev);
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
    state.report = report;
    Ok(changed)
}
