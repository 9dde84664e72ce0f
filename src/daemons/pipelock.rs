//! pipelock's contract: its port, where the bundle holds the run's CA, and its typed config
//! (`pipelock.json`, rendered by the build and read by the daemon), egress's part included
//! ([`super::egress`]).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

pub const PORT: u16 = 8888;

/// Where the run's CA files are mounted in the bundle.
pub const CA_DIR: &str = "/etc/bottle/ca";
/// `pipelock.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen_port: u16,
    /// The address to listen on: every interface unless given (tests listen on loopback).
    #[serde(default = "any_address")]
    pub listen_host: IpAddr,
    /// Exact hosts and `*.suffix` wildcards, lowercased; route hosts included.
    pub allow: Vec<String>,
    pub dlp: Dlp,
    /// The CA pipelock signs intercepted hosts' certificates with (paths in the bundle).
    pub ca_cert: String,
    pub ca_key: String,
    /// The egress stage: where real credentials go.
    pub egress: super::egress::Config,
    /// Where the audit log is written (a path in the bundle); none: stderr only.
    pub audit_log: Option<String>,
    /// Whether supervise runs in the bundle: refusals then show the request that asks a
    /// person to allow what was refused.
    #[serde(default)]
    pub supervise: bool,
    /// Private address ranges upstream connections may go to (`[pipelock] allow_private`).
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// The names of `[network] hosts`: the recipe said where they go, so their addresses,
    /// private or not, are let through.
    #[serde(default)]
    pub mapped_hosts: Vec<String>,
}

/// DLP as configured: on or off, the recipe's own rules and its allowed values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dlp {
    pub enabled: bool,
    pub rules: Vec<DlpRule>,
    pub allow: Vec<String>,
}

pub fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

/// A rule of the recipe's own (`[[pipelock.dlp_rules]]`): its id and its regex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DlpRule {
    pub id: String,
    pub regex: String,
}

impl Config {
    /// A config of every field, as `bottle sidecar --example pipelock` prints it: on loopback,
    /// DLP on, one egress route. Benchmarks start from it rather than from a copy of the
    /// struct's fields.
    pub fn example() -> Config {
        Config {
            listen_port: PORT,
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            allow: vec!["localhost".into()],
            dlp: Dlp {
                enabled: true,
                rules: Vec::new(),
                allow: Vec::new(),
            },
            ca_cert: format!("{CA_DIR}/pipelock.crt"),
            ca_key: format!("{CA_DIR}/pipelock.key"),
            egress: super::egress::Config {
                routes: vec![super::egress::Route {
                    host: "localhost".into(),
                    header: "Authorization".into(),
                    scheme: "Bearer".into(),
                    token_env: "EXAMPLE_TOKEN".into(),
                    upstream_ca: Some(super::egress::upstream_ca_path("localhost")),
                }],
                upstream_proxy: None,
            },
            audit_log: Some(super::audit::log_in_bundle()),
            supervise: false,
            allow_private: vec!["127.0.0.0/8".into()],
            mapped_hosts: Vec::new(),
        }
    }
}
