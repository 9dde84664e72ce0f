//! git's pkt-line framing (`gitprotocol-common(5)`): four hex digits giving the line's length
//! including themselves, then the data; `0000` is a flush. Also side-band framing (band 1 data,
//! 2 progress, 3 error) and the ref advertisement's lines.
//!
//! This module owns parsing pkt-lines from a buffer (a push request, held whole) and from an
//! async reader (an upstream's advertisement over SSH), and writing them.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::pack::Oid;

/// The longest pkt-line git sends or accepts: 65520 bytes with its length.
pub const MAX_PKT: usize = 65520;
/// The most data one side-band-64k packet holds (its length and band byte aside).
pub const MAX_BAND_DATA: usize = MAX_PKT - 5;

/// One pkt-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt<'a> {
    Flush,
    /// `0001` and `0002` (protocol v2's delimiter and response end).
    Special(u8),
    Data(&'a [u8]),
}

/// Why bytes are not pkt-lines.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PktError {
    #[error("malformed pkt-line at byte {at}: length {text:?} is not four hex digits")]
    Length { at: usize, text: String },
    #[error("malformed pkt-line at byte {at}: length {len} is out of range (4..=65520)")]
    Range { at: usize, len: usize },
    #[error("truncated pkt-line at byte {at}: {wanted} bytes announced, {left} left")]
    Truncated {
        at: usize,
        wanted: usize,
        left: usize,
    },
}

fn length(head: &[u8], at: usize) -> Result<usize, PktError> {
    let text = std::str::from_utf8(head)
        .ok()
        .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(text) = text else {
        return Err(PktError::Length {
            at,
            text: String::from_utf8_lossy(head).into_owned(),
        });
    };
    Ok(usize::from_str_radix(text, 16).expect("four hex digits"))
}

/// Reads the pkt-line at `*pos` of `buf` and moves `*pos` past it.
pub fn parse<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Pkt<'a>, PktError> {
    let at = *pos;
    let left = buf.len().saturating_sub(at);
    if left < 4 {
        return Err(PktError::Truncated {
            at,
            wanted: 4,
            left,
        });
    }
    let len = length(&buf[at..at + 4], at)?;
    match len {
        0 => {
            *pos += 4;
            Ok(Pkt::Flush)
        }
        1 | 2 => {
            *pos += 4;
            Ok(Pkt::Special(len as u8))
        }
        3 => Err(PktError::Range { at, len }),
        l if l > MAX_PKT => Err(PktError::Range { at, len }),
        l if l > left => Err(PktError::Truncated {
            at,
            wanted: l,
            left,
        }),
        l => {
            *pos += l;
            Ok(Pkt::Data(&buf[at + 4..at + l]))
        }
    }
}

/// Reads one pkt-line from `r`: `None` for a flush, else its data. An early EOF is an error.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let len = length(&head, 0).map_err(invalid)?;
    match len {
        0 => Ok(None),
        1..=3 => Err(invalid(PktError::Range { at: 0, len })),
        l if l > MAX_PKT => Err(invalid(PktError::Range { at: 0, len })),
        l => {
            let mut data = vec![0u8; l - 4];
            r.read_exact(&mut data).await?;
            Ok(Some(data))
        }
    }
}

fn invalid(e: PktError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Appends one pkt-line holding `data` (at most [`MAX_PKT`] - 4 bytes).
pub fn put(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() + 4 <= MAX_PKT);
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Appends `data` as side-band packets of `band` (1 data, 2 progress, 3 fatal error).
pub fn put_band(out: &mut Vec<u8>, band: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_BAND_DATA) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
        out.push(band);
        out.extend_from_slice(chunk);
    }
}

/// One ref of an advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedRef {
    pub oid: Oid,
    pub name: String,
}

/// A v0 ref advertisement: its refs (the `capabilities^{}` placeholder of an empty repository
/// left out) and the capabilities of its first line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advertisement {
    pub refs: Vec<AdvertisedRef>,
    pub caps: Vec<String>,
}

