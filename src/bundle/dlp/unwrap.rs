//! Runs of base64 and hex in the decoded text, decoded in turn, so a key sent as
//! `base64(key)` or `hex(key)` is seen as the key. What they decode to is a second text that
//! DLP scans beside the first (see [`super::BodyScanner`]).
//!
//! A run is a stretch of base64 characters (`A-Z a-z 0-9 + /`, and `- _` of base64url; `=`
//! ends it). One of at least [`MIN_HEX`] characters, all hex digits (either case), is decoded
//! as hex; any other of at least [`MIN_B64`] as base64, from its first character. A line break
//! (`\n`, `\r\n`) continues a run when the line before it holds at least [`MIN_LINE`]
//! characters, a multiple of 4 (base64 wrapped at 76 columns as MIME writes it, 64 as PEM,
//! `xxd -p`'s 60): anything shorter ends it. Each decoded run is followed by a line break,
//! so two runs never read as one.
//!
//! In a stream: a run cut by a chunk boundary goes on in the next chunk; what waits is at most
//! [`MIN_HEX`] characters (a run not yet known to be long enough), then under four.

/// The shortest base64 run decoded: 18 bytes, shorter than every key DLP knows.
pub const MIN_B64: usize = 24;
/// The shortest hex run decoded: 16 bytes.
pub const MIN_HEX: usize = 32;
/// A line break inside a run continues it when the line before it is at least this long.
pub const MIN_LINE: usize = 40;

const OTHER: u8 = 0;
const B64: u8 = 1;
const HEX: u8 = 2;
const BREAK: u8 = 3;

/// Each byte's class, and its value in base64 (either alphabet) or hex.
const fn tables() -> ([u8; 256], [u8; 256], [u8; 256]) {
    let mut class = [OTHER; 256];
    let mut b64 = [0u8; 256];
    let mut hex = [0u8; 256];
    let mut i = 0;
    while i < 26 {
        b64[b'A' as usize + i] = i as u8;
        b64[b'a' as usize + i] = 26 + i as u8;
        class[b'A' as usize + i] = B64;
        class[b'a' as usize + i] = B64;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        b64[b'0' as usize + d] = 52 + d as u8;
        class[b'0' as usize + d] = HEX;
        hex[b'0' as usize + d] = d as u8;
        d += 1;
    }
    let mut h = 0;
    while h < 6 {
        class[b'a' as usize + h] = HEX;
        class[b'A' as usize + h] = HEX;
        hex[b'a' as usize + h] = 10 + h as u8;
        hex[b'A' as usize + h] = 10 + h as u8;
        h += 1;
    }
    b64[b'+' as usize] = 62;
    b64[b'-' as usize] = 62;
    b64[b'/' as usize] = 63;
    b64[b'_' as usize] = 63;
    class[b'+' as usize] = B64;
    class[b'-' as usize] = B64;
    class[b'/' as usize] = B64;
    class[b'_' as usize] = B64;
    class[b'\n' as usize] = BREAK;
    class[b'\r' as usize] = BREAK;
    (class, b64, hex)
}

const TABLES: ([u8; 256], [u8; 256], [u8; 256]) = tables();
static CLASS: [u8; 256] = TABLES.0;
static B64_VALUE: [u8; 256] = TABLES.1;
static HEX_VALUE: [u8; 256] = TABLES.2;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not yet long enough to be decoded: every character is held.
    #[default]
    Waiting,
    Base64,
    Hex,
}

/// Finds and decodes runs in a stream of text.
#[derive(Debug, Default)]
pub(super) struct Unwrapper {
    mode: Mode,
    /// Characters of the run not decoded yet.
    held: Vec<u8>,
    /// Characters in the run (line breaks not counted).
    run: usize,
    /// Characters since the run's start or its last line break.
    line: usize,
    /// Every character so far is a hex digit.
    all_hex: bool,
    /// The last byte was a `\r` that continued the run (a `\n` may follow).
    after_cr: bool,
}

