//! BuildHash: the name of a build, computed from its inputs *before* anything is built.
//!
//! The hash is blake3 over the canonical JSON encoding of a [`BuildKey`]:
//!
//! | goes into the hash | why |
//! | --- | --- |
//! | `builder` ([`BUILDER`]): the build format version and a blake3 of the crate's sources (every file under `src/`, `Cargo.lock`, `Cargo.toml`, `build.rs`) with the profile, target, rustflags and `rustc -vV`, computed by `build.rs` at compile time | a builder that makes different artifacts must not reuse old entries; the bundle image holds the `bottle` binary itself, so its sources are an input of every build (a compile-time constant: `bottle hash` never reads the executable) |
//! | `plan`: the whole [`Plan`] (serde JSON; struct fields in declaration order, maps sorted) | every recipe field that changes what is built |
//! | `inputs`: a sorted map from each referenced file's path (relative to the recipe's folder) to its blake3 digest and executable bit, or a symlink's target | the Dockerfile and *every* file of its context, an image archive, the prompt, every file of the skills folder |
//!
//! | stays out of the hash | why |
//! | --- | --- |
//! | the recipe's text (key order, whitespace, comments) | only its meaning, the plan, counts |
//! | the recipe's folder on this machine | paths are relative, so checkouts in two places agree |
//! | mtimes, owners, permission bits other than executable | they do not change what is built |
//! | token values | the plan holds only the *names* of token env vars; values are read by `bottle run` |
//! | identity keys | referenced by host path only, never read at build time |
//! | CA keys | minted fresh by the build; they are outputs, not inputs |
//!
//! Some inputs cannot be pinned by content: a Dockerfile `FROM` of a tag without a digest, a
//! `FROM` whose name comes from an `ARG`, an `ADD` of a URL. Each is an [`Impurity`]: a warning
//! by default and an error under `--pure`; its message says how to pin it. (A registry
//! `reference` in the recipe without a digest is refused outright by the plan.) What a `RUN`
//! step downloads cannot be seen from outside at all: recipes meant to be reproducible build
//! from vendored files.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::{ImagePlan, Plan, Planned};

/// The builder: the build format and a digest of the sources of the `bottle` binary doing the
/// build (computed by `build.rs` at compile time). The binary itself goes into the bundle
/// image, so a different binary must make a different hash. Bump the format whenever the
/// build would make different artifacts from the same plan and inputs.
pub const BUILDER: &str = concat!("bottle-build/1+", env!("BOTTLE_SOURCE_DIGEST"));

/// Files at least this large are hashed with memory mapping across all cores.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// A 64-hex blake3 digest naming one build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct BuildHash(String);

impl TryFrom<String> for BuildHash {
    type Error = String;
    fn try_from(s: String) -> Result<BuildHash, String> {
        BuildHash::parse(&s).ok_or_else(|| format!("{s:?} is not a 64-hex build hash"))
    }
}

impl From<BuildHash> for String {
    fn from(h: BuildHash) -> String {
        h.0
    }
}

impl BuildHash {
    pub fn parse(s: &str) -> Option<BuildHash> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| BuildHash(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, for resource names and messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for BuildHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the hash covers; kept beside each store entry as `key.json` so `bottle diff` can
/// say why two builds differ.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildKey {
    pub builder: String,
    pub plan: Plan,
    /// Relative path → `b3:HEX` (regular file), `b3x:HEX` (executable file) or `link:TARGET`.
    pub inputs: BTreeMap<String, String>,
}

impl BuildKey {
    /// The canonical encoding the hash is taken over.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a BuildKey always serializes")
    }
    pub fn hash(&self) -> BuildHash {
        BuildHash(blake3::hash(&self.canonical()).to_hex().to_string())
    }
}

/// An input the hash cannot pin by content.
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

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read input {path}: {source}; check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "input {path} is neither a file, a folder nor a symlink; remove it from the recipe's inputs"
    )]
    Special { path: PathBuf },
}

/// The key of a plan: reads and digests every file the plan references.
pub fn key(planned: &Planned) -> Result<(BuildKey, Vec<Impurity>), HashError> {
    key_with_builder(planned, BUILDER)
}

