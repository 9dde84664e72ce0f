//! One run of a git service (`git-upload-pack` or `git-receive-pack`) on an upstream, whichever
//! way git-gate reaches it ([`Via`]): over SSH ([`super::ssh`]) or through `bottle
//! run`'s socket for a repository on the host ([`super::local`]). This module owns the
//! [`Remote`] both give — its stdin written, its stdout read as pkt-lines or raw bytes, its
//! stderr (bounded) and exit status kept to explain a failure — and the errors of either way.

use std::any::Any;

use bytes::Bytes;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::{local, ssh};
use crate::daemons::git_gate::known_hosts::HostKeyError;
use crate::daemons::git_gate::url::UrlError;
use crate::daemons::git_gate::{Service, Upstream, Via};

/// How much of the upstream's stderr is kept for an error message.
pub const STDERR_LIMIT: usize = 4096;

/// Why the upstream could not be reached or failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    HostKey(#[from] Box<HostKeyError>),
    #[error(
        "cannot read the identity key of upstream {upstream:?} (mounted from the recipe's identity): {why}"
    )]
    Identity { upstream: String, why: String },
    #[error("cannot reach upstream {upstream:?} at {target}: {why}")]
    Connect {
        upstream: String,
        target: String,
        why: String,
    },
    #[error(
        "upstream {upstream:?} refused the identity key for user {user:?}; add its public key to that account on {host}"
    )]
    Auth {
        upstream: String,
        user: String,
        host: String,
    },
    #[error("upstream {upstream:?}: {program} failed: {why}")]
    Remote {
        upstream: String,
        program: &'static str,
        why: String,
    },
}

/// Starts `service` on `up`, by its way.
pub async fn open(up: &Upstream, service: Service) -> Result<Remote, UpstreamError> {
    match &up.via {
        Via::Ssh { .. } => ssh::open(up, service).await,
        Via::Local { socket } => local::open(&up.name, socket, service).await,
    }
}

/// Where a remote's stdout comes from.
pub enum Reader {
    Ssh(ChannelReadHalf),
    Local(local::Reader),
}

/// A remote's stdin.
pub enum Writer {
    Ssh(ChannelWriteHalf<Msg>),
    Local(OwnedWriteHalf),
}

impl Writer {
    pub async fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        match self {
            Writer::Ssh(w) => w.data_bytes(data).await.map_err(std::io::Error::other),
            Writer::Local(w) => w.write_all(&data).await,
        }
    }

    /// Ends the remote's stdin.
    pub async fn eof(&mut self) -> std::io::Result<()> {
        match self {
            Writer::Ssh(w) => w.eof().await.map_err(std::io::Error::other),
            Writer::Local(w) => w.shutdown().await,
        }
    }
}

/// One service on the upstream: write its stdin, read its stdout.
pub struct Remote {
    /// What must live as long as the service does (the SSH session).
    _keep: Option<Box<dyn Any + Send>>,
    reader: Reader,
    writer: Option<Writer>,
    pub upstream: String,
    pub program: &'static str,
    stderr: Vec<u8>,
    exit: Option<u32>,
}

impl Remote {
    pub fn new(
        keep: Option<Box<dyn Any + Send>>,
        (reader, writer): (Reader, Writer),
        upstream: &str,
        service: Service,
    ) -> Remote {
        Remote {
            _keep: keep,
            reader,
            writer: Some(writer),
            upstream: upstream.to_string(),
            program: service.program(),
            stderr: Vec::new(),
            exit: None,
        }
    }

    /// The next bytes of the remote's stdout; `None` at its end. Stderr is kept aside.
    pub async fn next(&mut self) -> Option<Bytes> {
        match &mut self.reader {
            Reader::Local(r) => r.next(&mut self.stderr, &mut self.exit).await,
            Reader::Ssh(r) => loop {
                match r.wait().await? {
                    ChannelMsg::Data { data } => return Some(data),
                    ChannelMsg::ExtendedData { data, .. } => keep_stderr(&mut self.stderr, &data),
                    ChannelMsg::ExitStatus { exit_status } => self.exit = Some(exit_status),
                    ChannelMsg::Eof | ChannelMsg::Close => return None,
                    _ => {}
                }
            },
        }
    }

    /// Reads one pkt-line of stdout into `buf` (which keeps what was read past it).
    pub async fn pkt(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, UpstreamError> {
        loop {
            let mut pos = 0;
            match super::pkt::parse(buf, &mut pos) {
                Ok(super::pkt::Pkt::Data(d)) => {
                    let d = d.to_vec();
                    buf.drain(..pos);
                    return Ok(Some(d));
                }
                Ok(_) => {
                    buf.drain(..pos);
                    return Ok(None);
                }
                Err(super::pkt::PktError::Truncated { .. }) => match self.next().await {
                    Some(more) => buf.extend_from_slice(&more),
                    None => return Err(self.failure("it ended before its ref advertisement did")),
                },
                Err(e) => return Err(self.failure(&e.to_string())),
            }
        }
    }

    /// Sends `data` to the remote's stdin.
    pub async fn send(&mut self, data: Bytes) -> Result<(), UpstreamError> {
        let r = match &mut self.writer {
            None => Err(std::io::Error::other("its input was handed over")),
            Some(w) => w.send(data).await,
        };
        r.map_err(|e| self.failure(&format!("cannot send to it: {e}")))
    }

    /// Ends the remote's stdin.
    pub async fn eof(&mut self) -> Result<(), UpstreamError> {
        let r = match &mut self.writer {
            None => Err(std::io::Error::other("its input was handed over")),
            Some(w) => w.eof().await,
        };
        r.map_err(|e| self.failure(&format!("cannot end its input: {e}")))
    }

    /// The remote's stdin, to write from another task while this one reads.
    pub fn take_writer(&mut self) -> Option<Writer> {
        self.writer.take()
    }

    /// A failure, with what the remote said on stderr and its exit status, if any.
    pub fn failure(&self, what: &str) -> UpstreamError {
        let said = String::from_utf8_lossy(&self.stderr);
        let said = said.trim();
        let mut why = what.to_string();
        if !said.is_empty() {
            why.push_str(&format!("; it said: {}", said.replace('\n', " / ")));
        }
        if let Some(code) = self.exit {
            why.push_str(&format!(" (exit {code})"));
        }
        UpstreamError::Remote {
            upstream: self.upstream.clone(),
            program: self.program,
            why,
        }
    }

    /// Reads the ref advertisement the service starts with (up to its flush).
    pub async fn advertisement(
        &mut self,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, UpstreamError> {
        let mut lines = Vec::new();
        while let Some(line) = self.pkt(buf).await? {
            if line.starts_with(b"ERR ") {
                let msg = String::from_utf8_lossy(&line[4..]).trim().to_string();
                return Err(self.failure(&format!("it answered ERR {msg}")));
            }
            lines.push(line);
        }
        Ok(lines)
    }
}

/// Keeps what fits of `data` in the bounded stderr buffer.
pub fn keep_stderr(stderr: &mut Vec<u8>, data: &[u8]) {
    let room = STDERR_LIMIT.saturating_sub(stderr.len());
    stderr.extend_from_slice(&data[..data.len().min(room)]);
}
