//! Property tests ("fuzzing" with proptest) of the parsers that read untrusted text:
//! `Recipe::parse` (TOML written by people), and `Manifest::parse` and `Record::parse` (an
//! entry's manifest and a component's record: JSON read from a store, a copied store folder
//! or a remote cache), plus `plan::plan` on whatever recipe the parser accepts.
//!
//! Each property runs a few hundred cases so the whole module stays well under 30 s in debug.
//! A failure prints the minimal (shrunk) input. No failure file is written: a new failing
//! input should become a named regression test beside the fix.
//!
//! One file per parser: [`recipes`] (`Recipe::parse`, twins, and the plan of what it
//! accepts), [`manifests`] (`Manifest::parse`), [`records`] (`Record::parse`). This file holds
//! what they share: the runner, the valid recipe and its folder, and the byte, line and JSON
//! mutations.

mod manifests;
mod recipes;
mod records;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use bottle::digest::Digest;

/// Cases per property; `PROPTEST_CASES=N` overrides it for a longer hunt.
const CASES: u32 = 512;

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs a property; on failure panics with the shrunk input and the reason.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(cases).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// A valid recipe touching every section, with an `archive` guest image so planning needs no
/// engine. Its paths name the files `recipe_dir` creates.
const VALID_RECIPE: &str = r#"# A recipe for the fuzzer: every section, an archive image.
name = "fuzz-demo"

[guest]
backend = "docker"
image = { archive = "image.tar" }
user = "node"
home = "/home/node"
command = ["sh", "-c", "echo \"hello from $(id -un) in $HOME\""]
env = { EDITOR = "vi", LANG = "C.UTF-8" }

[pipelock]
allow = ["example.com", "*.example.org"]
dlp = true

[[egress.routes]]
host = "api.example.com"
token_env = "API_TOKEN"
header = "Authorization"
scheme = "Bearer"

[[git-gate.upstreams]]
name = "origin"
url = "git@example.com:me/repo.git"
identity = "~/.ssh/id_ed25519"

[supervise]
enabled = true

[provision]
prompt = "prompt.md"
skills = "skills"
git_name = "Fuzz Demo"
git_email = "fuzz@example.com"
"#;

/// A folder holding what `VALID_RECIPE` and `RECIPE_LINES` name, plus a symlink out of it.
fn recipe_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bottle-fuzz.")
        .tempdir()
        .expect("a temporary folder");
    let d = dir.path();
    std::fs::write(
        d.join("image.tar"),
        b"not really a tar; planning does not read it",
    )
    .unwrap();
    std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(d.join("prompt.md"), "Be careful.\n").unwrap();
    std::fs::create_dir_all(d.join("skills/git")).unwrap();
    std::fs::write(d.join("skills/git/SKILL.md"), "# git\n").unwrap();
    std::os::unix::fs::symlink("/", d.join("escape")).unwrap();
    std::os::unix::fs::symlink("image.tar", d.join("inside.tar")).unwrap();
    dir
}

/// One edit of a text, applied to its bytes.
#[derive(Debug, Clone)]
enum Edit {
    DeleteByte(Index),
    InsertByte(Index, u8),
    ReplaceByte(Index, u8),
    InsertChar(Index, char),
    DeleteRange(Index, usize),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    InsertLine(Index, String),
    ReplaceLine(Index, String),
    /// Replace the contents of the n-th `"..."` literal (escaped as a TOML basic string).
    ReplaceString(Index, String),
}

/// Printable-ASCII-heavy bytes, with the TOML/JSON punctuation, newlines and a few high bytes.
fn any_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => select(b"\"'[]{}=,.:#\\\n\r\t 0123456789aeEn-+_/~".to_vec()),
        2 => 0x20u8..0x7f,
        1 => any::<u8>(),
    ]
}

fn edit(lines: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    let line = prop_oneof![
        3 => select(lines).prop_map(str::to_string),
        1 => "[ -~]{0,40}",
        1 => any::<String>(),
    ];
    prop_oneof![
        3 => any::<Index>().prop_map(Edit::DeleteByte),
        3 => (any::<Index>(), any_byte()).prop_map(|(i, b)| Edit::InsertByte(i, b)),
        3 => (any::<Index>(), any_byte()).prop_map(|(i, b)| Edit::ReplaceByte(i, b)),
        1 => (any::<Index>(), any::<char>()).prop_map(|(i, c)| Edit::InsertChar(i, c)),
        1 => (any::<Index>(), 1usize..24).prop_map(|(i, n)| Edit::DeleteRange(i, n)),
        2 => any::<Index>().prop_map(Edit::DeleteLine),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        3 => (any::<Index>(), line.clone()).prop_map(|(i, l)| Edit::InsertLine(i, l)),
        3 => (any::<Index>(), line).prop_map(|(i, l)| Edit::ReplaceLine(i, l)),
    ]
}

fn edits(lines: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(lines), 1..6)
}

/// `s` as the inside of a TOML basic string. Sequences written `\uXXXX` in `string_value`
/// stay escapes (so a NUL can reach the plan); other backslashes are escaped.
fn toml_escape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let hex = rest.as_bytes().get(2..6);
        if rest.starts_with("\\u") && hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            out.push_str(&rest[..6]);
            rest = &rest[6..];
            continue;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Byte ranges of the contents of every `"..."` literal on one line (no multi-line strings).
