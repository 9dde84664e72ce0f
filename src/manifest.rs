//! Manifest: the contract between the build and the run — an entry's manifest, each
//! component's record, and the specs the config component carries.
//!
//! - [`Manifest`]: an entry. The recipe's name and its three components by hash; the entry's
//!   own hash is blake3 over the manifest's canonical JSON, so a manifest that does not hash to
//!   its entry's name is refused.
//! - [`Record`]: a component's `record.json`. Its key (which hashes to the component's name),
//!   the image it holds (guest and bundle), and every file with blake3, size and mode.
//! - [`GuestSpec`], [`BundleSpec`]: how to run the guest and the bundle. They are files of the
//!   config component, rendered from its key by `crate::config`; the run uses what rendering
//!   the verified key gives, and `verify` refuses a file that differs from it.
//!
//! Nothing here is a secret: tokens appear by env var name, identity keys by host path, and CA
//! keys are not part of any component (each run mints its own).
//!
//! [`Manifest::parse`] and [`Record::parse`] check what they read from disk or from elsewhere
//! (format, hashes, paths inside the component); they are fuzzed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::daemons::Daemon;
use crate::digest::Digest;
use crate::hash::{BuildHash, ComponentHash, ComponentId, ComponentKey, ComponentKind, Keys};
use crate::plan::HostTarget;

pub const MANIFEST_FORMAT: u32 = 2;
pub const RECORD_FORMAT: u32 = 1;
/// Each component's record, written last into its folder.
pub const RECORD_FILE: &str = "record.json";

/// A store entry: a name and a closure of components.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub components: Components,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Components {
    pub guest: ComponentHash,
    pub bundle: ComponentHash,
    pub config: ComponentHash,
}

impl Components {
    pub fn get(&self, kind: ComponentKind) -> ComponentId {
        let hash = match kind {
            ComponentKind::Guest => self.guest,
            ComponentKind::Bundle => self.bundle,
            ComponentKind::Config => self.config,
        };
        ComponentId { kind, hash }
    }
    pub fn ids(&self) -> [ComponentId; 3] {
        ComponentKind::ALL.map(|k| self.get(k))
    }
}

/// A file of a component.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Relative to the component's folder, `/`-separated.
    pub path: String,
    pub blake3: Digest,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// The image a guest or bundle component holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// The image archive (a component path).
    pub archive: String,
    /// The engine's image id of that archive (`sha256:…` of its config), so a run can skip
    /// loading it.
    pub id: String,
    /// The `.smolmachine` pack (a component path), for smolvm guests started from a pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
}

/// A component's `record.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: u32,
    pub key: ComponentKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Sorted by path; the record itself is not listed.
    pub files: Vec<Artifact>,
}

/// Placeholder filled by `bottle run` with the bundle's IP on the run's network.
pub const BUNDLE_IP_TEMPLATE: &str = "{{bundle_ip}}";

/// How the guest runs: a file of the config component (`guest.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub user: String,
    pub home: String,
    pub command: Vec<String>,
    /// The whole guest env, re-passed on every exec. Values may hold [`BUNDLE_IP_TEMPLATE`].
    pub env: BTreeMap<String, String>,
    /// Where the run's CA certificate goes in the guest (the trust trio points here).
    pub ca_guest_path: String,
    pub provision: ProvisionSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSpec {
    /// Config component paths.
    pub prompt: Option<String>,
    pub skills: Option<String>,
    pub git_name: Option<String>,
    pub git_email: Option<String>,
    /// `[provision] files`: each path under the guest's home → its config component path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// The git-gate upstream cloned into the workspace, where the agent starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,
}

/// A git-gate upstream cloned at provisioning, and the guest folder it is cloned into (the
/// agent's working folder).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    pub upstream: String,
    pub dir: String,
}

/// How the bundle runs: a file of the config component (`bundle.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// The daemons `bottle sidecar` starts, in order.
    pub daemons: Vec<Daemon>,
    /// Fixed, non-secret entries (`NAME=VALUE` strings in the file).
    pub env: Vec<EnvVar>,
    /// Names of host env vars whose values `bottle run` hands to the bundle on its stdin.
    pub secrets: Vec<String>,
    pub mounts: Vec<Mount>,
    /// The port each daemon listens on inside the bundle.
    pub ports: BTreeMap<Daemon, u16>,
    /// Static names the bundle resolves (`[network] hosts`).
    pub hosts: BTreeMap<String, HostTarget>,
    /// The container's memory limit in bytes (`[bundle] memory`); absent when it is the
    /// default, so the files of entries built before it stay as they were.
    #[serde(
        default = "default_bundle_memory",
        skip_serializing_if = "is_default_bundle_memory"
    )]
    pub memory: u64,
}

/// A fixed, non-secret variable of the bundle's env, written `NAME=VALUE` in `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl std::fmt::Display for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

impl From<EnvVar> for String {
    fn from(v: EnvVar) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for EnvVar {
    type Error = String;

    fn try_from(s: String) -> Result<EnvVar, String> {
        match s.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(EnvVar {
                name: name.to_string(),
                value: value.to_string(),
            }),
            _ => Err(format!("bundle env entry {s:?} is not NAME=VALUE")),
        }
    }
}

fn default_bundle_memory() -> u64 {
    crate::plan::DEFAULT_BUNDLE_MEMORY
}

