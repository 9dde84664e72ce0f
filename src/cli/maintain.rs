//! `bottle verify`, `bottle gc` and `bottle rm`: keeping the store sound and small.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{Global, Outcome, human_bytes, out, print_json, target};
use crate::runtime::docker;
use crate::runtime::images::{self, ImageRemoval};
use crate::store::{GcReport, Store};

pub fn verify(g: &Global, store: &Store, hash: Option<&str>) -> Result<Outcome> {
    let hashes = match hash {
        Some(h) => vec![target::entry(g, store, h)?],
        None => store.hashes()?,
    };
    let mut any = false;
    let mut report = Vec::new();
    for h in hashes {
        let damage = store.verify(&h)?;
        any |= !damage.is_empty();
        if !g.json {
            if damage.is_empty() {
                out(format!("ok       {h}"))?;
            }
            for d in &damage {
                out(format!("damaged  {h}  {}: {}", d.path, d.problem))?;
            }
        }
        report.push(json!({ "hash": h, "ok": damage.is_empty(), "damage": damage }));
    }
    if g.json {
        print_json(&Value::Array(report))?;
    }
    if any {
        if !g.json {
            eprintln!(
                "error: damaged entries found; remove them with `bottle gc` and build them again"
            );
        }
        return Ok(Outcome::Damaged);
    }
    Ok(Outcome::Success)
}

pub async fn gc(g: &Global, store: &Store, keep: &[String], dry_run: bool) -> Result<Outcome> {
    let keep = keep
        .iter()
        .map(|k| target::entry(g, store, k))
        .collect::<Result<Vec<_>>>()?;
    let s = store.clone();
    let r = tokio::task::spawn_blocking(move || s.gc(&keep, dry_run))
        .await
        .context("the gc task panicked")??;
    let images = remove_images(&r, dry_run).await;
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["removed_images"] = serde_json::to_value(&images.removed)?;
        v["images_not_removed"] = serde_json::to_value(&images.failed)?;
        print_json(&v)?;
        return Ok(Outcome::Success);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for h in &r.removed_entries {
        out(format!("{verb} entry {h}"))?;
    }
    for c in &r.removed_components {
        out(format!("{verb} component {c}"))?;
    }
    print_images(verb, &images)?;
    for t in &r.removed_temporary {
        out(format!("{verb} temporary {t}"))?;
    }
    for l in &r.removed_layouts {
        out(format!("{verb} layout {l}"))?;
    }
    for run in &r.removed_runs {
        out(format!("{verb} ended run {run} (its audit log)"))?;
    }
    out(format!(
        "{verb} {} entries, {} components, {} engine images, {} temporary folders, {} old layouts; {} freed; {} entries kept",
        r.removed_entries.len(),
        r.removed_components.len(),
        images.removed.len(),
        r.removed_temporary.len(),
        r.removed_layouts.len(),
        human_bytes(r.freed_bytes),
        r.kept.len()
    ))?;
    Ok(Outcome::Success)
}

/// `bottle rm TARGET`: one entry, its roots, the components only it named and their images.
pub async fn rm(g: &Global, store: &Store, input: &str) -> Result<Outcome> {
    let hash = target::entry(g, store, input)?;
    let s = store.clone();
    let r = tokio::task::spawn_blocking(move || s.remove_entry(&hash))
        .await
        .context("the rm task panicked")??;
    let images = remove_images(&r.removed, false).await;
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["removed_images"] = serde_json::to_value(&images.removed)?;
        v["images_not_removed"] = serde_json::to_value(&images.failed)?;
        print_json(&v)?;
        return Ok(Outcome::Success);
    }
    out(format!("removed entry {} ({})", r.hash, r.name))?;
    for root in &r.roots {
        out(format!("removed root {root}"))?;
    }
    for c in &r.removed.removed_components {
        out(format!("removed component {c}"))?;
    }
    print_images("removed", &images)?;
    if g.quiet == 0 {
        eprintln!("{} freed", human_bytes(r.removed.freed_bytes));
    }
    Ok(Outcome::Success)
}

/// The engine's images of what the store removed (see `runtime::images`). An engine out of
/// reach is a warning: the store's work is done, the images wait for the next gc.
async fn remove_images(r: &GcReport, dry_run: bool) -> ImageRemoval {
    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("engine images not removed: {e:#}");
            return ImageRemoval::default();
        }
    };
    match images::remove_unneeded(&docker, &r.removed_ids, &r.build_parents, dry_run).await {
        Ok(images) => {
            for (id, why) in &images.failed {
                tracing::warn!("engine image {id} stays: {why}");
            }
            images
        }
        Err(e) => {
            tracing::warn!("engine images not removed: {e:#}");
            ImageRemoval::default()
        }
    }
}

fn print_images(verb: &str, images: &ImageRemoval) -> Result<()> {
    for i in &images.removed {
        out(format!("{verb} engine image {} ({})", i.id, i.of))?;
    }
    Ok(())
}
