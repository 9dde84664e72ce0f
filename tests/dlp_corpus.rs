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
//! Asserts a catch rate ≥ 99%, that every secret caught is named by its own kind's rule, and a
//! false-positive rate ≤ 0.1% (per body or value), and prints them (`cargo test --test dlp_corpus -- --nocapture`).

#[path = "dlp_corpus/kit.rs"]
mod kit;
#[path = "dlp_corpus/ordinary.rs"]
mod ordinary;
#[path = "dlp_corpus/secrets.rs"]
mod secrets;

use std::path::Path;
use std::sync::Arc;

use bottle::sidecar::dlp::{Finding, Scanner};
use bottle::sidecar::pipelock::Dlp;
use kit::{Item, Rng};

fn scanner() -> Arc<Scanner> {
    let dlp = Dlp {
        enabled: true,
        rules: Vec::new(),
        allow: Vec::new(),
    };
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
    let (mut missed, mut misnamed) = (Vec::new(), Vec::new());
    for (rule, item) in &secrets {
        match scan(&s, item, &mut rng) {
            Some(f) => {
                caught += 1;
                if f.rule == *rule {
                    named += 1;
                } else {
                    misnamed.push(format!("{rule} caught as {}: {}", f.rule, item.preview()));
                }
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
    println!(
        "DLP corpus: {} secrets of {kinds} kinds; caught {caught} = {:.2}% (named by their own rule: {named})",
        secrets.len(),
        catch * 100.0
    );
    println!(
        "DLP corpus: {} ordinary bodies and values; flagged {} = {:.3}%",
        ordinary.len(),
        flagged.len(),
        fp * 100.0
    );
    for m in &missed {
        println!("  missed {m}");
    }
    for f in &flagged {
        println!("  flagged {f}");
    }
    assert!(secrets.len() >= 200, "{} secrets", secrets.len());
    assert!(catch >= 0.99, "catch rate {:.2}%", catch * 100.0);
    // A refusal names the rule that caught the secret, and the person fixes that rule's
    // `dlp_allow` or its secret: a secret caught by another kind's rule is a wrong answer.
    assert_eq!(
        named,
        caught,
        "secrets caught by a rule other than their own:\n{}",
        misnamed.join("\n")
    );
    assert!(fp <= 0.001, "false-positive rate {:.3}%", fp * 100.0);
}
