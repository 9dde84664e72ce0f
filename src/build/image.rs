//! The guest image artifact: a `docker save` archive of the guest image, and for smolvm guests
//! started from a pack, the `.smolmachine` made from that archive.
//!
//! What goes to the engine is exactly what was hashed: the context tarball is assembled from
//! the files the key lists, and each file's content is checked against its digest as it is
//! read, so an input changed between `hash` and `build` fails the build instead of producing
//! an entry that its name does not describe.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::config::paths;
use crate::hash::{BuildHash, BuildKey};
use crate::plan::{ImagePlan, Planned};
use crate::progress::Step;
use crate::runtime::{docker, smolvm::Smolvm};

/// Name of the Dockerfile inside the context tarball bottle sends.
const DOCKERFILE_IN_TAR: &str = ".bottle-build/Dockerfile";

/// Image tag of a build's guest image in the engine.
pub fn guest_tag(hash: &BuildHash) -> String {
    format!("bottle-guest:{}", hash.short())
}

/// Writes `guest/image.tar` into `entry`; returns the image id.
pub async fn guest_archive(
    planned: &Planned,
    key: &BuildKey,
    hash: &BuildHash,
    entry: &Path,
    step: &Step,
) -> Result<String> {
    let dest = entry.join(paths::IMAGE_ARCHIVE);
    std::fs::create_dir_all(dest.parent().expect("archive path has a folder"))?;
    match &planned.plan.guest.image {
        ImagePlan::Archive { archive } => {
            step.message("copying image archive");
            let src = planned.host_path(archive);
            tokio::fs::copy(&src, &dest)
                .await
                .with_context(|| format!("cannot copy {}", src.display()))?;
            check_digest(&dest, key.inputs.get(archive), archive)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))?;
            crate::oci::image_id(&dest)
        }
        ImagePlan::Dockerfile {
            dockerfile,
            context,
        } => {
            step.message("sending build context");
            let tarball = context_tar(planned, key, context, dockerfile)?;
            let engine = docker::connect().await?;
            let tag = guest_tag(hash);
            let labels = HashMap::from([
                ("bottle.hash".to_string(), hash.to_string()),
                ("bottle.name".to_string(), planned.plan.name.clone()),
            ]);
            docker::build_and_save(
                &engine,
                tarball,
                DOCKERFILE_IN_TAR,
                &tag,
                labels,
                &dest,
                |line| step.message(line),
            )
            .await
        }
        ImagePlan::Reference { reference } => {
            let engine = docker::connect().await?;
            step.message(&format!("pulling {reference}"));
            docker::pull(&engine, reference).await?;
            step.message("saving the image");
            docker::save_archive(&engine, reference, &dest).await
        }
    }
}

/// `smolvm pack create` from the archive, in a state folder of its own that is removed
/// afterwards, so a failed pack leaves nothing on the host.
pub async fn smolvm_pack(entry: &Path, step: &Step) -> Result<()> {
    let mut smolvm = Smolvm::locate()?;
    let scratch = tempfile::Builder::new().prefix("pack.").tempdir_in(entry)?;
    if smolvm.state_dir.is_none() {
        smolvm.state_dir = Some(scratch.path().join("state"));
    }
    step.message("smolvm pack create (boots a packing VM)");
    let out = scratch.path().join("guest");
    smolvm
        .pack_create(&entry.join(paths::IMAGE_ARCHIVE), &out)
        .await
        .context("cannot pack the smolvm guest; a host whose KVM cannot boot smolvm guests can set `start = \"image\"` under [guest] to create the guest from the image archive instead")?;
    let sidecar = scratch.path().join("guest.smolmachine");
    if !sidecar.is_file() {
        bail!(
            "smolvm pack create reported success but wrote no {}",
            sidecar.display()
        );
    }
    std::fs::rename(&sidecar, entry.join(paths::PACK))?;
    Ok(())
}

fn check_digest(path: &Path, expected: Option<&String>, rel: &str) -> Result<()> {
    let (digest, _) = crate::hash::file_digest(path)?;
    match expected {
        Some(e) if e.ends_with(&digest) => Ok(()),
        _ => bail!("input {rel} changed after it was hashed; run the build again"),
    }
}

/// The context tarball: every hashed file of the context (mtime 0, owned by root, mode 0755
/// or 0644 by its executable bit) and the Dockerfile under a fixed name.
fn context_tar(
    planned: &Planned,
    key: &BuildKey,
    context: &str,
    dockerfile: &str,
) -> Result<Vec<u8>> {
    let prefix = if context.is_empty() {
        String::new()
    } else {
        format!("{context}/")
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, rel: &str, digest: &str| -> Result<()> {
        let path = planned.host_path(rel);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if let Some(target) = digest.strip_prefix("link:") {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            tar.append_link(&mut header, name, target)?;
            return Ok(());
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let hex = digest.rsplit(':').next().unwrap_or_default();
        if blake3::hash(&bytes).to_hex().as_str() != hex {
            bail!("input {rel} changed after it was hashed; run the build again");
        }
        header.set_size(bytes.len() as u64);
        header.set_mode(if digest.starts_with("b3x:") {
            0o755
        } else {
            0o644
        });
        tar.append_data(&mut header, name, bytes.as_slice())?;
        Ok(())
    };
    for (rel, digest) in &key.inputs {
        if let Some(inside) = rel.strip_prefix(&prefix) {
            add(inside, rel, digest)?;
        }
    }
    let df_digest = key
        .inputs
        .get(dockerfile)
        .context("the Dockerfile was not hashed")?;
    add(DOCKERFILE_IN_TAR, dockerfile, df_digest)?;
    Ok(tar.into_inner()?)
}
