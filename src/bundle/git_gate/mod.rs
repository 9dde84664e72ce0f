//! git-gate: the guest's git remotes point at it (smart HTTP on the bundle's port 9418); it
//! relays fetches to the real upstream and forwards the pushes its policy accepts, over SSH
//! with the upstream's identity key, which is mounted into the bundle only and never enters
//! the guest — or, for a local upstream (a repository on the host), through the socket `bottle
//! run` serves it on ([`local`]), the repository itself mounted nowhere.
//!
//! It speaks git in Rust — no git binary in the bundle, which stays `FROM scratch` with this
//! one executable:
//! - **Fetch and clone** pass through: `GET /NAME/info/refs?service=git-upload-pack` is the
//!   upstream's advertisement, and each `POST /NAME/git-upload-pack` (stateless negotiation:
//!   protocol v0/v1, `Git-Protocol: version=2` is ignored) is relayed to a fresh
//!   `git-upload-pack` on the upstream, its answer streamed back.
//! - **Push**: `GET …?service=git-receive-pack` advertises the upstream's refs with the
//!   capabilities git-gate can honour plus `no-thin`; `POST /NAME/git-receive-pack` is read
//!   whole (counted as it streams, cut at `max_push_bytes`; at most [`server::MAX_PUSHES`] in
//!   flight, the others waiting their turn), judged off the async workers by the policy
//!   ([`policy`]: namespaces, deletions, `branches`, `tags`, fast-forward from the pushed pack,
//!   size) and either refused as a whole with git's report-status, so `git push` prints the
//!   rule, or forwarded byte for byte to the upstream's `git-receive-pack`, whose report is
//!   relayed. Nothing reaches the upstream for a refused or malformed push.
//! - Every push is one audit line per ref update ([`crate::bundle::audit::GitUpdate`]), and
//!   every upload-pack exchange one line, in the run's audit log.
//!
//! This module owns git-gate's typed config (upstreams with their way and policy), port,
//! mounts (per SSH upstream its identity key and known_hosts, read-only; the run's folder of
//! local upstreams' sockets; the run's audit folder) and the
//! guest's git config (remotes at the bundle, and no proxy for them). The rest:
//!
//! | module | owns |
//! | --- | --- |
//! | [`server`] | the HTTP listener, routes, the advertisements and fetches, relaying, audit lines |
//! | `receive` | a push: read, judged, refused or forwarded |
//! | [`push`] | the receive-pack request, advertised capabilities, the decision, refusals' reports |
//! | [`policy`] | the rules and their words |
//! | [`pack`] | pack parsing, delta resolution, the fast-forward walk |
//! | [`delta`] | applying one delta |
//! | [`pkt`] | pkt-lines, side-band, ref advertisements |
//! | [`remote`] | one git service on an upstream, either way: its stdin, stdout, stderr, errors |
//! | [`ssh`] | upstream URLs, the SSH client (russh) |
//! | [`local`] | the local upstream's socket protocol, git-gate's side of it |
//! | [`known_hosts`] | host key verification |

pub mod delta;
pub mod known_hosts;
pub mod local;
pub mod pack;
pub mod pkt;
pub mod policy;
pub mod push;
mod receive;
pub mod remote;
pub mod server;
pub mod ssh;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::daemon::{Context, Daemon, GuestFile, GuestSide, Serving, Spec};
use super::pipelock::{AUDIT_DIR, AUDIT_FILE, AUDIT_RUN_DIR};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};
use crate::plan::UpstreamSource;

pub const PORT: u16 = 9418;
const KEYS: &str = "/etc/bottle/git-gate/keys";
const KNOWN_HOSTS: &str = "/etc/bottle/git-gate/known_hosts";
/// The folder of the local upstreams' sockets in the bundle.
const LOCAL_SOCKETS: &str = "/run/bottle/git-gate";
/// The run's folder (`runs/RUNID/…`) `bottle run` serves the local upstreams in, one socket
/// per upstream, named by the upstream.
pub const LOCAL_RUN_DIR: &str = "git-gate";
/// The guest's git config the remotes go in (read besides `~/.gitconfig`).
const GUEST_GIT_CONFIG: &str = ".config/git/config";

/// `git-gate.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub port: u16,
    /// The address to listen on: every interface unless given (tests listen on loopback).
    #[serde(default = "any_address")]
    pub listen_host: IpAddr,
    pub upstreams: Vec<Upstream>,
    /// Where the audit log is written (a path in the bundle); none: stderr only.
    #[serde(default)]
    pub audit_log: Option<String>,
}

fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// How git-gate reaches it.
    pub via: Via,
    /// Patterns of the branches a push may update.
    pub branches: Vec<String>,
    /// Whether a push may create tags.
    pub tags: bool,
    /// The most bytes one push may send.
    pub max_push_bytes: u64,
}

/// How git-gate reaches an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Via {
    Ssh {
        /// The real upstream: `ssh://[user@]host[:port]/path` or `user@host:path`.
        url: String,
        /// The identity key's path in the bundle.
        identity: String,
        /// The known_hosts file's path in the bundle: the upstream's host key must be in it.
        known_hosts: String,
    },
    /// A repository on the host, which `bottle run` serves on this unix socket (a path in the
    /// bundle): git-gate asks it for a service, never names a repository ([`local`]).
    Local { socket: String },
}

pub struct GitGate;

impl Spec for GitGate {
    const DAEMON: Daemon = Daemon::GitGate;
    const NAME: &'static str = "git-gate";
    const PORT: Option<u16> = Some(PORT);
    const PROBED: bool = true;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        let ups = &key.git_gate.upstreams;
        (!ups.is_empty()).then(|| Config {
            port: PORT,
            listen_host: any_address(),
            upstreams: ups
                .iter()
                .map(|u| Upstream {
                    name: u.name.clone(),
                    via: match &u.source {
                        UpstreamSource::Ssh { url, .. } => Via::Ssh {
                            url: url.clone(),
                            identity: format!("{KEYS}/{}", u.name),
                            known_hosts: format!("{KNOWN_HOSTS}/{}", u.name),
                        },
                        UpstreamSource::Local { .. } => Via::Local {
                            socket: format!("{LOCAL_SOCKETS}/{}", u.name),
                        },
                    },
                    branches: u.branches.clone(),
                    tags: u.tags,
                    max_push_bytes: u.max_push_bytes,
                })
                .collect(),
            audit_log: Some(format!("{AUDIT_DIR}/{AUDIT_FILE}")),
        })
    }

    fn mounts(key: &ConfigKey) -> Vec<Mount> {
        let mut mounts = Vec::new();
        let mut local = false;
        for u in &key.git_gate.upstreams {
            let UpstreamSource::Ssh {
                identity,
                known_hosts,
                ..
            } = &u.source
            else {
                local = true;
                continue;
            };
            mounts.push(Mount {
                source: MountSource::Host(identity.clone()),
                target: format!("{KEYS}/{}", u.name),
                read_only: true,
            });
            mounts.push(Mount {
                source: MountSource::Host(known_hosts.clone()),
                target: format!("{KNOWN_HOSTS}/{}", u.name),
                read_only: true,
            });
        }
        // The local upstreams' sockets, which `bottle run` makes in this folder of the run:
        // the repositories themselves are mounted nowhere.
        if local {
            mounts.push(Mount {
                source: MountSource::RunDir(LOCAL_RUN_DIR.to_string()),
                target: LOCAL_SOCKETS.to_string(),
                read_only: false,
            });
        }
        // The audit folder pipelock mounts too: the registry mounts a target once.
        mounts.push(Mount {
            source: MountSource::RunDir(AUDIT_RUN_DIR.to_string()),
            target: AUDIT_DIR.to_string(),
            read_only: false,
        });
        mounts
    }

    fn guest_files(key: &ConfigKey, side: &GuestSide<'_>) -> Vec<GuestFile> {
        let base = format!("http://{}:{PORT}/", side.bundle_ip);
        let mut text = String::from("# Written by bottle: git goes to the bundle's git-gate.\n");
        // Straight to the bundle, not through pipelock (the guest's HTTP_PROXY).
        text.push_str(&format!("[http \"{base}\"]\n\tproxy = \"\"\n"));
        for u in &key.git_gate.upstreams {
            let r = &u.name;
            text.push_str(&format!(
                "[remote \"{r}\"]\n\turl = {base}{r}\n\tfetch = +refs/heads/*:refs/remotes/{r}/*\n"
            ));
        }
        vec![GuestFile {
            path: GUEST_GIT_CONFIG.to_string(),
            bytes: text.into_bytes(),
            user_owned: true,
        }]
    }

    fn serve(config: Config, _ctx: Context) -> Serving {
        Box::pin(async move {
            let gate = server::Gate::bind(config).await?;
            gate.serve().await
        })
    }
}
