//! Is this value a machine-made secret? The tests a value in a credential-looking field (and a
//! URL's password) must pass before it is flagged: length, Shannon entropy, a mix of letters
//! and digits, and none of the shapes ordinary traffic puts in such fields — UUIDs, digests
//! written with their algorithm, version strings, URLs and paths, template placeholders,
//! identifiers made of words, runs like `123456`, and base64 of plain text.
//!
//! These heuristics aim at generated credentials (API keys, tokens, random passwords). A
//! password a person chose from words passes for ordinary text, by design.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

/// The longest value considered: longer runs are blobs (images, documents), not credentials.
pub(super) const MAX_VALUE: usize = 512;

/// Shannon entropy of `bytes`, in bits per byte.
pub(super) fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The entropy a random value of `len` bytes clears with near certainty: a random string cannot
/// have more than log2(len) bits per byte, so short values get a lower floor; hex has at most
/// 4 bits per byte, so its floor is lower still.
pub(super) fn entropy_floor(len: usize, hex: bool) -> f64 {
    let by_len = 0.75 * (len.max(2) as f64).log2();
    by_len.min(if hex { 2.9 } else { 3.2 })
}

/// Whether `v` looks like a generated secret of at least `min_len` bytes.
pub(super) fn looks_random(v: &[u8], min_len: usize) -> bool {
    if v.len() < min_len || v.len() > MAX_VALUE || !v.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return false;
    }
    let has_letter = v.iter().any(u8::is_ascii_alphabetic);
    let has_digit = v.iter().any(u8::is_ascii_digit);
    let mixed_case = v.iter().any(u8::is_ascii_lowercase) && v.iter().any(u8::is_ascii_uppercase);
    if !has_letter || !(has_digit || mixed_case) {
        return false;
    }
    let hex = v.iter().all(u8::is_ascii_hexdigit);
    if entropy(v) < entropy_floor(v.len(), hex) {
        return false;
    }
    !(is_placeholder(v)
        || is_uuid(v)
        || is_version(v)
        || is_number(v)
        || is_url_or_path(v)
        || is_code_path(v)
        || has_digest_prefix(v)
        || has_run(v)
        || (!hex && is_wordy(v))
        || is_base64_of_text(v))
}

/// Template variables and documentation stand-ins: `${TOKEN}`, `{{ secret }}`, `<your-key>`,
/// `xxxx`, `example`, `placeholder` (egress's own placeholder among them)…
pub(super) fn is_placeholder(v: &[u8]) -> bool {
    const MARKS: &[&[u8]] = &[
        b"${",
        b"{{",
        b"$(",
        b"<",
        b">",
        b"%s",
        b"****",
        b"xxxx",
        b"example",
        b"placeholder",
        b"dummy",
        b"sample",
        b"changeme",
        b"redacted",
        b"your",
        b"fake",
        b"mock",
    ];
    let lower = v.to_ascii_lowercase();
    MARKS
        .iter()
        .any(|m| memchr::memmem::find(&lower, m).is_some())
}

