//! The decoder: what it decodes, what it keeps, escapes cut between chunks.

use super::super::decode::{Decoder, Layers, decode_all};
use super::rules::cases;
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
    // Nested escapes decode until stable, four levels at most.
    assert_eq!(decoded("%255C"), r"\");
    assert_eq!(decoded("%25252541"), "A");
    assert_eq!(decoded("%2525252541"), "%41", "a fifth level is left");
    assert_eq!(decoded("100%2525 sure"), "100% sure");
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

#[test]
fn nested_escapes_cut_between_chunks_decode_as_whole() {
    let input = r#"a%252Db%25255Cu0041c%2541\u0025\u0034\u0031 %25"#;
    let whole = decoded(input);
    let b = input.as_bytes();
    for cut in 0..=b.len() {
        let mut d = Layers::default();
        let mut out = Vec::new();
        d.decode(&b[..cut], false, &mut out);
        d.decode(&b[cut..], true, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), whole, "cut {cut}");
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// `text` wrapped at `width` columns, with `eol`.
fn wrap(text: &str, width: usize, eol: &str) -> String {
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(width)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join(eol)
}

#[test]
fn every_rule_is_found_in_base64_hex_and_nested_percent_encoding() {
    let s = scanner();
    let mut rng = Rng::new(12);
    for c in cases() {
        for hit in &c.hits {
            // Some ordinary text around it, as a file an agent would encode whole.
            let text = format!("# notes\n{}\n{hit}\nend of notes\n", rng.pick(ALNUM, 40));
            let b = text.as_bytes();
            let percent2: String = b.iter().map(|x| format!("%25{x:02X}")).collect();
            let forms = [
                ("base64", format!("{{\"file\": \"{}\"}}", b64(b))),
                ("base64url", format!("data={}&x=1", b64url(b))),
                (
                    "base64 at 76",
                    format!("begin\n{}\nend", wrap(&b64(b), 76, "\r\n")),
                ),
                (
                    "base64 at 76, JSON",
                    format!("{{\"f\": {:?}}}", wrap(&b64(b), 76, "\n")),
                ),
                ("hex", format!("blob: {} ;", hex(b, false))),
                ("HEX", format!("blob: {} ;", hex(b, true))),
                ("%25XX", format!("q={percent2}")),
            ];
            for (name, form) in forms {
                assert_eq!(
                    rule_of(&s, &form).as_deref(),
                    Some(c.id),
                    "{name} of {hit:?}: {form:?}"
                );
            }
        }
    }
}

#[test]
fn ordinary_base64_and_hex_pass() {
    let s = scanner();
    let mut rng = Rng::new(13);
    for _ in 0..50 {
        let image = rng.bytes(3000);
        let text =
            "Plain prose, the kind of thing an agent writes in a commit message.\n".repeat(20);
        for form in [
            format!("{{\"image\": \"{}\"}}", b64(&image)),
            wrap(&b64(&image), 76, "\n"),
            hex(&image, false),
            b64(text.as_bytes()),
            hex(text.as_bytes(), true),
        ] {
            assert_eq!(rule_of(&s, &form), None, "{}", &form[..80]);
        }
    }
}
