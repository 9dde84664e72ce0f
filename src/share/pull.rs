//! `bottle pull`: an entry from a cache into the store, every byte checked before it is
//! used, nothing published unless all of it is (see the module doc of `share`).

use std::collections::{HashMap, HashSet};
use std::fs;

use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use serde::Serialize;

use super::chunk::{ChunkList, ChunkRef};
use super::local::{self, ChunkReader, Source};
use super::sign::{self, PublicKey};
use super::{Cache, JOBS, ShareError};
use crate::digest::Digest;
use crate::hash::{BuildHash, ComponentId};
use crate::manifest::{Manifest, Record};
use crate::store::Store;

/// Which signatures a pull accepts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    /// Accept an entry no trusted key signed (`--no-check-sigs`): bytes are still checked
    /// against the entry's hash and records.
    pub unsigned_ok: bool,
}

/// What a pull did.
#[derive(Debug, Default, Serialize)]
pub struct PullReport {
    /// The store had the entry: nothing was transferred.
    pub present: bool,
    #[serde(serialize_with = "super::ids")]
    pub components: Vec<ComponentId>,
    pub chunks_downloaded: usize,
    pub bytes_downloaded: u64,
    /// Chunks found on this machine: in its components, or downloaded by a killed pull.
    pub chunks_local: usize,
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
        // What a pull killed after publishing the entry downloaded for it.
        if local::partial_dir(store).is_dir()
            && let Ok(Some(m)) = store.manifest(hash)
        {
            let lists: Vec<_> = m
                .components
                .ids()
                .into_iter()
                .filter_map(|id| local::kept(store, &id).map(|l| (id, l)))
                .collect();
            forget_partial(store, &lists);
        }
        return Ok(PullReport {
            present: true,
            ..PullReport::default()
        });
    }
    let remote = fetch_entry(cache, hash).await?;
    let signed_by = check_signature(cache, &remote, trust).await?;
    let mut lists = Vec::new();
    // Chunk lists of components the store has: only to forget what a killed pull downloaded
    // for them.
    let mut published = Vec::new();
    for (id, _, record) in &remote.records {
        let partial = local::partial_dir(store).is_dir();
        if store.has_component(id) {
            if partial
                && let Ok(Some(bytes)) = cache.get(&super::chunk_list_key(id)).await
                && let Ok(list) = ChunkList::parse(&bytes, record)
            {
                published.push((*id, list));
            }
            continue;
        }
        let key = super::chunk_list_key(id);
        let bytes = cache.get(&key).await?.ok_or_else(|| {
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
    // `bottle gc` removes downloaded chunks only while no pull holds this.
    store.init()?;
    let _gc = store.gc_guard()?;
    // Downloaded chunks stay for the next pull when this one fails on the way (a network
    // error); a refusal removes them, and so does success, once they are published.
    let started = std::time::Instant::now();
    let done = match fetch_chunks(store, cache, &remote, &lists, bar, &mut report).await {
        Ok(sources) => {
            tracing::debug!("pull: chunks in {:?}", started.elapsed());
            publish(store, &remote, &lists, sources).await
        }
        Err(e) => Err(e),
    };
    tracing::debug!("pull: done in {:?}", started.elapsed());
    if matches!(
        &done,
        Ok(_) | Err(ShareError::Refused { .. } | ShareError::Store(_))
    ) {
        forget_partial(store, &lists);
        forget_partial(store, &published);
    }
    report.components = done?;
    Ok(report)
}

/// The manifest and the records, each checked against its name.
async fn fetch_entry(cache: &Cache, hash: &BuildHash) -> Result<Remote, ShareError> {
    let url = cache.url();
    let manifest = cache
        .get(&super::entry_key(hash))
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
        let key = super::record_key(&id);
        let what = format!("{} record", id.kind);
        let bytes = cache
            .get(&key)
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
    let key = super::signature_key(&remote.hash);
    let text = cache.get(&key).await?;
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

/// Where each needed chunk is, downloading those this machine lacks (each checked before it
/// is written).
async fn fetch_chunks(
    store: &Store,
    cache: &Cache,
    remote: &Remote,
    lists: &[(ComponentId, ChunkList)],
    bar: &ProgressBar,
    report: &mut PullReport,
) -> Result<HashMap<Digest, Source>, ShareError> {
    let mut sources = HashMap::new();
    let mut wanted: HashMap<Digest, (ChunkRef, String)> = HashMap::new();
    let mut by_kind = HashMap::new();
    for (id, list) in lists {
        let local = by_kind
            .entry(id.kind)
            .or_insert_with(|| local::sources(store, id.kind));
        for (path, _, c) in list.located() {
            let partial = local::partial_path(store, &c.blake3);
            if let Some(src) = local.get(&c.blake3) {
                sources.insert(c.blake3, src.clone());
            } else if partial.is_file() {
                sources.insert(c.blake3, Source::Partial(partial));
            } else {
                wanted
                    .entry(c.blake3)
                    .or_insert((c, format!("{}/{path}", id.kind)));
                continue;
            }
        }
    }
    report.chunks_local = sources.len();
    bar.inc_length(wanted.values().map(|(c, _)| c.size).sum());
    let dir = local::partial_dir(store);
    if !wanted.is_empty() {
        fs::create_dir_all(&dir).map_err(|source| ShareError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let got: Vec<(Digest, u64)> = stream::iter(wanted.into_values())
        .map(|(c, file)| download(store, cache, remote, c, file, bar))
        .buffer_unordered(JOBS)
        .try_collect()
        .await?;
    for (d, size) in got {
        report.chunks_downloaded += 1;
        report.bytes_downloaded += size;
        sources.insert(d, Source::Partial(local::partial_path(store, &d)));
    }
    Ok(sources)
}

/// One chunk: fetched, checked against its name and size, written by one rename.
async fn download(
    store: &Store,
    cache: &Cache,
    remote: &Remote,
    c: ChunkRef,
    file: String,
    bar: &ProgressBar,
) -> Result<(Digest, u64), ShareError> {
    let key = super::chunk_key(&c.blake3);
    let what = format!("{file}: chunk {} ({key})", c.blake3.short());
    let bytes = cache
        .get(&key)
        .await?
        .ok_or_else(|| remote.refused(&what, "missing from the cache"))?;
    if bytes.len() as u64 != c.size {
        return Err(remote.refused(
            &what,
            format!("{} bytes where the chunk list says {}", bytes.len(), c.size),
        ));
    }
    let got = Digest::of(&bytes);
    if got != c.blake3 {
        return Err(remote.refused(
            &what,
            format!("its bytes hash to {}, not to its name", got.short()),
        ));
    }
    // Written here, not on a blocking task: a refused pull drops this future, and no write
    // may land after it removed what it had downloaded.
    let path = local::partial_path(store, &c.blake3);
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(local::partial_dir(store))?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|source| ShareError::Io {
        path: path.clone(),
        source,
    })?;
    bar.inc(c.size);
    Ok((c.blake3, c.size))
}

/// Checks every file put together from its chunks against its record, then imports the
/// components (which checks them again as it copies) and the entry.
async fn publish(
    store: &Store,
    remote: &Remote,
    lists: &[(ComponentId, ChunkList)],
    sources: HashMap<Digest, Source>,
) -> Result<Vec<ComponentId>, ShareError> {
    let readers = |list: &ChunkList| -> Files {
        list.files
            .iter()
            .map(|f| {
                let chunks = f
                    .chunks
                    .iter()
                    .map(|c| (*c, sources[&c.blake3].clone()))
                    .collect();
                (f.path.clone(), chunks)
            })
            .collect()
    };
    let mut work = Vec::new();
    for (id, list) in lists {
        let (_, bytes, record) = remote
            .records
            .iter()
            .find(|(r, _, _)| r == id)
            .expect("listed");
        work.push((*id, bytes.clone(), record.clone(), readers(list)));
    }
    let store = store.clone();
    let lists = lists.to_vec();
    let (hash, url) = (remote.hash, remote.url.clone());
    let manifest = remote.manifest.clone();
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        for (id, _, record, files) in &work {
            check_files(*id, record, files).map_err(|(what, problem)| ShareError::Refused {
                hash,
                url: url.clone(),
                what,
                problem,
            })?;
        }
        tracing::debug!("pull: files checked in {:?}", t0.elapsed());
        let mut imported = Vec::new();
        for (id, bytes, _, files) in work {
            let open = |rel: &str| -> std::io::Result<Box<dyn std::io::Read>> {
                let chunks = files
                    .get(rel)
                    .cloned()
                    .ok_or_else(|| std::io::Error::other("not in the chunk list"))?;
                Ok(Box::new(ChunkReader::new(chunks)))
            };
            if store.import_component(id, &bytes, open)? {
                imported.push(id);
            }
        }
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

/// Each file of a component, as the chunks that make it up and where they are.
type Files = HashMap<String, Vec<(ChunkRef, Source)>>;

/// Each file put together from its chunks must hash to its record's blake3; else (what,
/// problem) of the first that does not.
fn check_files(id: ComponentId, record: &Record, files: &Files) -> Result<(), (String, String)> {
    for a in &record.files {
        let what = || format!("{}/{}", id.kind, a.path);
        match local::whole_digest(&files[&a.path]) {
            Err(e) => return Err((what(), format!("cannot be put together: {e}"))),
            Ok(digest) if digest != a.blake3 => {
                return Err((
                    what(),
                    format!(
                        "its chunks put together hash to {}, the record says {}",
                        digest.short(),
                        a.blake3.short()
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Removes the downloaded chunks of these components (once published, or when refused).
fn forget_partial(store: &Store, lists: &[(ComponentId, ChunkList)]) {
    let mut seen = HashSet::new();
    for (_, list) in lists {
        for (_, _, c) in list.located() {
            if seen.insert(c.blake3) {
                let _ = fs::remove_file(local::partial_path(store, &c.blake3));
            }
        }
    }
    let _ = fs::remove_dir(local::partial_dir(store));
}
