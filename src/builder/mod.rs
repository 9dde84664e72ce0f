//! Builder: makes the components of an entry that the store lacks, then publishes the entry.
//!
//! Given a plan and its keys, each of the three components is looked up by its hash and built
//! only when missing, concurrently, each under its own lock in a temporary folder of the
//! store, published by one rename:
//!
//! - `guest` ([`guest`]): the guest image archive, normalized so its bytes depend only on the
//!   image's content (and, for smolvm guests started from a pack, `smolvm pack create`);
//! - `bundle` ([`bundle`]): the bundle's `FROM scratch` image holding this very executable
//!   (run there as `bottle sidecar`), written by bottle itself;
//! - `config` ([`config`]): the daemons' configs and the guest and bundle specs rendered from
//!   the config key, and the provisioning files.
//!
//! The entry (a manifest naming the three) is published last. Builds hold `gc.lock` shared
//! until the caller drops the result, so `bottle gc` cannot remove what they made before a run
//! pins it. A failed or interrupted build leaves no component and no entry: its temporary
//! folders are dropped (or, after a SIGKILL, removed by `bottle gc`).

pub mod bundle;
pub mod config;
pub mod guest;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::hash::{BuildHash, ComponentHash, ComponentKey, ComponentKind, Keys};
use crate::manifest::{ImageRef, Manifest};
use crate::plan::Planned;
use crate::progress::Progress;
use crate::store::{GcGuard, Store};

/// One component of a build: built now, or found in the store.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltComponent {
    pub name: ComponentKind,
    pub hash: ComponentHash,
    pub cached: bool,
}

#[derive(Debug)]
pub struct Built {
    pub hash: BuildHash,
    pub manifest: Manifest,
    pub components: Vec<BuiltComponent>,
    /// Things the person should know about the build (e.g. `RUN` steps and reproducibility).
    pub notes: Vec<String>,
    /// Keeps `bottle gc` away until a run has pinned the entry.
    pub guard: Option<GcGuard>,
}

impl Built {
    /// Nothing was built: the entry and all its components were in the store.
    pub fn cached(&self) -> bool {
        self.components.iter().all(|c| c.cached)
    }
}

/// Builds the entry of `keys` unless the store has it.
pub async fn build(
    store: &Store,
    planned: &Planned,
    keys: &Keys,
    progress: &Progress,
) -> Result<Built> {
    let manifest = Manifest::of(keys);
    let hash = manifest.hash();
    let found = |guard: Option<GcGuard>| Built {
        hash,
        manifest: manifest.clone(),
        components: manifest
            .components
            .ids()
            .iter()
            .map(|id| BuiltComponent {
                name: id.kind,
                hash: id.hash,
                cached: true,
            })
            .collect(),
        notes: Vec::new(),
        guard,
    };
    let complete = || {
        store.contains(&hash)
            && manifest
                .components
                .ids()
                .iter()
                .all(|id| store.has_component(id))
    };
    if complete() {
        return Ok(found(None));
    }
    store.init()?;
    let s = store.clone();
    let (guard, lock) = tokio::task::spawn_blocking(move || -> Result<_> {
        let guard = s.gc_guard()?;
        let lock = s.lock_entry(&hash)?;
        Ok((guard, lock))
    })
    .await
    .context("the store lock task panicked")??;
    if complete() {
        return Ok(found(Some(guard)));
    }
    let (g, b, c) = tokio::try_join!(
        component(store, keys, ComponentKind::Guest, progress, planned),
        component(store, keys, ComponentKind::Bundle, progress, planned),
        component(store, keys, ComponentKind::Config, progress, planned),
    )?;
    store.publish_entry(&manifest)?;
    drop(lock);
    let mut notes = Vec::new();
    if !g.cached {
        notes.extend(guest::reproducibility_notes(planned));
    }
    Ok(Built {
        hash,
        manifest,
        components: vec![g, b, c],
        notes,
        guard: Some(guard),
    })
}

/// Builds one component when the store lacks it.
async fn component(
    store: &Store,
    keys: &Keys,
    kind: ComponentKind,
    progress: &Progress,
    planned: &Planned,
) -> Result<BuiltComponent> {
    let key = keys.component(kind);
    let id = key.id();
    let s = store.clone();
    let staged = tokio::task::spawn_blocking(move || s.stage(id))
        .await
        .context("the store lock task panicked")??;
    let Some(staged) = staged else {
        progress.cached(kind.name());
        return Ok(BuiltComponent {
            name: kind,
            hash: id.hash,
            cached: true,
        });
    };
    let step = progress.step(kind.name());
    let mut build_parent = None;
    let made: Result<Option<ImageRef>> = async {
        match &key {
            ComponentKey::Guest(k) => {
                let built = guest::build(planned, k, &id.hash, staged.path(), &step).await?;
                build_parent = built.build_parent;
                Ok(Some(built.image))
            }
            ComponentKey::Bundle(_) => bundle::build(&id.hash, staged.path(), &step)
                .await
                .map(Some),
            ComponentKey::Config(k) => {
                let (k, planned, dir) = (k.clone(), planned.clone(), staged.path().to_path_buf());
                tokio::task::spawn_blocking(move || config::build(&k, &planned, &dir))
                    .await
                    .context("the config step panicked")??;
                Ok(None)
            }
        }
    }
    .await;
    let image = step.finish(made)?;
    store
        .publish(staged, key, image)
        .with_context(|| format!("cannot publish the {kind} component"))?;
    if let Some(parent) = build_parent
        && let Err(e) = store.note_build_parent(&id, &parent)
    {
        tracing::warn!("cannot record the build cache of {id} for `bottle gc`: {e}");
    }
    Ok(BuiltComponent {
        name: kind,
        hash: id.hash,
        cached: false,
    })
}
