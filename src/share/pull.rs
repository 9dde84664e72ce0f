//! `bottle pull`: an entry from a cache into the store, every byte checked before it is
//! used, nothing published unless all of it is (see the module doc of `share`).

use std::collections::HashMap;
use std::fs;

use futures_util::{StreamExt, stream};
use indicatif::ProgressBar;
use serde::Serialize;

use super::assemble::{Assembly, Piece, Stop, assembler};
use super::bound::{Body, Bound};
use super::cache::{Cache, JOBS};
use super::chunk::{ChunkList, ChunkRef};
use super::error::ShareError;
use super::layout;
use super::local::{self, Source};
use super::sign::{self, PublicKey};
use crate::digest::Digest;
use crate::hash::{BuildHash, ComponentId};
use crate::manifest::{Manifest, Record};
use crate::store::Store;

/// Which signatures a pull accepts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    /// Accept an entry no trusted key signed (`--no-check-sigs`). Still checked: the manifest
    /// against the entry's hash, each record against its component's hash, a config against
    /// what its key renders, every byte against its record, modes, bounds. Not: the guest's
    /// and the bundle's image archives, which a component's hash (its inputs) does not bind —
    /// unsigned, the cache chooses them.
    pub unsigned_ok: bool,
}

/// What a pull did.
#[derive(Debug, Default, Serialize)]
pub struct PullReport {
    /// The store had the entry: nothing was transferred.
    pub present: bool,
    #[serde(serialize_with = "layout::ids")]
    pub components: Vec<ComponentId>,
    pub chunks_downloaded: usize,
    pub bytes_downloaded: u64,
    /// Chunks found on this machine: in its components, or put together by a killed pull.
    pub chunks_local: usize,
    /// Bytes a killed pull had put together, which this one resumed from.
    pub bytes_resumed: u64,
    /// The key whose signature was accepted.
    pub signed_by: Option<String>,
}

/// What was read of the entry before its chunks: checked, not yet published.
struct Remote {
    hash: BuildHash,
    url: String,
    manifest: Vec<u8>,
    records: Vec<(ComponentId, Vec<u8>, Record)>,
}

impl Remote {
    fn refused(&self, what: impl Into<String>, problem: impl Into<String>) -> ShareError {
        ShareError::Refused {
            hash: self.hash,
            url: self.url.clone(),
            what: what.into(),
            problem: problem.into(),
        }
    }
}

pub async fn pull(
    store: &Store,
    cache: &Cache,
    hash: &BuildHash,
    trust: &Trust,
    bar: &ProgressBar,
) -> Result<PullReport, ShareError> {
    if store.contains(hash) {
        if let Ok(Some(m)) = store.manifest(hash) {
            forget(store, &m.components.ids());
        }
        return Ok(PullReport {
            present: true,
            ..PullReport::default()
        });
    }
    let remote = fetch_entry(cache, hash).await?;
    let signed_by = check_signature(cache, &remote, trust).await?;
    // Modes no store file may have, signed or not: refused before anything is downloaded.
    for (id, _, record) in &remote.records {
        let modes = Store::import_mode_damage(record);
        if !modes.is_empty() {
            let list: Vec<String> = modes.iter().map(|d| d.to_string()).collect();
            return Err(remote.refused(format!("{} record", id.kind), list.join("; ")));
        }
    }
    let mut lists = Vec::new();
    for (id, _, record) in &remote.records {
        if store.has_component(id) {
            continue;
        }
        let key = layout::chunk_list_key(id);
        let what = format!("{} chunk list", id.kind);
        let bytes = get(cache, hash, &key, Bound::CHUNK_LIST, &what)
            .await?
            .ok_or_else(|| {
                remote.refused(
                    format!("{} chunk list", id.kind),
                    format!("{key} is missing from the cache"),
                )
            })?;
        let list = ChunkList::parse(&bytes, record)
            .map_err(|p| remote.refused(format!("{} chunk list", id.kind), p))?;
        lists.push((*id, list));
    }
    let mut report = PullReport {
        signed_by,
        ..PullReport::default()
    };
    // `bottle gc` removes what killed pulls left only while no pull holds this.
    store.init()?;
    let _gc = store.gc_guard()?;
    // What is put together stays for the next pull when this one fails on the way (a
    // network error); a refusal removes it, and so does success, once it is published.
    let started = std::time::Instant::now();
    let mut done = Ok(());
    for (id, list) in &lists {
        done = fetch_component(store, cache, &remote, *id, list, bar, &mut report).await;
        if done.is_err() {
            break;
        }
    }
    tracing::debug!("pull: chunks in {:?}", started.elapsed());
    let done = match done {
        Ok(()) => publish(store, &remote, &lists).await,
        Err(e) => Err(e),
    };
    tracing::debug!("pull: done in {:?}", started.elapsed());
    if matches!(
        &done,
        Ok(_) | Err(ShareError::Refused { .. } | ShareError::Store(_))
    ) {
        forget(
            store,
            &remote
                .records
                .iter()
                .map(|(id, _, _)| *id)
                .collect::<Vec<_>>(),
        );
    }
    report.components = done?;
    Ok(report)
}

