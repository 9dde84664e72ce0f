//! What the store keeps and what `bottle gc` removes.
//!
//! Kept: entries named by a root (`roots/NAME`, made by `bottle build --root`), by a pin
//! (`pins/RUNID`, made by `bottle run` for as long as the run may use the entry — until its
//! teardown, or `bottle down` after a killed run), or by `--keep`; and every component a kept
//! entry names. Removed: other entries, components no remaining entry names, leftovers of
//! killed builds in `tmp/`, the folders (audit logs) of runs that ended, and folders of other
//! layout versions. gc holds `gc.lock`
//! exclusively, so it runs between builds, imports and pins, never in the middle of one.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use super::{Store, StoreError, du, io, names};
use crate::hash::{BuildHash, ComponentId, ComponentKind};

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed_entries: Vec<String>,
    /// `KIND/HASH` of each component removed.
    pub removed_components: Vec<String>,
    pub removed_temporary: Vec<String>,
    pub removed_layouts: Vec<String>,
    /// Folders of runs that ended, with their audit logs.
    pub removed_runs: Vec<String>,
    pub kept: Vec<String>,
    pub freed_bytes: u64,
}

impl Store {
    /// Records a root: `bottle gc` keeps the entry it names.
    pub fn add_root(&self, name: &str, hash: &BuildHash) -> Result<(), StoreError> {
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(StoreError::BadRoot {
                name: name.to_string(),
            });
        }
        self.init()?;
        write_atomic(&self.roots(), name, &format!("{hash}\n"))
    }

    /// Root name → hash.
    pub fn roots_list(&self) -> Result<Vec<(String, BuildHash)>, StoreError> {
        read_hash_files(&self.roots())
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
                store: self.root.clone(),
            });
        }
        write_atomic(&self.pins(), run_id, &format!("{hash}\n"))
    }

    /// Removes a run's pin (no error when there is none).
    pub fn unpin(&self, run_id: &str) -> Result<(), StoreError> {
        let path = self.pins().join(run_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Run id → pinned hash.
    pub fn pins_list(&self) -> Result<Vec<(String, BuildHash)>, StoreError> {
        read_hash_files(&self.pins())
    }

    /// Removes what nothing keeps (see the module doc). `keep` adds entries to keep.
    pub fn gc(&self, keep: &[BuildHash], dry_run: bool) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let _lock = if self.layout().is_dir() {
            Some(self.gc_lock()?)
        } else {
            None
        };
        let mut kept: BTreeSet<BuildHash> = keep.iter().copied().collect();
        kept.extend(self.roots_list()?.into_iter().map(|(_, h)| h));
        kept.extend(self.pins_list()?.into_iter().map(|(_, h)| h));
        let remove = |path: &Path, report: &mut GcReport| -> Result<(), StoreError> {
            report.freed_bytes += du(path);
            if dry_run {
                return Ok(());
            }
            let r = if path.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            r.map_err(io(path))
        };
        let mut referenced: BTreeSet<ComponentId> = BTreeSet::new();
        let mut unreadable = false;
        for hash in self.hashes()? {
            if kept.contains(&hash) {
                match self.manifest(&hash) {
                    Ok(Some(m)) => referenced.extend(m.components.ids()),
                    _ => unreadable = true,
                }
                report.kept.push(hash.to_string());
                continue;
            }
            remove(&self.entry_file(&hash), &mut report)?;
            if !dry_run {
                self.remove_lock_file(&format!("entry-{hash}"));
            }
            report.removed_entries.push(hash.to_string());
        }
        if unreadable {
            tracing::warn!(
                "a kept entry's manifest is unreadable, so no component is removed; `bottle verify` names it"
            );
        } else {
            for kind in ComponentKind::ALL {
                for hash in self.component_hashes(kind)? {
                    let id = ComponentId { kind, hash };
                    if referenced.contains(&id) {
                        continue;
                    }
                    remove(&self.component_dir(&id), &mut report)?;
                    if !dry_run {
                        self.remove_marker(&id);
                        self.remove_lock_file(&format!("{kind}-{hash}"));
                    }
                    report.removed_components.push(format!("{kind}/{hash}"));
                }
            }
        }
        // Holding gc.lock exclusively, no build or import is under way: all of tmp/ is left
        // over from killed ones.
        for name in names(&self.tmp())? {
            remove(&self.tmp().join(&name), &mut report)?;
            report.removed_temporary.push(name);
        }
        // What killed pulls put together (pulls hold gc.lock shared, so none is under way),
        // and kept chunk lists of components that are gone.
        let partial = self.local().join("pull");
        if partial.is_dir() {
            remove(&partial, &mut report)?;
            report.removed_temporary.push("local/pull".to_string());
        }
        let lists = self.local().join("chunk-lists");
        let mut present = BTreeSet::new();
        for kind in ComponentKind::ALL {
            for hash in self.component_hashes(kind)? {
                if self.component_dir(&ComponentId { kind, hash }).is_dir() {
                    present.insert(format!("{kind}-{hash}.json"));
                }
            }
        }
        for name in names(&lists)? {
            if !present.contains(&name) {
                remove(&lists.join(&name), &mut report)?;
            }
        }
        for name in names(&self.runs())? {
            let dir = self.runs().join(&name);
            if dir.join(super::RUN_ENDED).is_file() && !dir.join(super::RUN_RECORD).exists() {
                remove(&dir, &mut report)?;
                report.removed_runs.push(name);
            }
        }
        for name in names(&self.root)? {
            let is_layout = name.len() > 1
                && name.starts_with('v')
                && name[1..].bytes().all(|b| b.is_ascii_digit());
            let path = self.root.join(&name);
            if is_layout && name != super::LAYOUT && path.is_dir() {
                remove(&path, &mut report)?;
                report.removed_layouts.push(name);
            }
        }
        Ok(report)
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
