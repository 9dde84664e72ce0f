//! The store's errors, and [`Damage`]: a problem found in an entry or in what an import
//! brings. A leaf: every part of the store returns these.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hash::{BuildHash, ComponentId};
use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{input:?} is not a hash or hash prefix: use hex digits 0-9a-f (`bottle ls` lists entries)"
    )]
    BadPrefix { input: String },
    #[error(
        "no store entry matches {input:?} in {store}; `bottle ls` lists the entries, `bottle build RECIPE` makes one"
    )]
    Unknown { input: String, store: PathBuf },
    #[error("{input:?} matches {} entries; give more digits:\n  {}", candidates.len(), candidates.join("\n  "))]
    Ambiguous {
        input: String,
        candidates: Vec<String>,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "no store folder: neither XDG_CACHE_HOME nor HOME is set to an absolute path; pass --store DIR or set BOTTLE_STORE"
    )]
    NoDefault,
    #[error("root name {name:?} must be letters, digits, '-', '_' or '.'")]
    BadRoot { name: String },
    #[error("entry {hash} is in use by run {run}; end the run first (`bottle down {run}`)")]
    Pinned { hash: BuildHash, run: String },
    #[error("entry {hash} is not in the store {store}; build it or pull it first")]
    Missing { hash: BuildHash, store: PathBuf },
    #[error("component {id} of entry {entry} is missing; `bottle build` of its recipe rebuilds it")]
    MissingComponent { entry: BuildHash, id: ComponentId },
    #[error("entry {hash} is damaged: {}; remove it with `bottle gc` and build it again", list(.damage))]
    Damaged {
        hash: BuildHash,
        damage: Vec<Damage>,
    },
    #[error("refused to import {what}: {}; nothing was added to the store", list(.damage))]
    Refused { what: String, damage: Vec<Damage> },
}

fn list(damage: &[Damage]) -> String {
    damage
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An I/O error at `path`, for `map_err`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A problem found in an entry: the path (`manifest`, or `KIND/FILE` of a component) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub path: String,
    pub problem: String,
}

impl Damage {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Damage {
        Damage {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}
