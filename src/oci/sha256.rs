//! sha256 as the archive format names things: hex digests, and a reader and a writer that
//! compute one on the way through. A leaf of `crate::oci`.

use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};

/// `s` is 64 lowercase hex digits.
pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A writer that passes bytes on to `inner` and computes their sha256 and length on the way.
pub(super) struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Sha256Writer<W> {
    pub(super) fn new(inner: W) -> Sha256Writer<W> {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The hex sha256 and length of everything written, and the inner writer.
    pub(super) fn finish(self) -> (String, u64, W) {
        (hex(&self.hasher.finalize()), self.written, self.inner)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that computes the sha256 of the bytes read through it.
pub(super) struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Sha256Reader<R> {
    pub(super) fn new(inner: R) -> Sha256Reader<R> {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest of the stream; returns the hex sha256 of everything read.
    pub(super) fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(hex(&self.hasher.finalize()))
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes`, as hex.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
