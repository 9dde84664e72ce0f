//! git-gate's side of a local upstream: it connects to the upstream's socket, asks for a
//! service and reads the host's answer frame by frame. The protocol on that socket is
//! [`crate::daemons::git_gate::local`]; `bottle run` serves its other side
//! (`crate::run::upstreams`).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use super::remote::{self, Remote, UpstreamError, Writer};
use crate::daemons::git_gate::Service;
use crate::daemons::git_gate::local::{EXIT, MAX_FRAME, STDERR, STDOUT, request};

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
    use crate::daemons::git_gate::local::frame_header;

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
