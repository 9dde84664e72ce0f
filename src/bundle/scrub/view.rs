//! The decoded view a response is searched in: the bytes as a client would read them once
//! one layer of the usual escapes is undone, each view byte knowing the raw bytes it came
//! from, so a match in the view masks exactly those.
//!
//! Undone: line breaks (`\r`, `\n`: base64 wrapped at 76 or 64 columns reads as one run),
//! percent-encoding (`%XX`, any byte, either case), JSON and C string escapes (`\"`, `\\`,
//! `\/`, `\b` `\f` `\n` `\r` `\t`, `\uXXXX` — a code point written out as UTF-8 — and `\xXX`).
//! One layer: `%2541` reads as `%41`.

/// `raw` decoded, with where each byte came from.
#[derive(Debug, Default)]
pub(super) struct View {
    pub bytes: Vec<u8>,
    /// The raw offset each view byte starts at.
    pub start: Vec<usize>,
    /// The raw offset just past each view byte's escape.
    pub end: Vec<usize>,
    /// Where decoding stopped: the start of an escape the next bytes may complete (when not
    /// `last`), else `raw.len()`.
    pub cut: usize,
}

impl View {
    fn push(&mut self, b: u8, start: usize, end: usize) {
        self.bytes.push(b);
        self.start.push(start);
        self.end.push(end);
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The value of `n` hex digits at `raw[at..]`: `Ok(None)` if they are not hex, `Err(())` if
/// the input ends before `n` digits while those present are hex (the escape may complete).
fn hex_run(raw: &[u8], at: usize, n: usize) -> Result<Option<u32>, ()> {
    let mut v = 0u32;
    for i in 0..n {
        let Some(&b) = raw.get(at + i) else {
            return Err(());
        };
        let Some(d) = hex(b) else {
            return Ok(None);
        };
        v = v << 4 | u32::from(d);
    }
    Ok(Some(v))
}

/// Decodes all of `raw` (nothing follows: an unfinished escape stays as it is).
pub(super) fn decode(raw: &[u8]) -> View {
    decode_stream(raw, true)
}

/// Decodes `raw`, stopping at an escape the next bytes may complete unless `last`.
pub(super) fn decode_stream(raw: &[u8], last: bool) -> View {
    let mut v = View {
        bytes: Vec::with_capacity(raw.len()),
        start: Vec::with_capacity(raw.len()),
        end: Vec::with_capacity(raw.len()),
        cut: raw.len(),
    };
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let decoded = match b {
            b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'%' => hex_run(raw, i + 1, 2).map(|h| h.map(|x| (vec![x as u8], 3))),
            b'\\' => escape(raw, i),
            _ => Ok(None),
        };
        match decoded {
            Ok(Some((bytes, len))) => {
                for d in bytes {
                    v.push(d, i, i + len);
                }
                i += len;
            }
            Ok(None) => {
                v.push(b, i, i + 1);
                i += 1;
            }
            Err(()) if last => {
                v.push(b, i, i + 1);
                i += 1;
            }
            Err(()) => {
                v.cut = i;
                break;
            }
        }
    }
    v
}

/// A backslash escape at `raw[at]`: its bytes and length, `Ok(None)` if it is none, `Err`
/// if the input ends inside it.
#[allow(clippy::type_complexity)]
fn escape(raw: &[u8], at: usize) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let Some(&kind) = raw.get(at + 1) else {
        return Err(());
    };
    let simple = match kind {
        b'"' | b'\\' | b'/' | b'\'' => Some(kind),
        b'b' => Some(8),
        b'f' => Some(12),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok(Some((vec![s], 2)));
    }
    match kind {
        b'x' => Ok(hex_run(raw, at + 2, 2)?.map(|x| (vec![x as u8], 4))),
        b'u' => {
            let Some(cp) = hex_run(raw, at + 2, 4)? else {
                return Ok(None);
            };
            let Some(c) = char::from_u32(cp) else {
                return Ok(None);
            };
            let mut buf = [0u8; 4];
            Ok(Some((c.encode_utf8(&mut buf).as_bytes().to_vec(), 6)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone_and_mapped_back() {
        let v = decode(br#"a%41\u0042\x43\"d"#);
        assert_eq!(v.bytes, b"aABC\"d");
        assert_eq!(v.start, [0, 1, 4, 10, 14, 16]);
        assert_eq!(v.end, [1, 4, 10, 14, 16, 17]);
        assert_eq!(decode(b"ab\r\ncd\n").bytes, b"abcd");
        assert_eq!(decode(b"%zz\\q%2541").bytes, b"%zz\\q%41");
    }

    #[test]
    fn an_unfinished_escape_waits_unless_last() {
        for tail in [&b"%"[..], b"%4", b"\\", b"\\u00", b"\\x4"] {
            let raw = [&b"ab"[..], tail].concat();
            let v = decode_stream(&raw, false);
            assert_eq!((v.bytes.as_slice(), v.cut), (&b"ab"[..], 2), "{tail:?}");
            assert_eq!(decode(&raw).bytes, raw, "{tail:?}");
        }
    }
}
