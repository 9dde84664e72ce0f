//! Store: the content-addressed home of built bottles.
//!
//! ```text
//! cache/                      the store root (--store, BOTTLE_STORE, default ./cache)
//! ├── CACHEDIR.TAG            marks the folder as a cache for backup tools
//! ├── .gitignore              "*": a store is never committed
//! └── v1/                     layout version; other vN folders are removed by `bottle gc`
//!     ├── builds/HASH/        one immutable entry per BuildHash (64 hex)
//!     │   ├── manifest.json   written last; lists every artifact (blake3, size, mode)
//!     │   ├── key.json        what the hash was taken over (for `bottle diff`)
//!     │   ├── guest/          the guest image archive (and .smolmachine pack)
//!     │   ├── ca/             CA certificates, and their keys (mode 0600, machine-local)
//!     │   ├── config/         the daemons' config files
//!     │   └── provision/      prompt and skills copied into the guest
//!     ├── tmp/HASH.XXXXXX/    builds under way; published by one rename into builds/
//!     ├── locks/HASH.lock     one lock per hash: concurrent builds of one recipe build once
//!     ├── roots/NAME          a file holding a hash that `bottle gc` keeps
//!     └── runs/RUNID/         a run's record until its teardown completes (see `run::record`)
//! ```
//!
//! An entry appears by one `rename(2)` of a finished temporary folder, so a reader sees a whole
//! entry or none; a build killed at any moment leaves only a `tmp/` folder, which the next build
//! of that hash (holding its lock) or `bottle gc` removes. Entries are never changed in place.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hash::{self, BuildHash, BuildKey};
use crate::manifest::{Artifact, KEY_FILE, MANIFEST_FILE, Manifest, ManifestError};

