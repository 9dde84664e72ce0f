//! git-gate's way to an upstream: its URL, an SSH connection (russh, pure Rust with ring)
//! whose host key must be in the upstream's known_hosts ([`super::known_hosts`]), public-key
//! authentication with the upstream's identity key, and one `git-upload-pack` or
//! `git-receive-pack` exec per request, on a channel of its own.
//!
//! One SSH session per upstream is kept and reused: a request opens a channel on it, not a
//! new login. A session that died (the upstream closed it, or it sat idle past the
//! inactivity timeout) is replaced by a new login; a live session that refuses another channel
//! (the server's cap on sessions per connection, `MaxSessions` in OpenSSH) leaves the request
//! to a connection of its own, closed with it.
//!
//! The identity key is read from its file in the bundle for each login and never leaves this
//! module: not in a log line, an error or the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use super::known_hosts::{HostKeyError, KnownHosts};
use super::remote::{Reader, Remote, Service, UpstreamError, Writer};
use super::{Upstream, Via};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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

/// A logged-in session with an upstream, shared by the requests that open channels on it.
type Session = Arc<Handle<Checker>>;

/// The sessions kept, by everything a login depends on: the upstream's url, identity
/// and known_hosts. Held across a login, so that requests arriving together make one.
static SESSIONS: LazyLock<tokio::sync::Mutex<HashMap<Via, Session>>> =
    LazyLock::new(|| tokio::sync::Mutex::new(HashMap::new()));

/// Starts `service` on `up`'s path on a channel of the upstream's session, logging in (host
/// key checked, identity key) when there is none or it died.
pub async fn open(up: &Upstream, service: Service) -> Result<Remote, UpstreamError> {
    let Via::Ssh { url, .. } = &up.via else {
        unreachable!("ssh::open is for SSH upstreams");
    };
    let target = Target::parse(&up.name, url)?;
    let mut sessions = SESSIONS.lock().await;
    let kept = sessions.get(&up.via).filter(|s| !s.is_closed()).cloned();
    if let Some(session) = kept {
        drop(sessions);
        match start(&session, &target, up, service).await {
            Ok(remote) => return Ok(remote),
            // Alive, but no channel for this request: a connection of its own.
            Err(_) if !session.is_closed() => {
                let own = Arc::new(login(up, &target, service).await?);
                return start(&own, &target, up, service).await;
            }
            // It died meanwhile: log in again below.
            Err(_) => sessions = SESSIONS.lock().await,
        }
    }
    let session = Arc::new(login(up, &target, service).await?);
    sessions.insert(up.via.clone(), session.clone());
    drop(sessions);
    start(&session, &target, up, service).await
}

/// Connects to `up`, checks its host key and authenticates.
async fn login(
    up: &Upstream,
    target: &Target,
    service: Service,
) -> Result<Handle<Checker>, UpstreamError> {
    let Via::Ssh {
        identity,
        known_hosts,
        ..
    } = &up.via
    else {
        unreachable!("ssh::login is for SSH upstreams");
    };
    let known = KnownHosts::load(Path::new(known_hosts), &up.name)?;
    let upstream = up.name.clone();
    let connect_err = |why: String| UpstreamError::Connect {
        upstream: upstream.clone(),
        target: format!("{}:{}", target.host, target.port),
        why,
    };
    let key = load_identity(&up.name, identity)?;
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
    authenticate(session, key, target, up, service).await
}

fn load_identity(upstream: &str, identity: &str) -> Result<russh::keys::PrivateKey, UpstreamError> {
    let identity_err = |why: String| UpstreamError::Identity {
        upstream: upstream.to_string(),
        why,
    };
    let text = std::fs::read_to_string(identity)
        .map_err(|e| identity_err(format!("{identity}: {}", e.kind())))?;
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
) -> Result<Handle<Checker>, UpstreamError> {
    let failed = |why: String| UpstreamError::Remote {
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
        return Err(UpstreamError::Auth {
            upstream: up.name.clone(),
            user: target.user.clone(),
            host: target.host.clone(),
        });
    }
    Ok(session)
}

/// Opens a channel on `session` and starts `service` on the upstream's path in it.
async fn start(
    session: &Session,
    target: &Target,
    up: &Upstream,
    service: Service,
) -> Result<Remote, UpstreamError> {
    let failed = |why: String| UpstreamError::Remote {
        upstream: up.name.clone(),
        program: service.program(),
        why,
    };
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| failed(format!("cannot open a session: {e}")))?;
    channel
        .exec(true, target.command(service))
        .await
        .map_err(|e| failed(format!("cannot start it: {e}")))?;
    let (reader, writer) = channel.split();
    Ok(Remote::new(
        Some(Box::new(session.clone())),
        (Reader::Ssh(reader), Writer::Ssh(writer)),
        &up.name,
        service,
    ))
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
