//! git-gate's contract: its port, its typed config (`git-gate.json`, rendered by the build and
//! read by the daemon), the paths both sides agree on in the bundle and the guest, and the
//! formats git-gate shares with the host: an upstream's URL ([`url`]), a known_hosts file
//! ([`known_hosts`]) and the protocol on a local upstream's socket ([`local`]).

pub mod known_hosts;
pub mod local;
pub mod url;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

pub const PORT: u16 = 9418;
pub const KEYS: &str = "/etc/bottle/git-gate/keys";
pub const KNOWN_HOSTS: &str = "/etc/bottle/git-gate/known_hosts";
/// The folder of the local upstreams' sockets in the bundle.
pub const LOCAL_SOCKETS: &str = "/run/bottle/git-gate";
/// The run's folder (`runs/RUNID/…`) `bottle run` serves the local upstreams in, one socket
/// per upstream, named by the upstream.
pub const LOCAL_RUN_DIR: &str = "git-gate";
/// The guest's git config the remotes go in (read besides `~/.gitconfig`).
pub const GUEST_GIT_CONFIG: &str = ".config/git/config";

/// The largest upload-pack request (wants and haves) git-gate reads.
pub const UPLOAD_REQUEST_LIMIT: u64 = 32 << 20;
/// The most pushes in flight at once; more wait for a turn (each may hold `max_push_bytes`).
pub const MAX_PUSHES: usize = 4;

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

pub fn any_address() -> IpAddr {
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

impl Config {
    /// A config of every field, as `bottle sidecar --example git-gate` prints it: on loopback,
    /// one SSH upstream. Benchmarks start from it rather than from a copy of the struct's
    /// fields.
    pub fn example() -> Config {
        Config {
            port: PORT,
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            upstreams: vec![Upstream {
                name: "origin".into(),
                via: Via::Ssh {
                    url: "ssh://git@localhost:22/srv/repo.git".into(),
                    identity: format!("{KEYS}/origin"),
                    known_hosts: format!("{KNOWN_HOSTS}/origin"),
                },
                branches: vec!["agent/*".into()],
                tags: false,
                max_push_bytes: 100 << 20,
            }],
            audit_log: Some(crate::daemons::audit::log_in_bundle()),
        }
    }
}

/// The two git services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn program(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}
