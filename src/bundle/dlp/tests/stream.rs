//! Bodies in chunks: secrets split anywhere, found once, in bounded memory.

use super::rules::cases;
use super::*;
use crate::bundle::dlp::{BATCH, MARGIN, NESTED, STEP, WINDOW};

/// Ordinary text long enough that a body scanner scans it as a step of its own: whatever
/// follows it in the same chunk ends that step, so a cut there is a step boundary.
fn filler() -> String {
    let line = "lorem ipsum dolor sit amet, consectetur adipiscing elit\n";
    line.repeat((BATCH + MARGIN) / line.len() + 1)
}

/// `hit` JSON-escaped inside a chat request after [`filler`], and where its escaped form
/// starts and ends.
fn carried(hit: &str) -> (String, usize, usize) {
    let content = serde_json::to_string(&format!("{}look: {hit} thanks", filler())).unwrap();
    let body = format!("{{\"messages\": [{{\"role\": \"user\", \"content\": {content}}}]}}");
    let escaped = serde_json::to_string(hit).unwrap();
    let escaped = &escaped[1..escaped.len() - 1];
    let start = body.find(escaped).unwrap();
    let end = start + escaped.len();
    (body, start, end)
}

#[test]
fn every_rule_is_found_split_in_two_at_several_offsets() {
    let s = scanner();
    for c in cases() {
        for hit in &c.hits {
            let (body, start, end) = carried(hit);
            let b = body.as_bytes();
            let len = end - start;
            for cut in [start + 1, start + len / 3, start + len / 2, end - 1] {
                let found = body_rule(&s, &[&b[..cut], &b[cut..]]);
                assert_eq!(
                    found.map(|f| f.rule).as_deref(),
                    Some(c.id),
                    "cut {cut} of {body:?}"
                );
            }
        }
    }
}

#[test]
fn every_rule_is_found_fed_in_small_chunks() {
    let s = scanner();
    for c in cases() {
        let (body, start, _) = carried(&c.hits[0]);
        let b = body.as_bytes();
        // the filler in one piece, then the secret a byte at a time, then the rest
        let mut pieces: Vec<&[u8]> = vec![&b[..start - 5]];
        pieces.extend(b[start - 5..start + 200.min(b.len() - start)].chunks(1));
        pieces.push(&b[(start + 200).min(b.len())..]);
        assert_eq!(
            body_rule(&s, &pieces).map(|f| f.rule).as_deref(),
            Some(c.id),
            "{}",
            c.id
        );
        let sevens: Vec<&[u8]> = b.chunks(7).collect();
        assert_eq!(
            body_rule(&s, &sevens).map(|f| f.rule).as_deref(),
            Some(c.id),
            "{} in 7-byte chunks",
            c.id
        );
    }
}

#[test]
fn some_secrets_are_found_split_at_every_offset_through_them() {
    let s = scanner();
    let all = cases();
    for id in [
        "anthropic-api-key",
        "private-key",
        "jwt",
        "credential-field",
        "aws-secret-access-key",
    ] {
        let c = all.iter().find(|c| c.id == id).unwrap();
        let (body, start, end) = carried(&c.hits[0]);
        let b = body.as_bytes();
        for cut in start - 8..=end + 8 {
            let found = body_rule(&s, &[&b[..cut], &b[cut..]]);
            assert_eq!(
                found.map(|f| f.rule).as_deref(),
                Some(id),
                "cut {cut} of {id}"
            );
        }
    }
}

#[test]
fn a_secret_far_into_a_large_body_is_found_across_steps() {
    let s = scanner();
    let mut rng = Rng::new(3);
    let filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit\n".repeat(3000);
    let key = format!("ghp_{}", rng.pick(ALNUM, 36));
    // the key straddles the end of the first step (the buffer full) inside one large chunk
    let at = WINDOW + STEP - 10;
    let body = format!("{}{key}{}", &filler[..at], &filler[..5000]);
    assert_eq!(
        body_rule(&s, &[body.as_bytes()]).map(|f| f.rule).as_deref(),
        Some("github-pat")
    );
}

#[test]
fn a_finding_is_reported_once() {
    let s = scanner();
    let mut rng = Rng::new(4);
    let key = format!("npm_{}", rng.pick(ALNUM, 36));
    let body = format!("token {key} end{}", " ".repeat(200));
    let mut scanner = s.body();
    let mut reports = 0;
    for piece in body.as_bytes().chunks(7) {
        reports += usize::from(scanner.feed(piece).is_some());
    }
    reports += usize::from(scanner.finish().is_some());
    assert_eq!(reports, 1);
}

#[test]
fn a_match_is_held_until_its_end_is_known() {
    let s = scanner();
    let mut rng = Rng::new(5);
    // 36 characters after AIza would be a near miss, 35 a key: the 36th arrives later.
    let long = format!("AIza{}", rng.pick(ALNUM, 36));
    let body = format!("{}k = {long} done", filler());
    let cut = body.find("AIza").unwrap() + 4 + 35;
    let b = body.as_bytes();
    assert_eq!(body_rule(&s, &[&b[..cut], &b[cut..]]), None);
}

#[test]
fn a_step_is_taken_once_a_batch_has_gathered() {
    let s = scanner();
    let mut rng = Rng::new(6);
    let key = format!("npm_{}", rng.pick(ALNUM, 36));
    let mut body = s.body();
    assert_eq!(
        body.feed(format!("{key} ").as_bytes()),
        None,
        "a small chunk waits for more"
    );
    assert!(
        body.feed(filler().as_bytes()).is_some(),
        "found once a batch has gathered"
    );
    assert_eq!(body.finish(), None, "and reported once");
}

#[test]
fn memory_stays_bounded_over_100_mib() {
    let s = scanner();
    let source = include_str!("../../pipelock/mod.rs");
    let mut block = String::new();
    while block.len() < 64 * 1024 {
        block.push_str(source);
    }
    let block = &block.as_bytes()[..64 * 1024];
    // The decoded text's window and step; at each level of runs, the window and step of
    // what they decode to, and one step of them before their escapes are decoded.
    let bound = (1 + 2 * NESTED) * (WINDOW + STEP) + 512;
    // Plain text, then base64 of base64 of it: every level fills.
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let nested = b64(b64(block).as_bytes());
    for block in [block, &nested.as_bytes()[..64 * 1024]] {
        let mut body = s.body();
        let mut most = 0;
        for _ in 0..1600 {
            assert_eq!(body.feed(block), None);
            most = most.max(body.buffered());
        }
        assert_eq!(body.finish(), None);
        assert!(most <= bound, "buffered {most} bytes, bound {bound}");
    }
    // a single chunk larger than a step is cut into steps
    let mut body = s.body();
    assert_eq!(body.feed(&block.repeat(8)), None);
    assert!(body.buffered() <= bound, "{}", body.buffered());
}

#[test]
fn an_empty_body_and_finish_twice_are_fine() {
    let s = scanner();
    let mut body = s.body();
    assert_eq!(body.finish(), None);
    assert_eq!(body.finish(), None);
    assert_eq!(body.feed(b"ghp_"), None);
}
