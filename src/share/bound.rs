//! How much of an object a get reads ([`Bound`]), and reading a body as it arrives up to
//! that bound ([`read_bounded`]): a chunk by the size its chunk list gives, the other objects
//! by a fixed cap. The read stops the moment the body passes its bound, so what a pull holds
//! in memory does not follow what a server sends; a body with no bytes for [`STALL`] is a
//! stall. A body is kept as the parts it arrived in ([`Body`]; frames under 32 KiB gathered
//! into one part): a chunk is hashed and written from them, never copied into one buffer
//! first. Shared by every cache backend; imports none of them.

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

/// A body read whole: the parts it arrived in, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    parts: Vec<Bytes>,
    len: u64,
}

impl Body {
    /// How many bytes, all parts together.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The bytes in one buffer: copied only when they came in more than one part.
    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().expect("one part"),
            _ => {
                let mut all = BytesMut::with_capacity(self.len as usize);
                for p in &self.parts {
                    all.extend_from_slice(p);
                }
                all.freeze()
            }
        }
    }

    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len() as u64;
            self.parts.push(part);
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        let mut body = Body::default();
        body.push(b);
        body
    }
}

/// Frames at least this long are kept as they arrived; shorter ones are copied together.
/// On loopback from nginx, 0.2% of a pull's bytes came in frames shorter than 16 KiB, 6.6% in
/// frames shorter than 64 KiB; the client's frames are at most its 408 KiB read buffer.
const KEEP_FRAME: usize = 32 << 10;

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
) -> Result<Body, BodyError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(n) = announced.filter(|n| *n > bound.max) {
        return Err(BodyError::TooLarge(Some(n)));
    }
    let mut body = std::pin::pin!(body);
    let mut got = Body::default();
    // Small frames gathered here, copied: a part kept as it arrived holds on to the client's
    // read buffer, so a server sending a byte at a time would make each byte cost a buffer.
    // A frame of KEEP_FRAME or more holds at most the client's largest buffer (408 KiB), and
    // the client shrinks its buffer when its reads come in short.
    let mut small = BytesMut::new();
    loop {
        match tokio::time::timeout(STALL, body.next()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(None) => {
                got.push(small.freeze());
                return Ok(got);
            }
            Ok(Some(Err(e))) => return Err(BodyError::Cut(e.into())),
            Ok(Some(Ok(b))) => {
                if got.len + small.len() as u64 + b.len() as u64 > bound.max {
                    return Err(BodyError::TooLarge(None));
                }
                if b.len() >= KEEP_FRAME {
                    got.push(std::mem::take(&mut small).freeze());
                    got.push(b);
                } else {
                    if small.capacity() == 0 {
                        small.reserve(2 * KEEP_FRAME);
                    }
                    small.extend_from_slice(&b);
                    if small.len() >= KEEP_FRAME {
                        got.push(std::mem::take(&mut small).freeze());
                    }
                }
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
        assert_eq!(ok.parts().len(), 1, "short frames gathered");
        assert_eq!(&ok.into_bytes()[..], b"01230123");
        assert!(matches!(
            read_bounded(parts(3), None, bound).await,
            Err(BodyError::TooLarge(None))
        ));
        // An announced length past the bound: refused before a byte is read.
        assert!(matches!(
            read_bounded(parts(0), Some(1 << 30), bound).await,
            Err(BodyError::TooLarge(Some(n))) if n == 1 << 30
        ));
        // A byte at a time: gathered into a few parts, not a part per byte.
        let bytes = futures_util::stream::iter(
            (0..100_000).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8]))),
        );
        let got = read_bounded(bytes, None, Bound::chunk(100_000))
            .await
            .unwrap();
        assert_eq!(got.len(), 100_000);
        assert_eq!(got.parts().len(), 100_000_usize.div_ceil(KEEP_FRAME));
        let all = got.into_bytes();
        assert!(all.iter().enumerate().all(|(i, b)| *b == i as u8));
        // Long frames are kept as they came, the short ones between them gathered in order.
        let mixed = [KEEP_FRAME, 1, 2, KEEP_FRAME + 5, 3]
            .map(|n| Ok::<_, std::io::Error>(Bytes::from(vec![n as u8; n])));
        let got = read_bounded(
            futures_util::stream::iter(mixed),
            None,
            Bound::chunk(1 << 20),
        )
        .await
        .unwrap();
        let lens: Vec<usize> = got.parts().iter().map(|p| p.len()).collect();
        assert_eq!(lens, [KEEP_FRAME, 3, KEEP_FRAME + 5, 3]);
        // A body that never ends is read only up to its bound.
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[0u8; 4096]))
        });
        let e = read_bounded(endless, None, Bound::chunk(1 << 20)).await;
        assert!(matches!(e, Err(BodyError::TooLarge(None))));
    }
}
