//! The archive layout bottle writes: what docker 25+'s `docker save` writes, in a fixed order,
//! every tar header with mtime 0, uid/gid 0 and mode 0644 (no folder entries):
//!
//! ```text
//! oci-layout                    {"imageLayoutVersion":"1.0.0"}
//! index.json                    OCI index naming the OCI manifest (and the tag, if any)
//! manifest.json                 [{"Config":"blobs/sha256/<cfg>","RepoTags":[…],"Layers":[…]}]
//! blobs/sha256/<cfg>            image config
//! blobs/sha256/<manifest>       OCI image manifest
//! blobs/sha256/<layer>…         layer tars, base first, each once
//! ```
//!
//! docker 20.10's `docker load` reads only `manifest.json` (any member names do); newer engines
//! and OCI tools read `index.json`. The small members come first, so reading the image id
//! ([`super::image_id`]) never scans past the layers.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::config::canonical_json;
use super::image::ImageInfo;
use super::layer::Blob;
use super::sha256::sha256_hex;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Write buffer for the archive.
const BUFFER: usize = 1 << 20;

/// Writes the archive of the image made of `config` and `layers` into `dest` (replacing it
/// whole: written beside it, synced, renamed), tagged `repo_tag` when given.
pub(super) fn write(
    dest: &Path,
    config: &[u8],
    layers: &[Blob],
    repo_tag: Option<&str>,
) -> Result<ImageInfo> {
    let tag = repo_tag.map(RepoTag::parse).transpose()?;
    let config_hex = sha256_hex(config);
    let manifest = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": LAYER_TYPE, "digest": l.digest(), "size": l.size,
        })).collect::<Vec<Value>>(),
    }));
    let manifest_hex = sha256_hex(&manifest);
    let index = index_json(&manifest_hex, manifest.len(), tag.as_ref());
    let docker_manifest = canonical_json(&json!([{
        "Config": blob_path(&config_hex),
        "RepoTags": repo_tag.into_iter().collect::<Vec<&str>>(),
        "Layers": layers.iter().map(|l| blob_path(&l.hex)).collect::<Vec<String>>(),
    }]));

    let write_err = || format!("cannot write image archive {}", dest.display());
    let tmp = tempfile::Builder::new()
        .prefix(".bottle-oci-")
        .suffix(".tar")
        .tempfile_in(parent_dir(dest))
        .with_context(write_err)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(BUFFER, tmp.as_file()));
    for (name, bytes) in [
        ("oci-layout".to_string(), OCI_LAYOUT),
        ("index.json".to_string(), &index[..]),
        ("manifest.json".to_string(), &docker_manifest[..]),
        (blob_path(&config_hex), config),
        (blob_path(&manifest_hex), &manifest[..]),
    ] {
        append(&mut tar, &name, bytes.len() as u64, bytes).with_context(write_err)?;
    }
    let mut written = HashSet::new();
    for layer in layers.iter().filter(|l| written.insert(&l.hex)) {
        let file = File::open(&layer.path)
            .with_context(|| format!("cannot reopen layer {}", layer.path.display()))?;
        append(
            &mut tar,
            &blob_path(&layer.hex),
            layer.size,
            file.take(layer.size),
        )
        .with_context(write_err)?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .with_context(write_err)?;
    tmp.as_file().sync_all().with_context(write_err)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .with_context(write_err)?;
    tmp.persist(dest).with_context(write_err)?;
    Ok(ImageInfo {
        id: format!("sha256:{config_hex}"),
        layers: layers.len(),
    })
}

/// One regular member: mtime 0, uid/gid 0, mode 0644.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(0o644);
    header.set_size(size);
    tar.append_data(&mut header, name, data)?;
    Ok(())
}

fn blob_path(hex: &str) -> String {
    format!("blobs/sha256/{hex}")
}

/// `index.json`: the OCI manifest, annotated with the tag as docker 25+ writes it.
fn index_json(manifest_hex: &str, size: usize, tag: Option<&RepoTag>) -> Vec<u8> {
    let mut entry = json!({
        "mediaType": MANIFEST_TYPE,
        "digest": format!("sha256:{manifest_hex}"),
        "size": size,
    });
    if let Some(tag) = tag {
        entry["annotations"] = json!({
            "io.containerd.image.name": tag.full_name(),
            "org.opencontainers.image.ref.name": tag.tag,
        });
    }
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [entry],
    }))
}

/// A `name:tag` as `docker load` takes it in `RepoTags`.
#[derive(Debug, PartialEq, Eq)]
struct RepoTag {
    name: String,
    tag: String,
}

impl RepoTag {
    fn parse(s: &str) -> Result<RepoTag> {
        let (name, tag) = match s.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => bail!(
                "image tag {s:?} has no tag part; write it as NAME:TAG, e.g. \"bottle-bundle:abc123\""
            ),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !tag.starts_with(['.', '-']);
        let name_ok = !name.is_empty()
            && !name
                .bytes()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace());
        if !tag_ok || !name_ok {
            bail!(
                "image tag {s:?} is not a valid NAME:TAG (lowercase name; tag of letters, digits, `_`, `.`, `-`)"
            );
        }
        Ok(RepoTag {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The fully qualified name containerd records (`docker.io/library/NAME:TAG`).
    fn full_name(&self) -> String {
        let domain = match self.name.split_once('/') {
            None => "docker.io/library/",
            Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => "",
            Some(_) => "docker.io/",
        };
        format!("{domain}{}:{}", self.name, self.tag)
    }
}

/// The folder `path` is in (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tags_parse_and_qualify() {
        let t = RepoTag::parse("bottle-bundle:abc").unwrap();
        assert_eq!(t.full_name(), "docker.io/library/bottle-bundle:abc");
        let t = RepoTag::parse("localhost:5000/x/y:1.0").unwrap();
        assert_eq!(t.full_name(), "localhost:5000/x/y:1.0");
        assert_eq!(
            RepoTag::parse("me/x:t").unwrap().full_name(),
            "docker.io/me/x:t"
        );
        for bad in ["x", "x:", "localhost:5000/x", "X:t", ":t", "x:-t"] {
            assert!(RepoTag::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
