//! The guest component: the guest image as a normalized archive (`image.tar`), and for smolvm
//! guests started from a pack, the `.smolmachine` made from it (`guest.smolmachine`).
//!
//! The image comes from a Dockerfile and its context, streamed to the engine from exactly the
//! paths and bytes the key names (`crate::context`: each file is checked against its digest as
//! it is sent); from an archive; or from a reference pinned by digest. Whatever the engine
//! saves is normalized (`crate::oci::normalize`: timestamps, build-machine details, ordering)
//! so the archive's bytes depend only on the image's content: the same key built on two
//! engines gives the same artifact.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::context::{self, DockerfileRef};
use crate::digest::{InputDigest, file_digest};
use crate::hash::{ComponentHash, GuestKey, GuestSource};
use crate::manifest::ImageRef;
use crate::plan::{GuestStart, ImagePlan, Planned};
use crate::progress::Step;
use crate::runtime::images::LABEL_COMPONENT;
use crate::runtime::{docker, smolvm::Smolvm};

/// The component's files.
pub const IMAGE_ARCHIVE: &str = "image.tar";
pub const PACK: &str = "guest.smolmachine";

/// How many times a build is tried when the engine trips over an image removed meanwhile.
const BUILD_TRIES: usize = 3;

/// Image tag of a guest component's image in the engine.
pub fn guest_tag(hash: &ComponentHash) -> String {
    format!("bottle-guest:{}", hash.short())
}

/// A guest component made: its image, and the engine image its build left as build cache
/// (for `bottle gc` to remove with the component).
pub struct GuestBuilt {
    pub image: ImageRef,
    pub build_parent: Option<String>,
}

/// Makes the guest component of `key` in `dir`.
pub async fn build(
    planned: &Planned,
    key: &GuestKey,
    hash: &ComponentHash,
    dir: &Path,
    step: &Step,
) -> Result<GuestBuilt> {
    let mut build_parent = None;
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
                dockerfile: df_digest,
                context: entries,
            },
        ) => {
            let dockerfile = DockerfileRef {
                host_path: planned.host_path(dockerfile),
                digest: *df_digest,
            };
            let context_dir = planned.host_path(context);
            build_parent =
                build_from_context(&context_dir, entries, &dockerfile, hash, &raw, step).await?;
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
    let pack = if key.start == GuestStart::Pack {
        smolvm_pack(dir, step).await?;
        Some(PACK.to_string())
    } else {
        None
    };
    Ok(GuestBuilt {
        image: ImageRef {
            archive: IMAGE_ARCHIVE.to_string(),
            id: info.id,
            pack,
        },
        build_parent,
    })
}

/// Builds the image from its context with the engine and saves it into `raw`; returns the
/// build-cache image it left.
async fn build_from_context(
    context_dir: &Path,
    entries: &BTreeMap<String, InputDigest>,
    dockerfile: &DockerfileRef,
    hash: &ComponentHash,
    raw: &Path,
    step: &Step,
) -> Result<Option<String>> {
    let engine = docker::connect().await?;
    let labels = HashMap::from([(LABEL_COMPONENT.to_string(), format!("guest/{hash}"))]);
    let mut tries = 0;
    loop {
        tries += 1;
        step.message("sending the build context");
        let mut stream = context::tar_stream(
            context_dir.to_path_buf(),
            entries.clone(),
            DockerfileRef {
                host_path: dockerfile.host_path.clone(),
                digest: dockerfile.digest,
            },
        );
        stream.stream = step.meter("build context sent", None).count(stream.stream);
        let built = docker::build_and_save(
            &engine,
            stream,
            &guest_tag(hash),
            labels.clone(),
            raw,
            |line| step.message(line),
        )
        .await;
        match built {
            Ok((_, parent)) => return Ok(parent),
            // Docker 20.10's cache lookup for a `FROM scratch` step reads every parentless
            // image and fails if one is removed meanwhile (say by a concurrent `docker rmi`).
            Err(e) if tries < BUILD_TRIES && format!("{e:#}").contains("unable to find image") => {
                tracing::debug!("the engine lost an image while building ({e:#}); trying again");
            }
            Err(e) => return Err(e),
        }
    }
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
    let lines = crate::context::dockerfile::run_lines(&text);
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
    let packed = scratch.path().join("guest.smolmachine");
    if !packed.is_file() {
        bail!(
            "smolvm pack create reported success but wrote no {}",
            packed.display()
        );
    }
    std::fs::rename(&packed, dir.join(PACK))?;
    Ok(())
}
