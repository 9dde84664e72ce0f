//! Hash: the keys of an entry's components and of the entry itself, computed from a plan and
//! its inputs *before* anything is built.
//!
//! An entry is a closure of three components, each named by blake3 over the canonical JSON of
//! its own key (tagged with its kind), which holds only what changes that component's bytes:
//!
//! | component | its key holds | stays out |
//! | --- | --- | --- |
//! | `guest` ([`GuestKey`]) | [`GUEST_FORMAT`]; backend and start mode; the image source: the Dockerfile's digest and every path of its build context that `.dockerignore` keeps (files by digest and executable bit, symlinks by target, folders, so an empty one counts), or an archive's digest, or a reference pinned by digest; for a smolvm pack, `smolvm --version` (read by the caller: hashing runs no program) | bottle's own sources, the recipe's name, user, env, command, allowlist, routes, where the recipe lies |
//! | `bundle` ([`BundleKey`]) | [`BUNDLE_FORMAT`] and [`BUILDER`]: a digest of bottle's sources (every file under `src/`, `Cargo.lock`, `Cargo.toml`, `build.rs`) with the profile, target, rustflags and `rustc -vV`, computed by `build.rs` at compile time, since the bundle image holds this very binary | everything of the recipe: one bundle per build of bottle, shared by all recipes |
//! | `config` ([`ConfigKey`]) | [`CONFIG_FORMAT`]; the guest's user, home, command and env; pipelock (allowlist, DLP switch, the recipe's DLP rules and allowed values), egress routes (each upstream CA by its digest) and upstream proxy, git-gate and supervise as planned; `[network] hosts`; `[bundle] memory` unless it is the default; the prompt's digest, each skills file's digest and each `[provision] files` file's digest; the workspace's upstream; git identity | the recipe's name, the image, bottle's sources (the config files' shape is versioned by [`CONFIG_FORMAT`] instead), token values |
//!
//! The entry's hash ([`BuildHash`]) is blake3 over the canonical JSON of its manifest
//! (`crate::manifest::Manifest::of` the keys): the manifest format, the recipe's name (what
//! runs and `bottle ls` call it) and the three component hashes. So adding a host to an allowlist makes a new `config` and a new entry
//! that shares the old `guest` and `bundle`; upgrading bottle makes only a new `bundle`.
//!
//! Never hashed: mtimes, owners and permission bits other than the executable bit; the
//! recipe's text (key order, whitespace, comments) and its folder on this machine (paths are
//! relative); token values (the plan holds env var *names*); identity keys (host paths only,
//! never read at build time); CA keys (minted on the machine that runs, per run).
//!
//! Some inputs cannot be pinned by content: a Dockerfile `FROM` of a tag without a digest, a
//! `FROM` whose name comes from an `ARG`, an `ADD` of a URL. Each is an [`Impurity`]: a warning
//! by default and an error under `--pure`; its message says how to pin it. (A registry
//! `reference` without a digest is refused outright by the plan.) What a `RUN` step downloads
//! or writes cannot be seen from outside: recipes meant to be reproducible build from vendored
//! files, and `bottle build` says when a Dockerfile has `RUN` steps.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::context::dockerfile::Impurity;
use crate::digest::{Digest, InputDigest, file_digest};
use crate::plan::{
    BundlePlan, GitGatePlan, GuestBackend, GuestStart, ImagePlan, NetworkPlan, PipelockPlan,
    Planned, SupervisePlan,
};

/// A digest of the sources and build settings of the `bottle` binary doing the build
/// (computed by `build.rs` at compile time): the bundle image holds that binary.
pub const BUILDER: &str = env!("BOTTLE_SOURCE_DIGEST");

/// Bump when the guest artifact would differ for the same key (archive normalization, pack).
pub const GUEST_FORMAT: u32 = 1;
/// Bump when the bundle image archive's layout changes.
pub const BUNDLE_FORMAT: u32 = 1;
/// Bump when the config component's files (daemon configs, specs) change shape.
/// 2: git-gate.json gains `listen_host` and `audit_log`; pipelock's `supervise`, supervise's
/// `listen_host` and `audit_log`, the guest's `BOTTLE_SUPERVISE_URL` and the bundle in
/// `NO_PROXY` when supervise runs.
pub const CONFIG_FORMAT: u32 = 2;

/// The name of an entry: blake3 of its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildHash(pub Digest);

/// The name of a component: blake3 of its kind-tagged key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ComponentHash(pub Digest);

