//! `.dockerignore`: its patterns, read and matched as the docker CLI does for the classic
//! builder (`moby/patternmatcher` and its `ignorefile` reader).
//!
//! Reading: a UTF-8 BOM is dropped; a line whose first character is `#` is a comment; each
//! other line is trimmed, a blank one skipped; a leading `!` makes an exception; the rest is
//! cleaned as Go's `filepath.Clean` cleans it (`./a/` → `a`, `a//b/../c` → `a/c`) and a leading
//! `/` dropped. Matching is on the cleaned relative path, `/`-separated: `*` and `?` stop at
//! `/`, `[...]` is a class (`^` negates), `\` escapes, `**` spans folders, and the last pattern
//! that matches decides. Patterns are turned into exact, prefix or suffix comparisons or a regex
//! exactly as patternmatcher does, quirks included (`**foo` is "ends with foo").
//!
//! Two deliberate differences, both for patterns docker itself mishandles: a class is
//! translated from `filepath.Match` syntax (docker pastes it into a Go regex, so `[*]` or
//! `[[:alpha:]]` mean something else there), and `\x` always means the character `x` (Go's
//! regex reads `\d` as a digit class and refuses `\q`). A pattern docker would refuse (`!`
//! alone, a lone trailing `\`, a malformed class) is refused here when it is read.

use regex::Regex;

/// The patterns of one `.dockerignore`, in file order.
#[derive(Debug, Default)]
pub(crate) struct Patterns {
    patterns: Vec<Pattern>,
    exceptions: bool,
}

#[derive(Debug)]
struct Pattern {
    /// The cleaned pattern, without its `!`.
    cleaned: String,
    exception: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Exact,
    /// Trailing `**`: the path starts with this.
    Prefix(String),
    /// Leading `**`: the path ends with this (or equals it less its leading `/`).
    Suffix(String),
    Regex(Regex),
}

/// A line docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPattern {
    /// 1-based line of `.dockerignore`.
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

