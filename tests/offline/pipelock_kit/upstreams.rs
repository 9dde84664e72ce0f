//! The upstream servers of the daemons' tests, on 127.0.0.1: plain or TLS with a CA of the
//! test's making, recording what they get as it arrives ([`Seen`]) and answering by path
//! (echo, reflect a credential, stream slowly…); and an upstream proxy answering `CONNECT`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::reflect;

/// What an upstream got.
#[derive(Debug, Clone)]
pub struct Seen {
    #[allow(
        dead_code,
        reason = "read through Debug: daemon_pipelock searches `{seen:?}`"
    )]
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A server on 127.0.0.1: plain, or TLS with a certificate of the test's.
pub struct Upstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// The TLS server name each client sent (SNI), in order; `-` for none.
    pub server_names: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub(super) type TestBody = BoxBody<Bytes, std::io::Error>;

pub(super) fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).map_err(|n| match n {}).boxed()
}

/// `/echo`: the request's `authorization` back in `x-echo-authorization` and, with its body,
/// in the answer's body, sent 5 bytes at a time (so a token is split across chunks);
/// `/close-early`: announces 1000 bytes, sends 10, then fails; `/close`: `ok /close` on a
/// connection the server then closes (the next request needs a new one); anything else:
/// `ok PATH`.
async fn answer(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<TestBody> {
    let (parts, mut incoming) = req.into_parts();
    let path = parts.uri.path().to_string();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // Recorded when the head arrives, and each body byte as it arrives: a proxy that forwards
    // part of a secret and then holds the connection open (or cuts it) is seen at once.
    let at = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            headers,
            body: Vec::new(),
        });
        seen.len() - 1
    };
    while let Some(Ok(frame)) = incoming.frame().await {
        if let Ok(data) = frame.into_data() {
            seen.lock().unwrap()[at].body.extend_from_slice(&data);
        }
    }
    let body = Bytes::from(seen.lock().unwrap()[at].body.clone());
    let auth = parts
        .headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if let Some(form) = path.strip_prefix("/reflect/") {
        let token = auth.strip_prefix("Bearer ").unwrap_or(&auth);
        return reflect::reflect(form, token);
    }
    if let Some(hexed) = path.strip_prefix("/say/") {
        return reflect::say(hexed);
    }
    match path.as_str() {
        "/echo" => {
            let text = format!("auth={auth}\nbody={}\n", String::from_utf8_lossy(&body));
            let chunks: Vec<Bytes> = text
                .into_bytes()
                .chunks(5)
                .map(Bytes::copy_from_slice)
                .collect();
            let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
                let c = it.next()?;
                tokio::time::sleep(Duration::from_millis(2)).await;
                Some((Ok::<_, std::io::Error>(Frame::data(c)), it))
            });
            Response::builder()
                .header("x-echo-authorization", auth)
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        "/close-early" => {
            // The head and 10 bytes go out, then the connection fails.
            let stream = futures_util::stream::unfold(0, |step| async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"0123456789"))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Some((
                            Err(std::io::Error::other("the test's upstream closes early")),
                            2,
                        ))
                    }
                    _ => None,
                }
            });
            Response::builder()
                .header("content-length", "1000")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        "/close" => Response::builder()
            .header("connection", "close")
            .body(full("ok /close"))
            .unwrap(),
        _ => Response::new(full(format!("ok {path}"))),
    }
}

pub async fn upstream(tls: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    upstream_on(listener, tls)
}

/// An upstream on a listener of the test's (another loopback address, a given port).
pub fn upstream_on(
    listener: TcpListener,
    tls: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Upstream {
    let acceptor = tls.map(|(cert, key)| {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let server_names = Arc::new(Mutex::new(Vec::new()));
    let (seen2, conns, names) = (seen.clone(), connections.clone(), server_names.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            conns.fetch_add(1, Ordering::SeqCst);
            let (acceptor, seen, names) = (acceptor.clone(), seen2.clone(), names.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |r| {
                    let seen = seen.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(r, seen).await) }
                });
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            let name = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                            names.lock().unwrap().push(name);
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    Upstream {
        port,
        seen,
        connections,
        server_names,
    }
}

/// An HTTP proxy on 127.0.0.1 that opens CONNECT tunnels and counts them (the upstream_proxy).
pub async fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let targets = Arc::new(Mutex::new(Vec::new()));
    let seen = targets.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(target.clone());
                // The test maps every name to 127.0.0.1: so does this proxy.
                let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
                let mut up = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    (port, targets)
}

pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.expect("a head"));
    }
    String::from_utf8_lossy(&head).into_owned()
}