/// `8-4-4-4-12` hex digits.
pub(super) fn is_uuid(v: &[u8]) -> bool {
    v.len() == 36
        && v.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// `1.2.3`, `v10.4.1-beta.2+build.5`.
pub(super) fn is_version(v: &[u8]) -> bool {
    let v = v.strip_prefix(b"v").unwrap_or(v);
    let core_end = v
        .iter()
        .position(|b| *b == b'-' || *b == b'+')
        .unwrap_or(v.len());
    let core = &v[..core_end];
    let parts: Vec<&[u8]> = core.split(|b| *b == b'.').collect();
    parts.len() >= 2
        && parts.len() <= 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

/// A number as code writes it: `-2141913080i32`, `0x8004170B_u32`, `1_000_000usize`.
pub(super) fn is_number(v: &[u8]) -> bool {
    let v = v.strip_prefix(b"-").unwrap_or(v);
    let (digits, hex) = match v.strip_prefix(b"0x").or_else(|| v.strip_prefix(b"0X")) {
        Some(rest) => (rest, true),
        None => (v, false),
    };
    let end = digits
        .iter()
        .position(|b| {
            !(*b == b'_'
                || if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                })
        })
        .unwrap_or(digits.len());
    let suffix = digits[end..].strip_prefix(b"_").unwrap_or(&digits[end..]);
    const SUFFIXES: &[&str] = &[
        "", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
        "f32", "f64", "l", "ul", "ull", "ll", "u", "L", "UL", "ULL", "LL", "U", "n",
    ];
    end > 0 && SUFFIXES.iter().any(|s| suffix == s.as_bytes())
}

/// URLs, resource names and file paths: `://`, `www.`, `arn:`, `urn:`, `./`, `~/`, or a
/// leading `/` before two or more segments of path bytes, one a word (base64 may start with
/// `/` too, seldom so).
pub(super) fn is_url_or_path(v: &[u8]) -> bool {
    let url =
        memchr::memmem::find(v, b"://").is_some() || memchr::memmem::find(v, b"www.").is_some();
    if url || v.starts_with(b"arn:") || v.starts_with(b"urn:") {
        return true;
    }
    if v.starts_with(b"./") || v.starts_with(b"../") || v.starts_with(b"~/") {
        return true;
    }
    if !v.starts_with(b"/") {
        return false;
    }
    let segments: Vec<&[u8]> = v.split(|b| *b == b'/').filter(|s| !s.is_empty()).collect();
    let path_bytes = |s: &&[u8]| {
        s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    };
    segments.len() >= 2 && segments.iter().all(path_bytes) && segments.iter().any(|s| is_wordy(s))
}

/// Code, not a value: a path with `::` (`core::fmt::Debug`), a dotted expression of
/// identifiers with a word in it (`settings.API_KEY_2024`, `process.env.TOKEN`), or one
/// `SCREAMING_SNAKE` or `snake_case` identifier (`PKERB_S4U2PROXY_CRED`, `jobserver_auth_2`).
pub(super) fn is_code_path(v: &[u8]) -> bool {
    if memchr::memmem::find(v, b"::").is_some() {
        return true;
    }
    let snake = |upper: bool| {
        v.contains(&b'_')
            && v.first().is_some_and(u8::is_ascii_alphabetic)
            && v.iter().all(|b| {
                *b == b'_'
                    || b.is_ascii_digit()
                    || if upper {
                        b.is_ascii_uppercase()
                    } else {
                        b.is_ascii_lowercase()
                    }
            })
    };
    if snake(true) || snake(false) {
        return true;
    }
    let parts: Vec<&[u8]> = v.split(|b| *b == b'.').collect();
    let identifier = |p: &&[u8]| {
        p.first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && p.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    parts.len() >= 2 && parts.iter().all(identifier) && parts.iter().any(|p| is_wordy(p))
}

/// A digest written with its algorithm (`sha256:…`, `sha512-…` as in lock files).
pub(super) fn has_digest_prefix(v: &[u8]) -> bool {
    let lower = v.to_ascii_lowercase();
    [
        &b"sha1"[..],
        b"sha256",
        b"sha384",
        b"sha512",
        b"md5",
        b"blake3",
    ]
    .iter()
    .any(|p| lower.starts_with(p) && matches!(lower.get(p.len()), Some(b':' | b'-' | b'=')))
}

/// Five or more equal bytes in a row, or an ascending or descending run of six
/// (`aaaaa`, `123456`, `abcdef`, `987654`): made by a person, not a generator.
pub(super) fn has_run(v: &[u8]) -> bool {
    let (mut same, mut up, mut down) = (1, 1, 1);
    for w in v.windows(2) {
        same = if w[1] == w[0] { same + 1 } else { 1 };
        up = if w[1] == w[0].wrapping_add(1) {
            up + 1
        } else {
            1
        };
        down = if w[1].wrapping_add(1) == w[0] {
            down + 1
        } else {
            1
        };
        if same >= 5 || up >= 6 || down >= 6 {
            return true;
        }
    }
    false
}

/// Made of words: half or more of the value's letters are in segments (split at non-letters
/// and case changes, `getUserToken` → `get`, `User`, `Token`) that read like words. Of random
/// strings of 16 to 64 characters, about one in 2,000 reads so.
pub(super) fn is_wordy(v: &[u8]) -> bool {
    let mut covered = 0;
    let mut start = 0;
    let letters = v.iter().filter(|b| b.is_ascii_alphabetic()).count();
    while start < v.len() {
        if !v[start].is_ascii_alphabetic() {
            start += 1;
            continue;
        }
        let end = segment_end(v, start);
        if reads_like_word(&v[start..end]) {
            covered += end - start;
        }
        start = end;
    }
    letters > 0 && covered * 2 >= letters
}

/// The end of the letter segment starting at `start`: at a non-letter, a lowercase-to-uppercase
/// change, or the last capital of a run followed by lowercase (`APIKey` → `API`, `Key`).
fn segment_end(v: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < v.len() && v[i].is_ascii_alphabetic() {
        let (prev, cur) = (v[i - 1], v[i]);
        if prev.is_ascii_lowercase() && cur.is_ascii_uppercase() {
            break;
        }
        let next_lower = v.get(i + 1).is_some_and(u8::is_ascii_lowercase);
        if prev.is_ascii_uppercase() && cur.is_ascii_uppercase() && next_lower {
            break;
        }
        i += 1;
    }
    i
}

/// Common letter pairs of English and of code identifiers (Norvig's counts over Google Books,
/// the first 280 or so, plus a few of Windows-style names: `lp`, `sz`, `dw`). Random letters
/// make such a pair about two times in five; words, four times in five.
const BIGRAMS: &str = "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec pr no ct us ac ot il tr ly nc et ut ss so rs un lo wa ge ie wh ee wi em ad ol rt po we na ul ni ts mo ow pa im mi ai sh ir su id os iv ia am fi ci vi pl ig tu ev ld ry mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od bo sp rd do uc bu ei ov by rm ep tt oc fa ef cu rn sc gi da yo cr cl du ga qu ue ff ba ey ls va um pp ua up lu go ht ru ug ds lt pi rc rr eg au ck ew mu br bi pt ak pu ui rg ib tl ny ki rk ys ob mm fu ph og ms ye ud mb ip ub oi rl gu dr hr cc tw ft wn nu af hu nn eo vo rv nf xp gn sm fl iz ok nl my gl aw ju oa eq sy sl ps jo lf nv je nk kn gs dy hy ze ks xt bj ym lp sz dw";

/// Three-letter words common in identifiers (`getApiKey`, `MAX_LEN`).
const SHORT_WORDS: &[&str] = &[
    "key", "api", "get", "set", "new", "old", "max", "min", "url", "uri", "use", "add", "sub",
    "the", "and", "for", "not", "all", "any", "has", "can", "end", "run", "app", "log", "err",
    "buf", "len", "str", "num", "val", "var", "ptr", "ref", "raw", "dir", "src", "dst", "tmp",
    "msg", "req", "res", "ctx", "cfg", "env", "out", "net", "sys", "usr", "bin", "lib", "pub",
    "mod", "def", "int", "obj", "arg", "row", "col", "tab", "map", "vec", "box", "dyn", "mut",
    "let", "pid", "uid", "gid", "day", "win", "web", "dev", "doc", "job", "ssl", "tls", "rsa",
];

const fn bigram_table() -> [[bool; 26]; 26] {
    let mut t = [[false; 26]; 26];
    let b = BIGRAMS.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        t[(b[i] - b'a') as usize][(b[i + 1] - b'a') as usize] = true;
        i += 3;
    }
    t
}

static COMMON: [[bool; 26]; 26] = bigram_table();

/// A common three-letter word, or four letters or more of which two thirds of the pairs are
/// common.
fn reads_like_word(seg: &[u8]) -> bool {
    if seg.len() == 3 {
        return SHORT_WORDS
            .iter()
            .any(|w| seg.eq_ignore_ascii_case(w.as_bytes()));
    }
    if seg.len() < 4 {
        return false;
    }
    let lower = |b: u8| (b.to_ascii_lowercase() - b'a') as usize;
    let common = seg
        .windows(2)
        .filter(|w| COMMON[lower(w[0])][lower(w[1])])
        .count();
    common * 3 >= (seg.len() - 1) * 2
}

/// Base64 (standard or URL-safe, padded or not) of printable text with spaces: an encoded
/// sentence, not a key. `user:password` (HTTP Basic) does not count as text.
pub(super) fn is_base64_of_text(v: &[u8]) -> bool {
    let Some(decoded) = decode_base64(v) else {
        return false;
    };
    let printable = decoded
        .iter()
        .filter(|b| (0x20..=0x7e).contains(*b) || b"\r\n\t".contains(b))
        .count();
    decoded.len() >= 8
        && printable * 10 >= decoded.len() * 9
        && decoded.contains(&b' ')
        && !decoded.contains(&b':')
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decodes standard or URL-safe base64, padded or not.
pub(super) fn decode_base64(v: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(v).or_else(|_| URL_SAFE.decode(v)).ok()
}

/// A signature scheme of URLs: the parameter whose presence makes a query signed, and the
/// scheme's own parameters, each with the rules that may flag it. A signed URL is a grant its
/// host's owner made to fetch that URL, expiring soon; clients are redirected to them.
struct Scheme {
    /// Host suffixes the scheme is honoured on (none: any host).
    hosts: &'static [&'static str],
    signature: &'static str,
    own: &'static [(&'static str, &'static [&'static str])],
}

