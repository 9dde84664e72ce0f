//! The bundle image artifact: `FROM scratch`, holding this very `bottle` executable as
//! `/bottle`, entry point `/bottle sidecar`; saved into the entry as `bundle/image.tar`.
//!
//! The executable is a static-pie build (see `.cargo/config.toml`), so it runs on an empty
//! image; the image needs no registry and no toolchain beyond the one that built `bottle`.
//! Its sources are part of the hash (`hash::BUILDER`), so the binary copied here is one the
//! hash names.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::config::paths;
use crate::hash::BuildHash;
use crate::progress::Step;
use crate::runtime::docker;

/// The bundle image's Dockerfile. Daemons and `--config-dir` are given by `bottle run` as the
/// container's command, after the entry point.
const DOCKERFILE: &str = "\
FROM scratch
COPY bottle /bottle
ENTRYPOINT [\"/bottle\", \"sidecar\"]
";

/// Image tag of a build's bundle image in the engine.
pub fn bundle_tag(hash: &BuildHash) -> String {
    format!("bottle-bundle:{}", hash.short())
}

/// Builds the bundle image from the running executable, writes `bundle/image.tar` into
/// `entry`; returns the image id.
pub async fn bundle_archive(
    hash: &BuildHash,
    name: &str,
    entry: &Path,
    step: &Step,
) -> Result<String> {
    let dest = entry.join(paths::BUNDLE_IMAGE_ARCHIVE);
    std::fs::create_dir_all(dest.parent().expect("archive path has a folder"))?;
    step.message("reading the bottle executable");
    let tarball = tokio::task::spawn_blocking(context_tar)
        .await
        .context("the bundle context step panicked")??;
    let engine = docker::connect().await?;
    let tag = bundle_tag(hash);
    let labels = HashMap::from([
        ("bottle.hash".to_string(), hash.to_string()),
        ("bottle.name".to_string(), name.to_string()),
        ("bottle.role".to_string(), "bundle".to_string()),
    ]);
    step.message("building the bundle image");
    docker::build_and_save(
        &engine,
        tarball,
        "Dockerfile",
        &tag,
        labels,
        &dest,
        |line| step.message(line),
    )
    .await
    .context("cannot build the bundle image")
}

/// The context tarball: the Dockerfile and the running executable as `bottle` (mode 0755,
/// mtime 0, owned by root).
fn context_tar() -> Result<Vec<u8>> {
    // /proc/self/exe is the running file even when a rebuild has replaced it on disk since.
    let bytes = match std::fs::read("/proc/self/exe") {
        Ok(b) => b,
        Err(_) => {
            let exe =
                std::env::current_exe().context("cannot locate the running bottle executable")?;
            std::fs::read(&exe).with_context(|| {
                format!(
                    "cannot read the running bottle executable {} to put it into the bundle image",
                    exe.display()
                )
            })?
        }
    };
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
