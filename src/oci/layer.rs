//! Layer tars: the one layer [`super::write_image`] makes from host files, and the entry by
//! entry rewrite [`super::normalize`] applies to a saved layer so that only content remains.
//!
//! The rewrite works on raw 512-byte headers, so everything but time is kept byte for byte:
//! names (also GNU long-name entries and PAX `path`), uid/gid and their names, mode, type, link
//! names, device numbers, PAX records such as `SCHILY.xattr.*`, and the entry order. What goes:
//! the header mtime (set to 0), GNU atime/ctime fields (cleared), and the PAX `mtime`, `atime`,
//! `ctime` and `LIBARCHIVE.creationtime` records (a PAX header left empty is dropped). Contents
//! are streamed; a layer is never held in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufWriter, Read, Take, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::image::LayerFile;
use super::sha256::{Sha256Reader, Sha256Writer};

/// Tar block size.
const BLOCK: usize = 512;
/// PAX records that carry a time: dropped.
const TIME_RECORDS: &[&[u8]] = &[b"mtime", b"atime", b"ctime", b"LIBARCHIVE.creationtime"];
/// A PAX or GNU long-name entry larger than this is not a real one.
const MAX_EXTENSION: u64 = 1 << 20;
/// Write buffer for layer files.
const BUFFER: usize = 1 << 20;

/// A layer tar written to a temporary file, with its sha256 (its diff id) and size.
#[derive(Debug)]
pub(super) struct Blob {
    pub path: PathBuf,
    pub hex: String,
    pub size: u64,
}

impl Blob {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.hex)
    }
}

/// What goes into a layer made of files: a folder, or a host file.
enum Planned<'a> {
    Dir,
    File(&'a LayerFile),
}

/// Writes a layer tar of `files` (and their parent folders, mode 0755) into `dest`, in path
/// order, every header with mtime 0 and uid/gid 0.
pub(super) fn write_files(files: &[LayerFile], dest: &Path) -> Result<Blob> {
    let entries = plan(files)?;
    let mut tar = tar::Builder::new(Sha256Writer::new(BufWriter::with_capacity(
        BUFFER,
        create(dest)?,
    )));
    for (path, entry) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Planned::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, path, std::io::empty())?;
            }
            Planned::File(file) => {
                let (source, size) = open_source(file)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(file.mode & 0o7777);
                header.set_size(size);
                tar.append_data(&mut header, path, source)
                    .with_context(|| {
                        format!("cannot copy {} into the layer", file.source.display())
                    })?;
            }
        }
    }
    finish(tar.into_inner()?, dest)
}

/// The layer's entries by path: each file, and each folder a file is in.
fn plan(files: &[LayerFile]) -> Result<BTreeMap<String, Planned<'_>>> {
    let mut entries = BTreeMap::new();
    for file in files {
        let p = &file.path;
        if p.is_empty()
            || p.starts_with('/')
            || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!(
                "image path {p:?} (for {}) must be relative, without empty, `.` or `..` parts; write it like \"bottle\" or \"usr/bin/tool\"",
                file.source.display()
            );
        }
        if entries.insert(p.clone(), Planned::File(file)).is_some() {
            bail!("image path {p:?} is given twice; give each path once");
        }
    }
    for file in files {
        let mut dir = file.path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if let Some(Planned::File(other)) = entries.get(parent) {
                bail!(
                    "image path {parent:?} (for {}) is a file, but {:?} is inside it",
                    other.source.display(),
                    file.path
                );
            }
            entries.insert(parent.to_string(), Planned::Dir);
            dir = parent;
        }
    }
    Ok(entries)
}

/// A host file opened for the layer, and its size; reading it yields exactly that many bytes.
fn open_source(file: &LayerFile) -> Result<(Exact<File>, u64)> {
    let what = || {
        format!(
            "cannot read {} (for the image's {:?}); check that it exists and is a readable file",
            file.source.display(),
            file.path
        )
    };
    let f = File::open(&file.source).with_context(what)?;
    let meta = f.metadata().with_context(what)?;
    if !meta.is_file() {
        return Err(anyhow!("it is not a regular file")).with_context(what);
    }
    Ok((
        Exact {
            inner: f.take(meta.len()),
        },
        meta.len(),
    ))
}

