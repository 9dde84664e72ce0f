//! `bottle push`: an entry of the store into a cache — the chunks the cache lacks, then each
//! component's chunk list and record, then (once what it skipped as already there is checked
//! again, see [`super::lease`]) the manifest, then the signature.

use std::collections::HashMap;
use std::fs;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use serde::Serialize;

use super::bound::Bound;
use super::cache::{Cache, JOBS};
use super::error::ShareError;
use super::layout;
use super::local::{self, Source};
use super::sign::{self, SecretKey};
use crate::digest::Digest;
use crate::hash::{BuildHash, ComponentId};
use crate::manifest::RECORD_FILE;
use crate::store::{Component, Store};

/// What a push did.
#[derive(Debug, Default, Serialize)]
pub struct PushReport {
    /// Components written to the cache (the others it had).
    #[serde(serialize_with = "layout::ids")]
    pub components: Vec<ComponentId>,
    pub chunks_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Chunks of pushed components the cache had already.
    pub chunks_present: usize,
    /// Bytes of every file of the entry.
    pub entry_bytes: u64,
    /// The key that signed it, if any.
    pub signed_by: Option<String>,
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ShareError + '_ {
    move |source| ShareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Pushes an entry, checked as `bottle run` checks it first, and signs it with `key`.
pub async fn push(
    store: &Store,
    cache: &Cache,
    hash: &BuildHash,
    key: Option<&SecretKey>,
    bar: &ProgressBar,
) -> Result<PushReport, ShareError> {
    let entry = store.open(hash)?;
    let lease = super::lease::Lease::push(cache).await?;
    let r = push_leased(store, cache, hash, key, bar, entry).await;
    lease.release(cache).await;
    r
}

/// What a push found in the cache and did not upload: checked again before the manifest is
/// written (see [`super::lease`]).
#[derive(Default)]
struct Skipped {
    keys: Vec<String>,
}

impl Skipped {
    /// Fails, naming the first object, if anything skipped is gone or a gc started.
    async fn recheck(&self, cache: &Cache) -> Result<(), ShareError> {
        if let Some(e) = super::lease::gc_under_way(cache).await? {
            return Err(e);
        }
        let gone: Vec<Option<String>> = stream::iter(self.keys.iter())
            .map(|key| async move {
                Ok::<_, ShareError>((!cache.head(key).await?).then(|| key.clone()))
            })
            .buffer_unordered(JOBS)
            .try_collect()
            .await?;
        if let Some(key) = gone.into_iter().flatten().next() {
            return Err(ShareError::Stopped {
                url: cache.url(),
                what: format!(
                    "{key}, which the cache had when this push began, is gone (a `bottle gc --remote`?); the entry was not pushed: push again"
                ),
            });
        }
        Ok(())
    }
}

async fn push_leased(
    store: &Store,
    cache: &Cache,
    hash: &BuildHash,
    key: Option<&SecretKey>,
    bar: &ProgressBar,
    entry: crate::store::Entry,
) -> Result<PushReport, ShareError> {
    let manifest_path = store.entry_file(hash);
    let manifest = fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let mut report = PushReport {
        entry_bytes: entry.size(),
        ..PushReport::default()
    };
    let mut records = Vec::new();
    let mut skipped = Skipped::default();
    for comp in entry.components() {
        let path = comp.path(RECORD_FILE);
        let record = fs::read(&path).map_err(io(&path))?;
        let (rkey, lkey) = (
            layout::record_key(&comp.id),
            layout::chunk_list_key(&comp.id),
        );
        let have = cache.head(&rkey).await? && cache.head(&lkey).await?;
        if have {
            skipped.keys.extend([rkey, lkey]);
        } else {
            push_component(store, cache, comp, &record, bar, &mut report, &mut skipped).await?;
            report.components.push(comp.id);
        }
        records.push((comp.id, record));
    }
    // Nothing the entry needs may have gone since it was found: then the manifest.
    skipped.recheck(cache).await?;
    cache
        .put(&layout::entry_key(hash), Bytes::from(manifest.clone()))
        .await?;
    if let Some(key) = key {
        let refs: Vec<(ComponentId, &[u8])> =
            records.iter().map(|(id, r)| (*id, r.as_slice())).collect();
        let message = sign::fingerprint(hash, &manifest, &refs);
        let mine = key.sign(&message);
        // Other keys' signatures stay; this key's is replaced.
        let sig_key = layout::signature_key(hash);
        let mut lines: Vec<String> = match cache.get(&sig_key, Bound::SIGNATURES).await? {
            Some(old) => String::from_utf8_lossy(&old)
                .lines()
                .filter(|l| sign::Signature::parse(l, "").is_ok_and(|s| s.key != key.name()))
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        lines.push(mine.to_line());
        let text = lines.join("\n") + "\n";
        cache.put(&sig_key, Bytes::from(text)).await?;
        report.signed_by = Some(key.name().to_string());
    }
    Ok(report)
}

/// One component: its chunks the cache lacks, then its chunk list, then its record.
async fn push_component(
    store: &Store,
    cache: &Cache,
    comp: &Component,
    record: &[u8],
    bar: &ProgressBar,
    report: &mut PushReport,
    skipped: &mut Skipped,
) -> Result<(), ShareError> {
    let list = {
        let (store, comp) = (store.clone(), comp.clone());
        let dir = comp.dir.clone();
        tokio::task::spawn_blocking(move || local::chunk_list(&store, &comp, true))
            .await
            .expect("chunking does not panic")
            .map_err(io(&dir))?
    };
    let mut unique: HashMap<Digest, (Source, super::chunk::ChunkRef)> = HashMap::new();
    for (path, offset, c) in list.located() {
        unique.entry(c.blake3).or_insert_with(|| {
            let path = comp.path(path);
            (Source::new(path, offset), c)
        });
    }
    bar.inc_length(unique.values().map(|(_, c)| c.size).sum());
    let results: Vec<(String, Option<u64>)> = stream::iter(unique.into_values())
        .map(|(src, c)| async move {
            let key = layout::chunk_key(&c.blake3);
            if cache.head(&key).await? {
                bar.inc(c.size);
                return Ok::<_, ShareError>((key, None));
            }
            let bytes = tokio::task::spawn_blocking(move || src.read(c))
                .await
                .expect("reading a chunk does not panic")
                .map_err(io(&comp.dir))?;
            cache.put(&key, Bytes::from(bytes)).await?;
            bar.inc(c.size);
            Ok((key, Some(c.size)))
        })
        .buffer_unordered(JOBS)
        .try_collect()
        .await?;
    for (key, r) in results {
        match r {
            Some(size) => {
                report.chunks_uploaded += 1;
                report.bytes_uploaded += size;
            }
            None => {
                report.chunks_present += 1;
                skipped.keys.push(key);
            }
        }
    }
    let list_bytes = list.to_json();
    report.bytes_uploaded += (list_bytes.len() + record.len()) as u64;
    cache
        .put(&layout::chunk_list_key(&comp.id), Bytes::from(list_bytes))
        .await?;
    cache
        .put(
            &layout::record_key(&comp.id),
            Bytes::copy_from_slice(record),
        )
        .await?;
    Ok(())
}
