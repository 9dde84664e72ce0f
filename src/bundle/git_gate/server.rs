//! git-gate's HTTP side: the listener, git's smart HTTP routes for each upstream
//! (`/NAME/info/refs`, `/NAME/git-upload-pack`, `/NAME/git-receive-pack`), relaying to and
//! from the upstream's git (over SSH, or `bottle run`'s socket for a local upstream), and the
//! audit lines.
//!
//! Bad input ends one request, never the daemon: a body larger than its limit is cut off with
//! a 413, unreadable pkt-lines get a 400, a bad pack a refusal in git's report-status; each
//! connection is its own task, and nothing is sent upstream before the whole push is judged.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::pkt::{self, Advertisement, Pkt};
use super::policy::Command;
use super::policy::Rule;
use super::push;
use super::remote::{self, Remote, UpstreamError};
use crate::bundle::audit::AuditLog;
use crate::bundle::log::log;
use crate::daemons::audit::{Decision, Event, GitUpdate};
use crate::daemons::git_gate::url::Target;
use crate::daemons::git_gate::{Config, MAX_PUSHES, Service, UPLOAD_REQUEST_LIMIT, Upstream, Via};

const WHO: &str = "git-gate";
/// The longest a request head may take to arrive, and a body may stay silent.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an upstream's push answer is kept to read its report for the audit log.
const REPORT_LIMIT: usize = 1 << 20;

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

/// A bound git-gate, ready to serve.
pub struct Gate {
    listener: TcpListener,
    state: Arc<State>,
}

pub(super) struct State {
    upstreams: BTreeMap<String, Upstream>,
    pub(super) audit: Arc<AuditLog>,
    /// Pushes being read, judged or forwarded: at most [`MAX_PUSHES`] at once.
    pub(super) pushes: tokio::sync::Semaphore,
}

impl Gate {
    /// Opens the audit log and binds the listening socket.
    pub async fn bind(config: Config, run: &str) -> Result<Gate> {
        let audit = AuditLog::open(config.audit_log.as_deref().map(std::path::Path::new), run)?
            .for_daemon(WHO);
        let addr = SocketAddr::new(config.listen_host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("git-gate cannot listen on {addr}"))?;
        for u in &config.upstreams {
            let policy = format!(
                "(branches {:?}, tags {}, max_push_bytes {})",
                u.branches, u.tags, u.max_push_bytes
            );
            let what = match &u.via {
                Via::Ssh { url, .. } => match Target::parse(&u.name, url) {
                    Ok(t) => format!("{}@{}:{} {} {policy}", t.user, t.host, t.port, t.path),
                    Err(e) => format!("UNUSABLE: {e}"),
                },
                Via::Local { socket } => format!("a repository on the host, via {socket} {policy}"),
            };
            log(WHO, format!("upstream {}: {what}", u.name));
        }
        log(WHO, format!("listening on {addr}"));
        let upstreams = config
            .upstreams
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        Ok(Gate {
            listener,
            state: Arc::new(State {
                upstreams,
                audit: Arc::new(audit),
                pushes: tokio::sync::Semaphore::new(MAX_PUSHES),
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
            let state = self.state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.handle(req).await) }
                });
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new()).header_read_timeout(TIMEOUT);
                if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
                    log(WHO, format!("a connection ended: {e}"));
                }
            });
        }
    }
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A plain-text answer: git shows its lines as `remote: …` for an error status.
pub(super) fn text(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(format!("{message}\n")))
        .expect("a valid response")
}

pub(super) fn git(kind: &str, body: Body) -> Response<Body> {
    Response::builder()
        .header("content-type", format!("application/x-{kind}"))
        .header("cache-control", "no-cache")
        .body(body)
        .expect("a valid response")
}

/// An audit line under way for one request to an upstream.
pub(super) struct Audit<'a> {
    pub(super) state: &'a State,
    pub(super) up: &'a Upstream,
    pub(super) service: Service,
    pub(super) started: Instant,
}

