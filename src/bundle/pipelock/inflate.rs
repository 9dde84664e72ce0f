//! Compressed bodies, decoded: a route's answers, so the scrubber reads what the guest will;
//! and the guest's request bodies, so DLP reads what the upstream will ([`Inflater`], used by
//! [`super::body::Scanned`], which sends the compressed bytes on unchanged).
//!
//! egress asks a route's upstream for `Accept-Encoding: identity`; an upstream may compress
//! all the same. A `gzip` (or `x-gzip`), `deflate` (zlib-wrapped, or raw as some servers
//! send it), `br` or `zstd` body is decoded as it streams, then scrubbed, and goes to the
//! guest decoded (`Content-Encoding` and `Content-Length` removed). Any other coding, or
//! several stacked, cannot be read here: the answer is refused with a 502 that names it
//! ([`coding`] says which). A zstd frame may ask for a window of at most [`ZSTD_WINDOW_LOG`]
//! (8 MiB, what RFC 9659 lets an HTTP sender use); a larger one is corrupt data here.
//!
//! Bounded: input is decoded [`SLICE`] bytes at a time, so one step yields at most what a
//! slice can expand to; the decoded total may not pass [`MAX_RATIO`] times the compressed
//! bytes plus [`FLOOR`], nor [`MAX_DECODED`]. Past either, or on corrupt data, the body ends
//! with an error (the guest sees a cut answer; the audit line says `failed`).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use brotli_decompressor::DecompressorWriter;
use bytes::Bytes;
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use hyper::body::{Body as HttpBody, Frame};
use hyper::header::{CONTENT_ENCODING, HeaderMap};

use super::boxed::{Body, BoxError};

/// Compressed bytes decoded per step.
pub const SLICE: usize = 1024;
/// The most decoded bytes per compressed byte, past [`FLOOR`].
pub const MAX_RATIO: u64 = 100;
/// Decoded bytes allowed whatever the ratio.
pub const FLOOR: u64 = 1024 * 1024;
/// The most decoded bytes of one answer.
pub const MAX_DECODED: u64 = 256 * 1024 * 1024;
/// The largest zstd window a frame may ask for, as a power of two (8 MiB).
pub const ZSTD_WINDOW_LOG: u32 = 23;
/// The brotli decoder's output buffer.
const BROTLI_BUFFER: usize = 4096;

/// A content coding pipelock decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// The answer's coding: `Ok(None)` when it has none (or `identity`), `Err(coding)` naming one
/// pipelock cannot decode.
pub fn coding(headers: &HeaderMap) -> Result<Option<Coding>, String> {
    let mut codings: Vec<String> = Vec::new();
    for v in headers.get_all(CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        codings.extend(
            text.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "identity")
                .map(str::to_string),
        );
    }
    match codings.as_slice() {
        [] => Ok(None),
        [one] if one == "gzip" || one == "x-gzip" => Ok(Some(Coding::Gzip)),
        [one] if one == "deflate" => Ok(Some(Coding::Deflate)),
        [one] if one == "br" => Ok(Some(Coding::Brotli)),
        [one] if one == "zstd" => Ok(Some(Coding::Zstd)),
        _ => Err(codings.join(", ")),
    }
}

/// The sink's refusal to take more.
#[derive(Debug, thiserror::Error)]
#[error("the decoded size limit is reached")]
struct Full;

/// The decoded bytes of one step, refusing to grow past a limit.
#[derive(Default)]
struct Sink {
    buf: Vec<u8>,
    room: usize,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.room {
            return Err(io::Error::other(Full));
        }
        self.room -= data.len();
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    Gzip(Box<GzDecoder<Sink>>),
    Brotli(Box<DecompressorWriter<Sink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Sink>>),
    /// `deflate` before its first two bytes tell zlib from raw.
    Deflate(Vec<u8>),
    Zlib(Box<ZlibDecoder<Sink>>),
    Raw(Box<DeflateDecoder<Sink>>),
}

