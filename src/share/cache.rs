//! The caches themselves: a few operations on objects named by `/`-separated keys — get,
//! put, head, list, delete — over a folder ([`FileCache`]), a plain HTTP server
//! (`HttpCache`) or an S3 bucket (`S3Cache`). Errors say whether they are worth a retry
//! ([`CacheError::transient`]); [`Cache::retry`] retries those with backoff.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::url::CacheUrl;

#[derive(Debug, thiserror::Error)]
#[error("{url}/{key}: {message}")]
pub struct CacheError {
    pub url: String,
    pub key: String,
    pub message: String,
    /// Worth another try (a refused connection, a 5xx, a timeout).
    pub transient: bool,
}

/// A cache to push to and pull from.
#[derive(Debug, Clone)]
pub enum Cache {
    File(FileCache),
    Http(Box<super::http::HttpCache>),
    S3(super::s3::S3Cache),
}

const ATTEMPTS: u32 = 5;

impl Cache {
    pub fn open(url: &CacheUrl, s3: &super::config::S3Options) -> Result<Cache, CacheError> {
        match url {
            CacheUrl::File(root) => Ok(Cache::File(FileCache { root: root.clone() })),
            CacheUrl::Http { base } => {
                Ok(Cache::Http(Box::new(super::http::HttpCache::new(base)?)))
            }
            CacheUrl::S3 { bucket, prefix } => Ok(Cache::S3(super::s3::S3Cache::new(
                &url.to_string(),
                bucket,
                prefix,
                s3,
            )?)),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Cache::File(f) => format!("file://{}", f.root.display()),
            Cache::Http(h) => h.base().to_string(),
            Cache::S3(s) => s.url().to_string(),
        }
    }

    /// The object's bytes, or `None` when the cache has no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        self.retry(key, || async {
            match self {
                Cache::File(f) => f.get(key).await,
                Cache::Http(h) => h.get(key).await,
                Cache::S3(s) => s.get(key).await,
            }
        })
        .await
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), CacheError> {
        self.retry(key, || async {
            match self {
                Cache::File(f) => f.put(key, &bytes).await,
                Cache::Http(h) => h.put(key, bytes.clone()).await,
                Cache::S3(s) => s.put(key, bytes.clone()).await,
            }
        })
        .await
    }

    pub async fn head(&self, key: &str) -> Result<bool, CacheError> {
        self.retry(key, || async {
            match self {
                Cache::File(f) => f.head(key).await,
                Cache::Http(h) => h.head(key).await,
                Cache::S3(s) => s.head(key).await,
            }
        })
        .await
    }

    /// Every key under `prefix` (which ends with `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        self.retry(prefix, || async {
            match self {
                Cache::File(f) => f.list(prefix).await,
                Cache::Http(h) => h.list(prefix).await,
                Cache::S3(s) => s.list(prefix).await,
            }
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.retry(key, || async {
            match self {
                Cache::File(f) => f.delete(key).await,
                Cache::Http(h) => h.delete(key).await,
                Cache::S3(s) => s.delete(key).await,
            }
        })
        .await
    }

    /// Runs `op` until it succeeds, fails for good, or [`ATTEMPTS`] tries failed; waits
    /// 100 ms, 200 ms, 400 ms… between tries.
    async fn retry<T, F, Fut>(&self, key: &str, op: F) -> Result<T, CacheError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CacheError>>,
    {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.transient && attempt < ATTEMPTS => {
                    tracing::debug!("{key}: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(mut e) if e.transient => {
                    e.message = format!("{} (after {ATTEMPTS} tries)", e.message);
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

/// A cache in a folder: each key a file under it; a put appears by one rename.
#[derive(Debug, Clone)]
pub struct FileCache {
    root: PathBuf,
}

impl FileCache {
    fn err(&self, key: &str, e: std::io::Error) -> CacheError {
        CacheError {
            url: format!("file://{}", self.root.display()),
            key: key.to_string(),
            message: e.to_string(),
            transient: matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        match tokio::fs::read(self.root.join(key)).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.root.join(key);
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

    async fn head(&self, key: &str) -> Result<bool, CacheError> {
        match tokio::fs::metadata(self.root.join(key)).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let root = self.root.clone();
        let start = root.join(prefix);
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

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match tokio::fs::remove_file(self.root.join(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failure(transient: bool) -> CacheError {
        CacheError {
            url: "u".into(),
            key: "k".into(),
            message: "m".into(),
            transient,
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_with_backoff_and_final_ones_are_not() {
        let cache = Cache::File(FileCache {
            root: "/nonexistent".into(),
        });
        let tries = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let r = cache
            .retry("k", || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(failure(true)),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        // 100 ms, then 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));

        tries.store(0, Ordering::SeqCst);
        let r: Result<(), _> = cache
            .retry("k", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(failure(false))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(
            tries.load(Ordering::SeqCst),
            1,
            "a final error is not retried"
        );

        tries.store(0, Ordering::SeqCst);
        let r: Result<(), _> = cache
            .retry("k", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(failure(true))
            })
            .await;
        assert!(r.unwrap_err().message.contains("after 5 tries"));
        assert_eq!(tries.load(Ordering::SeqCst), ATTEMPTS);
    }
}
