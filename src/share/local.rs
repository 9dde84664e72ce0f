//! What the local store holds of chunks: the chunk lists of its components (computed once,
//! kept in `local/chunk-lists/`), where each chunk of its components lies, and the files a
//! pull puts together (`local/pull/KIND-HASH/`, where a killed pull resumes).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::chunk::{self, ChunkList, ChunkRef, FileChunks};
use crate::digest::Digest;
use crate::hash::{ComponentId, ComponentKind};
use crate::store::{Component, Store};

/// Where a chunk's bytes are on this machine: a slice of a file of a published component.
#[derive(Debug, Clone)]
pub struct Source {
    path: PathBuf,
    offset: u64,
}

impl Source {
    pub fn new(path: PathBuf, offset: u64) -> Source {
        Source { path, offset }
    }

    /// The chunk's bytes, checked against its blake3 and size.
    pub fn read(&self, c: ChunkRef) -> std::io::Result<Vec<u8>> {
        chunk::read_checked(&self.path, self.offset, c)
    }
}

/// The folder under `local/` where pulls put components together.
pub const PULL_DIR: &str = "pull";

/// Where a pull puts a component's files together.
pub fn pull_dir(store: &Store, id: &ComponentId) -> PathBuf {
    store
        .local()
        .join(PULL_DIR)
        .join(format!("{}-{}", id.kind, id.hash))
}

/// Opens a file being put together for appending: what a killed pull left of it is kept up
/// to its last whole chunk that matches its blake3, and cut there. Returns the file, a hasher
/// fed with what was kept, and how many chunks that is.
pub fn resume(
    path: &Path,
    chunks: &[ChunkRef],
) -> std::io::Result<(fs::File, blake3::Hasher, usize)> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut hasher = blake3::Hasher::new();
    let mut kept = 0;
    let mut offset = 0u64;
    if let Ok(mut f) = fs::File::open(path) {
        let len = f.metadata()?.len();
        for c in chunks {
            if offset + c.size > len {
                break;
            }
            let mut buf = Vec::with_capacity(c.size as usize);
            (&mut f).take(c.size).read_to_end(&mut buf)?;
            if Digest::of(&buf) != c.blake3 {
                break;
            }
            hasher.update(&buf);
            offset += c.size;
            kept += 1;
        }
    }
    let f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(offset).map_err(io_err(path))?;
    let mut f = f;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
    Ok((f, hasher, kept))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn kept_list(store: &Store, id: &ComponentId) -> PathBuf {
    store
        .local()
        .join("chunk-lists")
        .join(format!("{}-{}.json", id.kind, id.hash))
}

/// A published component's chunk list: read from `local/chunk-lists/` when it was kept
/// before, else computed (each file's whole blake3 checked against the record in the same
/// pass), and kept when `keep` (a push; a pull keeps nothing until it succeeds).
pub fn chunk_list(store: &Store, comp: &Component, keep: bool) -> std::io::Result<ChunkList> {
    let kept = kept_list(store, &comp.id);
    if let Ok(bytes) = fs::read(&kept)
        && let Ok(list) = ChunkList::parse(&bytes, &comp.record)
    {
        return Ok(list);
    }
    let mut files = Vec::new();
    for a in &comp.record.files {
        let path = comp.path(&a.path);
        let (chunks, whole) = chunk::chunk_file(&path).map_err(io_err(&path))?;
        if whole != a.blake3 {
            return Err(std::io::Error::other(format!(
                "{} differs from its record: `bottle verify` names the damage",
                path.display()
            )));
        }
        files.push(FileChunks {
            path: a.path.clone(),
            chunks,
        });
    }
    let list = ChunkList {
        format: chunk::CHUNK_LIST_FORMAT,
        files,
    };
    if keep {
        keep_list(store, &comp.id, &list)?;
    }
    Ok(list)
}

/// A component's kept chunk list, if any (checked against its record).
pub fn kept(store: &Store, id: &ComponentId) -> Option<ChunkList> {
    let record = store.record(id).ok()??;
    let bytes = fs::read(kept_list(store, id)).ok()?;
    ChunkList::parse(&bytes, &record).ok()
}

/// Keeps a component's chunk list in `local/chunk-lists/` (one rename).
pub fn keep_list(store: &Store, id: &ComponentId, list: &ChunkList) -> std::io::Result<()> {
    let kept = kept_list(store, id);
    let dir = kept.parent().expect("a file in a folder");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".list-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    std::io::Write::write_all(&mut tmp, &list.to_json()).map_err(io_err(&kept))?;
    tmp.persist(&kept).map_err(|e| io_err(&kept)(e.error))?;
    Ok(())
}

/// Every chunk of the published components of `kind`, with where its bytes are.
pub fn sources(store: &Store, kind: ComponentKind) -> HashMap<Digest, Source> {
    let mut out = HashMap::new();
    for hash in store.component_hashes(kind).unwrap_or_default() {
        let id = ComponentId { kind, hash };
        let Ok(Some(record)) = store.record(&id) else {
            continue;
        };
        let comp = Component {
            dir: store.component_dir(&id),
            id,
            record,
        };
        let Ok(list) = chunk_list(store, &comp, false) else {
            continue;
        };
        for (path, offset, c) in list.located() {
            out.entry(c.blake3)
                .or_insert_with(|| Source::new(comp.path(path), offset));
        }
    }
    out
}