/// An object of the entry, at most `bound` bytes of it: one past its bound is refused.
async fn get(
    cache: &Cache,
    hash: &BuildHash,
    key: &str,
    bound: Bound,
    what: &str,
) -> Result<Option<bytes::Bytes>, ShareError> {
    Ok(get_body(cache, hash, key, bound, what)
        .await?
        .map(Body::into_bytes))
}

/// [`get`], the bytes kept as the parts they arrived in.
async fn get_body(
    cache: &Cache,
    hash: &BuildHash,
    key: &str,
    bound: Bound,
    what: &str,
) -> Result<Option<Body>, ShareError> {
    match cache.get_body(key, bound).await {
        Err(e) if e.oversize() => Err(ShareError::Refused {
            hash: *hash,
            url: cache.url(),
            what: what.to_string(),
            problem: format!("{key}: {}", e.kind),
        }),
        r => Ok(r?),
    }
}

/// The manifest and the records, each checked against its name.
async fn fetch_entry(cache: &Cache, hash: &BuildHash) -> Result<Remote, ShareError> {
    let url = cache.url();
    let manifest = get(
        cache,
        hash,
        &layout::entry_key(hash),
        Bound::MANIFEST,
        "manifest",
    )
    .await?
    .ok_or_else(|| ShareError::NotInCache {
        hash: *hash,
        url: url.clone(),
    })?
    .to_vec();
    let mut remote = Remote {
        hash: *hash,
        url,
        manifest,
        records: Vec::new(),
    };
    let m = Manifest::parse(&remote.manifest, "the cache's manifest")
        .map_err(|e| remote.refused("manifest", e.to_string()))?;
    if &m.hash() != hash {
        return Err(remote.refused(
            "manifest",
            format!("it hashes to {}, not to the entry's name", m.hash()),
        ));
    }
    for id in m.components.ids() {
        let key = layout::record_key(&id);
        let what = format!("{} record", id.kind);
        let bytes = get(cache, hash, &key, Bound::RECORD, &what)
            .await?
            .ok_or_else(|| remote.refused(&what, format!("{key} is missing from the cache")))?
            .to_vec();
        let record =
            Record::parse(&bytes, &key, &id).map_err(|e| remote.refused(&what, e.to_string()))?;
        remote.records.push((id, bytes, record));
    }
    Ok(remote)
}

