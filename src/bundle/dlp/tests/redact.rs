//! What the audit log keeps of a target: every built-in rule's secrets masked, in a path
//! segment, a bare query and a query name, allowed or not.

use super::rules::cases;
use super::*;
use crate::bundle::dlp::{REDACTED, Redactor};

/// Every byte but the unreserved ones percent-encoded, as a client puts text in a URL.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn every_rule_is_masked_in_a_logged_path() {
    let r = Redactor::new(&dlp(&[], &[])).unwrap();
    for c in cases() {
        for hit in &c.hits {
            let e = encoded(hit);
            for path in [
                format!("/p/{e}/x"),
                format!("/x?{e}"),
                format!("/x?a=1&{e}"),
                format!("/p/{hit}"),
            ] {
                let out = r
                    .redact(&path)
                    .unwrap_or_else(|| panic!("{}: nothing masked in {path:?}", c.id));
                assert!(out.contains(REDACTED), "{}: {out:?}", c.id);
                assert!(!out.contains(hit.as_str()), "{}: {out:?}", c.id);
                assert!(!out.contains(&e), "{}: {out:?}", c.id);
                assert_eq!(r.redact(&out), None, "{}: still a match in {out:?}", c.id);
            }
        }
    }
}

#[test]
fn a_fixed_prefix_stays_and_ordinary_paths_are_untouched() {
    let mut rng = Rng::new(11);
    let key = format!("ghp_{}", rng.pick(ALNUM, 36));
    // Allowed for DLP, masked in the log all the same.
    let r = Redactor::new(&dlp(&[], &[&key])).unwrap();
    assert_eq!(
        r.redact(&format!("/p/{key}/q")).as_deref(),
        Some("/p/ghp_…[redacted]/q")
    );
    let two = format!("/a/{key}/b/{key}");
    assert_eq!(
        r.redact(&two).as_deref(),
        Some("/a/ghp_…[redacted]/b/ghp_…[redacted]")
    );
    for plain in [
        "/",
        "/v1/messages?beta=true",
        "/repos/o/r/git/refs/heads/main",
    ] {
        assert_eq!(r.redact(plain), None, "{plain}");
    }
}

#[test]
fn every_rule_in_base64_or_hex_in_a_logged_path_is_masked_whole() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let r = Redactor::new(&dlp(&[], &[])).unwrap();
    for c in cases() {
        for hit in &c.hits {
            let forms = [
                b64(hit.as_bytes()),
                hex(hit.as_bytes()),
                b64(b64(hit.as_bytes()).as_bytes()),
            ];
            for form in forms {
                for path in [format!("/p-q/{form}/x"), format!("/x?data={form}")] {
                    let out = r
                        .redact(&path)
                        .unwrap_or_else(|| panic!("{}: nothing masked in {path:?}", c.id));
                    assert!(!out.contains(&form), "{}: {out:?}", c.id);
                    assert_eq!(r.redact(&out), None, "{}: still a match in {out:?}", c.id);
                }
            }
        }
    }
    // Runs that decode to no match stay: a commit id, a digest, an image's base64.
    for plain in [
        "/repos/o/r/commits/0123456789abcdef0123456789abcdef01234567",
        "/blobs/sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "/i?src=iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
    ] {
        assert_eq!(r.redact(plain), None, "{plain}");
    }
}
