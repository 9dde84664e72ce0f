//! How much of an object a get reads ([`Bound`]), and reading a body as it arrives up to
//! that bound ([`read_bounded`]): a chunk by the size its chunk list gives, the other objects
//! by a fixed cap. The read stops the moment the body passes its bound, so what a pull holds
//! in memory does not follow what a server sends; a body with no bytes for [`STALL`] is a
//! stall. Shared by every cache backend; imports none of them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// The most bytes a get reads of an object, and what that bound is, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub max: u64,
    pub of: &'static str,
}

impl Bound {
    /// An entry's manifest (`entries/HASH.json`): a few hundred bytes in practice.
    pub const MANIFEST: Bound = Bound {
        max: 1 << 20,
        of: "a manifest (1 MiB)",
    };
    /// A component's `record.json`: one line per file, a few KiB in practice.
    pub const RECORD: Bound = Bound {
        max: 8 << 20,
        of: "a record (8 MiB)",
    };
    /// An entry's signatures (`entries/HASH.sig`): about 130 bytes per key.
    pub const SIGNATURES: Bound = Bound {
        max: 64 << 10,
        of: "a signature file (64 KiB)",
    };
    /// A component's `chunks.json`: about 90 bytes per chunk, so 64 MiB lists some 45 GiB
    /// of files at the smallest chunks.
    pub const CHUNK_LIST: Bound = Bound {
        max: 64 << 20,
        of: "a chunk list (64 MiB)",
    };
    /// A lease under `locks/`: an id and a time.
    pub const LEASE: Bound = Bound {
        max: 4 << 10,
        of: "a lease (4 KiB)",
    };
    /// One page of a folder listing (nginx's JSON autoindex).
    pub const LISTING: Bound = Bound {
        max: 64 << 20,
        of: "a folder listing (64 MiB)",
    };

    /// A chunk: exactly the size its chunk list gives.
    pub fn chunk(size: u64) -> Bound {
        Bound {
            max: size,
            of: "this chunk (the size its chunk list gives)",
        }
    }

    /// The message of an object that passed this bound.
    pub fn passed(&self, got: Option<u64>) -> String {
        let got = match got {
            Some(n) => format!("{n} bytes"),
            None => "more".to_string(),
        };
        format!(
            "the server sent {got} where at most {} bytes are accepted, the bound of {}; the read stopped there",
            self.max, self.of
        )
    }
}

/// A body with no bytes for this long is a stall: named, and tried again.
pub const STALL: Duration = Duration::from_secs(30);

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// Past its bound: how many bytes were announced, when the server said.
    TooLarge(Option<u64>),
    Stalled,
    /// The body's stream failed: its error, as the client gave it.
    Cut(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads a body as it arrives, up to `bound`: refuses an announced length past it at once,
/// stops the moment the bytes pass it, and names a stall of [`STALL`].
pub async fn read_bounded<S, E>(
    body: S,
    announced: Option<u64>,
    bound: Bound,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(n) = announced.filter(|n| *n > bound.max) {
        return Err(BodyError::TooLarge(Some(n)));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::with_capacity(announced.unwrap_or(0).min(bound.max) as usize);
    loop {
        match tokio::time::timeout(STALL, body.next()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Cut(e.into())),
            Ok(Some(Ok(b))) => {
                if buf.len() as u64 + b.len() as u64 > bound.max {
                    return Err(BodyError::TooLarge(None));
                }
                buf.extend_from_slice(&b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_refused_the_moment_it_passes_its_bound() {
        let bound = Bound::chunk(10);
        let parts = |n: usize| {
            futures_util::stream::iter(
                (0..n).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"0123"))),
            )
        };
        let ok = read_bounded(parts(2), None, bound).await.unwrap();
        assert_eq!(ok.len(), 8);
        assert!(matches!(
            read_bounded(parts(3), None, bound).await,
            Err(BodyError::TooLarge(None))
        ));
        // An announced length past the bound: refused before a byte is read.
        assert!(matches!(
            read_bounded(parts(0), Some(1 << 30), bound).await,
            Err(BodyError::TooLarge(Some(n))) if n == 1 << 30
        ));
        // A body that never ends is read only up to its bound.
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[0u8; 4096]))
        });
        let e = read_bounded(endless, None, Bound::chunk(1 << 20)).await;
        assert!(matches!(e, Err(BodyError::TooLarge(None))));
    }
}