impl Decoder {
    fn sink(&mut self) -> Option<&mut Sink> {
        match self {
            Decoder::Gzip(d) => Some(d.get_mut()),
            Decoder::Brotli(d) => Some(d.get_mut()),
            Decoder::Zstd(d) => Some(d.get_mut()),
            Decoder::Zlib(d) => Some(d.get_mut()),
            Decoder::Raw(d) => Some(d.get_mut()),
            Decoder::Deflate(_) => None,
        }
    }

    /// Decodes `data`, its output at most `room` bytes.
    fn write(&mut self, data: &[u8], room: usize) -> io::Result<()> {
        if let Decoder::Deflate(start) = self {
            start.extend_from_slice(data);
            if start.len() < 2 {
                return Ok(());
            }
            let head = u16::from_be_bytes([start[0], start[1]]);
            let zlib = start[0] & 0x0f == 8 && head % 31 == 0;
            let held = std::mem::take(start);
            *self = if zlib {
                Decoder::Zlib(Box::new(ZlibDecoder::new(Sink::default())))
            } else {
                Decoder::Raw(Box::new(DeflateDecoder::new(Sink::default())))
            };
            return self.write(&held, room);
        }
        if let Some(sink) = self.sink() {
            sink.room = room;
        }
        match self {
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Brotli(d) => d.write_all(data),
            Decoder::Zstd(d) => d.write_all(data),
            Decoder::Zlib(d) => d.write_all(data),
            Decoder::Raw(d) => d.write_all(data),
            Decoder::Deflate(_) => unreachable!("handled above"),
        }
    }

    fn finish(&mut self, room: usize) -> io::Result<()> {
        if let Some(sink) = self.sink() {
            sink.room = room;
        }
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Brotli(d) => d.close(),
            Decoder::Zstd(d) => d.do_finish(),
            Decoder::Zlib(d) => d.try_finish(),
            Decoder::Raw(d) => d.try_finish(),
            Decoder::Deflate(start) if start.is_empty() => Ok(()),
            Decoder::Deflate(_) => Err(io::Error::other("truncated")),
        }
    }
}

/// Why a compressed answer was cut.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error(
        "the upstream's {coding:?} answer decodes to more than {limit} bytes (at most {MAX_RATIO} times its compressed size plus 1 MiB, and 256 MiB in all): cut"
    )]
    TooLarge { coding: Coding, limit: u64 },
    #[error("the upstream's {coding:?} answer is not valid compressed data: {cause}")]
    Corrupt { coding: Coding, cause: io::Error },
}

/// Why a compressed stream could not be decoded.
#[derive(Debug)]
pub enum Failure {
    /// It decodes to more than `limit` bytes so far (the ratio or the total).
    TooLarge {
        limit: u64,
    },
    Corrupt(io::Error),
}

/// A compressed stream decoded step by step, in bounded memory: feed it at most [`SLICE`]
/// bytes a step and each step yields at most what the bounds still allow.
pub struct Inflater {
    decoder: Decoder,
    total_in: u64,
    total_out: u64,
}

impl Inflater {
    pub fn new(coding: Coding) -> Inflater {
        let decoder = match coding {
            Coding::Gzip => Decoder::Gzip(Box::new(GzDecoder::new(Sink::default()))),
            Coding::Deflate => Decoder::Deflate(Vec::new()),
            Coding::Brotli => Decoder::Brotli(Box::new(DecompressorWriter::new(
                Sink::default(),
                BROTLI_BUFFER,
            ))),
            Coding::Zstd => Decoder::Zstd(Box::new(zstd_decoder())),
        };
        Inflater {
            decoder,
            total_in: 0,
            total_out: 0,
        }
    }

    fn limit(&self) -> u64 {
        (self.total_in * MAX_RATIO + FLOOR).min(MAX_DECODED)
    }

