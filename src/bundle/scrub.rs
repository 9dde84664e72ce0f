//! Scrubbing: removes secrets from a stream of bytes, also where one is split across chunks.
//! egress runs every response from a route's upstream through one holding every route's
//! token, so an upstream that echoes the request — or another route's credential — cannot
//! hand a real token to the guest.
//!
//! This module owns the matching of a response against the secrets and the forms they may
//! travel in ([`forms`]: as is, base64, hex, and prefixes and suffixes of at least
//! [`forms::piece_len`] bytes), searched in a decoded view of the response ([`view`]: line
//! breaks dropped, percent-encoding, JSON, `\u` and `\x` escapes undone), each match replacing
//! the raw bytes it came from with [`MASK`]. One Aho-Corasick automaton (leftmost-longest)
//! finds them all.
//!
//! What is held back: only bytes that could still begin a form — the earliest tail of the
//! view that is a proper prefix of some form, and an escape the next chunk may complete. So
//! ordinary bytes pass at once, no prefix of a secret is ever emitted that later bytes would
//! complete, and what waits is bounded by the longest form (hex: twice the secret) times the
//! longest escape. [`Scrubber::finish`] emits what is held (it cannot become a secret any
//! more).

pub mod forms;
#[cfg(test)]
mod tests;
mod view;

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;

/// What the secret is replaced with.
pub const MASK: &[u8] = b"[removed by bottle egress]";

/// The forms of some secrets, compiled once (about 50 µs) and shared by every scrubber of
/// them: egress compiles a route's when it starts, not per response.
#[derive(Debug)]
pub struct Compiled {
    /// Every form of every secret; none when there is nothing to scrub.
    patterns: Vec<Vec<u8>>,
    /// Built over `patterns` (none if it could not be, then a plain search is used).
    ac: Option<AhoCorasick>,
    /// Bytes that may begin a pattern, for the tail check.
    first: [bool; 256],
    /// Byte pairs that begin a pattern (`256 * a + b`), a finer tail check.
    pairs: Vec<bool>,
}

/// Scrubs one stream.
#[derive(Debug)]
pub struct Scrubber {
    compiled: std::sync::Arc<Compiled>,
    held: Vec<u8>,
}

impl Scrubber {
    /// A scrubber for `secrets` (empty ones are ignored).
    pub fn new(secrets: &[&[u8]]) -> Scrubber {
        Compiled::new(secrets).scrubber()
    }
}

impl Compiled {
    /// Compiles the forms of `secrets` (empty ones are ignored).
    pub fn new(secrets: &[&[u8]]) -> std::sync::Arc<Compiled> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            for form in forms::forms(secret) {
                if !patterns.contains(&form) {
                    patterns.push(form);
                }
            }
        }
        let ac = (!patterns.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        let mut first = [false; 256];
        let mut pairs = vec![false; 256 * 256];
        for p in &patterns {
            first[usize::from(p[0])] = true;
            if let [a, b, ..] = p[..] {
                pairs[256 * usize::from(a) + usize::from(b)] = true;
            }
        }
        std::sync::Arc::new(Compiled {
            patterns,
            ac,
            first,
            pairs,
        })
    }

    /// A scrubber of one stream.
    pub fn scrubber(self: &std::sync::Arc<Self>) -> Scrubber {
        Scrubber {
            compiled: self.clone(),
            held: Vec::new(),
        }
    }
}

impl Scrubber {
    /// The next chunk in; what can be passed on out (some bytes may be held back).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.compiled.patterns.is_empty() {
            return Bytes::copy_from_slice(chunk);
        }
        self.held.extend_from_slice(chunk);
        self.pass(false)
    }

    /// The end of the stream: whatever was held back.
    pub fn finish(&mut self) -> Bytes {
        self.pass(true)
    }

    /// How many bytes are held back, waiting to be told apart from a secret.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Masks every complete form in what is held; keeps a tail that may still grow into one.
    fn pass(&mut self, last: bool) -> Bytes {
        let hay = std::mem::take(&mut self.held);
        let v = view::decode_stream(&hay, last);
        // Where the raw bytes of the view's offset `k` begin (`cut` past the view's end).
        let raw_at = |k: usize| v.start.get(k).copied().unwrap_or(v.cut);
        let mut out = Vec::with_capacity(hay.len());
        let mut done = 0;
        let mut keep = if last {
            v.bytes.len()
        } else {
            self.tail(&v.bytes, 0)
        };
        for m in self.matches(&v.bytes) {
            if !last && m.start >= keep {
                break;
            }
            out.extend_from_slice(&hay[done..v.start[m.start].max(done)]);
            out.extend_from_slice(MASK);
            done = v.end[m.end - 1];
            if !last && keep < m.end {
                keep = self.tail(&v.bytes, m.end);
            }
        }
        let keep = if last {
            hay.len()
        } else {
            raw_at(keep).max(done)
        };
        out.extend_from_slice(&hay[done..keep]);
        self.held = hay[keep..].to_vec();
        Bytes::from(out)
    }

    /// Leftmost-longest, non-overlapping matches of the patterns in `hay`.
    fn matches(&self, hay: &[u8]) -> Vec<std::ops::Range<usize>> {
        match &self.compiled.ac {
            Some(ac) => ac.find_iter(hay).map(|m| m.range()).collect(),
            None => plain_matches(hay, &self.compiled.patterns),
        }
    }

    /// The earliest offset at or after `from` where the rest of `hay` is a proper prefix of a
    /// pattern (`hay.len()` when there is none).
    fn tail(&self, hay: &[u8], from: usize) -> usize {
        let longest = self
            .compiled
            .patterns
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let start = from.max(hay.len().saturating_sub(longest.saturating_sub(1)));
        (start..hay.len())
            .find(|&i| {
                let rest = &hay[i..];
                let c = &self.compiled;
                c.first[usize::from(rest[0])]
                    && (rest.len() < 2
                        || c.pairs[256 * usize::from(rest[0]) + usize::from(rest[1])])
                    && self
                        .compiled
                        .patterns
                        .iter()
                        .any(|p| p.len() > rest.len() && p.starts_with(rest))
            })
            .unwrap_or(hay.len())
    }
}

/// The automaton's job done by hand, should it fail to build: at each offset, the longest
/// pattern that starts there.
fn plain_matches(hay: &[u8], patterns: &[Vec<u8>]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < hay.len() {
        let longest = patterns
            .iter()
            .filter(|p| hay[i..].starts_with(p))
            .map(Vec::len)
            .max();
        match longest {
            Some(len) => {
                out.push(i..i + len);
                i += len;
            }
            None => i += 1,
        }
    }
    out
}
