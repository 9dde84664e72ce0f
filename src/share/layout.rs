//! The cache's layout: the key of each object (see the tree in the module doc of
//! [`super`]), and component ids as reports name them.

use crate::digest::Digest;
use crate::hash::{BuildHash, ComponentId};

/// The cache layout's version: the first part of every key.
pub const LAYOUT: &str = "v1";
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
pub fn chunk_key(d: &Digest) -> String {
    let hex = d.hex();
    format!("{LAYOUT}/chunks/{}/{hex}", &hex[..2])
}

/// Component ids in reports, as `KIND/HASH`.
pub fn ids<S: serde::Serializer>(ids: &[ComponentId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| format!("{}/{}", id.kind, id.hash)))
}