impl Unwrapper {
    /// Appends what the runs in `text` decode to (so far) to `out`.
    pub(super) fn feed(&mut self, text: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < text.len() {
            if self.run == 0 {
                // Outside a run: skip what cannot start one, and whole runs too short to
                // decode (a line break cannot continue one that short either). A run long
                // enough to decode that starts at or after `i` and before the probe holds the
                // probe: when the probe is no run character, all before it is skipped.
                let probe = i + MIN_B64 - 1;
                if probe < text.len() {
                    if !is_run(text[probe]) {
                        i = probe + 1;
                        continue;
                    }
                    let mut start = probe;
                    while start > i && is_run(text[start - 1]) {
                        start -= 1;
                    }
                    let end = run_end(text, probe);
                    if end < text.len() && end - start < MIN_B64 {
                        i = end + 1;
                        continue;
                    }
                    i = start;
                }
                let start = i;
                let end = run_end(text, i);
                if end < text.len() && end - start < MIN_B64 {
                    i = end + 1;
                    continue;
                }
                if end == start {
                    // A line break or another byte, with no run open: nothing.
                    i += 1;
                    continue;
                }
            } else if self.held.is_empty() && !self.after_cr {
                // Inside a run being decoded: whole quanta (or pairs) straight from the text.
                let step = match self.mode {
                    Mode::Base64 => {
                        let whole = (run_end(text, i) - i) / 4 * 4;
                        for q in text[i..i + whole].chunks_exact(4) {
                            let v = q
                                .iter()
                                .fold(0u32, |acc, &c| (acc << 6) | B64_VALUE[c as usize] as u32);
                            out.extend_from_slice(&v.to_be_bytes()[1..]);
                        }
                        whole
                    }
                    Mode::Hex => {
                        let mut end = i;
                        while end < text.len() && CLASS[text[end] as usize] == HEX {
                            end += 1;
                        }
                        let whole = (end - i) / 2 * 2;
                        for p in text[i..i + whole].chunks_exact(2) {
                            out.push(HEX_VALUE[p[0] as usize] << 4 | HEX_VALUE[p[1] as usize]);
                        }
                        whole
                    }
                    Mode::Waiting => 0,
                };
                if step > 0 {
                    self.run += step;
                    self.line += step;
                    i += step;
                    continue;
                }
            }
            let b = text[i];
            match CLASS[b as usize] {
                OTHER => {
                    if self.run > 0 {
                        self.end(out);
                    }
                }
                BREAK => self.line_break(b, out),
                class => self.char(b, class == HEX, out),
            }
            i += 1;
        }
    }

    /// The end of the text: the last run's tail.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.run > 0 {
            self.end(out);
        }
    }

    /// Characters held, waiting for more of their run.
    pub(super) fn pending(&self) -> usize {
        self.held.capacity()
    }

    fn char(&mut self, b: u8, hex: bool, out: &mut Vec<u8>) {
        self.after_cr = false;
        if self.mode == Mode::Hex && !hex {
            self.end(out);
        }
        if self.run == 0 {
            self.all_hex = true;
        }
        self.run += 1;
        self.line += 1;
        self.all_hex &= hex;
        self.held.push(b);
        match self.mode {
            Mode::Waiting => {
                if !self.all_hex && self.run >= MIN_B64 {
                    self.mode = Mode::Base64;
                    self.decode_base64(out);
                } else if self.all_hex && self.run >= MIN_HEX {
                    self.mode = Mode::Hex;
                    self.decode_hex(out);
                }
            }
            Mode::Base64 if self.held.len() == 4 => self.decode_base64(out),
            Mode::Hex if self.held.len() == 2 => self.decode_hex(out),
            _ => {}
        }
    }

    fn line_break(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.run == 0 {
            return;
        }
        if b == b'\n' && std::mem::replace(&mut self.after_cr, false) {
            return;
        }
        if self.line >= MIN_LINE && self.line.is_multiple_of(4) {
            self.line = 0;
            self.after_cr = b == b'\r';
            return;
        }
        self.end(out);
    }

    /// Decodes the held characters' whole quanta, keeping the rest.
    fn decode_base64(&mut self, out: &mut Vec<u8>) {
        let whole = self.held.len() / 4 * 4;
        for q in self.held[..whole].chunks_exact(4) {
            let v = q
                .iter()
                .fold(0u32, |acc, &c| (acc << 6) | B64_VALUE[c as usize] as u32);
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
        self.held.drain(..whole);
    }

    fn decode_hex(&mut self, out: &mut Vec<u8>) {
        let whole = self.held.len() / 2 * 2;
        for p in self.held[..whole].chunks_exact(2) {
            out.push(HEX_VALUE[p[0] as usize] << 4 | HEX_VALUE[p[1] as usize]);
        }
        self.held.drain(..whole);
    }

    /// The run is over: its last bytes, then a line break.
    fn end(&mut self, out: &mut Vec<u8>) {
        match self.mode {
            Mode::Waiting => {}
            Mode::Base64 => {
                // Two or three characters are one or two bytes; one is nothing.
                if self.held.len() >= 2 {
                    let v = self
                        .held
                        .iter()
                        .fold(0u32, |acc, &c| (acc << 6) | B64_VALUE[c as usize] as u32)
                        << (6 * (4 - self.held.len()));
                    out.extend_from_slice(&v.to_be_bytes()[1..self.held.len()]);
                }
                out.push(b'\n');
            }
            Mode::Hex => out.push(b'\n'),
        }
        self.held.clear();
        self.mode = Mode::Waiting;
        self.run = 0;
        self.line = 0;
        self.after_cr = false;
    }
}

