//! `bottle build` and `bottle hash`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{Global, Outcome, interrupted, keyed, out, print_json};
use crate::builder::{self, Built};
use crate::hash::Keys;
use crate::manifest::Manifest;
use crate::plan::Planned;
use crate::progress::Progress;
use crate::store::Store;

/// Builds (or finds) the entry and records it as the newest of its recipe name, so `bottle gc`
/// keeps it until a newer build of the name. `None` when SIGINT or SIGTERM came first: the
/// build future is dropped, which closes the engine's build request (the engine then stops
/// the build and removes its containers), the spinners are cleared, and nothing is stored.
pub(super) async fn build_interruptible(
    g: &Global,
    store: &Store,
    planned: &Planned,
    keys: &Keys,
    progress: &Progress,
) -> Result<Option<Built>> {
    let built = tokio::select! {
        r = builder::build(store, planned, keys, progress) => r?,
        _ = interrupted() => {
            progress.clear();
            if g.quiet == 0 {
                eprintln!("interrupted; nothing was added to the store");
            }
            return Ok(None);
        }
    };
    // Under the build's gc guard, so gc cannot come between the build and the record.
    store.set_latest(&built.manifest.name, &built.hash)?;
    Ok(Some(built))
}

pub async fn build(
    g: &Global,
    store: &Store,
    recipe: &Path,
    pure: bool,
    root: Option<&str>,
    push: Option<&str>,
) -> Result<Outcome> {
    let progress = Progress::new(g.quiet > 0 || g.json, g.no_progress);
    let (planned, keys) = keyed(recipe, pure, g)?;
    // As Nix substitutes: what a cache has (signed by a trusted key) is pulled, not built.
    super::share::substitute(g, store, &Manifest::of(&keys).hash()).await?;
    let Some(built) = build_interruptible(g, store, &planned, &keys, &progress).await? else {
        return Ok(Outcome::Interrupted);
    };
    if let Some(name) = root {
        store.add_root(name, &built.hash)?;
    }
    if let Some(url) = push {
        super::share::push_entry(g, store, &built.hash, url, None).await?;
    }
    let path = store.entry_file(&built.hash);
    if g.json {
        let components: Vec<_> = built
            .components
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "hash": c.hash,
                    "cached": c.cached,
                    "path": store.component_dir(&crate::hash::ComponentId { kind: c.name, hash: c.hash }),
                })
            })
            .collect();
        print_json(&json!({
            "hash": built.hash,
            "path": path,
            "name": built.manifest.name,
            "cached": built.cached(),
            "components": components,
            "notes": built.notes,
        }))?;
    } else {
        if g.quiet == 0 {
            for n in &built.notes {
                eprintln!("note: {n}");
            }
            let what = if built.cached() { "cached" } else { "built" };
            let parts: Vec<String> = built
                .components
                .iter()
                .map(|c| {
                    let how = if c.cached { "cached" } else { "built" };
                    format!("{} {} ({how})", c.name, c.hash.short())
                })
                .collect();
            eprintln!("{what} {}: {}", built.manifest.name, parts.join(", "));
        }
        out(built.hash)?;
    }
    Ok(Outcome::Success)
}

pub fn hash(g: &Global, recipe: &Path, pure: bool) -> Result<Outcome> {
    let (_, keys) = keyed(recipe, pure, g)?;
    let m = Manifest::of(&keys);
    if g.json {
        print_json(&json!({
            "hash": m.hash(),
            "name": m.name,
            "components": {
                "guest": m.components.guest,
                "bundle": m.components.bundle,
                "config": m.components.config,
            },
        }))?;
    } else {
        out(m.hash())?;
    }
    Ok(Outcome::Success)
}
