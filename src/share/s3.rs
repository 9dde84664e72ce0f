//! A cache in an S3 bucket through `object_store`: AWS S3, Garage, MinIO, R2. Endpoint and
//! region come from the config file (`s3-endpoint`, `s3-region`) or, overriding it, the usual
//! environment; credentials from the environment only — `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT`) for a server other than AWS, `AWS_ALLOW_HTTP=true` for a plain-HTTP one —
//! with path-style requests, which every S3 server answers. object_store retries transient
//! failures itself (with backoff), within [`RETRIES_WITHIN`] of a request's first try, so its
//! errors here are final ([`CacheErrorKind::S3`]); each names its cause (a timeout, a redirect,
//! a denial, a 5xx) with the whole chain of sources. Within 20 s, not object_store's three
//! minutes, and short of [`STALL`], so that a server failing every try is named by its own
//! failure, not as a stall. A get or a head with no answer within [`STALL`] (object_store's
//! tries included) is a stall ([`Stall::Answer`]), named then and tried again by the cache's
//! own loop, as over HTTP: a server that takes a request and never answers is named after
//! 30 s, not after a try's 35 s read bound.

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

use super::bound::{Body, Bound, STALL, read_bounded};
use super::error::{CacheError, CacheErrorKind, Stall};

#[derive(Debug, Clone)]
pub struct S3Cache {
    url: String,
    prefix: String,
    store: std::sync::Arc<AmazonS3>,
}

impl S3Cache {
    pub fn new(
        url: &str,
        bucket: &str,
        prefix: &str,
        config: &super::settings::S3Options,
    ) -> Result<S3Cache, CacheError> {
        // The config file's endpoint and region first: the environment overrides them.
        let mut b = AmazonS3Builder::new();
        if let Some(endpoint) = &config.endpoint {
            b = b.with_endpoint(endpoint);
            if endpoint.starts_with("http://") {
                b = b.with_allow_http(true);
            }
        }
        if let Some(region) = &config.region {
            b = b.with_region(region);
        }
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_")
                && let Ok(key) = k.to_ascii_lowercase().parse()
            {
                b = b.with_config(key, v);
            }
        }
        b = b
            .with_bucket_name(bucket)
            .with_http_connector(NoRedirects)
            .with_retry(object_store::RetryConfig {
                retry_timeout: RETRIES_WITHIN,
                ..Default::default()
            });
        // AWS's newer name for the endpoint, which object_store does not know.
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            b = b.with_endpoint(endpoint);
        }
        let store = b
            .build()
            .map_err(|e| CacheError::new(url, "", CacheErrorKind::S3Setup(Box::new(e))))?;
        Ok(S3Cache {
            url: url.to_string(),
            prefix: prefix.to_string(),
            store: std::sync::Arc::new(store),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Final: object_store has retried what was worth it.
    fn err(&self, key: &str, e: object_store::Error) -> CacheError {
        CacheError::new(&self.url, key, CacheErrorKind::S3(Box::new(e)))
    }

    /// `answer`, or a stall once [`STALL`] has passed without it.
    async fn within<T>(&self, key: &str, answer: impl Future<Output = T>) -> Result<T, CacheError> {
        tokio::time::timeout(STALL, answer).await.map_err(|_| {
            CacheError::new(
                &self.url,
                key,
                CacheErrorKind::Stalled(Stall::Answer(STALL)),
            )
        })
    }

    /// The object's bytes, read as they arrive up to `bound`: an object whose listed size
    /// passes it is refused before its body is read.
    pub async fn get(&self, key: &str, bound: Bound) -> Result<Option<Body>, CacheError> {
        let r = match self.within(key, self.store.get(&self.path(key))).await? {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(key, e)),
        };
        let size = r.meta.size;
        read_bounded(r.into_stream(), Some(size), bound)
            .await
            .map(Some)
            .map_err(|e| CacheError::of_body(&self.url, key, bound, e))
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), CacheError> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    pub async fn head(&self, key: &str) -> Result<bool, CacheError> {
        match self.within(key, self.store.head(&self.path(key))).await? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Every key under `prefix`, relative to the cache's own prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let under = self.path(prefix.trim_end_matches('/'));
        let metas: Vec<_> = self
            .store
            .list(Some(&under))
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(metas
            .into_iter()
            .map(|m| {
                let p = m.location.to_string();
                p.strip_prefix(&strip).unwrap_or(&p).to_string()
            })
            .collect())
    }
}

/// How long object_store tries a request again, from its first try.
const RETRIES_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// object_store's HTTP client (5 s to connect, a read bound just past [`STALL`]),
/// following no redirect: a 3xx comes back to object_store, which names it,
/// rather than the request going again, without its signature, wherever it points.
#[derive(Debug)]
struct NoRedirects;

impl object_store::client::HttpConnector for NoRedirects {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let generic = |e: reqwest::Error| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        };
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // No bound on a whole request (a slow, steady transfer is fine), but one on each
            // read, past the cache's own stall bound: a body that stops is named a stall by
            // `read_bounded` first, and tried again by bottle's loop, which says so.
            .read_timeout(STALL + std::time::Duration::from_secs(5))
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(proxy) = options.get_config_value(&object_store::ClientConfigKey::ProxyUrl) {
            b = b.proxy(reqwest::Proxy::all(proxy).map_err(generic)?);
        }
        Ok(object_store::client::HttpClient::new(
            b.build().map_err(generic)?,
        ))
    }
}
