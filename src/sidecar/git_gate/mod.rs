//! git-gate: the guest pushes to it; it forwards to the real upstream with the host's identity
//! key, which is mounted into the bundle only and never enters the guest. Not yet serving (the
//! people-facing daemons' issue): it logs so and waits, so a bundle that lists it comes up.
//!
//! This module owns its typed config (upstreams with their policy: branch patterns, tags, a
//! size limit), port, mounts (per upstream, its identity key and its known_hosts, read-only)
//! and the guest's git remotes pointing at it.

use serde::{Deserialize, Serialize};

use super::daemon::{Context, Daemon, GuestFile, GuestSide, Serving, Spec};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

pub const PORT: u16 = 9418;
const KEYS: &str = "/etc/bottle/git-gate/keys";
const KNOWN_HOSTS: &str = "/etc/bottle/git-gate/known_hosts";
/// The guest's git config the remotes go in (read besides `~/.gitconfig`).
const GUEST_GIT_CONFIG: &str = ".config/git/config";

/// `git-gate.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub port: u16,
    pub upstreams: Vec<Upstream>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// The real upstream: `ssh://[user@]host[:port]/path` or `user@host:path`.
    pub url: String,
    /// The identity key's path in the bundle.
    pub identity: String,
    /// The known_hosts file's path in the bundle: the upstream's host key must be in it.
    pub known_hosts: String,
    /// Patterns of the branches a push may update.
    pub branches: Vec<String>,
    /// Whether a push may create or update tags.
    pub tags: bool,
    /// The most bytes one push may send.
    pub max_push_bytes: u64,
}

pub struct GitGate;

impl Spec for GitGate {
    const DAEMON: Daemon = Daemon::GitGate;
    const NAME: &'static str = "git-gate";
    const PORT: Option<u16> = Some(PORT);
    const PROBED: bool = false;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        let ups = &key.git_gate.upstreams;
        (!ups.is_empty()).then(|| Config {
            port: PORT,
            upstreams: ups
                .iter()
                .map(|u| Upstream {
                    name: u.name.clone(),
                    url: u.url.clone(),
                    identity: format!("{KEYS}/{}", u.name),
                    known_hosts: format!("{KNOWN_HOSTS}/{}", u.name),
                    branches: u.branches.clone(),
                    tags: u.tags,
                    max_push_bytes: u.max_push_bytes,
                })
                .collect(),
        })
    }

    fn mounts(key: &ConfigKey) -> Vec<Mount> {
        let mut mounts = Vec::new();
        for u in &key.git_gate.upstreams {
            mounts.push(Mount {
                source: MountSource::Host(u.identity.clone()),
                target: format!("{KEYS}/{}", u.name),
                read_only: true,
            });
            mounts.push(Mount {
                source: MountSource::Host(u.known_hosts.clone()),
                target: format!("{KNOWN_HOSTS}/{}", u.name),
                read_only: true,
            });
        }
        mounts
    }

    fn guest_files(key: &ConfigKey, side: &GuestSide<'_>) -> Vec<GuestFile> {
        let mut text = String::from("# Written by bottle: pushes go to the bundle's git-gate.\n");
        for u in &key.git_gate.upstreams {
            let r = &u.name;
            text.push_str(&format!(
                "[remote \"{r}\"]\n\turl = git://{}:{PORT}/{r}\n\tfetch = +refs/heads/*:refs/remotes/{r}/*\n",
                side.bundle_ip
            ));
        }
        vec![GuestFile {
            path: GUEST_GIT_CONFIG.to_string(),
            bytes: text.into_bytes(),
            user_owned: true,
        }]
    }

    fn serve(_config: Config, _ctx: Context) -> Serving {
        Box::pin(async {
            super::log(
                Self::NAME,
                "not yet implemented (people-facing daemons issue)",
            );
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}
