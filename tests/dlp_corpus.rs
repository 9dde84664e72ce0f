//! The DLP corpus: how many secrets the built-in rules catch, and how much ordinary traffic
//! they refuse, through the library API (`Scanner::scan` for URLs and headers, `BodyScanner`
//! for bodies, fed in chunks of random sizes).
//!
//! Secrets: generated here with a seeded generator in each built-in format (no secret is
//! written in this file), embedded in the carriers an agent sends: JSON requests to a model
//! API (escaped inside a message), headers, query strings, env files, code, YAML, form bodies,
//! curl commands. Ordinary traffic: every text file of this repository (as is, and inside a
//! chat request as an agent would send it) and generated API bodies full of UUIDs, digests,
//! timestamps, ids, signatures and base64 images, plus ordinary headers and URLs.
//!
//! Asserts a catch rate ≥ 99% and a false-positive rate ≤ 0.1% (per body or value), and prints
//! both (`cargo test --test dlp_corpus -- --nocapture`).

#[path = "dlp_corpus/ordinary.rs"]
mod ordinary;
#[path = "dlp_corpus/secrets.rs"]
mod secrets;

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use bottle::sidecar::dlp::{Finding, Scanner};
use bottle::sidecar::pipelock::Dlp;

/// splitmix64, seeded: the same corpus on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len())] as char).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

pub const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const ALNUM_US: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
pub const HEX: &str = "0123456789abcdef";
pub const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const UPPER_NUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub const DIGITS: &str = "0123456789";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn uuid(rng: &mut Rng) -> String {
    let h = rng.pick(HEX, 32);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `text` as a JSON string literal.
pub fn json_str(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// `text` percent-encoded as a form or query value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What is scanned: one value (a request target, a header) or a body.
pub enum Item {
    Value(String),
    Body(Vec<u8>),
}

impl Item {
    pub fn body(text: impl Into<String>) -> Item {
        Item::Body(text.into().into_bytes())
    }

    /// The first bytes, for a report line.
    pub fn preview(&self) -> String {
        let bytes = match self {
            Item::Value(v) => v.as_bytes(),
            Item::Body(b) => b,
        };
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]);
        text.replace('\n', "⏎")
    }
}

fn scanner() -> Arc<Scanner> {
    let dlp = Dlp { enabled: true, rules: Vec::new(), allow: Vec::new() };
    Scanner::new(&dlp).unwrap().unwrap()
}

/// Scans one item: a value whole, a body in chunks of 1 byte to 16 KiB.
fn scan(s: &Arc<Scanner>, item: &Item, rng: &mut Rng) -> Option<Finding> {
    match item {
        Item::Value(v) => s.scan(v.as_bytes()),
        Item::Body(b) => {
            let mut body = s.body();
            let mut first = None;
            let mut rest = b.as_slice();
            while !rest.is_empty() {
                let n = (1 + rng.below(16 * 1024)).min(rest.len());
                let found = body.feed(&rest[..n]);
                first = first.or(found);
                rest = &rest[n..];
            }
            let found = body.finish();
            first.or(found)
        }
    }
}

#[test]
fn corpus_catch_and_false_positive_rates() {
    let s = scanner();
    let mut rng = Rng::new(0xb0771e);

    let secrets = secrets::all(&mut rng);
    let (mut caught, mut named) = (0, 0);
    let mut missed = Vec::new();
    for (rule, item) in &secrets {
        match scan(&s, item, &mut rng) {
            Some(f) => {
                caught += 1;
                named += usize::from(f.rule == *rule);
            }
            None => missed.push(format!("{rule}: {}", item.preview())),
        }
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ordinary = ordinary::all(root, &mut rng);
    let mut flagged = Vec::new();
    for (source, item) in &ordinary {
        if let Some(f) = scan(&s, item, &mut rng) {
            flagged.push(format!("{} in {source}: {}", f.rule, item.preview()));
        }
    }

    let catch = caught as f64 / secrets.len() as f64;
    let fp = flagged.len() as f64 / ordinary.len() as f64;
    let kinds = {
        let mut k: Vec<&str> = secrets.iter().map(|(r, _)| *r).collect();
        k.sort_unstable();
        k.dedup();
        k.len()
    };
    println!("DLP corpus: {} secrets of {kinds} kinds; caught {caught} = {:.2}% (named by their own rule: {named})", secrets.len(), catch * 100.0);
    println!("DLP corpus: {} ordinary bodies and values; flagged {} = {:.3}%", ordinary.len(), flagged.len(), fp * 100.0);
    for m in &missed {
        println!("  missed {m}");
    }
    for f in &flagged {
        println!("  flagged {f}");
    }
    assert!(secrets.len() >= 200, "{} secrets", secrets.len());
    assert!(catch >= 0.99, "catch rate {:.2}%", catch * 100.0);
    assert!(fp <= 0.001, "false-positive rate {:.3}%", fp * 100.0);
}
