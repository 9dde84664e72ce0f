//! What keeps an entry, and how a name finds one.
//!
//! Three kinds of files each hold one entry hash, and `bottle gc` keeps every entry one names:
//!
//! - `latest/NAME`: the newest entry built under the recipe name NAME. Every `bottle build`
//!   (and `bottle run RECIPE`) writes it, as Nix's `result` link is replaced by each build, so
//!   what a person just built always stays; a newer build of the name frees the older entry.
//! - `roots/NAME`: a root a person named (`bottle build --root NAME`); it stays until replaced.
//! - `pins/RUNID`: the entry a run uses, until its teardown (or `bottle down`).
//!
//! A recipe name resolves to its `latest/` entry; without one (an entry pulled, or built
//! before names were recorded), to the newest entry of that name by publication time.
//! Machine-local too: `local/build-parents/guest-HASH` holds the engine image a guest build
//! left as its build cache, which `bottle gc` removes with the component.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::{StoreError, io};
use super::layout::{Store, names};
use crate::hash::{BuildHash, ComponentId};

impl Store {
    /// Latest entry per recipe name: one file per name, holding an entry hash.
    pub fn latest_dir(&self) -> PathBuf {
        self.layout().join("latest")
    }

    fn build_parents(&self) -> PathBuf {
        self.local().join("build-parents")
    }

    /// Records a root: `bottle gc` keeps the entry it names.
    pub fn add_root(&self, name: &str, hash: &BuildHash) -> Result<(), StoreError> {
        check_name(name)?;
        self.init()?;
        write_atomic(&self.roots(), name, &format!("{hash}\n"))
    }

    /// Records `hash` as the newest entry of the recipe name `name` (replacing the older one,
    /// which `bottle gc` may then remove).
    pub fn set_latest(&self, name: &str, hash: &BuildHash) -> Result<(), StoreError> {
        check_name(name)?;
        self.init()?;
        write_atomic(&self.latest_dir(), name, &format!("{hash}\n"))
    }

    /// Root name → hash.
    pub fn roots_list(&self) -> Result<Vec<(String, BuildHash)>, StoreError> {
        read_hash_files(&self.roots())
    }

    /// Recipe name → its newest entry, as `bottle build` recorded them.
    pub fn latest_list(&self) -> Result<Vec<(String, BuildHash)>, StoreError> {
        read_hash_files(&self.latest_dir())
    }

    /// Pins `hash` for the run `run_id`: gc keeps the entry until [`Store::unpin`]. Fails when
    /// the entry is not in the store (checked under `gc.lock`, so gc cannot remove it between
    /// the check and the pin).
    pub fn pin(&self, run_id: &str, hash: &BuildHash) -> Result<(), StoreError> {
        self.init()?;
        let _gc = self.gc_guard()?;
        if !self.contains(hash) {
            return Err(StoreError::Missing {
                hash: *hash,
                store: self.root().to_path_buf(),
            });
        }
        write_atomic(&self.pins(), run_id, &format!("{hash}\n"))
    }

    /// Removes a run's pin (no error when there is none).
    pub fn unpin(&self, run_id: &str) -> Result<(), StoreError> {
        remove_if_present(&self.pins().join(run_id))
    }

    /// Run id → pinned hash.
    pub fn pins_list(&self) -> Result<Vec<(String, BuildHash)>, StoreError> {
        read_hash_files(&self.pins())
    }

    /// When an entry was published (its manifest file's modification time).
    pub fn entry_time(&self, hash: &BuildHash) -> Option<SystemTime> {
        fs::metadata(self.entry_file(hash))
            .and_then(|m| m.modified())
            .ok()
    }

    /// The newest entry of the recipe name `name`: its `latest/` record when that names an
    /// entry of this name in the store, else the newest such entry by publication time.
    pub fn resolve_name(&self, name: &str) -> Result<Option<BuildHash>, StoreError> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let named = |h: &BuildHash| matches!(self.manifest(h), Ok(Some(m)) if m.name == name);
        if let Some((_, h)) = self.latest_list()?.into_iter().find(|(n, _)| n == name)
            && named(&h)
        {
            return Ok(Some(h));
        }
        let newest = self
            .hashes()?
            .into_iter()
            .filter(named)
            .max_by_key(|h| (self.entry_time(h), *h));
        Ok(newest)
    }

    /// Records the engine image a guest build left as its build cache (the built image's
    /// parent), so `bottle gc` removes it with the component.
    pub fn note_build_parent(&self, id: &ComponentId, image: &str) -> Result<(), StoreError> {
        let name = format!("{}-{}", id.kind, id.hash);
        write_atomic(&self.build_parents(), &name, &format!("{image}\n"))
    }

    /// The build-cache image recorded for a component, if any.
    pub fn build_parent(&self, id: &ComponentId) -> Option<String> {
        let path = self
            .build_parents()
            .join(format!("{}-{}", id.kind, id.hash));
        let text = fs::read_to_string(path).ok()?;
        let image = text.trim();
        let valid = image.len() <= 80
            && image.starts_with("sha256:")
            && image[7..].bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| image.to_string())
    }

    /// Forgets a component's build-cache image (gc removed the component).
    pub(super) fn forget_build_parent(&self, id: &ComponentId) -> Result<(), StoreError> {
        remove_if_present(
            &self
                .build_parents()
                .join(format!("{}-{}", id.kind, id.hash)),
        )
    }

    /// Removes every `latest/` and `roots/` file naming `hash`; returns them as
    /// `latest:NAME` and `root:NAME`.
    pub(super) fn drop_roots_of(&self, hash: &BuildHash) -> Result<Vec<String>, StoreError> {
        let mut dropped = Vec::new();
        for (kind, dir, list) in [
            ("latest", self.latest_dir(), self.latest_list()?),
            ("root", self.roots(), self.roots_list()?),
        ] {
            for (name, h) in list {
                if &h == hash {
                    remove_if_present(&dir.join(&name))?;
                    dropped.push(format!("{kind}:{name}"));
                }
            }
        }
        Ok(dropped)
    }
}

/// Root and recipe names: letters, digits, '-', '_' or '.', not starting with '.'.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() > 128
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(StoreError::BadRoot {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `dir/name` by one rename.
fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(io(dir))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io(tmp.path()))?;
    // As every file of the store: readable by all (a temporary file starts private).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io(tmp.path()))?;
    let dest = dir.join(name);
    tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
    Ok(())
}

/// Files of a folder that each hold one entry hash: name → hash, sorted (dotfiles skipped).
fn read_hash_files(dir: &Path) -> Result<Vec<(String, BuildHash)>, StoreError> {
    let mut out = Vec::new();
    for name in names(dir)? {
        if name.starts_with('.') {
            continue;
        }
        let text = fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if let Some(h) = BuildHash::parse(text.trim()) {
            out.push((name, h));
        }
    }
    out.sort();
    Ok(out)
}
