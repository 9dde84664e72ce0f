//! The errors of sharing: [`CacheError`], what one operation on a cache met, and
//! [`ShareError`], what a push, pull or gc stops on. Every cache backend and the dispatcher
//! ([`super::cache`]) build on these; this module imports none of them.

use super::bound::{BodyError, Bound, STALL};
use super::sign::KeyError;
use crate::hash::BuildHash;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[error("{url}/{key}: {message}")]
pub struct CacheError {
    pub url: String,
    pub key: String,
    pub message: String,
    /// Worth another try (a refused connection, a 5xx, a timeout, a stall).
    pub transient: bool,
    /// The object passed its [`Bound`]: the cache serves something it should not.
    pub oversize: bool,
    /// No connection could be made: tried again only within [`UNREACHABLE_BUDGET`], so a
    /// substituter that is down costs a build seconds, not minutes.
    pub unreachable: bool,
}

impl CacheError {
    pub fn new(url: &str, key: &str, message: String, transient: bool) -> CacheError {
        CacheError {
            url: url.to_string(),
            key: key.to_string(),
            message,
            transient,
            oversize: false,
            unreachable: false,
        }
    }

    /// A body that could not be read whole, as the error of `key` on `url`.
    pub fn of_body(url: &str, key: &str, bound: Bound, e: BodyError) -> CacheError {
        match e {
            BodyError::TooLarge(n) => CacheError {
                oversize: true,
                ..CacheError::new(url, key, bound.passed(n), false)
            },
            BodyError::Stalled => CacheError::new(
                url,
                key,
                format!("stalled: no bytes from the server for {}s", STALL.as_secs()),
                true,
            ),
            BodyError::Cut(e) => {
                CacheError::new(url, key, format!("response body cut off: {e}"), true)
            }
        }
    }
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
