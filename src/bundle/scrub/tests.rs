//! The scrubber at every split, with several secrets, with encoded forms.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{MASK, Scrubber};

const SECRET: &[u8] = b"tok_9fK2xQ7pLmZ4vW8rT1yB6nC3";

fn masked(text: &str) -> Vec<u8> {
    text.replace("{MASK}", std::str::from_utf8(MASK).unwrap())
        .into_bytes()
}

/// Feeds `input` in `pieces`, checking that nothing emitted so far ends in a prefix of a secret
/// that the rest of the input completes, and returns the whole output.
fn run(s: &mut Scrubber, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        out.extend_from_slice(&s.feed(p));
    }
    out.extend_from_slice(&s.finish());
    assert_eq!(s.held(), 0);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

#[test]
fn masks_a_secret_split_at_every_offset() {
    let input = [&b"{\"echo\": \"Bearer "[..], SECRET, b"\", \"n\": 1}"].concat();
    let expected = masked("{\"echo\": \"Bearer {MASK}\", \"n\": 1}");
    for cut in 0..=input.len() {
        let mut s = Scrubber::new(&[SECRET]);
        let out = run(&mut s, &[&input[..cut], &input[cut..]]);
        assert_eq!(out, expected, "cut {cut}");
    }
}

#[test]
fn masks_a_secret_fed_a_byte_at_a_time_and_holds_less_than_it() {
    let input = [&b"a "[..], SECRET, b" b ", SECRET, SECRET, b" c"].concat();
    let mut s = Scrubber::new(&[SECRET]);
    let mut out = Vec::new();
    for b in input.chunks(1) {
        out.extend_from_slice(&s.feed(b));
        assert!(s.held() < SECRET.len(), "held {}", s.held());
        assert!(!contains(&out, SECRET));
    }
    out.extend_from_slice(&s.finish());
    assert_eq!(out, masked("a {MASK} b {MASK}{MASK} c"));
}

#[test]
fn never_emits_a_prefix_the_next_chunk_completes() {
    let mut s = Scrubber::new(&[SECRET]);
    let first = s.feed(&[&b"xyz "[..], &SECRET[..10]].concat());
    assert_eq!(&first[..], b"xyz ");
    assert_eq!(s.held(), 10);
    let rest = s.feed(&SECRET[10..]);
    assert_eq!(&rest[..], MASK);
}

#[test]
fn ordinary_bytes_pass_at_once() {
    let mut s = Scrubber::new(&[SECRET]);
    assert_eq!(&s.feed(b"hello world!")[..], b"hello world!");
    assert_eq!(s.held(), 0);
    // a byte that may begin a form (here its base64, `dG9r…`) waits for the next
    assert_eq!(&s.feed(b" d")[..], b" ");
    assert_eq!(&s.feed(b"!")[..], b"d!");
    // a prefix that never completes is let go when the stream ends, or when it cannot grow
    assert_eq!(&s.feed(b"tok_9f")[..], b"");
    assert_eq!(&s.feed(b"!")[..], b"tok_9f!");
    assert_eq!(&s.feed(b"tok_")[..], b"");
    assert_eq!(&s.finish()[..], b"tok_");
}

#[test]
fn several_secrets_with_overlapping_prefixes() {
    let a: &[u8] = b"ghs_AAAAbbbbCCCCdddd1111";
    let b: &[u8] = b"ghs_AAAAbbbbZZZZyyyy2222";
    let long: &[u8] = b"ghs_AAAAbbbbCCCCdddd1111-and-more";
    let input = [
        &b"1:"[..],
        a,
        b" 2:",
        b,
        b" 3:",
        long,
        b" 4:ghs_AAAAbbb end",
    ]
    .concat();
    // 11 bytes of a 24-byte secret are no piece (12 are: `piece_len`).
    let expected = masked("1:{MASK} 2:{MASK} 3:{MASK} 4:ghs_AAAAbbb end");
    let compiled = super::Compiled::new(&[a, b, long]);
    for cut in 0..=input.len() {
        let mut s = compiled.scrubber();
        let out = run(&mut s, &[&input[..cut], &input[cut..]]);
        assert_eq!(out, expected, "cut {cut}");
    }
    let mut s = Scrubber::new(&[a, b, long]);
    let pieces: Vec<&[u8]> = input.chunks(3).collect();
    assert_eq!(run(&mut s, &pieces), expected);
}