impl Audit<'_> {
    pub(super) fn event(
        &self,
        decision: Decision,
        rule: &str,
        status: u16,
        bytes: (u64, u64),
    ) -> Event {
        let (host, port, path) = match &self.up.via {
            Via::Ssh { url, .. } => match Target::parse(&self.up.name, url) {
                Ok(t) => (t.host, t.port, t.path),
                Err(_) => ("-".into(), 0, "-".into()),
            },
            // The repository's host path is the host side's: git-gate never knows it.
            Via::Local { .. } => ("local".into(), 0, format!("/{}", self.up.name)),
        };
        Event {
            time_ms: Event::now_ms(),
            run: self.state.audit.run().to_string(),
            method: self.service.program().into(),
            host,
            port,
            path,
            decision,
            rule: Some(rule.into()),
            status,
            bytes_in: bytes.1,
            bytes_out: bytes.0,
            duration_ms: self.started.elapsed().as_millis() as u64,
            git: None,
        }
    }

    pub(super) fn record(&self, decision: Decision, rule: &str, status: u16, bytes: (u64, u64)) {
        self.state
            .audit
            .record(&self.event(decision, rule, status, bytes));
    }

    /// One line per command of a push.
    pub(super) fn record_push(
        &self,
        commands: &[(Command, Decision, String)],
        status: u16,
        bytes: (u64, u64),
    ) {
        for (c, decision, rule) in commands {
            let mut e = self.event(*decision, rule, status, bytes);
            e.git = Some(GitUpdate {
                upstream: self.up.name.clone(),
                ref_name: c.name.clone(),
                old: c.old.to_string(),
                new: c.new.to_string(),
            });
            self.state.audit.record(&e);
        }
    }

    /// An upstream that could not be used: logged, audited, and a 502 saying why.
    pub(super) fn failed(&self, e: &UpstreamError, commands: &[Command]) -> Response<Body> {
        let rule = match e {
            UpstreamError::HostKey(_) => "host-key",
            _ => "upstream",
        };
        log(WHO, format!("upstream {}: {e}", self.up.name));
        if commands.is_empty() {
            self.record(Decision::Failed, rule, 502, (0, 0));
        } else {
            let rows: Vec<_> = commands
                .iter()
                .map(|c| (c.clone(), Decision::Failed, rule.to_string()))
                .collect();
            self.record_push(&rows, 502, (0, 0));
        }
        text(StatusCode::BAD_GATEWAY, &format!("git-gate: {e}"))
    }
}

