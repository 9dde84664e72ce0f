//! The store's folder: [`Store`], where each part of the layout lies (see the module doc of
//! `crate::store`), creating it, and finding the person's own store. A leaf: the other parts of
//! the store add their methods to [`Store`] in their own files.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{StoreError, io};
use crate::hash::{BuildHash, ComponentId, ComponentKind};

pub const LAYOUT: &str = "v2";

/// A run's record in its folder under `runs/` (see `run::record`): the run may be live.
pub const RUN_RECORD: &str = "record.json";
/// Written into a run's folder by a complete teardown that kept the run's audit log: `bottle
/// gc` removes such folders.
pub const RUN_ENDED: &str = "ended";

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
    pub(super) fn layout(&self) -> PathBuf {
        self.root.join(LAYOUT)
    }
    pub(super) fn entries_dir(&self) -> PathBuf {
        self.layout().join("entries")
    }
    pub(super) fn components_dir(&self, kind: ComponentKind) -> PathBuf {
        self.layout().join("components").join(kind.name())
    }
    /// Builds and imports under way (and leftovers of killed ones, which `bottle gc` removes).
    pub fn tmp(&self) -> PathBuf {
        self.layout().join("tmp")
    }
    pub(super) fn locks(&self) -> PathBuf {
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
pub(super) fn names(dir: &Path) -> Result<Vec<String>, StoreError> {
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