fn is_default_bundle_memory(m: &u64) -> bool {
    *m == crate::plan::DEFAULT_BUNDLE_MEMORY
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
    /// A file of the config component.
    Config(String),
    /// A file of the run's CA folder (minted by `bottle run` on this machine).
    Ca(String),
    /// A host path named by the recipe (an identity key); `~/` expands at run time.
    Host(String),
    /// A folder `bottle run` makes for the run, by this name.
    RunDir(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{origin} is not valid JSON of the expected shape: {message}; the entry is damaged: remove it with `bottle gc` and build it again"
    )]
    Shape { origin: String, message: String },
    #[error(
        "{origin}: {message}; the entry is damaged or from another bottle version: remove it with `bottle gc` and build it again"
    )]
    Invalid { origin: String, message: String },
}

impl Manifest {
    /// The manifest of a recipe's keys: its name and each component's hash.
    pub fn of(keys: &Keys) -> Manifest {
        let hash = |kind| keys.component(kind).hash();
        Manifest {
            format: MANIFEST_FORMAT,
            name: keys.name.clone(),
            components: Components {
                guest: hash(ComponentKind::Guest),
                bundle: hash(ComponentKind::Bundle),
                config: hash(ComponentKind::Config),
            },
        }
    }

    /// The canonical encoding the entry's hash is taken over.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Manifest always serializes")
    }

    pub fn hash(&self) -> BuildHash {
        BuildHash(Digest::of(&self.canonical()))
    }

    /// Parses and checks a manifest; `origin` names where it came from, for messages.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Shape {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::Invalid {
                origin: origin.to_string(),
                message: format!(
                    "format {} is not the supported format {MANIFEST_FORMAT}",
                    m.format
                ),
            });
        }
        if !crate::plan::is_slug(&m.name) {
            return Err(ManifestError::Invalid {
                origin: origin.to_string(),
                message: format!("name {:?} is not a recipe name", m.name),
            });
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a Manifest always serializes");
        v.push(b'\n');
        v
    }
}

impl Record {
    /// Parses and checks a record: the format; the key of the `expected` kind hashing to the
    /// expected hash; file paths inside the component, each listed once, in order; an image
    /// where the kind holds one, naming listed files.
    pub fn parse(
        bytes: &[u8],
        origin: &str,
        expected: &ComponentId,
    ) -> Result<Record, ManifestError> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| ManifestError::Shape {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let bad = |message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if r.format != RECORD_FORMAT {
            return Err(bad(format!(
                "record format {} is not the supported format {RECORD_FORMAT}",
                r.format
            )));
        }
        if r.key.kind() != expected.kind {
            return Err(bad(format!(
                "holds a {} key where a {} component belongs",
                r.key.kind(),
                expected.kind
            )));
        }
        let got = r.key.hash();
        if got != expected.hash {
            return Err(bad(format!(
                "its key hashes to {got}, not to the component's name {}",
                expected.hash
            )));
        }
        let mut last: Option<&str> = None;
        for a in &r.files {
            if !is_entry_path(&a.path) || a.path == RECORD_FILE {
                return Err(bad(format!("file path {:?} leaves the component", a.path)));
            }
            if last.is_some_and(|l| l >= a.path.as_str()) {
                return Err(bad(format!(
                    "file {:?} is out of order or listed twice",
                    a.path
                )));
            }
            if a.mode > 0o7777 {
                return Err(bad(format!(
                    "file {:?} has an impossible mode {:o}",
                    a.path, a.mode
                )));
            }
            last = Some(&a.path);
        }
        let listed = |p: &str| r.files.iter().any(|a| a.path == p);
        match (&r.image, expected.kind) {
            (None, ComponentKind::Config) => {}
            (Some(img), ComponentKind::Guest | ComponentKind::Bundle) => {
                let hex = img.id.strip_prefix("sha256:").unwrap_or_default();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!("image id {:?} is not sha256:<64 hex>", img.id)));
                }
                for p in std::iter::once(&img.archive).chain(img.pack.iter()) {
                    if !listed(p) {
                        return Err(bad(format!("image names {p:?}, which is not a file")));
                    }
                }
                if img.pack.is_some() && expected.kind != ComponentKind::Guest {
                    return Err(bad("only a guest holds a pack".to_string()));
                }
            }
            (None, kind) => return Err(bad(format!("a {kind} component must name its image"))),
            (Some(_), kind) => return Err(bad(format!("a {kind} component holds no image"))),
        }
        Ok(r)
    }

    pub fn read(path: &Path, expected: &ComponentId) -> Result<Record, ManifestError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ManifestError::Shape {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Record::parse(&bytes, &origin, expected)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a Record always serializes");
        v.push(b'\n');
        v
    }

    /// Bytes of every file the record lists. The sizes are the record's word (a damaged or
    /// hostile one may say anything up to `u64::MAX`), so the sum saturates.
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0, |t: u64, a| t.saturating_add(a.size))
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
    fn bundle_env_entries_are_name_value_strings_in_the_file() {
        let v = EnvVar {
            name: "A".into(),
            value: "b=c".into(),
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#""A=b=c""#);
        assert_eq!(serde_json::from_str::<EnvVar>(&json).unwrap(), v);
        for bad in [r#""=x""#, r#""novalue""#] {
            let e = serde_json::from_str::<EnvVar>(bad).unwrap_err().to_string();
            assert!(e.contains("NAME=VALUE"), "{bad}: {e}");
        }
    }

    #[test]
    fn entry_paths() {
        assert!(is_entry_path("guest/image.tar"));
        assert!(!is_entry_path("../x"));
        assert!(!is_entry_path("/etc/passwd"));
        assert!(!is_entry_path("a//b"));
        assert!(!is_entry_path("a/./b"));
    }
}
