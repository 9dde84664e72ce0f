//! The bundle component: the bundle image archive (`image.tar`), `FROM scratch` holding this
//! very `bottle` executable as `/bottle`, entry point `/bottle sidecar`.
//!
//! The executable is a static-pie build (see `.cargo/config.toml`), so it runs on an empty
//! image; the image needs no registry. Its key is the builder digest (`hash::BUILDER`): one
//! bundle per build of bottle, shared by every recipe.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::guest::LABEL_COMPONENT;
use crate::hash::ComponentHash;
use crate::manifest::ImageRef;
use crate::progress::Step;
use crate::runtime::docker;

pub const IMAGE_ARCHIVE: &str = "image.tar";

/// The bundle image's Dockerfile. Daemons are given by `bottle run` as the container's
/// command, after the entry point.
const DOCKERFILE: &str = "\
FROM scratch
COPY bottle /bottle
ENTRYPOINT [\"/bottle\", \"sidecar\"]
";

/// Image tag of a bundle component's image in the engine.
pub fn bundle_tag(hash: &ComponentHash) -> String {
    format!("bottle-bundle:{}", hash.short())
}

/// Makes the bundle component in `dir`.
pub async fn build(hash: &ComponentHash, dir: &Path, step: &Step) -> Result<ImageRef> {
    let dest = dir.join(IMAGE_ARCHIVE);
    step.message("reading the bottle executable");
    let tarball = tokio::task::spawn_blocking(context_tar)
        .await
        .context("the bundle context step panicked")??;
    let engine = docker::connect().await?;
    let labels = HashMap::from([(LABEL_COMPONENT.to_string(), format!("bundle/{hash}"))]);
    step.message("building the bundle image");
    let id = docker::build_and_save(
        &engine,
        tarball,
        "Dockerfile",
        &bundle_tag(hash),
        labels,
        &dest,
        |line| step.message(line),
    )
    .await
    .context("cannot build the bundle image")?;
    Ok(ImageRef {
        archive: IMAGE_ARCHIVE.to_string(),
        id,
        pack: None,
    })
}

/// The context tarball: the Dockerfile and the running executable as `bottle` (mode 0755,
/// mtime 0, owned by root).
fn context_tar() -> Result<Vec<u8>> {
    // /proc/self/exe is the running file even when a rebuild has replaced it on disk since.
    let bytes = std::fs::read("/proc/self/exe")
        .context("cannot read the running bottle executable (/proc/self/exe) to put it into the bundle image")?;
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", DOCKERFILE.as_bytes(), 0o644),
        ("bottle", bytes.as_slice(), 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, name, data)?;
    }
    Ok(tar.into_inner()?)
}
