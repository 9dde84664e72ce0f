//! Scrubbing: removes secrets from a stream of bytes, also where one is split across chunks.
//! egress runs every response from a route's upstream through one, so an upstream that echoes
//! the request cannot hand the real token to the guest.
//!
//! This module owns the matching of a response against the route's secrets and the forms
//! they may travel in ([`forms`]: as is, percent-encoded, JSON-escaped, inside base64), each
//! replaced with [`MASK`]. One Aho-Corasick automaton (leftmost-longest) finds them all.
//!
//! What is held back: only bytes that could still begin a form — the earliest tail of what
//! has arrived that is a proper prefix of some form. So ordinary bytes pass at once, no prefix
//! of a secret is ever emitted that later bytes would complete, and at most the longest
//! form's length minus one byte waits: the secret's length minus one for the secret itself,
//! about 4/3 of it for its base64 forms. [`Scrubber::finish`] emits what is held (it cannot
//! become a secret any more).

mod forms;
#[cfg(test)]
mod tests;

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
        for p in &patterns {
            first[usize::from(p[0])] = true;
        }
        std::sync::Arc::new(Compiled {
            patterns,
            ac,
            first,
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
        let mut out = Vec::with_capacity(hay.len());
        let mut done = 0;
        let mut keep = if last { hay.len() } else { self.tail(&hay, 0) };
        for m in self.matches(&hay) {
            if !last && m.start >= keep {
                break;
            }
            out.extend_from_slice(&hay[done..m.start]);
            out.extend_from_slice(MASK);
            done = m.end;
            if !last && keep < done {
                keep = self.tail(&hay, done);
            }
        }
        let keep = keep.max(done);
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
                self.compiled.first[usize::from(rest[0])]
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
