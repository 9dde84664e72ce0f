//! Bodies on their way through pipelock, streamed frame by frame with bounded memory:
//!
//! - [`Scanned`]: what the guest sends, through DLP's [`BodyScanner`]; the last [`HOLD_BACK`]
//!   bytes wait until what follows them is scanned, so no part of a secret leaves before DLP
//!   finds it; a finding (or a guest that stops sending for [`BODY_IDLE`]) ends the body with an
//!   error, which aborts the upstream request: the upstream gets nothing more. A body the
//!   guest compressed (`Content-Encoding: gzip`, `deflate`, `br`, `zstd`) is decoded
//!   ([`Inflater`], bounded as answers are) and DLP reads what it decodes to, while the
//!   compressed bytes go on unchanged; a gzip or deflate byte is held until everything it (and
//!   the two slices after it) decoded to lies [`HOLD_BACK`] decoded bytes behind what DLP has
//!   read; a br or zstd body is held whole, up to [`MAX_WHOLE_COMPRESSED`]. A body that does
//!   not decode, or decodes past the bounds, ends the same way (nothing unscanned is sent).
//!   The request waits for the body's first release ([`Scanned::primed`]): a short body is
//!   scanned whole before the upstream hears of the request;
//! - [`Outbound`]: what goes back to the guest, counted, through egress's [`Scrubber`] for a
//!   route; it writes the request's audit event when it is done (or dropped: the guest left).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::boxed::{Body, BoxError};
use super::inflate::{self, Coding, Failure, Inflater};
use crate::bundle::audit::AuditLog;
use crate::bundle::dlp::{self, BodyScanner};
use crate::bundle::scrub::Scrubber;
use crate::daemons::audit::{Decision, Event};

/// How long the guest may pause mid-body before the request is dropped.
pub const BODY_IDLE: Duration = Duration::from_secs(60);

/// What polling a body yields.
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("DLP rule {0} matched the request body")]
    Dlp(String),
    #[error("the client sent no byte of the body for {} s", BODY_IDLE.as_secs())]
    Idle,
    #[error("the compressed request body cannot be read: {0}")]
    Undecodable(String),
}

/// The most compressed bytes held back at once: more than this decoding to fewer than
/// [`HOLD_BACK`] bytes is no compressed body a client makes (a gzip header's unbounded name
/// field, empty blocks), and is refused.
pub const MAX_HELD_COMPRESSED: usize = 1024 * 1024;

/// The most compressed bytes of a br or zstd body held whole: their blocks (up to 128 KiB of
/// zstd, 16 MiB of brotli) may give out what a slice decodes to only slices later, past any
/// bound on how far behind DLP a compressed slice could be released; so such a body goes
/// upstream only once it has ended and DLP has read all of it.
pub const MAX_WHOLE_COMPRESSED: usize = 1024 * 1024;

/// Why a compressed body was refused, for the guest's answer.
#[derive(Debug, Clone)]
pub struct Undecodable {
    /// It decodes past the bounds (else: it is not valid compressed data).
    pub too_large: bool,
    pub why: String,
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
    pub undecodable: OnceLock<Undecodable>,
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
    /// For a compressed body: its decoder, and its compressed pieces not yet released, each
    /// with how many decoded bytes there were once it was decoded.
    inflater: Option<Inflater>,
    /// Held whole until the body ends: a br or zstd body ([`MAX_WHOLE_COMPRESSED`]).
    whole: bool,
    queue: VecDeque<(Bytes, u64)>,
    queued: usize,
    decoded: u64,
    /// The first release, read by [`Scanned::primed`] before the request left.
    first: Option<Option<Result<Frame<Bytes>, BoxError>>>,
}

impl Scanned {
    /// `coding`: the body's content coding; the scanner reads it decoded.
    pub fn new(
        inner: Incoming,
        scanner: Option<BodyScanner>,
        coding: Option<Coding>,
        outcome: Arc<Outcome>,
    ) -> Scanned {
        let inflater = coding.filter(|_| scanner.is_some()).map(Inflater::new);
        let whole = inflater.is_some() && matches!(coding, Some(Coding::Brotli | Coding::Zstd));
        Scanned {
            inner,
            scanner,
            outcome,
            idle: Box::pin(tokio::time::sleep(BODY_IDLE)),
            done: false,
            held: bytes::BytesMut::new(),
            inflater,
            whole,
            queue: VecDeque::new(),
            queued: 0,
            decoded: 0,
            first: None,
        }
    }

    /// Reads the body up to its first release: the first bytes DLP is done with, its clean
    /// end, or why it was cut. Awaited before the request goes upstream, so that nothing of
    /// it, not even its head, leaves before then: a body no longer than [`HOLD_BACK`] is
    /// scanned whole before the upstream is contacted, whatever the timing of its chunks.
    pub async fn primed(mut self) -> Scanned {
        let first = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await;
        self.first = Some(first);
        self
    }

