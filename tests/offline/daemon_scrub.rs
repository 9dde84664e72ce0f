//! Total scrubbing: `bottle sidecar --daemons pipelock` (the real binary) between curl and a
//! route upstream that reflects its credential in every form it can — the status line's
//! reason phrase, gzip, deflate, brotli and zstd bodies, line-wrapped base64, every byte percent-encoded,
//! `\u` escapes, hex in both cases, two slices — or sends another route's token: the guest's
//! output never holds a token, nor a prefix or suffix of one of 16 bytes or more, in any of
//! those readings. Codings pipelock does not decode (two stacked) are refused with a 502
//! naming them.

use crate::pipelock_kit;

use base64::Engine as _;
use pipelock_kit::*;

const TOKEN2: &str = "tok-SECOND-route-token-of-the-scrub-tests";
const TOKEN2_ENV: &str = "TEST_API2_TOKEN";
const MASK: &str = "[removed by bottle egress]";
/// The shortest piece of a token that counts (the scrubber's `piece_len` for these tokens).
const PIECE: usize = 16;

struct World {
    sidecar: Sidecar,
    port: u16,
}

/// `api.test` and `api2.test`: two routes with their own tokens, on one reflecting upstream.
async fn world() -> World {
    let ca = Ca::new("test upstream CA");
    let up = upstream(Some(ca.leaf(&["api.test", "api2.test"]))).await;
    let sidecar = Sidecar::start(Setup {
        allow: vec!["api.test".into(), "api2.test".into()],
        routes: vec![
            ("api.test".into(), Some(ca.pem()), TOKEN_ENV.into()),
            ("api2.test".into(), Some(ca.pem()), TOKEN2_ENV.into()),
        ],
        secrets: vec![
            (TOKEN_ENV.into(), TOKEN.into()),
            (TOKEN2_ENV.into(), TOKEN2.into()),
        ],
        names: vec!["api.test".into(), "api2.test".into()],
        ..Setup::default()
    })
    .await;
    World {
        sidecar,
        port: up.port,
    }
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn u_decoded(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("\\u") {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 2..at + 6)
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match code.and_then(char::from_u32) {
            Some(c) => {
                out.push(c);
                rest = &rest[at + 6..];
            }
            None => {
                out.push_str("\\u");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What of `token` a guest could read in `text`, or `None`.
fn leak(text: &str, token: &str) -> Option<String> {
    let joined = text.replace(['\r', '\n'], "");
    let views = [
        text.to_string(),
        joined.clone(),
        percent_decoded(text),
        u_decoded(text),
    ];
    let t = token.as_bytes();
    let mut needles: Vec<String> = Vec::new();
    for n in PIECE..=t.len() {
        needles.push(token[..n].to_string());
        needles.push(token[t.len() - n..].to_string());
    }
    needles.push(t.iter().map(|b| format!("{b:02x}")).collect());
    needles.push(t.iter().map(|b| format!("{b:02X}")).collect());
    for shift in 0..3 {
        let mut input = vec![b'x'; shift];
        input.extend_from_slice(t);
        let enc = base64::engine::general_purpose::STANDARD.encode(&input);
        let start = (8 * shift).div_ceil(6);
        let end = 8 * (shift + t.len()) / 6;
        needles.push(enc[start..end].to_string());
    }
    for v in &views {
        for n in &needles {
            if v.contains(n.as_str()) {
                return Some(format!("{n:?} in {v:?}"));
            }
        }
    }
    None
}

async fn get(w: &World, host: &str, path: &str) -> Curl {
    let url = format!("https://{host}:{}{path}", w.port);
    curl(&w.sidecar, &["--http1.1", &url]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reflection_of_a_token_is_scrubbed_before_the_guest_reads_it() {
    let w = world().await;
    for form in [
        "reason",
        "gzip",
        "deflate",
        "br",
        "zstd",
        "base64-wrapped",
        "percent",
        "u-escapes",
        "hex",
        "HEX",
        "slices",
    ] {
        let c = get(&w, "api.test", &format!("/reflect/{form}")).await;
        let all = format!("{}{}", c.headers, c.body);
        assert!(c.ok, "{form}: {c:?}");
        if let Some(what) = leak(&all, TOKEN) {
            panic!("{form}: the guest reads {what}");
        }
        if form == "reason" {
            // The status stays; the upstream's phrase gives way to the standard one.
            assert!(
                c.headers.contains("HTTP/1.1 401 Unauthorized\r\n"),
                "{form}: {c:?}"
            );
        } else {
            assert_eq!(c.status, 200, "{form}: {c:?}");
            assert!(
                c.body.contains(MASK),
                "{form}: nothing masked in {:?}",
                c.body
            );
            assert!(c.body.contains("some words before"), "{form}: {:?}", c.body);
        }
        if ["gzip", "deflate", "br", "zstd"].contains(&form) {
            assert!(
                !c.headers.to_ascii_lowercase().contains("content-encoding"),
                "{c:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_routes_token_is_scrubbed_too() {
    let w = world().await;
    let hexed: String = format!("one {TOKEN2} two {TOKEN} three")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    for host in ["api.test", "api2.test"] {
        let c = get(&w, host, &format!("/say/{hexed}")).await;
        assert_eq!(c.status, 200, "{c:?}");
        for token in [TOKEN, TOKEN2] {
            assert!(leak(&c.body, token).is_none(), "{host}: {:?}", c.body);
        }
        assert_eq!(c.body, format!("one {MASK} two {MASK} three"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codings_pipelock_cannot_decode_are_a_502_naming_them() {
    let w = world().await;
    let c = get(&w, "api.test", "/reflect/stacked").await;
    assert_eq!(c.status, 502, "{c:?}");
    assert!(
        c.body.contains("\"gzip, br\"") && c.body.contains("zstd"),
        "{}",
        c.body
    );
    assert!(leak(&format!("{}{}", c.headers, c.body), TOKEN).is_none());
    let events = w.sidecar.events().await;
    let e = find_event(&events, &[("path", serde_json::json!("/reflect/stacked"))]);
    assert_eq!(e["status"], 502);
    assert_eq!(e["decision"], "failed");
}
