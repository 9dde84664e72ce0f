//! The errors of sharing: [`CacheError`], what one operation on a cache met, and
//! [`ShareError`], what a push, pull or gc stops on. Every cache backend and the dispatcher
//! ([`super::cache`]) build on these; this module imports none of them.
//!
//! A cache error keeps what caused it, typed ([`CacheErrorKind`]), and whether it is worth
//! another try follows from that type alone ([`CacheErrorKind::transient`]): a refused
//! connection, a cut or stalled body, a 5xx or 429 are; a refused certificate (a rustls
//! certificate error anywhere in the chain), a 4xx, a body past its bound, an S3 error
//! (object_store retried it already) are not. The message names the whole chain of causes,
//! each said once, so the error returns no `source()` of its own: object_store's errors
//! repeat their sources in their text, and a chain printer would say them twice.

use std::error::Error;
use std::time::Duration;

use reqwest::StatusCode;

use super::bound::{BodyError, Bound, STALL};
use super::sign::KeyError;
use crate::hash::BuildHash;
use crate::store::StoreError;

/// A cause of any type, as the HTTP clients give them.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// What one operation on a cache met: `URL/KEY: what`.
#[derive(Debug)]
pub struct CacheError {
    pub url: String,
    pub key: String,
    pub kind: CacheErrorKind,
    /// Set when the tries stopped for a transient error: how many, and over how long.
    pub gave_up: Option<GaveUp>,
}

/// How a retried operation ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp {
    pub tries: u32,
    pub secs: u64,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}: {}", self.url, self.key, self.kind)?;
        if let Some(g) = self.gave_up {
            write!(f, " (gave up after {} tries over {}s)", g.tries, g.secs)?;
        }
        Ok(())
    }
}

impl Error for CacheError {}

/// Why a body or an answer stopped coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// A body with no bytes for [`STALL`].
    Body,
    /// No answer's head within this long.
    Answer(Duration),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::Body => write!(f, "no bytes from the server for {}s", STALL.as_secs()),
            Stall::Answer(wait) => {
                write!(f, "no answer from the server within {}s", wait.as_secs())
            }
        }
    }
}

/// What went wrong, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum CacheErrorKind {
    /// No connection could be made (refused, unresolved, a connect or handshake that
    /// failed): tried again, but only within `cache::UNREACHABLE_BUDGET`, so a substituter
    /// that is down costs a build seconds, not minutes.
    #[error("request failed: {}", chain(.0.as_ref()))]
    Unreachable(BoxError),
    /// A request on a connection failed (reset, closed early).
    #[error("request failed: {}", chain(.0.as_ref()))]
    Request(BoxError),
    /// The TLS handshake refused the server's certificate: asking again does not change it.
    #[error("request failed: {}", chain(.0.as_ref()))]
    Certificate(BoxError),
    #[error("stalled: {0}")]
    Stalled(Stall),
    #[error("response body cut off: {}", chain(.0.as_ref()))]
    Cut(BoxError),
    /// An answer other than the operation expects.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// The object passed its [`Bound`]: the cache serves something it should not.
    #[error("{}", .bound.passed(*.got))]
    Oversize { bound: Bound, got: Option<u64> },
    /// A folder cache's file operation failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// An S3 request failed, after object_store's own retries.
    #[error("{}", s3_cause(.0))]
    S3(Box<object_store::Error>),
    /// The S3 client could not be set up from the config and the environment.
    #[error(
        "{0}; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and, for a server other than AWS, AWS_ENDPOINT_URL"
    )]
    S3Setup(Box<object_store::Error>),
    /// The HTTP client could not be set up (the CAs of `BOTTLE_CACHE_CA_FILE`, TLS).
    #[error("{0}")]
    Setup(String),
    /// A key that would name something outside the cache (`of`: its folder, its prefix).
    #[error("a key with an empty, '.' or '..' part would leave the cache's {of}")]
    KeyOutside { of: &'static str },
    #[error("bad request: {}", chain(.0))]
    BadRequest(reqwest::Error),
    #[error(
        "the server does not accept PUT (405): enable it, e.g. nginx `dav_methods PUT DELETE; create_full_put_path on;`"
    )]
    PutNotAllowed,
    #[error("not a JSON folder listing ({0}): enable nginx `autoindex on; autoindex_format json;`")]
    NotListing(serde_json::Error),
}

