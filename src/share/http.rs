//! A cache on a plain HTTP server: GET and HEAD read, PUT writes, DELETE removes (nginx with
//! `dav_methods PUT DELETE` and `create_full_put_path on`); listing reads nginx's
//! `autoindex_format json` pages, folder by folder. HTTP/1.1 with kept-alive connections;
//! `https://` through [`super::tls`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::cache::CacheError;

/// The longest any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct HttpCache {
    base: String,
    client: Client<super::tls::Connector, Full<Bytes>>,
}

impl HttpCache {
    pub fn new(base: &str) -> Result<HttpCache, CacheError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let conn = super::tls::Connector::new(http).map_err(|message| CacheError {
            url: base.to_string(),
            key: String::new(),
            message,
            transient: false,
        })?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Ok(HttpCache {
            base: base.to_string(),
            client,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn err(&self, key: &str, message: String, transient: bool) -> CacheError {
        CacheError {
            url: self.base.clone(),
            key: key.to_string(),
            message,
            transient,
        }
    }

    /// Sends one request; returns the status and the whole body.
    async fn send(
        &self,
        method: Method,
        key: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), CacheError> {
        let uri = format!("{}/{key}", self.base);
        let req = Request::builder()
            .method(method)
            .uri(&uri)
            .body(Full::new(body))
            .map_err(|e| self.err(key, format!("bad request: {e}"), false))?;
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let message = chain(&e);
                // A refused certificate does not get better by asking again.
                let transient = !message.contains("certificate");
                self.err(key, format!("request failed: {message}"), transient)
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.err(key, format!("response body cut off: {e}"), true))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| self.err(key, format!("no answer within {REQUEST_TIMEOUT:?}"), true))?
    }

    fn unexpected(&self, key: &str, status: StatusCode) -> CacheError {
        let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        self.err(key, format!("the server answered {status}"), transient)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        match self.send(Method::GET, key, Bytes::new()).await? {
            (StatusCode::OK, body) => Ok(Some(body)),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (s, _) => Err(self.unexpected(key, s)),
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), CacheError> {
        match self.send(Method::PUT, key, bytes).await? {
            (s, _) if s.is_success() => Ok(()),
            (StatusCode::METHOD_NOT_ALLOWED, _) => Err(self.err(
                key,
                "the server does not accept PUT (405): enable it, e.g. nginx `dav_methods PUT DELETE; create_full_put_path on;`".to_string(),
                false,
            )),
            (s, _) => Err(self.unexpected(key, s)),
        }
    }

    pub async fn head(&self, key: &str) -> Result<bool, CacheError> {
        match self.send(Method::HEAD, key, Bytes::new()).await? {
            (StatusCode::OK, _) => Ok(true),
            (StatusCode::NOT_FOUND, _) => Ok(false),
            (s, _) => Err(self.unexpected(key, s)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self.send(Method::DELETE, key, Bytes::new()).await? {
            (s, _) if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            (s, _) => Err(self.unexpected(key, s)),
        }
    }

    /// Every key under `prefix`, from nginx's JSON autoindex (`[{"name", "type"}…]`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let mut out = Vec::new();
        let mut folders = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(dir) = folders.pop() {
            let key = format!("{dir}/");
            let body = match self.send(Method::GET, &key, Bytes::new()).await? {
                (StatusCode::OK, body) => body,
                (StatusCode::NOT_FOUND, _) => continue,
                (s, _) => return Err(self.unexpected(&key, s)),
            };
            let items: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
                self.err(
                    &key,
                    format!("not a JSON folder listing ({e}): enable nginx `autoindex on; autoindex_format json;`"),
                    false,
                )
            })?;
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

/// An error with its sources: hyper's client says only "client error (Connect)" on top.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
