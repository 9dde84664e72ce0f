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