impl CacheErrorKind {
    /// Worth another try: the same request may well succeed.
    pub fn transient(&self) -> bool {
        use CacheErrorKind::*;
        match self {
            Unreachable(_) | Request(_) | Stalled(_) | Cut(_) => true,
            Status(s) => s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS,
            Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            Certificate(_) | Oversize { .. } | S3(_) | S3Setup(_) | Setup(_) => false,
            KeyOutside { .. } | BadRequest(_) | PutNotAllowed | NotListing(_) => false,
        }
    }

    /// A failed HTTP request, by its cause: a refused certificate, no connection
    /// (`connect`: the client says it failed connecting), or a failure on a connection.
    pub fn of_request(e: BoxError, connect: bool) -> CacheErrorKind {
        if refused_certificate(e.as_ref()) {
            CacheErrorKind::Certificate(e)
        } else if connect {
            CacheErrorKind::Unreachable(e)
        } else {
            CacheErrorKind::Request(e)
        }
    }
}

impl CacheError {
    pub fn new(url: &str, key: &str, kind: CacheErrorKind) -> CacheError {
        CacheError {
            url: url.to_string(),
            key: key.to_string(),
            kind,
            gave_up: None,
        }
    }

    /// A body that could not be read whole, as the error of `key` on `url`.
    pub fn of_body(url: &str, key: &str, bound: Bound, e: BodyError) -> CacheError {
        let kind = match e {
            BodyError::TooLarge(got) => CacheErrorKind::Oversize { bound, got },
            BodyError::Stalled => CacheErrorKind::Stalled(Stall::Body),
            BodyError::Cut(e) => CacheErrorKind::Cut(e),
        };
        CacheError::new(url, key, kind)
    }

    /// Worth another try (a refused connection, a 5xx, a timeout, a stall).
    pub fn transient(&self) -> bool {
        self.kind.transient()
    }

    /// The object passed its [`Bound`].
    pub fn oversize(&self) -> bool {
        matches!(self.kind, CacheErrorKind::Oversize { .. })
    }

    /// No connection could be made.
    pub fn unreachable(&self) -> bool {
        matches!(self.kind, CacheErrorKind::Unreachable(_))
    }
}

/// The errors of `e`'s chain, `e` first. An `io::Error` made from another error shows that
/// one's text but skips it as a source (hyper-rustls wraps rustls's `io::Error` in another),
/// so the error inside it comes next.
fn causes<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        }
    })
}

/// Whether a TLS handshake in `e`'s chain refused the server's certificate (or got none).
fn refused_certificate(e: &(dyn Error + 'static)) -> bool {
    causes(e).any(|c| {
        matches!(
            c.downcast_ref::<rustls::Error>(),
            Some(
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)
            )
        )
    })
}

/// An error with its sources, each text said once: hyper's client says only "client error
/// (Connect)" on top, object_store repeats a source's text in its own.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// An object_store error with its sources, led by what it comes down to: a timeout, a
/// redirect (which the client does not follow: `s3::NoRedirects`), a denial.
fn s3_cause(e: &object_store::Error) -> String {
    let chain = chain(e);
    let why = if causes(e).any(timed_out) {
        "timeout"
    } else if let Some(why) = s3_by_text(&chain) {
        why
    } else if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        DENIED
    } else {
        return chain;
    };
    format!("{why}: {chain}")
}

const DENIED: &str =
    "denied (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's rights on the bucket)";

/// A timeout, by type: the client's, hyper's, or the socket's.
fn timed_out(e: &(dyn Error + 'static)) -> bool {
    e.downcast_ref::<reqwest::Error>()
        .is_some_and(|e| e.is_timeout())
        || e.downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_timeout())
        || e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
}

