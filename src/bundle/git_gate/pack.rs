//! A pushed pack, read far enough to answer one question: does a ref's new commit descend from
//! its old one *within the pack*? (`gitformat-pack(5)`.)
//!
//! [`Pack::parse`] checks the header and the trailing SHA-1, walks every object (inflating it
//! with `flate2` to find where the next begins, and hashing the whole ones), resolves
//! `ofs-delta` and `ref-delta` objects within the pack, and keeps the commits (their ids and
//! parents). [`Pack::descends`] walks parents from a new commit: reaching the old one is a
//! fast-forward; running out of the pack first is *not proven*, which git-gate refuses as a
//! force push. That is conservative: a push whose new commit already exists upstream (a branch
//! moved onto a commit the pack does not carry) is refused though it might be a fast-forward.
//!
//! Commits are read as git reads them: `tree` first, the parents the `parent` lines right after
//! it and only those; a commit whose header git would not read as written (a `parent` line
//! after `committer`, a second `author`…) proves no fast-forward ([`Ancestry::Disordered`]).
//!
//! Every failure is a [`PackError`] naming what is wrong and where; nothing here panics on
//! input. Work is bounded: objects inflate to at most [`MAX_INFLATE_RATIO`] times the pack
//! plus 64 MiB in all (a delta's declared result is held to what is left of that before it is
//! allocated), commits are at most [`MAX_COMMIT`] bytes, delta chains at most [`MAX_CHAIN`]
//! long.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};

pub use super::delta::apply_delta;

/// A SHA-1 object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(pub [u8; 20]);

impl Oid {
    pub const ZERO: Oid = Oid([0; 20]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 20]
    }

    /// Forty hex digits (either case), or `None`.
    pub fn parse_hex(text: &str) -> Option<Oid> {
        let b = text.as_bytes();
        if b.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in b.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Oid(out))
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The most bytes all objects of a pack may inflate to, per byte of pack (plus 64 MiB).
pub const MAX_INFLATE_RATIO: u64 = 32;
/// The largest commit object read.
pub const MAX_COMMIT: u64 = 16 << 20;
/// The longest delta chain followed.
pub const MAX_CHAIN: usize = 10_000;

/// Why a pack cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("the pack is {0} bytes, too short for a header and a checksum")]
    Short(usize),
    #[error("the data does not start with \"PACK\"")]
    Signature,
    #[error("pack version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("the pack's SHA-1 checksum does not match its content (corrupted or truncated)")]
    Checksum,
    #[error("object {index} at byte {offset}: {what}")]
    Object {
        index: usize,
        offset: usize,
        what: String,
    },
    #[error("{extra} bytes follow the pack's {count} objects")]
    Trailing { count: u32, extra: usize },
    #[error("the pack inflates to more than {0} bytes")]
    Inflate(u64),
    #[error(
        "delta object at byte {offset}: its base {base} is not in the pack (git-gate asks for self-contained packs: no-thin)"
    )]
    MissingBase { offset: usize, base: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stored {
    Whole(Kind),
    /// An `ofs-delta`: its base's entry index.
    Ofs(usize),
    /// A `ref-delta`: its base's id.
    Ref(Oid),
}

#[derive(Debug, Clone)]
struct Entry {
    offset: usize,
    stored: Stored,
    /// Where its zlib stream starts.
    data: usize,
    /// Its inflated size, as the header says.
    size: u64,
}

/// A commit of the pack: its parents, as git reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub parents: Vec<Oid>,
    /// How its header breaks git's order (a `parent` line after `committer`, a second
    /// `author`…), if it does: such a commit proves no fast-forward.
    pub disorder: Option<String>,
}

/// A parsed pack: the commits it carries, by id.
#[derive(Debug, Default)]
pub struct Pack {
    pub commits: HashMap<Oid, Commit>,
    pub objects: usize,
}

/// What [`Pack::descends`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// `old` is `new` or one of its ancestors within the pack.
    FastForward,
    /// `new` is not in the pack.
    NewNotInPack,
    /// The walk left the pack without meeting `old`.
    NotProven,
    /// The walk met a commit whose header git would not read as written.
    Disordered(Oid),
}

impl Pack {
    /// Reads a whole pack (header, objects, SHA-1 trailer).
    pub fn parse(data: &[u8]) -> Result<Pack, PackError> {
        Reader::new(data)?.read()
    }

