//! Reading an image archive someone else wrote (`docker save`, any engine) without unpacking it:
//! one pass over the tar headers (seeking past contents) records where each member's bytes are;
//! members are then read in place, streamed.
//!
//! Both layouts name their parts in `manifest.json`: docker 20.10 writes `<hex>.json` for the
//! config and `<id>/layer.tar` for layers; docker 25+ writes `blobs/sha256/<hex>` for both (its
//! `<id>/layer.tar`, when present, are symlinks into `blobs/`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// Symlinks followed at most this many times to reach a member (a loop is an error).
const MAX_LINK_HOPS: usize = 16;
/// `manifest.json` larger than this is not an image archive's.
const MAX_MANIFEST: u64 = 16 << 20;
/// Read buffer for streaming a member.
const BUFFER: usize = 1 << 20;

/// Where a member of the archive is.
#[derive(Debug, Clone)]
enum Member {
    /// A regular file: its bytes are at `offset`, `size` long.
    File { offset: u64, size: u64 },
    /// A symlink or hard link to another member (a normalized archive path).
    Link(String),
}

/// An image archive on disk, indexed.
pub(super) struct Archive {
    path: PathBuf,
    members: HashMap<String, Member>,
}

/// The one image an archive holds, as its `manifest.json` names it.
pub(super) struct Image {
    /// Archive path of the config.
    pub config: String,
    /// The sha256 (hex) the config's name carries: the image id.
    pub config_hex: String,
    /// Archive paths of the layers, base first.
    pub layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

impl Archive {
    /// Indexes the archive at `path`: one pass over its tar headers.
    pub fn open(path: &Path) -> Result<Archive> {
        let mut file = File::open(path)
            .with_context(|| format!("cannot open image archive {}", path.display()))?;
        let mut magic = [0u8; 2];
        if file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b] {
            bail!(
                "{} is gzip-compressed; decompress it first (`gunzip -c {0} > image.tar`)",
                path.display()
            );
        }
        file.seek(SeekFrom::Start(0))?;
        let not_tar = || {
            format!(
                "{} is not a readable tar archive; make it with `docker save IMAGE -o FILE`",
                path.display()
            )
        };
        let mut tar = tar::Archive::new(file);
        let mut members = HashMap::new();
        for entry in tar.entries_with_seek().with_context(not_tar)? {
            let entry = entry.with_context(not_tar)?;
            let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            let member = if kind.is_file() || kind.is_contiguous() {
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = String::from_utf8_lossy(&target).into_owned();
                Member::Link(if kind.is_symlink() {
                    resolve(&name, &target)
                } else {
                    clean(&target)
                })
            } else {
                continue;
            };
            members.insert(name, member);
        }
        Ok(Archive {
            path: path.to_path_buf(),
            members,
        })
    }

    /// The image `manifest.json` lists: exactly one.
    pub fn image(&self) -> Result<Image> {
        let shown = self.path.display();
        if !self.members.contains_key("manifest.json") {
            bail!(
                "{shown} is not a `docker save` archive (it has no manifest.json); make it with `docker save IMAGE -o FILE`"
            );
        }
        let mut text = Vec::new();
        self.member("manifest.json")?
            .take(MAX_MANIFEST)
            .read_to_end(&mut text)
            .with_context(|| format!("cannot read manifest.json in {shown}"))?;
        let entries: Vec<ManifestEntry> = serde_json::from_slice(&text)
            .with_context(|| format!("{shown}: manifest.json is not a docker save manifest"))?;
        let entry = match <[ManifestEntry; 1]>::try_from(entries) {
            Ok([entry]) => entry,
            Err(entries) => bail!(
                "{shown} holds {} images; save exactly one (`docker save IMAGE -o FILE`)",
                entries.len()
            ),
        };
        let config = clean(&entry.config);
        let config_hex = config
            .strip_prefix("blobs/sha256/")
            .or_else(|| config.strip_suffix(".json"))
            .filter(|hex| super::sha256::is_sha256_hex(hex))
            .ok_or_else(|| {
                anyhow!(
                    "{shown}: image config {:?} is not named by a sha256 digest",
                    entry.config
                )
            })?
            .to_string();
        Ok(Image {
            config,
            config_hex,
            layers: entry.layers.iter().map(|l| clean(l)).collect(),
        })
    }

    /// The config of `image`, checked against the digest its name carries.
    pub fn read_config(&self, image: &Image) -> Result<Vec<u8>> {
        let shown = self.path.display();
        let mut bytes = Vec::new();
        self.member(&image.config)?
            .take(MAX_MANIFEST)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the image config in {shown}"))?;
        let actual = super::sha256::sha256_hex(&bytes);
        if actual != image.config_hex {
            bail!(
                "{shown}: the image config {} has sha256 {actual}; the archive is damaged, save the image again",
                image.config
            );
        }
        Ok(bytes)
    }

    /// A stream of the bytes of member `name` (links followed).
    pub fn member(&self, name: &str) -> Result<Take<BufReader<File>>> {
        let shown = self.path.display();
        let mut current = clean(name);
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&current) {
                None => bail!("{shown} has no member {name:?}, which its manifest.json names"),
                Some(Member::Link(target)) => current = target.clone(),
                Some(Member::File { offset, size }) => {
                    let mut file = File::open(&self.path)
                        .with_context(|| format!("cannot open image archive {shown}"))?;
                    file.seek(SeekFrom::Start(*offset))?;
                    return Ok(BufReader::with_capacity(BUFFER, file).take(*size));
                }
            }
        }
        bail!("{shown}: member {name:?} is a symlink loop")
    }
}

/// An archive path without `./`, empty or `.` components, or a trailing `/`; `..` is applied.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The archive path a symlink at `link` pointing to `target` names (relative to the link's
/// folder, or to the archive's root when absolute).
fn resolve(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return clean(target);
    }
    match link.rsplit_once('/') {
        Some((dir, _)) => clean(&format!("{dir}/{target}")),
        None => clean(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_links_resolved() {
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(
            resolve("abc/layer.tar", "../blobs/sha256/00"),
            "blobs/sha256/00"
        );
        assert_eq!(resolve("x", "/y/z"), "y/z");
        assert_eq!(resolve("x", "y"), "y");
    }
}
