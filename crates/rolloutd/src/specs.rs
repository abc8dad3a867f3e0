//! `--specs-dir`: the directory (a git checkout) is the desired state. Every
//! `*.yaml`/`*.yml` under it is applied at start and re-read every reconcile
//! interval (and when it changes); a file whose content did not change is
//! not re-applied.
//!
//! A scan never deletes by accident. It is *complete* only when every
//! directory could be listed and every file read, within the bounds
//! ([`MAX_DEPTH`], [`MAX_FILES`], [`MAX_BYTES`]; symlink loops are detected),
//! and every file that parsed before still parses. A scan that is not
//! complete changes nothing: nothing applied, nothing deleted; it says so in
//! the log, in `GET /api/v1/sources` and in `/metrics`. (A new file that has
//! never been valid does not block the others: it is reported and skipped.)
//! A rollout leaves the directory only after it was absent from
//! `specsRemovalScans` complete scans in a row spanning `specsRemovalGrace`
//! (defaults 3 and 60 s), so a git-sync swap, a network file system's
//! hiccup or a file truncated while it is rewritten deletes nothing; then it
//! is deleted as by `DELETE` (its traffic returned to stable first).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rollout_core::Time;
use rollout_store::{Change, Deleted, Store};
use tracing::{info, warn};

/// Directories deeper than this under the specs directory are an error.
pub const MAX_DEPTH: usize = 16;
/// More spec files than this is an error.
pub const MAX_FILES: usize = 10_000;
/// More bytes of spec files than this in all is an error.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What the last syncs saw: per file, a hash of its text and the rollouts
/// it defined; how each file fared (for `GET /api/v1/sources`); the
/// rollouts missing from the latest complete scans; and the last scan's
/// outcome.
#[derive(Debug, Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, (u64, Vec<String>)>,
    report: BTreeMap<PathBuf, Source>,
    /// Rollouts the directory defined that complete scans no longer find:
    /// when first missed, and in how many complete scans in a row.
    missing: BTreeMap<String, (Time, u32)>,
    scan: ScanReport,
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

/// How the last scan of the specs directory went.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// Whether it was complete (and so applied); a scan that is not
    /// changes nothing.
    pub complete: bool,
    /// Why it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// Rollouts absent from the directory, waiting out the removal grace
    /// before they are deleted.
    pub pending_removal: Vec<String>,
}

impl DirState {
    /// How each file fared in the last sync, by path.
    pub fn sources(&self) -> Vec<Source> {
        self.report.values().cloned().collect()
    }

    /// How the last scan went.
    pub fn scan(&self) -> ScanReport {
        self.scan.clone()
    }
}

/// When to delete a rollout that left the directory.
#[derive(Debug, Clone, Copy)]
pub struct Removal {
    /// Complete scans in a row without it.
    pub scans: u32,
    /// And at least this long since the first of them.
    pub grace_ms: u64,
}

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

/// What a sync came to.
#[derive(Debug, Default)]
pub struct Synced {
    /// Rollouts created or changed (to wake).
    pub changed: Vec<String>,
    /// Why the scan was not complete (and changed nothing), when it was not.
    pub failed: Option<String>,
}

