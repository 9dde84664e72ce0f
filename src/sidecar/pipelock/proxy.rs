//! pipelock: the guest's first and only hop out. An HTTP forward proxy with a host allowlist.
//!
//! - `GET http://host:port/path` (any method, absolute form, `http://` only): forwarded when
//!   `host` is allowed, hop-by-hop headers dropped both ways, `Host` set from the target;
//! - `CONNECT host:port`: the upstream is dialled, then bytes are tunnelled both ways when
//!   `host` is allowed (no TLS interception yet);
//! - every other host gets `403` with a short body naming it; requests that are not proxy
//!   requests (origin form, other schemes) get `400`;
//! - one audit line per request on stderr: client IP, method, target host and port, allowed or
//!   refused, the status answered. Never a header value, a path or a query: they may carry
//!   tokens.
//!
//! The allowlist holds exact hosts (`api.example.com`) and wildcards (`*.example.com`, which
//! matches every name below `example.com` but not `example.com` itself). Matching is on the
//! lowercased host without a trailing dot; ports are not restricted.
//!
//! Not yet here (the daemons issue): DLP scanning of outbound requests, TLS interception with
//! the bottle's CA, sending route hosts through egress, the audit log file.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use super::Config;
use super::allow::{Allowlist, normalize};
use crate::sidecar::log;

const WHO: &str = "pipelock";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, hyper::Error>;

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    allow: Allowlist,
    client: Client<HttpConnector, Incoming>,
}

impl Proxy {
    /// Binds the listening socket. `secrets` holds the routes' tokens by env var name.
    pub async fn bind(config: Config, _secrets: BTreeMap<String, String>) -> Result<Proxy> {
        let addr = SocketAddr::new(config.listen_host, config.listen_port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("pipelock cannot listen on {addr}"))?;
        let allow = Allowlist::new(&config.allow);
        let mut hosts = config.allow.clone();
        hosts.sort();
        let shown = if hosts.is_empty() {
            "no host (every request is refused)".to_string()
        } else {
            hosts.join(", ")
        };
        log(WHO, format!("listening on {addr}; allowing {shown}"));
        if config.dlp.enabled {
            log(
                WHO,
                "DLP scanning and TLS interception not yet implemented (daemons issue); CONNECT is tunnelled as is",
            );
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Proxy {
            listener,
            state: Arc::new(State { allow, client }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self) -> Result<()> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not die.
                    log(WHO, format!("cannot accept a connection: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.handle(req, peer.ip()).await) }
                });
                // A client that goes away mid-request is not worth a log line. One that only
                // half-closes after its request (busybox nc does) still gets its answer.
                let _ = http1::Builder::new()
                    .half_close(true)
                    .preserve_header_case(true)
                    .title_case_headers(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    }
}

impl State {
    async fn handle(&self, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let method = req.method().clone();
        let (target, response, note) = if method == Method::CONNECT {
            self.connect(req).await
        } else {
            self.forward(req).await
        };
        let decision = match response.status() {
            StatusCode::FORBIDDEN => "refused",
            StatusCode::BAD_REQUEST => "invalid",
            _ => "allowed",
        };
        let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
        log(
            WHO,
            format!(
                "audit from={peer} {method} {target} {decision} status={}{note}",
                response.status().as_u16()
            ),
        );
        response
    }

    /// `CONNECT host:port`: dial, answer 200, then tunnel the upgraded connection.
    async fn connect(&self, req: Request<Incoming>) -> (String, Response<Body>, Option<String>) {
        let Some((host, port)) = req
            .uri()
            .authority()
            .and_then(|a| Some((a.host().to_string(), a.port_u16()?)))
        else {
            return (
                "-".into(),
                text(
                    StatusCode::BAD_REQUEST,
                    "pipelock: CONNECT needs a host:port target\n".into(),
                ),
                None,
            );
        };
        let target = format!("{host}:{port}");
        if !self.allow.allows(&host) {
            return (target, refused(&host), None);
        }
        let dial = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((normalize(&host), port)),
        )
        .await;
        let mut upstream = match dial {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return (target.clone(), unreachable(&target), Some(e.to_string())),
            Err(_) => {
                return (
                    target.clone(),
                    unreachable(&target),
                    Some("timed out".into()),
                );
            }
        };
        let _ = upstream.set_nodelay(true);
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => log(WHO, format!("CONNECT tunnel was not opened: {e}")),
            }
        });
        (target, Response::new(empty()), None)
    }

    /// An absolute-form `http://` request: forwarded without hop-by-hop headers.
    async fn forward(&self, req: Request<Incoming>) -> (String, Response<Body>, Option<String>) {
        let uri = req.uri();
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return (
                "-".into(),
                text(
                    StatusCode::BAD_REQUEST,
                    "pipelock is a forward proxy: send absolute-form requests (http://host/path) or CONNECT host:port\n".into(),
                ),
                None,
            );
        };
        let host = authority.host().to_string();
        let port = authority.port_u16().unwrap_or(80);
        let target = format!("{host}:{port}");
        if !scheme.eq_ignore_ascii_case("http") {
            return (
                target,
                text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "pipelock forwards http:// requests only; for {scheme}:// use CONNECT\n"
                    ),
                ),
                None,
            );
        }
        if !self.allow.allows(&host) {
            return (target, refused(&host), None);
        }
        // Rebuild the target without userinfo; `Host` names exactly where the request goes.
        let host_header = match authority.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Ok(new_uri) = format!("http://{host_header}{path}").parse::<Uri>() else {
            return (
                target,
                text(
                    StatusCode::BAD_REQUEST,
                    "pipelock: malformed target\n".into(),
                ),
                None,
            );
        };
        let (mut parts, body) = req.into_parts();
        parts.uri = new_uri;
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(v) = HeaderValue::from_str(&host_header) {
            parts.headers.insert(header::HOST, v);
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                (target, Response::from_parts(parts, body.boxed()), None)
            }
            Err(e) => {
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                (target.clone(), unreachable(&target), Some(why))
            }
        }
    }
}

/// Drops the headers that describe one hop, not the request: the fixed list and every header
/// `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
}

fn refused(host: &str) -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        format!(
            "pipelock: {host} is not on this bottle's allowlist; add it under [pipelock] allow in the recipe\n"
        ),
    )
}

fn unreachable(target: &str) -> Response<Body> {
    text(
        StatusCode::BAD_GATEWAY,
        format!("pipelock: cannot reach {target}\n"),
    )
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("authorization"));
    }
}
