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
//! false-positive rate ≤ 0.1% (per body or value), and prints them (`cargo test --test offline
//! dlp_corpus:: -- --nocapture`).
//!
//! Encoded (`encoded_corpus_catch_and_false_positive_rates`): every secret's carrier, and
//! every ordinary item, sent as a body in each form an agent could hide it in — gzip
//! (`Content-Encoding`, through pipelock's inflater), base64 in JSON, base64 wrapped at 76
//! columns in a MIME part, base64 of base64, hex of base64, hex in lower and in upper case,
//! every byte percent-encoded twice — and every secret that fits a header split over two
//! headers and over three (through pipelock's own `scan_head`), with ordinary requests'
//! headers as the ordinary side. Asserts ≥ 99% caught and ≤ 0.1% flagged in each form and
//! over all of them, and prints both per form.

#[path = "../dlp_corpus/carriers.rs"]
mod carriers;
#[path = "../dlp_corpus/kit.rs"]
mod kit;
#[path = "../dlp_corpus/ordinary.rs"]
mod ordinary;
#[path = "../dlp_corpus/secrets.rs"]
mod secrets;

use std::path::Path;
use std::sync::Arc;

use bottle::bundle::dlp::{Finding, Scanner};
use bottle::bundle::pipelock::exchange::scan_head;
use bottle::bundle::pipelock::inflate::{self, Coding, Inflater};
use bottle::daemons::pipelock::Dlp;
use carriers::Item;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use kit::Rng;

/// The ordinary items that quote a signed URL in a body (see `ordinary.rs`).
const SIGNED_IN_BODY: &str = "signed url in a tool result";

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
        Item::Url(u) => s.scan_url(u.as_bytes()),
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

    let secrets = carriers::all(&mut rng);
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
    // A signed URL quoted in a body is no grant (the exemption is for request targets only):
    // counted apart.
    let (mut quoted, mut quoted_found) = (0, 0);
    for (source, item) in &ordinary {
        if source == SIGNED_IN_BODY {
            quoted += 1;
            quoted_found += usize::from(scan(&s, item, &mut rng).is_some());
            continue;
        }
        if let Some(f) = scan(&s, item, &mut rng) {
            flagged.push(format!("{} in {source}: {}", f.rule, item.preview()));
        }
    }

    let catch = caught as f64 / secrets.len() as f64;
    let fp = flagged.len() as f64 / (ordinary.len() - quoted) as f64;
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
        "DLP corpus: signed URLs quoted in request bodies: {quoted_found} of {quoted} found (no exemption outside the target)"
    );
    println!(
        "DLP corpus: {} ordinary bodies and values; flagged {} = {:.3}%",
        ordinary.len() - quoted,
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
    // Those with a key id or a JWT (S3, GitHub) are found; an Azure SAS has no such value.
    assert!(quoted_found * 3 >= quoted * 2, "{quoted_found} of {quoted}");
}

/// The forms an agent could wrap a whole request body (or a header line, or a URL, sent as a
/// body) in to slip a secret past a scanner that reads text as it is.
const FORMS: [&str; 8] = [
    "gzip",
    "base64",
    "base64 at 76",
    "base64²",
    "hex of base64",
    "hex",
    "HEX",
    "%25XX",
];

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

/// `text` in `form`: the body pipelock would get (gzip: compressed, sent with
/// `Content-Encoding: gzip`).
fn encode(form: &str, text: &[u8]) -> Vec<u8> {
    match form {
        "gzip" => {
            use std::io::Write as _;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        }
        "base64" => format!("{{\"file\": \"{}\"}}", kit::b64(text)).into_bytes(),
        "base64 at 76" => {
            let enc = kit::b64(text);
            let lines: Vec<&str> = enc
                .as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
                lines.join("\r\n")
            )
            .into_bytes()
        }
        "base64²" => {
            format!("{{\"file\": \"{}\"}}", kit::b64(kit::b64(text).as_bytes())).into_bytes()
        }
        "hex of base64" => format!(
            "{{\"blob\": \"{}\"}}",
            hex(kit::b64(text).as_bytes(), false)
        )
        .into_bytes(),
        "hex" => format!("{{\"blob\": \"{}\"}}", hex(text, false)).into_bytes(),
        "HEX" => format!("blob={}", hex(text, true)).into_bytes(),
        "%25XX" => {
            let enc: String = text.iter().map(|b| format!("%25{b:02X}")).collect();
            format!("a=1&data={enc}").into_bytes()
        }
        _ => unreachable!("{form}"),
    }
}

/// Scans a body in `form` as pipelock does, in chunks of random sizes: a gzip body through
/// its inflater (1 KiB slices, bounded), what it decodes to through DLP. A body that does
/// not decode counts as refused.
fn scan_form(s: &Arc<Scanner>, form: &str, body: &[u8], rng: &mut Rng) -> Option<String> {
    if form != "gzip" {
        return scan(s, &Item::Body(body.to_vec()), rng).map(|f| f.rule);
    }
    let mut inflater = Inflater::new(Coding::Gzip);
    let mut scanner = s.body();
    let mut first = None;
    let mut rest = body;
    while !rest.is_empty() {
        let n = (1 + rng.below(16 * 1024)).min(rest.len());
        for slice in rest[..n].chunks(inflate::SLICE) {
            match inflater.step(Some(slice)) {
                Ok(out) => first = first.or(scanner.feed(&out).map(|f| f.rule)),
                Err(_) => return Some("content-encoding".into()),
            }
        }
        rest = &rest[n..];
    }
    match inflater.step(None) {
        Ok(out) => first = first.or(scanner.feed(&out).map(|f| f.rule)),
        Err(_) => return Some("content-encoding".into()),
    }
    first.or(scanner.finish().map(|f| f.rule))
}

