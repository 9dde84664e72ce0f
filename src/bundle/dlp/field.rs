//! The rules written as code rather than one regex:
//!
//! - `credential-field` / `authorization-header`: a value assigned to a credential-looking
//!   name — a JSON key, a query or form field, a header, a `KEY=value` line, a YAML or TOML
//!   key, an XML element, a `--flag value` — when the value looks generated
//!   ([`super::heuristics::looks_random`]). The name is split into words (`_ - .` and case
//!   changes: `AWS_SECRET_ACCESS_KEY`, `x-api-key`, `clientSecret`); its last credential word
//!   (`password passwd passphrase pwd pass secret token auth credential(s) creds apikey`, or
//!   `key` after a word such as `api access secret private client signing…` or a vendor's
//!   name such as `mailgun datadog algolia…`) may be followed
//!   only by words like `value` or `base64`, and must not follow a word that makes it a
//!   non-secret (`page_token`, `csrf_token`, `max_tokens`…). So `token_type`, `secret_name`,
//!   `password_hash`, `api_key_id` and `tokenizer` are not credential fields. An
//!   `Authorization: Basic` value is decoded and its password tested; `Bearer`, `Token` and
//!   `Basic` schemes are skipped before the value.
//! - `url-password`: `scheme://user:password@host` with a generated-looking password.

use std::borrow::Cow;
use std::ops::Range;

use super::heuristics::{MAX_VALUE, decode_base64, looks_random};

/// Keywords that start a credential-field check (any ASCII case).
pub(super) const FIELD_KEYWORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "creds",
];
/// The bytes past its keyword a credential field may reach: the rest of its name, the
/// assignment, a scheme word and the value.
pub(super) const FIELD_REACH: usize = NAME_MAX + 32 + MAX_VALUE;

pub(super) const URL_KEYWORDS: &[&str] = &["://"];
pub(super) const URL_REACH: usize = USERINFO_MAX + 8;

const NAME_MAX: usize = 64;
const USERINFO_MAX: usize = 256;
const MIN_PASSWORD: usize = 12;
const MIN_SECRET: usize = 16;
const MIN_URL_PASSWORD: usize = 8;

/// A secret a code rule found: its rule, the secret (what allowed values are compared with)
/// and where its value starts and the match ends in the haystack.
#[derive(Debug)]
pub(super) struct Found<'h> {
    pub id: &'static str,
    pub secret: Cow<'h, [u8]>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Password,
    Secret,
    Authorization,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The credential field whose name holds the keyword at `hit`, if its value is a secret.
pub(super) fn field(hay: &[u8], hit: Range<usize>) -> Option<Found<'_>> {
    let mut ns = hit.start;
    while ns > 0 && is_name_byte(hay[ns - 1]) && hit.start - ns < NAME_MAX {
        ns -= 1;
    }
    let mut ne = hit.end;
    while ne < hay.len() && is_name_byte(hay[ne]) && ne - hit.end < NAME_MAX {
        ne += 1;
    }
    if (ns > 0 && is_name_byte(hay[ns - 1])) || hay.get(ne).is_some_and(|b| is_name_byte(*b)) {
        return None;
    }
    let name = &hay[ns..ne];
    let kind = classify(name)?;
    let flag = name.starts_with(b"-");
    let xml = ns > 0 && hay[ns - 1] == b'<';
    let (mut at, mut quote) = assignment(hay, ne, flag, xml)?;
    if quote.is_none()
        && let Some(after) = typed(hay, at)
    {
        // `password: &str = "…"`: the type is not the value; what follows `=` is
        (at, quote) = after;
    }
    let basic = scheme(hay, &mut at);
    let end = value_end(hay, at, quote)?;
    let value = &hay[at..end];
    let id = if kind == Kind::Authorization {
        "authorization-header"
    } else {
        "credential-field"
    };
    if basic && let Some(password) = basic_password(value) {
        return looks_random(&password, MIN_URL_PASSWORD).then_some(Found {
            id,
            secret: Cow::Owned(password),
            start: at,
            end,
        });
    }
    let min = if kind == Kind::Password {
        MIN_PASSWORD
    } else {
        MIN_SECRET
    };
    looks_random(value, min).then_some(Found {
        id,
        secret: Cow::Borrowed(value),
        start: at,
        end,
    })
}

/// The password of a `user:password` in base64 (HTTP Basic).
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    let decoded = decode_base64(value)?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Skips `=`, `:`, `=>`, `:=` (or `>` after `<name`, or blanks after `--name`) with the
/// quotes and blanks around; returns where the value starts and its opening quote.
fn assignment(hay: &[u8], mut i: usize, flag: bool, xml: bool) -> Option<(usize, Option<u8>)> {
    i += quote_at(hay, i).map_or(0, |(len, _)| len);
    let name_end = i;
    i = skip_blanks(hay, i);
    let op = match (hay.get(i), hay.get(i + 1)) {
        (Some(b':'), Some(b':')) => return None,
        (Some(b':'), Some(b'=')) | (Some(b'='), Some(b'>' | b'=')) => 2,
        (Some(b'=' | b':'), _) => 1,
        (Some(b'>'), _) if xml => 1,
        _ if flag && i > name_end => 0,
        _ => return None,
    };
    i = skip_blanks(hay, i + op);
    match quote_at(hay, i) {
        Some((len, q)) => Some((i + len, Some(q))),
        None => Some((i, None)),
    }
}

