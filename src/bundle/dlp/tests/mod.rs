//! Unit tests of DLP. Secrets are generated when the tests run (a seeded generator, each
//! format's prefix and alphabet), so no file of this repository holds one.

mod decoding;
mod exemptions;
mod fields;
mod redact;
mod rules;
mod stream;

use std::sync::Arc;

use base64::Engine as _;

use super::{Finding, Scanner};
use crate::daemons::pipelock::Dlp;
use crate::daemons::pipelock::DlpRule;

/// splitmix64: small, seeded, good enough to draw characters.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len())] as char).collect()
    }

    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub(super) const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub(super) const ALNUM_US: &str =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
pub(super) const HEX: &str = "0123456789abcdef";
pub(super) const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn uuid(rng: &mut Rng) -> String {
    let h = rng.pick(HEX, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub(super) fn dlp(rules: &[(&str, &str)], allow: &[&str]) -> Dlp {
    Dlp {
        enabled: true,
        rules: rules
            .iter()
            .map(|(id, regex)| DlpRule {
                id: id.to_string(),
                regex: regex.to_string(),
            })
            .collect(),
        allow: allow.iter().map(|a| a.to_string()).collect(),
    }
}

pub(super) fn scanner() -> Arc<Scanner> {
    Scanner::new(&dlp(&[], &[])).unwrap().unwrap()
}

/// The rule `text` trips as one value, and as a body fed whole.
pub(super) fn rule_of(s: &Arc<Scanner>, text: &str) -> Option<String> {
    let one = s.scan(text.as_bytes()).map(|f| f.rule);
    let mut body = s.body();
    let fed = body
        .feed(text.as_bytes())
        .or_else(|| body.finish())
        .map(|f| f.rule);
    assert_eq!(one, fed, "scan and body disagree on {text:?}");
    one
}

/// The rule a body trips when fed in the given pieces.
pub(super) fn body_rule(s: &Arc<Scanner>, pieces: &[&[u8]]) -> Option<Finding> {
    let mut body = s.body();
    let mut first = None;
    for p in pieces {
        let found = body.feed(p);
        first = first.or(found);
    }
    let found = body.finish();
    first.or(found)
}

#[test]
fn off_means_none() {
    let mut d = dlp(&[], &[]);
    d.enabled = false;
    assert!(Scanner::new(&d).unwrap().is_none());
}

#[test]
fn a_bad_recipe_regex_is_an_error_naming_the_rule() {
    let err = Scanner::new(&dlp(&[("mine", "(")], &[])).unwrap_err();
    assert!(format!("{err:#}").contains("mine"), "{err:#}");
}

#[test]
fn the_doc_table_lists_every_rule() {
    let doc = include_str!("../../dlp.rs");
    for id in scanner().rules() {
        assert!(
            doc.contains(&format!("| `{id}` |")),
            "{id} is missing from the table in dlp.rs"
        );
    }
}

#[test]
fn scanners_and_scrubbers_cross_tasks() {
    fn shared<T: Send + Sync>() {}
    fn moved<T: Send>() {}
    shared::<Scanner>();
    moved::<super::BodyScanner>();
    moved::<crate::bundle::scrub::Scrubber>();
}
