//! What the store keeps and what `bottle gc` removes.
//!
//! Kept: the newest entry of each recipe name (`latest/NAME`, written by every build), entries
//! named by a root (`roots/NAME`, made by `bottle build --root`), by a pin (`pins/RUNID`, made
//! by `bottle run` for as long as the run may use the entry — until its teardown, or `bottle
//! down` after a killed run), or by `--keep`; and every component a kept entry names. Removed:
//! other entries, components no remaining entry names, leftovers of killed builds in `tmp/`,
//! the folders (audit logs) of runs that ended, and folders of other layout versions.
//! [`Store::remove_entry`] (`bottle rm`) removes one entry, its roots, and at once the
//! components no other entry names. Both hold `gc.lock` exclusively, so they run between
//! builds, imports and pins, never in the middle of one. The engine's images of the removed
//! components are the caller's to remove (`runtime::images`): the store knows no engine.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use super::error::{StoreError, io};
use super::layout::{self, Store, du, names};
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
    /// The components removed, for removing their engine images.
    #[serde(skip)]
    pub removed_ids: Vec<ComponentId>,
    /// Build-cache images (`Store::build_parent`) of the guest components removed.
    #[serde(skip)]
    pub build_parents: Vec<(ComponentId, String)>,
}

/// What `bottle rm` removed.
#[derive(Debug, Default, Serialize)]
pub struct RmReport {
    pub hash: String,
    pub name: String,
    /// What pointed at the entry: `latest:NAME` (the newest build of NAME), `root:NAME`.
    pub roots: Vec<String>,
    #[serde(flatten)]
    pub removed: GcReport,
}

impl Store {
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
        kept.extend(self.latest_list()?.into_iter().map(|(_, h)| h));
        kept.extend(self.pins_list()?.into_iter().map(|(_, h)| h));
        let remove = |path: &Path, report: &mut GcReport| remove_path(path, dry_run, report);
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
            self.sweep_components(&referenced, dry_run, &mut report)?;
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
            if dir.join(layout::RUN_ENDED).is_file() && !dir.join(layout::RUN_RECORD).exists() {
                remove(&dir, &mut report)?;
                report.removed_runs.push(name);
            }
        }
        for name in names(self.root())? {
            let is_layout = name.len() > 1
                && name.starts_with('v')
                && name[1..].bytes().all(|b| b.is_ascii_digit());
            let path = self.root().join(&name);
            if is_layout && name != layout::LAYOUT && path.is_dir() {
                remove(&path, &mut report)?;
                report.removed_layouts.push(name);
            }
        }
        Ok(report)
    }

    /// Removes the components `referenced` lacks, with their build-parent records.
    fn sweep_components(
        &self,
        referenced: &BTreeSet<ComponentId>,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        for kind in ComponentKind::ALL {
            for hash in self.component_hashes(kind)? {
                let id = ComponentId { kind, hash };
                if referenced.contains(&id) {
                    continue;
                }
                remove_path(&self.component_dir(&id), dry_run, report)?;
                if let Some(parent) = self.build_parent(&id) {
                    report.build_parents.push((id, parent));
                }
                if !dry_run {
                    self.remove_marker(&id);
                    self.remove_lock_file(&format!("{kind}-{hash}"));
                    self.forget_build_parent(&id)?;
                }
                report.removed_components.push(format!("{kind}/{hash}"));
                report.removed_ids.push(id);
            }
        }
        Ok(())
    }

    /// Removes one entry (`bottle rm`): refused while a run pins it; also removes the roots
    /// naming it and, at once, the components no other entry names.
    pub fn remove_entry(&self, hash: &BuildHash) -> Result<RmReport, StoreError> {
        let _lock = self.gc_lock()?;
        let manifest = self.manifest(hash)?.ok_or(StoreError::Missing {
            hash: *hash,
            store: self.root().to_path_buf(),
        })?;
        if let Some((run, _)) = self.pins_list()?.into_iter().find(|(_, h)| h == hash) {
            return Err(StoreError::Pinned { hash: *hash, run });
        }
        let mut report = RmReport {
            hash: hash.to_string(),
            name: manifest.name.clone(),
            ..RmReport::default()
        };
        report.roots = self.drop_roots_of(hash)?;
        remove_path(&self.entry_file(hash), false, &mut report.removed)?;
        self.remove_lock_file(&format!("entry-{hash}"));
        report.removed.removed_entries.push(hash.to_string());
        let mut referenced = BTreeSet::new();
        for other in self.hashes()? {
            match self.manifest(&other) {
                Ok(Some(m)) => referenced.extend(m.components.ids()),
                // Another entry unreadable: its components are unknown, so none is removed.
                _ => return Ok(report),
            }
        }
        self.sweep_components(&referenced, false, &mut report.removed)?;
        Ok(report)
    }
}

/// Removes a file or folder (unless `dry_run`), counting its bytes as freed.
fn remove_path(path: &Path, dry_run: bool, report: &mut GcReport) -> Result<(), StoreError> {
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
}