    /// Decodes `slice` (or finishes, when `None`); the bytes it yields. An empty stream is an
    /// empty body (a request with `Content-Encoding` and no body), not a truncated one.
    pub fn step(&mut self, slice: Option<&[u8]>) -> Result<Vec<u8>, Failure> {
        if slice.is_none() && self.total_in == 0 {
            return Ok(Vec::new());
        }
        self.total_in += slice.map_or(0, |s| s.len() as u64);
        let limit = self.limit();
        let room = limit.saturating_sub(self.total_out) as usize;
        let result = match slice {
            Some(s) => self.decoder.write(s, room),
            None => self.decoder.finish(room),
        };
        result.map_err(|cause| {
            if cause.get_ref().is_some_and(|e| e.is::<Full>()) {
                Failure::TooLarge { limit }
            } else {
                Failure::Corrupt(cause)
            }
        })?;
        let out = match self.decoder.sink() {
            Some(sink) => std::mem::take(&mut sink.buf),
            None => Vec::new(),
        };
        self.total_out += out.len() as u64;
        Ok(out)
    }
}

/// A zstd decoder whose frames may ask for a window of at most [`ZSTD_WINDOW_LOG`].
fn zstd_decoder() -> zstd::stream::write::Decoder<'static, Sink> {
    let mut d = zstd::stream::write::Decoder::new(Sink::default())
        .expect("a zstd decoding context can be made");
    d.window_log_max(ZSTD_WINDOW_LOG)
        .expect("the window bound is within zstd's range");
    d
}

/// A compressed body, decoded as it streams.
pub struct Inflated {
    inner: Body,
    coding: Coding,
    inflater: Inflater,
    pending: Bytes,
    ended: bool,
    done: bool,
}

impl Inflated {
    pub fn new(inner: Body, coding: Coding) -> Inflated {
        Inflated {
            inner,
            coding,
            inflater: Inflater::new(coding),
            pending: Bytes::new(),
            ended: false,
            done: false,
        }
    }

    /// Decodes `slice` (or finishes, when `None`); the bytes it yields.
    fn step(&mut self, slice: Option<&[u8]>) -> Result<Bytes, BoxError> {
        let coding = self.coding;
        match self.inflater.step(slice) {
            Ok(out) => Ok(Bytes::from(out)),
            Err(Failure::TooLarge { limit }) => {
                Err(Box::new(InflateError::TooLarge { coding, limit }))
            }
            Err(Failure::Corrupt(cause)) => Err(Box::new(InflateError::Corrupt { coding, cause })),
        }
    }
}