const SCHEMES: &[Scheme] = &[
    // AWS Signature Version 4 in a query (S3 presigned URLs).
    Scheme {
        hosts: &[],
        signature: "x-amz-signature",
        own: &[
            (
                "x-amz-credential",
                &["aws-access-key-id", "credential-field"],
            ),
            ("x-amz-security-token", &["credential-field"]),
            ("x-amz-signature", &["credential-field"]),
        ],
    },
    // Google Cloud Storage V4 signed URLs.
    Scheme {
        hosts: &[],
        signature: "x-goog-signature",
        own: &[
            ("x-goog-credential", &["credential-field"]),
            ("x-goog-signature", &["credential-field"]),
        ],
    },
    // GitHub's release-asset redirects: an Azure SAS (`sig`) carrying GitHub's own `jwt`.
    Scheme {
        hosts: &[".githubusercontent.com"],
        signature: "sig",
        own: &[("jwt", &["jwt"]), ("sig", &["credential-field"])],
    },
];

/// Whether the match of `rule` starting at `at` is the whole value of one of a signature
/// scheme's own parameters, in the query of a URL that carries that scheme's signature
/// parameter. Only for the request target (the caller says so): never in a body or header.
/// The lowercased host of a URL `scheme://host[:port]/…` (empty for anything else).
fn url_host(url: &[u8]) -> Vec<u8> {
    let Some(i) = memchr::memmem::find(url, b"://") else {
        return Vec::new();
    };
    let rest = &url[i + 3..];
    let end = rest
        .iter()
        .position(|b| b"/?#:".contains(b))
        .unwrap_or(rest.len());
    rest[..end].to_ascii_lowercase()
}