/// Applies the directory (see the module's header for when it changes
/// nothing and when a rollout leaves).
pub async fn sync(
    store: &Store,
    dir: &Path,
    state: &mut DirState,
    removal: Removal,
    now: Time,
) -> anyhow::Result<Synced> {
    let failed = |state: &mut DirState, why: String| {
        warn!(dir = %dir.display(), error = %why, "the specs directory could not be scanned completely; nothing changed");
        state.scan = ScanReport {
            complete: false,
            error: Some(why.clone()),
            at: Some(now),
            pending_removal: state.missing.keys().cloned().collect(),
        };
        Ok(Synced {
            changed: Vec::new(),
            failed: Some(why),
        })
    };
    let paths = match scan_files(dir) {
        Ok(p) => p,
        Err(why) => return failed(state, why),
    };
    let mut texts: HashMap<PathBuf, String> = HashMap::new();
    for p in &paths {
        match std::fs::read_to_string(p) {
            Ok(t) => {
                texts.insert(p.clone(), t);
            }
            Err(e) => return failed(state, format!("{}: cannot read: {e}", p.display())),
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
    let stored: BTreeSet<String> = store.rollout_names().await?.into_iter().collect();

    // First parse everything; apply only when the scan is complete.
    let mut parsed = Vec::new();
    let mut broken: Option<String> = None;
    let mut seen = BTreeMap::new();
    let mut report = BTreeMap::new();
    for p in &paths {
        let Some(text) = texts.get(p) else { continue };
        let h = hash(text);
        if let Some((old, names)) = state.files.get(p) {
            // Unchanged, and everything it defines still exists (a rollout
            // deleted by hand comes back from its file).
            if *old == h && names.iter().all(|n| stored.contains(n)) {
                seen.insert(p.clone(), (h, names.clone()));
                if let Some(r) = state.report.get(p) {
                    report.insert(p.clone(), r.clone());
                }
                continue;
            }
        }
        let name = p.display().to_string();
        match rollout_spec::load([(name.as_str(), text.as_str())], &known) {
            Ok(set) => parsed.push((p.clone(), h, name, set)),
            Err(diags) => {
                for d in &diags {
                    warn!(file = %name, "{d}");
                }
                let before = state.files.get(p).cloned();
                let managed = before.as_ref().map(|b| b.1.clone()).unwrap_or_default();
                if !managed.is_empty() && broken.is_none() {
                    // It parsed before: perhaps half-written. The whole scan
                    // waits for it.
                    let first = diags.first().map(ToString::to_string).unwrap_or_default();
                    broken = Some(format!("{name} no longer parses (it did before): {first}"));
                }
                report.insert(
                    p.clone(),
                    Source {
                        file: name.clone(),
                        valid: false,
                        rollouts: managed,
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
            }
        }
    }

    if let Some(why) = broken {
        // Nothing applied; each file's problems shown with their places.
        for (p, source) in report {
            if !source.valid {
                state.report.insert(p, source);
            }
        }
        return failed(state, why);
    }

    // Complete: apply.
    let mut changed = Vec::new();
    for (p, h, name, set) in parsed {
        let applied = match store.apply(&set, &name, now, false).await {
            Ok(a) => a,
            Err(e @ rollout_store::StoreError::Owned { .. }) => {
                warn!(file = %name, error = %e, "refused");
                report.insert(
                    p.clone(),
                    Source {
                        file: name.clone(),
                        valid: false,
                        rollouts: Vec::new(),
                        errors: vec![serde_json::json!({"message": e.to_string()})],
                    },
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
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
        report.insert(
            p.clone(),
            Source {
                file: name.clone(),
                valid: true,
                rollouts: names.clone(),
                errors: Vec::new(),
            },
        );
        seen.insert(p, (h, names));
    }

    // Rollouts the directory defined before and no longer does wait out
    // the grace; those defined again stop waiting.
    let now_defined: BTreeSet<&String> = seen.values().flat_map(|(_, n)| n).collect();
    let before: BTreeSet<String> = state
        .files
        .values()
        .flat_map(|(_, n)| n.iter().cloned())
        .chain(state.missing.keys().cloned())
        .collect();
    state.missing.retain(|n, _| !now_defined.contains(n));
    for n in before {
        if now_defined.contains(&n) {
            continue;
        }
        let entry = state.missing.entry(n.clone()).or_insert((now, 0));
        entry.1 += 1;
        let (since, scans) = *entry;
        if scans >= removal.scans && now.since(since) >= removal.grace_ms {
            match store
                .delete_or_hand_back(&n, "specs-dir", false, now)
                .await?
            {
                Deleted::Gone => {
                    info!(rollout = %n, scans, "document removed from the specs directory: deleted")
                }
                Deleted::HandingBack => {
                    info!(rollout = %n, scans, "document removed from the specs directory: returning its traffic to stable, then deleting it")
                }
                Deleted::NotFound => {}
            }
            state.missing.remove(&n);
        } else {
            info!(rollout = %n, scans, "absent from the specs directory; kept until the removal grace has passed");
        }
    }
    state.files = seen;
    state.report = report;
    state.scan = ScanReport {
        complete: true,
        error: None,
        at: Some(now),
        pending_removal: state.missing.keys().cloned().collect(),
    };
    Ok(Synced {
        changed,
        failed: None,
    })
}
