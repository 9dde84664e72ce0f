//! git-gate's way to an upstream: its URL, an SSH connection (russh, pure Rust with ring)
//! whose host key must be in the upstream's known_hosts ([`super::known_hosts`]), public-key
//! authentication with the upstream's identity key, and one `git-upload-pack` or
//! `git-receive-pack` exec per connection.
//!
//! The identity key is read from its file in the bundle for each connection and never leaves
//! this module: not in a log line, an error or the audit log. What the upstream's git writes
//! on stderr is kept (bounded) to explain a failure.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::client::{self, Handle, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::Upstream;
use super::known_hosts::{HostKeyError, KnownHosts};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of the upstream's stderr is kept for an error message.
const STDERR_LIMIT: usize = 4096;

/// An upstream URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// The repository's path as the remote git gets it.
    pub path: String,
}

/// Why an upstream URL cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "upstream {upstream:?}: url {url:?} {why}; git-gate takes ssh://[user@]host[:port]/path or user@host:path"
)]
pub struct UrlError {
    upstream: String,
    url: String,
    why: &'static str,
}

impl Target {
    pub fn parse(upstream: &str, url: &str) -> Result<Target, UrlError> {
        let bad = |why| UrlError {
            upstream: upstream.to_string(),
            url: url.to_string(),
            why,
        };
        let unschemed = url.strip_prefix("ssh://").unwrap_or(url);
        let (user, rest) = match unschemed.split_once('@') {
            Some((u, r)) => (u.to_string(), r.to_string()),
            None => ("git".to_string(), unschemed.to_string()),
        };
        if user.is_empty() {
            return Err(bad("has an empty user"));
        }
        let (host, port, path) = if url.starts_with("ssh://") {
            let (authority, path) = rest
                .find('/')
                .map(|i| (&rest[..i], &rest[i..]))
                .ok_or_else(|| bad("has no path"))?;
            let (host, port) = split_port(authority).ok_or_else(|| bad("has a bad port"))?;
            // ssh://host/~user/repo: the path from the home folder, as git passes it.
            let path = path
                .strip_prefix("/~")
                .map_or(path.to_string(), |p| format!("~{p}"));
            (host, port, path)
        } else if url.contains("://") {
            return Err(bad("is not an SSH URL"));
        } else {
            let (host, path) = rest.split_once(':').ok_or_else(|| bad("has no ':path'"))?;
            (
                host.trim_matches(['[', ']']).to_string(),
                22,
                path.to_string(),
            )
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("has no host"));
        }
        if path.is_empty() {
            return Err(bad("has no path"));
        }
        Ok(Target {
            user,
            host,
            port,
            path,
        })
    }

    /// The exec command for a git service, the path quoted as git quotes it (`sq_quote`).
    pub fn command(&self, service: Service) -> String {
        let mut q = String::from("'");
        for c in self.path.chars() {
            match c {
                '\'' => q.push_str("'\\''"),
                '!' => q.push_str("'\\!'"),
                c => q.push(c),
            }
        }
        q.push('\'');
        format!("{} {q}", service.program())
    }
}

fn split_port(authority: &str) -> Option<(String, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => 22,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok().filter(|p| *p > 0)?)),
        None => Some((authority.to_string(), 22)),
    }
}

/// The two git services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn program(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// Why the upstream could not be reached or failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
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

struct Checker {
    known: KnownHosts,
    upstream: String,
    host: String,
    port: u16,
    refused: Arc<std::sync::Mutex<Option<Box<HostKeyError>>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        match self.known.check(&self.upstream, &self.host, self.port, key) {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.refused.lock().expect("not poisoned") = Some(e);
                Ok(false)
            }
        }
    }
}

/// One exec on the upstream: write its stdin, read its stdout.
pub struct Remote {
    _session: Handle<Checker>,
    reader: ChannelReadHalf,
    writer: Option<ChannelWriteHalf<Msg>>,
    pub upstream: String,
    pub program: &'static str,
    stderr: Vec<u8>,
    exit: Option<u32>,
}

/// Connects to `up`, checks its host key, authenticates and starts `service` on its path.
pub async fn open(up: &Upstream, service: Service) -> Result<Remote, SshError> {
    let target = Target::parse(&up.name, &up.url)?;
    let known = KnownHosts::load(Path::new(&up.known_hosts), &up.name)?;
    let upstream = up.name.clone();
    let connect_err = |why: String| SshError::Connect {
        upstream: upstream.clone(),
        target: format!("{}:{}", target.host, target.port),
        why,
    };
    let key = load_identity(up)?;
    let mut preferred = russh::Preferred::default();
    let mut algos = known.algorithms(&target.host, target.port);
    for a in preferred.key.iter() {
        if !algos.contains(a) {
            algos.push(a.clone());
        }
    }
    preferred.key = algos.into();
    preferred.cipher = vec![
        russh::cipher::AES_128_GCM,
        russh::cipher::AES_256_GCM,
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_256_CTR,
        russh::cipher::AES_128_CTR,
    ]
    .into();
    let config = Arc::new(client::Config {
        preferred,
        inactivity_timeout: Some(Duration::from_secs(300)),
        window_size: 8 << 20,
        nodelay: true,
        ..Default::default()
    });
    let refused = Arc::new(std::sync::Mutex::new(None));
    let checker = Checker {
        known,
        upstream: up.name.clone(),
        host: target.host.clone(),
        port: target.port,
        refused: refused.clone(),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| connect_err(format!("cannot resolve {}: {e}", target.host)))?
        .collect();
    let connecting = client::connect(config, addrs.as_slice(), checker);
    let session = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => return Err(connect_err(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(e)) => {
            if let Some(h) = refused.lock().expect("not poisoned").take() {
                return Err(h.into());
            }
            return Err(connect_err(e.to_string()));
        }
        Ok(Ok(s)) => s,
    };
    authenticate(session, key, &target, up, service).await
}

