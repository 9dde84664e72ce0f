//! `bottle build` and `bottle hash`.

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::json;

use super::{Global, Outcome, interrupted, keyed, out, print_json};
use crate::builder;
use crate::progress::Progress;
use crate::store::Store;

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
    super::share::substitute(g, store, &keys.hash()).await?;
    let built = tokio::select! {
        r = builder::build(store, &planned, &keys, &progress) => r?,
        _ = interrupted() => bail!("interrupted; nothing was added to the store"),
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
    let m = keys.manifest();
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
