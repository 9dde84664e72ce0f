//! The store's locks: one per entry and per component (concurrent builds of one thing build
//! it once), and `gc.lock` (builds, imports and pins hold it shared; `bottle gc` exclusively).
//! Locks are `flock(2)`s on files under `locks/`, released when the file closes — also when the
//! process dies, so a killed build never leaves a lock held.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::{StoreError, io};
use super::layout::Store;
use crate::hash::{BuildHash, ComponentId};

/// An exclusive lock on one entry or component, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// `gc.lock` held shared: gc waits until it is dropped.
#[derive(Debug)]
pub struct GcGuard {
    _file: File,
}

impl Store {
    fn lock_path(&self, name: &str) -> PathBuf {
        self.locks().join(format!("{name}.lock"))
    }

    fn open_lock(&self, path: &Path) -> Result<File, StoreError> {
        fs::create_dir_all(self.locks()).map_err(io(&self.locks()))?;
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))
    }

    /// Takes a named lock, waiting (and saying so) while another process holds it.
    fn lock_named(&self, name: &str, what: &str) -> Result<StoreLock, StoreError> {
        let path = self.lock_path(name);
        let file = self.open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => return Ok(StoreLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        tracing::info!(
            "Waiting for another process working on {what} (lock {})",
            path.display()
        );
        file.lock().map_err(io(&path))?;
        Ok(StoreLock { _file: file })
    }

    /// The lock of an entry.
    pub fn lock_entry(&self, hash: &BuildHash) -> Result<StoreLock, StoreError> {
        self.lock_named(&format!("entry-{hash}"), &format!("entry {}", hash.short()))
    }

    /// The lock of a component.
    pub fn lock_component(&self, id: &ComponentId) -> Result<StoreLock, StoreError> {
        self.lock_named(&format!("{}-{}", id.kind, id.hash), &id.to_string())
    }

    /// `gc.lock` shared, for the length of a build, an import or a pin.
    pub fn gc_guard(&self) -> Result<GcGuard, StoreError> {
        let path = self.lock_path("gc");
        let file = self.open_lock(&path)?;
        match file.try_lock_shared() {
            Ok(()) => return Ok(GcGuard { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        tracing::info!(
            "Waiting for `bottle gc` to finish (lock {})",
            path.display()
        );
        file.lock_shared().map_err(io(&path))?;
        Ok(GcGuard { _file: file })
    }

    /// Removes the lock file of something gc removed. Only under `gc.lock` held exclusively:
    /// no build or import holds a lock then (they hold `gc.lock` shared first), so nobody can
    /// be locking the file being removed.
    pub(super) fn remove_lock_file(&self, name: &str) {
        let _ = fs::remove_file(self.lock_path(name));
    }

    /// `gc.lock` exclusively: no build, import or pin is under way while it is held.
    pub(super) fn gc_lock(&self) -> Result<StoreLock, StoreError> {
        self.lock_named("gc", "the store (builds or runs starting)")
    }
}
