//! The caches themselves: a few operations on objects named by `/`-separated keys — get,
//! put, head, list, delete — dispatched to a folder ([`FileCache`]), a plain HTTP server
//! ([`HttpCache`](super::http::HttpCache)) or an S3 bucket ([`S3Cache`](super::s3::S3Cache)).
//!
//! Every get is bounded ([`Bound`], read by [`super::bound::read_bounded`]): a chunk by the
//! size its chunk list gives, the other objects by a fixed cap.
//!
//! Errors say whether they are worth a retry ([`CacheError::transient`], from their kind);
//! [`Cache::retry`] retries those with backoff until [`RETRY_BUDGET`] has passed since the
//! first try.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::bound::{Body, Bound};
use super::error::{CacheError, CacheErrorKind, GaveUp};
use super::file::FileCache;
use super::url::CacheUrl;

/// How many objects move at once.
pub const JOBS: usize = 8;

/// How long transient failures of one operation are tried again, from its first try.
pub const RETRY_BUDGET: Duration = Duration::from_secs(180);
/// How long a server no connection can be made to is tried again.
pub const UNREACHABLE_BUDGET: Duration = Duration::from_secs(15);
/// The longest wait between two tries.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// A cache to push to and pull from.
#[derive(Debug, Clone)]
pub enum Cache {
    File(FileCache),
    Http(Box<super::http::HttpCache>),
    S3(super::s3::S3Cache),
}

impl Cache {
    pub fn open(url: &CacheUrl, s3: &super::settings::S3Options) -> Result<Cache, CacheError> {
        match url {
            CacheUrl::File(root) => Ok(Cache::File(FileCache::new(root.clone()))),
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
            Cache::File(f) => f.url(),
            Cache::Http(h) => h.base().to_string(),
            Cache::S3(s) => s.url().to_string(),
        }
    }

    /// The object's bytes, at most `bound.max` of them, or `None` when the cache has no
    /// such object.
    pub async fn get(&self, key: &str, bound: Bound) -> Result<Option<Bytes>, CacheError> {
        Ok(self.get_body(key, bound).await?.map(Body::into_bytes))
    }

    /// [`Cache::get`], the bytes kept as the parts they arrived in (no copy into one buffer).
    pub async fn get_body(&self, key: &str, bound: Bound) -> Result<Option<Body>, CacheError> {
        self.retry(key, || async {
            match self {
                Cache::File(f) => f.get(key, bound).await,
                Cache::Http(h) => h.get(key, bound).await,
                Cache::S3(s) => s.get(key, bound).await,
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

    /// Every key under `prefix` (which ends with `/`), as the server names it: the caller
    /// checks each against the layout before using it.
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

    async fn retry<T, F, Fut>(&self, key: &str, op: F) -> Result<T, CacheError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CacheError>>,
    {
        retry_within(RETRY_BUDGET, key, op).await
    }
}

/// Runs `op` until it succeeds, fails for good, or `budget` has passed since the first try
/// with transient failures only ([`UNREACHABLE_BUDGET`] for a server no connection can be
/// made to); waits 100 ms, 200 ms, 400 ms… (at most 5 s) between tries.
/// A stall is said at once, on stderr, with the object and the server.
pub(super) async fn retry_within<T, F, Fut>(
    budget: Duration,
    key: &str,
    op: F,
) -> Result<T, CacheError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CacheError>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match op().await {
            Err(e)
                if e.transient()
                    && started.elapsed() + wait
                        < if e.unreachable() {
                            budget.min(UNREACHABLE_BUDGET)
                        } else {
                            budget
                        } =>
            {
                if matches!(e.kind, CacheErrorKind::Stalled(_)) {
                    tracing::warn!("{e}; trying again");
                } else {
                    tracing::debug!("{key}: {e}; retrying in {wait:?}");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
                tries += 1;
            }
            Err(mut e) if e.transient() => {
                e.gave_up = Some(GaveUp {
                    tries,
                    secs: started.elapsed().as_secs(),
                });
                return Err(e);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failure(transient: bool) -> CacheError {
        let status = if transient {
            reqwest::StatusCode::SERVICE_UNAVAILABLE
        } else {
            reqwest::StatusCode::FORBIDDEN
        };
        CacheError::new("u", "k", CacheErrorKind::Status(status))
    }

    #[tokio::test]
    async fn transient_errors_are_retried_with_backoff_within_a_budget_and_final_ones_are_not() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let r = retry_within(RETRY_BUDGET, "k", || async {
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
        let r: Result<(), _> = retry_within(RETRY_BUDGET, "k", || async {
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

        // More than five tries fit in the budget; then it gives up, saying so.
        tries.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry_within(Duration::from_secs(4), "k", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(failure(true))
        })
        .await;
        let n = tries.load(Ordering::SeqCst);
        assert!(n > 5, "{n} tries");
        let e = r.unwrap_err();
        assert_eq!(e.gave_up.map(|g| g.tries), Some(n));
        assert!(
            e.to_string()
                .contains(&format!("(gave up after {n} tries over")),
            "{e}"
        );
    }
}
