//! Property tests ("fuzzing" with proptest) of the parsers that read untrusted text:
//! `Recipe::parse` (TOML written by people), and `Manifest::parse` and `Record::parse` (an
//! entry's manifest and a component's record: JSON read from a store, a copied store folder
//! or a remote cache), plus `plan::plan` on whatever recipe the parser accepts.
//!
//! Each property runs a few hundred cases so the whole file stays well under 30 s in debug.
//! A failure prints the minimal (shrunk) input. No failure file is written: a new failing
//! input should become a named regression test beside the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use bottle::digest::{Digest, InputDigest};
use bottle::hash::{
    ComponentHash, ComponentId, ComponentKey, ComponentKind, GUEST_FORMAT, GuestKey, GuestSource,
    Keys,
};
use bottle::manifest::{
    Artifact, Components, ImageRef, MANIFEST_FORMAT, Manifest, RECORD_FILE, RECORD_FORMAT, Record,
    is_entry_path,
};
use bottle::plan::{self, GuestBackend, GuestStart, ImagePlan};
use bottle::recipe::{Recipe, RecipeError};

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

/// Whole lines the line mutations insert: valid keys with values that stress the plan
/// (escaping paths, a symlink out of the folder, wrong kinds, fixed env names), headers, junk.
const RECIPE_LINES: &[&str] = &[
    r#"image = { archive = "../outside.tar" }"#,
    r#"image = { archive = "/etc/passwd" }"#,
    r#"image = { archive = "escape/etc/passwd" }"#,
    r#"image = { archive = "inside.tar" }"#,
    r#"image = { archive = "skills/../image.tar" }"#,
    r#"image = { archive = "./image.tar/" }"#,
    r#"image = { archive = "image.tar", context = "." }"#,
    r#"image = { dockerfile = "Dockerfile" }"#,
    r#"image = { dockerfile = "Dockerfile", context = "" }"#,
    r#"image = { dockerfile = "Dockerfile", context = ".." }"#,
    r#"image = { reference = "node@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#,
    r#"image = { reference = "node:20" }"#,
    r#"image = {}"#,
    r#"backend = "smolvm""#,
    r#"start = "image""#,
    r#"start = "pack""#,
    r#"home = "/""#,
    r#"home = "/home/../etc""#,
    r#"user = """#,
    r#"user = "root""#,
    r#"command = []"#,
    r#"env = { HOME = "/x" }"#,
    r#"env = { "1X" = "y" }"#,
    "env = { X = \"a\\u0000b\" }",
    r#"prompt = "skills""#,
    r#"prompt = "escape/etc/hostname""#,
    r#"skills = "prompt.md""#,
    r#"skills = ".""#,
    r#"skills = """#,
    r#"skills = "escape""#,
    r#"name = "UPPER""#,
    r#"name = "-x""#,
    r#"name = "é""#,
    r#"host = "*.example.com""#,
    r#"host = "https://example.com/""#,
    r#"token_env = "sk-ant-123""#,
    r#"header = "bad header""#,
    r#"identity = " ""#,
    r#"url = """#,
    r#"allow = ["https://x/", "ÄÖ.example"]"#,
    r#"dlp = "yes""#,
    r#"colour = 1"#,
    r#""é" = "ü""#,
    "[guest]",
    "[guest.env]",
    "[guest.image]",
    "[pipelock]",
    "[[egress.routes]]",
    "[[git-gate.upstreams]]",
    "[provision]",
    "[supervise]",
    "enabled = 1",
    "[[guest]]",
    "x = \"\"\"",
    "x = '''",
    "\"\"\"",
    "a.b.c = 1",
    "= 1",
    "[",
    "]",
    "\t",
    "\r",
    "",
];

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

