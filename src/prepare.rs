//! `[guest] prepare`: a program of the recipe's folder that fills what the guest's build
//! context copies (Claude Code's binary, the host's git…), run before the recipe is hashed so
//! the context's digest pins what it wrote. It starts in its own folder with the recipe's
//! folder's environment; its output goes to stderr, each line marked `prepare:`, so a person
//! sees what a long fetch is doing. A program that fails stops the command, naming it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::recipe::Recipe;

/// Runs the recipe's `prepare` program, if it has one.
pub fn run(recipe: &Recipe, quiet: bool) -> Result<()> {
    let Some(given) = &recipe.doc.guest.prepare else {
        return Ok(());
    };
    let program = resolve(recipe, given.get_ref())
        .map_err(|message| anyhow::Error::new(recipe.error_at(given.span(), message)))?;
    let dir = program.parent().unwrap_or(Path::new("."));
    let mut child = Command::new(&program)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start the recipe's prepare program {}",
                program.display()
            )
        })?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let echo = move |r: Box<dyn std::io::Read + Send>| {
        for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
            if !quiet {
                eprintln!("prepare: {line}");
            }
        }
    };
    let t = std::thread::spawn(move || echo(Box::new(out)));
    echo(Box::new(err));
    let _ = t.join();
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "the recipe's prepare program {} failed ({status}); its output above says why",
            program.display()
        );
    }
    Ok(())
}

/// The program's host path: a file of the recipe's folder (no `..`, no absolute path, no
/// link out of it), executable.
fn resolve(recipe: &Recipe, rel: &str) -> Result<PathBuf, String> {
    let folder = recipe.path.parent().unwrap_or(Path::new("."));
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    let folder = std::fs::canonicalize(folder)
        .map_err(|e| format!("cannot read the recipe's folder: {e}"))?;
    if rel.is_empty()
        || !Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "prepare {rel:?} must be a path inside the recipe's folder, relative and without `..`"
        ));
    }
    let path = std::fs::canonicalize(folder.join(rel))
        .map_err(|e| format!("prepare program {rel:?}: {e}; create it or fix the path"))?;
    if !path.starts_with(&folder) {
        return Err(format!("prepare {rel:?} leads out of the recipe's folder"));
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("prepare program {rel:?}: {e}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "prepare program {rel:?} is not an executable file; `chmod +x` it"
        ));
    }
    Ok(path)
}
