//! DLP decodes before it scans: the real `bottle sidecar --daemons pipelock`, curl through it
//! (TLS with the bottle CA, inside an intercepted `CONNECT`), and upstreams that record each
//! byte as it arrives (`tests/offline/pipelock_kit`).
//!
//! A generated GitHub token (no secret is written in this file) is sent in each form an agent
//! could use to slip it past a scanner that reads text as it is: a gzip or deflate body, a
//! brotli or zstd body (read whole before any of it goes), two codings stacked, base64
//! (plain, base64url, wrapped at 76 columns, base64 of base64), hex (lower and upper case),
//! base64 and hex in the URL, nested percent-encoding (in a body and in the URL), split over
//! two headers and over three; and an AWS key id (as written, and lower-cased) as a label of a
//! host under an allowed `*.suffix`, over absolute-form `http://` and in a `CONNECT`. Each is
//! refused with the rule and the place named, is exactly one audit line with that rule, and
//! the upstream gets no form of the secret: not raw, not either half, not in what the bytes it
//! got decode to (the compressed prefix inflated, base64, hex, percent-decoding). Every case is
//! tried before any assertion fails, so a broken decoder shows every form it lets through.
//! The TLS server name a guest says in its hello goes no further: pipelock's own hello
//! upstream names the CONNECT's host. Ordinary bodies, bounds and streaming:
//! `daemon_dlp_bodies`.

use crate::encodings::*;
use crate::pipelock_kit;

use std::sync::Arc;