pub fn key_with_builder(
    planned: &Planned,
    builder: &str,
) -> Result<(BuildKey, Vec<Impurity>), HashError> {
    let plan = &planned.plan;
    let mut inputs = BTreeMap::new();
    let mut impurities = Vec::new();
    match &plan.guest.image {
        ImagePlan::Dockerfile {
            dockerfile,
            context,
        } => {
            add_tree(planned, context, &mut inputs)?;
            add_file(planned, dockerfile, &mut inputs)?;
            let path = planned.host_path(dockerfile);
            let text = std::fs::read_to_string(&path).map_err(|source| HashError::Read {
                path: path.clone(),
                source,
            })?;
            impurities.extend(dockerfile_impurities(&path, &text));
        }
        ImagePlan::Archive { archive } => add_file(planned, archive, &mut inputs)?,
        ImagePlan::Reference { .. } => {}
    }
    if let Some(prompt) = &plan.provision.prompt {
        add_file(planned, prompt, &mut inputs)?;
    }
    if let Some(skills) = &plan.provision.skills {
        add_tree(planned, skills, &mut inputs)?;
    }
    Ok((
        BuildKey {
            builder: builder.to_string(),
            plan: plan.clone(),
            inputs,
        },
        impurities,
    ))
}

fn add_file(
    planned: &Planned,
    rel: &str,
    inputs: &mut BTreeMap<String, String>,
) -> Result<(), HashError> {
    let path = planned.host_path(rel);
    let meta = std::fs::symlink_metadata(&path).map_err(|source| HashError::Read {
        path: path.clone(),
        source,
    })?;
    inputs.insert(rel.to_string(), entry_digest(&path, &meta)?);
    Ok(())
}

/// Every file below `rel`, in sorted order, symlinks recorded by their target (not followed).
fn add_tree(
    planned: &Planned,
    rel: &str,
    inputs: &mut BTreeMap<String, String>,
) -> Result<(), HashError> {
    let dir = planned.host_path(rel);
    let mut stack = vec![(dir, rel.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| HashError::Read {
            path: dir.clone(),
            source,
        })?;
        for ent in rd {
            let ent = ent.map_err(|source| HashError::Read {
                path: dir.clone(),
                source,
            })?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = ent.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|source| HashError::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push((path, child_rel));
            } else {
                inputs.insert(child_rel, entry_digest(&path, &meta)?);
            }
        }
    }
    Ok(())
}

fn entry_digest(path: &Path, meta: &std::fs::Metadata) -> Result<String, HashError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|source| HashError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(format!("link:{}", target.to_string_lossy()));
    }
    if !ft.is_file() {
        return Err(HashError::Special {
            path: path.to_path_buf(),
        });
    }
    let (digest, _) = file_digest(path).map_err(|source| HashError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let exec = meta.permissions().mode() & 0o111 != 0;
    Ok(format!("{}:{}", if exec { "b3x" } else { "b3" }, digest))
}

/// blake3 of a file's content and its size; large files are memory-mapped and hashed on all
/// cores (as `b3sum` does), small ones read.
pub fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// `FROM` lines whose image the hash cannot pin, and `ADD`s of URLs.
pub fn dockerfile_impurities(path: &Path, text: &str) -> Vec<Impurity> {
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
                if let Some(pos) = args.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                    if let Some(stage) = args.get(pos + 1) {
                        stages.push(stage.to_ascii_lowercase());
                    }
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
            "ADD" => {
                if args.iter().any(|a| {
                    a.starts_with("http://") || a.starts_with("https://") || a.starts_with("git@")
                }) {
                    out.push(at("ADD of a URL fetches content the hash cannot pin; download it beside the recipe and COPY it".to_string()));
                }
            }
            _ => {}
        }
    }
    out
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
            "# c\nFROM scratch\nFROM node:20 AS base\nFROM base\nFROM alpine@sha256:{d}\nARG X\nFROM $X\nADD https://x/y /y\n"
        );
        let got: Vec<usize> = dockerfile_impurities(Path::new("D"), &text)
            .iter()
            .map(|i| i.line)
            .collect();
        assert_eq!(got, vec![3, 7, 8]);
    }

    #[test]
    fn build_hash_parse() {
        assert!(BuildHash::parse(&"0".repeat(64)).is_some());
        assert!(BuildHash::parse(&"0".repeat(63)).is_none());
        assert!(BuildHash::parse(&"A".repeat(64)).is_none());
    }
}
