//! Image archives: the files `docker load` and smolvm read, written by bottle itself.
//!
//! This module owns the image archive format bottle writes and the three things done with it:
//!
//! - [`write_image`]: a `FROM scratch` image of one layer made of given host files (the bundle
//!   image: the running `bottle` as `/bottle`), with no engine involved;
//! - [`normalize`]: a `docker save` archive of one image rewritten so that its bytes depend only
//!   on the image's content (no timestamps, no ids of throwaway build containers), so the same
//!   Dockerfile built on two engines gives the same archive and the same image id;
//! - [`image_id`]: the image id an archive holds, checked against its config.
//!
//! Both writers produce the layout docker 25+'s `docker save` writes, which docker 20.10's
//! `docker load` also reads (it only reads `manifest.json`): `oci-layout`, `index.json`,
//! `manifest.json`, then `blobs/sha256/<hex>` for the config, the OCI manifest and each layer
//! (see `layout.rs`). Same inputs, same bytes: every date is [`EPOCH`], every tar header has
//! mtime 0 (the archive's own headers also uid/gid 0 and mode 0644), entries come in a fixed
//! order, JSON is canonical (sorted keys, no whitespace).
//!
//! Memory stays flat however large a layer: file contents are streamed, layers are rewritten
//! through temporary files in a folder beside the destination, and sha256 is computed while
//! writing. The destination appears whole or not at all (written beside it, then renamed).

mod config;
mod image;
mod input;
mod layer;
mod layout;
mod sha256;

use std::path::Path;

use anyhow::{Context, Result, bail};

pub use image::{EPOCH, ImageConfig, ImageInfo, LayerFile};
use layout::parent_dir;

/// Writes to `dest` the archive of a `FROM scratch` image of one layer holding `layer`'s files,
/// run as `config` says; `repo_tag` (`name:tag`) is the tag `docker load` gives it. The same
/// inputs give the same bytes.
pub fn write_image(
    dest: &Path,
    layer: &[LayerFile],
    config: &ImageConfig,
    repo_tag: Option<&str>,
) -> Result<ImageInfo> {
    let work = scratch_dir(dest)?;
    let blob = layer::write_files(layer, &work.path().join("layer.tar"))
        .with_context(|| format!("cannot write the image layer for {}", dest.display()))?;
    let config = config::for_files(config, &blob.digest());
    layout::write(dest, &config, &[blob], repo_tag)
}

/// Reads `src`, a `docker save` archive of one image (docker 20.10's layout, or the OCI layout
/// newer engines write), and writes to `dest` an archive of the same image whose bytes depend
/// only on the image's content: layer tars with every time zeroed, the config without build
/// machine details, dates at [`EPOCH`]. `repo_tag` (`name:tag`) is the tag `docker load` gives it.
pub fn normalize(src: &Path, dest: &Path, repo_tag: Option<&str>) -> Result<ImageInfo> {
    let archive = input::Archive::open(src)?;
    let image = archive.image()?;
    let raw_config = archive.read_config(&image)?;
    let diff_ids = config::diff_ids(&raw_config, image.layers.len())
        .with_context(|| format!("{}: bad image config {}", src.display(), image.config))?;
    let work = scratch_dir(dest)?;
    let mut blobs = Vec::with_capacity(image.layers.len());
    for (i, name) in image.layers.iter().enumerate() {
        let what = || format!("{}: layer {} ({name})", src.display(), i + 1);
        let reader = archive.member(name).with_context(what)?;
        let (blob, read) = layer::normalize(reader, &work.path().join(format!("layer-{i}.tar")))
            .with_context(what)?;
        if read != diff_ids[i] {
            bail!(
                "{}: its content is {read} but the image config says {}; the archive is damaged, save the image again",
                what(),
                diff_ids[i]
            );
        }
        blobs.push(blob);
    }
    let new_ids: Vec<String> = blobs.iter().map(layer::Blob::digest).collect();
    let config = config::normalize(&raw_config, &new_ids)
        .with_context(|| format!("{}: bad image config {}", src.display(), image.config))?;
    layout::write(dest, &config, &blobs, repo_tag)
}

/// The image id (`sha256:…` of its config) of the one image in an image archive, in docker
/// 20.10's layout or the OCI layout; the config's content is checked against its name.
pub fn image_id(archive: &Path) -> Result<String> {
    let archive = input::Archive::open(archive)?;
    let image = archive.image()?;
    archive.read_config(&image)?;
    Ok(format!("sha256:{}", image.config_hex))
}

