//! The load generator and upstream of `benches/proxy_latency.sh` and `benches/proxy_upload.sh`.
//!
//! - `proxy_load certs DIR`: writes a bottle CA (`pipelock.crt`, `pipelock.key`), an upstream
//!   CA (`upstream-ca.pem`) and the upstream's certificate for `localhost` and 127.0.0.1
//!   (`upstream.crt`, `upstream.key`);
//! - `proxy_load serve PORT DIR`: the upstream, HTTPS on 127.0.0.1:PORT (hyper, HTTP/1.1 kept
//!   alive): `/sink` reads the body and answers its size, anything else answers `ok`;
//! - `proxy_load get PROXY CA N CONNS PORT`: N small GETs to `https://localhost:PORT/`, spread over CONNS
//!   kept-alive connections, each through `CONNECT` to PROXY (`-`: directly), trusting the
//!   PEM file CA; prints `requests=N secs=S` once all answered 200;
//! - `proxy_load upload PROXY CA BYTES PORT`: one POST of BYTES (64 KiB chunks) to `/sink`;
//!   prints `bytes=B secs=S`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const CHUNK: usize = 64 * 1024;

fn ca(cn: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(p, KeyPair::generate()?)?)
}

fn certs(dir: &str) -> Result<()> {
    let dir = std::path::Path::new(dir);
    let bottle = ca("bench bottle CA")?;
    std::fs::write(dir.join("pipelock.crt"), bottle.pem())?;
    std::fs::write(dir.join("pipelock.key"), bottle.key().serialize_pem())?;
    let upstream = ca("bench upstream CA")?;
    std::fs::write(dir.join("upstream-ca.pem"), upstream.pem())?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
        .signed_by(&key, &upstream)?;
    std::fs::write(dir.join("upstream.crt"), leaf.pem())?;
    std::fs::write(dir.join("upstream.key"), key.serialize_pem())?;
    Ok(())
}

async fn serve(port: u16, dir: &str) -> Result<()> {
    let dir = std::path::Path::new(dir);
    let cert = CertificateDer::from_pem_file(dir.join("upstream.crt"))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("upstream.key"))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("proxy_load: serving on 127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let sink = req.uri().path() == "/sink";
                    let mut body = req.into_body();
                    let mut n = 0u64;
                    while let Some(frame) = body.frame().await {
                        if let Ok(d) = frame?.into_data() {
                            n += d.len() as u64;
                        }
                    }
                    let text = if sink { n.to_string() } else { "ok".into() };
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(text))))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

/// A kept-alive HTTPS connection to localhost:PORT, through PROXY's CONNECT unless `-`.
async fn connect<B>(proxy: &str, ca: &str, port: u16) -> Result<Sender<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s = if proxy == "-" {
        TcpStream::connect(("127.0.0.1", port)).await?
    } else {
        let mut s = TcpStream::connect(proxy)
            .await
            .context("cannot reach the proxy")?;
        let target = format!("localhost:{port}");
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(s.read_u8().await?);
        }
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            bail!("CONNECT answered {}", String::from_utf8_lossy(&head));
        }
        s
    };
    s.set_nodelay(true)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, s)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(proxy: String, ca: String, n: usize, conns: usize, port: u16) -> Result<()> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (proxy, ca) = (proxy.clone(), ca.clone());
        let share = n / conns + usize::from(c < n % conns);
        tasks.push(tokio::spawn(async move {
            let mut sender = connect::<Empty<Bytes>>(&proxy, &ca, port).await?;
            for _ in 0..share {
                let req = hyper::Request::get("/")
                    .header("host", format!("localhost:{port}"))
                    .header("authorization", "Bearer egress-placeholder")
                    .body(Empty::new())?;
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                if status != 200 {
                    bail!("status {status}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!("requests={n} secs={:.6}", start.elapsed().as_secs_f64());
    Ok(())
}

async fn upload(proxy: String, ca: String, bytes: u64, port: u16) -> Result<()> {
    let chunk = Bytes::from((0..CHUNK).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
    let chunks = bytes.div_ceil(CHUNK as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let left = bytes - i * CHUNK as u64;
        let c = chunk.slice(..(left.min(CHUNK as u64) as usize));
        Ok::<_, std::convert::Infallible>(Frame::data(c))
    }));
    let mut sender = connect::<StreamBody<_>>(&proxy, &ca, port).await?;
    let start = Instant::now();
    let req = hyper::Request::post("/sink")
        .header("host", format!("localhost:{port}"))
        .header("content-length", bytes.to_string())
        .body(StreamBody::new(stream))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let secs = start.elapsed().as_secs_f64();
    if status != 200 || body != bytes.to_string().as_bytes() {
        bail!("status {status}, body {}", String::from_utf8_lossy(&body));
    }
    println!("bytes={bytes} secs={secs:.6}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["certs", dir] => certs(dir),
        ["serve", port, dir] => serve(port.parse()?, dir).await,
        ["get", proxy, ca, n, conns, port] => {
            get(
                proxy.to_string(),
                ca.to_string(),
                n.parse()?,
                conns.parse()?,
                port.parse()?,
            )
            .await
        }
        ["upload", proxy, ca, bytes, port] => {
            upload(
                proxy.to_string(),
                ca.to_string(),
                bytes.parse()?,
                port.parse()?,
            )
            .await
        }
        _ => bail!(
            "usage: proxy_load certs DIR | serve PORT DIR | get PROXY CA N CONNS PORT | upload PROXY CA BYTES PORT"
        ),
    }
}
