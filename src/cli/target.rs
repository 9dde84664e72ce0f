//! What a command's `TARGET` argument names: a recipe file, a recipe name, or a hash. One
//! resolver for every command that takes one (`run`, `show`, `diff`, `rm`, and any other).
//!
//! The rule, in order (also in `--help`, [`super::args::TARGET_HELP`]):
//! 1. An argument holding a `/` or ending in `.toml` is a recipe file; a missing one is an
//!    error ("no such recipe file: PATH").
//! 2. An exact recipe name of an entry in the store is that name's newest entry (the one its
//!    latest build recorded). A name wins over a hash prefix that it also spells (`cafe`,
//!    `add`): give the full hash, or more digits than any name has, to mean the hash.
//! 3. Otherwise a hash, or a prefix of exactly one entry's hash.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{Global, keyed};
use crate::hash::BuildHash;
use crate::manifest::Manifest;
use crate::store::{Store, StoreError};

/// What an argument resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A recipe file (it exists).
    Recipe(PathBuf),
    /// An entry of the store, by name or hash.
    Entry(BuildHash),
}

/// Whether an argument is meant as a path (rule 1).
pub fn is_path_like(input: &str) -> bool {
    input.contains('/') || input.ends_with(".toml")
}

/// Resolves `input` by the rule in the module doc. A hash or prefix that matches no entry is
/// [`StoreError::Unknown`] (a caller may substitute a full hash from a cache).
pub fn resolve(store: &Store, input: &str) -> Result<Target> {
    if is_path_like(input) {
        let path = Path::new(input);
        if !path.is_file() {
            bail!(
                "no such recipe file: {input}{}",
                if path.is_dir() {
                    " (it is a folder)"
                } else {
                    ""
                }
            );
        }
        return Ok(Target::Recipe(path.to_path_buf()));
    }
    if let Some(hash) = store.resolve_name(input)? {
        return Ok(Target::Entry(hash));
    }
    match store.resolve(input) {
        Ok(hash) => Ok(Target::Entry(hash)),
        Err(StoreError::BadPrefix { .. }) => bail!(
            "no entry named {input:?} in {}: not a recipe name of an entry, a hash or a recipe file (`bottle ls` lists the entries; `bottle build RECIPE` makes one)",
            store.root().display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// The store entry `input` names; a recipe file names the entry it hashes to, which must be
/// in the store already (nothing is built).
pub fn entry(g: &Global, store: &Store, input: &str) -> Result<BuildHash> {
    match resolve(store, input)? {
        Target::Entry(hash) => Ok(hash),
        Target::Recipe(path) => {
            let (_, keys) = keyed(&path, false, g)?;
            let hash = Manifest::of(&keys).hash();
            if !store.contains(&hash) {
                bail!(
                    "{input} hashes to {hash}, which is not in the store {}; `bottle build {input}` makes it",
                    store.root().display()
                );
            }
            Ok(hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_or_toml_makes_a_path() {
        for p in ["r.toml", "./r", "recipes/demo.toml", "/abs/x", "a/b"] {
            assert!(is_path_like(p), "{p}");
        }
        for p in ["demo", "claude-docker", "3f2a", "toml", "x.tom"] {
            assert!(!is_path_like(p), "{p}");
        }
    }

    #[test]
    fn a_missing_path_is_named_and_a_folder_said_to_be_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("store"));
        let missing = dir.path().join("nope.toml");
        let err = resolve(&store, missing.to_str().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no such recipe file: {}", missing.display())
        );
        let folder = format!("{}/", dir.path().display());
        let err = resolve(&store, &folder).unwrap_err().to_string();
        assert!(err.ends_with("(it is a folder)"), "{err}");
        assert!(!dir.path().join("store").exists());
    }
}
