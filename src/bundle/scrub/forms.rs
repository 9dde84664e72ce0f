//! The patterns a secret is scrubbed as, all searched in the decoded view ([`super::view`]),
//! so percent-encoding, JSON and `\u`/`\x` escapes and line breaks need no forms of their own:
//!
//! - the secret, as the view reads it;
//! - base64, standard and URL-safe alphabets, at each of the three alignments the secret can
//!   have inside a longer encoded text (HTTP Basic credentials `user:token`, an echoed header
//!   in a base64 field): the characters that only the secret's bytes determine — wrapped
//!   base64 too, since the view drops line breaks;
//! - hex, lowercase and uppercase;
//! - pieces: every prefix and every suffix of the secret at least [`piece_len`] bytes long, so
//!   a reflection cut in two (each half sent apart) loses a piece of that length at least:
//!   either the first half is a prefix that long, or the second half is a suffix that long.
//!
//! Not covered: HTML entities, double encodings, pieces of the encoded forms, pieces from the
//! middle. A form shorter than [`MIN_FORM`] bytes is skipped (but the secret itself never is).

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::view;

/// Shorter encoded forms would match ordinary text too often.
pub(super) const MIN_FORM: usize = 8;
/// The longest piece needed to count: pieces of a secret are scrubbed from this length (or
/// half the secret, if shorter, but never under [`MIN_FORM`]).
pub const PIECE: usize = 16;

/// The shortest prefix or suffix of a `len`-byte secret that is scrubbed as a piece: 16
/// bytes, or half the secret (rounded up) when that is less, at least 8.
pub fn piece_len(len: usize) -> usize {
    PIECE.min(len.div_ceil(2)).max(MIN_FORM)
}

/// The secret first, then its distinct encoded forms and pieces.
pub(super) fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let plain = view::decode(secret).bytes;
    let mut out = vec![plain.clone()];
    let mut add = |form: Vec<u8>| {
        if form.len() >= MIN_FORM && !out.contains(&form) {
            out.push(form);
        }
    };
    if plain != secret {
        add(secret.to_vec());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3 {
            add(base64_core(secret, shift, engine));
        }
    }
    add(hex(secret, b"0123456789abcdef"));
    add(hex(secret, b"0123456789ABCDEF"));
    let min = piece_len(plain.len());
    for n in min..plain.len() {
        add(plain[..n].to_vec());
        add(plain[plain.len() - n..].to_vec());
    }
    out
}

fn hex(secret: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    secret
        .iter()
        .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
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
