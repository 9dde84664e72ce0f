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
//!
//! Positive controls: an ordinary gzip, deflate, brotli and zstd body, a base64 image and a hex
//! digest pass, and the upstream gets exactly the bytes sent. Bounds: a gzip bomb is a 413,
//! corrupt gzip a 400, a brotli body over 1 MiB compressed a 413.

use crate::pipelock_kit;

use std::io::Write as _;

use base64::Engine as _;
use flate2::Compression;
use pipelock_kit::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// splitmix64, seeded: the test's secrets and filler.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n)
            .map(|_| a[(self.next() % a.len() as u64) as usize] as char)
            .collect()
    }
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn hex(b: &[u8], upper: bool) -> String {
    b.iter()
        .map(|x| {
            if upper {
                format!("{x:02X}")
            } else {
                format!("{x:02x}")
            }
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// What a prefix of a gzip, zlib, brotli or zstd stream decodes to (as far as it goes).
fn inflate_prefix(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = brotli::DecompressorWriter::new(Vec::new(), 4096);
    let _ = b.write_all(data);
    let _ = b.flush();
    out.extend_from_slice(b.get_ref());
    let mut zs = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
    let _ = zs.write_all(data);
    let _ = zs.flush();
    out.extend_from_slice(zs.get_ref());
    let mut g = flate2::write::GzDecoder::new(Vec::new());
    let _ = g.write_all(data);
    let _ = g.flush();
    out.extend_from_slice(g.get_ref());
    let mut z = flate2::write::ZlibDecoder::new(Vec::new());
    let _ = z.write_all(data);
    let _ = z.flush();
    out.extend_from_slice(z.get_ref());
    out
}

/// Every form of `secret` a leak could take in `got`: raw, either half, or in what `got`
/// decodes to (inflated, percent-decoded, base64 or hex runs decoded). `None`: no form.
fn leaked(got: &[u8], secret: &str) -> Option<&'static str> {
    let (a, b) = secret.split_at(secret.len() / 2);
    let has = |hay: &[u8]| {
        [secret, a, b]
            .iter()
            .any(|n| memchr::memmem::find(hay, n.as_bytes()).is_some())
    };
    if has(got) {
        return Some("raw");
    }
    if has(&inflate_prefix(got)) {
        return Some("compressed");
    }
    let mut text = got.to_vec();
    for _ in 0..4 {
        text = percent_decode(&text);
    }
    if has(&text) {
        return Some("percent-encoded");
    }
    let runs = String::from_utf8_lossy(&text)
        .replace(['\r', '\n'], "")
        .replace("\\n", "");
    let whole = runs.split(|c: char| !c.is_ascii_alphanumeric() && !"+/-_".contains(c));
    // And each path segment of a run on its own (`/p-q/6768…`).
    let segments = whole.clone().flat_map(|run| run.split('/'));
    for run in whole.chain(segments) {
        if run.len() < 16 {
            continue;
        }
        let engine = &base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        // A prefix cut anywhere: its whole quanta.
        let std = run.replace('-', "+").replace('_', "/");
        let std = std.trim_end_matches('=');
        if let Ok(d) = engine.decode(&std[..std.len() / 4 * 4])
            && has(&d)
        {
            return Some("base64");
        }
        if run.len() % 2 == 0 && run.bytes().all(|c| c.is_ascii_hexdigit()) {
            let d: Vec<u8> = (0..run.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&run[i..i + 2], 16).unwrap())
                .collect();
            if has(&d) {
                return Some("hex");
            }
        }
    }
    None
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(&b[i + 1..i + 3]), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Plain text around the secret, as a file an agent would send whole: long enough that
/// pipelock releases some of a body before it reaches the secret.
fn document(rng: &mut Rng, secret: &str) -> String {
    let mut text = String::new();
    while text.len() < 200 * 1024 {
        text.push_str(&format!(
            "line {}: the build passed in {} ms; note {}\n",
            text.len(),
            rng.next() % 1000,
            rng.pick(ALNUM, 24)
        ));
    }
    text.push_str(&format!("token = {secret}\n"));
    text.push_str("the end\n");
    text
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_encoded_bodies_pass_unchanged_and_bounds_are_refused() {
    let upstream_ca = Ca::new("test upstream CA");
    let api = upstream(Some(upstream_ca.leaf(&["api.test"]))).await;
    let sidecar = Sidecar::start(Setup {
        allow: vec!["api.test".into()],
        routes: vec![("api.test".into(), Some(upstream_ca.pem()), TOKEN_ENV.into())],
        secrets: vec![(TOKEN_ENV.into(), TOKEN.into())],
        names: vec!["api.test".into()],
        ..Setup::default()
    })
    .await;
    let mut rng = Rng(0x0d1a);
    let base = format!("https://api.test:{}", api.port);
    let dir = tempfile::tempdir().unwrap();
    // An ordinary JSON request, gzipped, large enough to be released in several pieces.
    let mut json_text = String::from("{\"messages\": [");
    while json_text.len() < 600 * 1024 {
        json_text.push_str(&format!(
            "{{\"role\": \"user\", \"content\": \"step {} of the build: {}\"}},",
            json_text.len(),
            rng.pick("abcdefghij klmnopqrstuvwxyz", 60)
        ));
    }
    json_text.push_str("{}]}");
    let image: Vec<u8> = (0..300_000).map(|_| rng.next() as u8).collect();
    let digest = hex(&image[..32], false);
    let passes: Vec<(&str, Vec<&str>, Vec<u8>)> = vec![
        (
            "ok-gzip",
            vec!["Content-Encoding: gzip"],
            gzip(json_text.as_bytes()),
        ),
        (
            "ok-deflate",
            vec!["Content-Encoding: deflate"],
            zlib(json_text.as_bytes()),
        ),
        (
            "ok-brotli",
            vec!["Content-Encoding: br"],
            brotli(json_text.as_bytes()),
        ),
        (
            "ok-zstd",
            vec!["Content-Encoding: zstd"],
            zstd(json_text.as_bytes()),
        ),
        (
            "ok-base64",
            vec!["Content-Type: application/json"],
            format!(
                "{{\"image\": \"data:image/png;base64,{}\", \"sha256\": \"{digest}\"}}",
                b64(&image)
            )
            .into_bytes(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, headers, bytes) in &passes {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let mut args: Vec<String> = headers
            .iter()
            .flat_map(|h| ["-H".to_string(), h.to_string()])
            .collect();
        args.push("--data-binary".into());
        args.push(format!("@{}", file.display()));
        args.push(format!("{base}/{name}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = curl(&sidecar, &args).await;
        let seen = api
            .seen()
            .into_iter()
            .find(|s| s.path == format!("/{name}"));
        if got.status != 200 {
            failures.push(format!("{name}: {} {:?}", got.status, got.body));
        }
        match seen {
            Some(s) if s.body == *bytes => {}
            Some(s) => failures.push(format!(
                "{name}: the upstream got {} bytes, not the {} sent",
                s.body.len(),
                bytes.len()
            )),
            None => failures.push(format!("{name}: the upstream got nothing")),
        }
    }
    // A request that names a coding and sends no byte (a chunked body that is only its last
    // chunk) is an empty body, not a cut one.
    let mut tls = tls_through(sidecar.port, "api.test", api.port, &[sidecar.ca.der()]).await;
    tls.write_all(
        b"POST /ok-empty HTTP/1.1\r\nHost: api.test\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tls.read_to_end(&mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") {
        failures.push(format!("ok-empty: {text:?}"));
    }
    // A gzip bomb: 64 MiB of zeros in about 64 KiB; and data that is not gzip.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    let mut cut = gzip(json_text.as_bytes());
    cut.truncate(cut.len() / 2);
    cut.extend_from_slice(b"garbage that is no deflate stream at all");
    // A br body is held whole: over 1 MiB compressed (random bytes do not compress), refused.
    let big: Vec<u8> = (0..1200 * 1024).map(|_| rng.next() as u8).collect();
    for (name, coding, bytes, status, why) in [
        ("bomb", "gzip", bomb, 413, "decodes to more than"),
        ("corrupt", "gzip", cut, 400, "not valid compressed data"),
        ("big-brotli", "br", brotli(&big), 413, "read whole"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, &bytes).unwrap();
        let path = file.display().to_string();
        let url = format!("{base}/{name}");
        let got = curl(
            &sidecar,
            &[
                "-H",
                &format!("Content-Encoding: {coding}"),
                "--data-binary",
                &format!("@{path}"),
                &url,
            ],
        )
        .await;
        if got.status != status || !got.body.contains(why) || !got.body.contains("content-encoding")
        {
            failures.push(format!(
                "{name}: wanted {status} ({why}), got {} {:?}",
                got.status, got.body
            ));
        }
    }
    let events = sidecar.events().await;
    for (name, rule) in [
        ("/bomb", "content-encoding"),
        ("/corrupt", "content-encoding"),
        ("/big-brotli", "content-encoding"),
    ] {
        let n = events
            .iter()
            .filter(|e| e["path"] == json!(name) && e["rule"] == json!(rule))
            .count();
        if n != 1 {
            failures.push(format!("{name}: {n} audit lines with rule {rule}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Streaming stays streaming: of a gzip body, what decodes to text well before the secret
/// goes on while the rest is held; the secret's bytes never do. The body goes in two chunks,
/// the second only once the upstream got what pipelock may release of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_body_streams_and_the_part_holding_a_secret_is_held() {
    let upstream_ca = Ca::new("test upstream CA");
    let api = upstream(Some(upstream_ca.leaf(&["api.test"]))).await;
    let sidecar = Sidecar::start(Setup {
        allow: vec!["api.test".into()],
        routes: vec![("api.test".into(), Some(upstream_ca.pem()), TOKEN_ENV.into())],
        secrets: vec![(TOKEN_ENV.into(), TOKEN.into())],
        names: vec!["api.test".into()],
        ..Setup::default()
    })
    .await;
    let mut rng = Rng(0x57ea);
    let secret = format!("ghp_{}", rng.pick(ALNUM, 36));
    let mut doc = document(&mut rng, &secret);
    doc.insert_str(0, &document(&mut rng, "")[..200 * 1024]);
    let compressed = gzip(doc.as_bytes());
    // The first chunk ends inside the secret: it inflates to the secret's first half, not
    // to the whole of it (the smallest such cut, found by bisection).
    let half = &secret[..secret.len() / 2];
    let holds = |k: usize| {
        memchr::memmem::find(&inflate_prefix(&compressed[..k]), half.as_bytes()).is_some()
    };
    let (mut lo, mut hi) = (0, compressed.len());
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if holds(mid) { hi = mid } else { lo = mid }
    }
    let (first, second) = compressed.split_at(hi);
    assert!(
        memchr::memmem::find(&inflate_prefix(first), secret.as_bytes()).is_none() && holds(hi),
        "the test's first chunk holds half the secret, not all of it"
    );
    let mut tls = tls_through(sidecar.port, "api.test", api.port, &[sidecar.ca.der()]).await;
    tls.write_all(
        format!(
            "POST /stream HTTP/1.1\r\nHost: api.test\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            first.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.write_all(first).await.unwrap();
    tls.write_all(b"\r\n").await.unwrap();
    let got = || {
        api.seen()
            .into_iter()
            .find(|s| s.path == "/stream")
            .map(|s| s.body)
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream got no byte of the first chunk: pipelock held it all"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let early = got();
    // Its half of the secret waits behind the hold-back.
    assert_eq!(leaked(&early, &secret), None, "of the first chunk");
    assert!(
        first.starts_with(&early) && early.len() < first.len(),
        "the upstream got {} bytes, not a prefix of the first chunk's {}",
        early.len(),
        first.len()
    );
    tls.write_all(format!("{:x}\r\n", second.len()).as_bytes())
        .await
        .unwrap();
    tls.write_all(second).await.unwrap();
    tls.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut out = vec![0; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), tls.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains("github-pat"),
        "{text}"
    );
    let all = got();
    assert!(compressed.starts_with(&all), "the upstream got other bytes");
    assert_eq!(leaked(&all, &secret), None, "{} bytes", all.len());
}
