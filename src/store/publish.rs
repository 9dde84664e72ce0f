//! Publishing into the store: components built in a temporary folder and published by one
//! rename (record last), entries published once their components are, and imports of either
//! from elsewhere, checked byte for byte before they are published.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::error::{Damage, StoreError, io};
use super::layout::Store;
use super::lock::StoreLock;
use super::verify;
use crate::digest::{HashingWriter, file_digest};
use crate::hash::{BuildHash, ComponentId, ComponentKey};
use crate::manifest::{Artifact, ImageRef, Manifest, RECORD_FILE, RECORD_FORMAT, Record};

/// A component being made: a temporary folder of the store and the component's lock.
#[derive(Debug)]
pub struct Staged {
    id: ComponentId,
    dir: tempfile::TempDir,
    _lock: StoreLock,
}

impl Staged {
    /// The folder to write the component's files into.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn id(&self) -> ComponentId {
        self.id
    }
}

impl Store {
    /// Starts making a component: takes its lock and a fresh temporary folder. `None` when it
    /// is published already (perhaps by another process while this one waited for the lock).
    pub fn stage(&self, id: ComponentId) -> Result<Option<Staged>, StoreError> {
        if self.has_component(&id) {
            return Ok(None);
        }
        self.init()?;
        let lock = self.lock_component(&id)?;
        if self.has_component(&id) {
            return Ok(None);
        }
        let prefix = format!("{}-{}.", id.kind, id.hash);
        // Holding the lock, any other temporary folder of this component is a leftover.
        if let Ok(rd) = fs::read_dir(self.tmp()) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_dir_all(ent.path());
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(self.tmp())
            .map_err(io(&self.tmp()))?;
        Ok(Some(Staged {
            id,
            dir,
            _lock: lock,
        }))
    }

    /// Publishes a staged component: lists every file it holds (blake3, size, mode), writes
    /// `record.json` last, and renames the folder into place.
    pub fn publish(
        &self,
        staged: Staged,
        key: ComponentKey,
        image: Option<ImageRef>,
    ) -> Result<Record, StoreError> {
        debug_assert_eq!(key.id(), staged.id);
        let root = staged.dir.path().to_path_buf();
        let record = Record {
            format: RECORD_FORMAT,
            key,
            image,
            files: scan(&root)?,
        };
        self.finish(staged, record)
    }

    /// Writes the record into the staged folder and renames it into place.
    fn finish(&self, staged: Staged, record: Record) -> Result<Record, StoreError> {
        let root = staged.dir.path().to_path_buf();
        write_synced(&root.join(RECORD_FILE), &record.to_json())?;
        sync_dir(&root)?;
        let dest = self.component_dir(&staged.id);
        let kept = staged.dir.keep();
        if let Err(e) = fs::rename(&kept, &dest) {
            let _ = fs::remove_dir_all(&kept);
            if !self.has_component(&staged.id) {
                return Err(io(&dest)(e));
            }
        }
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(record)
    }

    /// Publishes an entry whose components are all in the store.
    pub fn publish_entry(&self, manifest: &Manifest) -> Result<BuildHash, StoreError> {
        let hash = manifest.hash();
        for id in manifest.components.ids() {
            if !self.has_component(&id) {
                return Err(StoreError::MissingComponent { entry: hash, id });
            }
        }
        self.init()?;
        let dest = self.entry_file(&hash);
        if dest.is_file() {
            return Ok(hash);
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("entry-{hash}."))
            .tempfile_in(self.tmp())
            .map_err(io(&self.tmp()))?;
        tmp.write_all(&manifest.to_json()).map_err(io(tmp.path()))?;
        // As every file of the store: readable by all (a temporary file starts private).
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
        sync_dir(&self.entries_dir())?;
        Ok(hash)
    }