/// A declaration's type at `at` (`name: &'static str = value`, `name: Option<String> = …`):
/// type bytes, blanks, then `=` (base64 padding has no blank before it). Where the value after
/// `=` starts, and its quote.
fn typed(hay: &[u8], at: usize) -> Option<(usize, Option<u8>)> {
    let is_type_byte = |b: u8| b.is_ascii_alphanumeric() || b"_&'<>:[]*. ".contains(&b);
    let mut i = at;
    while i < hay.len() && i - at < 48 && is_type_byte(hay[i]) {
        i += 1;
    }
    let typed = i > at + 1 && matches!(hay[i - 1], b' ' | b'\t') && hay.get(i) == Some(&b'=');
    if !typed || matches!(hay.get(i + 1), Some(b'=' | b'>')) {
        return None;
    }
    let i = skip_blanks(hay, i + 1);
    match quote_at(hay, i) {
        Some((len, q)) => Some((i + len, Some(q))),
        None => Some((i, None)),
    }
}

/// A quote at `i`, possibly escaped (`\"`): its length and the quote byte.
fn quote_at(hay: &[u8], i: usize) -> Option<(usize, u8)> {
    match (hay.get(i), hay.get(i + 1)) {
        (Some(b'\\'), Some(&q @ (b'"' | b'\''))) => Some((2, q)),
        (Some(&q @ (b'"' | b'\'' | b'`')), _) => Some((1, q)),
        _ => None,
    }
}

