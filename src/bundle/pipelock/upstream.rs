//! pipelock's side towards the upstreams: how a connection is made — name resolution, TCP
//! (directly, or through the `upstream_proxy` with `CONNECT`), TLS verified against the public
//! roots compiled in (`webpki-roots`; the bundle has no system store) plus, for an egress
//! route, its `upstream_ca` — and the typed reasons one cannot be made, which pipelock's 502
//! bodies spell out.
//!
//! [`Connector`] is the `tower::Service<Uri>` hyper-util's pooled client dials through, so
//! connections to an upstream are kept alive and reused across the guest's requests.
//!
//! Names resolve as usual (the bundle's `/etc/hosts` holds the recipe's `[network] hosts`),
//! once per connection; each answer is judged by [`Destinations`] and the connection goes to
//! that very address, so a name rebound between requests is judged again and never slips a
//! private address past the check. For tests only, [`TEST_RESOLVE_ENV`] maps names to
//! loopback addresses; a name it maps counts as a plain DNS answer, not as the recipe's
//! `[network] hosts` (tests list those in the config's `mapped_hosts`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::allow::normalize;
use super::destination::{Blocked, Destinations};
use crate::bundle::serve::TEST_RESOLVE_ENV;
use crate::daemons::egress;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer head an upstream proxy may send to a CONNECT.
const PROXY_HEAD_LIMIT: usize = 16 * 1024;

/// Why pipelock could not reach an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}: {cause}")]
    Resolve { host: String, cause: io::Error },
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: io::Error },
    #[error("no connection to {target} within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout { target: String },
    #[error("the upstream proxy {proxy} did not open a tunnel to {target}: {why}")]
    Proxy {
        proxy: String,
        target: String,
        why: String,
    },
    #[error("TLS with {host} failed: {cause}")]
    Tls { host: String, cause: io::Error },
    #[error("{host:?} is not a name TLS can verify")]
    Name { host: String },
    #[error("{host} is at {}, a {} address", .blocked.addr, .blocked.class)]
    Private { host: String, blocked: Blocked },
}

impl UpstreamError {
    /// Whether the upstream's certificate is what failed (not trusted, expired, wrong name).
    pub fn is_certificate(&self) -> bool {
        match self {
            UpstreamError::Tls { cause, .. } => cause
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_))),
            _ => false,
        }
    }
}

/// A route's CA file pipelock cannot use.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read egress route {host}'s upstream_ca {path}: {cause}")]
    Read {
        host: String,
        path: PathBuf,
        cause: rustls::pki_types::pem::Error,
    },
    #[error(
        "egress route {host}'s upstream_ca {path} holds no usable certificate: {why}; give a PEM file of CA certificates"
    )]
    Empty {
        host: String,
        path: PathBuf,
        why: String,
    },
    #[error("the upstream TLS config cannot be built: {0}")]
    Config(rustls::Error),
    #[error("{TEST_RESOLVE_ENV}: {0:?} is not NAME=LOOPBACK_ADDRESS")]
    Resolve(String),
    #[error("upstream_proxy {0:?} is not http://HOST:PORT")]
    Proxy(String),
}

/// Dials upstreams; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    public: Arc<ClientConfig>,
    /// Route host → its config (public roots and its upstream CA).
    routes: HashMap<String, Arc<ClientConfig>>,
    proxy: Option<(String, u16)>,
    resolve: HashMap<String, TestAnswers>,
    destinations: Destinations,
}

/// A name's answers under [`TEST_RESOLVE_ENV`], in turn.
struct TestAnswers {
    answers: Vec<IpAddr>,
    asked: std::sync::atomic::AtomicUsize,
}

impl TestAnswers {
    fn next(&self) -> IpAddr {
        let i = self
            .asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.answers[i.min(self.answers.len() - 1)]
    }
}

impl Connector {
    pub fn new(
        egress: &egress::Config,
        destinations: Destinations,
        provider: Arc<CryptoProvider>,
        test_resolve: Option<&str>,
    ) -> Result<Connector, CaError> {
        let public = client_config(&provider, public_roots())?;
        let mut routes = HashMap::new();
        for route in &egress.routes {
            let Some(path) = &route.upstream_ca else {
                continue;
            };
            let mut roots = public_roots();
            add_pem(&mut roots, &route.host, Path::new(path))?;
            routes.insert(normalize(&route.host), client_config(&provider, roots)?);
        }
        let proxy = match &egress.upstream_proxy {
            Some(p) => Some(parse_proxy(p)?),
            None => None,
        };
        Ok(Connector {
            inner: Arc::new(Inner {
                public,
                routes,
                proxy,
                resolve: parse_test_resolve(test_resolve)?,
                destinations,
            }),
        })
    }
}

fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn add_pem(roots: &mut RootCertStore, host: &str, path: &Path) -> Result<(), CaError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|cause| CaError::Read {
            host: host.to_string(),
            path: path.to_path_buf(),
            cause,
        })?;
    let empty = |why: String| CaError::Empty {
        host: host.to_string(),
        path: path.to_path_buf(),
        why,
    };
    if certs.is_empty() {
        return Err(empty("no CERTIFICATE block".into()));
    }
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(empty("no certificate parses as a CA".into()));
    }
    Ok(())
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: RootCertStore,
) -> Result<Arc<ClientConfig>, CaError> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(CaError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_proxy(text: &str) -> Result<(String, u16), CaError> {
    let bad = || CaError::Proxy(text.to_string());
    let uri: Uri = text.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let host = uri.host().ok_or_else(bad)?;
    Ok((normalize(host), uri.port_u16().unwrap_or(80)))
}

fn parse_test_resolve(text: Option<&str>) -> Result<HashMap<String, TestAnswers>, CaError> {
    let mut map = HashMap::new();
    let Some(text) = text else {
        return Ok(map);
    };
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || CaError::Resolve(pair.to_string());
        let (name, ips) = pair.split_once('=').ok_or_else(bad)?;
        let mut answers = Vec::new();
        for ip in ips.split('|') {
            let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
            if crate::daemons::netclass::classify(ip)
                != crate::daemons::netclass::AddrClass::Loopback
            {
                return Err(bad());
            }
            answers.push(ip);
        }
        let asked = 0.into();
        map.insert(normalize(name), TestAnswers { answers, asked });
    }
    Ok(map)
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.connect(uri).await })
    }
}

impl Inner {
    async fn connect(&self, uri: Uri) -> Result<Conn, UpstreamError> {
        let host = normalize(uri.host().unwrap_or(""));
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let target = format!("{host}:{port}");
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, self.tcp(&host, port, &target))
            .await
            .map_err(|_| UpstreamError::Timeout {
                target: target.clone(),
            })??;
        if !tls {
            return Ok(Conn(TokioIo::new(Stream::Tcp(tcp))));
        }
        let config = self.routes.get(&host).unwrap_or(&self.public).clone();
        let name = ServerName::try_from(host.clone())
            .map_err(|_| UpstreamError::Name { host: host.clone() })?;
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| UpstreamError::Timeout {
                target: target.clone(),
            })?
            .map_err(|cause| UpstreamError::Tls { host, cause })?;
        Ok(Conn(TokioIo::new(Stream::Tls(Box::new(stream)))))
    }

    async fn tcp(&self, host: &str, port: u16, target: &str) -> Result<TcpStream, UpstreamError> {
        let stream = match &self.proxy {
            Some((phost, pport)) => {
                // The proxy resolves the target's name; an address pipelock sees is judged.
                self.destinations.check_literal(host).map_err(|blocked| {
                    UpstreamError::Private {
                        host: host.to_string(),
                        blocked,
                    }
                })?;
                // The recipe names its proxy: its address is not judged.
                let mut s = self.dial(phost, *pport, false).await?;
                proxy_connect(&mut s, &format!("{phost}:{pport}"), target).await?;
                s
            }
            None => self.dial(host, port, true).await?,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Resolves `host` once and connects to the first answer that works; `judged`: each
    /// answer passes [`Destinations::check`] first, and the connection goes to that address.
    async fn dial(&self, host: &str, port: u16, judged: bool) -> Result<TcpStream, UpstreamError> {
        let target = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = match self.resolve.get(host) {
            Some(t) => vec![SocketAddr::new(t.next(), port)],
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|cause| UpstreamError::Resolve {
                    host: host.to_string(),
                    cause,
                })?
                .collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        let mut blocked = None;
        for addr in addrs {
            if judged && let Err(b) = self.destinations.check(host, addr.ip()) {
                blocked.get_or_insert(b);
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        match blocked {
            Some(blocked) => Err(UpstreamError::Private {
                host: host.to_string(),
                blocked,
            }),
            None => Err(UpstreamError::Connect {
                target,
                cause: last,
            }),
        }
    }
}

/// `CONNECT target` through the upstream proxy; on `Ok` the stream is the tunnel.
async fn proxy_connect(s: &mut TcpStream, proxy: &str, target: &str) -> Result<(), UpstreamError> {
    let fail = |why: String| UpstreamError::Proxy {
        proxy: proxy.to_string(),
        target: target.to_string(),
        why,
    };
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Byte by byte up to the blank line: nothing of the tunnel is read ahead.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > PROXY_HEAD_LIMIT {
            return Err(fail("its answer's head is too long".into()));
        }
        match s.read_u8().await {
            Ok(b) => head.push(b),
            Err(e) => return Err(fail(format!("it closed before answering ({e})"))),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    match line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(fail(format!("it answered {line:?}"))),
    }
}

/// A plain or TLS connection to an upstream.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// What hyper-util's client holds: a [`Stream`] as hyper IO.
pub struct Conn(TokioIo<Stream>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_proxy_is_http_host_port() {
        assert_eq!(
            parse_proxy("http://Proxy.internal:3128").unwrap(),
            ("proxy.internal".to_string(), 3128)
        );
        assert_eq!(parse_proxy("http://p").unwrap().1, 80);
        assert!(parse_proxy("https://p:1").is_err());
        assert!(parse_proxy("p:1").is_err());
    }

    #[test]
    fn a_route_ca_that_is_not_pem_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let mut roots = RootCertStore::empty();
        let err = add_pem(&mut roots, "api.test", &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.test") && err.contains("ca.pem"), "{err}");
    }
}