#[test]
fn a_secret_inside_another_is_masked_whole_when_the_longer_completes() {
    let inner: &[u8] = b"abcdefgh12345678";
    let outer: &[u8] = b"xxabcdefgh12345678yy";
    let mut s = Scrubber::new(&[inner, outer]);
    assert_eq!(
        run(&mut s, &[b"<", &outer[..12], &outer[12..], b">"]),
        masked("<{MASK}>")
    );
    // `xx` + inner is a prefix of outer long enough to be a piece of it.
    let mut s = Scrubber::new(&[inner, outer]);
    assert_eq!(run(&mut s, &[b"<xx", inner, b"zz>"]), masked("<{MASK}zz>"));
}

#[test]
fn masks_encoded_forms() {
    let secret: &[u8] = b"p@ss/w0rd+Z9\"q8Kx";
    let mut s = Scrubber::new(&[secret]);
    let basic = STANDARD.encode([&b"x-access-token:"[..], secret].concat());
    let inputs = [
        "u=p%40ss%2Fw0rd%2BZ9%22q8Kx&x=1".to_string(),
        "u=p%40ss%2fw0rd%2bZ9%22q8Kx&x=1".to_string(),
        r#"{"t": "p@ss/w0rd+Z9\"q8Kx"}"#.to_string(),
        r#"{"t": "p@ss\/w0rd+Z9\"q8Kx"}"#.to_string(),
        format!("Authorization: Basic {basic}"),
        format!("b64: {}", STANDARD.encode(secret)),
        format!("b64: {}", STANDARD.encode([&b"a"[..], secret].concat())),
        format!("b64: {}", STANDARD.encode([&b"ab"[..], secret].concat())),
    ];
    for input in inputs {
        let out = run(&mut s, &[input.as_bytes()]);
        assert!(contains(&out, MASK), "nothing masked in {input}");
        for form in super::forms::forms(secret) {
            assert!(
                !contains(&out, &form),
                "{input}: a form is left in {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

#[test]
fn base64_forms_are_masked_at_every_split() {
    let basic = STANDARD.encode([&b"user:"[..], SECRET].concat());
    let input = format!("echo: Basic {basic}\n");
    let b = input.as_bytes();
    let compiled = super::Compiled::new(&[SECRET]);
    for cut in 0..=b.len() {
        let mut s = compiled.scrubber();
        let out = run(&mut s, &[&b[..cut], &b[cut..]]);
        assert!(contains(&out, MASK), "cut {cut}");
        for form in super::forms::forms(SECRET) {
            assert!(
                !contains(&out, &form),
                "cut {cut}: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

#[test]
fn no_secrets_pass_everything_through() {
    let mut s = Scrubber::new(&[b"", b""]);
    assert_eq!(&s.feed(b"anything at all")[..], b"anything at all");
    assert_eq!(s.held(), 0);
    assert_eq!(&s.finish()[..], b"");
    let mut s = Scrubber::new(&[]);
    assert_eq!(&s.feed(b"x")[..], b"x");
}

#[test]
fn random_chunkings_never_leak() {
    let secrets: [&[u8]; 2] = [SECRET, b"sk-ant-api03-Zq9Xw8Vu7Ts6Rp5On4Ml3Kj2Ih1Gf0"];
    let mut input = Vec::new();
    let mut state = 1u64;
    for i in 0..200 {
        input.extend_from_slice(b"lorem tok_9f ipsum sk-ant- ");
        if i % 7 == 0 {
            input.extend_from_slice(secrets[i % 2]);
        }
    }
    let compiled = super::Compiled::new(&secrets);
    for _ in 0..50 {
        let mut s = compiled.scrubber();
        let mut out = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = ((state >> 33) as usize % 97 + 1).min(rest.len());
            out.extend_from_slice(&s.feed(&rest[..n]));
            rest = &rest[n..];
        }
        out.extend_from_slice(&s.finish());
        for secret in secrets {
            assert!(!contains(&out, secret));
        }
        assert_eq!(out.windows(MASK.len()).filter(|w| *w == MASK).count(), 29);
    }
}

/// Every encoding the view undoes or a form covers, whole and fed a byte at a time.
#[test]
fn masks_every_encoding_a_reflection_may_take() {
    let secret: &[u8] = SECRET;
    let hex_lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex_lower.to_uppercase();
    let pct_all: String = secret.iter().map(|b| format!("%{b:02X}")).collect();
    let pct_lower: String = secret.iter().map(|b| format!("%{b:02x}")).collect();
    let u_all: String = secret.iter().map(|b| format!("\\u{b:04x}")).collect();
    let u_upper: String = secret.iter().map(|b| format!("\\u{b:04X}")).collect();
    let x_all: String = secret.iter().map(|b| format!("\\x{b:02x}")).collect();
    let long = [
        &b"user:"[..],
        secret,
        secret,
        b" and some more words to wrap",
    ]
    .concat();
    let wrapped = |at: usize, nl: &str| -> String {
        let b = STANDARD.encode(&long);
        b.as_bytes()
            .chunks(at)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(nl)
    };
    let inputs = [
        format!("x={hex_lower};"),
        format!("x={hex_upper};"),
        format!("x={pct_all};"),
        format!("x={pct_lower};"),
        format!("{{\"t\":\"{u_all}\"}}"),
        format!("{{\"t\":\"{u_upper}\"}}"),
        format!("s='{x_all}'"),
        wrapped(76, "\n"),
        wrapped(76, "\r\n"),
        wrapped(64, "\n"),
        wrapped(7, "\n"),
    ];
    let secret_hex = hex_lower.as_bytes();
    for input in inputs {
        for chunk in [input.len().max(1), 1, 3] {
            let mut s = Scrubber::new(&[secret]);
            let pieces: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
            let out = run(&mut s, &pieces);
            assert!(contains(&out, MASK), "nothing masked in {input} by {chunk}");
            let shown = String::from_utf8_lossy(&out);
            let read = super::view::decode(&out).bytes;
            assert!(!contains(&read, secret), "{input} by {chunk}: {shown}");
            assert!(!contains(&out, secret_hex), "{input} by {chunk}: {shown}");
            for form in super::forms::forms(secret).iter().take(9) {
                assert!(!contains(&read, form), "{input} by {chunk}: {shown}");
            }
        }
    }
}

/// A reflection in two slices, cut anywhere: the guest never holds a whole prefix and suffix
/// that together make the secret, nor any piece of `piece_len` bytes or more.
#[test]
fn a_secret_reflected_in_two_slices_loses_a_piece_wherever_it_is_cut() {
    let min = super::forms::piece_len(SECRET.len());
    for cut in 1..SECRET.len() {
        let input = [
            &b"first="[..],
            &SECRET[..cut],
            b"&second=",
            &SECRET[cut..],
            b"\n",
        ]
        .concat();
        let mut s = Scrubber::new(&[SECRET]);
        let out = run(&mut s, &[&input]);
        assert!(
            !contains(&out, &SECRET[..cut]) || !contains(&out, &SECRET[cut..]),
            "cut {cut}: {}",
            String::from_utf8_lossy(&out)
        );
        for n in min..=SECRET.len() {
            for piece in [&SECRET[..n], &SECRET[SECRET.len() - n..]] {
                assert!(
                    !contains(&out, piece),
                    "cut {cut}: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
}

#[test]
fn pieces_are_half_the_secret_up_to_16_bytes() {
    use super::forms::piece_len;
    assert_eq!(piece_len(40), 16);
    assert_eq!(piece_len(28), 14);
    assert_eq!(piece_len(12), 8);
    // Ordinary text that shares less than a piece with the secret passes.
    let mut s = Scrubber::new(&[SECRET]);
    let short = &SECRET[..piece_len(SECRET.len()) - 1];
    assert_eq!(run(&mut s, &[short, b" end"]), [short, b" end"].concat());
}
