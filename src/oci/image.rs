//! What an image archive is made of and holds: the types of `crate::oci`'s calls. A leaf.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The one date every archive bottle writes carries, where a date is required.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

/// A host file to put into an image layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    /// Path inside the image, relative (`bottle`, `usr/bin/tool`); parent folders are added.
    pub path: String,
    /// The host file, streamed into the layer (never read whole into memory).
    pub source: PathBuf,
    /// Permission bits in the image (`0o755`).
    pub mode: u32,
}

/// What an image written by `super::write_image` runs, and its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image id, `sha256:<64 hex>`: sha256 of the config blob, as docker 20.10 computes it.
    pub id: String,
    /// Number of layers.
    pub layers: usize,
}