fn load_identity(up: &Upstream) -> Result<russh::keys::PrivateKey, SshError> {
    let identity_err = |why: String| SshError::Identity {
        upstream: up.name.clone(),
        why,
    };
    let text = std::fs::read_to_string(&up.identity)
        .map_err(|e| identity_err(format!("{}: {}", up.identity, e.kind())))?;
    // The parser's message only: never the key's text.
    russh::keys::decode_secret_key(&text, None)
        .map_err(|e| identity_err(format!("not an unencrypted OpenSSH private key ({e})")))
}

async fn authenticate(
    mut session: Handle<Checker>,
    key: russh::keys::PrivateKey,
    target: &Target,
    up: &Upstream,
    service: Service,
) -> Result<Remote, SshError> {
    let failed = |why: String| SshError::Remote {
        upstream: up.name.clone(),
        program: service.program(),
        why,
    };
    let hash = session
        .best_supported_rsa_hash()
        .await
        .map_err(|e| failed(e.to_string()))?
        .flatten();
    let auth = session
        .authenticate_publickey(
            &target.user,
            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(|e| failed(format!("authentication: {e}")))?;
    if !auth.success() {
        return Err(SshError::Auth {
            upstream: up.name.clone(),
            user: target.user.clone(),
            host: target.host.clone(),
        });
    }
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| failed(format!("cannot open a session: {e}")))?;
    channel
        .exec(true, target.command(service))
        .await
        .map_err(|e| failed(format!("cannot start it: {e}")))?;
    let (reader, writer) = channel.split();
    Ok(Remote {
        _session: session,
        reader,
        writer: Some(writer),
        upstream: up.name.clone(),
        program: service.program(),
        stderr: Vec::new(),
        exit: None,
    })
}

impl Remote {
    /// The next bytes of the remote's stdout; `None` at its end. Stderr is kept aside.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.reader.wait().await? {
                ChannelMsg::Data { data } => return Some(data),
                ChannelMsg::ExtendedData { data, .. } => {
                    let room = STDERR_LIMIT.saturating_sub(self.stderr.len());
                    self.stderr.extend_from_slice(&data[..data.len().min(room)]);
                }
                ChannelMsg::ExitStatus { exit_status } => self.exit = Some(exit_status),
                ChannelMsg::Eof | ChannelMsg::Close => return None,
                _ => {}
            }
        }
    }

    /// Reads one pkt-line of stdout into `buf` (which keeps what was read past it).
    pub async fn pkt(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, SshError> {
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
    pub async fn send(&self, data: Bytes) -> Result<(), SshError> {
        let Some(w) = &self.writer else {
            return Err(self.failure("its input was handed over"));
        };
        w.data_bytes(data)
            .await
            .map_err(|e| self.failure(&format!("cannot send to it: {e}")))
    }

    /// Ends the remote's stdin.
    pub async fn eof(&self) -> Result<(), SshError> {
        let Some(w) = &self.writer else {
            return Err(self.failure("its input was handed over"));
        };
        w.eof()
            .await
            .map_err(|e| self.failure(&format!("cannot end its input: {e}")))
    }

    /// The remote's stdin, to write from another task while this one reads.
    pub fn take_writer(&mut self) -> Option<ChannelWriteHalf<Msg>> {
        self.writer.take()
    }

    /// A failure, with what the remote said on stderr and its exit status, if any.
    pub fn failure(&self, what: &str) -> SshError {
        let said = String::from_utf8_lossy(&self.stderr);
        let said = said.trim();
        let mut why = what.to_string();
        if !said.is_empty() {
            why.push_str(&format!("; it said: {}", said.replace('\n', " / ")));
        }
        if let Some(code) = self.exit {
            why.push_str(&format!(" (exit {code})"));
        }
        SshError::Remote {
            upstream: self.upstream.clone(),
            program: self.program,
            why,
        }
    }

    /// Reads the ref advertisement the service starts with (up to its flush).
    pub async fn advertisement(&mut self, buf: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, SshError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_both_forms() {
        let t = Target::parse("o", "ssh://root@up.test:2222/srv/repo.git").unwrap();
        assert_eq!(
            t,
            Target {
                user: "root".into(),
                host: "up.test".into(),
                port: 2222,
                path: "/srv/repo.git".into()
            }
        );
        let t = Target::parse("o", "git@github.com:me/project.git").unwrap();
        assert_eq!(
            (t.user.as_str(), t.port, t.path.as_str()),
            ("git", 22, "me/project.git")
        );
        let t = Target::parse("o", "ssh://h.test/~me/r").unwrap();
        assert_eq!((t.user.as_str(), t.path.as_str()), ("git", "~me/r"));
        let t = Target::parse("o", "ssh://u@[::1]:22/r").unwrap();
        assert_eq!(t.host, "::1");
        for bad in ["https://h/r", "ssh://h", "h", "ssh://h:x/r", "u@:r", "@h:r"] {
            assert!(Target::parse("o", bad).is_err(), "{bad}");
        }
        let e = Target::parse("origin", "https://h/r")
            .unwrap_err()
            .to_string();
        assert!(e.contains("origin") && e.contains("ssh://"), "{e}");
    }

    #[test]
    fn paths_are_quoted_as_git_quotes_them() {
        let t = Target::parse("o", "u@h:it's!.git").unwrap();
        assert_eq!(
            t.command(Service::ReceivePack),
            r"git-receive-pack 'it'\''s'\!'.git'"
        );
    }
}
