//! A cache in a folder (`file://`): each key a file under it; a put appears by one rename.
//! A key is only ever a path below the folder: one with an empty, `.` or `..` part is refused.
//! An object is a regular file reached through no symlink: a link (a chunk pointing at a
//! file elsewhere, a folder pointing out of the cache) or a FIFO is refused by name, never
//! followed, read or written through; gc's listing names them.

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;

use super::bound::{Body, BodyError, Bound};
use super::error::{CacheError, CacheErrorKind};

#[derive(Debug, Clone)]
pub struct FileCache {
    root: PathBuf,
}

impl FileCache {
    pub fn new(root: PathBuf) -> FileCache {
        FileCache { root }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn err(&self, key: &str, e: std::io::Error) -> CacheError {
        CacheError::new(&self.url(), key, CacheErrorKind::Io(e))
    }

    /// The file of a key, which stays below the folder.
    fn path(&self, key: &str) -> Result<PathBuf, CacheError> {
        let inside = key
            .trim_end_matches('/')
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
        if !inside {
            return Err(CacheError::new(
                &self.url(),
                key,
                CacheErrorKind::KeyOutside { of: "folder" },
            ));
        }
        Ok(self.root.join(key))
    }

    pub async fn get(&self, key: &str, bound: Bound) -> Result<Option<Body>, CacheError> {
        self.path(key)?;
        let (root, rel) = (self.root.clone(), key.trim_end_matches('/').to_string());
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<Result<Vec<u8>, u64>> {
            let f = open_object(&root, &rel)?;
            let len = f.metadata()?.len();
            if len > bound.max {
                return Ok(Err(len));
            }
            // One byte past the bound tells a file that grew since.
            let mut buf = Vec::with_capacity(len as usize);
            f.take(bound.max.saturating_add(1)).read_to_end(&mut buf)?;
            if buf.len() as u64 > bound.max {
                return Ok(Err(buf.len() as u64));
            }
            Ok(Ok(buf))
        })
        .await
        .expect("the get task does not panic");
        match r {
            Ok(Ok(b)) => Ok(Some(Body::from(Bytes::from(b)))),
            Ok(Err(len)) => Err(CacheError::of_body(
                &self.url(),
                key,
                bound,
                BodyError::TooLarge(Some(len)),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.path(key)?;
        let dir = path.parent().expect("a key names a file").to_path_buf();
        let root = self.root.clone();
        let bytes = bytes.to_vec();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            // The folders on the way are the cache's own, not links out of it.
            let rel = dir.strip_prefix(&root).unwrap_or(&dir);
            if !rel.as_os_str().is_empty() {
                open_beneath(
                    &root,
                    rel,
                    rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::PATH,
                )?;
            }
            let mut tmp = tempfile::Builder::new().prefix(".put-").tempfile_in(&dir)?;
            std::io::Write::write_all(&mut tmp, &bytes)?;
            tmp.as_file().sync_all()?;
            std::fs::set_permissions(
                tmp.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await
        .expect("the put task does not panic");
        r.map_err(|e| self.err(key, e))
    }

    /// Whether the key is there as the cache's object: a regular file reached through no
    /// symlink (anything else is not there: a push writes the object over it).
    pub async fn head(&self, key: &str) -> Result<bool, CacheError> {
        self.path(key)?;
        let (root, rel) = (self.root.clone(), key.trim_end_matches('/').to_string());
        let r = tokio::task::spawn_blocking(move || open_object(&root, &rel))
            .await
            .expect("the head task does not panic");
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let root = self.root.clone();
        let start = self.path(prefix)?;
        let out = tokio::task::spawn_blocking(move || {
            walkdir::WalkDir::new(&start)
                .into_iter()
                .flatten()
                // Symlinks and other non-folders too: gc names what is not the layout's.
                .filter(|e| !e.file_type().is_dir())
                .filter(|e| !e.file_name().to_string_lossy().starts_with(".put-"))
                .map(|e| crate::store::rel_path(&root, e.path()))
                .collect()
        })
        .await
        .expect("the list task does not panic");
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

/// Opens `rel` below `root` with `flags`, through no symlink and never out of `root` (the
/// root's own path may hold links: it is the user's). A symlink on the way is an
/// `InvalidData` error saying so; on a kernel without `openat2`, only the last part is kept
/// from being a link.
fn open_beneath(
    root: &std::path::Path,
    rel: impl AsRef<std::path::Path>,
    flags: rustix::fs::OFlags,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = std::fs::File::open(root)?;
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let rel = rel.as_ref();
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH;
    match rustix::fs::openat2(&dir, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOSYS) => Ok(rustix::fs::openat(&dir, rel, flags, Mode::empty())?),
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::XDEV) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is a symlink or is reached through one: a folder cache's objects are regular \
             files in folders of its own, and no link is followed",
        )),
        Err(e) => Err(e.into()),
    }
}

/// A key's file, opened for reading as a folder cache's object must be: a regular file
/// reached through no symlink ([`open_beneath`]), and never a FIFO or device to block on.
fn open_object(root: &std::path::Path, rel: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::OFlags;
    let fd = open_beneath(root, rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not a regular file: a folder cache's objects are",
        ));
    }
    Ok(f)
}