impl Advertisement {
    /// Parses the data of an advertisement's pkt-lines (up to its flush).
    pub fn parse(lines: &[Vec<u8>]) -> Result<Advertisement, String> {
        let mut adv = Advertisement::default();
        for (i, line) in lines.iter().enumerate() {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let (refpart, caps) = match line.iter().position(|&b| b == 0) {
                Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
                None => (line, None),
            };
            if let Some(caps) = caps {
                if i != 0 {
                    return Err("capabilities after the first ref line".into());
                }
                adv.caps = String::from_utf8_lossy(caps)
                    .split(' ')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            let text = std::str::from_utf8(refpart).map_err(|_| "a ref line is not UTF-8")?;
            if i == 0 && text.starts_with("version ") {
                return Err(format!("protocol {text:?} is not supported (v0 only)"));
            }
            let (oid, name) = text
                .split_once(' ')
                .ok_or_else(|| format!("ref line {text:?} has no name"))?;
            let oid = Oid::parse_hex(oid).ok_or_else(|| format!("ref line {text:?}: bad id"))?;
            if name == "capabilities^{}" {
                continue;
            }
            adv.refs.push(AdvertisedRef {
                oid,
                name: name.to_string(),
            });
        }
        Ok(adv)
    }

    /// The advertisement as pkt-lines (refs in order, `caps` on the first line), then a flush.
    pub fn render(&self, caps: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        let caps = caps.join(" ");
        if self.refs.is_empty() {
            put(
                &mut out,
                format!("{} capabilities^{{}}\0{caps}\n", Oid::ZERO).as_bytes(),
            );
        }
        for (i, r) in self.refs.iter().enumerate() {
            let line = if i == 0 {
                format!("{} {}\0{caps}\n", r.oid, r.name)
            } else {
                format!("{} {}\n", r.oid, r.name)
            };
            put(&mut out, line.as_bytes());
        }
        flush(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_flushes_and_errors() {
        let buf = b"0009hello0000000bworld!";
        let mut pos = 0;
        assert_eq!(parse(buf, &mut pos), Ok(Pkt::Data(b"hello")));
        assert_eq!(parse(buf, &mut pos), Ok(Pkt::Flush));
        assert!(matches!(
            parse(buf, &mut pos),
            Err(PktError::Truncated { wanted: 11, .. })
        ));
        assert!(matches!(
            parse(b"zz01", &mut 0),
            Err(PktError::Length { .. })
        ));
        assert!(matches!(
            parse(b"0003", &mut 0),
            Err(PktError::Range { .. })
        ));
        assert!(matches!(
            parse(b"fff1", &mut 0),
            Err(PktError::Range { .. })
        ));
        assert!(matches!(
            parse(b"00", &mut 0),
            Err(PktError::Truncated { .. })
        ));
    }

    #[test]
    fn bands_split_at_the_packet_limit() {
        let mut out = Vec::new();
        put_band(&mut out, 2, &vec![b'x'; MAX_BAND_DATA + 1]);
        let mut pos = 0;
        let Ok(Pkt::Data(first)) = parse(&out, &mut pos) else {
            panic!()
        };
        assert_eq!((first[0], first.len()), (2, MAX_BAND_DATA + 1));
        assert_eq!(parse(&out, &mut pos), Ok(Pkt::Data(&b"\x02x"[..])));
    }

    #[test]
    fn advertisements_round_trip() {
        let a = Oid::parse_hex(&"a".repeat(40)).unwrap();
        let lines = vec![
            format!("{a} refs/heads/main\0report-status ofs-delta\n").into_bytes(),
            format!("{a} refs/tags/v1\n").into_bytes(),
        ];
        let adv = Advertisement::parse(&lines).unwrap();
        assert_eq!(adv.caps, ["report-status", "ofs-delta"]);
        assert_eq!(adv.refs.len(), 2);
        let out = adv.render(&["x".to_string()]);
        assert!(out.starts_with(format!("003f{a} refs/heads/main\0x\n").as_bytes()));
        let empty =
            Advertisement::parse(&[
                format!("{} capabilities^{{}}\0report-status\n", Oid::ZERO).into_bytes()
            ])
            .unwrap();
        assert!(empty.refs.is_empty());
        assert!(empty.render(&[]).ends_with(b"0000"));
    }
}
