//! `bottle gc --remote URL`: removes from a cache the entries not kept, then the components
//! no kept entry names and the chunks no kept component lists.
//!
//! Safe against a concurrent push by two leases, each written before the other's is read (so
//! with the read-after-write consistency of a folder, nginx and S3, at least one of the two
//! sees the other): a push writes `locks/push-ID` and then refuses to start if `locks/gc` is
//! fresh; gc writes `locks/gc` and then refuses to start if any `locks/push-*` is fresh. A
//! lease older than [`STALE_AFTER`] is one a killed process left, and is ignored.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::chunk::ChunkList;
use super::{Cache, LAYOUT, ShareError};
use crate::hash::{BuildHash, ComponentId};
use crate::manifest::{Manifest, Record};

/// A lease older than this was left by a killed push or gc.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 3600);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn locks() -> String {
    format!("{LAYOUT}/locks/")
}
fn gc_lock() -> String {
    format!("{LAYOUT}/locks/gc")
}

/// Whether the lease at `key` exists and is younger than [`STALE_AFTER`].
async fn fresh(cache: &Cache, key: &str) -> Result<bool, ShareError> {
    let Some(b) = cache.get(key).await? else {
        return Ok(false);
    };
    let since: u64 = String::from_utf8_lossy(&b).trim().parse().unwrap_or(0);
    Ok(now().saturating_sub(since) < STALE_AFTER.as_secs())
}

/// A push's lease; [`PushLease::release`] removes it.
pub struct PushLease {
    key: String,
}

impl PushLease {
    /// Takes a push's lease, or refuses while a gc runs.
    pub async fn take(cache: &Cache) -> Result<PushLease, ShareError> {
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .expect("the system's randomness is available");
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let lease = PushLease {
            key: format!("{LAYOUT}/locks/push-{hex}"),
        };
        cache
            .put(&lease.key, Bytes::from(now().to_string()))
            .await?;
        if fresh(cache, &gc_lock()).await? {
            lease.release(cache).await;
            return Err(ShareError::Stopped {
                url: cache.url(),
                what: format!(
                    "`bottle gc --remote` is under way (lease {}); push again once it is done",
                    gc_lock()
                ),
            });
        }
        Ok(lease)
    }

    pub async fn release(self, cache: &Cache) {
        let _ = cache.delete(&self.key).await;
    }
}

/// What a remote gc removed (or would remove, under `--dry-run`).
#[derive(Debug, Default, Serialize)]
pub struct RemoteGcReport {
    pub kept: Vec<String>,
    pub removed_entries: Vec<String>,
    pub removed_components: usize,
    pub removed_chunks: usize,
}

/// Runs a gc of the cache: keeps the entries in `keep`, or every entry when it is `None`.
pub async fn gc(
    cache: &Cache,
    keep: Option<&[BuildHash]>,
    dry_run: bool,
) -> Result<RemoteGcReport, ShareError> {
    cache
        .put(&gc_lock(), Bytes::from(now().to_string()))
        .await?;
    let r = gc_locked(cache, keep, dry_run).await;
    let _ = cache.delete(&gc_lock()).await;
    r
}

async fn gc_locked(
    cache: &Cache,
    keep: Option<&[BuildHash]>,
    dry_run: bool,
) -> Result<RemoteGcReport, ShareError> {
    for key in cache.list(&locks()).await? {
        if key.contains("/push-") && fresh(cache, &key).await? {
            return Err(ShareError::Stopped {
                url: cache.url(),
                what: format!("a push is under way (lease {key}); run gc again once it is done"),
            });
        }
    }
    let mut report = RemoteGcReport::default();
    let remove = |key: String| async move {
        if dry_run {
            Ok(())
        } else {
            cache.delete(&key).await
        }
    };
    let mut referenced: BTreeSet<ComponentId> = BTreeSet::new();
    for key in cache.list(&format!("{LAYOUT}/entries/")).await? {
        let Some(hash) = key
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(BuildHash::parse)
        else {
            continue;
        };
        if keep.is_some_and(|k| !k.contains(&hash)) {
            remove(key).await?;
            remove(super::signature_key(&hash)).await?;
            report.removed_entries.push(hash.to_string());
            continue;
        }
        let bytes = cache.get(&key).await?.unwrap_or_default();
        let m = Manifest::parse(&bytes, &key).map_err(|e| unreadable(cache, &key, e))?;
        referenced.extend(m.components.ids());
        report.kept.push(hash.to_string());
    }
    let chunks = referenced_chunks(cache, &referenced).await?;
    let mut components = BTreeSet::new();
    for key in cache.list(&format!("{LAYOUT}/components/")).await? {
        let parts: Vec<&str> = key.split('/').collect();
        let id = (parts.len() == 5)
            .then(|| {
                crate::hash::ComponentKind::ALL
                    .into_iter()
                    .find(|k| k.name() == parts[2])
            })
            .flatten()
            .zip(crate::hash::ComponentHash::parse(parts[3]))
            .map(|(kind, hash)| ComponentId { kind, hash });
        if let Some(id) = id.filter(|id| !referenced.contains(id)) {
            remove(key).await?;
            components.insert(id);
        }
    }
    for key in cache.list(&format!("{LAYOUT}/chunks/")).await? {
        let name = key.rsplit('/').next().unwrap_or_default();
        if !chunks.contains(name) {
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
        let rkey = super::record_key(id);
        let lkey = super::chunk_list_key(id);
        let (Some(record), Some(list)) = (cache.get(&rkey).await?, cache.get(&lkey).await?) else {
            // A kept entry whose component is not (yet) whole: nothing of it is garbage.
            continue;
        };
        let record = Record::parse(&record, &rkey, id).map_err(|e| unreadable(cache, &rkey, e))?;
        let list = ChunkList::parse(&list, &record).map_err(|e| unreadable(cache, &lkey, e))?;
        out.extend(list.located().map(|(_, _, c)| c.blake3.hex()));
    }
    Ok(out)
}
