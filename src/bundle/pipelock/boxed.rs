//! The one body type pipelock sends, either way: boxed bytes whose error is any error. The
//! streaming stages ([`super::body`], [`super::inflate`]) all produce and take it.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body pipelock sends, either way.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
