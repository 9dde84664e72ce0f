//! The forms of a secret a response may carry it in, each scrubbed like the secret itself:
//!
//! - the secret as it is;
//! - percent-encoded (every byte outside RFC 3986's unreserved `A-Z a-z 0-9 - . _ ~`), with
//!   uppercase and with lowercase hex digits;
//! - JSON-escaped (`"` `\` and control bytes), with `/` as is and as `\/`;
//! - base64, standard and URL-safe alphabets, at each of the three alignments the secret can
//!   have inside a longer encoded text (HTTP Basic credentials `user:token`, an echoed header
//!   in a base64 field): the characters that only the secret's bytes determine.
//!
//! Not covered: hex, `\u`-escaped letters, HTML entities, compressed bodies, double encodings.
//! A form shorter than [`MIN_FORM`] bytes is skipped (but the secret itself never is).

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Shorter encoded forms would match ordinary text too often.
pub(super) const MIN_FORM: usize = 8;

/// The secret first, then its distinct encoded forms.
pub(super) fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![secret.to_vec()];
    let mut add = |form: Vec<u8>| {
        if form.len() >= MIN_FORM && !out.contains(&form) {
            out.push(form);
        }
    };
    add(percent(secret, b"0123456789ABCDEF"));
    add(percent(secret, b"0123456789abcdef"));
    add(json(secret, false));
    add(json(secret, true));
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3 {
            add(base64_core(secret, shift, engine));
        }
    }
    out
}

fn percent(secret: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len());
    for &b in secret {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

fn json(secret: &[u8], slash: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len());
    for &b in secret {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'/' if slash => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// The base64 characters of `secret` preceded by `shift` other bytes that depend on the
/// secret's bytes alone: character `i` covers bits `6i..6i+6`, which must lie within the
/// secret's bits `8·shift..8·(shift+len)`.
fn base64_core(secret: &[u8], shift: usize, engine: &GeneralPurpose) -> Vec<u8> {
    let mut input = vec![0u8; shift];
    input.extend_from_slice(secret);
    let encoded = engine.encode(&input).into_bytes();
    let start = (8 * shift).div_ceil(6);
    let end = (8 * (shift + secret.len()) / 6).min(encoded.len());
    encoded
        .get(start..end)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}