/// Whether `b` is a run character (base64, either alphabet).
fn is_run(b: u8) -> bool {
    matches!(CLASS[b as usize], B64 | HEX)
}

/// Where the stretch of run characters starting at `i` ends.
fn run_end(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && is_run(text[i]) {
        i += 1;
    }
    i
}

/// What the runs of a whole value decode to (empty when it has none).
pub(super) fn unwrap_all(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut u = Unwrapper::default();
    u.feed(text, &mut out);
    u.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const SECRET: &[u8] = b"the quick brown fox jumps over the lazy dog, 0123456789!";

    fn runs(text: &[u8]) -> Vec<u8> {
        unwrap_all(text)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        memchr::memmem::find(hay, needle).is_some()
    }

    #[test]
    fn base64_and_hex_runs_decode_in_any_alphabet_and_case() {
        let b64 = STANDARD.encode(SECRET);
        let url = URL_SAFE_NO_PAD.encode(SECRET);
        let lower: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
        let upper = lower.to_uppercase();
        for enc in [&b64, &url, &lower, &upper] {
            let text = format!("{{\"data\": \"{enc}\", \"n\": 1}}");
            assert!(contains(&runs(text.as_bytes()), SECRET), "{enc}");
        }
    }

    #[test]
    fn wrapped_base64_reads_as_one_run() {
        let long: Vec<u8> = SECRET.repeat(4);
        let b64 = STANDARD.encode(&long);
        for width in [76, 64, 60] {
            for eol in ["\n", "\r\n"] {
                let wrapped: Vec<&str> = b64
                    .as_bytes()
                    .chunks(width)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect();
                let text = format!("begin\n{}\nend", wrapped.join(eol));
                assert!(contains(&runs(text.as_bytes()), &long), "{width} {eol:?}");
            }
        }
    }

    #[test]
    fn a_run_cut_anywhere_between_chunks_decodes_the_same() {
        let b64 = STANDARD.encode(SECRET);
        let text = format!("x = {b64}; y = {}", "ab12".repeat(10));
        let whole = runs(text.as_bytes());
        let b = text.as_bytes();
        for cut in 0..=b.len() {
            let mut u = Unwrapper::default();
            let mut out = Vec::new();
            u.feed(&b[..cut], &mut out);
            assert!(u.held.len() <= MIN_HEX);
            u.feed(&b[cut..], &mut out);
            u.finish(&mut out);
            assert_eq!(out, whole, "cut {cut}");
        }
    }

    #[test]
    fn short_runs_and_words_give_nothing() {
        assert!(runs(b"hello world, this is ordinary text with short words").is_empty());
        assert!(runs(b"a1b2c3d4e5f6a7b8c9d0").is_empty());
        // A short line does not continue a run.
        let b64 = STANDARD.encode(SECRET);
        let text = format!("word\n{b64}");
        assert!(contains(&runs(text.as_bytes()), SECRET));
    }
}
