//! Plan: the resolved, normalized, secret-free form of a recipe.
//!
//! The plan is what the hash covers and what the build consumes. It owns the *meaning* of a
//! recipe: defaults filled in, names checked, host lists lowercased, sorted and deduplicated,
//! paths resolved against the recipe's folder and written relative to it (so the same recipe
//! checked out in two places plans, and hashes, the same). A path that leaves the recipe's
//! folder is refused. Secrets never enter a plan: tokens are held by the *name* of their host
//! environment variable and identity keys by their host path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::recipe::is_slug;
use crate::recipe::{self, Backend, Recipe, RecipeError, SmolvmStart};
pub use bundle::{
    BundlePlan, DAEMONS_BASE_MEMORY, DEFAULT_BUNDLE_MEMORY, needed_memory, parse_size, show_size,
};

mod bundle;
mod daemons;
mod guest_env;
mod paths;
mod provision;
mod resolver;

pub use guest_env::{FIXED_GUEST_ENV, FixedValue};

use resolver::Resolver;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub guest: GuestPlan,
    pub pipelock: PipelockPlan,
    pub egress: EgressPlan,
    pub git_gate: GitGatePlan,
    pub supervise: SupervisePlan,
    pub provision: ProvisionPlan,
    pub network: NetworkPlan,
    pub bundle: BundlePlan,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GuestBackend {
    Smolvm,
    Docker,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GuestStart {
    /// docker guests, and smolvm guests created with `--image ARCHIVE`.
    Image,
    /// smolvm guests created with `--from PACK`.
    Pack,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestPlan {
    pub backend: GuestBackend,
    pub start: GuestStart,
    pub image: ImagePlan,
    pub user: String,
    pub home: String,
    pub command: Vec<String>,
    /// The recipe's own guest env; the build adds the bottle's fixed entries.
    pub env: BTreeMap<String, String>,
}

/// Where the guest image comes from. Paths are relative to the recipe's folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum ImagePlan {
    Dockerfile { dockerfile: String, context: String },
    Archive { archive: String },
    Reference { reference: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PipelockPlan {
    /// Sorted, deduplicated, lowercased; includes every egress route's host.
    pub allow: Vec<String>,
    pub dlp: bool,
    /// The recipe's own DLP rules (each regex checked to compile), sorted by id.
    pub dlp_rules: Vec<DlpRulePlan>,
    /// Values DLP never flags; sorted, deduplicated.
    pub dlp_allow: Vec<String>,
    /// Private address ranges pipelock may connect to, as CIDRs (`10.1.0.0/16`); sorted,
    /// deduplicated. Absent from the key when empty (keys of recipes without it stay as
    /// they were).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DlpRulePlan {
    pub id: String,
    pub regex: String,
}

/// `[network]` as planned: static names the bundle resolves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkPlan {
    pub hosts: BTreeMap<String, HostTarget>,
}

/// Where a static name points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum HostTarget {
    Ip(std::net::Ipv4Addr),
    /// The host, as seen from the bundle's outbound network (its gateway), fixed at run time.
    HostGateway,
}

impl From<HostTarget> for String {
    fn from(t: HostTarget) -> String {
        match t {
            HostTarget::Ip(ip) => ip.to_string(),
            HostTarget::HostGateway => "host-gateway".to_string(),
        }
    }
}

impl TryFrom<String> for HostTarget {
    type Error = String;
    fn try_from(s: String) -> Result<HostTarget, String> {
        if s == "host-gateway" {
            return Ok(HostTarget::HostGateway);
        }
        s.parse()
            .map(HostTarget::Ip)
            .map_err(|_| format!("{s:?} is neither an IPv4 address nor \"host-gateway\""))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressPlan {
    /// Sorted by host.
    pub routes: Vec<RoutePlan>,
    /// `http://host:port` of a proxy for the bundle's own outbound traffic.
    pub upstream_proxy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoutePlan {
    pub host: String,
    pub token_env: String,
    pub header: String,
    pub scheme: String,
    /// A PEM file (relative to the recipe's folder) of CAs egress trusts for this upstream.
    pub upstream_ca: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GitGatePlan {
    /// Sorted by name.
    pub upstreams: Vec<UpstreamPlan>,
}

/// Read back through `daemons::UpstreamFields`, which refuses unknown fields as the other
/// types of a key do (`deny_unknown_fields` cannot see through the flattened source).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "daemons::UpstreamFields")]
pub struct UpstreamPlan {
    pub name: String,
    /// Where the upstream is (its fields inline: `url`, `identity`, `known_hosts`, or `path`).
    #[serde(flatten)]
    pub source: UpstreamSource,
    /// Patterns of the branches a push may update (`*` matches within a path segment, `**`
    /// across); sorted.
    pub branches: Vec<String>,
    pub tags: bool,
    pub max_push_bytes: u64,
}

/// Where a git-gate upstream is. Host paths are kept as written (a leading `~/` is expanded
/// at run time) and never read at build time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum UpstreamSource {
    /// Over SSH, with an identity key mounted into the bundle.
    Ssh {
        url: String,
        /// A host path.
        identity: String,
        /// A host path; `~/.ssh/known_hosts` unless the recipe names one.
        known_hosts: String,
    },
    /// A repository on the host, served to the bundle by `bottle run` on a socket.
    Local {
        /// A host path.
        path: String,
    },
}

/// The default of `max_push_bytes`: 100 MiB.
pub const DEFAULT_MAX_PUSH_BYTES: u64 = 100 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SupervisePlan {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisionPlan {
    pub prompt: Option<String>,
    pub skills: Option<String>,
    pub git_name: Option<String>,
    pub git_email: Option<String>,
    /// The git-gate upstream cloned into [`WORKSPACE_DIR`] of the guest's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// More files for the guest: a path under its home → a plan-relative file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// Where `[provision] workspace` is cloned, under the guest's home; the agent starts there.
pub const WORKSPACE_DIR: &str = "work";

/// A plan together with the folder its relative paths are resolved against. The folder is not
/// part of the plan (and so not of the hash).
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: Plan,
    pub root: PathBuf,
}

impl Planned {
    /// The host path of a plan-relative path.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// Resolves a parsed recipe into a plan.
pub fn plan(recipe: &Recipe) -> Result<Planned, RecipeError> {
    let root = recipe
        .path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let doc = &recipe.doc;
    let r = Resolver {
        recipe,
        root: &root,
    };

    let name = doc.name.get_ref();
    if !is_slug(name) {
        return Err(recipe.error_at(
            doc.name.span(),
            format!("name {name:?} must be lowercase letters, digits and '-', starting with a letter or digit, at most 40 characters"),
        ));
    }

    let guest = r.guest(&doc.guest)?;
    let mut allow = Vec::new();
    for host in &doc.pipelock.allow {
        allow.push(r.host(host)?);
    }
    let routes = r.routes(&doc.egress.routes)?;
    for given in &doc.egress.routes {
        let name = given.get_ref().token_env.get_ref();
        if guest.env.contains_key(name) {
            return Err(recipe.error_at(
                given.get_ref().token_env.span(),
                format!(
                    "the guest's env holds a placeholder under {name}, the route's token name; remove {name} from [guest] env"
                ),
            ));
        }
    }
    allow.extend(routes.iter().map(|rt| rt.host.clone()));
    allow.sort();
    allow.dedup();
    let git_gate = GitGatePlan {
        upstreams: r.upstreams(&doc.git_gate.upstreams)?,
    };
    let provision = r.provision(&doc.provision, &git_gate)?;
    let bundle = r.bundle(&doc.bundle, &git_gate.upstreams)?;

    Ok(Planned {
        plan: Plan {
            name: name.clone(),
            guest,
            pipelock: PipelockPlan {
                allow,
                dlp: doc.pipelock.dlp,
                dlp_rules: r.dlp_rules(&doc.pipelock.dlp_rules)?,
                dlp_allow: {
                    let mut v: Vec<String> = doc
                        .pipelock
                        .dlp_allow
                        .iter()
                        .map(|a| a.get_ref().clone())
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                },
                allow_private: r.allow_private(&doc.pipelock.allow_private)?,
            },
            egress: EgressPlan {
                routes,
                upstream_proxy: r.upstream_proxy(doc.egress.upstream_proxy.as_ref())?,
            },
            network: r.network(&doc.network)?,
            git_gate,
            supervise: SupervisePlan {
                enabled: doc.supervise.enabled,
            },
            provision,
            bundle,
        },
        root,
    })
}

impl Resolver<'_> {
    fn guest(&self, g: &recipe::Guest) -> Result<GuestPlan, RecipeError> {
        let recipe = self.recipe;
        let backend = match g.backend {
            Backend::Docker => GuestBackend::Docker,
            Backend::Smolvm => GuestBackend::Smolvm,
        };
        let start = match (backend, &g.start) {
            (GuestBackend::Docker, None) => GuestStart::Image,
            (GuestBackend::Docker, Some(s)) => {
                return Err(
                    recipe.error_at(s.span(), "`start` applies to smolvm guests only; remove it")
                );
            }
            (GuestBackend::Smolvm, None) => GuestStart::Pack,
            (GuestBackend::Smolvm, Some(s)) => match s.get_ref() {
                SmolvmStart::Pack => GuestStart::Pack,
                SmolvmStart::Image => GuestStart::Image,
            },
        };
        let image = self.image(&g.image)?;
        let user = g.user.get_ref().clone();
        if user.is_empty()
            || !user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(recipe.error_at(
                g.user.span(),
                "user must be a plain user name such as \"node\"",
            ));
        }
        let home = match &g.home {
            Some(h) => {
                let home = h.get_ref().clone();
                if !home.starts_with('/') || home.contains("..") || home == "/" {
                    return Err(recipe.error_at(
                        h.span(),
                        "home must be an absolute guest path such as \"/home/node\", not \"/\"",
                    ));
                }
                home.trim_end_matches('/').to_string()
            }
            None => format!("/home/{user}"),
        };
        if g.command.get_ref().is_empty() {
            return Err(recipe.error_at(
                g.command.span(),
                "command must name the agent to run, e.g. [\"claude\"]",
            ));
        }
        for (key, value) in g.env.get_ref() {
            if !is_env_name(key) {
                return Err(recipe.error_at(
                    g.env.span(),
                    format!("guest env name {key:?} is not a valid variable name"),
                ));
            }
            if FIXED_GUEST_ENV.iter().any(|(name, _)| name == key) {
                return Err(recipe.error_at(g.env.span(), format!("guest env {key} is set by bottle itself (proxy, trust and credential settings); remove it from the recipe")));
            }
            if value.contains('\0') {
                return Err(
                    recipe.error_at(g.env.span(), format!("guest env {key} holds a NUL byte"))
                );
            }
        }
        Ok(GuestPlan {
            backend,
            start,
            image,
            user,
            home,
            command: g.command.get_ref().clone(),
            env: g.env.get_ref().clone(),
        })
    }

    fn image(&self, s: &Spanned<recipe::ImageSource>) -> Result<ImagePlan, RecipeError> {
        let src = s.get_ref();
        let given = [
            src.dockerfile.is_some(),
            src.archive.is_some(),
            src.reference.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(self.recipe.error_at(
                s.span(),
                "guest.image needs exactly one of `dockerfile`, `archive` or `reference`",
            ));
        }
        if let Some(df) = &src.dockerfile {
            let dockerfile = self.file(df)?;
            let context = match &src.context {
                Some(c) => self.dir(c)?,
                None => paths::parent_rel(&dockerfile),
            };
            return Ok(ImagePlan::Dockerfile {
                dockerfile,
                context,
            });
        }
        if let Some(c) = &src.context {
            return Err(self
                .recipe
                .error_at(c.span(), "`context` goes with `dockerfile` only; remove it"));
        }
        if let Some(a) = &src.archive {
            return Ok(ImagePlan::Archive {
                archive: self.file(a)?,
            });
        }
        let reference = src.reference.as_ref().expect("one source is given");
        let text = reference.get_ref().trim();
        if !is_pinned_reference(text) {
            return Err(self.recipe.error_at(
                reference.span(),
                format!("image reference {text:?} is not pinned: a tag can move, so the hash cannot pin it; use NAME@sha256:DIGEST (see `docker image inspect --format '{{{{.RepoDigests}}}}' IMAGE`)"),
            ));
        }
        Ok(ImagePlan::Reference {
            reference: text.to_string(),
        })
    }

    fn host(&self, h: &Spanned<String>) -> Result<String, RecipeError> {
        let host = h.get_ref().trim().to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(self.recipe.error_at(
                h.span(),
                format!("{:?} is not a host name; write e.g. \"api.example.com\" or \"*.example.com\" (no scheme, port or path)", h.get_ref()),
            ));
        }
        Ok(host)
    }

    fn env_name(&self, s: &Spanned<String>, what: &str) -> Result<(), RecipeError> {
        if is_env_name(s.get_ref()) {
            Ok(())
        } else {
            Err(self.recipe.error_at(
                s.span(),
                format!("{what} must be the NAME of an environment variable (letters, digits, '_'), not its value"),
            ))
        }
    }
}

pub fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `NAME@sha256:<64 hex>`.
pub fn is_pinned_reference(s: &str) -> bool {
    match s.split_once("@sha256:") {
        Some((name, digest)) => {
            !name.is_empty()
                && digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_references() {
        let d = "a".repeat(64);
        assert!(is_pinned_reference(&format!("node@sha256:{d}")));
        assert!(!is_pinned_reference("node:20"));
        assert!(!is_pinned_reference("node@sha256:abc"));
        assert!(!is_pinned_reference(&format!("@sha256:{d}")));
    }

    fn plan_in(dir: &std::path::Path, extra: &str) -> Result<Planned, RecipeError> {
        std::fs::write(dir.join("img.tar"), b"x").unwrap();
        let text = format!(
            "name = \"x\"\n[guest]\nbackend = \"docker\"\nimage = {{ archive = \"img.tar\" }}\ncommand = [\"sh\"]\n{extra}"
        );
        plan(&Recipe::parse(&dir.join("r.toml"), text)?)
    }

    #[test]
    fn allow_private_ranges_are_masked_sorted_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan_in(
            dir.path(),
            "[pipelock]\nallow_private = [\"127.0.0.1\", \"10.1.2.3/16\", \"10.1.0.0/16\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.plan.pipelock.allow_private,
            ["10.1.0.0/16", "127.0.0.1/32"]
        );
        let none = plan_in(dir.path(), "").unwrap();
        assert!(none.plan.pipelock.allow_private.is_empty());
        // Absent from the key when empty: recipes without it keep their hash.
        let json = serde_json::to_string(&none.plan.pipelock).unwrap();
        assert!(!json.contains("allow_private"), "{json}");
        let err = plan_in(
            dir.path(),
            "[pipelock]\nallow_private = [\"10.0.0.0/33\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("r.toml:7:")
                && err.contains("10.0.0.0/33")
                && err.contains("ADDRESS/BITS"),
            "{err}"
        );
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("ANTHROPIC_TOKEN"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("sk-ant-123"));
    }
}
