//! The daemons' contract: each daemon is one module implementing [`Spec`] — its typed config
//! (rendered by the build into the config component, read by `bottle sidecar`), its port, its
//! mounts, the secrets it needs at run time, its files in the guest, and how it serves — and
//! one variant of [`Daemon`], the registry. Nothing else names a daemon: the config component,
//! the bundle spec, the run and `bottle sidecar` all go through the functions here, so adding
//! a daemon touches its module and this file, and a misspelled daemon does not compile.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{git_gate, pipelock, supervise};
use crate::config::RenderedFile;
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

/// Where `bottle run` mounts the daemons' config files inside the bundle.
pub const CONFIG_DIR: &str = "/etc/bottle";

/// The bundle's daemons: the registry.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Daemon {
    /// The guest's only hop out: allowlist, TLS interception, DLP, egress, audit log.
    Pipelock,
    /// Pushes through the bundle to the real upstream, with a key the guest never holds.
    GitGate,
    /// Requests from the agent, answered by a person on the host.
    Supervise,
}

impl Daemon {
    pub const ALL: [Daemon; 3] = [Daemon::Pipelock, Daemon::GitGate, Daemon::Supervise];

    pub fn name(self) -> &'static str {
        match self {
            Daemon::Pipelock => pipelock::Pipelock::NAME,
            Daemon::GitGate => git_gate::GitGate::NAME,
            Daemon::Supervise => supervise::Supervise::NAME,
        }
    }

    /// Its config file in the config component, and inside the bundle under [`CONFIG_DIR`].
    pub fn config_file(self) -> String {
        format!("{}.json", self.name())
    }

    /// The port it listens on in the bundle, if any.
    pub fn port(self) -> Option<u16> {
        match self {
            Daemon::Pipelock => pipelock::Pipelock::PORT,
            Daemon::GitGate => git_gate::GitGate::PORT,
            Daemon::Supervise => supervise::Supervise::PORT,
        }
    }

    /// Whether the run waits for its port before the guest's command starts.
    pub fn probed(self) -> bool {
        match self {
            Daemon::Pipelock => pipelock::Pipelock::PROBED,
            Daemon::GitGate => git_gate::GitGate::PROBED,
            Daemon::Supervise => supervise::Supervise::PROBED,
        }
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a daemon gets when it starts.
pub struct Context {
    /// Where its config file and the files its mounts put are.
    pub config_dir: PathBuf,
    /// Secret values the run handed over on stdin, by env var name (tokens). Never logged.
    pub secrets: BTreeMap<String, String>,
    /// What the bundle's daemons share in its process (supervise's grants).
    pub shared: std::sync::Arc<super::shared::Shared>,
}

/// A file for the guest: its path there (absolute, or relative to the guest user's home),
/// bytes, and whether the guest user owns it.
#[derive(Debug, Clone)]
pub struct GuestFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub user_owned: bool,
}

/// What the guest side needs to know to render its files.
pub struct GuestSide<'a> {
    pub bundle_ip: Ipv4Addr,
    pub run_id: &'a str,
}

pub type Serving = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One daemon's contract.
pub trait Spec {
    const DAEMON: Daemon;
    const NAME: &'static str;
    /// The port it listens on in the bundle.
    const PORT: Option<u16>;
    /// Whether the run waits for [`Spec::PORT`] before the guest's command starts.
    const PROBED: bool;
    type Config: Serialize + DeserializeOwned + Send + 'static;

    /// Its config for an entry, or `None` when it does not run for that entry.
    fn config(key: &ConfigKey) -> Option<Self::Config>;
    /// Files of the config component it needs besides its config (mounted by [`Spec::mounts`]).
    fn files(_key: &ConfigKey) -> Vec<RenderedFile> {
        Vec::new()
    }
    /// The bundle mounts it needs besides its config file.
    fn mounts(_key: &ConfigKey) -> Vec<Mount> {
        Vec::new()
    }
    /// Non-secret `NAME=VALUE` env entries for the bundle.
    fn env(_key: &ConfigKey) -> Vec<String> {
        Vec::new()
    }
    /// Names of host env vars whose values the run hands to the bundle on stdin.
    fn secrets(_key: &ConfigKey) -> Vec<String> {
        Vec::new()
    }
    /// Files it puts in the guest at provisioning.
    fn guest_files(_key: &ConfigKey, _side: &GuestSide<'_>) -> Vec<GuestFile> {
        Vec::new()
    }
    /// Serves until it fails (or the process is stopped).
    fn serve(config: Self::Config, ctx: Context) -> Serving;
}

