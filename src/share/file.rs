//! A cache in a folder (`file://`): each key a file under it; a put appears by one rename.
//! A key is only ever a path below the folder: one with an empty, `.` or `..` part is refused.

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;

use super::bound::{BodyError, Bound};
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

    pub async fn get(&self, key: &str, bound: Bound) -> Result<Option<Bytes>, CacheError> {
        let path = self.path(key)?;
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<Result<Vec<u8>, u64>> {
            let f = std::fs::File::open(&path)?;
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
            Ok(Ok(b)) => Ok(Some(Bytes::from(b))),
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
        let bytes = bytes.to_vec();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
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

    pub async fn head(&self, key: &str) -> Result<bool, CacheError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
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
                .filter(|e| e.file_type().is_file())
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