macro_rules! hash_type {
    ($t:ident) => {
        impl $t {
            pub fn parse(s: &str) -> Option<$t> {
                Digest::parse(s).map($t)
            }
            pub fn hex(&self) -> String {
                self.0.hex()
            }
            /// The first 12 hex digits, for resource names and messages.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}
hash_type!(BuildHash);
hash_type!(ComponentHash);

/// The three components of every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    Guest,
    Bundle,
    Config,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 3] = [
        ComponentKind::Guest,
        ComponentKind::Bundle,
        ComponentKind::Config,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Guest => "guest",
            ComponentKind::Bundle => "bundle",
            ComponentKind::Config => "config",
        }
    }
    pub fn parse(s: &str) -> Option<ComponentKind> {
        ComponentKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A component: its kind and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    pub kind: ComponentKind,
    pub hash: ComponentHash,
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.hash.short())
    }
}

/// What the guest artifact is made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestKey {
    pub format: u32,
    pub backend: GuestBackend,
    pub start: GuestStart,
    pub source: GuestSource,
    /// `smolvm --version`, for guests started from a `.smolmachine` pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smolvm: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum GuestSource {
    /// The Dockerfile's content and the build context (paths relative to the context).
    Dockerfile {
        dockerfile: Digest,
        context: BTreeMap<String, InputDigest>,
    },
    /// A `docker save` archive's content.
    Archive { archive: Digest },
    /// A registry reference pinned by digest.
    Reference { reference: String },
}

/// What the bundle image is made from: this very binary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleKey {
    pub format: u32,
    pub builder: String,
}

/// What the config component is rendered from (see `crate::config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    pub format: u32,
    pub guest: GuestConfig,
    pub pipelock: PipelockPlan,
    pub egress: EgressKey,
    pub git_gate: GitGatePlan,
    pub supervise: SupervisePlan,
    pub provision: ProvisionKey,
    pub network: NetworkPlan,
    /// `[bundle]`: absent from the key when it is the default (keys of recipes without it
    /// stay as they were).
    #[serde(default, skip_serializing_if = "BundlePlan::is_default")]
    pub bundle: BundlePlan,
}

/// The egress routes as the config renders them: an upstream CA by its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EgressKey {
    /// Sorted by host.
    pub routes: Vec<RouteKey>,
    pub upstream_proxy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteKey {
    pub host: String,
    /// The *name* of the host env var holding the token.
    pub token_env: String,
    pub header: String,
    pub scheme: String,
    /// The digest of the route's upstream CA file.
    pub upstream_ca: Option<Digest>,
}

/// The guest's own settings: who runs what, with which env.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub user: String,
    pub home: String,
    pub command: Vec<String>,
    /// The recipe's own guest env; the config adds the bottle's fixed entries.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProvisionKey {
    /// The prompt file's content.
    pub prompt: Option<Digest>,
    /// Each regular file of the skills folder, relative to it (symlinks are not copied into
    /// the guest, so they are not part of the key).
    pub skills: Option<BTreeMap<String, InputDigest>>,
    pub git_name: Option<String>,
    pub git_email: Option<String>,
    /// The git-gate upstream cloned into the guest's workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// `[provision] files`: each guest path (under its home) → the content of its file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, Digest>,
}

/// A component key, tagged with its kind: what a component's name is the hash of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // a few hundred bytes, made a handful of times per command
pub enum ComponentKey {
    Guest(GuestKey),
    Bundle(BundleKey),
    Config(ConfigKey),
}

impl ComponentKey {
    pub fn kind(&self) -> ComponentKind {
        match self {
            ComponentKey::Guest(_) => ComponentKind::Guest,
            ComponentKey::Bundle(_) => ComponentKind::Bundle,
            ComponentKey::Config(_) => ComponentKind::Config,
        }
    }
    /// The canonical encoding the component's hash is taken over.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a component key always serializes")
    }
    pub fn hash(&self) -> ComponentHash {
        ComponentHash(Digest::of(&self.canonical()))
    }
    pub fn id(&self) -> ComponentId {
        ComponentId {
            kind: self.kind(),
            hash: self.hash(),
        }
    }
}

/// The keys of one recipe: everything `bottle hash` computes and `bottle build` builds from.
/// Its entry is `crate::manifest::Manifest::of` them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub name: String,
    pub guest: GuestKey,
    pub bundle: BundleKey,
    pub config: ConfigKey,
}

