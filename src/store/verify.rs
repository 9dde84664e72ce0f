//! Verification: what `bottle verify` checks and what `bottle run` trusts.
//!
//! An entry is checked link by link from its name down:
//!
//! 1. its manifest must hash to the entry's name;
//! 2. each component's `record.json` must hold a key of the right kind that hashes to the
//!    component's name;
//! 3. each file the record lists must be there with its size, mode and blake3, and no other
//!    file may be;
//! 4. a config component must be exactly what its key renders (`crate::config::render`), with
//!    provisioning files matching the digests in the key — so a `guest.json` edited to run as
//!    `root` is refused, naming the field; a guest or bundle component's image archive must
//!    hold the image id its record names.
//!
//! `bottle verify` rehashes every file. `bottle run` ([`Store::open`]) rehashes a file only
//! when it changed since this machine last verified it: a marker under `local/verified/`
//! records each file's device, inode, size, mtime and ctime after a full check, and any write,
//! rename or mode change moves the ctime, which user space cannot set back. It also records the
//! digest the file was checked against, so a record whose digest was edited after the check is
//! rehashed (and refused) by a run as by `bottle verify`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Damage, StoreError};
use super::layout::Store;
use crate::config::{self, Rendered};
use crate::digest::{Digest, file_digest};
use crate::hash::{BuildHash, ComponentId, ComponentKey, ConfigKey, GuestKey};
use crate::manifest::{BundleSpec, GuestSpec, ImageRef, Manifest, RECORD_FILE, Record};

/// A published component: where it lies and its record.
#[derive(Debug, Clone)]
pub struct Component {
    pub id: ComponentId,
    pub dir: PathBuf,
    pub record: Record,
}

impl Component {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    /// The image a guest or bundle component holds.
    pub fn image(&self) -> &ImageRef {
        self.record
            .image
            .as_ref()
            .expect("Record::parse checked that guest and bundle records name their image")
    }
}

/// An entry with its components, as the run and the listing commands use it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub hash: BuildHash,
    pub manifest: Manifest,
    pub guest: Component,
    pub bundle: Component,
    pub config: Component,
    /// What the config key renders: the specs the run follows.
    pub rendered: Rendered,
}

impl Entry {
    pub fn components(&self) -> [&Component; 3] {
        [&self.guest, &self.bundle, &self.config]
    }
    pub fn guest_key(&self) -> &GuestKey {
        match &self.guest.record.key {
            ComponentKey::Guest(k) => k,
            _ => unreachable!("Record::parse checked the kind"),
        }
    }
    pub fn config_key(&self) -> &ConfigKey {
        match &self.config.record.key {
            ComponentKey::Config(k) => k,
            _ => unreachable!("Record::parse checked the kind"),
        }
    }
    pub fn guest_spec(&self) -> &GuestSpec {
        &self.rendered.guest
    }
    pub fn bundle_spec(&self) -> &BundleSpec {
        &self.rendered.bundle
    }
    /// Bytes of every file of the entry's components.
    pub fn size(&self) -> u64 {
        self.components()
            .iter()
            .fold(0, |t: u64, c| t.saturating_add(c.record.total_size()))
    }
}

/// How far [`check_folder`] goes with file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Depth {
    /// Contents were checked as they were written (an import): sizes and modes only.
    Contents,
    /// Rehash every file.
    Full,
    /// Rehash the files that changed since the marker in this folder was written.
    Marked,
}

impl Store {
    /// An entry with its records, unchecked beyond parsing (for `show`, `ls`, `diff`).
    pub fn load(&self, hash: &BuildHash) -> Result<Entry, StoreError> {
        let manifest = self.manifest(hash)?.ok_or_else(|| StoreError::Missing {
            hash: *hash,
            store: self.root().to_path_buf(),
        })?;
        let comp = |id: ComponentId| -> Result<Component, StoreError> {
            let record = self
                .record(&id)?
                .ok_or(StoreError::MissingComponent { entry: *hash, id })?;
            Ok(Component {
                dir: self.component_dir(&id),
                id,
                record,
            })
        };
        let [g, b, c] = manifest.components.ids();
        let (guest, bundle, config) = (comp(g)?, comp(b)?, comp(c)?);
        let rendered = match &config.record.key {
            ComponentKey::Config(k) => config::render(k),
            _ => unreachable!("Record::parse checked the kind"),
        };
        Ok(Entry {
            hash: *hash,
            manifest,
            guest,
            bundle,
            config,
            rendered,
        })
    }

