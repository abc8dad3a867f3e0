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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

pub use rollout_api::{ScanReport, Source};
use rollout_core::Time;
use rollout_store::{Change, Deleted, Store, StoreError};
use tracing::{info, warn};

pub use rollout_spec::files::{scan_files, MAX_BYTES, MAX_DEPTH, MAX_FILES};

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
    /// Rollouts that left the directory: deleted, or returning their
    /// traffic to stable before they are (to wake, as `DELETE` does: its
    /// reconcile hands the traffic back).
    pub removed: Vec<String>,
    /// Why the scan was not complete (and changed nothing), when it was not.
    pub failed: Option<String>,
}

/// The files of one scan, each with its text.
type Texts = HashMap<PathBuf, String>;

/// The files of one scan, each with a hash of its text.
type Hashes = HashMap<PathBuf, u64>;

/// A file's documents, or its problems.
type Loaded = Result<rollout_spec::SpecSet, Vec<rollout_spec::Diagnostic>>;

/// What a complete scan found before anything is applied.
#[derive(Default)]
struct Scan {
    /// Files to apply: path, text hash, name, documents.
    parsed: Vec<(PathBuf, u64, String, rollout_spec::SpecSet)>,
    /// Why the whole scan must wait (a file that parsed before no longer
    /// does: perhaps half-written).
    broken: Option<String>,
    /// Files unchanged since the last sync, with what they define.
    seen: BTreeMap<PathBuf, (u64, Vec<String>)>,
    /// How each file fared.
    report: BTreeMap<PathBuf, Source>,
}

/// Applies the directory (see the module's header for when it changes
/// nothing and when a rollout leaves).
pub async fn sync(
    store: &Store,
    dir: &Path,
    state: &mut DirState,
    removal: Removal,
    now: Time,
) -> Result<Synced, StoreError> {
    let (paths, texts, hashes) = match read_files(dir).await {
        Ok(read) => read,
        Err(why) => return Ok(failed(dir, state, why, now)),
    };
    let stored_templates: Vec<String> = store.templates().await?.into_keys().collect();
    let stored: BTreeSet<String> = store.rollout_names().await?.into_iter().collect();
    // The files to parse: new, changed, or defining something that is gone
    // (a rollout deleted by hand comes back from its file).
    let to_parse: Vec<PathBuf> = paths
        .iter()
        .filter(|p| {
            hashes
                .get(*p)
                .is_some_and(|h| !unchanged(state, p, *h, &stored))
        })
        .cloned()
        .collect();
    let loaded = match parse_files(texts, to_parse, stored_templates).await {
        Ok(done) => done,
        Err(why) => return Ok(failed(dir, state, why, now)),
    };
    // First parse everything; apply only when the scan is complete.
    let mut scan = match classify(&paths, &hashes, loaded, state, &stored) {
        Ok(scan) => scan,
        Err(why) => return Ok(failed(dir, state, why, now)),
    };
    if let Some(why) = scan.broken.take() {
        // Nothing applied; each file's problems shown with their places.
        for (p, source) in scan.report {
            if !source.valid {
                state.report.insert(p, source);
            }
        }
        return Ok(failed(dir, state, why, now));
    }
    let changed = apply_parsed(store, &mut scan, now).await?;
    let removed = remove_missing(store, state, &scan.seen, removal, now).await?;
    state.files = scan.seen;
    state.report = scan.report;
    state.scan = ScanReport {
        complete: true,
        error: None,
        at: Some(now),
        pending_removal: state.missing.keys().cloned().collect(),
    };
    Ok(Synced {
        changed,
        removed,
        failed: None,
    })
}

/// A scan that could not complete: it changes nothing, and says why.
fn failed(dir: &Path, state: &mut DirState, why: String, now: Time) -> Synced {
    warn!(dir = %dir.display(), error = %why, "the specs directory could not be scanned completely; nothing changed");
    state.scan = ScanReport {
        complete: false,
        error: Some(why.clone()),
        at: Some(now),
        pending_removal: state.missing.keys().cloned().collect(),
    };
    Synced {
        changed: Vec::new(),
        removed: Vec::new(),
        failed: Some(why),
    }
}

/// Whether a file is unchanged since the last sync and everything it
/// defines still exists (a rollout deleted by hand comes back from its file).
fn unchanged(state: &DirState, p: &Path, h: u64, stored: &BTreeSet<String>) -> bool {
    state
        .files
        .get(p)
        .is_some_and(|(old, names)| *old == h && names.iter().all(|n| stored.contains(n)))
}

/// Reads every spec file of the directory, with a hash of each text.
/// Reading and hashing are blocking work: on a blocking thread, never on
/// the workers that run the reconciles.
async fn read_files(dir: &Path) -> Result<(Vec<PathBuf>, Texts, Hashes), String> {
    let dir = dir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let paths = scan_files(&dir)?;
        let mut texts: Texts = HashMap::new();
        let mut hashes: Hashes = HashMap::new();
        for p in &paths {
            let t = std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
            hashes.insert(p.clone(), hash(&t));
            texts.insert(p.clone(), t);
        }
        Ok((paths, texts, hashes))
    })
    .await;
    match read {
        Ok(read) => read,
        Err(e) => Err(format!("the scan stopped: {e}")),
    }
}

