//! The compiled rules and the search: one Aho-Corasick pass over the (decoded) text finds
//! every keyword in any ASCII case; each hit runs only its own rules, each over a region no
//! longer than its longest match around the hit. A recipe rule (no keywords) runs its regex
//! over the whole text.
//!
//! A search accepts only matches that end inside a given range of the haystack; the body
//! scanner ([`super::BodyScanner`]) uses that to scan an overlap between chunks without
//! reporting a match twice, and to leave a match that reaches the end of what has arrived for
//! the next chunk.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use anyhow::{Context, Result, bail};
use regex::bytes::Regex;

use super::catalogue::{ANY, Check, SPECS};
use super::field::{self, FIELD_KEYWORDS, FIELD_REACH, URL_KEYWORDS, URL_REACH};
use super::heuristics::signed_url_exempt;
use crate::daemons::pipelock::DlpRule;

/// The rules written as code, which look at where a value is rather than at its format.
const GENERIC_RULES: [&str; 3] = ["credential-field", "authorization-header", "url-password"];

enum Matcher {
    Regex {
        re: Regex,
        check: Check,
        group: bool,
    },
    Field,
    UrlPassword,
}

struct Rule {
    id: String,
    matcher: Matcher,
    /// The longest match, in bytes (recipe rules without a bound: the scanner's window).
    reach: usize,
    /// How far before its keyword a match may start.
    lead: usize,
}

struct Keyword {
    text: Vec<u8>,
    exact: bool,
    rules: Vec<usize>,
}

/// A match: its rule, where the secret lies in the haystack, and how many of its first bytes
/// are the rule's own keyword (a fixed prefix such as `ghp_`, not secret; 0 when the keyword
/// is elsewhere, e.g. a field's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hit<'e> {
    pub id: &'e str,
    pub span: Range<usize>,
    pub keep: usize,
}

/// Matches ending in `(after, upto]` are reported; `url`: the haystack is a request target,
/// where a signature scheme's own parameters are no finding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accept {
    pub after: usize,
    pub upto: usize,
    pub url: bool,
}

impl Accept {
    fn takes(self, end: usize) -> bool {
        end > self.after && end <= self.upto
    }
}

pub(super) struct Engine {
    ac: AhoCorasick,
    keywords: Vec<Keyword>,
    rules: Vec<Rule>,
    /// Recipe rules: indexes into `rules`, run over the whole text.
    unkeyed: Vec<usize>,
    allow: Vec<Vec<u8>>,
    /// `(rule, value)`: a finding of that rule whose value is exactly that (a person's grant).
    granted: Vec<(String, Vec<u8>)>,
    /// Whether a signed URL's credentials are exempt (not when redacting a log line).
    exempt_signed: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "rules",
                &self.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            )
            .field("allow", &self.allow.len())
            .finish()
    }
}

/// The longest match of `pattern`, when it has one.
fn max_len(pattern: &str) -> Option<usize> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    hir.properties().maximum_len()
}