/// A reader of exactly `limit` bytes: ending early (a file shrinking while read) is an error.
struct Exact<R> {
    inner: Take<R>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.inner.limit() > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was being read",
            ));
        }
        Ok(n)
    }
}

/// Rewrites the layer tar read from `src` into `dest` (see the module doc). Returns the new
/// layer, and `sha256:<hex>` of the layer as read (decompressed), to check against the config.
pub(super) fn normalize(mut src: impl BufRead, dest: &Path) -> Result<(Blob, String)> {
    let magic = src.fill_buf().context("cannot read the layer")?;
    let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(src))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        bail!(
            "the layer is zstd-compressed, which bottle cannot read; save the image from an engine that stores it uncompressed or gzip-compressed"
        );
    } else {
        Box::new(src)
    };
    let mut input = Sha256Reader::new(decoded);
    let mut out = Sha256Writer::new(BufWriter::with_capacity(BUFFER, create(dest)?));
    rewrite(&mut input, &mut out)?;
    let read = input.finish().context("cannot read the layer")?;
    Ok((finish(out, dest)?, format!("sha256:{read}")))
}

/// Copies the tar stream `src` into `out` entry by entry, times removed; ends it with the two
/// zero blocks of a tar's end.
fn rewrite(src: &mut impl Read, out: &mut impl Write) -> Result<()> {
    let mut header = [0u8; BLOCK];
    let mut pax_size = None;
    let mut index = 0u64;
    while read_block(src, &mut header)? {
        if header.iter().all(|&b| b == 0) {
            if read_block(src, &mut header)? && header.iter().any(|&b| b != 0) {
                bail!("the layer has an entry after a zero block; it is not a well-formed tar");
            }
            break;
        }
        index += 1;
        rewrite_entry(src, out, &mut header, &mut pax_size).with_context(|| {
            let name = header[..100].split(|&b| b == 0).next().unwrap_or_default();
            format!("layer entry {index} ({:?})", String::from_utf8_lossy(name))
        })?;
    }
    out.write_all(&[0; 2 * BLOCK])?;
    Ok(())
}

/// One entry: its header (already read into `header`) and its data.
fn rewrite_entry(
    src: &mut impl Read,
    out: &mut impl Write,
    header: &mut [u8; BLOCK],
    pax_size: &mut Option<u64>,
) -> Result<()> {
    check_checksum(header)?;
    let size = numeric(&header[124..136]).context("bad size field")?;
    match header[156] {
        kind @ (b'x' | b'g') => {
            let kept = without_times(&read_extension(src, size)?)?;
            if kind == b'x' {
                *pax_size = pax_record(&kept, b"size")
                    .map(|v| {
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok())
                            .ok_or_else(|| anyhow!("bad PAX size record"))
                    })
                    .transpose()?;
            }
            if !kept.is_empty() {
                header[124..136].copy_from_slice(format!("{:011o}\0", kept.len()).as_bytes());
                write_data(out, header, &kept)?;
            }
        }
        b'L' | b'K' => {
            let data = read_extension(src, size)?;
            write_data(out, header, &data)?;
        }
        b'S' => bail!(
            "GNU sparse files are not supported; rebuild the image so the file is stored whole"
        ),
        _ => {
            let size = pax_size.take().unwrap_or(size);
            write_header(out, header)?;
            let copied = std::io::copy(&mut src.take(size), out)?;
            if copied != size {
                bail!("the layer ends inside this entry's data; it is truncated");
            }
            out.write_all(&[0; BLOCK][..padding(size)])?;
            skip_padding(src, size)?;
        }
    }
    Ok(())
}

