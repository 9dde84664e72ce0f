//! The queue's files on disk: each written whole and once (a temporary file in its folder,
//! then linked to its name, which fails when the name exists), read back with a file that
//! does not parse skipped, and folders given to the queue's owner.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::{QueueError, is_id};

pub(super) fn json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("queue files serialize");
    bytes.push(b'\n');
    bytes
}

/// Writes `dir/name` whole (a temporary file, then a link to the name); `false` when the name
/// exists already (nothing is written).
pub(super) fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool, QueueError> {
    let path = dir.join(name);
    let failed = |source| QueueError::Write {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(failed)?;
    tmp.write_all(bytes).map_err(failed)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let readable = std::fs::Permissions::from_mode(0o644);
        tmp.as_file().set_permissions(readable).map_err(failed)?;
    }
    tmp.as_file().sync_all().map_err(failed)?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(failed(e.error)),
    }
}

/// Gives `path` to the owner of `like` (best effort: a daemon running as root makes folders
/// the host's user must be able to remove).
pub(super) fn own_like(path: &Path, like: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(like) {
        let _ = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()));
    }
}

/// The ids of the `ID.json` files in `dir` (none when it does not exist).
pub(super) fn ids_in(dir: &Path) -> Result<Vec<String>, QueueError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(QueueError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    Ok(rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?;
            is_id(id).then(|| id.to_string())
        })
        .collect())
}

pub(super) fn read_one<T: serde::de::DeserializeOwned>(
    dir: &Path,
    id: &str,
) -> Result<Option<T>, QueueError> {
    if !is_id(id) {
        return Ok(None);
    }
    let path = dir.join(format!("{id}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(QueueError::Read { path, source }),
    }
}

pub(super) fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>, QueueError> {
    let mut out = Vec::new();
    for id in ids_in(dir)? {
        if let Some(t) = read_one(dir, &id)? {
            out.push(t);
        }
    }
    Ok(out)
}