impl Engine {
    /// Compiles the catalogue, the recipe's `rules` and its `allow` values (plus `always`,
    /// values never flagged whatever the recipe says). Recipe matches longer than `window`
    /// may be missed across chunk boundaries.
    pub(super) fn new(
        recipe: &[DlpRule],
        allow: &[String],
        always: &[&str],
        window: usize,
    ) -> Result<Engine> {
        let mut b = Builder::default();
        for spec in SPECS {
            let pattern = format!("(?-u){}", spec.pattern);
            let re =
                Regex::new(&pattern).with_context(|| format!("built-in DLP rule {}", spec.id))?;
            let Some(reach) = max_len(&pattern) else {
                bail!("built-in DLP rule {} has no longest match", spec.id);
            };
            let group = re.capture_names().any(|n| n == Some("secret"));
            let lead = if spec.lead == ANY { reach } else { spec.lead };
            let matcher = Matcher::Regex {
                re,
                check: spec.check,
                group,
            };
            b.add(spec.id, matcher, reach, lead, spec.keywords, spec.exact);
        }
        b.add(
            "credential-field",
            Matcher::Field,
            FIELD_REACH,
            FIELD_REACH,
            FIELD_KEYWORDS,
            false,
        );
        b.add(
            "url-password",
            Matcher::UrlPassword,
            URL_REACH,
            URL_REACH,
            URL_KEYWORDS,
            false,
        );
        for r in recipe {
            let re = Regex::new(&r.regex).with_context(|| format!("DLP rule {}", r.id))?;
            let group = re.capture_names().any(|n| n == Some("secret"));
            let reach = max_len(&r.regex).unwrap_or(window).min(window);
            let matcher = Matcher::Regex {
                re,
                check: Check::Shape,
                group,
            };
            b.unkeyed.push(b.rules.len());
            b.rules.push(Rule {
                id: r.id.clone(),
                matcher,
                reach,
                lead: reach,
            });
        }
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(b.keywords.iter().map(|k| &k.text))
            .context("DLP keywords")?;
        let mut allow: Vec<Vec<u8>> = allow.iter().map(|a| a.as_bytes().to_vec()).collect();
        allow.extend(always.iter().map(|a| a.as_bytes().to_vec()));
        allow.retain(|a| !a.is_empty());
        Ok(Engine {
            ac,
            keywords: b.keywords,
            rules: b.rules,
            unkeyed: b.unkeyed,
            allow,
            granted: Vec::new(),
            exempt_signed: true,
        })
    }

    /// Lets through a finding of `rule` whose value is exactly `value`, for each pair.
    pub(super) fn grant(mut self, grants: &[(String, Vec<u8>)]) -> Engine {
        self.granted = grants.to_vec();
        self
    }

    /// The same rules with no exemption at all (no allowed value, no signed URL): what a
    /// log line is redacted with.
    pub(super) fn strict(mut self) -> Engine {
        self.allow.clear();
        self.granted.clear();
        self.exempt_signed = false;
        self
    }

    /// Every rule id, built-in then the recipe's (an id may be listed twice).
    pub(super) fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// A secret in `hay` whose match ends where `accept` takes it: its rule id. A rule for a
    /// format (or the recipe's) is named before the generic field and URL rules, so a key in
    /// an `api_key` field is reported as the key it is.
    pub(super) fn find(&self, hay: &[u8], accept: Accept) -> Option<&str> {
        self.find_hit(hay, accept).map(|h| h.id)
    }

