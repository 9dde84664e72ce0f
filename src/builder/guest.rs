//! The guest component: the guest image as a normalized archive (`image.tar`), and for smolvm
//! guests started from a pack, the `.smolmachine` made from it (`guest.smolmachine`).
//!
//! The image comes from a Dockerfile and its context (built by the engine from exactly the
//! bytes the key names: each file is checked against its digest as it is sent), from an
//! archive, or from a reference pinned by digest. Whatever the engine saves is normalized
//! (timestamps, build-machine details, ordering) so the archive's bytes depend only on the
//! image's content: the same key built on two engines gives the same artifact.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::digest::file_digest;
use crate::hash::{ComponentHash, GuestKey, GuestSource};
use crate::manifest::ImageRef;
use crate::plan::{GuestStart, ImagePlan, Planned};
use crate::progress::Step;
use crate::runtime::{docker, smolvm::Smolvm};

/// The component's files.
pub const IMAGE_ARCHIVE: &str = "image.tar";
pub const PACK: &str = "guest.smolmachine";

/// The label every image bottle builds carries: `KIND/HASH` of its component.
pub const LABEL_COMPONENT: &str = "bottle.component";

/// Name of the Dockerfile inside the context tarball bottle sends.
const DOCKERFILE_IN_TAR: &str = ".bottle-build/Dockerfile";

/// Image tag of a guest component's image in the engine.
pub fn guest_tag(hash: &ComponentHash) -> String {
    format!("bottle-guest:{}", hash.short())
}

