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

mod error;
mod gc;
mod layout;
mod lock;
mod publish;
mod roots;
mod verify;

use std::fs;

pub(crate) use crate::files::rel_path;
pub(crate) use error::io;
pub use error::{Damage, StoreError};
pub use gc::{GcReport, RmReport};
pub use layout::{LAYOUT, RUN_ENDED, RUN_RECORD, Store, du};
pub use lock::{GcGuard, StoreLock};
pub use publish::Staged;
pub use verify::{Component, Entry};

use crate::hash::{BuildHash, ComponentHash, ComponentId, ComponentKind};
use crate::manifest::{Manifest, ManifestError, RECORD_FILE, Record};
use layout::names;

impl Store {
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
                store: self.root().to_path_buf(),
            }),
            1 => Ok(matches[0]),
            _ => Err(StoreError::Ambiguous {
                input: input.to_string(),
                candidates: matches.iter().map(|h| h.to_string()).collect(),
            }),
        }
    }
}
