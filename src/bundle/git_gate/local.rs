//! A local upstream: a repository on the host, which `bottle run` serves on a unix socket in
//! the run's folder (`crate::run::upstreams`); the socket is mounted into the bundle only,
//! and the repository nowhere. This module owns the protocol on that socket and git-gate's
//! side of it.
//!
//! One request per connection, and the bundle never names a path (each upstream has its own
//! socket, and the host side fixes the repository):
//! - git-gate sends the service's name and a newline (`git-upload-pack\n` or
//!   `git-receive-pack\n`, at most [`MAX_REQUEST`] bytes), then the service's stdin, then
//!   shuts its writing half: the end of stdin;
//! - the host runs the real `git upload-pack`/`git receive-pack` on the repository (the same
//!   non-stateless form an SSH exec runs) and answers with frames: a kind byte
//!   ([`STDOUT`], [`STDERR`], [`EXIT`]), a 4-byte big-endian length of at most [`MAX_FRAME`],
//!   and that many bytes; an exit frame holds the status as 4 big-endian bytes and is last.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use super::remote::{self, Remote, Service, UpstreamError, Writer};

/// The longest request line (the service's name and its newline).
pub const MAX_REQUEST: usize = 64;
/// The most bytes one frame carries.
pub const MAX_FRAME: usize = 1 << 20;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;

/// The request line for `service`.
pub fn request(service: Service) -> Vec<u8> {
    format!("{}\n", service.program()).into_bytes()
}

/// The service a request line asks for; `None` for anything else.
pub fn parse_request(line: &[u8]) -> Option<Service> {
    match line {
        b"git-upload-pack\n" => Some(Service::UploadPack),
        b"git-receive-pack\n" => Some(Service::ReceivePack),
        _ => None,
    }
}

/// A frame's header, for `len` bytes of `kind`.
pub fn frame_header(kind: u8, len: usize) -> [u8; 5] {
    assert!(len <= MAX_FRAME, "frames are cut at MAX_FRAME");
    let n = u32::try_from(len).expect("MAX_FRAME fits 32 bits");
    let b = n.to_be_bytes();
    [kind, b[0], b[1], b[2], b[3]]
}

/// Connects to the upstream's socket and asks for `service`.
pub async fn open(upstream: &str, socket: &str, service: Service) -> Result<Remote, UpstreamError> {
    let connect_err = |why: String| UpstreamError::Connect {
        upstream: upstream.to_string(),
        target: "the host's repository (served by bottle run)".to_string(),
        why,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| connect_err(format!("{e}; is its `bottle run` still going?")))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(&request(service))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let reader = remote::Reader::Local(Reader {
        inner: BufReader::new(read),
        done: false,
    });
    Ok(Remote::new(
        None,
        (reader, Writer::Local(write)),
        upstream,
        service,
    ))
}

/// The host's answer, frame by frame.
pub struct Reader {
    inner: BufReader<OwnedReadHalf>,
    done: bool,
}

impl Reader {
    /// The next bytes of stdout; `None` at the end (after the exit frame, or on a broken
    /// answer, which is said in `stderr`). Stderr frames are kept (bounded) in `stderr`.
    pub async fn next(&mut self, stderr: &mut Vec<u8>, exit: &mut Option<u32>) -> Option<Bytes> {
        while !self.done {
            match self.frame().await {
                Ok(Some((STDOUT, data))) => return Some(data),
                Ok(Some((STDERR, data))) => remote::keep_stderr(stderr, &data),
                Ok(Some((EXIT, data))) => {
                    *exit = <[u8; 4]>::try_from(&data[..]).ok().map(u32::from_be_bytes);
                    self.done = true;
                }
                Ok(Some((kind, _))) => {
                    remote::keep_stderr(stderr, format!("(a frame of kind {kind})").as_bytes());
                    self.done = true;
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    remote::keep_stderr(stderr, format!("(its answer broke: {e})").as_bytes());
                    self.done = true;
                }
            }
        }
        None
    }

    /// One frame; `None` at a clean end between frames.
    async fn frame(&mut self) -> std::io::Result<Option<(u8, Bytes)>> {
        let mut head = [0u8; 5];
        match self.inner.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        self.inner.read_exact(&mut head[1..]).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "a frame of {len} bytes, over {MAX_FRAME}"
            )));
        }
        let mut data = vec![0u8; len];
        self.inner.read_exact(&mut data).await?;
        Ok(Some((head[0], data.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_service_and_nothing_else() {
        for s in [Service::UploadPack, Service::ReceivePack] {
            assert_eq!(parse_request(&request(s)), Some(s));
        }
        for bad in [
            &b"git-upload-pack"[..],
            b"git-upload-pack /etc\n",
            b"git-upload-archive\n",
            b"sh\n",
            b"",
        ] {
            assert_eq!(parse_request(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_answer_without_allocating_it() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (read, _write) = a.into_split();
        let mut r = Reader {
            inner: BufReader::new(read),
            done: false,
        };
        b.write_all(&frame_header(STDOUT, 2)).await.unwrap();
        b.write_all(b"ok").await.unwrap();
        b.write_all(&[STDOUT, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let (mut stderr, mut exit) = (Vec::new(), None);
        assert_eq!(
            r.next(&mut stderr, &mut exit).await.as_deref(),
            Some(&b"ok"[..])
        );
        assert_eq!(r.next(&mut stderr, &mut exit).await, None);
        assert!(
            String::from_utf8_lossy(&stderr).contains("over"),
            "{stderr:?}"
        );
    }
}