/// Why a request body was not read.
pub(super) enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads a body whole, stopping as soon as it passes `limit` bytes.
pub(super) async fn read_body(
    mut body: Incoming,
    limit: u64,
    hint: Option<u64>,
) -> Result<Bytes, BodyError> {
    if hint.is_some_and(|h| h > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(hint.unwrap_or(0).min(limit) as usize);
    loop {
        let frame = match tokio::time::timeout(TIMEOUT, body.frame()).await {
            Err(_) => return Err(BodyError::Read(format!("no data for {TIMEOUT:?}"))),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// The body, gunzipped when its `Content-Encoding` says so (git gzips larger fetch requests).
pub(super) fn decode(gzip: bool, body: Bytes, limit: u64) -> Result<Bytes, BodyError> {
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Read(format!("bad gzip data: {e}")))?;
    if out.len() as u64 > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out.into())
}

impl State {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let Some((name, route)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return text(StatusCode::NOT_FOUND, &self.not_found(&path));
        };
        let Some(up) = self.upstreams.get(name) else {
            return text(StatusCode::NOT_FOUND, &self.not_found(name));
        };
        let query = req.uri().query().unwrap_or("");
        let wanted = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .unwrap_or("");
        match (req.method(), route, wanted) {
            (&Method::GET, "info/refs", "git-upload-pack") => {
                self.advertise(up, Service::UploadPack).await
            }
            (&Method::GET, "info/refs", "git-receive-pack") => {
                self.advertise(up, Service::ReceivePack).await
            }
            (&Method::GET, "info/refs", _) => text(
                StatusCode::FORBIDDEN,
                "git-gate: only git's smart HTTP protocol is served (no dumb HTTP); use git 1.6.6 or later",
            ),
            (&Method::POST, "git-upload-pack", _) => self.upload(up, req).await,
            (&Method::POST, "git-receive-pack", _) => self.receive(up, req).await,
            _ => text(
                StatusCode::NOT_FOUND,
                &format!(
                    "git-gate: {} {path} is not a git smart HTTP request",
                    req.method()
                ),
            ),
        }
    }

    fn not_found(&self, name: &str) -> String {
        let names: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
        format!(
            "git-gate: no upstream named {name:?}; this bottle's [[git-gate.upstreams]] are {}: use http://BUNDLE:{}/NAME",
            names.join(", "),
            crate::daemons::git_gate::PORT
        )
    }

    /// `GET /NAME/info/refs?service=…`: the upstream's advertisement (for a push, with the
    /// capabilities git-gate honours).
    async fn advertise(&self, up: &Upstream, service: Service) -> Response<Body> {
        let audit = Audit {
            state: self,
            up,
            service,
            started: Instant::now(),
        };
        let lines = match fetch_advertisement(up, service).await {
            Ok(lines) => lines,
            Err(e) => return audit.failed(&e, &[]),
        };
        let mut out = Vec::new();
        pkt::put(
            &mut out,
            format!("# service={}\n", service.program()).as_bytes(),
        );
        pkt::flush(&mut out);
        match service {
            Service::UploadPack => {
                for l in &lines {
                    pkt::put(&mut out, l);
                }
                pkt::flush(&mut out);
            }
            Service::ReceivePack => {
                let adv = match Advertisement::parse(&lines) {
                    Ok(a) => a,
                    Err(why) => {
                        let e = UpstreamError::Remote {
                            upstream: up.name.clone(),
                            program: service.program(),
                            why: format!("its advertisement cannot be read: {why}"),
                        };
                        return audit.failed(&e, &[]);
                    }
                };
                out.extend(adv.render(&push::receive_caps(&adv.caps)));
            }
        }
        git(&format!("{}-advertisement", service.program()), full(out))
    }

    /// `POST /NAME/git-upload-pack`: one round of a fetch's negotiation, relayed.
    async fn upload(&self, up: &Upstream, req: Request<Incoming>) -> Response<Body> {
        let audit = Audit {
            state: self,
            up,
            service: Service::UploadPack,
            started: Instant::now(),
        };
        let gzip = is_gzip(&req);
        let body = match read_body(req.into_body(), UPLOAD_REQUEST_LIMIT, None)
            .await
            .and_then(|b| decode(gzip, b, UPLOAD_REQUEST_LIMIT))
        {
            Ok(b) => b,
            Err(e) => {
                let why = format!(
                    "git-gate: the fetch request is larger than {UPLOAD_REQUEST_LIMIT} bytes"
                );
                return self.bad_body(&audit, e, "request-size", &why);
            }
        };
        let bytes_in = body.len() as u64;
        let mut remote = match remote::open(up, Service::UploadPack).await {
            Ok(r) => r,
            Err(e) => return audit.failed(&e, &[]),
        };
        let mut left = Vec::new();
        if let Err(e) = remote.advertisement(&mut left).await {
            return audit.failed(&e, &[]);
        }
        send_all(&mut remote, vec![body]);
        let event = audit.event(Decision::Allowed, "upstream", 200, (0, bytes_in));
        let log = self.audit.clone();
        let body = relay(remote, left, move |bytes_out, _| {
            let mut e = event;
            e.bytes_out = bytes_out;
            log.record(&e);
        });
        git("git-upload-pack-result", body)
    }

    /// A body that was not read: too large (413, `rule`, `too_large` saying so) or unreadable.
    pub(super) fn bad_body(
        &self,
        audit: &Audit<'_>,
        e: BodyError,
        rule: &str,
        too_large: &str,
    ) -> Response<Body> {
        match e {
            BodyError::TooLarge => {
                log(WHO, format!("upstream {}: {too_large}", audit.up.name));
                audit.record(Decision::Refused, rule, 413, (0, 0));
                text(StatusCode::PAYLOAD_TOO_LARGE, too_large)
            }
            BodyError::Read(why) => {
                audit.record(Decision::Invalid, Rule::Malformed.name(), 400, (0, 0));
                text(
                    StatusCode::BAD_REQUEST,
                    &format!("git-gate: the request's body cannot be read: {why}"),
                )
            }
        }
    }
}

pub(super) fn is_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"))
}