/// A temporary folder beside `dest` (same file system, so the result is renamed into place),
/// removed when dropped.
fn scratch_dir(dest: &Path) -> Result<tempfile::TempDir> {
    let parent = parent_dir(dest);
    tempfile::Builder::new()
        .prefix(".bottle-oci-")
        .tempdir_in(parent)
        .with_context(|| {
            format!(
                "cannot make a temporary folder in {} to write {}; check that the folder exists and is writable",
                parent.display(),
                dest.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::sha256::sha256_hex;
    use super::*;
    use serde_json::json;

    fn busybox_like(dir: &Path, body: &[u8]) -> Vec<LayerFile> {
        let source = dir.join("tool");
        std::fs::write(&source, body).unwrap();
        vec![LayerFile {
            path: "usr/bin/tool".into(),
            source,
            mode: 0o755,
        }]
    }

    fn config() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/usr/bin/tool".into()],
            cmd: vec!["run".into()],
            env: vec!["PATH=/usr/bin".into()],
            labels: BTreeMap::from([("bottle.role".into(), "test".into())]),
        }
    }

    #[test]
    fn write_image_is_deterministic_and_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let files = busybox_like(dir.path(), b"one");
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        let info = write_image(&a, &files, &config(), Some("t:1")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(
            write_image(&b, &files, &config(), Some("t:1")).unwrap(),
            info
        );
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(info.layers, 1);
        assert_eq!(image_id(&a).unwrap(), info.id);

        std::fs::write(&files[0].source, b"two").unwrap();
        let changed = write_image(&b, &files, &config(), Some("t:1")).unwrap();
        assert_ne!(changed.id, info.id);
        let mut other = config();
        other.cmd = vec!["other".into()];
        assert_ne!(
            write_image(&b, &files, &other, None).unwrap().id,
            changed.id
        );
        let mut names = Vec::new();
        for e in tar::Archive::new(std::fs::File::open(&a).unwrap())
            .entries()
            .unwrap()
        {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            assert_eq!(e.header().mode().unwrap(), 0o644);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names[..3], ["oci-layout", "index.json", "manifest.json"]);
        assert_eq!(names[3], format!("blobs/sha256/{}", &info.id[7..]));
    }

    #[test]
    fn normalize_leaves_a_written_image_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let files = busybox_like(dir.path(), b"content");
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        let info = write_image(&a, &files, &config(), Some("t:1")).unwrap();
        assert_eq!(normalize(&a, &b, Some("t:1")).unwrap(), info);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    /// A `docker save` archive as docker 20.10 writes it (config first, manifest.json last),
    /// or in the OCI layout with a legacy `<id>/layer.tar` symlink into `blobs/`.
    fn docker_save(dest: &Path, when: u64, oci: bool) {
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("bin/x").unwrap();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_mtime(when);
        h.set_cksum();
        layer.append(&h, &b"hi"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let diff = sha256_hex(&layer);
        let created = format!("2026-01-01T00:00:{:02}Z", when % 60);
        let config = json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "container": format!("{when:064}"), "docker_version": "20.10.24",
            "config": {"Image": format!("sha256:{when:064}"), "Hostname": "", "User": "1"},
            "history": [{"created": created, "created_by": "COPY x"}],
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
        })
        .to_string();
        let cfg = sha256_hex(config.as_bytes());
        let (cfg_name, layer_name) = if oci {
            (
                format!("blobs/sha256/{cfg}"),
                format!("blobs/sha256/{diff}"),
            )
        } else {
            (format!("{cfg}.json"), format!("{when:064}/layer.tar"))
        };
        let manifest = json!([{"Config": cfg_name, "RepoTags": ["x:1"],
            "Layers": [if oci { format!("{when:064}/layer.tar") } else { layer_name.clone() }]}]);
        let mut out = tar::Builder::new(std::fs::File::create(dest).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(when);
            out.append_data(&mut h, name, data).unwrap();
        };
        add(&cfg_name, config.as_bytes());
        add(&layer_name, &layer);
        add("manifest.json", manifest.to_string().as_bytes());
        if oci {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mtime(when);
            out.append_link(
                &mut h,
                format!("{when:064}/layer.tar"),
                format!("../{layer_name}"),
            )
            .unwrap();
        }
        out.finish().unwrap();
    }

    #[test]
    fn normalize_reads_both_layouts_and_drops_times() {
        let dir = tempfile::tempdir().unwrap();
        let mut outputs = Vec::new();
        for (when, oci) in [(1, false), (2, false), (3, true)] {
            let src = dir.path().join(format!("save-{when}.tar"));
            docker_save(&src, when, oci);
            assert!(image_id(&src).unwrap().starts_with("sha256:"));
            let dest = dir.path().join(format!("norm-{when}.tar"));
            let info = normalize(&src, &dest, None).unwrap();
            assert_eq!(image_id(&dest).unwrap(), info.id);
            assert_eq!(info.layers, 1);
            outputs.push(std::fs::read(&dest).unwrap());
        }
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(outputs[0], outputs[2]);
    }

    #[test]
    fn damaged_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("save.tar");
        docker_save(&src, 1, false);
        // A config whose content does not match its name.
        let bytes = std::fs::read(&src).unwrap();
        let at = bytes.windows(6).position(|w| w == b"\"linux").unwrap();
        let mut bad = bytes.clone();
        bad[at + 1] = b'L';
        let bad_path = dir.path().join("bad.tar");
        std::fs::write(&bad_path, &bad).unwrap();
        let err = image_id(&bad_path).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        assert!(image_id(&dir.path().join("missing.tar")).is_err());
        std::fs::write(&bad_path, b"not a tar at all").unwrap();
        assert!(normalize(&bad_path, &dir.path().join("out.tar"), None).is_err());
        assert!(!dir.path().join("out.tar").exists());
    }
}
