//! A local upstream: a repository on the host, which `bottle run` serves on a unix socket in
//! the run's folder (`crate::run::upstreams`); the socket is mounted into the bundle only,
//! and the repository nowhere. This module owns the protocol on that socket; git-gate's side
//! of it is `crate::bundle::git_gate::local`.
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

use super::Service;

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
}
