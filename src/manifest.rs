//! Manifest: what a store entry holds and how to run it.
//!
//! The build writes one `manifest.json` per entry, last; `bottle run` consumes it. It lists
//! every artifact with its blake3, size and mode (machine-local secrets marked), and carries
//! the specs the run phase needs: the guest spec (image artifact, user, home, command, the
//! whole guest env, provisioning) and the bundle spec (daemons, env *names* for tokens,
//! mounts, ports). Nothing in it is a secret.
//!
//! [`Manifest::parse`] checks a manifest read from disk or from a remote: the format version,
//! the hash, and that every path stays inside the entry. It is fuzzed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hash::BuildHash;
use crate::plan::{GuestBackend, GuestStart};

pub const MANIFEST_FORMAT: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const KEY_FILE: &str = "key.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub hash: BuildHash,
    pub name: String,
    pub builder: String,
    /// Seconds since the Unix epoch when the entry was published (informational only).
    pub created: u64,
    pub guest: GuestSpec,
    pub bundle: BundleSpec,
    /// Sorted by path.
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Relative to the entry, `/`-separated.
    pub path: String,
    pub blake3: String,
    pub size: u64,
    /// Permission bits, e.g. 0o600 for a private key.
    pub mode: u32,
    /// A secret of this machine (a CA key): never pushed to a remote cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub machine_local: bool,
}

/// Placeholder filled by `bottle run` with the bundle's IP on the run's network.
pub const BUNDLE_IP_TEMPLATE: &str = "{{bundle_ip}}";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub backend: GuestBackend,
    pub start: GuestStart,
    /// The `docker save` archive of the guest image (an entry path).
    pub image_archive: String,
    /// The engine's image id of that archive, so a run can skip loading it.
    pub image_id: String,
    /// The `.smolmachine` pack (an entry path), for smolvm guests started from a pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    pub user: String,
    pub home: String,
    pub command: Vec<String>,
    /// The whole guest env, re-passed on every exec. Values may hold [`BUNDLE_IP_TEMPLATE`].
    pub env: BTreeMap<String, String>,
    /// The CA the guest must trust (an entry path) and where it goes in the guest.
    pub ca: String,
    pub ca_guest_path: String,
    pub provision: ProvisionSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSpec {
    /// Entry paths.
    pub prompt: Option<String>,
    pub skills: Option<String>,
    pub git_name: Option<String>,
    pub git_email: Option<String>,
    /// git-gate upstream names the guest gets a remote for.
    pub git_remotes: Vec<String>,
    pub supervise: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// The `docker save` archive of the bundle image (an entry path): `FROM scratch`, holding
    /// the `bottle` binary that built the entry, entry point `/bottle sidecar`.
    pub image_archive: String,
    /// The engine's image id of that archive, so a run can skip loading it.
    pub image_id: String,
    /// The daemons `bottle sidecar` starts, in order.
    pub daemons: Vec<String>,
    /// Fixed, non-secret `NAME=VALUE` entries.
    pub env: Vec<String>,
    /// Names of host env vars whose values `bottle run` passes to the bundle at start.
    pub env_from_host: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Daemon name → port it listens on inside the bundle.
    pub ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MountSource {
    /// A file of the entry.
    Entry(String),
    /// A host path named by the recipe (an identity key); `~/` expands at run time.
    Host(String),
    /// A folder `bottle run` makes for the run, by this name.
    RunDir(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "manifest {path} is not valid JSON of the expected shape: {message}; the entry is damaged: remove it with `bottle gc` and build again"
    )]
    Shape { path: String, message: String },
    #[error(
        "manifest {path}: {message}; the entry is damaged or from another bottle version: remove it with `bottle gc` and build again"
    )]
    Invalid { path: String, message: String },
}

impl Manifest {
    /// Parses and checks a manifest; `origin` names where it came from, for messages.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Shape {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let bad = |message: String| ManifestError::Invalid {
            path: origin.to_string(),
            message,
        };
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {} is not the supported format {MANIFEST_FORMAT}",
                m.format
            )));
        }
        let mut paths: Vec<&str> = Vec::new();
        for a in &m.artifacts {
            if !is_entry_path(&a.path) {
                return Err(bad(format!("artifact path {:?} leaves the entry", a.path)));
            }
            if a.blake3.len() != 64 || !a.blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "artifact {:?} has no valid blake3 digest",
                    a.path
                )));
            }
            if a.mode > 0o7777 {
                return Err(bad(format!(
                    "artifact {:?} has an impossible mode {:o}",
                    a.path, a.mode
                )));
            }
            paths.push(&a.path);
        }
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != paths.len() {
            return Err(bad("an artifact is listed twice".to_string()));
        }
        let listed = |p: &str| paths.contains(&p);
        for id in [&m.guest.image_id, &m.bundle.image_id] {
            let hex = id.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("image id {id:?} is not sha256:<64 hex>")));
            }
        }
        let g = &m.guest;
        let mut refs: Vec<&str> = vec![&g.image_archive, &g.ca];
        refs.extend(g.pack.as_deref());
        refs.extend(g.provision.prompt.as_deref());
        for r in refs {
            if !listed(r) {
                return Err(bad(format!(
                    "guest spec names {r:?}, which is not an artifact"
                )));
            }
        }
        if !listed(&m.bundle.image_archive) {
            return Err(bad(format!(
                "bundle spec names image {:?}, which is not an artifact",
                m.bundle.image_archive
            )));
        }
        if let Some(skills) = &g.provision.skills {
            if !is_entry_path(skills) {
                return Err(bad(format!("skills folder {skills:?} leaves the entry")));
            }
        }
        for mount in &m.bundle.mounts {
            match &mount.source {
                MountSource::Entry(p) if !listed(p) => {
                    return Err(bad(format!("bundle mount {p:?} is not an artifact")));
                }
                MountSource::RunDir(d) if !is_entry_path(d) || d.contains('/') => {
                    return Err(bad(format!("run folder {d:?} must be a plain name")));
                }
                _ => {}
            }
            if !mount.target.starts_with('/') || mount.target.split('/').any(|c| c == "..") {
                return Err(bad(format!(
                    "mount target {:?} is not an absolute path without ..",
                    mount.target
                )));
            }
        }
        Ok(m)
    }

    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ManifestError::Shape {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        Manifest::parse(&bytes, &origin)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a Manifest always serializes");
        v.push(b'\n');
        v
    }

    pub fn total_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
}

/// A relative, `/`-separated path with no `.`, `..` or empty parts.
pub fn is_entry_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert!(is_entry_path("guest/image.tar"));
        assert!(!is_entry_path("../x"));
        assert!(!is_entry_path("/etc/passwd"));
        assert!(!is_entry_path("a//b"));
        assert!(!is_entry_path("a/./b"));
    }
}
