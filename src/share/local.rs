//! What the local store holds of chunks: the chunk lists of its components (computed once,
//! kept in `local/chunk-lists/`), the chunks a pull downloaded and not yet published
//! (`local/chunks/`, where a killed pull resumes), and a reader that puts a file together
//! from chunks, checking each against its blake3 as it reads it.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::chunk::{self, ChunkList, ChunkRef, FileChunks};
use crate::digest::Digest;
use crate::hash::{ComponentId, ComponentKind};
use crate::store::{Component, Store};

/// Where a chunk's bytes are on this machine.
#[derive(Debug, Clone)]
pub enum Source {
    /// A downloaded chunk file under `local/chunks/`.
    Partial(PathBuf),
    /// A slice of a file of a published component.
    Slice { path: PathBuf, offset: u64 },
}

impl Source {
    /// The chunk's bytes, checked against its blake3 and size.
    pub fn read(&self, c: ChunkRef) -> std::io::Result<Vec<u8>> {
        match self {
            Source::Slice { path, offset } => chunk::read_checked(path, *offset, c),
            Source::Partial(path) => chunk::read_checked(path, 0, c),
        }
    }

    /// The chunk's bytes, of its size but not rehashed: for putting a file together whose
    /// whole blake3 is checked against its record as it is read.
    fn read_sized(&self, c: ChunkRef) -> std::io::Result<Vec<u8>> {
        let (path, offset) = match self {
            Source::Slice { path, offset } => (path, *offset),
            Source::Partial(path) => (path, 0),
        };
        let mut f = fs::File::open(path)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(c.size as usize);
        f.take(c.size).read_to_end(&mut buf)?;
        if buf.len() as u64 != c.size {
            return Err(std::io::Error::other(format!(
                "{} ends before chunk {}",
                path.display(),
                c.blake3.short()
            )));
        }
        Ok(buf)
    }
}

/// Downloaded chunks not yet published.
pub fn partial_dir(store: &Store) -> PathBuf {
    store.local().join("chunks")
}

pub fn partial_path(store: &Store, d: &Digest) -> PathBuf {
    partial_dir(store).join(d.hex())
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
            out.entry(c.blake3).or_insert_with(|| Source::Slice {
                path: comp.path(path),
                offset,
            });
        }
    }
    out
}

/// blake3 of a file put together from its chunks (each read whole, hashed on all cores).
pub fn whole_digest(chunks: &[(ChunkRef, Source)]) -> std::io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    for (c, src) in chunks {
        h.update_rayon(&src.read_sized(*c)?);
    }
    Ok(h.finalize().into())
}

/// Reads a file put together from its chunks, one chunk in memory at a time. Chunks are not
/// rehashed here: the reader's caller checks the whole file against its record (a chunk read
/// from a file of this store that changed since shows as a whole-file mismatch).
pub struct ChunkReader {
    chunks: std::vec::IntoIter<(ChunkRef, Source)>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub fn new(chunks: Vec<(ChunkRef, Source)>) -> ChunkReader {
        ChunkReader {
            chunks: chunks.into_iter(),
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some((c, src)) = self.chunks.next() else {
                return Ok(0);
            };
            self.buf = src.read_sized(c)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