/// Opens `service` on the upstream, reads its advertisement, and ends it cleanly (a flush:
/// no wants, no commands).
async fn fetch_advertisement(
    up: &Upstream,
    service: Service,
) -> Result<Vec<Vec<u8>>, UpstreamError> {
    let mut remote = remote::open(up, service).await?;
    let mut left = Vec::new();
    let lines = remote.advertisement(&mut left).await?;
    let _ = remote.send(Bytes::from_static(b"0000")).await;
    let _ = remote.eof().await;
    Ok(lines)
}

/// Sends `parts` to the remote's stdin then ends it, in a task of its own: the remote may
/// answer (progress) before it has read everything.
pub(super) fn send_all(remote: &mut Remote, parts: Vec<Bytes>) {
    let Some(mut writer) = remote.take_writer() else {
        return;
    };
    tokio::spawn(async move {
        for p in parts {
            if let Err(e) = writer.send(p).await {
                log(WHO, format!("cannot send to the upstream: {e}"));
                return;
            }
        }
        let _ = writer.eof().await;
    });
}

/// The remote's stdout as a streamed response body (`first` before it); `done` gets the bytes
/// relayed and up to [`REPORT_LIMIT`] of them once the remote is done.
pub(super) fn relay(
    mut remote: Remote,
    first: Vec<u8>,
    done: impl FnOnce(u64, Vec<u8>) + Send + 'static,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut total = 0u64;
        let mut kept = Vec::new();
        let mut chunk = Some(Bytes::from(first)).filter(|b| !b.is_empty());
        loop {
            let Some(data) = (match chunk.take() {
                Some(c) => Some(c),
                None => remote.next().await,
            }) else {
                break;
            };
            total += data.len() as u64;
            let room = REPORT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
            if tx.send(Ok(Frame::data(data))).await.is_err() {
                break;
            }
        }
        done(total, kept);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    StreamBody::new(stream).boxed()
}

/// The per-ref results of an upstream's report-status (demultiplexed from side-band 1 when
/// `band`): ref name → `None` for ok, the reason for ng.
pub(super) fn read_report(band: bool, answer: &[u8]) -> BTreeMap<String, Option<String>> {
    let mut report = Vec::new();
    if band {
        let mut pos = 0;
        while let Ok(Pkt::Data(d)) = pkt::parse(answer, &mut pos) {
            if let Some(data) = d.strip_prefix(&[1u8][..]) {
                report.extend_from_slice(data);
            }
        }
    } else {
        report = answer.to_vec();
    }
    let mut out = BTreeMap::new();
    let mut pos = 0;
    while let Ok(Pkt::Data(line)) = pkt::parse(&report, &mut pos) {
        let line = String::from_utf8_lossy(line).trim_end().to_string();
        if let Some(name) = line.strip_prefix("ok ") {
            out.insert(name.to_string(), None);
        } else if let Some(rest) = line.strip_prefix("ng ") {
            let (name, why) = rest.split_once(' ').unwrap_or((rest, ""));
            out.insert(name.to_string(), Some(why.to_string()));
        }
    }
    out
}
