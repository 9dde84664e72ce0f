//! Servers a test starts on this host for a guest to reach through its bundle, which resolves
//! their name to the host (`[network] hosts = { NAME = "host-gateway" }`). Each listens on
//! every address (the bundle reaches the host at its outbound network's gateway) on a port of
//! its own, plain or over TLS with a certificate of a test CA, and records every request it
//! gets, its body byte by byte as it arrives. Each runs on a tokio runtime of its own, which
//! stops (and closes the port) when the server is dropped, also when a test fails.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// What a server answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `200` with this body, whatever the request.
    Text(String),
    /// The request echoed back: its request line, headers and body as the response body, and
    /// each request header again as a response header `x-echo-NAME` (an upstream that reflects
    /// what it gets, credentials included).
    Echo,
    /// A stand-in for the Anthropic Messages API: `POST /v1/messages` (any query) answers an
    /// assistant message whose only content is this text — as server-sent events when the
    /// request body asks `"stream": true` (what `claude -p` sends), as one JSON message
    /// otherwise; anything else is a `404` in the API's error shape.
    Messages(String),
    /// The files under this folder, by the request's path (query ignored), `404` for others:
    /// enough for git's dumb HTTP protocol.
    Files(PathBuf),
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    #[allow(dead_code, reason = "read through Debug, in failure messages")]
    pub peer: SocketAddr,
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Everything received, as text: request line, headers, body.
    pub fn text(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.target);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push('\n');
        s.push_str(&String::from_utf8_lossy(&self.body));
        s
    }
}

/// A certificate authority of the test's own, for its TLS servers.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// Its certificate, PEM: what a recipe's `upstream_ca` names.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server config presenting a certificate for `names`, signed by this CA.
    fn server_config(&self, names: &[&str]) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// A running server; stopped when dropped.
pub struct Server {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// A plain HTTP server.
    pub fn plain(answer: Answer) -> Server {
        Server::start(answer, None)
    }

    /// An HTTPS server whose certificate, for `names`, `ca` signed.
    pub fn tls(answer: Answer, ca: &TestCa, names: &[&str]) -> Server {
        Server::start(answer, Some(ca.server_config(names)))
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn start(answer: Answer, tls: Option<rustls::ServerConfig>) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("0.0.0.0:0"))
            .expect("a port on every address");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let answer = Arc::new(answer);
        let log = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (answer, log, acceptor) = (answer.clone(), log.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (answer, log) = (answer.clone(), log.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle(req, peer, &answer, &log).await,
                            )
                        }
                    });
                    match acceptor {
                        Some(acceptor) => {
                            // A client that refuses the certificate ends here.
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), svc)
                                .await;
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
        Server {
            port,
            seen,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    answer: &Answer,
    log: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let seen = Seen {
        peer,
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    // Recorded when the head arrives, each body byte as it arrives: bytes of a body the sender
    // cut off, or holds back the rest of, show too.
    let at = {
        let mut log = log.lock().unwrap();
        log.push(seen);
        log.len() - 1
    };
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            log.lock().unwrap()[at].body.extend_from_slice(&data);
        }
    }
    let seen = log.lock().unwrap()[at].clone();
    match answer {
        Answer::Text(text) => respond(StatusCode::OK, "text/plain", text.clone().into_bytes()),
        Answer::Echo => {
            let mut r = respond(StatusCode::OK, "text/plain", seen.text().into_bytes());
            for (n, v) in &seen.headers {
                if let (Ok(n), Ok(v)) = (
                    hyper::header::HeaderName::from_bytes(format!("x-echo-{n}").as_bytes()),
                    hyper::header::HeaderValue::from_str(v),
                ) {
                    r.headers_mut().append(n, v);
                }
            }
            r
        }
        Answer::Messages(text) => messages(&seen, text),
        Answer::Files(root) => match file_under(root, &seen.target) {
            Some(bytes) => respond(StatusCode::OK, "application/octet-stream", bytes),
            None => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        },
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_str(content_type).unwrap(),
    );
    r
}

/// The file under `root` a request target names (query dropped), if it is one.
fn file_under(root: &Path, target: &str) -> Option<Vec<u8>> {
    let path = target.split('?').next().unwrap_or("");
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let p = root.join(rel);
    p.is_file().then(|| std::fs::read(p).ok()).flatten()
}

/// The Messages API stand-in's answer (see [`Answer::Messages`]).
fn messages(req: &Seen, text: &str) -> Response<Full<Bytes>> {
    let path = req.target.split('?').next().unwrap_or("");
    if req.method != "POST" || path != "/v1/messages" {
        return respond(
            StatusCode::NOT_FOUND,
            "application/json",
            br#"{"type":"error","error":{"type":"not_found_error","message":"the stand-in serves POST /v1/messages only"}}"#.to_vec(),
        );
    }
    let asked: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let model = asked["model"]
        .as_str()
        .unwrap_or("claude-stand-in")
        .to_string();
    let message = |content: serde_json::Value, stop: serde_json::Value| {
        serde_json::json!({
            "id": "msg_stand_in",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": null,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        })
    };
    if asked["stream"].as_bool() != Some(true) {
        let body = message(
            serde_json::json!([{"type": "text", "text": text}]),
            "end_turn".into(),
        );
        return respond(
            StatusCode::OK,
            "application/json",
            body.to_string().into_bytes(),
        );
    }
    let events = [
        (
            "message_start",
            serde_json::json!({"type": "message_start", "message": message(serde_json::json!([]), serde_json::Value::Null)}),
        ),
        (
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        (
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 1}}),
        ),
        ("message_stop", serde_json::json!({"type": "message_stop"})),
    ];
    let mut body = String::new();
    for (name, data) in events {
        body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    respond(StatusCode::OK, "text/event-stream", body.into_bytes())
}