    /// [`Engine::find`], with where the secret lies.
    pub(super) fn find_hit(&self, hay: &[u8], accept: Accept) -> Option<Hit<'_>> {
        let mut generic = None;
        for hit in self.ac.find_overlapping_iter(hay) {
            let kw = &self.keywords[hit.pattern().as_usize()];
            if kw.exact && hay[hit.range()] != kw.text[..] {
                continue;
            }
            for &r in &kw.rules {
                let rule = &self.rules[r];
                let is_generic = !matches!(rule.matcher, Matcher::Regex { .. });
                if hit.start() + rule.reach <= accept.after || (is_generic && generic.is_some()) {
                    continue;
                }
                match self.at_hit(rule, hay, hit.range(), accept) {
                    Some(h) if is_generic => generic = Some(h),
                    Some(h) => return Some(h),
                    None => {}
                }
            }
        }
        let recipe = self.unkeyed.iter().find_map(|&r| {
            let rule = &self.rules[r];
            let from = accept.after.saturating_sub(rule.reach);
            self.regex_in(rule, hay, from, hay.len(), None, accept)
        });
        recipe.or(generic)
    }

    /// Runs `rule` for the keyword at `hit`.
    fn at_hit<'e>(
        &'e self,
        rule: &'e Rule,
        hay: &[u8],
        hit: Range<usize>,
        accept: Accept,
    ) -> Option<Hit<'e>> {
        let found = match rule.matcher {
            Matcher::Regex { .. } => {
                let lo = hit.start.saturating_sub(rule.lead);
                let hi = (hit.start + rule.reach + 1).min(hay.len());
                return self.regex_in(rule, hay, lo, hi, Some(hit), accept);
            }
            Matcher::Field => field::field(hay, hit)?,
            Matcher::UrlPassword => field::url_password(hay, hit)?,
        };
        let granted =
            accept.url && self.exempt_signed && signed_url_exempt(hay, found.start, found.id);
        let passes = self.allowed(&found.secret) || self.is_granted(found.id, &found.secret);
        (accept.takes(found.end) && !granted && !passes).then_some(Hit {
            id: found.id,
            span: found.start..found.end,
            keep: 0,
        })
    }

    /// Runs `rule`'s regex over `hay[lo..hi]` (what precedes `lo` still counts for `\b`). With
    /// a keyword `hit`, only matches that hold it count.
    fn regex_in<'e>(
        &'e self,
        rule: &'e Rule,
        hay: &[u8],
        lo: usize,
        hi: usize,
        hit: Option<Range<usize>>,
        accept: Accept,
    ) -> Option<Hit<'e>> {
        let Matcher::Regex { re, check, group } = &rule.matcher else {
            return None;
        };
        // The whole text for the signed-URL check, which reads the query past the match.
        let full = hay;
        let hay = &hay[..hi];
        let mut at = lo;
        while at <= hay.len() {
            let m = re.find_at(hay, at)?;
            if hit.as_ref().is_some_and(|h| m.start() > h.start) {
                return None;
            }
            let holds_hit = hit.as_ref().is_none_or(|h| m.end() >= h.end);
            if holds_hit && accept.takes(m.end()) {
                let span = if *group {
                    re.captures_at(hay, m.start())
                        .and_then(|c| c.name("secret"))
                        .map_or(m.range(), |s| s.range())
                } else {
                    m.range()
                };
                let granted = accept.url
                    && self.exempt_signed
                    && signed_url_exempt(full, span.start, &rule.id);
                let secret = &hay[span.clone()];
                let passes = self.allowed(secret) || self.is_granted(&rule.id, secret);
                if check.passes(secret) && !granted && !passes {
                    let keep = match &hit {
                        Some(h) if h.start == span.start && h.end <= span.end => h.len(),
                        _ => 0,
                    };
                    return Some(Hit {
                        id: &rule.id,
                        span,
                        keep,
                    });
                }
            }
            at = if m.end() > m.start() {
                m.end()
            } else {
                m.end() + 1
            };
        }
        None
    }

    /// A person granted exactly this finding: this rule, this value. The generic rules (a
    /// field, an `Authorization` header, a URL's password) may flag the very value a format
    /// rule flagged; the grant covers them for that exact value too.
    fn is_granted(&self, rule: &str, secret: &[u8]) -> bool {
        self.granted
            .iter()
            .any(|(r, v)| v == secret && (r == rule || GENERIC_RULES.contains(&rule)))
    }

    /// A match equal to, or contained in, an allowed value is not a finding.
    fn allowed(&self, secret: &[u8]) -> bool {
        secret.is_empty()
            || self
                .allow
                .iter()
                .any(|a| memchr::memmem::find(a, secret).is_some())
    }
}

#[derive(Default)]
struct Builder {
    keywords: Vec<Keyword>,
    rules: Vec<Rule>,
    unkeyed: Vec<usize>,
}

impl Builder {
    fn add(
        &mut self,
        id: &str,
        matcher: Matcher,
        reach: usize,
        lead: usize,
        keywords: &[&str],
        exact: bool,
    ) {
        let r = self.rules.len();
        self.rules.push(Rule {
            id: id.to_string(),
            matcher,
            reach,
            lead,
        });
        for text in keywords {
            let text = text.as_bytes();
            match self
                .keywords
                .iter_mut()
                .find(|k| k.text.eq_ignore_ascii_case(text))
            {
                Some(k) if k.exact == exact && k.text == text => k.rules.push(r),
                _ => self.keywords.push(Keyword {
                    text: text.to_vec(),
                    exact,
                    rules: vec![r],
                }),
            }
        }
    }
}
