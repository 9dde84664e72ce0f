//! pipelock's connections: the listening socket, the guest's HTTP/1.1 connections to it
//! (absolute-form `http://` requests, kept alive), and `CONNECT` tunnels, every one of which
//! is intercepted: pipelock answers `200`, terminates the guest's TLS with a leaf for the
//! tunnel's host signed by the run's CA ([`super::mint`]), and serves the requests inside as
//! its own ([`super::exchange`]), over HTTP/2 when the guest's client offers it (ALPN `h2`),
//! else HTTP/1.1. A host that is not allowed is intercepted too, so that the
//! guest reads the 403's body (a refused CONNECT hides it from most clients).
//!
//! Bad input ends one connection, never the proxy: a malformed or oversized head gets hyper's
//! 400/431, a head that trickles in slower than [`HEADER_TIMEOUT`] or a TLS handshake slower
//! than [`HANDSHAKE_TIMEOUT`] is dropped, and each is an audit event.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::allow::normalize;
use super::body::{Outcome, Pending, full};
use super::boxed::Body;
use super::destination::Destinations;
use super::exchange::{Origin, answer};
use super::mint::Minter;
use super::policy::Policy;
use super::refusal::Refusal;
use super::state::State;
use super::upstream::Connector;
use crate::bundle::audit::{AuditLog, redact_query};
use crate::bundle::dlp::Redactor;
use crate::bundle::egress::Egress;
use crate::bundle::log::log;
use crate::bundle::serve::Context as DaemonContext;
use crate::daemons::audit::{Decision, Event};
use crate::daemons::pipelock::Config;

const WHO: &str = "pipelock";
/// The longest a request head may take to arrive (also how long a kept-alive connection may
/// stay idle between requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest the guest's TLS handshake inside a tunnel may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted (hyper answers 431 past it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: TcpListener,
    state: Arc<State>,
}

