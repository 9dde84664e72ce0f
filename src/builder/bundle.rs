//! The bundle component: the bundle image archive (`image.tar`), `FROM scratch` holding this
//! very `bottle` executable as `/bottle`, entry point `/bottle sidecar`.
//!
//! The executable is a static-pie build (see `.cargo/config.toml`), so it runs on an empty
//! image; the image needs no registry. Its key is the builder digest (`hash::BUILDER`): one
//! bundle per build of bottle, shared by every recipe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::hash::ComponentHash;
use crate::manifest::ImageRef;
use crate::oci::{ImageConfig, LayerFile};
use crate::progress::Step;
use crate::runtime::images::LABEL_COMPONENT;

pub const IMAGE_ARCHIVE: &str = "image.tar";

/// Image tag of a bundle component's image in the engine.
pub fn bundle_tag(hash: &ComponentHash) -> String {
    format!("bottle-bundle:{}", hash.short())
}

/// Makes the bundle component in `dir`: the image archive, written by bottle itself (no
/// engine involved): one layer holding the running executable as `/bottle` (mode 0755),
/// entry point `/bottle sidecar`; `bottle run` gives the daemons as the container's command.
pub async fn build(hash: &ComponentHash, dir: &Path, step: &Step) -> Result<ImageRef> {
    let dest = dir.join(IMAGE_ARCHIVE);
    step.message("writing the bundle image");
    // /proc/self/exe is the running file even when a rebuild has replaced it on disk since.
    let layer = vec![LayerFile {
        path: "bottle".to_string(),
        source: PathBuf::from("/proc/self/exe"),
        mode: 0o755,
    }];
    let config = ImageConfig {
        entrypoint: vec!["/bottle".to_string(), "sidecar".to_string()],
        labels: BTreeMap::from([(LABEL_COMPONENT.to_string(), format!("bundle/{hash}"))]),
        ..ImageConfig::default()
    };
    let tag = bundle_tag(hash);
    let info = tokio::task::spawn_blocking(move || {
        crate::oci::write_image(&dest, &layer, &config, Some(&tag))
    })
    .await
    .context("the bundle image step panicked")?
    .context("cannot write the bundle image from the running bottle executable (/proc/self/exe)")?;
    Ok(ImageRef {
        archive: IMAGE_ARCHIVE.to_string(),
        id: info.id,
        pack: None,
    })
}