    /// Imports a component that arrived from elsewhere: `record` is its `record.json` as
    /// received and `open` reads each file it lists. Every byte is checked against the record
    /// (and a config component against what its key renders) in a temporary folder; only a
    /// whole, matching component is published. Returns whether it was imported (false: the
    /// store had it).
    pub fn import_component(
        &self,
        id: ComponentId,
        record: &[u8],
        mut open: impl FnMut(&str) -> std::io::Result<Box<dyn Read>>,
    ) -> Result<bool, StoreError> {
        self.import_with(id, record, |root, a| copy_checked(root, a, &mut open))
    }

    /// Imports a component whose files a pull put together in `dir`, a folder on this store's
    /// filesystem, checking every byte as it wrote them: each chunk against its blake3, each
    /// whole file against the blake3 of `record` (`share::pull`). The files are moved into a
    /// staged folder and checked as an import checks what it copied — names, sizes, modes, a
    /// config component's rendering of its key — then published; nothing is copied or
    /// rehashed again. Returns whether it was imported (false: the store had it).
    pub fn import_component_dir(
        &self,
        id: ComponentId,
        record: &[u8],
        dir: &Path,
    ) -> Result<bool, StoreError> {
        self.import_with(id, record, |root, a| move_in(dir, root, a))
    }

    /// An import's steps around `place`, which puts one listed file into the staged folder
    /// (its contents checked on the way): parse the record, check its modes, stage, place
    /// every file, check the folder (names, sizes, modes, the config's rendering), publish.
    fn import_with(
        &self,
        id: ComponentId,
        record: &[u8],
        mut place: impl FnMut(&Path, &Artifact) -> Result<(), String>,
    ) -> Result<bool, StoreError> {
        let what = format!("component {id}");
        let refused = |damage: Vec<Damage>| StoreError::Refused {
            what: what.clone(),
            damage,
        };
        let record = Record::parse(record, &format!("{id} {RECORD_FILE}"), &id)
            .map_err(|e| refused(vec![Damage::new(RECORD_FILE, e.to_string())]))?;
        let damage = mode_damage(&record);
        if !damage.is_empty() {
            return Err(refused(damage));
        }
        let _gc = self.gc_guard()?;
        let Some(staged) = self.stage(id)? else {
            return Ok(false);
        };
        let mut damage = Vec::new();
        for a in &record.files {
            if let Err(problem) = place(staged.path(), a) {
                damage.push(Damage::new(&a.path, problem));
            }
        }
        if damage.is_empty() {
            damage = verify::check_folder(
                staged.path(),
                &record,
                verify::Depth::Contents,
                &verify::Marker::new(),
            );
        }
        if !damage.is_empty() {
            return Err(refused(damage));
        }
        self.finish(staged, record)?;
        Ok(true)
    }

    /// A record's files whose mode an import refuses (see [`IMPORT_MODES`]): a pull asks
    /// before it downloads anything.
    pub fn import_mode_damage(record: &Record) -> Vec<Damage> {
        mode_damage(record)
    }

    /// Imports the components a pull put together, each in its folder on this store's
    /// filesystem (see [`Store::import_component_dir`]), all or none: every component is
    /// checked where it lies first — its record's modes, then names, sizes and modes of its
    /// files, a config's rendering of its key, an image's id — and only when every one passes
    /// is any published. A refusal leaves the store as it was: no component, no folder, no
    /// lock file. Returns the components imported (the others the store had).
    pub fn import_component_dirs(
        &self,
        components: &[(ComponentId, Vec<u8>, std::path::PathBuf)],
    ) -> Result<Vec<ComponentId>, StoreError> {
        for (id, record, dir) in components {
            if self.has_component(id) {
                continue;
            }
            let what = format!("component {id}");
            let prefixed = |d: Damage| Damage::new(format!("{}/{}", id.kind, d.path), d.problem);
            let refused = |damage: Vec<Damage>| StoreError::Refused {
                what: what.clone(),
                damage: damage.into_iter().map(prefixed).collect(),
            };
            let record = Record::parse(record, &format!("{id} {RECORD_FILE}"), id)
                .map_err(|e| refused(vec![Damage::new(RECORD_FILE, e.to_string())]))?;
            let damage = mode_damage(&record);
            if !damage.is_empty() {
                return Err(refused(damage));
            }
            for a in &record.files {
                // The mode it will have once moved in, so the check below sees it.
                let _ = fs::set_permissions(dir.join(&a.path), fs::Permissions::from_mode(a.mode));
            }
            let damage = verify::check_folder(
                dir,
                &record,
                verify::Depth::Contents,
                &verify::Marker::new(),
            );
            if !damage.is_empty() {
                return Err(refused(damage));
            }
        }
        let mut imported = Vec::new();
        for (id, record, dir) in components {
            if self.import_component_dir(*id, record, dir)? {
                imported.push(*id);
            }
        }
        Ok(imported)
    }