    /// Walks parents from `new`, within the pack, looking for `old`; a commit with its header
    /// out of order ends the walk.
    pub fn descends(&self, new: Oid, old: Oid) -> Ancestry {
        if new == old {
            return Ancestry::FastForward;
        }
        if !self.commits.contains_key(&new) {
            return Ancestry::NewNotInPack;
        }
        let mut seen = HashSet::from([new]);
        let mut queue = VecDeque::from([new]);
        while let Some(c) = queue.pop_front() {
            let commit = &self.commits[&c];
            if commit.disorder.is_some() {
                return Ancestry::Disordered(c);
            }
            for p in &commit.parents {
                if *p == old {
                    return Ancestry::FastForward;
                }
                if self.commits.contains_key(p) && seen.insert(*p) {
                    queue.push_back(*p);
                }
            }
        }
        Ancestry::NotProven
    }
}

struct Reader<'a> {
    data: &'a [u8],
    /// The objects' bytes: the data without its trailer.
    end: usize,
    count: u32,
    entries: Vec<Entry>,
    by_offset: HashMap<usize, usize>,
    /// Ids of the objects whose id is known, with their entry index.
    by_id: HashMap<Oid, usize>,
    /// Per entry once resolved: its kind and, for deltas, its base's index.
    resolved: Vec<Option<(Kind, Option<usize>)>>,
    inflated: u64,
    budget: u64,
    pack: Pack,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Result<Reader<'a>, PackError> {
        if data.len() < 32 {
            return Err(PackError::Short(data.len()));
        }
        if &data[..4] != b"PACK" {
            return Err(PackError::Signature);
        }
        let version = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
        if version != 2 && version != 3 {
            return Err(PackError::Version(version));
        }
        let end = data.len() - 20;
        let sum = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &data[..end]);
        if sum.as_ref() != &data[end..] {
            return Err(PackError::Checksum);
        }
        Ok(Reader {
            data,
            end,
            count: u32::from_be_bytes(data[8..12].try_into().expect("4 bytes")),
            entries: Vec::new(),
            by_offset: HashMap::new(),
            by_id: HashMap::new(),
            resolved: Vec::new(),
            inflated: 0,
            budget: MAX_INFLATE_RATIO * data.len() as u64 + (64 << 20),
            pack: Pack::default(),
        })
    }

    fn read(mut self) -> Result<Pack, PackError> {
        let mut pos = 12;
        for index in 0..self.count as usize {
            if pos >= self.end {
                return Err(self.err(index, pos, "the pack ends before its objects do"));
            }
            pos = self.entry(index, pos)?;
        }
        if pos != self.end {
            return Err(PackError::Trailing {
                count: self.count,
                extra: self.end - pos,
            });
        }
        self.resolve_deltas()?;
        self.pack.objects = self.entries.len();
        Ok(self.pack)
    }

    fn err(&self, index: usize, offset: usize, what: impl Into<String>) -> PackError {
        PackError::Object {
            index,
            offset,
            what: what.into(),
        }
    }

    /// Reads the object at `offset`; returns where the next one starts.
    fn entry(&mut self, index: usize, offset: usize) -> Result<usize, PackError> {
        let data: &'a [u8] = self.data;
        let d = &data[..self.end];
        let mut pos = offset;
        let byte = |pos: &mut usize| -> Option<u8> {
            let b = d.get(*pos).copied();
            *pos += 1;
            b
        };
        let truncated = |s: &Self| s.err(index, offset, "its header is truncated");
        let mut c = byte(&mut pos).ok_or_else(|| truncated(self))?;
        let type_id = (c >> 4) & 7;
        let mut size = u64::from(c & 15);
        let mut shift = 4;
        while c & 0x80 != 0 {
            c = byte(&mut pos).ok_or_else(|| truncated(self))?;
            if shift > 57 {
                return Err(self.err(index, offset, "its size does not fit 64 bits"));
            }
            size |= u64::from(c & 0x7f) << shift;
            shift += 7;
        }
        let stored = match type_id {
            1 => Stored::Whole(Kind::Commit),
            2 => Stored::Whole(Kind::Tree),
            3 => Stored::Whole(Kind::Blob),
            4 => Stored::Whole(Kind::Tag),
            6 => {
                let mut c = byte(&mut pos).ok_or_else(|| truncated(self))?;
                let mut back = u64::from(c & 0x7f);
                while c & 0x80 != 0 {
                    c = byte(&mut pos).ok_or_else(|| truncated(self))?;
                    back = (back + 1)
                        .checked_mul(128)
                        .ok_or_else(|| self.err(index, offset, "its base offset overflows"))?
                        | u64::from(c & 0x7f);
                }
                let base = (offset as u64)
                    .checked_sub(back)
                    .filter(|b| back > 0 && *b >= 12)
                    .and_then(|b| self.by_offset.get(&(b as usize)).copied())
                    .ok_or_else(|| {
                        self.err(
                            index,
                            offset,
                            format!("no object starts {back} bytes before it"),
                        )
                    })?;
                Stored::Ofs(base)
            }
            7 => {
                let id = d
                    .get(pos..pos + 20)
                    .ok_or_else(|| truncated(self))?
                    .try_into()
                    .expect("20 bytes");
                pos += 20;
                Stored::Ref(Oid(id))
            }
            t => return Err(self.err(index, offset, format!("type {t} is not an object type"))),
        };
        let keep = matches!(stored, Stored::Whole(Kind::Commit));
        if keep && size > MAX_COMMIT {
            return Err(self.err(index, offset, format!("a commit of {size} bytes")));
        }
        let mut hasher = match stored {
            Stored::Whole(kind) => {
                let mut h = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
                h.update(format!("{} {size}\0", kind.name()).as_bytes());
                Some(h)
            }
            _ => None,
        };
        let mut kept = Vec::new();
        let used = self
            .inflate(pos, size, |chunk| {
                if let Some(h) = hasher.as_mut() {
                    h.update(chunk);
                }
                if keep {
                    kept.extend_from_slice(chunk);
                }
            })
            .map_err(|what| self.err(index, offset, what))?;
        self.by_offset.insert(offset, index);
        self.entries.push(Entry {
            offset,
            stored,
            data: pos,
            size,
        });
        self.resolved.push(None);
        if let (Some(h), Stored::Whole(kind)) = (hasher, stored) {
            let id = Oid(h.finish().as_ref().try_into().expect("20 bytes"));
            self.by_id.insert(id, index);
            self.resolved[index] = Some((kind, None));
            if kind == Kind::Commit {
                self.add_commit(id, &kept, index, offset)?;
            }
        }
        Ok(pos + used)
    }

    /// Inflates the zlib stream at `from`, which must give exactly `size` bytes, handing them
    /// to `sink` in chunks; returns the stream's compressed length.
    fn inflate(
        &mut self,
        from: usize,
        size: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, String> {
        let data: &'a [u8] = self.data;
        let input = &data[from..self.end];
        let mut z = Decompress::new(true);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (before_in, before_out) = (z.total_in(), z.total_out());
            let status = z
                .decompress(
                    &input[before_in as usize..],
                    &mut buf,
                    FlushDecompress::None,
                )
                .map_err(|e| format!("its zlib data is corrupt: {e}"))?;
            let produced = (z.total_out() - before_out) as usize;
            self.inflated += produced as u64;
            if self.inflated > self.budget {
                return Err(PackError::Inflate(self.budget).to_string());
            }
            if z.total_out() > size {
                return Err(format!("it inflates past its declared size {size}"));
            }
            sink(&buf[..produced]);
            match status {
                Status::StreamEnd => break,
                _ if z.total_in() == before_in && produced == 0 => {
                    return Err("its zlib data is truncated".into());
                }
                _ => {}
            }
        }
        if z.total_out() != size {
            return Err(format!(
                "it inflates to {} bytes, not its declared {size}",
                z.total_out()
            ));
        }
        Ok(z.total_in() as usize)
    }

    /// The inflated bytes of entry `index` as stored (a delta's instructions for a delta).
    fn stored_bytes(&mut self, index: usize) -> Result<Vec<u8>, PackError> {
        let (from, size, offset) = {
            let e = &self.entries[index];
            (e.data, e.size, e.offset)
        };
        if size > self.budget.saturating_sub(self.inflated) {
            return Err(PackError::Inflate(self.budget));
        }
        let mut out = Vec::with_capacity(size as usize);
        self.inflate(from, size, |c| out.extend_from_slice(c))
            .map_err(|what| self.err(index, offset, what))?;
        Ok(out)
    }

    fn add_commit(
        &mut self,
        id: Oid,
        body: &[u8],
        index: usize,
        offset: usize,
    ) -> Result<(), PackError> {
        let commit = parse_commit(body).map_err(|what| self.err(index, offset, what))?;
        self.pack.commits.insert(id, commit);
        Ok(())
    }

    /// Resolves deltas until none is left: a delta whose base is known gets the base's kind;
    /// commits (and, when the pack has `ref-delta`s, every object) get their content and id.
    fn resolve_deltas(&mut self) -> Result<(), PackError> {
        let need_all_ids = self
            .entries
            .iter()
            .any(|e| matches!(e.stored, Stored::Ref(_)));
        loop {
            let mut progress = false;
            let mut left = None;
            for index in 0..self.entries.len() {
                if self.resolved[index].is_some() {
                    continue;
                }
                let base = match self.entries[index].stored {
                    Stored::Ofs(b) => Some(b),
                    Stored::Ref(id) => self.by_id.get(&id).copied(),
                    Stored::Whole(_) => unreachable!("whole objects are resolved when read"),
                };
                let Some((kind, _)) = base.and_then(|b| self.resolved[b]) else {
                    left.get_or_insert(index);
                    continue;
                };
                self.resolved[index] = Some((kind, base));
                progress = true;
                if kind == Kind::Commit || need_all_ids {
                    let body = self.content(index)?;
                    let id = object_id(kind, &body);
                    self.by_id.insert(id, index);
                    if kind == Kind::Commit {
                        let offset = self.entries[index].offset;
                        self.add_commit(id, &body, index, offset)?;
                    }
                }
            }
            match (left, progress) {
                (None, _) => return Ok(()),
                (Some(_), true) => continue,
                (Some(index), false) => {
                    let e = &self.entries[index];
                    let base = match e.stored {
                        Stored::Ref(id) => id.to_string(),
                        _ => "an unresolved object".to_string(),
                    };
                    return Err(PackError::MissingBase {
                        offset: e.offset,
                        base,
                    });
                }
            }
        }
    }

    /// The content of a resolved entry: its base chain's root inflated, each delta applied.
    fn content(&mut self, index: usize) -> Result<Vec<u8>, PackError> {
        let mut chain = vec![index];
        let mut cur = index;
        while let Some((_, Some(base))) = self.resolved[cur] {
            if chain.len() > MAX_CHAIN {
                let offset = self.entries[index].offset;
                return Err(self.err(index, offset, "its delta chain is too long"));
            }
            chain.push(base);
            cur = base;
        }
        let root = chain.pop().expect("the entry itself");
        let mut body = self.stored_bytes(root)?;
        while let Some(i) = chain.pop() {
            let delta = self.stored_bytes(i)?;
            let offset = self.entries[i].offset;
            let left = self.budget.saturating_sub(self.inflated);
            body = apply_delta(&body, &delta, left).map_err(|what| self.err(i, offset, what))?;
            self.inflated += body.len() as u64;
            if self.inflated > self.budget {
                return Err(PackError::Inflate(self.budget));
            }
        }
        Ok(body)
    }
}

