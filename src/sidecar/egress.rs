//! egress: the stage of pipelock that holds the real credentials.
//!
//! For each route host (over TLS only) it removes whatever credential the guest sent in the
//! route's header and presents the real token there, in the route's scheme, never in URLs or
//! bodies; and it scrubs the token from everything the upstream sends back, so an upstream
//! that reflects a request cannot hand the token to the guest. It runs inside pipelock's
//! process, after DLP: the guest cannot address it, and an injected token never trips DLP.
//!
//! Token values come from the run on the bundle's stdin (never the container's config); the
//! guest holds a placeholder under each route's `token_env` name.

use serde::{Deserialize, Serialize};

use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

/// Where a route's upstream CA file is mounted in the bundle.
pub const UPSTREAM_CA_DIR: &str = "/etc/bottle/egress";

/// The placeholder the guest holds under each route's `token_env` name.
pub const PLACEHOLDER: &str = "egress-placeholder";

/// egress's part of `pipelock.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sorted by host.
    pub routes: Vec<Route>,
    /// `http://host:port` of a proxy for the bundle's own outbound traffic.
    pub upstream_proxy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: String,
    /// The header the token goes in, e.g. `Authorization` or `x-api-key`.
    pub header: String,
    /// What goes before the token, e.g. `Bearer`; empty: the bare token.
    pub scheme: String,
    /// The name of the secret (the host env var) holding the token.
    pub token_env: String,
    /// A PEM file (a path in the bundle) of CAs trusted for this upstream besides the public
    /// roots.
    pub upstream_ca: Option<String>,
}

/// The config component path of a route's upstream CA.
pub fn upstream_ca_file(host: &str) -> String {
    format!("egress/{host}.pem")
}

pub fn config(key: &ConfigKey) -> Config {
    Config {
        routes: key
            .egress
            .routes
            .iter()
            .map(|r| Route {
                host: r.host.clone(),
                header: r.header.clone(),
                scheme: r.scheme.clone(),
                token_env: r.token_env.clone(),
                upstream_ca: r
                    .upstream_ca
                    .map(|_| format!("{UPSTREAM_CA_DIR}/{}.pem", r.host)),
            })
            .collect(),
        upstream_proxy: key.egress.upstream_proxy.clone(),
    }
}

/// The upstream CA files, mounted from the config component.
pub fn mounts(key: &ConfigKey) -> Vec<Mount> {
    key.egress
        .routes
        .iter()
        .filter(|r| r.upstream_ca.is_some())
        .map(|r| Mount {
            source: MountSource::Config(upstream_ca_file(&r.host)),
            target: format!("{UPSTREAM_CA_DIR}/{}.pem", r.host),
            read_only: true,
        })
        .collect()
}

/// The value of the route's header: the scheme, a space, the token (or the bare token).
pub fn header_value(route: &Route, token: &str) -> String {
    if route.scheme.is_empty() {
        token.to_string()
    } else {
        format!("{} {token}", route.scheme)
    }
}
