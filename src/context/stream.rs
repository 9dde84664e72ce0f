//! The context as a tar stream: the entries [`super::scan`] listed, plus the Dockerfile where
//! the docker CLI would put it, made on a blocking thread and handed over in bounded chunks.
//!
//! The Dockerfile, as `docker build -f` places it (docker/cli `RunBuild`,
//! `TrimBuildFilesFromExcludes`, `AddDockerfileToBuildContext`; the engine's
//! `removeDockerfile`):
//!
//! - inside the context and kept by `.dockerignore`: already an entry; its path is the name.
//! - inside but excluded: sent at its own path all the same (with the folders above it), and
//!   `.dockerignore` with it; the engine reads both and then deletes whichever the patterns
//!   exclude, so neither reaches `COPY .`. As with the CLI, a folder above it that was
//!   excluded stays behind, empty.
//! - outside the context: sent as `.dockerfile.<20 hex of its digest>` (the CLI uses 20 random
//!   hex), and that name appended to the `.dockerignore` sent (`\nNAME\n` after the file's
//!   content; a context without one gets `.dockerignore\nNAME\n`), so the engine deletes it
//!   after reading. As with the CLI, a `.dockerignore` that does not exclude itself reaches
//!   the image with that line appended.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::{ContextError, DOCKERIGNORE, is_executable};
use crate::digest::{Digest, InputDigest};

/// Bytes per chunk handed to the engine's request body.
const CHUNK: usize = 64 << 10;
/// Chunks in flight between the producing thread and the request body.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The Dockerfile of a build: where it is on the host, and its digest as hashed.
#[derive(Debug, Clone)]
pub struct DockerfileRef {
    pub host_path: PathBuf,
    pub digest: Digest,
}

/// A context being streamed.
pub struct ContextStream {
    /// What to pass as the build's `dockerfile` option.
    pub dockerfile_name: String,
    /// The tar bytes; ends with an error if an input changed or could not be read.
    pub stream: BoxStream<'static, io::Result<Bytes>>,
    /// The producer: the bytes sent, or why the stream ended early.
    pub done: tokio::task::JoinHandle<Result<u64, ContextError>>,
}

/// Where the bytes of one tar entry come from.
#[derive(Debug)]
enum Source {
    /// `context_dir/NAME`, checked against its digest as it is sent.
    Entry(InputDigest),
    /// The Dockerfile, checked against its digest.
    Dockerfile,
    /// A `.dockerignore` bottle writes.
    Text(Vec<u8>),
    /// The context's `.dockerignore` (checked against `digest`) with `tail` appended.
    Extended {
        digest: Digest,
        executable: bool,
        tail: Vec<u8>,
    },
}