    /// Imports an entry's manifest as received, once its components are in the store: it
    /// must hash to `expected`.
    pub fn import_entry(&self, manifest: &[u8], expected: &BuildHash) -> Result<(), StoreError> {
        let what = format!("entry {}", expected.short());
        let m = Manifest::parse(manifest, &what)?;
        if &m.hash() != expected {
            return Err(StoreError::Refused {
                what,
                damage: vec![Damage::new(
                    "manifest",
                    format!("it hashes to {}, not to {expected}", m.hash()),
                )],
            });
        }
        let _gc = self.gc_guard()?;
        self.publish_entry(&m)?;
        Ok(())
    }

    /// Imports an entry and its components from another store folder (the same layout), as a
    /// cache on a shared disk or a copied folder would hold them; see [`Store::import_component`].
    ///
    /// Everything is checked in place before anything is imported: the manifest must hash to
    /// `hash`, and each component this store lacks must be whole, as `bottle verify` checks it
    /// (record, every file, the config's rendering, the image id). So a damaged source is
    /// refused naming the file (`KIND/FILE` or `manifest`), and this store is left exactly as
    /// it was: no component of the entry, no folder, no lock file.
    pub fn import_from(
        &self,
        other: &Store,
        hash: &BuildHash,
    ) -> Result<Vec<ComponentId>, StoreError> {
        let path = other.entry_file(hash);
        let bytes = fs::read(&path).map_err(io(&path))?;
        let refused = |what: String, damage: Vec<Damage>| StoreError::Refused { what, damage };
        let entry = format!("entry {}", hash.short());
        let m = Manifest::parse(&bytes, &path.display().to_string())
            .map_err(|e| refused(entry.clone(), vec![Damage::new("manifest", e.to_string())]))?;
        if &m.hash() != hash {
            return Err(refused(
                entry,
                vec![Damage::new(
                    "manifest",
                    format!("it hashes to {}, not to {hash}", m.hash()),
                )],
            ));
        }
        let mut records = Vec::new();
        for id in m.components.ids() {
            let dir = other.component_dir(&id);
            let rec = dir.join(RECORD_FILE);
            let record_bytes = fs::read(&rec).map_err(io(&rec))?;
            if !self.has_component(&id) {
                let prefixed =
                    |d: Damage| Damage::new(format!("{}/{}", id.kind, d.path), d.problem);
                let record = Record::parse(&record_bytes, &rec.display().to_string(), &id)
                    .map_err(|e| {
                        refused(
                            format!("component {id}"),
                            vec![prefixed(Damage::new(RECORD_FILE, e.to_string()))],
                        )
                    })?;
                let mut damage = mode_damage(&record);
                damage.extend(verify::check_folder(
                    &dir,
                    &record,
                    verify::Depth::Full,
                    &verify::Marker::new(),
                ));
                if !damage.is_empty() {
                    return Err(refused(
                        format!("component {id}"),
                        damage.into_iter().map(prefixed).collect(),
                    ));
                }
            }
            records.push((id, dir, record_bytes));
        }
        let mut imported = Vec::new();
        for (id, dir, record_bytes) in records {
            let open = |rel: &str| -> std::io::Result<Box<dyn Read>> {
                Ok(Box::new(File::open(dir.join(rel))?))
            };
            if self.import_component(id, &record_bytes, open)? {
                imported.push(id);
            }
        }
        self.import_entry(&bytes, hash)?;
        Ok(imported)
    }
}

