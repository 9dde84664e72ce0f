//! Files bottle creates: with their mode from the start (a key is never readable by others,
//! not even for a moment), written and synced before anyone may rely on them. Also how a
//! host path a recipe writes with a leading `~/` is found ([`expand_home`]), and a path
//! relative to a folder as a store record writes it ([`rel_path`]).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Creates `path` (and its folders) with `mode`, writes `bytes`, syncs it. Fails when the
/// file exists.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    // The umask may have cleared bits we asked for; set them exactly.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}

/// A host path as a recipe writes it: a leading `~/` is the user's HOME.
pub fn expand_home(p: &str) -> Result<PathBuf> {
    if let Some(rest) = p.strip_prefix("~/") {
        let home = std::env::var_os("HOME")
            .context("the recipe names a path under ~/ and HOME is not set")?;
        Ok(PathBuf::from(home).join(rest))
    } else {
        Ok(PathBuf::from(p))
    }
}

/// `path` relative to `root`, `/`-separated.
pub fn rel_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}