fn item_bytes(item: &Item) -> &[u8] {
    match item {
        Item::Value(v) | Item::Url(v) => v.as_bytes(),
        Item::Body(b) => b,
    }
}

/// A request's head as pipelock scans it (`scan_head`: the URL, each header, each header's
/// value joined to the next one's).
fn scan_headers(s: &Scanner, headers: &[(String, String)]) -> Option<String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    scan_head(s, "https://api.test/v1/messages", &map, false)
        .err()
        .map(|r| r.rule)
}

#[test]
fn encoded_corpus_catch_and_false_positive_rates() {
    let s = scanner();
    let mut rng = Rng::new(0xe4c0de);
    let secrets = carriers::all(&mut rng);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ordinary = ordinary::all(root, &mut rng);

    let mut report = Vec::new();
    let (mut all_caught, mut all_total) = (0, 0);
    let (mut all_flagged, mut all_ordinary) = (0, 0);
    let mut missed = Vec::new();
    let mut flagged = Vec::new();
    for form in FORMS {
        let mut caught = 0;
        for (rule, item) in &secrets {
            let body = encode(form, item_bytes(item));
            match scan_form(&s, form, &body, &mut rng) {
                Some(_) => caught += 1,
                None => missed.push(format!("{form}: {rule}: {}", item.preview())),
            }
        }
        let mut fp = 0;
        let mut n = 0;
        for (source, item) in &ordinary {
            // A signed URL sent as a body is a quoted one: no exemption (see above).
            if source == SIGNED_IN_BODY || source == "signed url" {
                continue;
            }
            n += 1;
            let body = encode(form, item_bytes(item));
            if let Some(rule) = scan_form(&s, form, &body, &mut rng) {
                fp += 1;
                flagged.push(format!("{form}: {rule} in {source}: {}", item.preview()));
            }
        }
        report.push((form, caught, secrets.len(), fp, n));
        (all_caught, all_total) = (all_caught + caught, all_total + secrets.len());
        (all_flagged, all_ordinary) = (all_flagged + fp, all_ordinary + n);
    }

    // Split over two headers, and over three.
    for (parts, form) in [(2, "two headers"), (3, "three headers")] {
        let split = carriers::split_headers(&mut rng, parts);
        let mut caught = 0;
        for (rule, headers) in &split {
            match scan_headers(&s, headers) {
                Some(_) => caught += 1,
                None => missed.push(format!("split over {parts} headers: {rule}: {headers:?}")),
            }
        }
        report.push((form, caught, split.len(), 0, 0));
        (all_caught, all_total) = (all_caught + caught, all_total + split.len());
    }
    let sets = ordinary::header_sets(&mut rng, 200);
    let mut fp = 0;
    for set in &sets {
        let headers: Vec<(String, String)> = set
            .iter()
            .map(|h| {
                let (n, v) = h.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_string())
            })
            .collect();
        if let Some(rule) = scan_headers(&s, &headers) {
            fp += 1;
            flagged.push(format!("joined headers: {rule} in {set:?}"));
        }
    }
    report.push(("header sets", 0, 0, fp, sets.len()));
    (all_flagged, all_ordinary) = (all_flagged + fp, all_ordinary + sets.len());

    for (form, caught, total, fp, n) in &report {
        // The header splits have secrets only, the header sets ordinary values only.
        let secrets = (*total > 0).then(|| {
            format!(
                "caught {caught} of {total} secrets = {:.2}%",
                *caught as f64 * 100.0 / *total as f64
            )
        });
        let ordinary = (*n > 0).then(|| {
            format!(
                "flagged {fp} of {n} ordinary = {:.3}%",
                *fp as f64 * 100.0 / *n as f64
            )
        });
        let parts: Vec<String> = secrets.into_iter().chain(ordinary).collect();
        println!("DLP corpus, {form:>13}: {}", parts.join("; "));
    }
    let catch = all_caught as f64 / all_total as f64;
    let fp_rate = all_flagged as f64 / all_ordinary as f64;
    println!(
        "DLP corpus, all encodings: caught {all_caught} of {all_total} = {:.2}%; flagged {all_flagged} of {all_ordinary} = {:.3}%",
        catch * 100.0,
        fp_rate * 100.0
    );
    for m in &missed {
        println!("  missed {m}");
    }
    for f in &flagged {
        println!("  flagged {f}");
    }
    assert!(catch >= 0.99, "catch rate {:.2}%", catch * 100.0);
    assert!(
        fp_rate <= 0.001,
        "false-positive rate {:.3}%",
        fp_rate * 100.0
    );
    for (form, caught, total, fp, n) in &report {
        assert!(
            *caught * 100 >= *total * 99,
            "{form}: caught {caught} of {total}"
        );
        assert!(*fp * 1000 <= *n, "{form}: flagged {fp} of {n}");
    }
}