impl Patterns {
    /// Reads the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Result<Patterns, BadPattern> {
        let mut out = Patterns::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.starts_with('#') {
                continue;
            }
            let Some(read) = read_line(raw) else { continue };
            let bad = |reason: String| BadPattern {
                line: i + 1,
                pattern: raw.trim().to_string(),
                reason,
            };
            // patternmatcher.New trims and cleans the line once more, then takes its `!`.
            let mut p = clean(read.trim());
            let exception = p.starts_with('!');
            if exception {
                if p.len() == 1 {
                    return Err(bad("an exception needs a pattern after the `!`".into()));
                }
                p.remove(0);
            }
            let kind = compile(&p).map_err(bad)?;
            out.exceptions |= exception;
            out.patterns.push(Pattern {
                cleaned: p,
                exception,
                kind,
            });
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` is excluded, given which patterns matched its folder (`None` for a path
    /// at the top of the context, or when unknown: then its folders are matched too). Also
    /// returns which patterns matched `path`, for its children. This is patternmatcher's
    /// `MatchesUsingParentResults`, which the CLI's walk uses, quirks included: a pattern
    /// skipped for the folder (because the result was already settled) counts as unmatched
    /// there, and is then tried on the child's own path only.
    pub fn matches(&self, path: &str, parent: Option<&[bool]>) -> (bool, Vec<bool>) {
        let mut excluded = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.and_then(|pm| pm.get(i).copied()).unwrap_or(false);
            if !m {
                if p.exception != excluded {
                    continue;
                }
                m = p.is_match(path)
                    || (parent.is_none() && ancestors(path).any(|a| p.is_match(a)));
            }
            info[i] = m;
            if m {
                excluded = !p.exception;
            }
        }
        (excluded, info)
    }

    /// Whether `path` is excluded (patternmatcher's `MatchesOrParentMatches`).
    #[cfg(test)]
    pub fn excludes(&self, path: &str) -> bool {
        self.matches(path, None).0
    }

    /// Whether the walk must go into the excluded folder `dir`: some exception's text starts
    /// with `dir/`. This is a text test, as docker's: `!**/keep` does not open `dir`.
    pub fn walk_into(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.exceptions
            && self
                .patterns
                .iter()
                .any(|p| p.exception && format!("{}/", p.cleaned).starts_with(&dir_slash))
    }
}

impl Pattern {
    fn is_match(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// `a/b/c` → `a`, `a/b` (the folders above a path, outermost first).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// One line as `ignorefile.ReadAll` returns it: trimmed, cleaned, without a leading `/`, its
/// `!` kept in front; `None` for a blank line.
fn read_line(raw: &str) -> Option<String> {
    let mut p = raw.trim();
    if p.is_empty() {
        return None;
    }
    let exception = p.starts_with('!');
    if exception {
        p = p[1..].trim();
    }
    let mut out = String::new();
    if !p.is_empty() {
        let cleaned = clean(p);
        out = match cleaned.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => cleaned,
        };
    }
    Some(if exception { format!("!{out}") } else { out })
}

/// Go's `filepath.Clean` on a `/`-separated path.
pub(crate) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// patternmatcher's `compile`: the comparison a cleaned pattern stands for. Also refuses what
/// Go's `filepath.Match` calls a bad pattern.
fn compile(pattern: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if step == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                detected = Detected::Regex;
            }
            '\\' => {
                let next = chars.get(i).ok_or("it ends with a lone `\\`")?;
                i += 1;
                re.push_str(&regex::escape(&next.to_string()));
                detected = Detected::Regex;
            }
            '[' => {
                i = class(&chars, i, &mut re)?;
                detected = Detected::Regex;
            }
            // An anchor in docker's regex too: `a^b` only ever matches as an exact pattern.
            '^' => re.push('^'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        step += 1;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(pattern[2..].to_string()),
        Detected::Regex => {
            re.push('$');
            let re = Regex::new(&re).map_err(|e| {
                let text = e.to_string();
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                last.unwrap_or("not a valid pattern").trim().to_string()
            })?;
            Kind::Regex(re)
        }
    })
}

/// Translates the class starting after `[` at `chars[i]` into `re`, checking it as
/// `filepath.Match` does; returns the index after its `]`.
fn class(chars: &[char], mut i: usize, re: &mut String) -> Result<usize, String> {
    let bad = || "it has a malformed character class `[...]`".to_string();
    re.push('[');
    if chars.get(i) == Some(&'^') {
        re.push('^');
        i += 1;
    }
    let mut ranges = 0;
    loop {
        if chars.get(i) == Some(&']') && ranges > 0 {
            re.push(']');
            return Ok(i + 1);
        }
        let (lo, next) = class_char(chars, i).ok_or_else(bad)?;
        re.push_str(&regex::escape(&lo.to_string()));
        i = next;
        if chars.get(i) == Some(&'-') {
            let (hi, next) = class_char(chars, i + 1).ok_or_else(bad)?;
            re.push('-');
            re.push_str(&regex::escape(&hi.to_string()));
            i = next;
        }
        ranges += 1;
    }
}

/// Go's `getEsc`: one (possibly escaped) class member; something must follow it.
fn class_char(chars: &[char], mut i: usize) -> Option<(char, usize)> {
    let mut c = *chars.get(i)?;
    if c == '-' || c == ']' {
        return None;
    }
    if c == '\\' {
        i += 1;
        c = *chars.get(i)?;
    }
    i += 1;
    (i < chars.len()).then_some((c, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(text: &str) -> Patterns {
        Patterns::parse(text).unwrap()
    }

    #[test]
    fn documented_examples() {
        // docs.docker.com, "Dockerignore files": `*/temp*`, `*/*/temp*`, `temp?`.
        let p = pats("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert!(p.excludes("somedir/temporary.txt"));
        assert!(p.excludes("somedir/temp"));
        assert!(!p.excludes("temporary.txt"), "*/temp* needs a folder");
        assert!(p.excludes("somedir/subdir/temporary.txt"));
        assert!(
            !p.excludes("a/b/c/temp"),
            "*/*/temp* is exactly two levels down"
        );
        assert!(p.excludes("tempa"));
        assert!(p.excludes("tempb"));
        assert!(!p.excludes("temp"));
        assert!(!p.excludes("tempab"));
        assert!(!p.excludes("# comment"));
    }

    #[test]
    fn double_star_spans_folders() {
        let p = pats("**/*.go\n");
        assert!(p.excludes("main.go"));
        assert!(p.excludes("a/b/c.go"));
        assert!(!p.excludes("a/b/c.gox"));
        let p = pats("a/**/b\n");
        assert!(p.excludes("a/b"));
        assert!(p.excludes("a/x/y/b"));
        assert!(!p.excludes("xa/b"));
        // Trailing `**` is a prefix test: the folder itself is not matched, its contents are.
        let p = pats("dir/**\n");
        assert!(!p.excludes("dir"));
        assert!(p.excludes("dir/x"));
        // Leading `**` without a slash is "ends with" (a patternmatcher quirk).
        let p = pats("**foo\n");
        assert!(p.excludes("barfoo"));
        assert!(p.excludes("a/xfoo"));
        assert!(pats("**\n").excludes("anything/at/all"));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let p = pats("*.md\n!README.md\n");
        assert!(p.excludes("CHANGES.md"));
        assert!(!p.excludes("README.md"));
        assert!(!p.excludes("docs/x.md"), "*.md is anchored at the top");
        let p = pats("!README.md\n*.md\n");
        assert!(p.excludes("README.md"), "the last matching line decides");
        let p = pats("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(p.excludes("README-secret.md"));
        assert!(!p.excludes("README-public.md"));
    }

    #[test]
    fn lines_are_cleaned() {
        let p = pats("/abs\n./rel\ntrailing/\n  spaced  \na//b/../c\n\n   \n");
        for path in ["abs", "rel", "trailing", "spaced", "a/c"] {
            assert!(p.excludes(path), "{path}");
        }
        assert!(!p.excludes("a/b"));
        let p = pats("\u{feff}bom\r\n! kept\r\n");
        assert!(p.excludes("bom"));
        assert_eq!(p.patterns[1].cleaned, "kept");
        assert!(p.patterns[1].exception);
        // Only a `#` in the first column makes a comment.
        assert!(pats("  #x\n").excludes("#x"));
    }

    #[test]
    fn a_folder_excludes_everything_below_it() {
        let p = pats("dir\n");
        assert!(p.excludes("dir"));
        assert!(p.excludes("dir/a"));
        assert!(p.excludes("dir/a/b/c"));
        assert!(!p.excludes("dirx"));
        assert!(!p.excludes("x/dir"));
    }

    #[test]
    fn exceptions_open_excluded_folders_by_text() {
        let p = pats("dir\n!dir/keep\n");
        assert!(p.walk_into("dir"));
        assert!(!p.walk_into("other"));
        assert!(!p.excludes("dir/keep"));
        assert!(p.excludes("dir/other"));
        let p = pats("dir\n!**/keep\n");
        assert!(
            !p.walk_into("dir"),
            "docker only opens a folder an exception names"
        );
        assert!(!pats("dir\n").walk_into("dir"));
        // A child inherits the patterns its folder matched.
        let p = pats("dir\n!dir/keep\n");
        let (excluded, info) = p.matches("dir", None);
        assert!(excluded);
        assert!(!p.matches("dir/keep", Some(&info)).0);
        assert!(p.matches("dir/junk", Some(&info)).0);
    }

    #[test]
    fn parent_results_quirk() {
        // `*` is skipped for `a` (already excluded), so for `a/x` it is tried on `a/x` only,
        // which it does not match: the walk keeps `a/x`, as docker's does.
        let p = pats("a\n!a/x\n*\n");
        let (excluded, info) = p.matches("a", None);
        assert!(excluded);
        assert!(!p.matches("a/x", Some(&info)).0);
        assert!(
            p.excludes("a/x"),
            "whereas matching its folders afresh excludes it"
        );
    }

    #[test]
    fn classes_and_escapes() {
        let p = pats("[a-c]x\n[^a]y\nz\\*\nq[\\]]\n");
        assert!(p.excludes("bx"));
        assert!(!p.excludes("dx"));
        assert!(p.excludes("by"));
        assert!(!p.excludes("ay"));
        assert!(p.excludes("z*"));
        assert!(!p.excludes("zz"));
        assert!(p.excludes("q]"));
        let p = pats("a.b\n(x)\n");
        assert!(p.excludes("a.b"));
        assert!(!p.excludes("axb"));
        assert!(p.excludes("(x)"));
    }

    #[test]
    fn bad_patterns_name_their_line() {
        for (text, line) in [
            ("ok\n!\n", 2),
            ("a[\n", 1),
            ("\n\n[]\n", 3),
            ("x\\\n", 1),
            ("[z-a]\n", 1),
            ("[a-]\n", 1),
        ] {
            let err = Patterns::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err:?}");
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn go_clean() {
        for (a, b) in [
            ("", "."),
            ("a/", "a"),
            ("./a", "a"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("//a//b/", "/a/b"),
            ("a/..", "."),
        ] {
            assert_eq!(clean(a), b, "{a}");
        }
    }
}