fn object_id(kind: Kind, body: &[u8]) -> Oid {
    let mut h = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    h.update(format!("{} {}\0", kind.name(), body.len()).as_bytes());
    h.update(body);
    Oid(h.finish().as_ref().try_into().expect("20 bytes"))
}

/// A commit's parents as git reads them (`parse_commit_buffer`): the first header line is
/// `tree ID`, and the parents are the `parent ID` lines right after it, and only those. A
/// malformed `tree` or `parent` line there is an error, as it is to git. The rest of the
/// header is held to the order `git fsck` checks (`author`, then `committer`, right after the
/// parents) and no `tree`, `parent`, `author` or `committer` line may come again: a commit
/// that breaks this is kept with its [`Commit::disorder`] said, never read another way.
fn parse_commit(body: &[u8]) -> Result<Commit, String> {
    let header = match body.windows(2).position(|w| w == b"\n\n") {
        Some(end) => &body[..end],
        None => body,
    };
    let mut lines = header.split(|&b| b == b'\n').peekable();
    let id = |line: &[u8], prefix: &[u8]| {
        line.strip_prefix(prefix)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(Oid::parse_hex)
    };
    if lines.next().and_then(|l| id(l, b"tree ")).is_none() {
        return Err("a commit whose first line is not \"tree ID\"".into());
    }
    let mut parents = Vec::new();
    while let Some(line) = lines.next_if(|l| l.starts_with(b"parent ")) {
        parents.push(id(line, b"parent ").ok_or("a commit's parent line holds no object id")?);
    }
    let mut disorder = None;
    for name in ["author", "committer"] {
        let next = lines.next();
        if !next.is_some_and(|l| l.starts_with(format!("{name} ").as_bytes())) {
            disorder.get_or_insert(format!("no '{name}' line where git expects one"));
        }
    }
    for line in lines {
        for name in ["tree", "parent", "author", "committer"] {
            if line.starts_with(format!("{name} ").as_bytes()) {
                disorder.get_or_insert(format!("a '{name}' line after its 'committer' line"));
            }
        }
    }
    Ok(Commit { parents, disorder })
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