impl Keys {
    pub fn component(&self, kind: ComponentKind) -> ComponentKey {
        match kind {
            ComponentKind::Guest => ComponentKey::Guest(self.guest.clone()),
            ComponentKind::Bundle => ComponentKey::Bundle(self.bundle.clone()),
            ComponentKind::Config => ComponentKey::Config(self.config.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read input {path}; check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "input {path} is neither a file, a folder nor a symlink; remove it from the recipe's inputs"
    )]
    Special { path: PathBuf },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A caller's mistake: the plan's guest starts from a pack and no version was given.
    #[error(
        "a smolvm guest started from a pack depends on the smolvm CLI's version, and none was given to the hash"
    )]
    NoSmolvmVersion,
}

/// The keys of a plan: reads and digests every file the plan references, and runs nothing.
/// `smolvm` is `smolvm --version`, which the guest's key holds when it starts from a pack
/// (the caller reads it: `crate::runtime::smolvm::Smolvm::pack_version`); ignored otherwise.
pub fn keys(planned: &Planned, smolvm: Option<&str>) -> Result<(Keys, Vec<Impurity>), HashError> {
    keys_with_builder(planned, BUILDER, smolvm)
}

/// [`keys`] with another builder identity (as a different build of bottle would compute).
pub fn keys_with_builder(
    planned: &Planned,
    builder: &str,
    smolvm: Option<&str>,
) -> Result<(Keys, Vec<Impurity>), HashError> {
    let plan = &planned.plan;
    let (source, impurities) = guest_source(planned)?;
    let smolvm = match plan.guest.start {
        GuestStart::Pack => Some(smolvm.ok_or(HashError::NoSmolvmVersion)?.to_string()),
        GuestStart::Image => None,
    };
    let guest = GuestKey {
        format: GUEST_FORMAT,
        backend: plan.guest.backend,
        start: plan.guest.start,
        source,
        smolvm,
    };
    let config = config_key(planned)?;
    let keys = Keys {
        name: plan.name.clone(),
        guest,
        bundle: BundleKey {
            format: BUNDLE_FORMAT,
            builder: builder.to_string(),
        },
        config,
    };
    Ok((keys, impurities))
}

/// The config key: the plan's own settings and the digests of the files it names.
fn config_key(planned: &Planned) -> Result<ConfigKey, HashError> {
    let plan = &planned.plan;
    let p = &plan.provision;
    let prompt = match &p.prompt {
        Some(rel) => Some(content_digest(&planned.host_path(rel))?),
        None => None,
    };
    let skills = match &p.skills {
        Some(rel) => Some(
            tree(&planned.host_path(rel))?
                .into_iter()
                .filter(|(_, d)| matches!(d, InputDigest::File { .. }))
                .collect(),
        ),
        None => None,
    };
    let g = &plan.guest;
    Ok(ConfigKey {
        format: CONFIG_FORMAT,
        guest: GuestConfig {
            user: g.user.clone(),
            home: g.home.clone(),
            command: g.command.clone(),
            env: g.env.clone(),
        },
        pipelock: plan.pipelock.clone(),
        egress: EgressKey {
            routes: plan
                .egress
                .routes
                .iter()
                .map(|r| {
                    Ok(RouteKey {
                        host: r.host.clone(),
                        token_env: r.token_env.clone(),
                        header: r.header.clone(),
                        scheme: r.scheme.clone(),
                        upstream_ca: match &r.upstream_ca {
                            Some(rel) => Some(content_digest(&planned.host_path(rel))?),
                            None => None,
                        },
                    })
                })
                .collect::<Result<_, HashError>>()?,
            upstream_proxy: plan.egress.upstream_proxy.clone(),
        },
        network: plan.network.clone(),
        git_gate: plan.git_gate.clone(),
        supervise: plan.supervise.clone(),
        bundle: plan.bundle,
        provision: ProvisionKey {
            prompt,
            skills,
            git_name: p.git_name.clone(),
            git_email: p.git_email.clone(),
            workspace: p.workspace.clone(),
            files: p
                .files
                .iter()
                .map(|(guest, rel)| Ok((guest.clone(), content_digest(&planned.host_path(rel))?)))
                .collect::<Result<_, HashError>>()?,
        },
    })
}

