//! `rolloutctl validate`: reads files and directories, checks every document
//! as one set with `rollout-spec`, prints `FILE:LINE:COLUMN: message` lines.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rollout_api::println;

/// A file to check, or the reason it could not be read.
pub type Input = (String, Result<String, String>);

/// Reads `path` (a file, or every YAML file under a directory) into `out`.
pub fn collect(path: &Path, out: &mut Vec<Input>) {
    let shown = path.display().to_string();
    if path == Path::new("-") {
        let mut text = String::new();
        let read = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
        out.push((
            "<stdin>".into(),
            read.map(|_| text)
                .map_err(|e| format!("cannot read standard input: {e}")),
        ));
        return;
    }
    if path.is_dir() {
        let found = match rollout_spec::files::scan_files(path) {
            Ok(found) => found,
            Err(e) => {
                out.push((shown, Err(e)));
                return;
            }
        };
        if found.is_empty() {
            out.push((
                shown,
                Err("no *.yaml or *.yml files in this directory".into()),
            ));
        }
        for f in found {
            read(&f, out);
        }
    } else {
        read(path, out);
    }
}

fn read(path: &Path, out: &mut Vec<Input>) {
    let shown = path.display().to_string();
    let text = fs::read(path)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|b| String::from_utf8(b).map_err(|_| "the file is not UTF-8 text".to_string()));
    out.push((shown, text));
}

/// Runs the command; the exit code is the contract's.
pub fn run(paths: &[PathBuf]) -> ExitCode {
    let mut inputs = Vec::new();
    for p in paths {
        collect(p, &mut inputs);
    }
    let mut lines = Vec::new();
    let readable: Vec<(&str, &str)> = inputs
        .iter()
        .filter_map(|(name, text)| match text {
            Ok(t) => Some((name.as_str(), t.as_str())),
            Err(e) => {
                lines.push(format!("{name}:1:1: {e}"));
                None
            }
        })
        .collect();
    let files = readable.len();
    match rollout_spec::load(readable, &[]) {
        Ok(set) if lines.is_empty() => {
            println!(
                "{} valid in {files} file{}: {} Rollout{}, {} AnalysisTemplate{}",
                plural(set.len(), "document"),
                if files == 1 { "" } else { "s" },
                set.rollouts.len(),
                if set.rollouts.len() == 1 { "" } else { "s" },
                set.templates.len(),
                if set.templates.len() == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        Ok(_) => report(&lines),
        Err(diags) => {
            lines.extend(diags.iter().map(ToString::to_string));
            report(&lines)
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn report(lines: &[String]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    ExitCode::from(1)
}