/// Makes the guest component of `key` in `dir`.
pub async fn build(
    planned: &Planned,
    key: &GuestKey,
    hash: &ComponentHash,
    dir: &Path,
    step: &Step,
) -> Result<ImageRef> {
    let raw = tempfile::Builder::new()
        .prefix(".raw.")
        .tempfile_in(dir)?
        .into_temp_path();
    match (&planned.plan.guest.image, &key.source) {
        (ImagePlan::Archive { archive }, GuestSource::Archive { archive: digest }) => {
            step.message("copying the image archive");
            let src = planned.host_path(archive);
            tokio::fs::copy(&src, &raw)
                .await
                .with_context(|| format!("cannot copy {}", src.display()))?;
            if file_digest(&raw)?.0 != *digest {
                bail!("input {archive} changed after it was hashed; run the build again");
            }
        }
        (
            ImagePlan::Dockerfile {
                dockerfile,
                context,
            },
            GuestSource::Dockerfile {
                context: entries,
                dockerfile: df_digest,
            },
        ) => {
            step.message("sending the build context");
            let tarball = context_tar(planned, context, entries, dockerfile, df_digest)?;
            let engine = docker::connect().await?;
            let labels = HashMap::from([(LABEL_COMPONENT.to_string(), format!("guest/{hash}"))]);
            docker::build_and_save(
                &engine,
                tarball,
                DOCKERFILE_IN_TAR,
                &guest_tag(hash),
                labels,
                &raw,
                |line| step.message(line),
            )
            .await?;
        }
        (ImagePlan::Reference { reference }, GuestSource::Reference { .. }) => {
            let engine = docker::connect().await?;
            step.message(&format!("pulling {reference}"));
            docker::pull(&engine, reference).await?;
            step.message("saving the image");
            docker::save_image(&engine, reference, &raw).await?;
        }
        _ => bail!("the guest key does not describe this plan's image (a bug in bottle)"),
    }
    step.message("normalizing the image archive");
    let archive = dir.join(IMAGE_ARCHIVE);
    let (src, dest, tag) = (raw.to_path_buf(), archive.clone(), guest_tag(hash));
    let info = tokio::task::spawn_blocking(move || crate::oci::normalize(&src, &dest, Some(&tag)))
        .await
        .context("the normalize step panicked")?
        .context("cannot normalize the guest image archive")?;
    drop(raw);
    std::fs::set_permissions(
        &archive,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let id = info.id;
    let pack = if key.start == GuestStart::Pack {
        smolvm_pack(dir, step).await?;
        Some(PACK.to_string())
    } else {
        None
    };
    Ok(ImageRef {
        archive: IMAGE_ARCHIVE.to_string(),
        id,
        pack,
    })
}

/// What a person should know about a guest built from a Dockerfile with `RUN` steps: bottle
/// makes timestamps and ordering reproducible, but not what a `RUN` step writes.
pub fn reproducibility_notes(planned: &Planned) -> Vec<String> {
    let ImagePlan::Dockerfile { dockerfile, .. } = &planned.plan.guest.image else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(planned.host_path(dockerfile)) else {
        return Vec::new();
    };
    let lines = crate::hash::dockerfile_run_lines(&text);
    if lines.is_empty() {
        return Vec::new();
    }
    let at: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    vec![format!(
        "{dockerfile} has RUN steps (line {}): bottle normalizes timestamps and ordering, but the guest artifact is bit-identical across machines only if what they write is deterministic (no downloads, dates or random names)",
        at.join(", ")
    )]
}

/// `smolvm pack create` from the archive, in a state folder of its own that is removed
/// afterwards, so a failed pack leaves nothing on the host.
async fn smolvm_pack(dir: &Path, step: &Step) -> Result<()> {
    let mut smolvm = Smolvm::locate()?;
    let scratch = tempfile::Builder::new().prefix(".pack.").tempdir_in(dir)?;
    if smolvm.state_dir.is_none() {
        smolvm.state_dir = Some(scratch.path().join("state"));
    }
    step.message("smolvm pack create (boots a packing VM)");
    let out = scratch.path().join("guest");
    smolvm
        .pack_create(&dir.join(IMAGE_ARCHIVE), &out)
        .await
        .context("cannot pack the smolvm guest; a host whose KVM cannot boot smolvm guests can set `start = \"image\"` under [guest] to create the guest from the image archive instead")?;
    let sidecar = scratch.path().join("guest.smolmachine");
    if !sidecar.is_file() {
        bail!(
            "smolvm pack create reported success but wrote no {}",
            sidecar.display()
        );
    }
    std::fs::rename(&sidecar, dir.join(PACK))?;
    Ok(())
}

/// The context tarball: every context path the key lists (mtime 0, owned by root) and the
/// Dockerfile under a fixed name, each file checked against its digest.
fn context_tar(
    planned: &Planned,
    context: &str,
    entries: &std::collections::BTreeMap<String, crate::digest::InputDigest>,
    dockerfile: &str,
    df_digest: &crate::digest::Digest,
) -> Result<Vec<u8>> {
    use crate::digest::InputDigest;
    let root = planned.host_path(context);
    let mut tar = tar::Builder::new(Vec::new());
    let mut add_file =
        |name: &str, path: &Path, digest: &crate::digest::Digest, mode: u32| -> Result<()> {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            if blake3::hash(&bytes).as_bytes() != &digest_bytes(digest) {
                bail!(
                    "input {} changed after it was hashed; run the build again",
                    path.display()
                );
            }
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            tar.append_data(&mut header, name, bytes.as_slice())?;
            Ok(())
        };
    let mut links = Vec::new();
    for (rel, d) in entries {
        match d {
            InputDigest::File { digest, executable } => add_file(
                rel,
                &root.join(rel),
                digest,
                if *executable { 0o755 } else { 0o644 },
            )?,
            InputDigest::Symlink { target } => links.push((rel.clone(), target.clone())),
            InputDigest::Dir => {}
        }
    }
    add_file(
        DOCKERFILE_IN_TAR,
        &planned.host_path(dockerfile),
        df_digest,
        0o644,
    )?;
    for (rel, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, &rel, &target)?;
    }
    Ok(tar.into_inner()?)
}

fn digest_bytes(d: &crate::digest::Digest) -> [u8; 32] {
    *blake3::Hash::from_hex(d.hex())
        .expect("a digest is hex")
        .as_bytes()
}
