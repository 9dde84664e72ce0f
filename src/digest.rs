//! Digests: the typed blake3 values every other module passes around.
//!
//! - [`Digest`]: 32 bytes of blake3, written as 64 lowercase hex digits.
//! - [`InputDigest`]: what the hash records of one input path — a file's content digest and
//!   its executable bit, a symlink's target, or a folder. Written as `b3:HEX`, `b3x:HEX`,
//!   `link:TARGET` or `dir` in JSON; typed everywhere else.
//! - [`file_digest`]: blake3 of a file with flat memory: small files are read, large ones are
//!   mapped a window at a time and hashed on every core (as `b3sum` does), so hashing a 2 GB
//!   file never holds more than one window in memory.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Files at least this large are hashed through memory-mapped windows on all cores.
const MMAP_THRESHOLD: u64 = 1 << 20;
/// The size of one mapped window: the most of a file that is mapped at any moment.
const WINDOW: u64 = 16 << 20;

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest([u8; 32]);

impl Digest {
    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Parses 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Digest> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(Digest(out))
    }

    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, for names and messages.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Digest {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.hex()
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Digest, String> {
        Digest::parse(&s).ok_or_else(|| format!("{s:?} is not a blake3 digest (64 hex digits)"))
    }
}

/// What the hash records of one input path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum InputDigest {
    File {
        digest: Digest,
        executable: bool,
    },
    /// A symlink, recorded by its target (never followed).
    Symlink {
        target: String,
    },
    /// A folder: recorded so an empty one is part of the input, as `docker build` keeps it.
    Dir,
}

impl InputDigest {
    /// The content digest of a file, if this is one.
    pub fn file_digest(&self) -> Option<Digest> {
        match self {
            InputDigest::File { digest, .. } => Some(*digest),
            _ => None,
        }
    }
}

impl fmt::Display for InputDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputDigest::File {
                digest,
                executable: false,
            } => write!(f, "b3:{digest}"),
            InputDigest::File {
                digest,
                executable: true,
            } => write!(f, "b3x:{digest}"),
            InputDigest::Symlink { target } => write!(f, "link:{target}"),
            InputDigest::Dir => f.write_str("dir"),
        }
    }
}

impl From<InputDigest> for String {
    fn from(d: InputDigest) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for InputDigest {
    type Error = String;
    fn try_from(s: String) -> Result<InputDigest, String> {
        let bad = || format!("{s:?} is not an input digest (b3:HEX, b3x:HEX, link:TARGET or dir)");
        if s == "dir" {
            return Ok(InputDigest::Dir);
        }
        if let Some(t) = s.strip_prefix("link:") {
            return Ok(InputDigest::Symlink {
                target: t.to_string(),
            });
        }
        let (executable, hex) = match s.split_once(':') {
            Some(("b3", hex)) => (false, hex),
            Some(("b3x", hex)) => (true, hex),
            _ => return Err(bad()),
        };
        let digest = Digest::parse(hex).ok_or_else(bad)?;
        Ok(InputDigest::File { digest, executable })
    }
}

/// blake3 of a file's content and its size. Small files are read whole; large ones are mapped
/// one [`WINDOW`] at a time and each window hashed on all cores, so memory stays flat however
/// large the file.
#[allow(unsafe_code)] // the read-only mapping below
pub fn file_digest(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if size < MMAP_THRESHOLD {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf)?;
        hasher.update(&buf);
        return Ok((hasher.finalize().into(), buf.len() as u64));
    }
    let mut offset = 0u64;
    while offset < size {
        let len = WINDOW.min(size - offset);
        // SAFETY: a read-only private mapping of a file we opened; a concurrent writer could
        // change the bytes under us, which yields a wrong digest, never unsafety in Rust's
        // sense (the slice is only read by blake3).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .map(&file)?
        };
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::Sequential);
        hasher.update_rayon(&map);
        offset += len;
    }
    Ok((hasher.finalize().into(), size))
}

/// A hashing writer: passes bytes on to `inner` and digests them on the way.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        }
    }
    /// The digest and length of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (self.hasher.finalize().into(), self.written, self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Large writes (an import's) are hashed on every core, as `file_digest` hashes.
        if n >= 1 << 17 {
            self.hasher.update_rayon(&buf[..n]);
        } else {
            self.hasher.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_as_hex() {
        let d = Digest::of(b"abc");
        assert_eq!(d.hex(), blake3::hash(b"abc").to_hex().as_str());
        assert_eq!(Digest::parse(&d.hex()), Some(d));
        assert!(Digest::parse(&"A".repeat(64)).is_none());
        assert!(Digest::parse(&"0".repeat(63)).is_none());
        assert_eq!(d.short().len(), 12);
    }

    #[test]
    fn input_digests_round_trip_as_strings() {
        let d = Digest::of(b"x");
        for i in [
            InputDigest::File {
                digest: d,
                executable: false,
            },
            InputDigest::File {
                digest: d,
                executable: true,
            },
            InputDigest::Symlink {
                target: "../a b".into(),
            },
            InputDigest::Dir,
        ] {
            let s = String::from(i.clone());
            assert_eq!(InputDigest::try_from(s).unwrap(), i);
        }
        assert!(InputDigest::try_from("b3:xyz".to_string()).is_err());
        assert!(InputDigest::try_from("sha:00".to_string()).is_err());
    }

    #[test]
    fn windowed_digest_matches_one_shot() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 10, (1 << 20) + 3, (WINDOW as usize) * 2 + 12345] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            std::fs::write(&p, &bytes).unwrap();
            let (d, n) = file_digest(&p).unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(d, Digest::of(&bytes), "size {size}");
        }
    }
}
