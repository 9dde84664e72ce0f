//! Bodies on their way through pipelock, streamed frame by frame with bounded memory:
//!
//! - [`Scanned`]: what the guest sends, through DLP's [`BodyScanner`]; the last [`HOLD_BACK`]
//!   bytes wait until what follows them is scanned, so no part of a secret leaves before DLP
//!   finds it; a finding (or a guest that stops sending for [`BODY_IDLE`]) ends the body with an
//!   error, which aborts the upstream request: the upstream gets nothing more;
//! - [`Outbound`]: what goes back to the guest, counted, through egress's [`Scrubber`] for a
//!   route; it writes the request's audit event when it is done (or dropped: the guest left).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::sidecar::audit::{AuditLog, Decision, Event};
use crate::sidecar::dlp::{self, BodyScanner};
use crate::sidecar::scrub::Scrubber;

/// How long the guest may pause mid-body before the request is dropped.
pub const BODY_IDLE: Duration = Duration::from_secs(60);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body pipelock sends, either way.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("DLP rule {0} matched the request body")]
    Dlp(String),
    #[error("the client sent no byte of the body for {} s", BODY_IDLE.as_secs())]
    Idle,
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What became of a request's body, shared by the body and the request's handler.
#[derive(Debug, Default)]
pub struct Outcome {
    pub bytes: AtomicU64,
    pub finding: OnceLock<String>,
    pub idle: AtomicBool,
}

/// How many bytes of a scanned body are held back from the upstream: DLP reports a match up
/// to one step after its bytes arrived, and a match (its encoded form up to three times as
/// long) may begin a window before that; held back, no byte of a secret split across chunks
/// leaves before the secret is found.
pub const HOLD_BACK: usize = dlp::STEP + 3 * dlp::WINDOW;

/// The guest's request body, scanned on its way upstream.
pub struct Scanned {
    inner: Incoming,
    scanner: Option<BodyScanner>,
    outcome: Arc<Outcome>,
    idle: Pin<Box<Sleep>>,
    done: bool,
    /// Scanned bytes not yet released upstream (at most [`HOLD_BACK`] between chunks).
    held: bytes::BytesMut,
}

impl Scanned {
    pub fn new(inner: Incoming, scanner: Option<BodyScanner>, outcome: Arc<Outcome>) -> Scanned {
        Scanned {
            inner,
            scanner,
            outcome,
            idle: Box::pin(tokio::time::sleep(BODY_IDLE)),
            done: false,
            held: bytes::BytesMut::new(),
        }
    }

    /// The held bytes, all of them: the body is over and clean.
    fn release_all(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if self.held.is_empty() {
            return Poll::Ready(None);
        }
        let data = self.held.split().freeze();
        self.count(&data);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn count(&self, data: &Bytes) {
        self.outcome
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }

    fn found(&mut self, rule: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        // What was held back never leaves.
        self.held.clear();
        self.scanner = None;
        let _ = self.outcome.finding.set(rule.clone());
        Poll::Ready(Some(Err(Box::new(BodyError::Dlp(rule)))))
    }
}

impl HttpBody for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                if !this.held.is_empty() && this.scanner.is_some() {
                    return this.release_all();
                }
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        this.held.clear();
                        this.outcome.idle.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyError::Idle))));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    if let Some(f) = this.scanner.as_mut().and_then(|s| s.finish()) {
                        return this.found(f.rule);
                    }
                    return this.release_all();
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.held.clear();
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            this.idle
                .as_mut()
                .reset(tokio::time::Instant::now() + BODY_IDLE);
            // Trailers are dropped: `TE`/`Trailer` never reach the upstream either.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let Some(scanner) = this.scanner.as_mut() else {
                this.count(&data);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            };
            if let Some(f) = scanner.feed(&data) {
                return this.found(f.rule);
            }
            this.held.extend_from_slice(&data);
            // The last chunk: the scanner's end now, since hyper polls no further.
            if this.inner.is_end_stream() {
                if let Some(f) = scanner.finish() {
                    return this.found(f.rule);
                }
                return this.release_all();
            }
            if this.held.len() > HOLD_BACK {
                let data = this.held.split_to(this.held.len() - HOLD_BACK).freeze();
                this.count(&data);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
    }
}

/// A request's audit event, written once its answer is done; when dropped unwritten (the
/// guest left before an answer began), written then with the rule `client-closed`.
pub struct Pending {
    pub log: Arc<AuditLog>,
    pub event: Event,
    pub start: Instant,
    pub outcome: Arc<Outcome>,
    pub written: bool,
}

impl Pending {
    /// Writes the event now, for an answer with no body of pipelock's.
    pub fn record(mut self) {
        self.write(0)
    }

    fn write(&mut self, bytes_out: u64) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        self.event.bytes_in = self.outcome.bytes.load(Ordering::Relaxed);
        self.event.bytes_out = bytes_out;
        self.event.duration_ms = self.start.elapsed().as_millis() as u64;
        self.log.record(&self.event);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.written {
            self.event
                .rule
                .get_or_insert_with(|| "client-closed".into());
            self.write(0);
        }
    }
}

/// An answer on its way to the guest: counted, scrubbed for a route, audited at its end.
pub struct Outbound {
    inner: Body,
    scrubber: Option<Scrubber>,
    pending: Option<Pending>,
    bytes: u64,
    ended: bool,
}

impl Outbound {
    pub fn new(inner: Body, scrubber: Option<Scrubber>, pending: Pending) -> Outbound {
        Outbound {
            inner,
            scrubber,
            pending: Some(pending),
            bytes: 0,
            ended: false,
        }
    }

    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.bytes += data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl HttpBody for Outbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.ended = true;
                    let tail = this.scrubber.as_mut().map(|s| s.finish());
                    if let Some(tail) = tail.filter(|t| !t.is_empty()) {
                        return this.data(tail);
                    }
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    this.ended = true;
                    if let Some(p) = this.pending.as_mut() {
                        p.event.decision = Decision::Failed;
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let data = match this.scrubber.as_mut() {
                            Some(s) => s.feed(&data),
                            None => data,
                        };
                        if !data.is_empty() {
                            return this.data(data);
                        }
                    }
                    // Trailers pass unless a scrubber is on: it cannot vouch for them.
                    Err(trailers) if this.scrubber.is_none() => {
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                    Err(_) => {}
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // With a scrubber, the end is only known once it gave back what it held.
        self.ended || (self.scrubber.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.scrubber {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if let Some(mut p) = self.pending.take() {
            p.write(self.bytes);
        }
    }
}