/// Values for string literals: paths (good, escaping, through the symlink out), names, hosts.
fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "image.tar", "inside.tar", "prompt.md", "skills", "skills/git", "Dockerfile", ".",
            "", "..", "../image.tar", "escape", "escape/etc/passwd", "escape/tmp", "/tmp",
            "skills/../prompt.md", "./image.tar", "image.tar/", "skills/git/SKILL.md",
            "docker", "smolvm", "pack", "image", "node", "root", "/home/node", "/", "/home/../",
            "example.com", "*.example.com", "*.", "*", "API_TOKEN", "x-api-key", "Bearer",
            "HOME", "1X", "fuzz-demo", "-x", r"a\u0000b", "é", "node@sha256:abc",
        ])
        .prop_map(str::to_string),
        2 => "[ -~]{0,16}",
        1 => any::<String>(),
    ]
}

/// Edits that mostly keep the TOML well-formed, so the plan sees many variants.
fn plan_edits() -> impl Strategy<Value = Vec<Edit>> {
    let line = || select(RECIPE_LINES).prop_map(str::to_string);
    let one = prop_oneof![
        6 => (any::<Index>(), string_value()).prop_map(|(i, s)| Edit::ReplaceString(i, s)),
        2 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::InsertLine(i, l)),
        2 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::ReplaceLine(i, l)),
        2 => any::<Index>().prop_map(Edit::DeleteLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ];
    prop::collection::vec(one, 1..4)
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

/// Text that looks a little like TOML: its punctuation, keys of the schema, newlines.
fn tomlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => "[\\[\\]{}=,.\"'#\\\\ \t\n0-9a-z_-]{1,6}",
            1 => select(vec![
                "name", "guest", "backend", "image", "archive", "dockerfile", "command", "env",
                "pipelock", "egress.routes", "git-gate", "provision", "true", "1979-05-27",
                "\"\"\"", "'''", "\\u00e9", "\\U0001F600", "é", "💥", "\r\n", "inf", "nan",
            ])
            .prop_map(str::to_string),
            1 => any::<String>(),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

// ---------------------------------------------------------------------------------------------
// Recipe checks

/// A located error names the file, and a line and column inside `source` (the column may be
/// one past the line's last character), and prints as `FILE:LINE:COL: message`.
fn assert_located(err: &RecipeError, path: &Path, source: &str) -> Result<(), TestCaseError> {
    let RecipeError::At {
        path: p,
        line,
        col,
        message,
    } = err
    else {
        return Err(TestCaseError::fail(format!(
            "expected a located error, got {err}"
        )));
    };
    prop_assert_eq!(p.as_path(), path);
    let lines: Vec<&str> = source.split('\n').collect();
    prop_assert!(
        *line >= 1 && *line <= lines.len(),
        "line {} outside 1..={} in {:?}",
        line,
        lines.len(),
        err.to_string()
    );
    let width = lines[line - 1].chars().count();
    prop_assert!(
        *col >= 1 && *col <= width + 1,
        "column {} outside 1..={} of line {} in {:?}",
        col,
        width + 1,
        line,
        err.to_string()
    );
    prop_assert!(
        !message.trim().is_empty(),
        "empty message: {:?}",
        err.to_string()
    );
    prop_assert_eq!(
        err.to_string(),
        format!("{}:{}:{}: {}", path.display(), line, col, message)
    );
    Ok(())
}

/// Every path of an accepted plan is relative, normalized, and leads (after symlinks) to a
/// place inside the recipe's folder.
fn assert_plan_paths_inside(planned: &plan::Planned) -> Result<(), TestCaseError> {
    let p = &planned.plan;
    let mut paths: Vec<&str> = Vec::new();
    match &p.guest.image {
        ImagePlan::Dockerfile {
            dockerfile,
            context,
        } => paths.extend([dockerfile.as_str(), context.as_str()]),
        ImagePlan::Archive { archive } => paths.push(archive),
        ImagePlan::Reference { .. } => {}
    }
    paths.extend(p.provision.prompt.as_deref());
    paths.extend(p.provision.skills.as_deref());
    let root = std::fs::canonicalize(&planned.root).unwrap();
    for rel in paths {
        prop_assert!(
            rel.is_empty() || is_entry_path(rel),
            "plan path {:?} is not a normalized relative path",
            rel
        );
        let real = std::fs::canonicalize(planned.host_path(rel))
            .map_err(|e| TestCaseError::fail(format!("plan path {rel:?} does not exist: {e}")))?;
        prop_assert!(
            real.starts_with(&root),
            "plan path {:?} leads to {} outside {}",
            rel,
            real.display(),
            root.display()
        );
    }
    Ok(())
}

