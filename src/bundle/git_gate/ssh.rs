//! git-gate's way to an upstream: its URL, an SSH connection (russh, pure Rust with ring)
//! whose host key must be in the upstream's known_hosts ([`crate::daemons::git_gate::known_hosts`]), public-key
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

use super::remote::{Reader, Remote, UpstreamError, Writer};
use crate::daemons::git_gate::known_hosts::{HostKeyError, KnownHosts};
use crate::daemons::git_gate::url::Target;
use crate::daemons::git_gate::{Service, Upstream, Via};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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
