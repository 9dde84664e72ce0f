//! Store: the home of built bottles — entries as closures of content-addressed components.
//!
//! ```text
//! STORE/                        the store root: --store, BOTTLE_STORE, else the person's own,
//!                               $XDG_CACHE_HOME/bottle or ~/.cache/bottle ([`Store::default_root`])
//! ├── CACHEDIR.TAG              marks the folder as a cache for backup tools
//! ├── .gitignore                "*": a store is never committed
//! └── v2/                       layout version; `bottle gc` removes other vN folders
//!     ├── entries/HASH.json     an entry's manifest: its name and its components' hashes
//!     ├── components/           each stored once, shared by every entry that names it
//!     │   ├── guest/HASH/       record.json, image.tar [, guest.smolmachine]
//!     │   ├── bundle/HASH/      record.json, image.tar
//!     │   └── config/HASH/      record.json, guest.json, bundle.json, daemon configs, provision/
//!     ├── latest/NAME           the newest entry built under recipe name NAME (every build)
//!     ├── roots/NAME            gc roots: a file holding an entry hash (`bottle build --root`)
//!     ├── pins/RUNID            the entry a run uses: gc keeps it until `bottle down`
//!     ├── tmp/                  builds and imports under way, published by one rename
//!     ├── locks/                one lock per entry and component, and gc.lock
//!     ├── local/                machine-local, never shared: verified/ markers; pull/ what
//!     │                         pulls put together (gc empties it); chunk-lists/ of components
//!     └── runs/RUNID/           machine-local: a run's record, its CA (keys mode 0600,
//!                               removed at teardown), the folders its bundle mounts; after
//!                               teardown only its audit log and `ended`, until `bottle gc`
//! ```
//!
//! A component or an entry appears by one `rename(2)` of a finished temporary folder or file,
//! so a reader sees it whole or not at all; its `record.json` (a component's) is written last.
//! A build killed at any moment leaves only a `tmp/` folder, which `bottle gc` removes.
//! Nothing is changed in place. Whatever arrives from elsewhere ([`Store::import_component`],
//! [`Store::import_entry`]) is checked byte for byte against its record before it is
//! published. `local/` and `runs/` hold what belongs to this machine only: they are never
//! part of a component and never leave it.
//!
//! Locks: builds and imports hold `gc.lock` shared while they work and `bottle gc` holds it
//! exclusively, so gc never removes a component a build is about to name; each entry and each
//! component has its own lock, so concurrent builds of one thing build it once.

mod gc;
mod lock;
mod publish;
mod roots;
mod verify;

use std::fs;
use std::path::{Path, PathBuf};

pub use gc::{GcReport, RmReport};
pub use lock::{GcGuard, StoreLock};
pub use publish::Staged;
pub(crate) use publish::rel_path;
pub use verify::{Component, Damage, Entry};

use crate::hash::{BuildHash, ComponentHash, ComponentId, ComponentKind};
use crate::manifest::{Manifest, ManifestError, RECORD_FILE, Record};

pub const LAYOUT: &str = "v2";