/// Parses the files in `to_parse` (CPU work, on a blocking thread), each
/// against the templates defined anywhere in the directory or stored.
async fn parse_files(
    texts: Texts,
    to_parse: Vec<PathBuf>,
    stored_templates: Vec<String>,
) -> Result<HashMap<PathBuf, Loaded>, String> {
    let parsed = tokio::task::spawn_blocking(move || {
        // Templates defined anywhere in the directory or already stored
        // may be named by any file.
        let mut known: BTreeSet<String> = stored_templates.into_iter().collect();
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
        let loaded: HashMap<PathBuf, Loaded> = to_parse
            .into_iter()
            .filter_map(|p| {
                let text = texts.get(&p)?;
                let name = p.display().to_string();
                let set = rollout_spec::load([(name.as_str(), text.as_str())], &known);
                Some((p, set))
            })
            .collect();
        loaded
    })
    .await;
    parsed.map_err(|e| format!("parsing stopped: {e}"))
}

/// Sorts the scan's files: unchanged, parsed (to apply), or invalid (a
/// file that parsed before and no longer does holds the whole scan back).
fn classify(
    paths: &[PathBuf],
    hashes: &Hashes,
    mut loaded: HashMap<PathBuf, Loaded>,
    state: &DirState,
    stored: &BTreeSet<String>,
) -> Result<Scan, String> {
    let mut scan = Scan::default();
    for p in paths {
        let Some(&h) = hashes.get(p) else { continue };
        if unchanged(state, p, h, stored) {
            if let Some((_, names)) = state.files.get(p) {
                scan.seen.insert(p.clone(), (h, names.clone()));
            }
            if let Some(r) = state.report.get(p) {
                scan.report.insert(p.clone(), r.clone());
            }
            continue;
        }
        let name = p.display().to_string();
        // Cannot be missing (the same test chose what to parse); if it
        // were, the scan is incomplete and changes nothing.
        let Some(loaded) = loaded.remove(p) else {
            return Err(format!("{name}: was not parsed"));
        };
        match loaded {
            Ok(set) => scan.parsed.push((p.clone(), h, name, set)),
            Err(diags) => {
                for d in &diags {
                    warn!(file = %name, "{d}");
                }
                let managed = state.files.get(p).map(|b| b.1.clone()).unwrap_or_default();
                if !managed.is_empty() && scan.broken.is_none() {
                    // It parsed before: perhaps half-written. The whole scan
                    // waits for it.
                    let first = diags.first().map(ToString::to_string).unwrap_or_default();
                    scan.broken = Some(format!("{name} no longer parses (it did before): {first}"));
                }
                scan.report
                    .insert(p.clone(), invalid_source(name, managed, &diags));
            }
        }
    }
    Ok(scan)
}

/// An invalid file's report: its problems with their places.
fn invalid_source(
    file: String,
    rollouts: Vec<String>,
    diags: &[rollout_spec::Diagnostic],
) -> Source {
    Source {
        file,
        valid: false,
        rollouts,
        lines: Default::default(),
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
    }
}

/// Applies the parsed files of a complete scan; returns the rollouts
/// created or changed (to wake).
async fn apply_parsed(
    store: &Store,
    scan: &mut Scan,
    now: Time,
) -> Result<Vec<String>, StoreError> {
    let mut changed = Vec::new();
    for (p, h, name, set) in std::mem::take(&mut scan.parsed) {
        let applied = match store.apply(&set, &name, now, false).await {
            Ok(a) => a,
            Err(e @ rollout_store::StoreError::Owned { .. }) => {
                warn!(file = %name, error = %e, "refused");
                scan.report.insert(
                    p.clone(),
                    Source {
                        file: name.clone(),
                        valid: false,
                        rollouts: Vec::new(),
                        lines: Default::default(),
                        errors: vec![serde_json::json!({"message": e.to_string()})],
                    },
                );
                continue;
            }
            Err(e) => return Err(e),
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
        let lines = set
            .rollouts
            .iter()
            .map(|r| (r.value.metadata.name.to_string(), r.pos.line))
            .collect();
        scan.report.insert(
            p.clone(),
            Source {
                file: name.clone(),
                valid: true,
                rollouts: names.clone(),
                lines,
                errors: Vec::new(),
            },
        );
        scan.seen.insert(p, (h, names));
    }
    Ok(changed)
}

/// Rollouts the directory defined before and no longer does wait out the
/// grace (complete scans and time); those defined again stop waiting.
/// Returns those it deleted or began to hand back.
async fn remove_missing(
    store: &Store,
    state: &mut DirState,
    seen: &BTreeMap<PathBuf, (u64, Vec<String>)>,
    removal: Removal,
    now: Time,
) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
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
            removed.push(n);
        } else {
            info!(rollout = %n, scans, "absent from the specs directory; kept until the removal grace has passed");
        }
    }
    Ok(removed)
}