/// The data of an extension entry (PAX or GNU long name), and its padding consumed.
fn read_extension(src: &mut impl Read, size: u64) -> Result<Vec<u8>> {
    if size > MAX_EXTENSION {
        bail!("an extension header of {size} bytes is not plausible");
    }
    let mut data = vec![0; size as usize];
    src.read_exact(&mut data)
        .context("the layer ends inside an extension header")?;
    skip_padding(src, size)?;
    Ok(data)
}

/// Writes `header` (normalized) and `data`, padded to a block.
fn write_data(out: &mut impl Write, header: &mut [u8; BLOCK], data: &[u8]) -> Result<()> {
    write_header(out, header)?;
    out.write_all(data)?;
    out.write_all(&[0; BLOCK][..padding(data.len() as u64)])?;
    Ok(())
}

/// Writes `header` with mtime 0, GNU atime/ctime cleared, and its checksum recomputed.
fn write_header(out: &mut impl Write, header: &mut [u8; BLOCK]) -> Result<()> {
    header[136..148].copy_from_slice(b"00000000000\0");
    if &header[257..265] == b"ustar  \0" {
        header[345..369].fill(0);
    }
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    // Written as the tar crate writes it, so a layer from `write_files` is already normal.
    header[148..156].copy_from_slice(format!("{sum:07o}\0").as_bytes());
    out.write_all(header)?;
    Ok(())
}

/// The header's checksum is right (unsigned, or the signed sum old tars wrote).
fn check_checksum(header: &[u8; BLOCK]) -> Result<()> {
    let stored = numeric(&header[148..156])?;
    let spaces = 8 * u64::from(b' ');
    let outside = header[..148].iter().chain(&header[156..]);
    let unsigned: u64 = outside.clone().map(|&b| u64::from(b)).sum::<u64>() + spaces;
    let signed: i64 = outside.map(|&b| i64::from(b as i8)).sum::<i64>() + spaces as i64;
    if stored != unsigned && Some(stored) != u64::try_from(signed).ok() {
        bail!("header checksum mismatch: the layer is not a tar archive, or it is damaged");
    }
    Ok(())
}

/// A numeric header field: octal text, or GNU base-256 when the high bit is set.
fn numeric(field: &[u8]) -> Result<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            bail!("negative number in a header field");
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| anyhow!("number too large in a header field"))?;
        }
        return Ok(value);
    }
    let text = std::str::from_utf8(field).map_err(|_| anyhow!("bad number in a header field"))?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| anyhow!("bad number {text:?} in a header field"))
}

/// PAX records (`LEN KEY=VALUE\n`) without the ones that carry a time.
fn without_times(data: &[u8]) -> Result<Vec<u8>> {
    let mut kept = Vec::with_capacity(data.len());
    for record in pax_records(data)? {
        let key = record.key;
        if !TIME_RECORDS.contains(&key) {
            kept.extend_from_slice(record.raw);
        }
    }
    Ok(kept)
}

/// The value of PAX record `key` in `data` (already checked well-formed).
fn pax_record<'a>(data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    pax_records(data)
        .ok()?
        .into_iter()
        .rev()
        .find(|r| r.key == key)
        .map(|r| r.value)
}

struct PaxRecord<'a> {
    raw: &'a [u8],
    key: &'a [u8],
    value: &'a [u8],
}

fn pax_records(data: &[u8]) -> Result<Vec<PaxRecord<'_>>> {
    let bad = || anyhow!("malformed PAX header record");
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let body = &rest[space + 1..len - 1];
        let eq = body.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        records.push(PaxRecord {
            raw: &rest[..len],
            key: &body[..eq],
            value: &body[eq + 1..],
        });
        rest = &rest[len..];
    }
    Ok(records)
}

/// Reads one block; false at a clean end of the stream.
fn read_block(src: &mut impl Read, block: &mut [u8; BLOCK]) -> Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match src.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => bail!("the layer ends inside a tar header; it is truncated"),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read the layer"),
        }
    }
    Ok(true)
}

/// Bytes of zero padding after `size` bytes of data.
fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

