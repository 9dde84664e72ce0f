//! `bottle gc --remote URL`: removes from a cache the entries not kept, then the components
//! no kept entry names and the chunks no kept component lists.
//!
//! Safe against concurrent pushes and other gcs by the leases of [`super::lease`] (a dry run
//! takes none and removes nothing). Only names in the layout's exact shapes are ever removed
//! ([`Name::of`]): `entries/HEX64.json` and `.sig`, `components/KIND/HEX64/record.json` and
//! `chunks.json`, `chunks/AB/HEX64` under the folder of its first two digits. Anything else
//! a listing shows — an encoded `../`, a stray file — is reported and left alone.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::bound::Bound;
use super::cache::Cache;
use super::chunk::ChunkList;
use super::error::ShareError;
use super::layout::{self, LAYOUT};
use super::lease::Lease;
use crate::hash::{BuildHash, ComponentHash, ComponentId, ComponentKind};
use crate::manifest::{Manifest, Record};

pub use super::lease::STALE_AFTER;

/// A listed name in one of the layout's shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Entry(BuildHash),
    Signature(BuildHash),
    /// A component's `record.json` or `chunks.json`.
    Component(ComponentId),
    /// A chunk, by its 64 hex digits.
    Chunk(String),
}

impl Name {
    /// What a listed key is, when it is exactly one of the layout's shapes.
    pub fn of(key: &str) -> Option<Name> {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            [l, "entries", file] if *l == LAYOUT => {
                let (stem, sig) = match (file.strip_suffix(".json"), file.strip_suffix(".sig")) {
                    (Some(s), _) => (s, false),
                    (_, Some(s)) => (s, true),
                    _ => return None,
                };
                let h = BuildHash::parse(stem)?;
                Some(if sig {
                    Name::Signature(h)
                } else {
                    Name::Entry(h)
                })
            }
            [l, "components", kind, hash, "record.json" | "chunks.json"] if *l == LAYOUT => {
                let kind = ComponentKind::ALL.into_iter().find(|k| k.name() == *kind)?;
                let hash = ComponentHash::parse(hash)?;
                Some(Name::Component(ComponentId { kind, hash }))
            }
            [l, "chunks", ab, hex] if *l == LAYOUT => {
                let d = crate::digest::Digest::parse(hex)?;
                (hex.get(..2) == Some(*ab)).then(|| Name::Chunk(d.hex()))
            }
            _ => None,
        }
    }
}

/// What a remote gc removed (or would remove, under `--dry-run`).
#[derive(Debug, Default, Serialize)]
pub struct RemoteGcReport {
    pub kept: Vec<String>,
    pub removed_entries: Vec<String>,
    pub removed_components: usize,
    pub removed_chunks: usize,
    /// Listed names that are none of the layout's: left alone.
    pub unrecognized: Vec<String>,
}

/// Runs a gc of the cache: keeps the entries in `keep`, or every entry when it is `None`.
/// A dry run takes no lease and removes nothing.
pub async fn gc(
    cache: &Cache,
    keep: Option<&[BuildHash]>,
    dry_run: bool,
) -> Result<RemoteGcReport, ShareError> {
    if dry_run {
        return gc_leased(cache, keep, true).await;
    }
    let lease = Lease::gc(cache).await?;
    pause_at("remote gc remove").await;
    let r = gc_leased(cache, keep, false).await;
    lease.release(cache).await;
    r
}

/// A test hook: `BOTTLE_PAUSE_AT=remote-gc-remove` stops a gc holding its lease, before it
/// reads what to keep, until SIGUSR1 (or 10 minutes).
async fn pause_at(step: &str) {
    let hit = std::env::var("BOTTLE_PAUSE_AT").is_ok_and(|v| v.trim().replace('-', " ") == step);
    if !hit {
        return;
    }
    let Ok(mut resume) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    else {
        return;
    };
    eprintln!("bottle gc: paused at step '{step}' (BOTTLE_PAUSE_AT); SIGUSR1 resumes");
    let _ = tokio::time::timeout(Duration::from_secs(600), resume.recv()).await;
}

/// Every listed key under `prefix` in one of the layout's shapes; the others go to the
/// report, said on stderr, never removed.
async fn listed(
    cache: &Cache,
    prefix: &str,
    report: &mut RemoteGcReport,
) -> Result<Vec<(String, Name)>, ShareError> {
    let mut out = Vec::new();
    for key in cache.list(prefix).await? {
        match Name::of(&key) {
            Some(n) => out.push((key, n)),
            None => {
                tracing::warn!(
                    "{}/{key:?}: not a name of the cache's layout; left alone (remove it by hand if it is not the cache's)",
                    cache.url()
                );
                report.unrecognized.push(key);
            }
        }
    }
    Ok(out)
}

