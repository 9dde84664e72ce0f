//! Reading a Dockerfile for what the hash and the build must know of it: `FROM` images and
//! `ADD`s of URLs the hash cannot pin (its impurities), and its `RUN` steps, which decide
//! whether the guest artifact can be reproducible. Continued lines are joined, comments
//! dropped; nothing else of the syntax is interpreted. [`Impurity`] lives here, below
//! `crate::hash`, which returns it with the keys.

use std::fmt;
use std::path::{Path, PathBuf};

/// An input the hash cannot pin by content: a warning, or an error under `--pure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impurity {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Impurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// `FROM` lines whose image the hash cannot pin, and `ADD`s of URLs.
pub fn impurities(path: &Path, text: &str) -> Vec<Impurity> {
    let mut stages: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, raw) in logical_lines(text) {
        let line = raw.trim();
        let mut words = line.split_whitespace();
        let Some(instr) = words.next() else { continue };
        let instr = instr.to_ascii_uppercase();
        let args: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let at = |message: String| Impurity {
            file: path.to_path_buf(),
            line: i,
            message,
        };
        match instr.as_str() {
            "FROM" => {
                let Some(image) = args.first() else { continue };
                if let Some(pos) = args.iter().position(|w| w.eq_ignore_ascii_case("AS"))
                    && let Some(stage) = args.get(pos + 1)
                {
                    stages.push(stage.to_ascii_lowercase());
                }
                if image.contains('$') {
                    out.push(at(format!("FROM {image} takes its image from an ARG, which the hash cannot pin; write the image as NAME@sha256:DIGEST")));
                } else if *image == "scratch" || stages.contains(&image.to_ascii_lowercase()) {
                } else if !crate::plan::is_pinned_reference(image) {
                    out.push(at(format!(
                        "FROM {image} names a tag, which can move; pin it as {}@sha256:DIGEST",
                        image.split(':').next().unwrap_or(image)
                    )));
                }
            }
            "ADD"
                if args.iter().any(|a| {
                    a.starts_with("http://") || a.starts_with("https://") || a.starts_with("git@")
                }) =>
            {
                out.push(at("ADD of a URL fetches content the hash cannot pin; download it beside the recipe and COPY it".to_string()));
            }
            _ => {}
        }
    }
    out
}

/// Line numbers of a Dockerfile's `RUN` steps: what they write is up to them, so the guest
/// artifact is bit-identical across builds only if they are deterministic.
pub fn run_lines(text: &str) -> Vec<usize> {
    logical_lines(text)
        .into_iter()
        .filter(|(_, l)| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("RUN"))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Joins backslash-continued lines and drops comments; yields (first line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if cur.is_none() && t.trim_start().starts_with('#') {
            continue;
        }
        let (start, mut acc) = cur.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = t.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            cur = Some((start, acc));
        } else {
            acc.push_str(t);
            out.push((start, acc));
        }
    }
    if let Some(c) = cur {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_from_lines() {
        let d = "b".repeat(64);
        let text = format!(
            "# c\nFROM scratch\nFROM node:20 AS base\nFROM base\nFROM alpine@sha256:{d}\nARG X\nFROM $X\nADD https://x/y /y\nRUN a \\\n  b\n"
        );
        let got: Vec<usize> = impurities(Path::new("D"), &text)
            .iter()
            .map(|i| i.line)
            .collect();
        assert_eq!(got, vec![3, 7, 8]);
        assert_eq!(run_lines(&text), vec![9]);
    }
}
