//! The reflecting upstream's forms: `/reflect/FORM` answers with the bearer token it got in
//! `authorization`, in one of the forms an upstream may reflect a credential in, between
//! ordinary words. `/say/HEX`: answers the hex-decoded bytes (a text of the test's making,
//! e.g. another route's token).

use std::io::Write;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;

use super::upstreams::{TestBody, full};

fn hex(token: &[u8], upper: bool) -> String {
    token
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

/// `text` in a content coding: `gzip`, `deflate` (zlib), `br` or `zstd`.
fn compressed(coding: &str, text: &[u8]) -> Vec<u8> {
    use flate2::Compression;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams::default();
            brotli::BrotliCompress(&mut &text[..], &mut out, &params).unwrap();
            out
        }
        "zstd" => zstd::encode_all(text, 3).unwrap(),
        other => panic!("no coding {other}"),
    }
}

/// The answer for `/reflect/FORM` given the token the upstream got.
pub fn reflect(form: &str, token: &str) -> Response<TestBody> {
    let t = token.as_bytes();
    let b64 = |input: &[u8]| base64::engine::general_purpose::STANDARD.encode(input);
    let words = |body: String| format!("some words before\n{body}\nand after\n");
    let wrap = |text: String, at: usize| -> String {
        text.as_bytes()
            .chunks(at)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let text = match form {
        "reason" => {
            let mut r = Response::new(full("unauthorized\n"));
            *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
            let phrase = format!("invalid token {token}");
            r.extensions_mut().insert(
                hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()).expect("a reason phrase"),
            );
            return r;
        }
        "gzip" | "deflate" | "br" | "zstd" => {
            let body = compressed(form, words(format!("token={token}")).as_bytes());
            return Response::builder()
                .header("content-encoding", form)
                .body(full(body))
                .unwrap();
        }
        // Two codings stacked, which pipelock does not undo.
        "stacked" => {
            let text = words(format!("token={token}"));
            let body = compressed("br", &compressed("gzip", text.as_bytes()));
            return Response::builder()
                .header("content-encoding", "gzip, br")
                .body(full(body))
                .unwrap();
        }
        "base64-wrapped" => {
            let long =
                format!("Basic user:{token} and a few more words to make it wrap twice over");
            words(wrap(b64(long.as_bytes()), 76))
        }
        "percent" => words(t.iter().map(|b| format!("%{b:02X}")).collect()),
        "u-escapes" => words(format!(
            "{{\"t\":\"{}\"}}",
            t.iter().map(|b| format!("\\u{b:04x}")).collect::<String>()
        )),
        "hex" => words(hex(t, false)),
        "HEX" => words(hex(t, true)),
        "slices" => {
            let cut = t.len() / 2;
            words(format!("first={}\nsecond={}", &token[..cut], &token[cut..]))
        }
        other => format!("no form {other}\n"),
    };
    Response::new(full(text))
}

/// `/say/HEX`: the bytes.
pub fn say(hexed: &str) -> Response<TestBody> {
    let bytes: Vec<u8> = (0..hexed.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hexed[2 * i..2 * i + 2], 16).ok())
        .collect();
    Response::new(
        http_body_util::Full::new(Bytes::from(bytes))
            .map_err(|n| match n {})
            .boxed(),
    )
}