/// Parses `source` as the recipe at `path`; checks the result is a recipe or a located error.
fn parse_checked(path: &Path, source: &str) -> Result<Option<Recipe>, TestCaseError> {
    match Recipe::parse(path, source.to_string()) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            assert_located(&e, path, source)?;
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe properties

#[test]
fn valid_fuzz_recipe_parses_and_plans() {
    let dir = recipe_dir();
    let path = dir.path().join("recipe.toml");
    let recipe = Recipe::parse(&path, VALID_RECIPE.to_string()).expect("the base recipe parses");
    let planned = plan::plan(&recipe).expect("the base recipe plans");
    assert_eq!(
        planned.plan.guest.image,
        ImagePlan::Archive {
            archive: "image.tar".into()
        }
    );
    assert_eq!(planned.plan.provision.skills.as_deref(), Some("skills"));
    TestRunner::default()
        .run(&Just(()), |()| assert_plan_paths_inside(&planned))
        .unwrap();
}

#[test]
fn recipe_parse_never_panics_on_arbitrary_strings() {
    let path = PathBuf::from("fuzz/any.toml");
    check(CASES, any::<String>(), |s| {
        parse_checked(&path, &s)?;
        Ok(())
    });
}

#[test]
fn recipe_parse_never_panics_on_arbitrary_bytes_read_lossily() {
    let path = PathBuf::from("fuzz/bytes.toml");
    check(CASES, prop::collection::vec(any::<u8>(), 0..256), |b| {
        parse_checked(&path, &String::from_utf8_lossy(&b))?;
        Ok(())
    });
}

#[test]
fn recipe_errors_on_tomlish_text_point_inside_the_input() {
    let path = PathBuf::from("recipes/tomlish.toml");
    check(CASES, tomlish(), |s| {
        parse_checked(&path, &s)?;
        Ok(())
    });
}

#[test]
fn recipe_errors_on_schema_shaped_text_point_inside_the_input() {
    // Valid TOML with the schema's keys but random shapes and values: errors come from serde's
    // deserializer (spans of values), not only from the TOML syntax.
    let value = prop_oneof![
        Just("1".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[\"sh\"]".to_string()),
        Just("{ archive = \"image.tar\" }".to_string()),
        "\"[a-zé ./*-]{0,12}\"",
    ];
    let key = select(vec![
        "name",
        "backend",
        "image",
        "user",
        "home",
        "command",
        "env",
        "start",
        "allow",
        "dlp",
        "host",
        "token_env",
        "enabled",
        "prompt",
        "skills",
        "colour",
    ]);
    let table = select(vec![
        "",
        "[guest]",
        "[pipelock]",
        "[[egress.routes]]",
        "[provision]",
        "[supervise]",
        "[guest.image]",
    ]);
    let entry = (table, key, value).prop_map(|(t, k, v)| format!("{t}\n{k} = {v}"));
    let path = PathBuf::from("recipes/shaped.toml");
    check(CASES, prop::collection::vec(entry, 0..8), |entries| {
        parse_checked(&path, &entries.join("\n"))?;
        Ok(())
    });
}

#[test]
fn twins_load_or_give_errors_located_in_the_twin_or_its_base() {
    // A twin (`extends`) beside a valid base: arbitrary shapes for its keys and values, and
    // mutations of the base. Each load is a recipe or an error located in the file it names.
    let dir = recipe_dir();
    let base = dir.path().join("base.toml");
    let twin = dir.path().join("twin.toml");
    let value = prop_oneof![
        Just("1".to_string()),
        Just("\"base.toml\"".to_string()),
        Just("\"twin.toml\"".to_string()),
        Just("\"../base.toml\"".to_string()),
        Just("\"docker\"".to_string()),
        Just("\"smolvm\"".to_string()),
        "\"[a-zé ./*-]{0,12}\"",
    ];
    let key = select(vec!["extends", "name", "backend", "start", "colour"]);
    let table = select(vec!["", "[guest]", "[pipelock]"]);
    let entry = (table, key, value).prop_map(|(t, k, v)| format!("{t}\n{k} = {v}"));
    let twins = prop::collection::vec(entry, 0..6)
        .prop_map(|e| format!("extends = \"base.toml\"\nname = \"t\"\n{}", e.join("\n")));
    check(CASES, (twins, edits(RECIPE_LINES)), |(twin_text, edits)| {
        let base_text =
            String::from_utf8_lossy(&apply(VALID_RECIPE.as_bytes(), &edits)).into_owned();
        std::fs::write(&base, &base_text).unwrap();
        std::fs::write(&twin, &twin_text).unwrap();
        match Recipe::load(&twin) {
            Ok(r) => prop_assert_eq!(r.path.as_path(), base.as_path()),
            Err(e @ RecipeError::At { .. }) => {
                let at_twin = matches!(&e, RecipeError::At { path, .. } if path == &twin);
                if at_twin {
                    assert_located(&e, &twin, &twin_text)?;
                } else {
                    assert_located(&e, &base, &base_text)?;
                }
            }
            Err(e) => return Err(TestCaseError::fail(format!("not located: {e}"))),
        }
        Ok(())
    });
}

#[test]
fn mutated_recipes_parse_or_give_located_errors() {
    let path = PathBuf::from("recipes/mutant.toml");
    check(CASES, edits(RECIPE_LINES), |edits| {
        let text = String::from_utf8_lossy(&apply(VALID_RECIPE.as_bytes(), &edits)).into_owned();
        parse_checked(&path, &text)?;
        Ok(())
    });
}

#[test]
fn planning_mutated_recipes_never_panics_and_keeps_paths_inside() {
    let dir = recipe_dir();
    let path = dir.path().join("recipe.toml");
    // The base recipe with its guest's backend and image swapped for one of these lines, so
    // every image kind (and the escaping ones) reaches the plan.
    let images: Vec<&str> = RECIPE_LINES
        .iter()
        .copied()
        .filter(|l| l.starts_with("image = "))
        .collect();
    let backends = vec![
        r#"backend = "docker""#,
        "backend = \"smolvm\"",
        "backend = \"smolvm\"\nstart = \"image\"",
        "backend = \"docker\"\nstart = \"pack\"",
    ];
    let strategy = (
        select(backends),
        select(images),
        prop_oneof![1 => edits(RECIPE_LINES), 3 => plan_edits()],
    );
    check(CASES, strategy, |(backend, image, edits)| {
        let base = VALID_RECIPE
            .replace(r#"backend = "docker""#, backend)
            .replace(r#"image = { archive = "image.tar" }"#, image);
        let text = String::from_utf8_lossy(&apply(base.as_bytes(), &edits)).into_owned();
        let Some(recipe) = parse_checked(&path, &text)? else {
            return Ok(());
        };
        match plan::plan(&recipe) {
            Ok(planned) => assert_plan_paths_inside(&planned)?,
            Err(e) => assert_located(&e, &path, &text)?,
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Manifest and record inputs

fn digest(c: char) -> Digest {
    Digest::parse(&c.to_string().repeat(64)).unwrap()
}

/// A valid manifest: the recipe's name and its three components by hash.
fn valid_manifest() -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: "fuzz-demo".into(),
        components: Components {
            guest: ComponentHash(digest('1')),
            bundle: ComponentHash(digest('2')),
            config: ComponentHash(digest('3')),
        },
    }
}

/// The real keys of the fuzz recipe (an archive guest, every section of the config).
fn fuzz_keys() -> Keys {
    let dir = recipe_dir();
    let path = dir.path().join("recipe.toml");
    let recipe = Recipe::parse(&path, VALID_RECIPE.to_string()).unwrap();
    let planned = plan::plan(&recipe).unwrap();
    bottle::hash::keys(&planned, None).unwrap().0
}

/// A guest key of the other shape: a Dockerfile and its context, started from a pack.
fn packed_guest_key() -> GuestKey {
    GuestKey {
        format: GUEST_FORMAT,
        backend: GuestBackend::Smolvm,
        start: GuestStart::Pack,
        source: GuestSource::Dockerfile {
            dockerfile: digest('d'),
            context: BTreeMap::from([
                (
                    "busybox".to_string(),
                    InputDigest::File {
                        digest: digest('b'),
                        executable: true,
                    },
                ),
                ("etc".to_string(), InputDigest::Dir),
                (
                    "etc/passwd".to_string(),
                    InputDigest::File {
                        digest: digest('c'),
                        executable: false,
                    },
                ),
                (
                    "sh".to_string(),
                    InputDigest::Symlink {
                        target: "busybox".into(),
                    },
                ),
            ]),
        },
        smolvm: Some("smolvm 1.32.2".into()),
    }
}

fn artifact(path: &str, size: u64, mode: u32, c: char) -> Artifact {
    Artifact {
        path: path.into(),
        blake3: digest(c),
        size,
        mode,
    }
}

fn image(pack: Option<&str>) -> ImageRef {
    ImageRef {
        archive: "image.tar".into(),
        id: format!("sha256:{}", "a".repeat(64)),
        pack: pack.map(str::to_string),
    }
}

/// A valid record of each kind, as the build writes them, with the component id it names.
fn valid_records() -> Vec<(Record, ComponentId)> {
    let keys = fuzz_keys();
    let guest = Record {
        format: RECORD_FORMAT,
        key: ComponentKey::Guest(packed_guest_key()),
        image: Some(image(Some("guest.smolmachine"))),
        files: vec![
            artifact("guest.smolmachine", 1 << 29, 0o644, '9'),
            artifact("image.tar", 1 << 30, 0o644, '8'),
        ],
    };
    let archive_guest = Record {
        format: RECORD_FORMAT,
        key: keys.component(ComponentKind::Guest),
        image: Some(image(None)),
        files: vec![artifact("image.tar", 1 << 20, 0o644, '7')],
    };
    let bundle = Record {
        format: RECORD_FORMAT,
        key: keys.component(ComponentKind::Bundle),
        image: Some(image(None)),
        files: vec![artifact("image.tar", 1 << 24, 0o644, '0')],
    };
    // The config: every file its key renders, and the provisioning copies.
    let key = keys.component(ComponentKind::Config);
    let ComponentKey::Config(config_key) = &key else {
        unreachable!()
    };
    let mut files: Vec<Artifact> = bottle::config::render(config_key)
        .files
        .iter()
        .map(|f| Artifact {
            path: f.path.clone(),
            blake3: Digest::of(&f.bytes),
            size: f.bytes.len() as u64,
            mode: f.mode,
        })
        .chain(
            bottle::config::copied_files(config_key)
                .into_iter()
                .map(|(path, blake3)| Artifact {
                    path,
                    blake3,
                    size: 6,
                    mode: 0o644,
                }),
        )
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let config = Record {
        format: RECORD_FORMAT,
        key,
        image: None,
        files,
    };
    [guest, archive_guest, bundle, config]
        .into_iter()
        .map(|r| {
            let id = r.key.id();
            (r, id)
        })
        .collect()
}

/// What every accepted manifest must satisfy: the supported format, a recipe name, three
/// well-formed component hashes; hashing and naming it never panic; it writes back to JSON
/// that parses to the same manifest, with the same hash.
fn assert_accepted_manifest_sound(m: &Manifest) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.format, MANIFEST_FORMAT);
    prop_assert!(plan::is_slug(&m.name), "accepted name {:?}", m.name);
    for id in m.components.ids() {
        prop_assert!(ComponentHash::parse(&id.hash.hex()).is_some());
        prop_assert_eq!(id.hash.short().len(), 12);
        prop_assert_eq!(id, m.components.get(id.kind));
    }
    let hash = m.hash();
    prop_assert_eq!(hash.short().len(), 12);
    let again = Manifest::parse(&m.to_json(), "rewritten").map_err(|e| {
        TestCaseError::fail(format!("an accepted manifest does not parse again: {e}"))
    })?;
    prop_assert_eq!(&again, m);
    prop_assert_eq!(again.hash(), hash);
    // The hash is over the canonical form: how the JSON was laid out does not matter.
    let compact = serde_json::to_vec(m).unwrap();
    prop_assert_eq!(Manifest::parse(&compact, "compact").unwrap().hash(), hash);
    Ok(())
}

fn parse_manifest_checked(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Manifest::parse(bytes, "fuzz/manifest.json") {
        assert_accepted_manifest_sound(&m)?;
    }
    Ok(())
}

/// What every record `Record::parse` accepts against `expected` must satisfy: its key is of
/// the expected kind and hashes to the expected name; every file path stays inside the
/// component (relative, no `.`/`..`/empty parts, not the record itself), listed once, in
/// order, with a possible mode; the image (guest and bundle only) names listed files and a
/// `sha256:` id; totals never overflow; it writes back to JSON that parses to the same record.
fn assert_accepted_record_sound(r: &Record, expected: &ComponentId) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.key.kind(), expected.kind);
    prop_assert_eq!(
        r.key.hash(),
        expected.hash,
        "the key does not hash to the name"
    );
    let root = Path::new("/store/components/x/0123");
    for a in &r.files {
        prop_assert!(
            is_entry_path(&a.path) && a.path != RECORD_FILE,
            "accepted file path {:?}",
            a.path
        );
        let joined = root.join(&a.path);
        prop_assert!(
            joined.starts_with(root)
                && joined
                    .components()
                    .skip(root.components().count())
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
            "file path {:?} leaves the component",
            a.path
        );
        prop_assert!(a.mode <= 0o7777, "mode {:o}", a.mode);
    }
    for w in r.files.windows(2) {
        prop_assert!(
            w[0].path < w[1].path,
            "{:?} before {:?}",
            w[0].path,
            w[1].path
        );
    }
    let listed = |p: &str| r.files.iter().any(|a| a.path == p);
    match (&r.image, expected.kind) {
        (None, ComponentKind::Config) => {}
        (Some(img), ComponentKind::Guest | ComponentKind::Bundle) => {
            prop_assert!(
                listed(&img.archive),
                "image archive {:?} not listed",
                img.archive
            );
            if let Some(p) = &img.pack {
                prop_assert!(listed(p), "pack {:?} not listed", p);
                prop_assert_eq!(expected.kind, ComponentKind::Guest);
            }
            let hex = img.id.strip_prefix("sha256:").unwrap_or_default();
            prop_assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "image id {:?}",
                img.id
            );
        }
        (image, kind) => {
            return Err(TestCaseError::fail(format!(
                "a {kind} record accepted with image {image:?}"
            )));
        }
    }
    // Sizes come from the file: a sum of them must not panic (ls, show, gc add them up).
    let _ = r.total_size();
    let again = Record::parse(&r.to_json(), "rewritten", expected).map_err(|e| {
        TestCaseError::fail(format!("an accepted record does not parse again: {e}"))
    })?;
    prop_assert_eq!(&again, r);
    Ok(())
}

fn parse_record_checked(bytes: &[u8], expected: &ComponentId) -> Result<(), TestCaseError> {
    if let Ok(r) = Record::parse(bytes, "fuzz/record.json", expected) {
        assert_accepted_record_sound(&r, expected)?;
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// Manifest properties

#[test]
fn valid_fuzz_manifest_round_trips() {
    let m = valid_manifest();
    let parsed = Manifest::parse(&m.to_json(), "base").expect("the base manifest parses");
    assert_eq!(parsed, m);
    TestRunner::default()
        .run(&Just(()), |()| assert_accepted_manifest_sound(&parsed))
        .unwrap();
}

#[test]
fn manifest_parse_never_panics_on_arbitrary_bytes() {
    check(CASES, prop::collection::vec(any::<u8>(), 0..512), |b| {
        parse_manifest_checked(&b)
    });
}

#[test]
fn manifest_parse_never_panics_on_arbitrary_strings() {
    check(CASES, any::<String>(), |s| {
        parse_manifest_checked(s.as_bytes())
    });
}

const MANIFEST_LINES: &[&str] = &[
    r#""format": 1,"#,
    r#""format": 3,"#,
    r#""format": -2,"#,
    r#""name": "UPPER","#,
    r#""name": "-x","#,
    r#""name": "","#,
    r#""name": "a/b","#,
    r#""guest": "..","#,
    r#""guest": "1111111111111111111111111111111111111111111111111111111111111111","#,
    r#""bundle": "ABCDEF0000000000000000000000000000000000000000000000000000000000","#,
    r#""config": null,"#,
    r#""extra": 1,"#,
    r#""components": {},"#,
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "",
];

#[test]
fn mutated_manifest_bytes_never_panic_and_accepted_ones_are_sound() {
    let base = valid_manifest().to_json();
    check(CASES, edits(MANIFEST_LINES), |edits| {
        parse_manifest_checked(&apply(&base, &edits))
    });
}

#[test]
fn mutated_manifest_values_never_panic_and_accepted_ones_are_sound() {
    let base = serde_json::to_value(valid_manifest()).unwrap();
    let strategy = (prop::collection::vec(json_edit(), 1..5), any::<bool>());
    check(CASES, strategy, |(edits, pretty)| {
        let v = apply_json(&base, &edits);
        let bytes = if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        parse_manifest_checked(&bytes)
    });
}

/// Successor of the old manifest's regression (a hash accepted without the check
/// `BuildHash::parse` makes, whose `short()` then panicked): every component hash an
/// accepted manifest names is 64 lowercase hex digits.
#[test]
fn accepted_manifests_name_valid_component_hashes() {
    let base = serde_json::to_value(valid_manifest()).unwrap();
    let strategy = (
        select(vec!["guest", "bundle", "config"]),
        prop_oneof![pathish(), "[0-9a-fA-F]{60,68}", Just("0".repeat(64)),],
    );
    check(CASES, strategy, |(kind, h)| {
        let mut v = base.clone();
        v["components"][kind] = serde_json::Value::String(h.clone());
        let bytes = serde_json::to_vec(&v).unwrap();
        let accepted = Manifest::parse(&bytes, "fuzz/hash.json");
        prop_assert_eq!(
            accepted.is_ok(),
            ComponentHash::parse(&h).is_some(),
            "{:?}: {:?}",
            h,
            accepted.as_ref().err().map(|e| e.to_string())
        );
        if let Ok(m) = accepted {
            assert_accepted_manifest_sound(&m)?;
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Record properties

#[test]
fn valid_fuzz_records_parse_against_their_own_name_only() {
    let all = valid_records();
    for (r, id) in &all {
        let parsed = Record::parse(&r.to_json(), "base", id).expect("a base record parses");
        assert_eq!(&parsed, r);
        TestRunner::default()
            .run(&Just(()), |()| assert_accepted_record_sound(&parsed, id))
            .unwrap();
        // Against any other component's name, it is refused.
        for (_, other) in &all {
            if other != id {
                assert!(
                    Record::parse(&r.to_json(), "base", other).is_err(),
                    "{id} parsed as {other}"
                );
            }
        }
    }
}

#[test]
fn record_parse_never_panics_on_arbitrary_bytes() {
    let ids: Vec<ComponentId> = valid_records().into_iter().map(|(_, id)| id).collect();
    let strategy = (select(ids), prop::collection::vec(any::<u8>(), 0..512));
    check(CASES, strategy, |(id, b)| parse_record_checked(&b, &id));
}

#[test]
fn record_parse_never_panics_on_arbitrary_strings() {
    let ids: Vec<ComponentId> = valid_records().into_iter().map(|(_, id)| id).collect();
    check(CASES, (select(ids), any::<String>()), |(id, s)| {
        parse_record_checked(s.as_bytes(), &id)
    });
}

const RECORD_LINES: &[&str] = &[
    r#""path": "../escape","#,
    r#""path": "/etc/passwd","#,
    r#""path": "a//b","#,
    r#""path": "record.json","#,
    r#""path": "guest\\image.tar","#,
    r#""path": "a\u0000b","#,
    r#""archive": "../image.tar","#,
    r#""pack": "image.tar","#,
    r#""id": "sha256:xyz","#,
    r#""mode": 4095,"#,
    r#""mode": 4096,"#,
    r#""size": 18446744073709551615,"#,
    r#""format": 2,"#,
    r#""kind": "bundle","#,
    r#""kind": "config","#,
    r#""builder": "another-builder","#,
    r#""image": null,"#,
    r#""extra": 1,"#,
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "",
];

#[test]
fn mutated_record_bytes_never_panic_and_accepted_ones_are_sound() {
    let records = valid_records();
    let strategy = (0..records.len(), edits(RECORD_LINES));
    check(CASES, strategy, |(i, edits)| {
        let (r, id) = &records[i];
        parse_record_checked(&apply(&r.to_json(), &edits), id)
    });
}

#[test]
fn mutated_record_values_never_panic_and_an_edited_key_is_always_refused() {
    let records = valid_records();
    let strategy = (
        0..records.len(),
        prop::collection::vec(json_edit(), 1..5),
        any::<bool>(),
    );
    check(CASES, strategy, |(i, edits, pretty)| {
        let (r, id) = &records[i];
        let v = apply_json(&serde_json::to_value(r).unwrap(), &edits);
        let bytes = if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        let accepted = Record::parse(&bytes, "fuzz/record.json", id);
        // A key edited into another key never passes for the component it was.
        let key: Option<ComponentKey> = serde_json::from_value(v["key"].clone()).ok();
        if key.as_ref().is_some_and(|k| *k != r.key) {
            prop_assert!(accepted.is_err(), "an edited key passed: {:?}", key);
        }
        if let Ok(r) = accepted {
            assert_accepted_record_sound(&r, id)?;
        }
        Ok(())
    });
}

#[test]
fn records_with_generated_file_paths_accept_only_paths_inside_the_component() {
    let records = valid_records();
    let strategy = (0..records.len(), prop::collection::vec(pathish(), 1..6));
    check(CASES, strategy, |(i, paths)| {
        let (base, id) = &records[i];
        let mut r = base.clone();
        let mut unique: Vec<String> = paths.clone();
        unique.sort();
        unique.dedup();
        r.files = unique.iter().map(|p| artifact(p, 1, 0o644, 'e')).collect();
        if let Some(img) = &mut r.image {
            img.archive = paths[0].clone();
            img.pack =
                (id.kind == ComponentKind::Guest && paths.len() > 1).then(|| paths[1].clone());
        }
        let accepted = Record::parse(&r.to_json(), "fuzz/generated.json", id);
        if let Ok(r) = &accepted {
            assert_accepted_record_sound(r, id)?;
        }
        // The converse: when every path is one inside the component, nothing else stops it.
        if unique.iter().all(|p| is_entry_path(p) && p != RECORD_FILE) {
            prop_assert!(
                accepted.is_ok(),
                "{:?}",
                accepted.err().map(|e| e.to_string())
            );
        }
        Ok(())
    });
}

#[test]
fn records_with_any_file_sizes_are_sound() {
    // Sizes are what the record says, up to u64::MAX: whatever `Record::parse` accepts, the
    // listing commands add up.
    let records = valid_records();
    let size = prop_oneof![
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        Just(0u64),
    ];
    let strategy = (0..records.len(), prop::collection::vec(size, 1..4));
    check(CASES, strategy, |(i, sizes)| {
        let (base, id) = &records[i];
        let mut r = base.clone();
        for (a, s) in r.files.iter_mut().zip(sizes.iter().cycle()) {
            a.size = *s;
        }
        parse_record_checked(&r.to_json(), id)
    });
}
