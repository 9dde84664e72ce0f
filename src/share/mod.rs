//! Sharing store entries across machines: push to, pull from caches named by URL
//! (`file://`, `http://`), signed with ed25519 and checked byte for byte on arrival.
//!
//! ```text
//! CACHE/                                  the URL's folder, or its prefix on the server
//! └── v1/                                 the cache layout's version
//!     ├── entries/HASH.json               an entry's manifest, the bytes of the store's file
//!     ├── entries/HASH.sig                its signatures, one `KEYNAME:BASE64` a line
//!     ├── components/KIND/HASH/record.json   a component's record, the store's bytes
//!     ├── components/KIND/HASH/chunks.json   its files' content-defined chunks, in order
//!     ├── chunks/AB/BLAKE3                a chunk, named by the blake3 of its bytes
//!     └── locks/gc, locks/push-ID         leases of a `bottle gc --remote` and of pushes
//!                                         ([`lease`]: an id inside, each removes its own)
//! ```
//!
//! **Push** ([`push::push`]) writes chunks first, then each component's chunk list and
//! record, then the manifest, then the signature: a reader that finds a signature finds
//! everything it covers. A component the cache has (record and chunk list) is skipped; of the
//! others, only the chunks the cache lacks are uploaded; what was skipped is checked again
//! before the manifest is written ([`lease`]).
//!
//! **Pull** ([`pull::pull`]) trusts nothing it reads until it is checked, and publishes
//! nothing unchecked: every object is read as it arrives up to its bound
//! ([`cache::Bound`]: a chunk its listed size, the others fixed caps); the manifest must hash
//! to the entry's name; each record's key must hash to its component's name; a signature by a trusted key must cover the entry's hash, the
//! manifest's and every record's bytes ([`sign::fingerprint`]); each chunk must match its
//! blake3 before it is written; each file, put together from its chunks in order under
//! `local/pull/KIND-HASH/` of the store, must match its record; then every component is
//! checked where it lies (modes 0644 or 0755 only, names, sizes, a config's rendering, an
//! image's id) before `Store::import_component_dirs` publishes any of them. Chunks the local
//! store has (in files of components of the same kind) are read from there, rechecked; the
//! others are downloaded, eight at a time, in order. A pull killed at any point resumes each
//! file from its last whole chunk (rechecked); what it put together is removed once
//! published, at once when the pull is refused, and by `bottle gc` (a pull holds `gc.lock`
//! shared) when a killed pull left it.
//!
//! What never leaves: components hold no CA key (each run mints its own, under `runs/`) and no
//! token value (tokens are named, and read at run time); only `entries/` and `components/`
//! of the store are read by a push.

pub mod cache;
pub mod chunk;
pub mod config;
pub mod file;
pub mod gc;
pub mod http;
pub mod lease;
pub mod local;
pub mod pull;
pub mod push;
pub mod s3;
pub mod sign;
pub mod tls;
pub mod url;

pub use cache::{Bound, Cache, CacheError};
pub use sign::{KeyError, PublicKey, SecretKey, Signature};
pub use url::{CacheUrl, UrlError};

use crate::hash::{BuildHash, ComponentId};
use crate::store::StoreError;

/// The cache layout's version: the first part of every key.
pub const LAYOUT: &str = "v1";
/// How many objects move at once.
pub const JOBS: usize = 8;

pub fn entry_key(hash: &BuildHash) -> String {
    format!("{LAYOUT}/entries/{hash}.json")
}
pub fn signature_key(hash: &BuildHash) -> String {
    format!("{LAYOUT}/entries/{hash}.sig")
}
pub fn record_key(id: &ComponentId) -> String {
    format!("{LAYOUT}/components/{}/{}/record.json", id.kind, id.hash)
}
pub fn chunk_list_key(id: &ComponentId) -> String {
    format!("{LAYOUT}/components/{}/{}/chunks.json", id.kind, id.hash)
}
pub fn chunk_key(d: &crate::digest::Digest) -> String {
    let hex = d.hex();
    format!("{LAYOUT}/chunks/{}/{hex}", &hex[..2])
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "entry {hash} is not in the cache {url}; push it there first (`bottle push {hash} --to {url}`)"
    )]
    NotInCache { hash: BuildHash, url: String },
    #[error("refused entry {hash} from {url}: {what}: {problem}; nothing was added to the store")]
    Refused {
        hash: BuildHash,
        url: String,
        /// What was refused: `signature`, `manifest`, `KIND record`, `KIND/FILE`, a chunk.
        what: String,
        problem: String,
    },
    #[error("{url}: {what}")]
    Stopped { url: String, what: String },
    #[error("I/O error at {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Component ids in reports, as `KIND/HASH`.
fn ids<S: serde::Serializer>(ids: &[ComponentId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| format!("{}/{}", id.kind, id.hash)))
}
