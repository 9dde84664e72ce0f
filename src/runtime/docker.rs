//! The Docker Engine, through its API (bollard). No docker CLI is spawned.
//!
//! This module owns talking to the engine: connecting (with API version negotiation, so an
//! older engine such as Debian's 20.10 works), building an image from a context tarball,
//! pulling by digest, saving an image as an archive, and reading an archive's image id.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// Connects to the local engine (`DOCKER_HOST` or the default socket) and agrees on an API
/// version with it.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_defaults().context("cannot set up a Docker Engine client")?;
    let docker = docker.negotiate_version().await.map_err(|e| {
        anyhow!(
            "cannot reach the Docker Engine ({e}); start it (`dockerd &`, or `systemctl start docker`) or point DOCKER_HOST at it"
        )
    })?;
    Ok(docker)
}

/// Builds an image from a context tarball (`dockerfile` names the Dockerfile inside it),
/// tagged `tag` with `labels`. `on_line` sees each line the engine prints. Returns the image id.
pub async fn build_image(
    docker: &Docker,
    tarball: Vec<u8>,
    dockerfile: &str,
    tag: &str,
    labels: HashMap<String, String>,
    mut on_line: impl FnMut(&str),
) -> Result<String> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(dockerfile)
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tarball.into())));
    let mut id = None;
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow!("the Docker Engine refused the build: {e}"))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message).or(info.error) {
            let context = tail.join("");
            bail!("docker build failed: {}\n{context}", detail.trim());
        }
        if let Some(s) = info.stream {
            for line in s.lines().filter(|l| !l.trim().is_empty()) {
                on_line(line.trim());
            }
            tail.push(s);
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
        if let Some(aux) = info.aux {
            id = aux.id;
        }
    }
    match id {
        Some(id) => Ok(id),
        None => {
            let inspect = docker
                .inspect_image(tag)
                .await
                .with_context(|| format!("the built image {tag} is not in the engine"))?;
            inspect
                .id
                .ok_or_else(|| anyhow!("the engine reports no id for {tag}"))
        }
    }
}

/// Builds an image (as [`build_image`]), saves it into `dest` (as [`save_archive`]), and checks
/// that the archive holds the image that was built. Returns its id.
///
/// The image is saved by its id, not by `tag`: a concurrent build of the same component for
/// another store moves the tag to its own image (an uncached last step gets a new id), and
/// saving by tag then saved that image and failed the check.
pub async fn build_and_save(
    docker: &Docker,
    tarball: Vec<u8>,
    dockerfile: &str,
    tag: &str,
    labels: HashMap<String, String>,
    dest: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<String> {
    let id = build_image(docker, tarball, dockerfile, tag, labels, &mut on_line).await?;
    on_line("saving the image");
    let saved = save_archive(docker, &id, dest).await?;
    if saved != id {
        bail!("the engine built image {id} but saved {saved}; build again");
    }
    Ok(id)
}

/// Streams `docker save IMAGE` into `dest` (mode 0644); returns the image id the archive
/// records.
pub async fn save_archive(docker: &Docker, image: &str, dest: &Path) -> Result<String> {
    save_image(docker, image, dest).await?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644))?;
    archive_image_id(dest)
}

/// Pulls `reference` (pinned by digest) into the engine.
pub async fn pull(docker: &Docker, reference: &str) -> Result<()> {
    let options = CreateImageOptionsBuilder::default()
        .from_image(reference)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow!("cannot pull {reference}: {e}; on a host with no registry, save the image elsewhere (`docker save`) and use `archive =` in the recipe")
        })?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            bail!("cannot pull {reference}: {detail}");
        }
    }
    Ok(())
}

/// Streams `docker save IMAGE` into `dest`.
pub async fn save_image(docker: &Docker, image: &str, dest: &Path) -> Result<()> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow!("cannot save image {image}: {e}"))?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    file.sync_all().await?;
    Ok(())
}

/// The image id (`sha256:…` of its config) recorded in a `docker save` archive.
pub fn archive_image_id(archive: &Path) -> Result<String> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open image archive {}", archive.display()))?;
    let mut tar = tar::Archive::new(file);
    for entry in tar
        .entries()
        .with_context(|| format!("{} is not a tar archive", archive.display()))?
    {
        let mut entry = entry
            .with_context(|| format!("{} is not a readable tar archive", archive.display()))?;
        if entry.path()?.to_string_lossy() != "manifest.json" {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: manifest.json is not JSON", archive.display()))?;
        let config = v
            .get(0)
            .and_then(|m| m.get("Config"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| anyhow!("{}: manifest.json names no image config", archive.display()))?;
        let hex = config
            .trim_start_matches("blobs/sha256/")
            .trim_end_matches(".json");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{}: image config {config:?} is not a sha256 digest",
                archive.display()
            );
        }
        return Ok(format!("sha256:{hex}"));
    }
    bail!(
        "{} is not a `docker save` archive (it has no manifest.json); make it with `docker save IMAGE -o FILE`",
        archive.display()
    )
}