/// The modes a file arriving from elsewhere may have: 0644, or 0755 for a program. Never a
/// setuid, setgid or sticky bit, never group or world write, whatever a record asks.
pub const IMPORT_MODES: [u32; 2] = [0o644, 0o755];

/// A record's files whose mode is not one of [`IMPORT_MODES`]: an import refuses them.
fn mode_damage(record: &Record) -> Vec<Damage> {
    record
        .files
        .iter()
        .filter(|a| !IMPORT_MODES.contains(&a.mode))
        .map(|a| {
            Damage::new(
                &a.path,
                format!(
                    "the record asks for mode {:o}; a file arriving in the store is 644 or 755 (no setuid, setgid or sticky bit, no group or world write)",
                    a.mode
                ),
            )
        })
        .collect()
}

/// Moves one listed file from `from` into the staged folder, synced, with its mode.
fn move_in(from: &Path, root: &Path, a: &Artifact) -> Result<(), String> {
    let dest = root.join(&a.path);
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::rename(from.join(&a.path), &dest).map_err(|e| format!("cannot be moved in: {e}"))?;
    File::open(&dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync: {e}"))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(a.mode))
        .map_err(|e| format!("cannot set its mode: {e}"))
}

/// The most of a file an import holds in memory at once.
const COPY_BUFFER: usize = 1 << 20;

/// Streams one listed file into the staged folder, checking its size and digest; sets its mode.
fn copy_checked(
    root: &Path,
    a: &Artifact,
    open: &mut impl FnMut(&str) -> std::io::Result<Box<dyn Read>>,
) -> Result<(), String> {
    let dest = root.join(&a.path);
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut src = open(&a.path).map_err(|e| format!("cannot be read: {e}"))?;
    let file = File::create(&dest).map_err(|e| format!("cannot write: {e}"))?;
    let mut w = HashingWriter::new(file);
    // One byte past the listed size is enough to tell a longer file. Large writes: a copy
    // through io::copy's 8 KiB buffer costs a syscall per 8 KiB.
    let mut limited = (&mut src).take(a.size + 1);
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot be copied: {e}")),
        };
        w.write_all(&buf[..n])
            .map_err(|e| format!("cannot be copied: {e}"))?;
    }
    let (digest, len, file) = w.finish();
    if len != a.size {
        return Err(format!("size {len} but the record says {}", a.size));
    }
    if digest != a.blake3 {
        return Err("content differs from its blake3 in the record".to_string());
    }
    file.sync_all().map_err(|e| format!("cannot sync: {e}"))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(a.mode))
        .map_err(|e| format!("cannot set its mode: {e}"))?;
    Ok(())
}

/// Every file below `root` as a sorted list of artifacts; each is synced to disk first.
fn scan(root: &Path) -> Result<Vec<Artifact>, StoreError> {
    let mut out = BTreeMap::new();
    for ent in walkdir::WalkDir::new(root).min_depth(1) {
        let ent = ent.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            StoreError::Io {
                source: e.into(),
                path,
            }
        })?;
        if ent.file_type().is_dir() {
            continue;
        }
        let path = ent.path();
        let rel = crate::files::rel_path(root, path);
        if !ent.file_type().is_file() {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("a component holds regular files only"),
            });
        }
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io(path))?;
        let meta = fs::metadata(path).map_err(io(path))?;
        let (blake3, size) = file_digest(path).map_err(io(path))?;
        out.insert(
            rel.clone(),
            Artifact {
                path: rel,
                blake3,
                size,
                mode: meta.permissions().mode() & 0o7777,
            },
        );
    }
    Ok(out.into_values().collect())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}
