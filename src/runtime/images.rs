//! bottle's own images in the engine, and removing those the store no longer needs.
//!
//! An image is bottle's when it carries the [`LABEL_COMPONENT`] label (`KIND/HASH`), which
//! every guest build and every bundle image has, or when the store recorded it as a guest
//! build's cache (the built image's parent, `Store::build_parent`). Removed, after `bottle gc`
//! or `bottle rm` removed components: every image labelled with one of those components
//! (tagged or dangling), and the recorded build caches of those components, when still
//! untagged and pulled by no digest (with their untagged parents, as `docker rmi` prunes).
//! An image bottle did not make is never touched, nor one of a component this store did not
//! just remove: several stores share one engine, and another may still need it. Nothing is
//! forced: an image a container still uses stays, and is named in a warning.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Result, anyhow};
use bollard::Docker;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use serde::Serialize;

use crate::hash::{ComponentHash, ComponentId, ComponentKind};

/// The label every image bottle makes carries: `KIND/HASH` of its component.
pub const LABEL_COMPONENT: &str = "bottle.component";

/// What the engine was asked to remove.
#[derive(Debug, Default, Serialize)]
pub struct ImageRemoval {
    /// Image ids removed (or that would be, under `--dry-run`), with why.
    pub removed: Vec<RemovedImage>,
    /// Image id → the engine's reason it stayed.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct RemovedImage {
    pub id: String,
    /// `KIND/HASH` of its component, or `build cache of KIND/HASH`.
    pub of: String,
}

/// The component an image's label names.
fn component_of(labels: &HashMap<String, String>) -> Option<ComponentId> {
    let (kind, hash) = labels.get(LABEL_COMPONENT)?.split_once('/')?;
    let kind = ComponentKind::ALL.into_iter().find(|k| k.name() == kind)?;
    Some(ComponentId {
        kind,
        hash: ComponentHash::parse(hash)?,
    })
}

/// Removes the engine images of `removed` components and the untagged build caches in
/// `build_parents` (paired with their component).
pub async fn remove_unneeded(
    docker: &Docker,
    removed: &[ComponentId],
    build_parents: &[(ComponentId, String)],
    dry_run: bool,
) -> Result<ImageRemoval> {
    let removed: BTreeSet<ComponentId> = removed.iter().copied().collect();
    let filter = HashMap::from([("label", vec![LABEL_COMPONENT.to_string()])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .map_err(|e| anyhow!("cannot list the engine's images: {e}"))?;
    let mut doomed: Vec<RemovedImage> = Vec::new();
    for image in images {
        let Some(id) = component_of(&image.labels) else {
            continue;
        };
        if removed.contains(&id) {
            doomed.push(RemovedImage {
                id: image.id,
                of: format!("{}/{}", id.kind, id.hash),
            });
        }
    }
    for (id, parent) in build_parents {
        // Still untagged and not pulled by digest: no one has named it since the build.
        match docker.inspect_image(parent).await {
            Ok(i)
                if i.repo_tags.as_ref().is_none_or(|t| t.is_empty())
                    && i.repo_digests.as_ref().is_none_or(|d| d.is_empty()) =>
            {
                doomed.push(RemovedImage {
                    id: parent.clone(),
                    of: format!("build cache of {}/{}", id.kind, id.hash),
                })
            }
            _ => {}
        }
    }
    let mut report = ImageRemoval::default();
    for image in doomed {
        if report.removed.iter().any(|r| r.id == image.id) {
            continue;
        }
        if !dry_run {
            // Not forced; pruning removes the untagged parents no other image needs.
            let options = RemoveImageOptionsBuilder::default().build();
            if let Err(e) = docker.remove_image(&image.id, Some(options), None).await {
                report.failed.push((image.id, e.to_string()));
                continue;
            }
        }
        report.removed.push(image);
    }
    Ok(report)
}