impl HttpBody for Inflated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if !this.pending.is_empty() {
                let slice = this.pending.split_to(this.pending.len().min(SLICE));
                match this.step(Some(&slice)) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.ended {
                this.done = true;
                return match this.step(None) {
                    Ok(out) if out.is_empty() => Poll::Ready(None),
                    Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(e) => Poll::Ready(Some(Err(e))),
                };
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.ended = true,
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.pending = data;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use http_body_util::BodyExt;
    use hyper::header::HeaderValue;

    fn headers(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for x in v {
            h.append(CONTENT_ENCODING, HeaderValue::from_str(x).unwrap());
        }
        h
    }

    #[test]
    fn codings_named() {
        assert_eq!(coding(&headers(&[])), Ok(None));
        assert_eq!(coding(&headers(&["identity"])), Ok(None));
        assert_eq!(coding(&headers(&["GZIP"])), Ok(Some(Coding::Gzip)));
        assert_eq!(coding(&headers(&["deflate"])), Ok(Some(Coding::Deflate)));
        assert_eq!(coding(&headers(&["br"])), Ok(Some(Coding::Brotli)));
        assert_eq!(coding(&headers(&["ZSTD"])), Ok(Some(Coding::Zstd)));
        assert_eq!(coding(&headers(&["gzip", "br"])), Err("gzip, br".into()));
        assert_eq!(coding(&headers(&["br, zstd"])), Err("br, zstd".into()));
        assert_eq!(coding(&headers(&["compress"])), Err("compress".into()));
    }

    fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
        use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
        match coding {
            "gzip" => {
                let mut e = GzEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "zlib" => {
                let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 5,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
                out
            }
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            _ => {
                let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    async fn decoded(coding: Coding, data: Vec<u8>, chunk: usize) -> Result<Vec<u8>, String> {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = data
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        Inflated::new(body.boxed_unsync(), coding)
            .collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn every_coding_decodes_at_any_chunking() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for (name, coding) in [
            ("gzip", Coding::Gzip),
            ("zlib", Coding::Deflate),
            ("raw", Coding::Deflate),
            ("br", Coding::Brotli),
            ("zstd", Coding::Zstd),
        ] {
            for chunk in [1, 7, 4096] {
                let got = decoded(coding, compress(name, &text), chunk).await;
                assert_eq!(got.as_deref(), Ok(&text[..]), "{name} by {chunk}");
            }
        }
    }

    #[tokio::test]
    async fn a_bomb_is_cut_and_corrupt_data_named() {
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let bomb = compress("gzip", &zeros);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let err = decoded(Coding::Gzip, bomb, 4096).await.unwrap_err();
        assert!(err.contains("decodes to more than"), "{err}");
        let err = decoded(Coding::Gzip, b"not gzip at all".to_vec(), 4)
            .await
            .unwrap_err();
        assert!(err.contains("not valid compressed data"), "{err}");
        let mut cut = compress("gzip", b"hello hello hello");
        cut.truncate(cut.len() - 4);
        assert!(decoded(Coding::Gzip, cut, 3).await.is_err());
        // No body at all is an empty one.
        assert_eq!(decoded(Coding::Gzip, Vec::new(), 3).await, Ok(Vec::new()));
    }

    #[tokio::test]
    async fn brotli_and_zstd_bombs_are_cut_and_corrupt_or_cut_streams_named() {
        let zeros = vec![0u8; 64 * 1024 * 1024];
        for (name, coding) in [("br", Coding::Brotli), ("zstd", Coding::Zstd)] {
            let bomb = compress(name, &zeros);
            assert!(bomb.len() < 100 * 1024, "{name}: {}", bomb.len());
            let err = decoded(coding, bomb, 4096).await.unwrap_err();
            assert!(err.contains("decodes to more than"), "{name}: {err}");
            let err = decoded(coding, b"not compressed at all".to_vec(), 4)
                .await
                .unwrap_err();
            assert!(err.contains("not valid compressed data"), "{name}: {err}");
            let mut cut = compress(name, &[7u8; 4000]);
            cut.truncate(cut.len() / 2);
            assert!(decoded(coding, cut, 3).await.is_err(), "{name} cut");
        }
    }

    #[tokio::test]
    async fn a_zstd_frame_asking_for_a_window_past_8_mib_is_refused() {
        // A frame whose window is 16 MiB: 32 MiB of data that repeats at a 9 MiB distance,
        // compressed with long-distance matching so the encoder asks for the window.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let block: Vec<u8> = (0..9 * 1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut data = block.clone();
        data.extend_from_slice(&block);
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.window_log(24).unwrap();
        e.long_distance_matching(true).unwrap();
        e.write_all(&data).unwrap();
        let frame = e.finish().unwrap();
        // The second copy was matched 9 MiB back: the frame needs its 16 MiB window.
        assert!(frame.len() < data.len() * 3 / 4, "{}", frame.len());
        let err = match decoded(Coding::Zstd, frame, 4096).await {
            Ok(v) => panic!("a frame with a 16 MiB window decoded ({} bytes)", v.len()),
            Err(e) => e,
        };
        assert!(err.contains("not valid compressed data"), "{err}");
        // The same frame within the window a sender may use decodes.
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.window_log(ZSTD_WINDOW_LOG).unwrap();
        e.write_all(&block[..4 * 1024 * 1024]).unwrap();
        let small = e.finish().unwrap();
        let got = decoded(Coding::Zstd, small, 4096).await.unwrap();
        assert!(
            got == block[..4 * 1024 * 1024],
            "the 8 MiB-window frame decoded wrong"
        );
    }
}