/// A run's record in its folder under `runs/` (see `run::record`): the run may be live.
pub const RUN_RECORD: &str = "record.json";
/// Written into a run's folder by a complete teardown that kept the run's audit log: `bottle
/// gc` removes such folders.
pub const RUN_ENDED: &str = "ended";

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

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store at `root`, made absolute against the current folder: its paths are handed to
    /// the engine (bind mounts), which resolves nothing relative.
    pub fn new(root: impl Into<PathBuf>) -> Store {
        let root = root.into();
        Store {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }

    /// The person's own store, one per user as uv and cargo keep theirs, so `bottle run HASH`
    /// finds what was built or pulled from any folder: `$XDG_CACHE_HOME/bottle`, else
    /// `$HOME/.cache/bottle`. A relative `XDG_CACHE_HOME` is ignored, as the XDG spec says.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        default_root_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    fn layout(&self) -> PathBuf {
        self.root.join(LAYOUT)
    }
    fn entries_dir(&self) -> PathBuf {
        self.layout().join("entries")
    }
    fn components_dir(&self, kind: ComponentKind) -> PathBuf {
        self.layout().join("components").join(kind.name())
    }
    /// Builds and imports under way (and leftovers of killed ones, which `bottle gc` removes).
    pub fn tmp(&self) -> PathBuf {
        self.layout().join("tmp")
    }
    fn locks(&self) -> PathBuf {
        self.layout().join("locks")
    }
    /// gc roots: one file per root name, holding an entry hash.
    pub fn roots(&self) -> PathBuf {
        self.layout().join("roots")
    }
    /// Pins of runs: one file per run id, holding the entry hash the run uses.
    pub fn pins(&self) -> PathBuf {
        self.layout().join("pins")
    }
    /// Machine-local state: never part of a component, never shared.
    pub fn local(&self) -> PathBuf {
        self.layout().join("local")
    }
    /// Run records and run folders (machine-local).
    pub fn runs(&self) -> PathBuf {
        self.layout().join("runs")
    }

    /// The manifest file of an entry.
    pub fn entry_file(&self, hash: &BuildHash) -> PathBuf {
        self.entries_dir().join(format!("{hash}.json"))
    }

    /// The folder of a component.
    pub fn component_dir(&self, id: &ComponentId) -> PathBuf {
        self.components_dir(id.kind).join(id.hash.hex())
    }

    /// Creates the layout if it is missing. Only commands that write call this.
    pub fn init(&self) -> Result<(), StoreError> {
        let mut dirs = vec![
            self.entries_dir(),
            self.tmp(),
            self.locks(),
            self.roots(),
            self.latest_dir(),
            self.pins(),
            self.local(),
            self.runs(),
        ];
        dirs.extend(ComponentKind::ALL.map(|k| self.components_dir(k)));
        for d in dirs {
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let text = "Signature: 8a477f597d28d172789f06886806bc55\n# This folder is a bottle store; see https://bford.info/cachedir/\n";
            fs::write(&tag, text).map_err(io(&tag))?;
        }
        let ignore = self.root.join(".gitignore");
        if !ignore.exists() {
            fs::write(&ignore, "*\n").map_err(io(&ignore))?;
        }
        Ok(())
    }

    /// The manifest of a published entry, checked to hash to the entry's name.
    pub fn manifest(&self, hash: &BuildHash) -> Result<Option<Manifest>, StoreError> {
        let path = self.entry_file(hash);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let origin = path.display().to_string();
        let m = Manifest::parse(&bytes, &origin)?;
        let got = m.hash();
        if &got != hash {
            return Err(StoreError::Manifest(ManifestError::Invalid {
                origin,
                message: format!("it hashes to {got}, not to the entry's name"),
            }));
        }
        Ok(Some(m))
    }

    pub fn contains(&self, hash: &BuildHash) -> bool {
        self.entry_file(hash).is_file()
    }

    pub fn has_component(&self, id: &ComponentId) -> bool {
        self.component_dir(id).join(RECORD_FILE).is_file()
    }

    /// A component's record, checked against the component's name.
    pub fn record(&self, id: &ComponentId) -> Result<Option<Record>, StoreError> {
        let path = self.component_dir(id).join(RECORD_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Record::read(&path, id)?))
    }

    /// Every published entry, sorted by hash.
    pub fn hashes(&self) -> Result<Vec<BuildHash>, StoreError> {
        let mut out: Vec<BuildHash> = names(&self.entries_dir())?
            .iter()
            .filter_map(|n| n.strip_suffix(".json").and_then(BuildHash::parse))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every component of a kind (published or not: any folder named by a hash), sorted.
    pub fn component_hashes(&self, kind: ComponentKind) -> Result<Vec<ComponentHash>, StoreError> {
        let mut out: Vec<ComponentHash> = names(&self.components_dir(kind))?
            .iter()
            .filter_map(|n| ComponentHash::parse(n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// A full hash from a hash or a unique prefix of one.
    pub fn resolve(&self, input: &str) -> Result<BuildHash, StoreError> {
        let prefix = input.trim();
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(StoreError::BadPrefix {
                input: input.to_string(),
            });
        }
        let matches: Vec<BuildHash> = self
            .hashes()?
            .into_iter()
            .filter(|h| h.hex().starts_with(prefix))
            .collect();
        match matches.len() {
            0 => Err(StoreError::Unknown {
                input: input.to_string(),
                store: self.root.clone(),
            }),
            1 => Ok(matches[0]),
            _ => Err(StoreError::Ambiguous {
                input: input.to_string(),
                candidates: matches.iter().map(|h| h.to_string()).collect(),
            }),
        }
    }
}

fn default_root_from(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, StoreError> {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute(xdg_cache_home) {
        return Ok(xdg.join("bottle"));
    }
    match absolute(home) {
        Some(home) => Ok(home.join(".cache").join("bottle")),
        None => Err(StoreError::NoDefault),
    }
}

/// The names in a folder (none when it does not exist).
fn names(dir: &Path) -> Result<Vec<String>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut out = Vec::new();
            for ent in rd {
                let ent = ent.map_err(io(dir))?;
                out.push(ent.file_name().to_string_lossy().into_owned());
            }
            Ok(out)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Bytes under a path (files only, not following links).
pub fn du(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_store_is_the_persons_own() {
        let got = |x: Option<&str>, h: Option<&str>| {
            default_root_from(x.map(Into::into), h.map(Into::into))
        };
        assert_eq!(
            got(Some("/x/cache"), Some("/home/a")).unwrap(),
            PathBuf::from("/x/cache/bottle")
        );
        assert_eq!(
            got(None, Some("/home/a")).unwrap(),
            PathBuf::from("/home/a/.cache/bottle")
        );
        // A relative XDG_CACHE_HOME is ignored (the XDG spec), and so is a relative HOME.
        assert_eq!(
            got(Some("rel"), Some("/home/a")).unwrap(),
            PathBuf::from("/home/a/.cache/bottle")
        );
        assert!(matches!(
            got(Some("rel"), Some("home")),
            Err(StoreError::NoDefault)
        ));
        assert!(matches!(got(None, None), Err(StoreError::NoDefault)));
    }
}
