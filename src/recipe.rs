//! Recipe: a bottle's TOML source, parsed into typed structs.
//!
//! This module owns the *syntax* of a recipe: which keys exist, their types, and where in the
//! file each value came from. Unknown keys are refused. Every error names the file, the line
//! and the column, and says what was expected. What the values *mean* (paths resolved against
//! the recipe's folder, defaults filled in, lists normalized) is the plan's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod twin;

/// A parsed recipe plus the text it came from, so later stages can point at a value.
#[derive(Debug)]
pub struct Recipe {
    pub path: PathBuf,
    pub source: String,
    pub doc: RecipeDoc,
}

/// The recipe's schema. `#[serde(deny_unknown_fields)]` everywhere: a typo is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeDoc {
    /// The bottle's name: `[a-z0-9][a-z0-9-]*`, used in resource names.
    pub name: Spanned<String>,
    pub guest: Guest,
    #[serde(default)]
    pub pipelock: Pipelock,
    #[serde(default)]
    pub egress: Egress,
    #[serde(default, rename = "git-gate")]
    pub git_gate: GitGate,
    #[serde(default)]
    pub supervise: Supervise,
    #[serde(default)]
    pub provision: Provision,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub bundle: Bundle,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Smolvm,
    Docker,
}

/// How a smolvm guest is created: from the `.smolmachine` pack (the default), or straight
/// from the image archive, for hosts that cannot run `smolvm pack create`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmolvmStart {
    #[default]
    Pack,
    Image,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    pub backend: Backend,
    /// smolvm only: `"pack"` (default) or `"image"`.
    pub start: Option<Spanned<SmolvmStart>>,
    pub image: Spanned<ImageSource>,
    #[serde(default = "default_user")]
    pub user: Spanned<String>,
    /// Defaults to `/home/USER`.
    pub home: Option<Spanned<String>>,
    /// The agent command, run as `user` in `home`.
    pub command: Spanned<Vec<String>>,
    #[serde(default = "empty_env")]
    pub env: Spanned<BTreeMap<String, String>>,
    /// A program of the recipe's folder that `bottle build`, `hash` and `run` start before
    /// hashing, from its own folder: it fetches or assembles what the guest's build context
    /// copies (the context's digest then pins what it wrote).
    pub prepare: Option<Spanned<String>>,
}

fn empty_env() -> Spanned<BTreeMap<String, String>> {
    Spanned::new(0..0, BTreeMap::new())
}

fn default_user() -> Spanned<String> {
    Spanned::new(0..0, "node".to_string())
}

/// Exactly one of: `dockerfile` (with an optional `context`, default the Dockerfile's folder),
/// `archive` (a `docker save` tarball), or `reference` (a registry reference pinned by digest).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    pub dockerfile: Option<Spanned<String>>,
    pub context: Option<Spanned<String>>,
    pub archive: Option<Spanned<String>>,
    pub reference: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipelock {
    /// Hosts the guest may reach through the proxy (exact names, or `*.example.com`).
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Scan outbound requests for secrets (DLP). On unless turned off.
    #[serde(default = "yes")]
    pub dlp: bool,
    /// The recipe's own DLP rules, beside the built-in ones.
    #[serde(default)]
    pub dlp_rules: Vec<Spanned<DlpRule>>,
    /// Exact values DLP must never flag (known false positives, e.g. a documented example
    /// key the agent needs to send).
    #[serde(default)]
    pub dlp_allow: Vec<Spanned<String>>,
    /// Address ranges (CIDR) pipelock may connect to although they are private (loopback,
    /// RFC 1918, link-local…); every other private address is refused. Names mapped under
    /// `[network] hosts` need no entry.
    #[serde(default)]
    pub allow_private: Vec<Spanned<String>>,
}

/// A DLP rule of the recipe's: an id (what a refusal names) and a regular expression.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DlpRule {
    pub id: Spanned<String>,
    pub regex: Spanned<String>,
}

fn yes() -> bool {
    true
}

