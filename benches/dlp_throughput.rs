//! DLP and scrubber throughput, in process, on ordinary bodies (no harness: `cargo bench
//! --bench dlp_throughput -- …` or the binary `benches/dlp_throughput.sh` builds).
//!
//! ```text
//! dlp_throughput gen DIR MIB      writes DIR/{code,chat,image}.body: MIB MiB each of ordinary
//!                                 traffic (this repository's text files; those files inside
//!                                 chat requests, JSON-escaped; a base64 image in a request)
//! dlp_throughput dlp FILE [RUNS]  scans FILE as one body in 64 KiB chunks, best of RUNS; MB/s
//! dlp_throughput memchr FILE [RUNS]  baseline: counts newlines with memchr; MB/s
//! dlp_throughput scrub FILE [RUNS]   the scrubber with one 40-byte secret; MB/s
//! dlp_throughput once FILE        one scan, for a whole-process timing (hyperfine)
//! ```
//!
//! `DLP_CHUNK=BYTES` feeds smaller chunks (default 64 KiB).
//!
//! `SMOKE=1` makes one run the default, and with no command (`SMOKE=1 cargo bench --bench
//! dlp_throughput`) it does all of the above once on 1 MiB of each kind in a temporary folder,
//! failing if any step does; its figures are a smoke run's, not measurements.
//!
//! It prints one line per measure and asserts nothing; a finding in ordinary data is printed.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bottle::bundle::dlp::Scanner;
use bottle::bundle::scrub::Scrubber;
use bottle::daemons::pipelock::Dlp;

/// The chunk size bodies are fed in: 64 KiB, or `DLP_CHUNK` bytes.
fn chunk() -> usize {
    std::env::var("DLP_CHUNK")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(64 * 1024)
}

fn scanner() -> Arc<Scanner> {
    let dlp = Dlp {
        enabled: true,
        rules: Vec::new(),
        allow: Vec::new(),
    };
    Scanner::new(&dlp).expect("rules compile").expect("enabled")
}

/// This repository's text files, concatenated.
fn repository_text() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "benches",
        "README.md",
        "Cargo.lock",
        "Cargo.toml",
        "recipes",
    ] {
        for entry in walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_map(Result::ok)
        {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                files.push(text);
            }
        }
    }
    files
}

fn generate(dir: &Path, mib: usize) -> std::io::Result<()> {
    let size = mib << 20;
    let files = repository_text();
    let mut code = String::new();
    let mut chat = String::new();
    while code.len() < size || chat.len() < size {
        for f in &files {
            code.push_str(f);
            let content = serde_json::to_string(f).unwrap_or_default();
            chat.push_str(&format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":8192,"messages":[{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01","content":{content}}}]}}]}}"#
            ));
            chat.push('\n');
        }
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let raw: Vec<u8> = (0..size * 3 / 4)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let image = format!(
        r#"{{"messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{}"}}}}]}}]}}"#,
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    std::fs::write(dir.join("code.body"), &code.as_bytes()[..size])?;
    std::fs::write(dir.join("chat.body"), &chat.as_bytes()[..size])?;
    std::fs::write(dir.join("image.body"), image)?;
    Ok(())
}

/// The best of `runs` timings of `f` over `data`, in MB/s (10^6 bytes per second).
fn best(data: &[u8], runs: usize, mut f: impl FnMut(&[u8]) -> usize) -> (f64, usize) {
    let mut fastest = f64::MAX;
    let mut out = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        out = f(data);
        fastest = fastest.min(start.elapsed().as_secs_f64());
    }
    (data.len() as f64 / fastest / 1e6, out)
}

/// Scans `data` as one body; the number of findings (none expected in ordinary data).
fn dlp(s: &Arc<Scanner>, data: &[u8]) -> usize {
    let mut body = s.body();
    let mut found = 0;
    for chunk in data.chunks(chunk()) {
        found += usize::from(body.feed(chunk).is_some());
    }
    found + usize::from(body.finish().is_some())
}

fn scrub(data: &[u8]) -> usize {
    // a token-shaped secret, made here so that no file holds one
    let secret: Vec<u8> = b"ghp_"
        .iter()
        .copied()
        .chain((0..36u8).map(|i| b"Zq9Xw8Vu7T"[usize::from(i % 10)]))
        .collect();
    let mut s = Scrubber::new(&[&secret]);
    let mut out = 0;
    for chunk in data.chunks(chunk()) {
        out += s.feed(chunk).len();
    }
    out + s.finish().len()
}

fn smoke() -> bool {
    std::env::var("SMOKE").is_ok_and(|v| v == "1")
}

/// `SMOKE=1` with no command: every command once on 1 MiB of each kind.
fn smoke_all() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    generate(dir.path(), 1).expect("writing the data");
    let s = scanner();
    for kind in ["code", "chat", "image"] {
        let data =
            std::fs::read(dir.path().join(format!("{kind}.body"))).expect("reading the data");
        assert!(!data.is_empty(), "{kind}.body is empty");
        let (dlp_mbs, found) = best(&data, 1, |d| dlp(&s, d));
        let (memchr_mbs, _) = best(&data, 1, |d| memchr::memchr_iter(b'\n', d).count());
        let (scrub_mbs, out) = best(&data, 1, scrub);
        assert_eq!(
            out,
            data.len(),
            "the scrubber changed {kind}.body, which holds no secret"
        );
        println!(
            "{kind}: dlp {dlp_mbs:.0} MB/s findings {found}, memchr {memchr_mbs:.0} MB/s, scrub {scrub_mbs:.0} MB/s"
        );
    }
    println!("dlp_throughput: SMOKE run (1 MiB each, one run): these figures are not measurements");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    if args.is_empty() && smoke() {
        smoke_all();
        return;
    }
    let default_runs = if smoke() { 1 } else { 5 };
    let runs = arg(2).and_then(|r| r.parse().ok()).unwrap_or(default_runs);
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("reading {p}: {e}"));
    match (arg(0), arg(1)) {
        (Some("gen"), Some(dir)) => {
            let mib = arg(2).and_then(|m| m.parse().ok()).unwrap_or(64);
            generate(Path::new(dir), mib).expect("writing the data");
        }
        (Some("dlp"), Some(file)) => {
            let s = scanner();
            let (mbs, found) = best(&read(file), runs, |d| dlp(&s, d));
            println!("dlp {file} {mbs:.0} MB/s findings {found}");
        }
        (Some("memchr"), Some(file)) => {
            let (mbs, n) = best(&read(file), runs, |d| memchr::memchr_iter(b'\n', d).count());
            println!("memchr {file} {mbs:.0} MB/s lines {n}");
        }
        (Some("scrub"), Some(file)) => {
            let (mbs, n) = best(&read(file), runs, scrub);
            println!("scrub {file} {mbs:.0} MB/s out {n}");
        }
        (Some("once"), Some(file)) => {
            let found = dlp(&scanner(), &read(file));
            println!("{found}");
        }
        _ => {
            eprintln!(
                "usage: dlp_throughput gen DIR MIB | dlp|memchr|scrub FILE [RUNS] | once FILE"
            );
            std::process::exit(2);
        }
    }
}