use base64::Engine as _;
use pipelock_kit::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// One way of sending the secret, and what pipelock must answer.
struct Case {
    name: &'static str,
    /// curl's arguments before the URL.
    args: Vec<String>,
    /// A body file's bytes (sent with `--data-binary @file`), if any.
    body: Option<Vec<u8>>,
    /// The path and query.
    path: String,
    status: u16,
    rule: &'static str,
    place: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_every_encoding_are_refused_and_never_reach_the_upstream() {
    let upstream_ca = Ca::new("test upstream CA");
    let api = upstream(Some(upstream_ca.leaf(&["api.test"]))).await;
    let plain = upstream(None).await;
    let mut rng = Rng(0xdec0de);
    let secret = format!("ghp_{}", rng.pick(ALNUM, 36));
    let key_id = format!("AKIA{}", rng.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    let wild_host = format!("{key_id}.wild.test");
    let sidecar = Sidecar::start(Setup {
        allow: vec!["api.test".into(), "plain.test".into(), "*.wild.test".into()],
        routes: vec![("api.test".into(), Some(upstream_ca.pem()), TOKEN_ENV.into())],
        secrets: vec![(TOKEN_ENV.into(), TOKEN.into())],
        // The key id's host, lowercased, resolves to the plain upstream: a pipelock that
        // lets it through connects there.
        names: vec![
            "api.test".into(),
            "plain.test".into(),
            wild_host.to_ascii_lowercase(),
        ],
        ..Setup::default()
    })
    .await;

    let doc = document(&mut rng, &secret);
    let d = doc.as_bytes();
    let wrapped: Vec<String> = b64(d)
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let percent2: String = secret.bytes().map(|x| format!("%25{x:02X}")).collect();
    let percent3: String = secret.bytes().map(|x| format!("%2525{x:02X}")).collect();
    let half = secret.len() / 2;
    let third = secret.len() / 3;
    let body = |name, headers: &[&str], bytes: Vec<u8>, rule, place| Case {
        name,
        args: headers
            .iter()
            .flat_map(|h| ["-H".to_string(), h.to_string()])
            .collect(),
        body: Some(bytes),
        path: format!("/{name}"),
        status: 403,
        rule,
        place,
    };
    let cases = vec![
        body(
            "gzip",
            &["Content-Encoding: gzip"],
            gzip(d),
            "github-pat",
            "the request body",
        ),
        body(
            "deflate",
            &["Content-Encoding: deflate"],
            zlib(d),
            "github-pat",
            "the request body",
        ),
        // br and zstd are read whole before any of it goes: nothing reaches the upstream.
        body(
            "brotli",
            &["Content-Encoding: br"],
            brotli(d),
            "github-pat",
            "the request body",
        ),
        body(
            "zstd",
            &["Content-Encoding: zstd"],
            zstd(d),
            "github-pat",
            "the request body",
        ),
        Case {
            status: 415,
            ..body(
                "stacked",
                &["Content-Encoding: gzip, br"],
                // Two codings stacked: DLP does not undo more than one.
                brotli(&gzip(d)),
                "content-encoding",
                "cannot decode",
            )
        },
        body(
            "base64",
            &["Content-Type: application/json"],
            format!("{{\"file\": \"{}\"}}", b64(d)).into_bytes(),
            "github-pat",
            "the request body",
        ),
        body(
            "base64-of-base64",
            &["Content-Type: application/json"],
            format!("{{\"file\": \"{}\"}}", b64(b64(d).as_bytes())).into_bytes(),
            "github-pat",
            "the request body",
        ),
        body(
            "base64url",
            &[],
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(d)
                .into_bytes(),
            "github-pat",
            "the request body",
        ),
        body(
            "base64-76",
            &["Content-Type: message/rfc822"],
            format!(
                "Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                wrapped.join("\r\n")
            )
            .into_bytes(),
            "github-pat",
            "the request body",
        ),
        body(
            "hex",
            &[],
            hex(d, false).into_bytes(),
            "github-pat",
            "the request body",
        ),
        body(
            "HEX",
            &[],
            hex(d, true).into_bytes(),
            "github-pat",
            "the request body",
        ),
        body(
            "percent2",
            &["Content-Type: application/x-www-form-urlencoded"],
            format!("a=1&note={percent2}&b=2").into_bytes(),
            "github-pat",
            "the request body",
        ),
        Case {
            name: "base64-url",
            args: vec![],
            body: None,
            path: format!(
                "/base64-url?q={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret)
            ),
            status: 403,
            rule: "github-pat",
            place: "the URL",
        },
        Case {
            name: "hex-url",
            args: vec![],
            body: None,
            path: format!("/hex-url/{}", hex(secret.as_bytes(), false)),
            status: 403,
            rule: "github-pat",
            place: "the URL",
        },
        Case {
            name: "percent3-url",
            args: vec![],
            body: None,
            path: format!("/percent3-url?q={percent3}"),
            status: 403,
            rule: "github-pat",
            place: "the URL",
        },
        Case {
            name: "split-headers",
            args: vec![
                "-H".into(),
                format!("X-Part-One: {}", &secret[..half]),
                "-H".into(),
                format!("X-Part-Two: {}", &secret[half..]),
            ],
            body: None,
            path: "/split-headers".into(),
            status: 403,
            rule: "github-pat",
            place: "the headers x-part-one and x-part-two, joined",
        },
        Case {
            name: "split-3-headers",
            args: vec![
                "-H".into(),
                format!("X-Part-One: {}", &secret[..third]),
                "-H".into(),
                format!("X-Part-Two: {}", &secret[third..2 * third]),
                "-H".into(),
                format!("X-Part-Three: {}", &secret[2 * third..]),
            ],
            body: None,
            path: "/split-3-headers".into(),
            status: 403,
            rule: "github-pat",
            // Every header joined, from the first the guest sent (curl's host).
            place: "to x-part-three, joined",
        },
    ];

    let dir = tempfile::tempdir().unwrap();
    let mut failures: Vec<String> = Vec::new();
    let base = format!("https://api.test:{}", api.port);
    for c in &cases {
        let mut args: Vec<String> = c.args.clone();
        if let Some(b) = &c.body {
            let file = dir.path().join(c.name);
            std::fs::write(&file, b).unwrap();
            args.push("--data-binary".into());
            args.push(format!("@{}", file.display()));
        }
        args.push(format!("{base}{}", c.path));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = curl(&sidecar, &args).await;
        if got.status != c.status
            || !got.body.contains(c.rule)
            || !got.body.contains(c.place)
            || !got
                .headers
                .to_ascii_lowercase()
                .contains(&format!("x-bottle-refused: {}", c.rule))
        {
            failures.push(format!(
                "{}: wanted {} naming {} in {:?}, got {} {:?}",
                c.name, c.status, c.rule, c.place, got.status, got.body
            ));
        }
    }
    // The key id as a host label: absolute-form http, and a CONNECT (TLS inside).
    let (status, text) = exchange(
        sidecar.port,
        format!(
            "GET http://{wild_host}:{}/host-label HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            plain.port,
            wild_host.to_ascii_lowercase()
        )
        .as_bytes(),
    )
    .await;
    if status != 403 || !text.contains("aws-access-key-id") || !text.contains("the URL") {
        failures.push(format!("host label over http: got {status} {text:?}"));
    }
    // The same in lower case: DNS reads it without case, so it is the key all the same.
    let lower_host = wild_host.to_ascii_lowercase();
    let (status, text) = exchange(
        sidecar.port,
        format!(
            "GET http://{lower_host}:{}/host-label-lower HTTP/1.1\r\nHost: {lower_host}\r\nConnection: close\r\n\r\n",
            plain.port,
        )
        .as_bytes(),
    )
    .await;
    if status != 403 || !text.contains("aws-access-key-id") || !text.contains("host") {
        failures.push(format!(
            "lower-case host label over http: got {status} {text:?}"
        ));
    }
    let mut tls = tls_through(sidecar.port, &wild_host, plain.port, &[sidecar.ca.der()]).await;
    tls.write_all(b"GET /connect-label HTTP/1.1\r\nHost: x.wild.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tls.read_to_end(&mut out),
    )
    .await
    .expect("pipelock answers inside the tunnel");
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 403") || !text.contains("aws-access-key-id") {
        failures.push(format!("host label in a CONNECT: got {text:?}"));
    }

    // What the upstreams got: no form of either secret, whatever pipelock answered.
    for (who, up) in [("api.test", &api), ("plain.test", &plain)] {
        for s in up.seen() {
            let head = format!("{} {:?}", s.path, s.headers);
            for needle in [&secret, &key_id, &key_id.to_ascii_lowercase()] {
                for (part, bytes) in [("head", head.as_bytes()), ("body", &s.body[..])] {
                    if let Some(form) = leaked(bytes, needle) {
                        failures.push(format!(
                            "{who} got the secret {form} in the {part} of {}",
                            s.path
                        ));
                    }
                }
            }
        }
    }
    // Nothing but bodies that may have started (and were cut) reached an upstream: no
    // head-refused request, and no connection to the key id's host at all.
    for s in api.seen() {
        let name = s.path.trim_start_matches('/');
        let name = name.split('?').next().unwrap_or(name);
        let allowed = [
            "gzip",
            "deflate",
            "base64",
            "base64-of-base64",
            "base64url",
            "base64-76",
            "hex",
            "HEX",
            "percent2",
        ];
        if !allowed.contains(&name) {
            failures.push(format!("api.test got a request for {}", s.path));
        }
    }
    if plain.connections.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        failures.push("pipelock connected to the key id's host".into());
    }

