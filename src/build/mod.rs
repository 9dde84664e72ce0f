//! Build: the artifact set for one hash, built once, published whole.
//!
//! Given a plan and its key, the build takes the hash's lock, builds into a temporary folder
//! of the store, and publishes it by one rename. Independent steps run concurrently:
//!
//! - `guest image`: the guest image saved as an archive (then, for smolvm guests started from
//!   a pack, `smolvm pack create` from it);
//! - `CAs`: pipelock's CA always, egress's with routes; keys mode 0600, machine-local;
//! - `configs`: the daemons' config files; the bundle and guest specs go into the manifest;
//! - `provision`: the prompt and skills copied into the entry;
//! - `bundle image`: the bundle's `FROM scratch` image holding this very executable (run there
//!   as `bottle sidecar`), saved as an archive.
//!
//! A failed or interrupted build leaves no entry: its temporary folder is dropped (or, after a
//! SIGKILL, removed by the next build of the hash or by `bottle gc`).

pub mod bundle;
pub mod ca;
pub mod config;
pub mod image;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::hash::{BuildHash, BuildKey};
use crate::manifest::{MANIFEST_FORMAT, Manifest};
use crate::plan::{GuestStart, Planned};
use crate::progress::Progress;
use crate::store::Store;
use config::paths;

pub struct Built {
    pub hash: BuildHash,
    pub path: PathBuf,
    pub manifest: Manifest,
    /// The entry was already in the store: nothing was built.
    pub cached: bool,
}

/// Builds the entry for `key` unless the store has it.
pub async fn build(
    store: &Store,
    planned: &Planned,
    key: &BuildKey,
    progress: &Progress,
) -> Result<Built> {
    let hash = key.hash();
    let found = |manifest: Manifest| Built {
        path: store.entry_path(&hash),
        hash: hash.clone(),
        manifest,
        cached: true,
    };
    if let Some(m) = store.manifest(&hash)? {
        return Ok(found(m));
    }
    store.init()?;
    let lock = tokio::task::block_in_place(|| store.lock(&hash))?;
    // Another process may have built it while we waited for the lock.
    if let Some(m) = store.manifest(&hash)? {
        return Ok(found(m));
    }
    let tmp = store.start_build(&hash, &lock)?;
    let entry = tmp.path().to_path_buf();
    let plan = &planned.plan;

    let image = async {
        let step = progress.step("guest image");
        let r = async {
            let id = image::guest_archive(planned, key, &hash, &entry, &step).await?;
            if plan.guest.start == GuestStart::Pack {
                image::smolvm_pack(&entry, &step).await?;
            }
            Ok::<_, anyhow::Error>(id)
        }
        .await;
        step.finish(r)
    };
    let machine_local = BTreeSet::from([
        paths::PIPELOCK_KEY.to_string(),
        paths::EGRESS_KEY.to_string(),
    ]);
    let small = async {
        let entry = entry.clone();
        let plan = plan.clone();
        let root = planned.root.clone();
        let step = progress.step("CAs, configs, provision");
        let r = tokio::task::spawn_blocking(move || -> Result<()> {
            let ca_dir = entry.join(paths::CA_DIR);
            std::fs::create_dir_all(&ca_dir)?;
            ca::mint(
                &ca_dir,
                "pipelock",
                &format!("bottle {} pipelock CA", plan.name),
            )?;
            if !plan.egress.routes.is_empty() {
                ca::mint(
                    &ca_dir,
                    "egress",
                    &format!("bottle {} egress CA", plan.name),
                )?;
            }
            config::write_configs(&plan, &entry)?;
            if let Some(prompt) = &plan.provision.prompt {
                copy_input(&root.join(prompt), &entry.join(paths::PROMPT))?;
            }
            if let Some(skills) = &plan.provision.skills {
                copy_tree(&root.join(skills), &entry.join(paths::SKILLS))?;
            }
            Ok(())
        })
        .await
        .context("the CA and config step panicked")
        .and_then(|r| r);
        step.finish(r)
    };
    let bundle = async {
        let step = progress.step("bundle image");
        let r = bundle::bundle_archive(&hash, &plan.name, &entry, &step).await;
        step.finish(r)
    };
    let (image_id, (), bundle_id) = tokio::try_join!(image, small, bundle)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        hash: hash.clone(),
        name: plan.name.clone(),
        builder: key.builder.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        guest: config::guest_spec(plan, image_id),
        bundle: config::bundle_spec(plan, bundle_id),
        artifacts: Vec::new(),
    };
    let manifest = store.publish(tmp, key, manifest, &machine_local)?;
    drop(lock);
    Ok(Built {
        path: store.entry_path(&hash),
        hash,
        manifest,
        cached: false,
    })
}

fn copy_input(src: &Path, dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(src, dest).with_context(|| format!("cannot copy {}", src.display()))?;
    Ok(())
}

/// Copies regular files and folders; symlinks are skipped (the guest gets files, not links
/// into the host's tree).
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for ent in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let ent = ent?;
        let ft = ent.file_type()?;
        let to = dest.join(ent.file_name());
        if ft.is_dir() {
            copy_tree(&ent.path(), &to)?;
        } else if ft.is_file() {
            copy_input(&ent.path(), &to)?;
        }
    }
    Ok(())
}
