//! The decoder: what it decodes, what it keeps, escapes cut between chunks.

use super::super::decode::{Decoder, decode_all};
use super::*;

fn decoded(input: &str) -> String {
    String::from_utf8(decode_all(input.as_bytes()).into_owned()).unwrap()
}

#[test]
fn decodes_percent_json_and_hex_escapes() {
    assert_eq!(decoded("a%2Db%2fc"), "a-b/c");
    assert_eq!(
        decoded(r#"sk\u002dant \/x\/ \"q\" \\ \n\t"#),
        "sk-ant /x/ \"q\" \\ \n\t"
    );
    assert_eq!(decoded(r"\x41\x2d"), "A-");
    assert_eq!(decoded(r"\ud83d\ude00 \u00e9"), "😀 é");
}

#[test]
fn keeps_what_is_not_an_escape() {
    for kept in [
        "100% sure",
        "%zz",
        "a+b",
        r"C:\path",
        r"\q",
        "%",
        r"\",
        r"\u12",
        r"\ud83d alone",
        r"\ude00",
    ] {
        assert_eq!(decoded(kept), kept);
    }
    assert_eq!(decoded("%255C"), "%5C", "one level only");
}

#[test]
fn an_escape_cut_between_chunks_is_decoded() {
    let input = r#"a%2Db\u002dc\ud83d\ude00d\/e\x41"#;
    let whole = decoded(input);
    let b = input.as_bytes();
    for cut in 0..=b.len() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.decode(&b[..cut], false, &mut out);
        assert!(d.pending() <= super::super::decode::MAX_PENDING);
        d.decode(&b[cut..], true, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), whole, "cut {cut}");
    }
}

#[test]
fn an_escape_cut_at_the_very_end_is_kept() {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    d.decode(br"abc\u00", false, &mut out);
    d.decode(b"", true, &mut out);
    assert_eq!(out, br"abc\u00");
}

#[test]
fn secrets_hidden_by_escapes_are_found() {
    let s = scanner();
    let mut rng = Rng::new(11);
    let tail = rng.pick(ALNUM, 36);
    let key = format!("ghp_{tail}");
    let escaped = key.replace('_', r"\u005f");
    assert_eq!(rule_of(&s, &escaped).as_deref(), Some("github-pat"));
    let encoded = key.replace('_', "%5F");
    assert_eq!(
        rule_of(&s, &format!("/search?q={encoded}")).as_deref(),
        Some("github-pat")
    );
    let value = rng.pick(ALNUM, 32);
    let nested = format!(r#"{{"content": "{{\"api\u005fkey\": \"{value}\"}}"}}"#);
    assert_eq!(rule_of(&s, &nested).as_deref(), Some("credential-field"));
    let form = format!("user=me&client%5Fsecret={value}&x=1");
    assert_eq!(rule_of(&s, &form).as_deref(), Some("credential-field"));
    let pem = format!(
        r#"{{"private_key": "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n"}}"#,
        rng.pick(B64, 64)
    );
    assert_eq!(rule_of(&s, &pem).as_deref(), Some("private-key"));
}
