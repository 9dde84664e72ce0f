//! Pulls against servers that misbehave on purpose: a tiny HTTP server written here (a
//! stand-in: no real server fails every other request, stalls mid-body or streams without
//! end on demand), on a loopback port, serving a folder cache the real binary pushed to. A
//! server failing every other request is outlasted; one stalling after the first bytes of a
//! chunk is named, with the object and the server, well within a minute, over HTTP and S3, as
//! is one over S3 that never answers a chunk's request; a chunk streamed without end (chunked
//! encoding, no length) is refused with the pull's memory flat.
//!
//! Its own test binary, not a module of `tests/engine/`: it measures a pull's peak memory as
//! the `ru_maxrss` `wait4` reports, and a child a process spawns (vfork, then exec) starts with
//! its parent's peak resident memory as its own. In the engine harness, whose process other
//! tests had grown to ~300 MiB, the pull "peaked" there, over the 64 MiB bound; in a binary of
//! its own, the parent stays small.

#[allow(
    dead_code,
    unused_imports,
    reason = "the engine tests' support, of which this binary uses a part"
)]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bottle::hash::ComponentKind;
use support::share::*;
use support::*;

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// Every other request answered 503.
    Flaky,
    /// Chunks: the head and 1000 bytes, then silence.
    Stall,
    /// Chunks: the request read, then silence (no status line).
    Silent,
    /// This key: zeros in chunked encoding, up to 1 GiB.
    Endless(String),
}

/// A one-request-per-connection HTTP/1.1 server of a folder, misbehaving as its mode says.
struct Tiny {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Requests answered 503.
    failed: Arc<AtomicUsize>,
}

impl Tiny {
    fn start(root: PathBuf, mode: Mode) -> Tiny {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, f) = (stop.clone(), failed.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (root, mode, s, f) = (root.clone(), mode.clone(), s.clone(), f.clone());
                let n = count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &mode, n, &s, &f);
                });
            }
        });
        Tiny { port, stop, failed }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    mut conn: TcpStream,
    root: &std::path::Path,
    mode: &Mode,
    n: usize,
    stop: &AtomicBool,
    failed: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let key = path.trim_start_matches('/');
    if *mode == Mode::Flaky && n % 2 == 1 {
        failed.fetch_add(1, Ordering::SeqCst);
        return conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if *mode == Mode::Silent && key.contains("/chunks/") {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }
    if let Mode::Endless(target) = mode
        && key == target
    {
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )?;
        let zeros = vec![0u8; 64 << 10];
        for _ in 0..(1 << 30) / zeros.len() {
            conn.write_all(format!("{:x}\r\n", zeros.len()).as_bytes())?;
            conn.write_all(&zeros)?;
            conn.write_all(b"\r\n")?;
        }
        return conn.write_all(b"0\r\n\r\n");
    }
    let body = match key.split('/').any(|p| p == "..") {
        true => None,
        false => std::fs::read(root.join(key)).ok(),
    };
    let Some(body) = body else {
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    conn.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    if method == "HEAD" {
        return Ok(());
    }
    if *mode == Mode::Stall && key.contains("/chunks/") {
        conn.write_all(&body[..1000.min(body.len())])?;
        conn.flush()?;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }
    conn.write_all(&body)
}