/// What object_store says only in text: its error of a status (a 3xx it was not let
/// follow, a 403 it did not make a `PermissionDenied`) is a type of its own crate, so the
/// status is read from the message. This names the error; it decides no retry.
fn s3_by_text(chain: &str) -> Option<&'static str> {
    // object_store says `retry_timeout: 20s` of every retried request, whatever failed it.
    let lower = chain.to_lowercase().replace("retry_timeout", "");
    if lower.contains("timed out") || lower.contains("timeout") {
        Some("timeout")
    } else if lower.contains("redirect") || lower.contains(" 301") || lower.contains(" 307") {
        Some("redirected (bottle follows no redirect; name the server's own endpoint and region)")
    } else if lower.contains("403") || lower.contains("forbidden") || lower.contains("denied") {
        Some(DENIED)
    } else {
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's error on top of its connector's, as hyper's client gives them.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Client(#[source] BoxError);

    /// A TLS failure as reqwest's client gives it: tokio-rustls's `io::Error`, which
    /// hyper-rustls wraps in another.
    fn tls(e: rustls::Error) -> BoxError {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        Box::new(Client(Box::new(std::io::Error::other(io))))
    }

    #[test]
    fn a_refused_certificate_is_final_and_a_refused_connection_is_tried_again() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let kind = CacheErrorKind::of_request(tls(bad), true);
        assert!(matches!(kind, CacheErrorKind::Certificate(_)), "{kind:?}");
        assert!(!kind.transient());
        assert_eq!(
            kind.to_string(),
            "request failed: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
        let none = CacheErrorKind::of_request(tls(rustls::Error::NoCertificatesPresented), true);
        assert!(!none.transient());

        // Another TLS failure, as before: tried again, as a server not reached.
        let other = CacheErrorKind::of_request(tls(rustls::Error::DecryptError), true);
        assert!(matches!(other, CacheErrorKind::Unreachable(_)), "{other:?}");
        assert!(other.transient());

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = CacheError::new(
            "http://c",
            "k",
            CacheErrorKind::of_request(Box::new(Client(Box::new(refused))), true),
        );
        assert!(e.transient() && e.unreachable() && !e.oversize());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let kind = CacheErrorKind::of_request(Box::new(reset), false);
        assert!(matches!(kind, CacheErrorKind::Request(_)) && kind.transient());
    }

    #[test]
    fn statuses_and_file_errors_are_tried_again_by_their_kind() {
        let status = |s| CacheErrorKind::Status(s).transient();
        assert!(status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!status(StatusCode::FORBIDDEN));
        assert!(!status(StatusCode::NOT_FOUND));
        let io = |k| CacheErrorKind::Io(std::io::Error::from(k)).transient();
        assert!(io(std::io::ErrorKind::Interrupted));
        assert!(io(std::io::ErrorKind::TimedOut));
        assert!(!io(std::io::ErrorKind::PermissionDenied));
        assert!(CacheErrorKind::Stalled(Stall::Body).transient());
        let over = CacheErrorKind::Oversize {
            bound: Bound::chunk(10),
            got: Some(11),
        };
        assert!(!over.transient());
        assert!(!CacheErrorKind::KeyOutside { of: "folder" }.transient());
    }

    #[test]
    fn messages_name_the_object_the_cause_and_how_the_tries_ended() {
        let mut e = CacheError::new(
            "http://c",
            "v1/chunks/ab/cd",
            CacheErrorKind::Stalled(Stall::Body),
        );
        assert_eq!(
            e.to_string(),
            "http://c/v1/chunks/ab/cd: stalled: no bytes from the server for 30s"
        );
        e.gave_up = Some(GaveUp {
            tries: 9,
            secs: 180,
        });
        assert_eq!(
            e.to_string(),
            "http://c/v1/chunks/ab/cd: stalled: no bytes from the server for 30s (gave up after 9 tries over 180s)"
        );
        let e = CacheError::new(
            "file:///c",
            "a/../b",
            CacheErrorKind::KeyOutside { of: "folder" },
        );
        assert_eq!(
            e.to_string(),
            "file:///c/a/../b: a key with an empty, '.' or '..' part would leave the cache's folder"
        );
        let cut = CacheErrorKind::Cut(Box::new(Client(Box::new(std::io::Error::other("eof")))));
        assert_eq!(
            cut.to_string(),
            "response body cut off: client error (Connect): eof"
        );
    }
}