/// Accepts the entry when a trusted key signed it (or `--no-check-sigs`); returns that key.
async fn check_signature(
    cache: &Cache,
    remote: &Remote,
    trust: &Trust,
) -> Result<Option<String>, ShareError> {
    let key = layout::signature_key(&remote.hash);
    let text = get(cache, &remote.hash, &key, Bound::SIGNATURES, "signature").await?;
    let sigs = match &text {
        Some(t) => sign::parse_signatures(&String::from_utf8_lossy(t), &key)
            .map_err(|e| remote.refused("signature", e.to_string()))?,
        None => Vec::new(),
    };
    let refs: Vec<(ComponentId, &[u8])> = remote
        .records
        .iter()
        .map(|(id, b, _)| (*id, b.as_slice()))
        .collect();
    let message = sign::fingerprint(&remote.hash, &remote.manifest, &refs);
    // Any one trusted key's signature will do; one by a trusted key's name that does not
    // verify says the entry was changed after it was signed.
    let mut mismatch = None;
    for s in &sigs {
        for k in trust.keys.iter().filter(|k| k.name() == s.key) {
            if k.verifies(&message, s) {
                return Ok(Some(k.name().to_string()));
            }
            mismatch = Some(s.key.clone());
        }
    }
    if trust.unsigned_ok {
        return Ok(None);
    }
    if let Some(name) = mismatch {
        return Err(remote.refused(
            "signature",
            format!(
                "the signature by trusted key {name:?} does not match: the manifest or a record was changed after it was signed"
            ),
        ));
    }
    let fix = "trust the pushing key (--trust NAME:KEY, or trusted-public-keys in the config), or pass --no-check-sigs to accept it unsigned";
    let trusted: Vec<&str> = trust.keys.iter().map(|k| k.name()).collect();
    let problem = if sigs.is_empty() {
        format!("it is not signed ({key} is missing); {fix}")
    } else {
        let by: Vec<&str> = sigs.iter().map(|s| s.key.as_str()).collect();
        format!(
            "it is signed by {} and no trusted key (trusted: {}); {fix}",
            by.join(", "),
            if trusted.is_empty() {
                "none".to_string()
            } else {
                trusted.join(", ")
            }
        )
    };
    Err(remote.refused("signature", problem))
}

/// One component's files, put together in its folder under `local/pull/`, each chunk
/// checked as it arrives and each file as it ends; a file a killed pull left is resumed from
/// its last whole chunk.
async fn fetch_component(
    store: &Store,
    cache: &Cache,
    remote: &Remote,
    id: ComponentId,
    list: &ChunkList,
    bar: &ProgressBar,
    report: &mut PullReport,
) -> Result<(), ShareError> {
    let (_, _, record) = remote
        .records
        .iter()
        .find(|(r, _, _)| *r == id)
        .expect("listed");
    let local = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || local::sources(&store, id.kind))
            .await
            .expect("listing local chunks does not panic")
    };
    bar.inc_length(list.total());
    let dir = local::pull_dir(store, &id);
    for (f, a) in list.files.iter().zip(&record.files) {
        let path = dir.join(&f.path);
        let io = |source| ShareError::Io {
            path: path.clone(),
            source,
        };
        let (file, hasher, resumed) = {
            let (path, chunks) = (path.clone(), f.chunks.clone());
            tokio::task::spawn_blocking(move || local::resume(&path, &chunks))
                .await
                .expect("resuming does not panic")
                .map_err(io)?
        };
        let resumed_bytes: u64 = f.chunks[..resumed].iter().map(|c| c.size).sum();
        report.chunks_local += resumed;
        report.bytes_resumed += resumed_bytes;
        bar.inc(resumed_bytes);
        let what = format!("{}/{}", id.kind, f.path);
        let (to_file, assembled) = assembler(file, hasher);
        let arriving = stream::iter(f.chunks[resumed..].iter().copied())
            .map(|c| fetch_chunk(cache, remote, &local, c, &what))
            .buffered(JOBS);
        let fetched = feed(arriving, &to_file, bar, report).await;
        // What was sent is written before this returns, also on an error: the file is left
        // whole up to its last good chunk for the next pull to resume from.
        drop(to_file);
        // A refused chunk first (the pull cannot succeed from this cache), then what cut the
        // download short, then a write error.
        let hasher = match (assembled.await, fetched) {
            (Err(Stop::BadChunk(c, got)), _) => {
                return Err(remote.refused(
                    chunk_what(&what, &c),
                    format!("its bytes hash to {}, not to its name", got.short()),
                ));
            }
            (_, Err(e)) => return Err(e),
            (Err(Stop::Io(e)), Ok(())) => return Err(io(e)),
            (Ok(hasher), Ok(())) => hasher,
        };
        let digest: Digest = hasher.finalize().into();
        if digest != a.blake3 {
            return Err(remote.refused(
                what,
                format!(
                    "its chunks put together hash to {}, the record says {}",
                    digest.short(),
                    a.blake3.short()
                ),
            ));
        }
    }
    Ok(())
}

