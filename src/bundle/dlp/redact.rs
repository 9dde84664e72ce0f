//! Redaction of what the audit log keeps of a request target: every match of a DLP rule is
//! masked, whether or not the request was refused — allowed values, grants and the signed-URL
//! exemption let a request through, never a secret into the log.
//!
//! The text is decoded as DLP decodes it; when nothing matches, the caller logs what it has
//! unchanged. When something does, the decoded text is logged with each match replaced by its
//! rule's fixed prefix, if it starts with one (`ghp_`, `AKIA`, `eyJ`), then `…[redacted]`.
//! A base64 or hex run whose decoding holds a match (`/p/6768705f…`) is masked whole.

use std::sync::Arc;

use anyhow::Result;

use super::engine::{Accept, Engine};
use super::{MARGIN, WINDOW, decode, unwrap};
use crate::daemons::pipelock::Dlp;

/// What a redacted secret becomes, after its rule's prefix.
pub const REDACTED: &str = "…[redacted]";
/// The most matches masked in one text; past it, the whole rest is masked.
const MAX_MATCHES: usize = 64;

/// The rules compiled with no exemption, for log lines. Built whether DLP is on or off.
#[derive(Debug)]
pub struct Redactor {
    engine: Engine,
}

impl Redactor {
    /// The built-in rules and the recipe's (`dlp.rules`); `dlp.allow` plays no part.
    pub fn new(dlp: &Dlp) -> Result<Arc<Redactor>> {
        let engine = Engine::new(&dlp.rules, &[], &[], WINDOW - MARGIN)?.strict();
        Ok(Arc::new(Redactor { engine }))
    }

    /// A host with every match masked, read without case as DNS reads it (a key id written in
    /// lower case is masked too), lower-cased; `None` when nothing matches.
    pub fn redact_host(&self, host: &str) -> Option<String> {
        self.redact(host)
            .or_else(|| self.redact(&host.to_ascii_uppercase()))
            .map(|masked| masked.to_ascii_lowercase())
    }

    /// `text` with every match masked, and every base64 or hex run whose decoding holds one
    /// (as DLP opens runs: [`super::NESTED`] levels); `None` when nothing matches.
    pub fn redact(&self, text: &str) -> Option<String> {
        let direct = self.redact_matches(text);
        self.redact_runs(direct.as_deref().unwrap_or(text))
            .or(direct)
    }

    /// `text`, decoded, with each run masked whole whose decoding holds a match: a run of
    /// base64's characters, and the pieces of it between a target's separators (`/`, `=`: a
    /// path's segment, a query's value). `None` when there is none.
    fn redact_runs(&self, text: &str) -> Option<String> {
        let decoded = decode::decode_all(text.as_bytes());
        let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || b"+/-_=".contains(b);
        let mut masks: Vec<std::ops::Range<usize>> = Vec::new();
        let mut at = 0;
        while at < decoded.len() {
            let start = at
                + decoded[at..]
                    .iter()
                    .position(is_b64)
                    .unwrap_or(decoded.len() - at);
            let end = start + decoded[start..].iter().take_while(|b| is_b64(b)).count();
            at = end.max(start + 1);
            if end - start < unwrap::MIN_B64 {
                continue;
            }
            if super::find_in_runs(&self.engine, &decoded[start..end]).is_some() {
                masks.push(start..end);
                continue;
            }
            let mut piece = start;
            for part in decoded[start..end].split(|b| *b == b'/' || *b == b'=') {
                if part.len() >= unwrap::MIN_B64
                    && super::find_in_runs(&self.engine, part).is_some()
                {
                    masks.push(piece..piece + part.len());
                }
                piece += part.len() + 1;
            }
        }
        if masks.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(decoded.len());
        let mut at = 0;
        for m in masks {
            out.extend_from_slice(&decoded[at..m.start]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = m.end;
        }
        out.extend_from_slice(&decoded[at..]);
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// `text` with every match masked, or `None` when nothing matches.
    fn redact_matches(&self, text: &str) -> Option<String> {
        let mut hay = decode::decode_all(text.as_bytes()).into_owned();
        // Masked spans, in order of finding; each is blanked in `hay` so the next search
        // finds the next match.
        let mut spans: Vec<(std::ops::Range<usize>, usize)> = Vec::new();
        loop {
            let accept = Accept {
                after: 0,
                upto: hay.len(),
                url: false,
            };
            let Some(hit) = self.engine.find_hit(&hay, accept) else {
                break;
            };
            let span = hit.span.clone();
            if span.is_empty() || spans.len() == MAX_MATCHES {
                spans.push((span.start..hay.len(), 0));
                break;
            }
            spans.push((span.clone(), hit.keep.min(span.len())));
            // A byte no rule matches or begins with: each search finds a new match.
            hay[span].fill(0);
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|(s, _)| s.start);
        let original = decode::decode_all(text.as_bytes());
        let mut out = Vec::with_capacity(original.len());
        let mut at = 0;
        for (span, keep) in spans {
            if span.start < at {
                // Overlaps one masked already: mask what it adds.
                at = at.max(span.end);
                continue;
            }
            out.extend_from_slice(&original[at..span.start]);
            out.extend_from_slice(&original[span.start..span.start + keep]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = span.end;
        }
        out.extend_from_slice(&original[at.min(original.len())..]);
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}