pub const LAYOUT: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error at {path}: {source}")]
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
    #[error("root name {name:?} must be letters, digits, '-', '_' or '.'")]
    BadRoot { name: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive lock on one hash, released on drop.
pub struct HashLock {
    _file: File,
}

/// A problem `bottle verify` found in an entry.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    pub path: String,
    pub problem: String,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed_entries: Vec<String>,
    pub removed_temporary: Vec<String>,
    pub removed_layouts: Vec<String>,
    pub kept: Vec<String>,
    pub freed_bytes: u64,
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

    pub fn root(&self) -> &Path {
        &self.root
    }
    fn layout(&self) -> PathBuf {
        self.root.join(LAYOUT)
    }
    pub fn builds(&self) -> PathBuf {
        self.layout().join("builds")
    }
    fn tmp(&self) -> PathBuf {
        self.layout().join("tmp")
    }
    fn locks(&self) -> PathBuf {
        self.layout().join("locks")
    }
    fn roots(&self) -> PathBuf {
        self.layout().join("roots")
    }
    pub fn entry_path(&self, hash: &BuildHash) -> PathBuf {
        self.builds().join(hash.as_str())
    }

    /// Creates the layout if it is missing. Only commands that write call this.
    pub fn init(&self) -> Result<(), StoreError> {
        for d in [self.builds(), self.tmp(), self.locks(), self.roots()] {
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

    /// The manifest of a published entry, if there is one.
    pub fn manifest(&self, hash: &BuildHash) -> Result<Option<Manifest>, StoreError> {
        let path = self.entry_path(hash).join(MANIFEST_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Manifest::read(&path)?))
    }

    pub fn contains(&self, hash: &BuildHash) -> bool {
        self.entry_path(hash).join(MANIFEST_FILE).is_file()
    }

    pub fn key(&self, hash: &BuildHash) -> Result<BuildKey, StoreError> {
        let path = self.entry_path(hash).join(KEY_FILE);
        let bytes = fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Manifest(ManifestError::Shape {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        })
    }

    /// Every published entry, sorted by hash.
    pub fn hashes(&self) -> Result<Vec<BuildHash>, StoreError> {
        let dir = self.builds();
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for ent in rd {
                    let ent = ent.map_err(io(&dir))?;
                    if let Some(h) = BuildHash::parse(&ent.file_name().to_string_lossy()) {
                        out.push(h);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
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
            .filter(|h| h.as_str().starts_with(prefix))
            .collect();
        match matches.len() {
            0 => Err(StoreError::Unknown {
                input: input.to_string(),
                store: self.root.clone(),
            }),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(StoreError::Ambiguous {
                input: input.to_string(),
                candidates: matches.iter().map(|h| h.to_string()).collect(),
            }),
        }
    }

    fn lock_path(&self, hash: &BuildHash) -> PathBuf {
        self.locks().join(format!("{hash}.lock"))
    }

    /// Takes the hash's lock, waiting (and saying so) while another process holds it.
    pub fn lock(&self, hash: &BuildHash) -> Result<HashLock, StoreError> {
        if let Some(lock) = self.try_lock(hash)? {
            return Ok(lock);
        }
        let path = self.lock_path(hash);
        tracing::info!(
            "Waiting for another build of {} (lock {})",
            hash.short(),
            path.display()
        );
        let file = self.lock_file(&path)?;
        file.lock().map_err(io(&path))?;
        Ok(HashLock { _file: file })
    }

    /// The hash's lock if no other process holds it.
    fn try_lock(&self, hash: &BuildHash) -> Result<Option<HashLock>, StoreError> {
        let path = self.lock_path(hash);
        let file = self.lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(HashLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    fn lock_file(&self, path: &Path) -> Result<File, StoreError> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))
    }

    /// A fresh temporary folder for building `hash`. The caller holds the hash's lock, so any
    /// other temporary folder of this hash is a leftover of a killed build: removed here.
    pub fn start_build(
        &self,
        hash: &BuildHash,
        _lock: &HashLock,
    ) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.tmp();
        if let Ok(rd) = fs::read_dir(&tmp) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{hash}.")) {
                    let _ = fs::remove_dir_all(ent.path());
                }
            }
        }
        tempfile::Builder::new()
            .prefix(&format!("{hash}."))
            .tempdir_in(&tmp)
            .map_err(io(&tmp))
    }

    /// Writes `key.json` and `manifest.json` (last) into the finished folder, then publishes
    /// it by one rename. `machine_local` lists the entry paths of secrets.
    pub fn publish(
        &self,
        dir: tempfile::TempDir,
        key: &BuildKey,
        mut manifest: Manifest,
        machine_local: &BTreeSet<String>,
    ) -> Result<Manifest, StoreError> {
        let hash = manifest.hash.clone();
        let root = dir.path().to_path_buf();
        write_synced(
            &root.join(KEY_FILE),
            &serde_json::to_vec_pretty(key).expect("key serializes"),
        )?;
        manifest.artifacts = scan(&root, machine_local)?;
        write_synced(&root.join(MANIFEST_FILE), &manifest.to_json())?;
        sync_dir(&root)?;
        let dest = self.entry_path(&hash);
        let kept = dir.keep();
        match fs::rename(&kept, &dest) {
            Ok(()) => {}
            // Someone published the same hash first (the lock file was replaced under us):
            // theirs is as good as ours.
            Err(_) if dest.join(MANIFEST_FILE).is_file() => {
                let _ = fs::remove_dir_all(&kept);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&kept);
                return Err(io(&dest)(e));
            }
        }
        sync_dir(&self.builds())?;
        Ok(manifest)
    }

    /// Rehashes an entry: every listed artifact present with its size, mode and blake3; no
    /// unlisted file; `key.json` hashing to the entry's name.
    pub fn verify(&self, hash: &BuildHash) -> Result<Vec<Damage>, StoreError> {
        let entry = self.entry_path(hash);
        let manifest = match self.manifest(hash) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Ok(vec![Damage {
                    path: MANIFEST_FILE.into(),
                    problem: "missing".into(),
                }]);
            }
            Err(e) => {
                return Ok(vec![Damage {
                    path: MANIFEST_FILE.into(),
                    problem: e.to_string(),
                }]);
            }
        };
        let mut damage = Vec::new();
        if &manifest.hash != hash {
            damage.push(Damage {
                path: MANIFEST_FILE.into(),
                problem: format!("names hash {} but lies in entry {hash}", manifest.hash),
            });
        }
        for a in &manifest.artifacts {
            let path = entry.join(&a.path);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => {
                    damage.push(Damage {
                        path: a.path.clone(),
                        problem: "missing".into(),
                    });
                    continue;
                }
            };
            if !meta.is_file() {
                damage.push(Damage {
                    path: a.path.clone(),
                    problem: "is not a regular file".into(),
                });
                continue;
            }
            if meta.len() != a.size {
                damage.push(Damage {
                    path: a.path.clone(),
                    problem: format!("size {} but the manifest says {}", meta.len(), a.size),
                });
                continue;
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode != a.mode {
                damage.push(Damage {
                    path: a.path.clone(),
                    problem: format!("mode {mode:o} but the manifest says {:o}", a.mode),
                });
            }
            match hash::file_digest(&path) {
                Ok((d, _)) if d == a.blake3 => {}
                Ok(_) => damage.push(Damage {
                    path: a.path.clone(),
                    problem: "content differs from its blake3 in the manifest".into(),
                }),
                Err(e) => damage.push(Damage {
                    path: a.path.clone(),
                    problem: format!("unreadable: {e}"),
                }),
            }
        }
        let listed: BTreeSet<&str> = manifest.artifacts.iter().map(|a| a.path.as_str()).collect();
        for found in scan_paths(&entry)? {
            if found != MANIFEST_FILE && !listed.contains(found.as_str()) {
                damage.push(Damage {
                    path: found,
                    problem: "is not listed in the manifest".into(),
                });
            }
        }
        if listed.contains(KEY_FILE) && !damage.iter().any(|d| d.path == KEY_FILE) {
            match self.key(hash) {
                Ok(key) if &key.hash() == hash => {}
                Ok(_) => damage.push(Damage {
                    path: KEY_FILE.into(),
                    problem: "does not hash to the entry's name".into(),
                }),
                Err(e) => damage.push(Damage {
                    path: KEY_FILE.into(),
                    problem: e.to_string(),
                }),
            }
        }
        Ok(damage)
    }

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
        let dir = self.roots();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        fs::write(&tmp, format!("{hash}\n")).map_err(io(&tmp))?;
        let dest = dir.join(name);
        fs::rename(&tmp, &dest).map_err(io(&dest))
    }

    /// Root name → hash.
    pub fn roots_list(&self) -> Result<Vec<(String, BuildHash)>, StoreError> {
        let dir = self.roots();
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let text = fs::read_to_string(ent.path()).unwrap_or_default();
                if let Some(h) = BuildHash::parse(text.trim()) {
                    out.push((name, h));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Hashes named by run records (`runs/RUNID/record.json`): a run, live or left behind by
    /// a killed process, mounts files of its entry, so gc keeps the entry until `bottle down`.
    fn run_hashes(&self) -> Vec<BuildHash> {
        let Ok(rd) = fs::read_dir(self.layout().join("runs")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| fs::read(e.path().join("record.json")).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| {
                v.get("hash")
                    .and_then(|h| h.as_str())
                    .and_then(BuildHash::parse)
            })
            .collect()
    }

    /// Removes entries kept neither by a root, nor by a run record, nor by `keep`, leftovers of killed builds, and
    /// folders of other layout versions. Entries whose lock is held (a build or run is using
    /// them) are left alone.
    pub fn gc(&self, keep: &[BuildHash], dry_run: bool) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let mut kept: BTreeSet<BuildHash> = keep.iter().cloned().collect();
        kept.extend(self.roots_list()?.into_iter().map(|(_, h)| h));
        kept.extend(self.run_hashes());
        let remove = |path: &Path, report: &mut GcReport| -> Result<(), StoreError> {
            report.freed_bytes += du(path);
            if !dry_run {
                fs::remove_dir_all(path).map_err(io(path))?;
            }
            Ok(())
        };
        for hash in self.hashes()? {
            if kept.contains(&hash) {
                report.kept.push(hash.to_string());
                continue;
            }
            let Some(_lock) = self.try_lock(&hash)? else {
                report.kept.push(hash.to_string());
                continue;
            };
            remove(&self.entry_path(&hash), &mut report)?;
            report.removed_entries.push(hash.to_string());
        }
        if let Ok(rd) = fs::read_dir(self.tmp()) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let held = match name.split('.').next().and_then(BuildHash::parse) {
                    Some(h) => self.try_lock(&h)?.is_none(),
                    None => false,
                };
                if !held {
                    remove(&ent.path(), &mut report)?;
                    report.removed_temporary.push(name);
                }
            }
        }
        if let Ok(rd) = fs::read_dir(&self.root) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let is_layout = name.len() > 1
                    && name.starts_with('v')
                    && name[1..].bytes().all(|b| b.is_ascii_digit());
                if is_layout && name != LAYOUT && ent.path().is_dir() {
                    remove(&ent.path(), &mut report)?;
                    report.removed_layouts.push(name);
                }
            }
        }
        Ok(report)
    }
}

/// Every file below `root` as a sorted list of artifacts (the manifest excluded).
fn scan(root: &Path, machine_local: &BTreeSet<String>) -> Result<Vec<Artifact>, StoreError> {
    let mut out = Vec::new();
    for rel in scan_paths(root)? {
        if rel == MANIFEST_FILE {
            continue;
        }
        let path = root.join(&rel);
        let meta = fs::metadata(&path).map_err(io(&path))?;
        let (blake3, size) = hash::file_digest(&path).map_err(io(&path))?;
        out.push(Artifact {
            machine_local: machine_local.contains(&rel),
            path: rel,
            blake3,
            size,
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    Ok(out)
}

/// Relative paths of every non-folder below `root`, sorted.
fn scan_paths(root: &Path) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.is_empty() => return Ok(out),
            Err(e) => return Err(io(&dir)(e)),
        };
        for ent in rd {
            let ent = ent.map_err(io(&dir))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = ent.file_type().map_err(io(&dir))?;
            if ft.is_dir() {
                stack.push((ent.path(), child));
            } else {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Bytes under a path (files only, not following links).
pub fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}