/// Sends the chunks to the assembler as they arrive, in order, counting them; stops at the
/// first that cannot be had, or when the assembler stopped (on a write error or a chunk whose
/// bytes are not its name's, which it returns).
async fn feed(
    arriving: impl futures_util::Stream<Item = Result<Piece, ShareError>>,
    to_file: &Assembly,
    bar: &ProgressBar,
    report: &mut PullReport,
) -> Result<(), ShareError> {
    let mut arriving = std::pin::pin!(arriving);
    while let Some(got) = arriving.next().await {
        let piece = got?;
        let (len, downloaded) = (piece.body.len(), piece.check.is_some());
        if !to_file.send(piece).await {
            break;
        }
        bar.inc(len);
        if downloaded {
            report.chunks_downloaded += 1;
            report.bytes_downloaded += len;
        } else {
            report.chunks_local += 1;
        }
    }
    Ok(())
}

/// How a chunk of a file is named in messages: the file, the chunk, its key in the cache.
fn chunk_what(file: &str, c: &ChunkRef) -> String {
    format!(
        "{file}: chunk {} ({})",
        c.blake3.short(),
        layout::chunk_key(&c.blake3)
    )
}

/// One chunk's bytes: from this machine when a component of the same kind holds it (checked
/// as it is read), else from the cache, of the size its list gives; the writer checks those
/// against the chunk's name (see [`assembler`]).
async fn fetch_chunk(
    cache: &Cache,
    remote: &Remote,
    local: &HashMap<Digest, Source>,
    c: ChunkRef,
    file: &str,
) -> Result<Piece, ShareError> {
    if let Some(src) = local.get(&c.blake3).cloned() {
        let read = tokio::task::spawn_blocking(move || src.read(c))
            .await
            .expect("reading a chunk does not panic");
        if let Ok(b) = read {
            return Ok(Piece {
                body: Body::from(bytes::Bytes::from(b)),
                check: None,
            });
        }
    }
    let key = layout::chunk_key(&c.blake3);
    let what = chunk_what(file, &c);
    let body = get_body(cache, &remote.hash, &key, Bound::chunk(c.size), &what)
        .await?
        .ok_or_else(|| remote.refused(&what, "missing from the cache"))?;
    if body.len() != c.size {
        return Err(remote.refused(
            &what,
            format!("{} bytes where the chunk list says {}", body.len(), c.size),
        ));
    }
    Ok(Piece {
        body,
        check: Some(c),
    })
}

/// Publishes the components put together under `local/pull/`, all or none (each is checked
/// before any is published), then the entry.
async fn publish(
    store: &Store,
    remote: &Remote,
    lists: &[(ComponentId, ChunkList)],
) -> Result<Vec<ComponentId>, ShareError> {
    let mut work = Vec::new();
    for (id, _) in lists {
        let (_, bytes, _) = remote
            .records
            .iter()
            .find(|(r, _, _)| r == id)
            .expect("listed");
        work.push((*id, bytes.clone()));
    }
    let store = store.clone();
    let lists = lists.to_vec();
    let (hash, manifest) = (remote.hash, remote.manifest.clone());
    tokio::task::spawn_blocking(move || {
        let dirs: Vec<_> = work
            .into_iter()
            .map(|(id, bytes)| (id, bytes, local::pull_dir(&store, &id)))
            .collect();
        // All or none: every component is checked before any is published.
        let imported = store.import_component_dirs(&dirs)?;
        store.import_entry(&manifest, &hash)?;
        // The next push of these, or pull beside them, need not chunk them again.
        for (id, list) in &lists {
            let _ = local::keep_list(&store, id, list);
        }
        Ok(imported)
    })
    .await
    .expect("publishing does not panic")
}

/// Removes what pulls put together for these components (once published, or when refused).
fn forget(store: &Store, ids: &[ComponentId]) {
    for id in ids {
        let _ = fs::remove_dir_all(local::pull_dir(store, id));
    }
    let _ = fs::remove_dir(store.local().join(local::PULL_DIR));
}
