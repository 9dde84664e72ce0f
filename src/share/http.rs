//! A cache on a plain HTTP server: GET and HEAD read, PUT writes, DELETE removes (nginx with
//! `dav_methods PUT DELETE` and `create_full_put_path on`); listing reads nginx's
//! `autoindex_format json` pages, folder by folder. One reqwest client per cache: HTTP/1.1
//! with kept-alive connections, no redirect followed (a 3xx is an unexpected answer), no
//! proxy, 10 s to connect; `https://` with the TLS of [`super::tls`]. Every key is sent
//! escaped ([`escape`]); every body is read as it arrives, up to its bound, and a server
//! silent for [`STALL`] is a stall.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, Response, StatusCode};

use super::bound::{Body, Bound, STALL, read_bounded};
use super::error::{CacheError, CacheErrorKind, Stall};

/// The longest an upload may take, up to the answer's head.
const PUT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct HttpCache {
    base: String,
    client: reqwest::Client,
}

impl HttpCache {
    pub fn new(base: &str) -> Result<HttpCache, CacheError> {
        let setup = |message| CacheError::new(base, "", CacheErrorKind::Setup(message));
        let tls = super::tls::client_config().map_err(setup)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        Ok(HttpCache {
            base: base.to_string(),
            client,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn err(&self, key: &str, kind: CacheErrorKind) -> CacheError {
        CacheError::new(&self.base, key, kind)
    }

    /// Sends one request and waits for the answer's head: at most [`STALL`] for a request
    /// without a body, [`PUT_TIMEOUT`] for an upload.
    async fn send(&self, method: Method, key: &str, body: Bytes) -> Result<Response, CacheError> {
        let inside = key
            .trim_end_matches('/')
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
        if !inside {
            return Err(self.err(key, CacheErrorKind::KeyOutside { of: "prefix" }));
        }
        let url = format!("{}/{}", self.base, escape(key));
        let put = method == Method::PUT;
        let wait = if put { PUT_TIMEOUT } else { STALL };
        let mut req = self.client.request(method, &url);
        if put {
            req = req.body(body);
        }
        let req = req
            .build()
            .map_err(|e| self.err(key, CacheErrorKind::BadRequest(e.without_url())))?;
        // The request's own timeout would cover the body as well: this one ends at the head.
        let resp = tokio::time::timeout(wait, self.client.execute(req))
            .await
            .map_err(|_| self.err(key, CacheErrorKind::Stalled(Stall::Answer(wait))))?;
        resp.map_err(|e| {
            let connect = e.is_connect();
            let cause = Box::new(e.without_url());
            self.err(key, CacheErrorKind::of_request(cause, connect))
        })
    }

    /// Sends a request whose answer's body does not matter; returns its status.
    async fn status(
        &self,
        method: Method,
        key: &str,
        body: Bytes,
    ) -> Result<StatusCode, CacheError> {
        let resp = self.send(method, key, body).await?;
        let status = resp.status();
        // Read (a little of) the body so the connection can be used again.
        let _ = read_bounded(data(resp), None, Bound::LEASE).await;
        Ok(status)
    }

    /// A body, read as it arrives up to its bound.
    async fn body(&self, key: &str, resp: Response, bound: Bound) -> Result<Body, CacheError> {
        let announced = resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        read_bounded(data(resp), announced, bound)
            .await
            .map_err(|e| CacheError::of_body(&self.base, key, bound, e))
    }

    fn unexpected(&self, key: &str, status: StatusCode) -> CacheError {
        self.err(key, CacheErrorKind::Status(status))
    }

    pub async fn get(&self, key: &str, bound: Bound) -> Result<Option<Body>, CacheError> {
        let resp = self.send(Method::GET, key, Bytes::new()).await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(self.body(key, resp, bound).await?)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.unexpected(key, s)),
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), CacheError> {
        match self.status(Method::PUT, key, bytes).await? {
            s if s.is_success() => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => Err(self.err(key, CacheErrorKind::PutNotAllowed)),
            s => Err(self.unexpected(key, s)),
        }
    }

    pub async fn head(&self, key: &str) -> Result<bool, CacheError> {
        match self.status(Method::HEAD, key, Bytes::new()).await? {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.unexpected(key, s)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self.status(Method::DELETE, key, Bytes::new()).await? {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.unexpected(key, s)),
        }
    }

    /// Every key under `prefix`, from nginx's JSON autoindex (`[{"name", "type"}…]`). A name
    /// is taken as nginx lists it (the file's name on disk): holding a `/` or being `.` or
    /// `..`, it is skipped; any other name is escaped again whenever it is sent back.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let mut out = Vec::new();
        let mut folders = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(dir) = folders.pop() {
            let key = format!("{dir}/");
            let resp = self.send(Method::GET, &key, Bytes::new()).await?;
            let body = match resp.status() {
                StatusCode::OK => self.body(&key, resp, Bound::LISTING).await?.into_bytes(),
                StatusCode::NOT_FOUND => continue,
                s => return Err(self.unexpected(&key, s)),
            };
            let items: Vec<serde_json::Value> = serde_json::from_slice(&body)
                .map_err(|e| self.err(&key, CacheErrorKind::NotListing(e)))?;
            for item in items {
                let name = item["name"].as_str().unwrap_or_default();
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    continue;
                }
                match item["type"].as_str() {
                    Some("directory") => folders.push(format!("{dir}/{name}")),
                    Some("file") => out.push(format!("{dir}/{name}")),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

/// A key as a URL path: each `/`-separated part percent-encoded but for RFC 3986's
/// unreserved characters, so the server finds exactly the object named (a `%2e%2e%2f` in a
/// name stays three escaped bytes, never a `../`).
pub fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer's body as it arrives, its errors without the URL (which the cache error names).
fn data(resp: Response) -> impl Stream<Item = Result<Bytes, reqwest::Error>> {
    resp.bytes_stream()
        .map(|r| r.map_err(reqwest::Error::without_url))
}