fn string_literals(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut i = 0;
    while i < text.len() {
        match (text[i], open) {
            (b'\\', Some(_)) => i += 1,
            (b'"', None) => open = Some(i + 1),
            (b'"', Some(start)) => {
                out.push(start..i);
                open = None;
            }
            (b'\n', _) => open = None,
            (b'#', None) => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn apply(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    for e in edits {
        // Positions may be one past the end (insert at the end).
        let at = |i: &Index, len: usize| i.index(len + 1);
        match e {
            Edit::DeleteByte(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.remove(i);
            }
            Edit::InsertByte(i, b) => {
                let i = at(i, bytes.len());
                bytes.insert(i, *b);
            }
            Edit::ReplaceByte(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Edit::InsertChar(i, c) => {
                let i = at(i, bytes.len());
                let mut buf = [0u8; 4];
                let s = c.encode_utf8(&mut buf);
                bytes.splice(i..i, s.bytes());
            }
            Edit::DeleteRange(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::DeleteLine(_)
            | Edit::DuplicateLine(_)
            | Edit::SwapLines(..)
            | Edit::InsertLine(..)
            | Edit::ReplaceLine(..) => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len(); // at least 1
                match e {
                    Edit::DeleteLine(i) => {
                        lines.remove(i.index(n));
                    }
                    Edit::DuplicateLine(i) => {
                        let i = i.index(n);
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    Edit::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
                    Edit::InsertLine(i, l) => lines.insert(at(i, n), l.as_bytes().to_vec()),
                    Edit::ReplaceLine(i, l) => lines[i.index(n)] = l.as_bytes().to_vec(),
                    _ => unreachable!(),
                }
                bytes = lines.join(&b'\n');
            }
            Edit::ReplaceString(i, value) => {
                let literals = string_literals(&bytes);
                if !literals.is_empty() {
                    let r = literals[i.index(literals.len())].clone();
                    bytes.splice(r, toml_escape(value).into_bytes());
                }
            }
            _ => {}
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Manifest and record inputs

fn digest(c: char) -> Digest {
    Digest::parse(&c.to_string().repeat(64)).unwrap()
}

/// Strings that make good or bad entry paths.
fn pathish() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "..", ".", "", "/", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "/a",
            "a\\b", "..\\x", "a\0b", "ca/pipelock.crt", "guest/image.tar", "key.json",
            "manifest.json", "...", ".hidden", "a/.../b", "é/ü", " ", "a/ /b",
        ])
        .prop_map(str::to_string),
        3 => "[a./\\\\]{0,8}",
        1 => any::<String>(),
    ]
}

/// One structural edit of a JSON value (a manifest, a record).
#[derive(Debug, Clone)]
enum JsonEdit {
    /// Replace the n-th string leaf (or object key's value) with this string.
    SetString(Index, String),
    /// Replace the n-th leaf of any kind with this value.
    SetLeaf(Index, serde_json::Value),
    /// Remove the n-th object member.
    RemoveMember(Index),
    /// Duplicate the n-th array element in place.
    DuplicateElement(Index),
}

fn json_scalar() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(0o7777u32)),
        Just(Value::from(0o10000u32)),
        Just(Value::from(1.5f64)),
        pathish().prop_map(Value::String),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        4 => (any::<Index>(), pathish()).prop_map(|(i, s)| JsonEdit::SetString(i, s)),
        2 => (any::<Index>(), json_scalar()).prop_map(|(i, v)| JsonEdit::SetLeaf(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::RemoveMember),
        1 => any::<Index>().prop_map(JsonEdit::DuplicateElement),
    ]
}

/// JSON pointers of every node of `v` (the root excluded), with its kind.
fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<(String, &'static str)>) {
    use serde_json::Value;
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", esc(k));
                out.push((p.clone(), "member"));
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push((p.clone(), "element"));
                pointers(child, p, out);
            }
        }
        Value::String(_) => out.push((at, "string")),
        _ => out.push((at, "leaf")),
    }
}

fn apply_json(base: &serde_json::Value, edits: &[JsonEdit]) -> serde_json::Value {
    use serde_json::Value;
    let mut v = base.clone();
    for e in edits {
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        let of = |kinds: &[&str]| -> Vec<String> {
            all.iter()
                .filter(|(_, k)| kinds.contains(k))
                .map(|(p, _)| p.clone())
                .collect()
        };
        let (targets, i) = match e {
            JsonEdit::SetString(i, _) => (of(&["string"]), i),
            JsonEdit::SetLeaf(i, _) => (of(&["string", "leaf", "member", "element"]), i),
            JsonEdit::RemoveMember(i) => (of(&["member"]), i),
            JsonEdit::DuplicateElement(i) => (of(&["element"]), i),
        };
        if targets.is_empty() {
            continue;
        }
        let ptr = &targets[i.index(targets.len())];
        let (parent, last) = ptr.rsplit_once('/').expect("pointers start with /");
        let last = last.replace("~1", "/").replace("~0", "~");
        match e {
            JsonEdit::SetString(_, s) => *v.pointer_mut(ptr).unwrap() = Value::String(s.clone()),
            JsonEdit::SetLeaf(_, x) => *v.pointer_mut(ptr).unwrap() = x.clone(),
            JsonEdit::RemoveMember(_) => {
                if let Some(Value::Object(m)) = v.pointer_mut(parent) {
                    m.remove(&last);
                }
            }
            JsonEdit::DuplicateElement(_) => {
                if let Some(Value::Array(a)) = v.pointer_mut(parent) {
                    let i: usize = last.parse().unwrap();
                    let x = a[i].clone();
                    a.insert(i, x);
                }
            }
        }
    }
    v
}
