//! One daemon's build-time half ([`Render`]): its config for an entry, the other files it needs
//! in the config component, its bundle mounts, env and secrets, and its files in the guest —
//! all functions of the [`ConfigKey`].

use std::net::Ipv4Addr;

use serde::Serialize;

use super::files::RenderedFile;
use crate::daemons::Daemon;
use crate::daemons::audit::{AUDIT_DIR, AUDIT_RUN_DIR};
use crate::hash::ConfigKey;
use crate::manifest::{EnvVar, Mount, MountSource};

/// Where a file goes in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestPath {
    /// Relative to the guest user's home (`.config/git/config`).
    Home(String),
    /// An absolute path (`/etc/bottle/ca.crt`).
    Absolute(String),
}

impl GuestPath {
    /// The absolute path, for a guest whose user's home is `home`.
    pub fn resolve(&self, home: &str) -> String {
        match self {
            GuestPath::Home(rel) => format!("{}/{rel}", home.trim_end_matches('/')),
            GuestPath::Absolute(path) => path.clone(),
        }
    }
}

/// A file for the guest: where it goes, its bytes, and whether the guest user owns it.
#[derive(Debug, Clone)]
pub struct GuestFile {
    pub path: GuestPath,
    pub bytes: Vec<u8>,
    pub user_owned: bool,
}

/// What the guest side needs to know to render its files.
pub struct GuestSide<'a> {
    pub bundle_ip: Ipv4Addr,
    pub run_id: &'a str,
}

/// One daemon's build-time half.
pub trait Render {
    const DAEMON: Daemon;
    /// Its typed config, from the contract (`crate::daemons::pipelock::Config`, ...).
    type Config: Serialize;

    /// Its config for an entry, or `None` when it does not run for that entry.
    fn config(key: &ConfigKey) -> Option<Self::Config>;
    /// Files of the config component it needs besides its config (mounted by [`Render::mounts`]).
    fn files(_key: &ConfigKey) -> Vec<RenderedFile> {
        Vec::new()
    }
    /// The bundle mounts it needs besides its config file.
    fn mounts(_key: &ConfigKey) -> Vec<Mount> {
        Vec::new()
    }
    /// Non-secret env entries for the bundle.
    fn env(_key: &ConfigKey) -> Vec<EnvVar> {
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
}

/// The run's audit folder, mounted where the daemons write the log (every daemon that logs
/// names it; the registry mounts a target once).
pub fn audit_mount() -> Mount {
    Mount {
        source: MountSource::RunDir(AUDIT_RUN_DIR.to_string()),
        target: AUDIT_DIR.to_string(),
        read_only: false,
    }
}