    /// An entry checked for a run: every link from its name to each file (see the module
    /// doc); files unchanged since this machine last checked them are not rehashed. Damage is
    /// an error naming each damaged path.
    pub fn open(&self, hash: &BuildHash) -> Result<Entry, StoreError> {
        let damage = self.check(hash, Depth::Marked)?;
        if !damage.is_empty() {
            return Err(StoreError::Damaged {
                hash: *hash,
                damage,
            });
        }
        self.load(hash)
    }

    /// The error to refuse an entry that [`Store::load`] could not read with: every damaged
    /// path, as `bottle verify` names them.
    pub fn refusal(&self, hash: &BuildHash, cause: StoreError) -> StoreError {
        match self.check(hash, Depth::Full) {
            Ok(damage) if !damage.is_empty() => StoreError::Damaged {
                hash: *hash,
                damage,
            },
            _ => cause,
        }
    }

    /// Every problem of an entry, every file rehashed (`bottle verify`).
    pub fn verify(&self, hash: &BuildHash) -> Result<Vec<Damage>, StoreError> {
        self.check(hash, Depth::Full)
    }

    fn check(&self, hash: &BuildHash, depth: Depth) -> Result<Vec<Damage>, StoreError> {
        let manifest = match self.manifest(hash) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(StoreError::Missing {
                    hash: *hash,
                    store: self.root().to_path_buf(),
                });
            }
            Err(StoreError::Manifest(e)) => {
                return Ok(vec![Damage::new("manifest", e.to_string())]);
            }
            Err(e) => return Err(e),
        };
        let mut damage = Vec::new();
        for id in manifest.components.ids() {
            let dir = self.component_dir(&id);
            let prefixed = |d: Damage| Damage::new(format!("{}/{}", id.kind, d.path), d.problem);
            let record = match Record::read(&dir.join(RECORD_FILE), &id) {
                Ok(r) => r,
                Err(e) => {
                    let problem = if dir.is_dir() {
                        e.to_string()
                    } else {
                        format!("component {} is missing", id.hash)
                    };
                    damage.push(prefixed(Damage::new(RECORD_FILE, problem)));
                    continue;
                }
            };
            let marker = match depth {
                Depth::Marked => self.read_marker(&id),
                _ => Marker::new(),
            };
            let found = check_folder(&dir, &record, depth, &marker);
            if found.is_empty() && depth != Depth::Contents {
                self.write_marker(&id, &dir, &record);
            }
            damage.extend(found.into_iter().map(prefixed));
        }
        Ok(damage)
    }

    fn marker_path(&self, id: &ComponentId) -> PathBuf {
        self.local()
            .join("verified")
            .join(format!("{}-{}.json", id.kind, id.hash))
    }

    fn read_marker(&self, id: &ComponentId) -> Marker {
        fs::read(self.marker_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records each file's stamp after a clean check (best effort: a marker only saves work).
    fn write_marker(&self, id: &ComponentId, dir: &Path, record: &Record) {
        let stamps: BTreeMap<String, Stamp> = record
            .files
            .iter()
            .filter_map(|a| {
                Some((
                    a.path.clone(),
                    stamp(&fs::metadata(dir.join(&a.path)).ok()?, a.blake3),
                ))
            })
            .collect();
        let path = self.marker_path(id);
        let Some(parent) = path.parent() else { return };
        if fs::create_dir_all(parent).is_err() {
            return;
        }
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(parent) {
            use std::io::Write;
            let bytes = serde_json::to_vec(&stamps).expect("stamps serialize");
            if tmp.write_all(&bytes).is_ok() {
                let _ = tmp.persist(&path);
            }
        }
    }

    pub(super) fn remove_marker(&self, id: &ComponentId) {
        let _ = fs::remove_file(self.marker_path(id));
    }
}

/// Stamps of a component's files as of its last clean check, by path.
pub(super) type Marker = BTreeMap<String, Stamp>;

/// What identifies one state of a file (any write, rename or chmod changes the ctime), and the
/// digest of the record it was found to match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// Absent in markers written before it was recorded: those files are rehashed once.
    #[serde(default)]
    blake3: Option<Digest>,
}

fn stamp(m: &fs::Metadata, checked: Digest) -> Stamp {
    Stamp {
        blake3: Some(checked),
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    }
}