fn skip_blanks(hay: &[u8], mut i: usize) -> usize {
    let start = i;
    while i < hay.len() && i - start < 4 && matches!(hay[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// Skips an authorization scheme word (`Bearer `, `Token `, `Basic `); true for Basic.
fn scheme(hay: &[u8], at: &mut usize) -> bool {
    let rest = &hay[*at..];
    for (word, basic) in [
        (&b"bearer "[..], false),
        (b"token ", false),
        (b"basic ", true),
    ] {
        if rest.len() > word.len() && rest[..word.len()].eq_ignore_ascii_case(word) {
            *at += word.len();
            return basic;
        }
    }
    false
}

/// Where the value starting at `start` ends; `None` when it is not a single token (a quoted
/// value must close right after it: `"a sentence"` is no credential) or is too long.
fn value_end(hay: &[u8], start: usize, quote: Option<u8>) -> Option<usize> {
    let mut end = start;
    while end < hay.len() && end - start <= MAX_VALUE && is_value_byte(hay[end], quote) {
        end += 1;
    }
    if end - start > MAX_VALUE || end == start {
        return None;
    }
    match quote {
        Some(q) if hay.get(end) != Some(&q) && quote_at(hay, end).map(|(_, b)| b) != Some(q) => {
            None
        }
        _ => Some(end),
    }
}

fn is_value_byte(b: u8, quote: Option<u8>) -> bool {
    (0x21..=0x7e).contains(&b)
        && Some(b) != quote
        && !matches!(
            b,
            b'"' | b'\''
                | b'`'
                | b'&'
                | b','
                | b';'
                | b'<'
                | b'>'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'\\'
                | b'|'
        )
}

/// Up to 12 words of a name, split at `_ - .` and case and digit changes.
fn words(name: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = None;
    for i in 0..=name.len() {
        let b = name.get(i).copied();
        let boundary = match (start, b) {
            (_, None) => true,
            (_, Some(c)) if !c.is_ascii_alphanumeric() => true,
            (Some(s), Some(c)) if i > s => {
                let p = name[i - 1];
                let next_lower = name.get(i + 1).is_some_and(u8::is_ascii_lowercase);
                (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                    || (p.is_ascii_uppercase() && c.is_ascii_uppercase() && next_lower)
                    || (p.is_ascii_digit() != c.is_ascii_digit())
            }
            _ => false,
        };
        if boundary && let Some(s) = start.take() {
            out.push(&name[s..i]);
        }
        if b.is_some_and(|c| c.is_ascii_alphanumeric()) && start.is_none() {
            start = Some(i);
        }
    }
    out
}

const BENIGN: &[&str] = &[
    "page",
    "next",
    "prev",
    "previous",
    "continuation",
    "sync",
    "cursor",
    "csrf",
    "xsrf",
    "idempotency",
    "request",
    "cancel",
    "cancellation",
    "resume",
    "pagination",
    "max",
    "min",
    "num",
    "total",
    "input",
    "output",
    "completion",
    "prompt",
    "cache",
    "count",
    "public",
];
/// Words that make a following `key` a credential: what the key is for, or whose it is.
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "secret",
    "private",
    "client",
    "auth",
    "signing",
    "sign",
    "encryption",
    "master",
    "account",
    "app",
    "service",
    "license",
    "subscription",
    "primary",
    "secondary",
    "storage",
    "shared",
    "consumer",
    "webhook",
    "deploy",
    "session",
    "admin",
    "root",
    "jwt",
    "hmac",
    "sas",
    "ingest",
    "write",
    "server",
    "management",
    "developer",
    "live",
    "prod",
    // vendors whose keys have no recognizable shape of their own
    "aws",
    "azure",
    "gcp",
    "google",
    "firebase",
    "stripe",
    "openai",
    "anthropic",
    "github",
    "gitlab",
    "slack",
    "sendgrid",
    "mailgun",
    "mailchimp",
    "twilio",
    "algolia",
    "pusher",
    "sentry",
    "datadog",
    "dd",
    "newrelic",
    "segment",
    "mixpanel",
    "amplitude",
    "cloudflare",
    "vercel",
    "netlify",
    "heroku",
    "openrouter",
    "groq",
    "mistral",
    "cohere",
    "gemini",
    "deepseek",
    "perplexity",
    "together",
    "fireworks",
    "replicate",
    "pinecone",
    "supabase",
    "discord",
    "telegram",
    "shopify",
    "paypal",
    "braintree",
    "square",
    "plaid",
    "postmark",
    "resend",
    "mapbox",
    "elevenlabs",
    "notion",
    "airtable",
    "okta",
    "auth0",
    "clerk",
];
const NEUTRAL: &[&str] = &[
    "value", "val", "str", "string", "b64", "base64", "raw", "plain", "hex", "data", "enc",
    "encoded", "base",
];
const COMPOUNDS: &[(&str, Kind)] = &[
    ("password", Kind::Password),
    ("passwd", Kind::Password),
    ("passphrase", Kind::Password),
    ("token", Kind::Secret),
    ("secret", Kind::Secret),
    ("apikey", Kind::Secret),
    ("accesskey", Kind::Secret),
    ("privatekey", Kind::Secret),
    ("secretkey", Kind::Secret),
    ("credential", Kind::Secret),
    ("credentials", Kind::Secret),
];

fn is_one_of(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

/// What kind of credential the name `words[j]` makes, if any.
fn credential_word(words: &[&[u8]], j: usize) -> Option<Kind> {
    let w = words[j];
    if is_one_of(w, &["password", "passwd", "passphrase", "pwd", "pass"]) {
        return Some(Kind::Password);
    }
    if is_one_of(
        w,
        &[
            "secret",
            "token",
            "apikey",
            "credential",
            "credentials",
            "creds",
            "auth",
        ],
    ) {
        return Some(Kind::Secret);
    }
    if w.eq_ignore_ascii_case(b"key") {
        return (j > 0 && is_one_of(words[j - 1], KEY_QUALIFIERS)).then_some(Kind::Secret);
    }
    let lower = w.to_ascii_lowercase();
    COMPOUNDS.iter().find_map(|(suffix, kind)| {
        let prefix = lower.strip_suffix(suffix.as_bytes())?;
        (!prefix.is_empty() && !is_one_of(prefix, BENIGN)).then_some(*kind)
    })
}

/// Whether `name` is a credential-looking field name, and of which kind.
fn classify(name: &[u8]) -> Option<Kind> {
    let words = words(name);
    if words.is_empty() || words.len() > 12 {
        return None;
    }
    let last = words[words.len() - 1];
    if last.eq_ignore_ascii_case(b"authorization") {
        return Some(Kind::Authorization);
    }
    let (j, kind) = (0..words.len())
        .rev()
        .find_map(|j| Some((j, credential_word(&words, j)?)))?;
    let tail_neutral = words[j + 1..]
        .iter()
        .all(|w| is_one_of(w, NEUTRAL) || w.iter().all(u8::is_ascii_digit));
    let benign = j > 0 && is_one_of(words[j - 1], BENIGN);
    (tail_neutral && !benign).then_some(kind)
}

/// `scheme://user:password@host` at the `://` of `hit`, if the password looks generated.
pub(super) fn url_password(hay: &[u8], hit: Range<usize>) -> Option<Found<'_>> {
    let start = hit.end;
    let mut i = start;
    while i < hay.len() && hay[i] != b'@' {
        let b = hay[i];
        if i - start >= USERINFO_MAX
            || !(0x21..=0x7e).contains(&b)
            || matches!(
                b,
                b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\'
            )
        {
            return None;
        }
        i += 1;
    }
    let host_follows = hay
        .get(i + 1)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'[');
    if i >= hay.len() || !host_follows {
        return None;
    }
    let userinfo = &hay[start..i];
    let colon = userinfo.iter().position(|b| *b == b':')?;
    let password = &userinfo[colon + 1..];
    looks_random(password, MIN_URL_PASSWORD).then_some(Found {
        id: "url-password",
        secret: Cow::Borrowed(password),
        start: start + colon + 1,
        end: i + 1,
    })
}
