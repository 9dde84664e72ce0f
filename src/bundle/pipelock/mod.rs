//! pipelock: the guest's first and only hop out.
//!
//! A forward proxy (absolute-form `http://` requests and `CONNECT`) on the bundle's address.
//! It allows the hosts the recipe lists (exact names and `*.suffix`; every egress route's host
//! too) and refuses every other with a 403 whose body says what was refused, by which rule,
//! and how a person can allow it. Each request is a line of the audit log
//! ([`crate::bundle::audit`]). Route hosts go through the egress stage
//! ([`crate::bundle::egress`]), in this process: the guest cannot address it.
//!
//! Every `CONNECT` is intercepted: TLS is terminated with a leaf of the run's CA, so DLP sees
//! what the guest sends, egress can set a route's credential, and a refusal is a body the
//! guest's client reads. HTTP/1.1 both ways, kept alive; upstream TLS is verified against the
//! public roots compiled in and, for a route, its `upstream_ca`.
//!
//! This module owns pipelock's typed config (rendered by the build from the entry's config
//! key, read by `bottle sidecar`), its port and its mounts. The rest:
//!
//! | module | owns |
//! | --- | --- |
//! | [`proxy`] | the listener, guest connections, `CONNECT` and interception |
//! | [`exchange`] | one request: target, allowlist, DLP, egress, upstream, audit event |
//! | [`body`] | streamed bodies: DLP on the way out, scrubbing and counting on the way back |
//! | [`inflate`] | compressed bodies, decoded (bounded): a route's answers for the scrubber, the guest's requests for DLP |
//! | [`mint`] | leaf certificates from the run's CA, cached |
//! | [`upstream`] | connections to upstreams: resolution, `upstream_proxy`, TLS trust |
//! | [`destination`] | which resolved addresses may be connected to (no private ones unless the recipe says so) |
//! | [`refusal`] | pipelock's own answers and their explanatory bodies |
//! | [`allow`] | the allowlist |
//! | [`policy`] | the allowlist and DLP with what a person granted for this run (supervise) |
//!
//! Built on hyper and tokio-rustls directly rather than on a MITM crate (`hudsucker`): the
//! chain needs per-route upstream trust, DLP that can abort a streaming upstream request,
//! header injection and scrubbing in one place, and 403s answered inside the guest's TLS.

pub mod allow;
pub mod body;
pub mod destination;
pub mod exchange;
pub mod inflate;
pub mod mint;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod upstream;

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::daemon::{Context, Daemon, Serving, Spec};
use super::egress;
use crate::config::ca_files;
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};
use crate::plan::DlpRulePlan;

pub const PORT: u16 = 8888;

/// Where the run's CA files are mounted in the bundle.
pub const CA_DIR: &str = "/etc/bottle/ca";
/// Where the audit log folder (the run's `audit/`) is mounted in the bundle.
pub const AUDIT_DIR: &str = "/var/log/bottle";
/// The audit log's file name, in the bundle's [`AUDIT_DIR`] and the run's `audit/` folder.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The run folder mounted at [`AUDIT_DIR`].
pub const AUDIT_RUN_DIR: &str = "audit";

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
    pub egress: egress::Config,
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
    pub rules: Vec<DlpRulePlan>,
    pub allow: Vec<String>,
}

fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

pub struct Pipelock;

impl Spec for Pipelock {
    const DAEMON: Daemon = Daemon::Pipelock;
    const NAME: &'static str = "pipelock";
    const PORT: Option<u16> = Some(PORT);
    const PROBED: bool = true;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        let p = &key.pipelock;
        Some(Config {
            listen_port: PORT,
            listen_host: any_address(),
            allow: p.allow.clone(),
            dlp: Dlp {
                enabled: p.dlp,
                rules: p.dlp_rules.clone(),
                allow: p.dlp_allow.clone(),
            },
            ca_cert: format!("{CA_DIR}/{}", ca_files::PIPELOCK_CERT),
            ca_key: format!("{CA_DIR}/{}", ca_files::PIPELOCK_KEY),
            egress: egress::config(key),
            audit_log: Some(format!("{AUDIT_DIR}/{AUDIT_FILE}")),
            supervise: key.supervise.enabled,
            allow_private: p.allow_private.clone(),
            mapped_hosts: key.network.hosts.keys().cloned().collect(),
        })
    }

    fn mounts(key: &ConfigKey) -> Vec<Mount> {
        let ca = |file: &str| Mount {
            source: MountSource::Ca(file.to_string()),
            target: format!("{CA_DIR}/{file}"),
            read_only: true,
        };
        let mut mounts = vec![
            ca(ca_files::PIPELOCK_CERT),
            ca(ca_files::PIPELOCK_KEY),
            Mount {
                source: MountSource::RunDir(AUDIT_RUN_DIR.to_string()),
                target: AUDIT_DIR.to_string(),
                read_only: false,
            },
        ];
        mounts.extend(egress::mounts(key));
        mounts
    }

    fn secrets(key: &ConfigKey) -> Vec<String> {
        key.egress
            .routes
            .iter()
            .map(|r| r.token_env.clone())
            .collect()
    }

    fn serve(config: Config, ctx: Context) -> Serving {
        Box::pin(async move {
            let proxy = proxy::Proxy::bind(config, ctx.secrets, ctx.shared).await?;
            proxy.serve().await
        })
    }
}