fn guest_source(planned: &Planned) -> Result<(GuestSource, Vec<Impurity>), HashError> {
    match &planned.plan.guest.image {
        ImagePlan::Dockerfile {
            dockerfile,
            context,
        } => {
            let path = planned.host_path(dockerfile);
            let text = std::fs::read_to_string(&path).map_err(|source| HashError::Read {
                path: path.clone(),
                source,
            })?;
            let impurities = crate::context::dockerfile::impurities(&path, &text);
            let source = GuestSource::Dockerfile {
                dockerfile: Digest::of(text.as_bytes()),
                context: crate::context::scan(&planned.host_path(context))?,
            };
            Ok((source, impurities))
        }
        ImagePlan::Archive { archive } => Ok((
            GuestSource::Archive {
                archive: content_digest(&planned.host_path(archive))?,
            },
            Vec::new(),
        )),
        ImagePlan::Reference { reference } => Ok((
            GuestSource::Reference {
                reference: reference.clone(),
            },
            Vec::new(),
        )),
    }
}

fn content_digest(path: &Path) -> Result<Digest, HashError> {
    file_digest(path)
        .map(|(d, _)| d)
        .map_err(|source| HashError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Every path below `dir` (folders too), relative and `/`-separated; symlinks recorded by
/// their target, never followed.
pub fn tree(dir: &Path) -> Result<BTreeMap<String, InputDigest>, HashError> {
    let mut out = BTreeMap::new();
    for ent in walkdir::WalkDir::new(dir).min_depth(1) {
        let ent = ent.map_err(|e| HashError::Read {
            path: e.path().unwrap_or(dir).to_path_buf(),
            source: e.into(),
        })?;
        let rel = ent
            .path()
            .strip_prefix(dir)
            .unwrap_or(ent.path())
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let digest = if ent.file_type().is_dir() {
            InputDigest::Dir
        } else {
            let meta = ent.metadata().map_err(|e| HashError::Read {
                path: ent.path().to_path_buf(),
                source: e.into(),
            })?;
            entry_digest(ent.path(), &meta)?
        };
        out.insert(rel, digest);
    }
    Ok(out)
}

fn entry_digest(path: &Path, meta: &std::fs::Metadata) -> Result<InputDigest, HashError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(|source| HashError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(InputDigest::Symlink {
            target: target.to_string_lossy().into_owned(),
        });
    }
    if !ft.is_file() {
        return Err(HashError::Special {
            path: path.to_path_buf(),
        });
    }
    Ok(InputDigest::File {
        digest: content_digest(path)?,
        executable: meta.permissions().mode() & 0o111 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_hashes_depend_on_kind_and_key() {
        let bundle = |b: &str| {
            ComponentKey::Bundle(BundleKey {
                format: BUNDLE_FORMAT,
                builder: b.into(),
            })
        };
        assert_eq!(bundle("a").hash(), bundle("a").hash());
        assert_ne!(bundle("a").hash(), bundle("b").hash());
        let back: ComponentKey =
            serde_json::from_slice(&bundle("a").canonical()).expect("round trip");
        assert_eq!(back, bundle("a"));
    }

    /// `[bundle] memory` enters the config key only when it is not the default: keys of
    /// recipes without it encode as they did before it existed.
    #[test]
    fn bundle_memory_is_in_the_config_key_only_when_not_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("img.tar"), b"x").unwrap();
        let key = |extra: &str| {
            let text = format!(
                "name = \"x\"\n[guest]\nbackend = \"docker\"\nimage = {{ archive = \"img.tar\" }}\ncommand = [\"sh\"]\n{extra}"
            );
            let recipe = crate::recipe::Recipe::parse(&dir.path().join("r.toml"), text).unwrap();
            let planned = crate::plan::plan(&recipe).unwrap();
            let (keys, _) = keys(&planned, None).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&keys.component(ComponentKind::Config).canonical()).unwrap();
            (json, keys.config)
        };
        let (unset, unset_key) = key("");
        assert!(unset.get("bundle").is_none(), "{unset}");
        assert_eq!(unset_key.bundle.memory, crate::plan::DEFAULT_BUNDLE_MEMORY);
        let (default, _) = key("[bundle]\nmemory = \"512MiB\"\n");
        assert_eq!(default, unset);
        let (set, set_key) = key("[bundle]\nmemory = \"1GiB\"\n");
        assert_eq!(set["bundle"], serde_json::json!({"memory": 1u64 << 30}));
        // The key read back (as `verify` reads it) keeps the value, and the default.
        let back: ComponentKey = serde_json::from_value(set.clone()).unwrap();
        assert_eq!(back, ComponentKey::Config(set_key));
        let back: ComponentKey = serde_json::from_value(unset.clone()).unwrap();
        assert_eq!(back, ComponentKey::Config(unset_key));
    }
}
