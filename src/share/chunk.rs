//! Content-defined chunks: every file of a component is cut by FastCDC into chunks named by
//! their blake3, so a rebuild that changed one file of a large image archive shares every
//! chunk before and after the change with the old one, and a push uploads (a pull downloads)
//! only the chunks the other side lacks.
//!
//! A component's [`ChunkList`] lists, per file of its record, the chunks in order. It is not
//! signed and need not be: each chunk is checked against its blake3 when it arrives, and each
//! file, put together, against the blake3 its (signed) record lists.
//!
//! Chunks are stored as they are, not compressed: the image archives bottle writes hold
//! uncompressed layers (so chunking finds what is shared), and a zstd `.smolmachine` would
//! defeat chunking whether or not chunks were compressed again.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::Record;

/// FastCDC's bounds: chunks of 64 KiB to 1 MiB, 256 KiB on average.
pub const MIN_SIZE: u32 = 64 << 10;
pub const AVG_SIZE: u32 = 256 << 10;
pub const MAX_SIZE: u32 = 1 << 20;

pub const CHUNK_LIST_FORMAT: u32 = 1;

/// One chunk of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    pub blake3: Digest,
    pub size: u64,
}

/// The chunks of one file, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChunks {
    pub path: String,
    pub chunks: Vec<ChunkRef>,
}

/// A component's chunks: one [`FileChunks`] per file of its record, in the record's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkList {
    pub format: u32,
    pub files: Vec<FileChunks>,
}

impl ChunkList {
    /// Parses a chunk list and checks it against the record it serves: the same files in
    /// the same order, each file's chunks adding up to its size, no chunk larger than
    /// [`MAX_SIZE`]. `origin` names it in the message.
    pub fn parse(bytes: &[u8], record: &Record) -> Result<ChunkList, String> {
        let list: ChunkList =
            serde_json::from_slice(bytes).map_err(|e| format!("not a chunk list: {e}"))?;
        if list.format != CHUNK_LIST_FORMAT {
            return Err(format!(
                "chunk list format {} is not the supported {CHUNK_LIST_FORMAT}",
                list.format
            ));
        }
        if list.files.len() != record.files.len() {
            return Err(format!(
                "lists {} files where the record lists {}",
                list.files.len(),
                record.files.len()
            ));
        }
        for (f, a) in list.files.iter().zip(&record.files) {
            if f.path != a.path {
                return Err(format!(
                    "lists {:?} where the record lists {:?}",
                    f.path, a.path
                ));
            }
            let total = f.chunks.iter().fold(0u64, |t, c| t.saturating_add(c.size));
            if total != a.size {
                return Err(format!(
                    "the chunks of {:?} add up to {total} bytes, the record says {}",
                    f.path, a.size
                ));
            }
            if f.chunks
                .iter()
                .any(|c| c.size == 0 || c.size > u64::from(MAX_SIZE))
            {
                return Err(format!("{:?} has a chunk of an impossible size", f.path));
            }
        }
        Ok(list)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ChunkList always serializes")
    }

    /// Every chunk with where it lies: (file path, offset, chunk).
    pub fn located(&self) -> impl Iterator<Item = (&str, u64, ChunkRef)> {
        self.files.iter().flat_map(|f| {
            let mut offset = 0;
            f.chunks.iter().map(move |c| {
                let at = offset;
                offset += c.size;
                (f.path.as_str(), at, *c)
            })
        })
    }

    /// Bytes of all chunks (shared ones counted each time).
    pub fn total(&self) -> u64 {
        self.located().map(|(_, _, c)| c.size).sum()
    }
}

/// Cuts a file into chunks, with flat memory (one chunk at a time); returns them with the
/// blake3 of the whole file, so the caller can check it against the record in the same pass.
pub fn chunk_file(path: &Path) -> std::io::Result<(Vec<ChunkRef>, Digest)> {
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut whole = blake3::Hasher::new();
    let mut out = Vec::new();
    let cdc = fastcdc::v2020::StreamCDC::new(file, MIN_SIZE, AVG_SIZE, MAX_SIZE);
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        whole.update(&chunk.data);
        out.push(ChunkRef {
            blake3: Digest::of(&chunk.data),
            size: chunk.length as u64,
        });
    }
    Ok((out, whole.finalize().into()))
}

/// Reads `size` bytes at `offset` of a file and checks them against `expected`: a chunk
/// served from a file of this store.
pub fn read_checked(path: &Path, offset: u64, chunk: ChunkRef) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(chunk.size as usize);
    f.take(chunk.size).read_to_end(&mut buf)?;
    if buf.len() as u64 != chunk.size || Digest::of(&buf) != chunk.blake3 {
        return Err(std::io::Error::other(format!(
            "{} at offset {offset} no longer holds chunk {}",
            path.display(),
            chunk.blake3.short()
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes (xorshift): incompressible, reproducible.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn an_edit_in_the_middle_changes_few_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = noise(16 << 20, 7);
        std::fs::write(dir.path().join("a"), &data).unwrap();
        // 100 bytes inserted in the middle.
        data.splice(8 << 20..8 << 20, noise(100, 9));
        std::fs::write(dir.path().join("b"), &data).unwrap();
        let (a, da) = chunk_file(&dir.path().join("a")).unwrap();
        let (b, db) = chunk_file(&dir.path().join("b")).unwrap();
        assert_ne!(da, db);
        assert_eq!(db, Digest::of(&data));
        assert_eq!(b.iter().map(|c| c.size).sum::<u64>(), data.len() as u64);
        let new: u64 = b.iter().filter(|c| !a.contains(c)).map(|c| c.size).sum();
        assert!(
            new <= 3 * u64::from(MAX_SIZE),
            "{new} new bytes of {}",
            data.len()
        );
        assert!(a.len() > 16, "{} chunks", a.len());
    }
}