/// Streams `entries` of `context_dir` and the Dockerfile as a tar. Must be called within a
/// tokio runtime: the tar is made on a blocking thread.
pub fn tar_stream(
    context_dir: PathBuf,
    entries: BTreeMap<String, InputDigest>,
    dockerfile: DockerfileRef,
) -> ContextStream {
    let (dockerfile_name, items, early) = plan(&context_dir, entries, &dockerfile);
    let (tx, mut rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let done = tokio::task::spawn_blocking(move || {
        let mut producer = Producer {
            context_dir: &context_dir,
            dockerfile: &dockerfile,
            tar: tar::Builder::new(Chunks {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                sent: 0,
                poisoned: false,
            }),
        };
        let result = match early {
            Some(e) => Err(e),
            None => producer.all(&items),
        };
        let result = result.and_then(|()| producer.finish());
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    ContextStream {
        dockerfile_name,
        stream: Box::pin(stream),
        done,
    }
}

/// The tar's entries by name, the Dockerfile's name in it, and an error to fail with at once.
type Plan = (String, BTreeMap<String, Source>, Option<ContextError>);

fn plan(
    context_dir: &Path,
    entries: BTreeMap<String, InputDigest>,
    dockerfile: &DockerfileRef,
) -> Plan {
    let inside = relative_inside(context_dir, &dockerfile.host_path);
    let ignore = entries.get(DOCKERIGNORE).cloned();
    let mut items: BTreeMap<String, Source> = entries
        .into_iter()
        .map(|(k, v)| (k, Source::Entry(v)))
        .collect();
    let changed = || {
        Some(ContextError::Changed {
            path: dockerfile.host_path.clone(),
        })
    };
    match inside {
        Some(rel) => {
            let early = match items.get(&rel) {
                // Kept: already an entry. It must be the Dockerfile that was hashed.
                Some(Source::Entry(InputDigest::File { digest, .. }))
                    if *digest == dockerfile.digest =>
                {
                    None
                }
                Some(_) => changed(),
                // Excluded: sent all the same, for the engine to read and then delete.
                None => {
                    for (i, _) in rel.match_indices('/') {
                        items
                            .entry(rel[..i].to_string())
                            .or_insert(Source::Entry(InputDigest::Dir));
                    }
                    items.insert(rel.clone(), Source::Dockerfile);
                    if ignore.is_none() {
                        let text = format!("{DOCKERIGNORE}\n{rel}\n");
                        items.insert(DOCKERIGNORE.into(), Source::Text(text.into_bytes()));
                    }
                    None
                }
            };
            (rel, items, early)
        }
        None => {
            let name = format!(".dockerfile.{}", &dockerfile.digest.hex()[..20]);
            items.insert(name.clone(), Source::Dockerfile);
            let ignore_source = match ignore {
                Some(InputDigest::File { digest, executable }) => Source::Extended {
                    digest,
                    executable,
                    tail: format!("\n{name}\n").into_bytes(),
                },
                _ => Source::Text(format!("{DOCKERIGNORE}\n{name}\n").into_bytes()),
            };
            items.insert(DOCKERIGNORE.into(), ignore_source);
            (name, items, None)
        }
    }
}

/// The Dockerfile's path inside the context, `/`-separated, if it is inside. Both paths are
/// resolved (symlinks followed) as the CLI resolves them; if that fails they are compared as
/// given, and reading the file reports the problem.
fn relative_inside(context_dir: &Path, dockerfile: &Path) -> Option<String> {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (dir, file) = (resolve(context_dir), resolve(dockerfile));
    let rel = file.strip_prefix(&dir).ok()?;
    let parts: Option<Vec<&str>> = rel.iter().map(|c| c.to_str()).collect();
    let rel = parts?.join("/");
    (!rel.is_empty()).then_some(rel)
}

struct Producer<'a> {
    context_dir: &'a Path,
    dockerfile: &'a DockerfileRef,
    tar: tar::Builder<Chunks>,
}

impl Producer<'_> {
    fn all(&mut self, items: &BTreeMap<String, Source>) -> Result<(), ContextError> {
        for (name, source) in items {
            let host = self.context_dir.join(name);
            match source {
                Source::Entry(InputDigest::Dir) => self.dir(&host, name)?,
                Source::Entry(InputDigest::Symlink { target }) => {
                    self.symlink(&host, name, target)?
                }
                Source::Entry(InputDigest::File { digest, executable }) => {
                    self.file(&host, name, *digest, Some(*executable), &[])?
                }
                Source::Dockerfile => {
                    let df = self.dockerfile;
                    self.file(&df.host_path, name, df.digest, None, &[])?
                }
                Source::Text(bytes) => {
                    let mut header = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
                    let result = self.tar.append_data(&mut header, name, bytes.as_slice());
                    result.map_err(|e| self.write_error(&host, e))?
                }
                Source::Extended {
                    digest,
                    executable,
                    tail,
                } => self.file(&host, name, *digest, Some(*executable), tail)?,
            }
        }
        Ok(())
    }

    fn dir(&mut self, host: &Path, name: &str) -> Result<(), ContextError> {
        match std::fs::symlink_metadata(host) {
            Ok(meta) if meta.is_dir() => {}
            _ => return Err(changed(host)),
        }
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        let result = self.tar.append_data(&mut header, name, io::empty());
        result.map_err(|e| self.write_error(host, e))
    }

    fn symlink(&mut self, host: &Path, name: &str, target: &str) -> Result<(), ContextError> {
        match std::fs::read_link(host) {
            Ok(t) if t.to_str() == Some(target) => {}
            _ => return Err(changed(host)),
        }
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        let result = self.tar.append_link(&mut header, name, target);
        result.map_err(|e| self.write_error(host, e))
    }

    /// Streams the file at `host` as `name`, then `tail`; fails with `Changed` unless its
    /// content has `digest` and (if given) its executable bit is `executable`.
    fn file(
        &mut self,
        host: &Path,
        name: &str,
        digest: Digest,
        executable: Option<bool>,
        tail: &[u8],
    ) -> Result<(), ContextError> {
        let read = |source| ContextError::Read {
            path: host.to_path_buf(),
            source,
        };
        let meta = std::fs::symlink_metadata(host).map_err(read)?;
        if !meta.is_file() || executable.is_some_and(|x| x != is_executable(&meta)) {
            return Err(changed(host));
        }
        let file = std::fs::File::open(host).map_err(read)?;
        let size = file.metadata().map_err(read)?.len();
        let mode = if executable == Some(true) {
            0o755
        } else {
            0o644
        };
        let mut header = header(tar::EntryType::Regular, mode, size + tail.len() as u64);
        let mut content = Checked {
            inner: file.take(size),
            hasher: blake3::Hasher::new(),
            read: 0,
            error: None,
        };
        let result = self
            .tar
            .append_data(&mut header, name, (&mut content).chain(tail));
        if let Some(source) = content.error.take() {
            return Err(read(source));
        }
        result.map_err(|e| self.write_error(host, e))?;
        if content.read != size || Digest::from(content.hasher.finalize()) != digest {
            return Err(changed(host));
        }
        Ok(())
    }

    /// Ends the archive and hands over the last chunk; returns the bytes sent.
    fn finish(&mut self) -> Result<u64, ContextError> {
        let end = self.tar.finish().and_then(|()| self.tar.get_mut().send());
        end.map_err(|e| self.write_error(self.context_dir, e))?;
        Ok(self.tar.get_mut().sent)
    }

    /// A failed write: the reader went away, or the tar crate refused the entry.
    fn write_error(&self, host: &Path, source: io::Error) -> ContextError {
        if self.tar.get_ref().tx.is_closed() {
            ContextError::Abandoned
        } else {
            ContextError::Tar {
                path: host.to_path_buf(),
                source,
            }
        }
    }
}

impl Drop for Producer<'_> {
    /// The tar builder ends the archive when dropped; after an error that end must not be sent.
    fn drop(&mut self) {
        self.tar.get_mut().poisoned = true;
    }
}

fn changed(host: &Path) -> ContextError {
    ContextError::Changed {
        path: host.to_path_buf(),
    }
}

/// A header with the fixed fields every entry shares: mtime 0, owner 0:0.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A file's content on its way into the tar: digested as it is read, its read error kept
/// (the tar crate would otherwise mix it up with a write error).
struct Checked<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.error = Some(e);
                Err(kind.into())
            }
        }
    }
}

/// The tar's sink: fills chunks of [`CHUNK`] bytes and hands each over the channel, waiting
/// while [`CHUNKS_IN_FLIGHT`] are queued. Once poisoned it swallows everything.
struct Chunks {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
    poisoned: bool,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let len = chunk.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        self.sent += len;
        Ok(())
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Ok(data.len());
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
