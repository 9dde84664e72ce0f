//! What DLP decodes before it scans: the escapes an agent's traffic wraps text in, so that a
//! key inside a JSON string, a query string or a form body is seen as the key.
//!
//! In a stream (an escape cut by a chunk boundary waits for the next chunk; at most
//! [`MAX_PENDING`] bytes a level), up to [`LEVELS`] levels deep: what one pass decodes is
//! decoded again while it still holds an escape (`%2541` → `%41` → `A`), so nesting cannot
//! hide a key; a fifth level is left as the fourth wrote it:
//! - percent-encoding: `%2D` → `-` (URLs, `application/x-www-form-urlencoded` bodies, any text);
//! - JSON string escapes: `\/ \\ \" \n \r \t \b \f` and `\uXXXX` (a surrogate pair is joined;
//!   a lone surrogate is left as written), so JSON inside a JSON string reads as JSON;
//! - `\xHH` (JavaScript, Python, shell strings) and `\'`.
//!
//! Not decoded: `+` for a space (base64 keys hold `+`), base64 (but the field rule reads HTTP
//! Basic credentials and the JWT rule its header; `unwrap` reads base64 and hex runs),
//! HTML entities, compressed bodies (pipelock inflates those before DLP). A malformed escape
//! is kept as written.

use std::borrow::Cow;

/// The longest escape: a surrogate pair `\uD83D\uDE00`.
pub(super) const MAX_PENDING: usize = 12;

/// How many times text is decoded, at most: `%25` nested three deep still reads as the byte.
pub const LEVELS: usize = 4;

/// [`LEVELS`] decoders in a row: each decodes what the one before it wrote. A level whose
/// input holds no escape (and that waits on none) passes it on untouched, and so would every
/// level after it: the text is stable there.
#[derive(Debug, Default)]
pub(super) struct Layers {
    levels: [Decoder; LEVELS],
}

impl Layers {
    /// Appends `input`, decoded until stable (at most [`LEVELS`] times), to `out`.
    pub(super) fn decode(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) {
        let mut cur: Cow<[u8]> = Cow::Borrowed(input);
        for i in 0..LEVELS {
            let waiting = self.levels[i..].iter().any(|d| !d.pending.is_empty());
            if !waiting && memchr::memchr2(b'%', b'\\', &cur).is_none() {
                out.extend_from_slice(&cur);
                return;
            }
            if i + 1 == LEVELS {
                self.levels[i].decode(&cur, last, out);
                return;
            }
            let mut next = Vec::with_capacity(cur.len());
            self.levels[i].decode(&cur, last, &mut next);
            cur = Cow::Owned(next);
        }
    }

    /// Bytes held back, waiting for the rest of an escape, at every level.
    pub(super) fn pending(&self) -> usize {
        self.levels.iter().map(Decoder::pending).sum()
    }
}

/// A stream decoder: what it decodes is appended to the caller's buffer.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    pending: Vec<u8>,
}

enum Escape {
    /// `consumed` input bytes became `bytes[..len]`.
    Decoded {
        consumed: usize,
        bytes: [u8; 4],
        len: usize,
    },
    /// The input ends inside what may still become an escape.
    Incomplete,
    /// Not an escape: the byte stands for itself.
    Literal,
}

impl Decoder {
    /// Appends the decoded `input` to `out`. When `last` is false, an escape cut at the end of
    /// `input` is held until the next call.
    pub(super) fn decode(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) {
        let data: Cow<[u8]> = if self.pending.is_empty() {
            Cow::Borrowed(input)
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(input);
            Cow::Owned(joined)
        };
        let mut i = 0;
        while i < data.len() {
            let Some(k) = memchr::memchr2(b'%', b'\\', &data[i..]) else {
                out.extend_from_slice(&data[i..]);
                break;
            };
            out.extend_from_slice(&data[i..i + k]);
            let at = i + k;
            match escape(&data[at..]) {
                Escape::Decoded {
                    consumed,
                    bytes,
                    len,
                } => {
                    out.extend_from_slice(&bytes[..len]);
                    i = at + consumed;
                }
                Escape::Incomplete if !last => {
                    self.pending.extend_from_slice(&data[at..]);
                    break;
                }
                Escape::Incomplete => {
                    out.extend_from_slice(&data[at..]);
                    break;
                }
                Escape::Literal => {
                    out.push(data[at]);
                    i = at + 1;
                }
            }
        }
    }

