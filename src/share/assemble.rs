//! A pulled file put together on disk: its chunks, in order, each checked against its name
//! and written on one thread, the whole file hashed on another, and a large file flushed to
//! disk as it is written. `pull` downloads the chunks and judges the result.

use std::fs;

use super::bound::Body;
use super::cache::JOBS;
use super::chunk::ChunkRef;
use crate::digest::Digest;

/// One chunk on its way into a file: its bytes, and the chunk they must hash to when they
/// came from the cache (those read on this machine were checked as they were read).
pub(super) struct Piece {
    pub body: Body,
    pub check: Option<ChunkRef>,
}

/// Why the writer failed: a write or a sync of the file, or a chunk it refused.
pub(super) enum Stop {
    Io(std::io::Error),
    /// A chunk from the cache whose bytes hash to this, not to its name: not written.
    BadChunk(ChunkRef, Digest),
}

/// Where a file's chunks go, in order: to the thread writing them and to the thread hashing
/// the file (the same bytes, not copied).
pub(super) struct Assembly {
    to_writer: tokio::sync::mpsc::Sender<Piece>,
    to_hasher: tokio::sync::mpsc::Sender<Body>,
}

impl Assembly {
    /// Whether the chunk went on: false once the writer stopped (see [`Stop`]).
    pub async fn send(&self, piece: Piece) -> bool {
        self.to_hasher.send(piece.body.clone()).await.is_ok()
            && self.to_writer.send(piece).await.is_ok()
    }
}

/// A file's chunks, in order, each checked against its name and written on one thread, and
/// the file hashed on another, so that downloading the next chunks goes on meanwhile: where
/// to send the chunks, and the file's hasher once the [`Assembly`] is dropped and every chunk
/// is written and hashed. A chunk is checked just before it is written, while its bytes are
/// in this core's cache; one that fails is not written, so the file stays whole up to its
/// last good chunk. A large file is flushed to disk as it is written (see [`Syncer`]).
pub(super) fn assembler(
    mut file: fs::File,
    mut hasher: blake3::Hasher,
) -> (Assembly, impl Future<Output = Result<blake3::Hasher, Stop>>) {
    let (to_writer, mut pieces) = tokio::sync::mpsc::channel::<Piece>(JOBS);
    let written = tokio::task::spawn_blocking(move || {
        // Started once the file passes SYNC_EVERY bytes: most files never need one.
        let mut syncer: Option<Syncer> = None;
        let mut unsynced = 0u64;
        while let Some(piece) = pieces.blocking_recv() {
            if let Some(c) = piece.check {
                let got = digest_of(&piece.body);
                if got != c.blake3 {
                    return Err(Stop::BadChunk(c, got));
                }
            }
            write_parts(&mut file, piece.body.parts()).map_err(Stop::Io)?;
            unsynced += piece.body.len();
            if unsynced >= SYNC_EVERY {
                if syncer.is_none() {
                    syncer = Some(Syncer::start(&file).map_err(Stop::Io)?);
                }
                syncer.as_ref().expect("started").nudge();
                unsynced = 0;
            }
        }
        syncer.map_or(Ok(()), Syncer::finish).map_err(Stop::Io)
    });
    let (to_hasher, mut chunks) = tokio::sync::mpsc::channel::<Body>(JOBS);
    let hashed = tokio::task::spawn_blocking(move || {
        while let Some(body) = chunks.blocking_recv() {
            for part in body.parts() {
                hasher.update(part);
            }
        }
        hasher
    });
    let done = async move {
        let hasher = hashed.await.expect("hashing a file does not panic");
        written.await.expect("writing a file does not panic")?;
        Ok(hasher)
    };
    (
        Assembly {
            to_writer,
            to_hasher,
        },
        done,
    )
}

/// How many bytes of a file are written between two nudges of its [`Syncer`].
const SYNC_EVERY: u64 = 8 << 20;

/// Flushes a file to disk on a thread of its own while the rest of it is still being
/// downloaded and written, so that the sync the store makes when it takes the file finds
/// little left to write: the system would otherwise keep every byte of a large pull dirty in
/// memory until then, and write it all out at the end, while the pull waits.
struct Syncer {
    nudge: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Syncer {
    fn start(file: &fs::File) -> std::io::Result<Syncer> {
        let file = file.try_clone()?;
        // One nudge waiting is enough: a sync writes everything written before it.
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("pull-sync".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Syncer { nudge, thread })
    }

    /// Asks for a sync of what was written so far, unless one is already waiting.
    fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    /// Waits for the sync under way, if any; the rest is synced by the store as it takes the
    /// file (a file shorter than [`SYNC_EVERY`] only then).
    fn finish(self) -> std::io::Result<()> {
        drop(self.nudge);
        self.thread.join().expect("syncing a file does not panic")
    }
}

fn digest_of(body: &Body) -> Digest {
    let mut h = blake3::Hasher::new();
    for part in body.parts() {
        h.update(part);
    }
    h.finalize().into()
}

/// Writes the parts in order, as few calls as the system takes.
fn write_parts(file: &mut fs::File, parts: &[bytes::Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