async fn gc_leased(
    cache: &Cache,
    keep: Option<&[BuildHash]>,
    dry_run: bool,
) -> Result<RemoteGcReport, ShareError> {
    let mut report = RemoteGcReport::default();
    let remove = |key: String| async move {
        if dry_run {
            Ok(())
        } else {
            cache.delete(&key).await
        }
    };
    let mut referenced: BTreeSet<ComponentId> = BTreeSet::new();
    for (key, name) in listed(cache, &format!("{LAYOUT}/entries/"), &mut report).await? {
        let Name::Entry(hash) = name else {
            continue;
        };
        if keep.is_some_and(|k| !k.contains(&hash)) {
            remove(key).await?;
            remove(layout::signature_key(&hash)).await?;
            report.removed_entries.push(hash.to_string());
            continue;
        }
        let bytes = cache
            .get(&key, Bound::MANIFEST)
            .await
            .map_err(|e| unreadable(cache, &key, e))?
            .unwrap_or_default();
        let m = Manifest::parse(&bytes, &key).map_err(|e| unreadable(cache, &key, e))?;
        referenced.extend(m.components.ids());
        report.kept.push(hash.to_string());
    }
    let chunks = referenced_chunks(cache, &referenced).await?;
    let mut components = BTreeSet::new();
    for (key, name) in listed(cache, &format!("{LAYOUT}/components/"), &mut report).await? {
        if let Name::Component(id) = name
            && !referenced.contains(&id)
        {
            remove(key).await?;
            components.insert(id);
        }
    }
    for (key, name) in listed(cache, &format!("{LAYOUT}/chunks/"), &mut report).await? {
        if let Name::Chunk(hex) = name
            && !chunks.contains(&hex)
        {
            remove(key).await?;
            report.removed_chunks += 1;
        }
    }
    report.removed_components = components.len();
    Ok(report)
}

fn unreadable(cache: &Cache, key: &str, e: impl std::fmt::Display) -> ShareError {
    ShareError::Stopped {
        url: cache.url(),
        what: format!("{key} is unreadable ({e}), so nothing is removed; remove that entry first"),
    }
}

/// The chunks the referenced components list; any unreadable list stops the gc.
async fn referenced_chunks(
    cache: &Cache,
    referenced: &BTreeSet<ComponentId>,
) -> Result<BTreeSet<String>, ShareError> {
    let mut out = BTreeSet::new();
    for id in referenced {
        let rkey = layout::record_key(id);
        let lkey = layout::chunk_list_key(id);
        let record = cache
            .get(&rkey, Bound::RECORD)
            .await
            .map_err(|e| unreadable(cache, &rkey, e))?;
        let list = cache
            .get(&lkey, Bound::CHUNK_LIST)
            .await
            .map_err(|e| unreadable(cache, &lkey, e))?;
        let (Some(record), Some(list)) = (record, list) else {
            // A kept entry whose component is not (yet) whole: nothing of it is garbage.
            continue;
        };
        let record = Record::parse(&record, &rkey, id).map_err(|e| unreadable(cache, &rkey, e))?;
        let list = ChunkList::parse(&list, &record).map_err(|e| unreadable(cache, &lkey, e))?;
        out.extend(list.located().map(|(_, _, c)| c.blake3.hex()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_layouts_exact_shapes_are_names() {
        let hex = "ab".repeat(32);
        let ok = [
            format!("v1/entries/{hex}.json"),
            format!("v1/entries/{hex}.sig"),
            format!("v1/components/guest/{hex}/record.json"),
            format!("v1/components/config/{hex}/chunks.json"),
            format!("v1/chunks/ab/{hex}"),
        ];
        for k in &ok {
            assert!(Name::of(k).is_some(), "{k}");
        }
        let bad = [
            format!("v1/chunks/00/{hex}"),
            format!("v1/chunks/ab/{}", hex.to_uppercase()),
            format!("v1/chunks/ab/%2e%2e%2f{hex}"),
            "v1/chunks/00/%2e%2e%2f%2e%2e%2fvictim".to_string(),
            format!("v1/chunks/ab/../{hex}"),
            format!("v1/entries/{hex}.json.bak"),
            format!("v1/components/other/{hex}/record.json"),
            format!("v1/components/guest/{hex}/image.tar"),
            format!("v2/chunks/ab/{hex}"),
            format!("v1/chunks/ab/cd/{hex}"),
        ];
        for k in &bad {
            assert_eq!(Name::of(k), None, "{k}");
        }
    }
}