    // One audit line per case, with its rule.
    let events = sidecar.events().await;
    for c in &cases {
        let n = events
            .iter()
            .filter(|e| {
                e["rule"] == json!(c.rule)
                    && e["path"].as_str().is_some_and(|p| {
                        p == format!("/{}", c.name)
                            || p.starts_with(&format!("/{}?", c.name))
                            || p.starts_with(&format!("/{}/", c.name))
                    })
            })
            .count();
        if n != 1 {
            failures.push(format!("{}: {n} audit lines with rule {}", c.name, c.rule));
        }
    }
    let audit = sidecar.audit_text();
    for needle in [&secret, &key_id, &key_id.to_ascii_lowercase()] {
        if let Some(form) = leaked(audit.as_bytes(), needle) {
            failures.push(format!("the audit log holds a secret ({form})"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Checks a server's certificate against the roots for `host`, whatever name the client put
/// in its SNI: a guest that tunnels to an allowed host and says another name in its hello.
#[derive(Debug)]
struct AsHost {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    host: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for AsHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sent: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.host, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS server name the guest says goes no further: a `CONNECT` to an allowed host whose
/// hello names an AWS key id (as a label, upper and lower case) is served as the CONNECT's
/// host, pipelock's own hello upstream names that host, and neither the upstream nor the audit
/// log ever sees the key id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_name_a_guest_sends_never_leaves_the_bundle() {
    let upstream_ca = Ca::new("test upstream CA");
    let api = upstream(Some(upstream_ca.leaf(&["api.test"]))).await;
    let mut rng = Rng(0x5e1d);
    let key_id = format!("AKIA{}", rng.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    let sidecar = Sidecar::start(Setup {
        allow: vec!["api.test".into()],
        routes: vec![("api.test".into(), Some(upstream_ca.pem()), TOKEN_ENV.into())],
        secrets: vec![(TOKEN_ENV.into(), TOKEN.into())],
        names: vec!["api.test".into()],
        ..Setup::default()
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(sidecar.ca.der()).unwrap();
    let inner = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    for said in [
        format!("{key_id}.api.test"),
        format!("{}.api.test", key_id.to_ascii_lowercase()),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", sidecar.port))
            .await
            .unwrap();
        s.write_all(
            format!(
                "CONNECT api.test:{0} HTTP/1.1\r\nHost: api.test:{0}\r\n\r\n",
                api.port
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AsHost {
                inner: inner.clone(),
                host: ServerName::try_from("api.test").unwrap(),
            }))
            .with_no_client_auth();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(said.clone()).unwrap(), s)
            .await
            .expect("pipelock's leaf for the CONNECT's host, whatever the hello said");
        tls.write_all(b"GET /sni HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tls.read_to_end(&mut out),
        )
        .await
        .expect("pipelock answers inside the tunnel");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{said}: {text}");
    }
    let names = api.server_names.lock().unwrap().clone();
    assert!(!names.is_empty(), "the upstream saw no TLS hello");
    assert!(
        names.iter().all(|n| n == "api.test"),
        "pipelock's hello upstream named {names:?}, not the CONNECT's host"
    );
    assert_eq!(api.seen().len(), 2, "both requests served");
    let audit = sidecar.audit_text().to_ascii_uppercase();
    assert!(!audit.contains(&key_id), "the audit log holds the key id");
}