pub(super) fn signed_url_exempt(hay: &[u8], at: usize, rule: &str) -> bool {
    if at == 0 || hay.get(at - 1) != Some(&b'=') {
        return false;
    }
    let stop = |b: &u8| b.is_ascii_whitespace() || b"\"'<>`#".contains(b);
    let Some(q) = hay[..at]
        .iter()
        .rposition(|b| *b == b'?' || stop(b))
        .filter(|i| hay[*i] == b'?')
    else {
        return false;
    };
    let end = hay[at..]
        .iter()
        .position(stop)
        .map_or(hay.len(), |i| at + i);
    let name_start = hay[q..at - 1]
        .iter()
        .rposition(|b| *b == b'&' || *b == b'?')
        .map_or(q, |i| q + i)
        + 1;
    let name = hay[name_start..at - 1].to_ascii_lowercase();
    let names: Vec<Vec<u8>> = hay[q + 1..end]
        .split(|b| *b == b'&')
        .map(|kv| {
            let k = kv.split(|b| *b == b'=').next().unwrap_or(kv);
            k.to_ascii_lowercase()
        })
        .collect();
    let host = url_host(hay);
    SCHEMES.iter().any(|s| {
        let on_host = s.hosts.is_empty() || s.hosts.iter().any(|h| host.ends_with(h.as_bytes()));
        on_host
            && names.iter().any(|n| n == s.signature.as_bytes())
            && s.own
                .iter()
                .any(|(p, rules)| p.as_bytes() == name && rules.contains(&rule))
    })
}