    /// Bytes held back, waiting for the rest of an escape.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Decodes a whole value at once, until stable (at most [`LEVELS`] times).
pub(super) fn decode_all(input: &[u8]) -> Cow<'_, [u8]> {
    let mut text = Cow::Borrowed(input);
    for _ in 0..LEVELS {
        if memchr::memchr2(b'%', b'\\', &text).is_none() {
            break;
        }
        let mut out = Vec::with_capacity(text.len());
        Decoder::default().decode(&text, true, &mut out);
        if out[..] == text[..] {
            break;
        }
        text = Cow::Owned(out);
    }
    text
}

fn one(consumed: usize, b: u8) -> Escape {
    Escape::Decoded {
        consumed,
        bytes: [b, 0, 0, 0],
        len: 1,
    }
}

/// `s` starts with `%` or `\`.
fn escape(s: &[u8]) -> Escape {
    if s[0] == b'%' {
        return hex_escape(s, 1, 2);
    }
    let Some(&kind) = s.get(1) else {
        return Escape::Incomplete;
    };
    match kind {
        b'/' | b'\\' | b'"' | b'\'' => one(2, kind),
        b'n' => one(2, b'\n'),
        b'r' => one(2, b'\r'),
        b't' => one(2, b'\t'),
        b'b' => one(2, 0x08),
        b'f' => one(2, 0x0c),
        b'x' => hex_escape(s, 2, 2),
        b'u' => unicode_escape(s),
        _ => Escape::Literal,
    }
}

/// `digits` hex digits after a `skip`-byte introducer, as one byte.
fn hex_escape(s: &[u8], skip: usize, digits: usize) -> Escape {
    match hex_value(s, skip, digits) {
        Some(Some(v)) => one(skip + digits, v as u8),
        Some(None) => Escape::Incomplete,
        None => Escape::Literal,
    }
}

/// The value of `digits` hex digits at `s[skip..]`: `Some(None)` when `s` ends before them
/// (all present ones hex), `None` when one is not hex.
fn hex_value(s: &[u8], skip: usize, digits: usize) -> Option<Option<u32>> {
    let mut v = 0u32;
    for i in skip..skip + digits {
        let Some(&b) = s.get(i) else {
            return Some(None);
        };
        v = v * 16 + (b as char).to_digit(16)?;
    }
    Some(Some(v))
}

/// `\uXXXX`, or a surrogate pair `\uD8XX\uDCXX`, as UTF-8.
fn unicode_escape(s: &[u8]) -> Escape {
    let high = match hex_value(s, 2, 4) {
        Some(Some(v)) => v,
        Some(None) => return Escape::Incomplete,
        None => return Escape::Literal,
    };
    let (consumed, code) = match high {
        0xD800..=0xDBFF => {
            let tail = &s[6..];
            let intro = [b'\\', b'u'];
            if tail.len() < 2 && intro.starts_with(tail) {
                return Escape::Incomplete;
            }
            if !tail.starts_with(&intro) {
                return Escape::Literal;
            }
            match hex_value(tail, 2, 4) {
                Some(Some(low @ 0xDC00..=0xDFFF)) => {
                    (12, 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                }
                Some(None) => return Escape::Incomplete,
                _ => return Escape::Literal,
            }
        }
        0xDC00..=0xDFFF => return Escape::Literal,
        v => (6, v),
    };
    let Some(c) = char::from_u32(code) else {
        return Escape::Literal;
    };
    let mut bytes = [0u8; 4];
    let len = c.encode_utf8(&mut bytes).len();
    Escape::Decoded {
        consumed,
        bytes,
        len,
    }
}