impl Proxy {
    /// Loads the CA, the routes (with their tokens from `secrets`, by env var name) and the DLP
    /// rules, opens the audit log, and binds the listening socket. `shared` holds the run's
    /// grants, consulted on every request.
    pub async fn bind(config: Config, ctx: DaemonContext) -> Result<Proxy> {
        let DaemonContext {
            secrets,
            shared,
            run_id,
            hooks,
            ..
        } = ctx;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let minter = Minter::load(
            Path::new(&config.ca_cert),
            Path::new(&config.ca_key),
            provider.clone(),
        )?;
        let policy = Policy::new(&config.allow, &config.dlp, shared)?;
        let redactor = Redactor::new(&config.dlp).context("pipelock's DLP rules cannot be used")?;
        let egress = Egress::new(&config.egress, &secrets)?;
        let destinations = Destinations::new(&config.mapped_hosts, &config.allow_private)
            .context("pipelock's allow_private cannot be used")?;
        let connector = Connector::new(
            &config.egress,
            destinations,
            provider,
            hooks.test_resolve.as_deref(),
        )?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(32)
            .set_host(false)
            .build(connector);
        let audit = AuditLog::open(config.audit_log.as_deref().map(Path::new), &run_id)?;
        let addr = SocketAddr::new(config.listen_host, config.listen_port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("pipelock cannot listen on {addr}"))?;
        log_start(&config, &secrets, addr, policy.dlp_enabled());
        Ok(Proxy {
            listener,
            state: Arc::new(State {
                policy,
                supervise: config.supervise,
                egress,
                minter,
                client,
                audit: Arc::new(audit),
                redactor,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self) -> Result<()> {
        loop {
            let stream = crate::bundle::serve::accept(&self.listener, WHO).await;
            tokio::spawn(self.state.clone().serve_guest(stream));
        }
    }
}

fn log_start(config: &Config, secrets: &BTreeMap<String, String>, addr: SocketAddr, dlp: bool) {
    let mut hosts = config.allow.clone();
    hosts.sort();
    let shown = if hosts.is_empty() {
        "no host (every request is refused)".to_string()
    } else {
        hosts.join(", ")
    };
    log(WHO, format!("listening on {addr}; allowing {shown}"));
    for r in &config.egress.routes {
        let token = if secrets.get(&r.token_env).is_some_and(|t| !t.is_empty()) {
            "token present"
        } else {
            "NO TOKEN: its requests are refused"
        };
        log(
            WHO,
            format!(
                "egress route {} (header {}, token from {}: {token}{})",
                r.host,
                r.header,
                r.token_env,
                if r.upstream_ca.is_some() {
                    "; own upstream CA"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some(p) = &config.egress.upstream_proxy {
        log(WHO, format!("outbound connections go through {p}"));
    }
    log(
        WHO,
        format!(
            "TLS interception on; DLP {}",
            if dlp { "on" } else { "off" }
        ),
    );
}

fn http1() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        // A client that half-closes after its request (busybox nc does) still gets the answer.
        .half_close(true);
    b
}

/// HTTP/2 inside a tunnel, when the guest's client offers it (ALPN).
fn http2() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .keep_alive_interval(HEADER_TIMEOUT)
        .keep_alive_timeout(HEADER_TIMEOUT)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(128);
    b
}

impl State {
    /// One guest connection to pipelock's port.
    async fn serve_guest(self: Arc<Self>, stream: TcpStream) {
        let served = Arc::new(AtomicU64::new(0));
        let (state, count) = (self.clone(), served.clone());
        let svc = service_fn(move |req: Request<Incoming>| {
            count.fetch_add(1, Ordering::Relaxed);
            let state = state.clone();
            async move {
                let response = if req.method() == Method::CONNECT {
                    state.connect(req)
                } else {
                    state.exchange(req, Origin::Plain).await
                };
                Ok::<_, Infallible>(response)
            }
        });
        let served_by = http1()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
        if let Err(e) = served_by {
            self.connection_failed(&e, None, served.load(Ordering::Relaxed));
        }
    }

    /// `CONNECT host:port`: answered 200, then intercepted once the connection is upgraded.
    fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let target = req
            .uri()
            .authority()
            .and_then(|a| Some((normalize(a.host()), a.port_u16()?, a.host().to_string())))
            .filter(|(h, _, _)| !h.is_empty());
        let Some((host, port, sent)) = target else {
            let pending = self.pending("CONNECT", "-", 0);
            return answer(
                Refusal::invalid("CONNECT needs a host:port target"),
                pending,
            );
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    self.intercept(TokioIo::new(upgraded), host, port, sent)
                        .await
                }
                Err(e) => log(WHO, format!("CONNECT {host}:{port}: no tunnel ({e})")),
            }
        });
        Response::new(full(""))
    }

    /// The guest's TLS inside a tunnel, terminated with a leaf for `host`; its requests served.
    async fn intercept(
        self: Arc<Self>,
        io: TokioIo<hyper::upgrade::Upgraded>,
        host: String,
        port: u16,
        sent: String,
    ) {
        let mut pending = self.pending("CONNECT", &host, port);
        pending.event.host = self.logged_sent_host(&host, &sent);
        pending.event.status = 200;
        let handshake = match self.minter.server_config(&host) {
            Ok(config) => {
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(io);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                    Ok(Ok(tls)) => Ok(tls),
                    Ok(Err(e)) => Err(format!("the guest's TLS handshake failed: {e}")),
                    Err(_) => Err(format!(
                        "the guest's TLS handshake took over {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let tls = match handshake {
            Ok(tls) => tls,
            Err(why) => {
                log(WHO, format!("CONNECT {host}:{port}: {why}"));
                pending.event.rule = Some("tls-handshake".into());
                return pending.record();
            }
        };
        (pending.event.decision, pending.event.rule) = match self.policy.allows(&host) {
            Some(rule) => (Decision::Allowed, Some(rule.into())),
            None => (
                Decision::Refused,
                Some(super::policy::ALLOWLIST_RULE.into()),
            ),
        };
        pending.record();
        let served = Arc::new(AtomicU64::new(0));
        let (state, count) = (self.clone(), served.clone());
        let origin = Origin::Tunnel {
            host: host.clone(),
            port,
            sent,
        };
        let svc = service_fn(move |req| {
            count.fetch_add(1, Ordering::Relaxed);
            let (state, origin) = (state.clone(), origin.clone());
            async move { Ok::<_, Infallible>(state.exchange(req, origin).await) }
        });
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let served_by = if h2 {
            http2().serve_connection(io, svc).await
        } else {
            http1().serve_connection(io, svc).await
        };
        if let Err(e) = served_by {
            self.connection_failed(&e, Some((&host, port)), served.load(Ordering::Relaxed));
        }
    }

    /// A guest connection hyper gave up on: an audit event when the guest sent something
    /// pipelock could not take (a client that just left is not one).
    fn connection_failed(&self, e: &hyper::Error, tunnel: Option<(&str, u16)>, served: u64) {
        let (rule, status) = if e.is_parse_too_large() {
            ("headers-too-large", 431)
        } else if e.is_parse() {
            ("malformed", 400)
        } else if e.is_timeout() && served == 0 {
            // A kept-alive connection idle past the timeout just closes.
            ("timeout", 0)
        } else {
            return;
        };
        let (host, port) = tunnel.unwrap_or(("-", 0));
        log(WHO, format!("dropped a connection ({host}:{port}): {e}"));
        let mut pending = self.pending("-", host, port);
        pending.event.rule = Some(rule.into());
        pending.event.status = status;
        pending.record();
    }

    /// A host as the audit log keeps it: whatever a DLP rule matches, read without case,
    /// masked.
    pub(super) fn logged_host(&self, host: &str) -> String {
        self.redactor
            .redact_host(host)
            .unwrap_or_else(|| host.to_string())
    }

    /// A host as the audit log keeps it, masked as the guest wrote it (`sent`, case kept) when
    /// a rule matches there.
    pub(super) fn logged_sent_host(&self, host: &str, sent: &str) -> String {
        match self.redactor.redact_host(sent) {
            Some(masked) => masked,
            None => self.logged_host(host),
        }
    }

    /// A path and query as the audit log keeps it: query values dropped, whatever a DLP rule
    /// matches masked (in a path segment, a bare query, or a value's name).
    pub(super) fn logged_path(&self, path: &str) -> String {
        match self.redactor.redact(path) {
            Some(masked) => redact_query(&masked),
            None => redact_query(path),
        }
    }

    pub(super) fn pending(&self, method: &str, host: &str, port: u16) -> Pending {
        Pending {
            log: self.audit.clone(),
            event: Event {
                time_ms: Event::now_ms(),
                run: self.audit.run().to_string(),
                method: method.into(),
                host: self.logged_host(host),
                port,
                path: "-".into(),
                decision: Decision::Invalid,
                rule: None,
                status: 0,
                bytes_in: 0,
                bytes_out: 0,
                duration_ms: 0,
                git: None,
            },
            start: Instant::now(),
            outcome: Arc::new(Outcome::default()),
            written: false,
        }
    }
}