/// Every problem of one component folder against its record (paths relative to the folder).
pub(super) fn check_folder(
    dir: &Path,
    record: &Record,
    depth: Depth,
    marker: &Marker,
) -> Vec<Damage> {
    let mut damage = Vec::new();
    for a in &record.files {
        let path = dir.join(&a.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => {
                damage.push(Damage::new(&a.path, "missing"));
                continue;
            }
        };
        if !meta.is_file() {
            damage.push(Damage::new(&a.path, "is not a regular file"));
            continue;
        }
        if meta.len() != a.size {
            damage.push(Damage::new(
                &a.path,
                format!("size {} but the record says {}", meta.len(), a.size),
            ));
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode != a.mode {
            damage.push(Damage::new(
                &a.path,
                format!("mode {mode:o} but the record says {:o}", a.mode),
            ));
        }
        let unchanged = marker.get(&a.path) == Some(&stamp(&meta, a.blake3));
        if depth == Depth::Contents || unchanged {
            continue;
        }
        match file_digest(&path) {
            Ok((d, _)) if d == a.blake3 => {}
            Ok(_) => damage.push(Damage::new(
                &a.path,
                "content differs from its blake3 in the record",
            )),
            Err(e) => damage.push(Damage::new(&a.path, format!("unreadable: {e}"))),
        }
    }
    for found in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
    {
        if found.file_type().is_dir() {
            continue;
        }
        let rel = crate::files::rel_path(dir, found.path());
        if rel != RECORD_FILE && !record.files.iter().any(|a| a.path == rel) {
            damage.push(Damage::new(rel, "is not listed in the record"));
        }
    }
    match &record.key {
        ComponentKey::Config(key) => damage.extend(check_config(dir, key, record)),
        ComponentKey::Guest(_) | ComponentKey::Bundle(_) => {
            if let Some(img) = &record.image
                && !damage.iter().any(|d| d.path == img.archive)
            {
                match crate::oci::image_id(&dir.join(&img.archive)) {
                    Ok(got) if got == img.id => {}
                    Ok(got) => damage.push(Damage::new(
                        &img.archive,
                        format!("holds image {got}, not {} as the record says", img.id),
                    )),
                    Err(e) => damage.push(Damage::new(&img.archive, format!("{e:#}"))),
                }
            }
        }
    }
    damage
}

/// A config component against what its key renders.
fn check_config(dir: &Path, key: &ConfigKey, record: &Record) -> Vec<Damage> {
    let mut damage = Vec::new();
    let listed: BTreeMap<&str, &crate::manifest::Artifact> =
        record.files.iter().map(|a| (a.path.as_str(), a)).collect();
    let rendered = config::render(key);
    let mut expected: Vec<&str> = Vec::new();
    for f in &rendered.files {
        expected.push(&f.path);
        match listed.get(f.path.as_str()) {
            None => damage.push(Damage::new(&f.path, "is missing from the record")),
            Some(a) if a.mode != f.mode => damage.push(Damage::new(
                &f.path,
                format!("mode {:o} where its key renders {:o}", a.mode, f.mode),
            )),
            Some(_) => {}
        }
        let Ok(bytes) = fs::read(dir.join(&f.path)) else {
            continue;
        };
        if bytes != f.bytes {
            let fields = match (
                serde_json::from_slice::<serde_json::Value>(&bytes),
                serde_json::from_slice::<serde_json::Value>(&f.bytes),
            ) {
                (Ok(got), Ok(want)) => config::differing_fields(&want, &got),
                _ => Vec::new(),
            };
            let problem = if fields.is_empty() {
                "differs from what the component's key renders".to_string()
            } else {
                format!(
                    "differs from what the component's key renders in {}",
                    fields.join(", ")
                )
            };
            damage.push(Damage::new(&f.path, problem));
        }
    }
    let provision = config::copied_files(key);
    for (path, digest) in &provision {
        expected.push(path);
        match listed.get(path.as_str()) {
            None => damage.push(Damage::new(path, "is missing from the record")),
            Some(a) if a.blake3 != *digest => damage.push(Damage::new(
                path,
                "differs from the recipe file its key names",
            )),
            Some(_) => {}
        }
    }
    for a in &record.files {
        if !expected.contains(&a.path.as_str()) {
            damage.push(Damage::new(
                &a.path,
                "is not part of what the component's key renders",
            ));
        }
    }
    damage
}
