//! Scrubbing: removes a secret from a stream of bytes, also where it is split across chunks,
//! holding back at most the secret's length minus one byte. egress runs every response from a
//! route's upstream through one, so an upstream that echoes the request cannot hand the real
//! token to the guest.
//!
//! NOTE: not written yet: [`Scrubber`] passes bytes through unchanged.

use bytes::Bytes;

/// What the secret is replaced with.
pub const MASK: &[u8] = b"[removed by bottle egress]";

#[derive(Debug)]
pub struct Scrubber {
    _secrets: Vec<Vec<u8>>,
}

impl Scrubber {
    /// A scrubber for `secrets` (empty ones are ignored).
    pub fn new(secrets: &[&[u8]]) -> Scrubber {
        Scrubber {
            _secrets: secrets.iter().map(|s| s.to_vec()).collect(),
        }
    }

    /// The next chunk in; what can be passed on out (some bytes may be held back).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        Bytes::copy_from_slice(chunk)
    }

    /// The end of the stream: whatever was held back.
    pub fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
}