    /// Decodes a compressed chunk slice by slice, scanning what it decodes to, and queues
    /// the slices; `None`: the end of the body. Then moves the slices DLP is done with to
    /// `held`, to be released.
    fn inflate(&mut self, data: Option<Bytes>) -> Result<(), Polled> {
        let (Some(inflater), Some(scanner)) = (self.inflater.as_mut(), self.scanner.as_mut())
        else {
            return Ok(());
        };
        let mut finding = None;
        let mut failure = None;
        match &data {
            Some(data) => {
                let mut at = 0;
                while at < data.len() && finding.is_none() && failure.is_none() {
                    let end = (at + inflate::SLICE).min(data.len());
                    match inflater.step(Some(&data[at..end])) {
                        Ok(out) => {
                            self.decoded += out.len() as u64;
                            finding = scanner.feed(&out);
                        }
                        Err(f) => failure = Some(f),
                    }
                    self.queue.push_back((data.slice(at..end), self.decoded));
                    self.queued += end - at;
                    at = end;
                }
            }
            None => match inflater.step(None) {
                Ok(out) => {
                    self.decoded += out.len() as u64;
                    finding = scanner.feed(&out);
                }
                Err(f) => failure = Some(f),
            },
        }
        if let Some(f) = finding {
            return Err(self.found(f.rule));
        }
        if let Some(f) = failure {
            return Err(self.undecodable(f));
        }
        if data.is_none() {
            return Ok(());
        }
        if self.whole {
            if self.queued > MAX_WHOLE_COMPRESSED {
                let why = Undecodable {
                    too_large: true,
                    why: format!(
                        "a br or zstd body is read whole before any of it is sent, and this one is over {} MiB compressed (send it gzip-compressed: that streams)",
                        MAX_WHOLE_COMPRESSED >> 20
                    ),
                };
                return Err(self.refuse(why));
            }
            return Ok(());
        }
        // gzip and deflate: a slice's decoded bytes may come out up to two slices later (the
        // decoder's own buffer, a code cut between slices): it counts as decoded at the
        // third's end.
        while self.queue.len() > 2 && self.queue[2].1 + HOLD_BACK as u64 <= self.decoded {
            let (piece, _) = self.queue.pop_front().expect("three queued");
            self.queued -= piece.len();
            self.held.extend_from_slice(&piece);
        }
        if self.queued > MAX_HELD_COMPRESSED {
            let why = Undecodable {
                too_large: true,
                why: format!(
                    "more than {MAX_HELD_COMPRESSED} compressed bytes decode to fewer than {HOLD_BACK}"
                ),
            };
            return Err(self.refuse(why));
        }
        Ok(())
    }

    fn undecodable(&mut self, f: Failure) -> Polled {
        let why = match f {
            Failure::TooLarge { limit } => Undecodable {
                too_large: true,
                why: format!(
                    "it decodes to more than {limit} bytes (at most {} times its compressed size plus 1 MiB, and {} MiB in all)",
                    inflate::MAX_RATIO,
                    inflate::MAX_DECODED >> 20
                ),
            },
            Failure::Corrupt(cause) => Undecodable {
                too_large: false,
                why: format!("it is not valid compressed data ({cause})"),
            },
        };
        self.refuse(why)
    }

    fn refuse(&mut self, why: Undecodable) -> Polled {
        self.done = true;
        self.held.clear();
        self.queue.clear();
        self.scanner = None;
        let text = why.why.clone();
        let _ = self.outcome.undecodable.set(why);
        Poll::Ready(Some(Err(Box::new(BodyError::Undecodable(text)))))
    }

    /// The end of the body: the decoder's and the scanner's, then every held byte.
    fn end(&mut self) -> Polled {
        if let Err(p) = self.inflate(None) {
            return p;
        }
        if let Some(f) = self.scanner.as_mut().and_then(|s| s.finish()) {
            return self.found(f.rule);
        }
        self.release_all()
    }

    /// The held bytes, all of them: the body is over and clean.
    fn release_all(&mut self) -> Polled {
        self.done = true;
        while let Some((piece, _)) = self.queue.pop_front() {
            self.held.extend_from_slice(&piece);
        }
        self.queued = 0;
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

    fn found(&mut self, rule: String) -> Polled {
        self.done = true;
        // What was held back never leaves.
        self.held.clear();
        self.queue.clear();
        self.scanner = None;
        let _ = self.outcome.finding.set(rule.clone());
        Poll::Ready(Some(Err(Box::new(BodyError::Dlp(rule)))))
    }
}

impl HttpBody for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(first);
        }
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
                Poll::Ready(None) => return this.end(),
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
            if this.inflater.is_some() {
                if let Err(p) = this.inflate(Some(data)) {
                    return p;
                }
            } else {
                if let Some(f) = scanner.feed(&data) {
                    return this.found(f.rule);
                }
                this.held.extend_from_slice(&data);
            }
            // The last chunk: the scanner's end now, since hyper polls no further.
            if this.inner.is_end_stream() {
                return this.end();
            }
            if this.inflater.is_some() {
                if !this.held.is_empty() {
                    let data = this.held.split().freeze();
                    this.count(&data);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                continue;
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

    fn data(&mut self, data: Bytes) -> Polled {
        self.bytes += data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl HttpBody for Outbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
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
