//! The house runs one way: every module of `src/` names only modules of a lower layer (or its
//! own), the daemons' contract names nothing of bottle, and the bundle's servers name only the
//! contract. The layers are `LAYERS` below, the same picture `src/lib.rs` draws; a new
//! top-level module must be placed in it.
//!
//! Imports are read from the source as written: `crate::a::…` paths anywhere in code, `use
//! crate::{a, b::…}` trees, and `super::` paths that climb out of a top-level module. Comments
//! and string literals are skipped, so a doc link names nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top: a module may name modules of its own layer's lower layers only.
const LAYERS: &[&[&str]] = &[
    &["daemons", "digest", "files", "text", "progress"],
    &["recipe"],
    &["plan"],
    &["context"],
    &["hash"],
    &["manifest", "oci"],
    &["config", "runtime"],
    &["store"],
    &["builder", "bundle", "diff", "run", "share"],
    &["console", "preflight", "prepare"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `.rs` file under `dir`, with its module path (`["bundle", "pipelock", "proxy"]`).
fn sources(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(dir).unwrap().with_extension("");
                let mut module: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|l| l == "mod") {
                    module.pop();
                }
                if module == ["lib"] || module == ["main"] {
                    module.clear();
                }
                out.push((p, module));
            }
        }
    }
    out.sort();
    out
}

/// The code without its `#[cfg(test)] mod … { … }` blocks: a module's own tests may reach
/// across (a host-side test against the bundle's side of a protocol) and name their module
/// through `super::super::`.
fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{').filter(|o| after[..*o].contains("mod ")) else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The code without comments, string literals (raw ones too) and char literals.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some((prefix, hashes)) = raw_string_start(rest) {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + prefix + hashes + 1;
            i = body
                + text[body..]
                    .find(&close)
                    .map_or(text.len() - body, |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap();
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`…: the prefix's length and its number of hashes, when a raw string
/// starts here.
fn raw_string_start(rest: &str) -> Option<(usize, usize)> {
    let b = usize::from(rest.starts_with('b'));
    let r = rest[b..].strip_prefix('r')?;
    let hashes = r.len() - r.trim_start_matches('#').len();
    r[hashes..].starts_with('"').then_some((b + 1, hashes))
}

/// The length of a char literal starting here (`'a'`, `'\n'`, `'\''`), not a lifetime.
fn char_literal_len(rest: &str) -> Option<usize> {
    let mut it = rest.char_indices().skip(1);
    let (_, c) = it.next()?;
    if c == '\\' {
        let end = rest[2..].find('\'')? + 2;
        return Some(end + 1);
    }
    let (j, close) = it.next()?;
    (close == '\'').then_some(j + 1)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a file names: `module` is its own path.
fn named_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (is_ident(bytes[at - 1] as char) || bytes[at - 1] == b':') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e}}`: the first name of each top-level item.
            for item in split_top_level(group) {
                let name: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() && name != "self" {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    // `super::super::x` climbing out of the top-level module names `x`.
    for (at, _) in code.match_indices("super::") {
        if at > 0 && (is_ident(bytes[at - 1] as char) || bytes[at - 1] == b':') {
            continue;
        }
        let mut rest = &code[at..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r;
        }
        if up >= module.len() {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The items of a `{…}` group at its top level, up to its closing brace.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// Each file of `src/` with the top-level modules it names besides its own.
fn imports() -> Vec<(PathBuf, String, BTreeSet<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    sources(&src)
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(path, module)| {
            let code = without_test_modules(&code_only(&std::fs::read_to_string(&path).unwrap()));
            let mut named = named_modules(&code, &module);
            named.remove(&module[0]);
            (path, module[0].clone(), named)
        })
        .collect()
}

#[test]
fn the_scanner_sees_every_form_of_import_and_nothing_in_comments_or_strings() {
    let code = code_only(
        r###"
        use crate::{hash, plan::X, store::{a, b}};
        use crate::run::steps;
        fn f() { crate::cli::go(); super::super::console::x(); let s = "crate::share"; }
        // crate::builder
        /* crate::oci /* nested */ crate::diff */
        let r = r#"crate::recipe"#; let c = '"'; crate::text::dim();
        #[cfg(test)]
        mod tests { use crate::store; fn t() { if true { crate::run::x() } } }
        #[cfg(test)]
        fn not_a_module() { crate::diff::d(); }
        "###,
    );
    let code = without_test_modules(&code);
    let named = named_modules(&code, &["bundle".into(), "pipelock".into()]);
    let want: BTreeSet<String> = [
        "cli", "console", "diff", "hash", "plan", "run", "store", "text",
    ]
    .map(String::from)
    .into();
    assert_eq!(named, want);
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for (_, module) in sources(&src) {
        if let Some(top) = module.first()
            && layer_of(top).is_none()
        {
            missing.push(top.clone());
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "src/ has top-level modules no layer holds: {missing:?}; place each in LAYERS (tests/offline/layers.rs) and in the picture of src/lib.rs"
    );
}

#[test]
fn the_daemons_contract_names_nothing_of_bottle() {
    let bad: Vec<String> = imports()
        .into_iter()
        .filter(|(_, top, named)| top == "daemons" && !named.is_empty())
        .map(|(path, _, named)| format!("{} names {named:?}", path.display()))
        .collect();
    assert!(
        bad.is_empty(),
        "src/daemons is the contract at the bottom and may name nothing else of bottle; move what it needs down into it:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_bundles_servers_name_only_the_contract() {
    let bad: Vec<String> = imports()
        .into_iter()
        .filter(|(_, top, named)| top == "bundle" && named.iter().any(|n| n != "daemons"))
        .map(|(path, _, named)| format!("{} names {named:?}", path.display()))
        .collect();
    assert!(
        bad.is_empty(),
        "src/bundle (what runs in the bundle) may name only src/daemons: not hash, manifest, config, store, run, plan or builder:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_import_goes_down_the_layers() {
    let mut bad = Vec::new();
    for (path, top, named) in imports() {
        let Some(own) = layer_of(&top) else { continue };
        for n in &named {
            match layer_of(n) {
                Some(l) if l < own => {}
                Some(l) => bad.push(format!(
                    "{} ({top}, layer {own}) names {n} (layer {l})",
                    path.display()
                )),
                None => bad.push(format!(
                    "{} names {n}, which no layer holds",
                    path.display()
                )),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports that go up or across the layers of tests/offline/layers.rs (move the shared type down, or the module up):\n{}",
        bad.join("\n")
    );
}