fn skip_padding(src: &mut impl Read, size: u64) -> Result<()> {
    let mut pad = [0u8; BLOCK];
    src.read_exact(&mut pad[..padding(size)])
        .context("the layer ends inside an entry's padding; it is truncated")
}

fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Flushes a written layer and names it by its digest.
fn finish(out: Sha256Writer<BufWriter<File>>, dest: &Path) -> Result<Blob> {
    let (hex, size, mut writer) = out.finish();
    writer
        .flush()
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(Blob {
        path: dest.to_path_buf(),
        hex,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with a PAX header holding a time and an xattr, then a file, written by `tar`.
    fn pax_tar(mtime: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let records = format!(
            "{}{}",
            record("mtime", mtime),
            record("SCHILY.xattr.user.k", "v")
        );
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_path("PaxHeaders/f").unwrap();
        pax.set_size(records.len() as u64);
        pax.set_mtime(1_700_000_000);
        pax.set_cksum();
        out.extend_from_slice(pax.as_bytes());
        out.extend_from_slice(records.as_bytes());
        out.resize(out.len() + padding(records.len() as u64), 0);
        let mut file = tar::Header::new_ustar();
        file.set_path("f").unwrap();
        file.set_size(body.len() as u64);
        file.set_mode(0o4755);
        file.set_uid(1000);
        file.set_mtime(1_700_000_123);
        file.set_cksum();
        out.extend_from_slice(file.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + padding(body.len() as u64) + 2 * BLOCK, 0);
        out
    }

    fn record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len();
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        format!("{len}{body}")
    }

    fn rewritten(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        rewrite(&mut &input[..], &mut out).unwrap();
        out
    }

    #[test]
    fn rewrite_drops_times_and_keeps_the_rest() {
        let a = rewritten(&pax_tar("1700000000.5", b"hello"));
        let b = rewritten(&pax_tar("1800000000.25", b"hello"));
        assert_eq!(a, b, "only times differ, so the rewrites are equal");
        let mut tar = tar::Archive::new(&a[..]);
        let mut entries = tar.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.header().mtime().unwrap(), 0);
        assert_eq!(entry.header().uid().unwrap(), 1000);
        assert_eq!(entry.header().mode().unwrap(), 0o4755);
        let pax: Vec<_> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| r.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(pax, ["SCHILY.xattr.user.k"]);
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        assert_eq!(body, "hello");
        assert_ne!(a, rewritten(&pax_tar("1", b"hellO")));
    }

    #[test]
    fn rewrite_rejects_damaged_tars() {
        let mut bad = pax_tar("1", b"x");
        bad[0] ^= 1;
        assert!(rewrite(&mut &bad[..], &mut Vec::new()).is_err());
        let good = pax_tar("1", b"x");
        let cut = &good[..BLOCK * 3 + 10];
        assert!(rewrite(&mut &cut[..], &mut Vec::new()).is_err());
    }

    #[test]
    fn numbers_parse_as_octal_or_base_256() {
        assert_eq!(numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(numeric(b"   \0").unwrap(), 0);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 7;
        big[10] = 1;
        assert_eq!(numeric(&big).unwrap(), 256 + 7);
        assert!(numeric(b"89\0").is_err());
    }

    #[test]
    fn layer_paths_are_checked() {
        for bad in ["", "/abs", "a//b", "a/../b", "./a"] {
            let f = LayerFile {
                path: bad.into(),
                source: "/bin/sh".into(),
                mode: 0o755,
            };
            assert!(plan(&[f]).is_err(), "{bad:?} accepted");
        }
        let f = |p: &str| LayerFile {
            path: p.into(),
            source: "/bin/sh".into(),
            mode: 0o755,
        };
        assert!(plan(&[f("a"), f("a/b")]).is_err());
        assert!(plan(&[f("a"), f("a")]).is_err());
        let files = [f("usr/bin/x"), f("bottle")];
        let entries = plan(&files).unwrap();
        let paths: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(paths, ["bottle", "usr", "usr/bin", "usr/bin/x"]);
    }
}