/// The daemons that run for an entry, in start order.
pub fn daemons(key: &ConfigKey) -> Vec<Daemon> {
    Daemon::ALL
        .into_iter()
        .filter(|d| match d {
            Daemon::Pipelock => pipelock::Pipelock::config(key).is_some(),
            Daemon::GitGate => git_gate::GitGate::config(key).is_some(),
            Daemon::Supervise => supervise::Supervise::config(key).is_some(),
        })
        .collect()
}

fn render_one<S: Spec>(key: &ConfigKey) -> Vec<RenderedFile> {
    let Some(config) = S::config(key) else {
        return Vec::new();
    };
    let mut bytes = serde_json::to_vec_pretty(&config).expect("daemon configs serialize");
    bytes.push(b'\n');
    let mut files = vec![RenderedFile {
        path: S::DAEMON.config_file(),
        bytes,
        mode: 0o644,
    }];
    files.extend(S::files(key));
    files
}

/// Every running daemon's files in the config component: its config and what else it needs.
pub fn config_files(key: &ConfigKey) -> Vec<RenderedFile> {
    [
        render_one::<pipelock::Pipelock>(key),
        render_one::<git_gate::GitGate>(key),
        render_one::<supervise::Supervise>(key),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What the bundle needs for an entry's daemons: mounts (each config file first; a target
/// that two daemons name, once), env, and the names of the secrets it gets on stdin.
pub fn bundle_needs(key: &ConfigKey) -> (Vec<Mount>, Vec<String>, Vec<String>) {
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    let mut secrets = Vec::new();
    for d in daemons(key) {
        mounts.push(Mount {
            source: MountSource::Config(d.config_file()),
            target: format!("{CONFIG_DIR}/{}", d.config_file()),
            read_only: true,
        });
        let (m, e, s) = match d {
            Daemon::Pipelock => needs::<pipelock::Pipelock>(key),
            Daemon::GitGate => needs::<git_gate::GitGate>(key),
            Daemon::Supervise => needs::<supervise::Supervise>(key),
        };
        // A folder two daemons share (the run's audit folder) is mounted once.
        for mount in m {
            if !mounts.iter().any(|x: &Mount| x.target == mount.target) {
                mounts.push(mount);
            }
        }
        env.extend(e);
        secrets.extend(s);
    }
    secrets.sort();
    secrets.dedup();
    (mounts, env, secrets)
}

fn needs<S: Spec>(key: &ConfigKey) -> (Vec<Mount>, Vec<String>, Vec<String>) {
    (S::mounts(key), S::env(key), S::secrets(key))
}

/// Every running daemon's files for the guest.
pub fn guest_files(key: &ConfigKey, side: &GuestSide<'_>) -> Vec<GuestFile> {
    daemons(key)
        .into_iter()
        .flat_map(|d| match d {
            Daemon::Pipelock => pipelock::Pipelock::guest_files(key, side),
            Daemon::GitGate => git_gate::GitGate::guest_files(key, side),
            Daemon::Supervise => supervise::Supervise::guest_files(key, side),
        })
        .collect()
}

fn start<S: Spec>(
    config_dir: &Path,
    secrets: &BTreeMap<String, String>,
    shared: &std::sync::Arc<super::shared::Shared>,
) -> Result<Serving> {
    let path = config_dir.join(S::DAEMON.config_file());
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}'s config {}; `bottle run` mounts it from the entry's config component",
            S::NAME,
            path.display()
        )
    })?;
    let config: S::Config = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}'s config {} is not valid", S::NAME, path.display()))?;
    Ok(S::serve(
        config,
        Context {
            config_dir: config_dir.to_path_buf(),
            secrets: secrets.clone(),
            shared: shared.clone(),
        },
    ))
}

/// Reads a daemon's config from `config_dir` and returns it serving.
pub fn serve(
    daemon: Daemon,
    config_dir: &Path,
    secrets: &BTreeMap<String, String>,
    shared: &std::sync::Arc<super::shared::Shared>,
) -> Result<Serving> {
    match daemon {
        Daemon::Pipelock => start::<pipelock::Pipelock>(config_dir, secrets, shared),
        Daemon::GitGate => start::<git_gate::GitGate>(config_dir, secrets, shared),
        Daemon::Supervise => start::<supervise::Supervise>(config_dir, secrets, shared),
    }
}