impl Default for Pipelock {
    fn default() -> Self {
        Pipelock {
            allow: Vec::new(),
            dlp: true,
            dlp_rules: Vec::new(),
            dlp_allow: Vec::new(),
            allow_private: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// A proxy the bundle's own outbound traffic goes through (`http://host:port`), e.g. a
    /// corporate one.
    pub upstream_proxy: Option<Spanned<String>>,
}

/// `[network]`: what the bundle's network knows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Static names the bundle resolves: name → an IPv4 address, or `host-gateway` (the host,
    /// as seen from the bundle's outbound network).
    #[serde(default = "no_hosts")]
    pub hosts: Spanned<BTreeMap<String, String>>,
}

fn no_hosts() -> Spanned<BTreeMap<String, String>> {
    Spanned::new(0..0, BTreeMap::new())
}

impl Default for Network {
    fn default() -> Self {
        Network { hosts: no_hosts() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: Spanned<String>,
    /// The *name* of the host environment variable holding the token. Its value is read by
    /// `bottle run`, never by `bottle build`.
    pub token_env: Spanned<String>,
    #[serde(default = "default_header")]
    pub header: Spanned<String>,
    /// Prefix before the token in the header, e.g. `Bearer`. Empty: the bare token.
    #[serde(default = "default_scheme")]
    pub scheme: Spanned<String>,
    /// A PEM file of CA certificates egress trusts for this upstream, beside the public roots
    /// (a private or corporate CA).
    pub upstream_ca: Option<Spanned<String>>,
}

fn default_header() -> Spanned<String> {
    Spanned::new(0..0, "Authorization".to_string())
}
fn default_scheme() -> Spanned<String> {
    Spanned::new(0..0, "Bearer".to_string())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GitGate {
    #[serde(default)]
    pub upstreams: Vec<Spanned<Upstream>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: Spanned<String>,
    /// An SSH upstream: `ssh://[user@]host[:port]/path` or `user@host:path`. Exactly one of
    /// `url` and `path`.
    pub url: Option<Spanned<String>>,
    /// A repository on the host (`~/src/project`): a run-time host path like `identity`,
    /// served to the bundle by `bottle run` and never mounted anywhere.
    pub path: Option<Spanned<String>>,
    /// Host path of the SSH identity key (with `url` only). Referenced by path only: never
    /// read at build time, mounted read-only into the bundle at run time.
    pub identity: Option<Spanned<String>>,
    /// Host path of the known_hosts file the upstream's host key is checked against (read at
    /// run time); default the person's `~/.ssh/known_hosts`.
    pub known_hosts: Option<Spanned<String>>,
    /// The branches a push may update (`agent/*` patterns); default any branch.
    pub branches: Option<Spanned<Vec<String>>>,
    /// Whether a push may create tags; default no.
    #[serde(default)]
    pub tags: bool,
    /// The most bytes one push may send; default 100 MiB.
    pub max_push_bytes: Option<Spanned<u64>>,
}

/// `[bundle]`: the bundle container's own resources.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The bundle container's memory limit, e.g. `"512MiB"`; default
    /// [`crate::plan::DEFAULT_BUNDLE_MEMORY`].
    pub memory: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Supervise {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// A file copied into the guest as the agent's prompt.
    pub prompt: Option<Spanned<String>>,
    /// A folder copied into the guest as the agent's skills.
    pub skills: Option<Spanned<String>>,
    pub git_name: Option<Spanned<String>>,
    pub git_email: Option<Spanned<String>>,
    /// A git-gate upstream's name: cloned through the gate into `~/work` at provisioning; the
    /// agent starts there.
    pub workspace: Option<Spanned<String>>,
    /// More files for the guest: a path under the guest's home → a file of the recipe's folder.
    pub files: Option<Spanned<BTreeMap<String, String>>>,
}

/// An error located in a recipe file.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}; check the path")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not valid UTF-8 at byte {offset}; save the recipe as UTF-8")]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        offset: usize,
    },
    #[error("{path}:{line}:{col}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

/// A recipe or upstream name: `[a-z0-9-]`, not starting with `-`, at most 40 characters.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// A 1-based line and column for a byte offset of `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

impl Recipe {
    /// Reads a recipe file; a twin (a file with `extends`) is its base recipe with the
    /// twin's name and backend.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let source = read_text(path)?;
        match twin::Twin::parse(path, &source)? {
            Some(twin) => twin.apply(path, &source),
            None => Recipe::parse(path, source),
        }
    }

    pub fn parse(path: &Path, source: String) -> Result<Recipe, RecipeError> {
        match toml::from_str::<RecipeDoc>(&source) {
            Ok(doc) => Ok(Recipe {
                path: path.to_path_buf(),
                source,
                doc,
            }),
            Err(e) => Err(located(path, &source, &e)),
        }
    }

    /// An error pointing at a value of this recipe.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl fmt::Display,
    ) -> RecipeError {
        error_at(&self.path, &self.source, span, message)
    }
}

/// An error at `span` of the file `path` whose text is `source`.
fn error_at(
    path: &Path,
    source: &str,
    span: std::ops::Range<usize>,
    message: impl fmt::Display,
) -> RecipeError {
    let (line, col) = line_col(source, span.start);
    RecipeError::At {
        path: path.to_path_buf(),
        line,
        col,
        message: message.to_string(),
    }
}

/// A TOML error of the file `path`, located.
fn located(path: &Path, source: &str, e: &toml::de::Error) -> RecipeError {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    error_at(path, source, offset..offset, explain(e.message().trim()))
}

/// A recipe file's text: UTF-8, or an error naming the line and byte where it is not.
fn read_text(path: &Path) -> Result<String, RecipeError> {
    let bytes = std::fs::read(path).map_err(|source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        RecipeError::NotUtf8 {
            path: path.to_path_buf(),
            line: e.as_bytes()[..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
            offset,
        }
    })
}

/// Adds what to do to serde's terse messages where that helps.
fn explain(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!(
            "{message}; remove it or fix its spelling (see the recipe schema in docs/recipes.md)"
        )
    } else if message.starts_with("missing field") {
        format!("{message}; add it (see the recipe schema in docs/recipes.md)")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(Path::new("r.toml"), s.to_string())
    }

    const MIN: &str = r#"
name = "x"
[guest]
backend = "docker"
image = { archive = "img.tar" }
command = ["sh"]
"#;

    #[test]
    fn minimal_recipe_parses_with_defaults() {
        let r = parse(MIN).unwrap();
        assert_eq!(r.doc.guest.user.get_ref(), "node");
        assert!(r.doc.pipelock.dlp);
        assert!(!r.doc.supervise.enabled);
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse(&format!("{MIN}colour = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("r.toml:7:1: unknown field `colour`")
                && err.contains("fix its spelling"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let err = parse(&MIN.replace(r#"command = ["sh"]"#, "command = 3"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.toml:6:11:"), "{err}");
        assert!(err.contains("expected a sequence"), "{err}");
    }

    #[test]
    fn non_utf8_recipe_names_file_line_and_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, b"name = \"x\"\n# caf\xe9\n").unwrap();
        let err = Recipe::load(&p).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:2: not valid UTF-8 at byte 16; save the recipe as UTF-8",
                p.display()
            )
        );
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé\nx", 7), (3, 1));
        assert_eq!(line_col("ab\ncé\nx", 4), (2, 2));
    }
}