#[test]
fn a_flaky_server_is_outlasted_a_stalled_one_named_and_an_endless_chunk_refused() {
    let src = TestContext::new("share-transfers-src");
    let hash = src.build(&src.recipe());
    let m = src.manifest(&hash);
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    let args = |url: &str| -> Vec<String> {
        ["pull", &hash, "--from", url, "--trust", &public]
            .map(str::to_string)
            .to_vec()
    };

    // Every other request fails: the pull gets through, every byte checked.
    let flaky = Tiny::start(cache.clone(), Mode::Flaky);
    let dst = TestContext::new("share-transfers-flaky");
    let a = args(&flaky.url());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = dst.output(&a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        flaky.failed.load(Ordering::SeqCst) >= 8,
        "the server failed too little"
    );
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    dst.assert_nothing_left();

    // A chunk stalls after its first bytes: named, with the object and the server, within
    // a minute (the stall is 30 s).
    let stall = Tiny::start(cache.clone(), Mode::Stall);
    let dst = TestContext::new("share-transfers-stall");
    let a = args(&stall.url());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut pulling = dst.spawn(&a);
    let seen = pulling.wait_for_stderr("stalled", Duration::from_secs(60));
    let line = seen.lines().find(|l| l.contains("stalled")).unwrap();
    assert!(
        line.contains(&stall.url()),
        "the server is not named: {line}"
    );
    assert!(
        line.contains("v1/chunks/"),
        "the object is not named: {line}"
    );
    drop(pulling);
    drop(stall);

    // A chunk streamed without end: refused at its listed size, memory flat.
    let (chunk, size) = first_chunk(&cache, &m, ComponentKind::Guest);
    let endless = Tiny::start(cache.clone(), Mode::Endless(chunk.clone()));
    let dst = TestContext::new("share-transfers-endless");
    let a = args(&endless.url());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (out, peak) = output_with_peak_rss(dst.cmd(), &a);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&chunk), "{err}");
    assert!(err.contains(&format!("at most {size} bytes")), "{err}");
    assert!(peak < 64 << 10, "the pull peaked at {peak} KiB");
    src.assert_nothing_left();
}

/// The same stall behind an S3 endpoint (the tiny server answers path-style GETs of
/// `/BUCKET/KEY`, unsigned checks being no part of a stall): named with the object and the
/// server within a minute, not after object_store's own retries.
#[test]
fn an_s3_server_stalling_mid_chunk_is_named_within_a_minute() {
    pull_over_s3_until(Mode::Stall, "stall", "stalled");
}

/// A server that takes a chunk's request and never answers it: named as a stall once 30 s
/// have passed without an answer (a try's own read bound is 35 s, and object_store's default
/// budget three minutes), then tried again.
#[test]
fn an_s3_server_never_answering_a_chunk_is_named_within_a_minute() {
    pull_over_s3_until(
        Mode::Silent,
        "silent",
        "no answer from the server within 30s",
    );
}

/// Pulls an entry over S3 from a tiny server in `mode`, waiting up to a minute for a line of
/// the pull's stderr holding `needle` (failing past it); that line must name the cache and a
/// chunk. `name` tells this test's build contexts from the other's.
fn pull_over_s3_until(mode: Mode, name: &str, needle: &str) {
    // Names that tell this test's build contexts from the other's in messages and images.
    let src = TestContext::new(&format!("share-transfers-s3-{name}-src"));
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    // s3://bkt/c is the folder cache under the server's /bkt/c.
    let root = src.dir.path().join("s3root");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    std::os::unix::fs::symlink(&cache, root.join("bkt/c")).unwrap();
    let server = Tiny::start(root, mode);
    let dst = TestContext::new(&format!("share-transfers-s3-{name}-dst"));
    let mut c = dst.cmd();
    c.env("AWS_ENDPOINT_URL", server.url())
        .env("AWS_ACCESS_KEY_ID", "GKtest")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_REGION", "test")
        .env("AWS_ALLOW_HTTP", "true");
    let mut pulling = Spawned::start(
        c,
        &["pull", &hash, "--from", "s3://bkt/c", "--trust", &public],
    );
    let started = std::time::Instant::now();
    let seen = pulling.wait_for_stderr(needle, Duration::from_secs(60));
    let line = seen.lines().find(|l| l.contains(needle)).unwrap();
    assert!(
        line.contains("s3://bkt/c") && line.contains("v1/chunks/"),
        "the server or the object is not named: {line}"
    );
    eprintln!("named after {:?}: {line}", started.elapsed());
    drop(pulling);
    drop(server);
    dst.assert_nothing_left();
    src.assert_nothing_left();
}
