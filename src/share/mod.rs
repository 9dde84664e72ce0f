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
//! ([`bound::Bound`]: a chunk its listed size, the others fixed caps); the manifest must hash
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
//!
//! The modules depend one way. At the bottom, importing no other module of `share`:
//! [`bound`] (how much of an object a get reads), [`layout`] (the key of each object),
//! [`sign`], [`url`], [`chunk`]; over them [`error`] (what a cache operation or a push, pull
//! or gc stops on, and whether it is worth another try). The backends — [`file`](mod@file), [`http`]
//! (with [`tls`]), [`s3`] — build on those; [`cache`] dispatches to the backends and
//! retries; [`lease`], [`local`], [`push`], [`pull`] and [`gc`] work through [`cache`] and
//! the store; [`pull`] puts each file together on disk through `assemble` (checked,
//! written, hashed and flushed on threads of their own). This file only declares the modules and re-exports their names.

mod assemble;
pub mod bound;
pub mod cache;
pub mod chunk;
pub mod error;
pub mod file;
pub mod gc;
pub mod http;
pub mod layout;
pub mod lease;
pub mod local;
pub mod pull;
pub mod push;
pub mod s3;
pub mod settings;
pub mod sign;
pub mod tls;
pub mod url;

pub use bound::Bound;
pub use cache::{Cache, JOBS};
pub use error::{CacheError, ShareError};
pub use layout::{LAYOUT, chunk_key, chunk_list_key, entry_key, record_key, signature_key};
pub use sign::{KeyError, PublicKey, SecretKey, Signature};
pub use url::{CacheUrl, UrlError};
