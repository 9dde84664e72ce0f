//! Compressed and encoded bodies that carry no secret pass through pipelock unchanged, bounds
//! are refused, and streaming stays streaming: the real `bottle sidecar --daemons pipelock`,
//! curl through it, and upstreams that record each byte as it arrives
//! (`tests/offline/pipelock_kit`).
//!
//! Positive controls: an ordinary gzip, deflate, brotli and zstd body, a base64 image and a hex
//! digest pass, and the upstream gets exactly the bytes sent. Bounds: a gzip bomb is a 413,
//! corrupt gzip a 400, a brotli body over 1 MiB compressed a 413. Streaming: of a gzip body,
//! what decodes to text well before a secret goes on while the rest is held.

use crate::encodings::*;
use crate::pipelock_kit;

use pipelock_kit::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
