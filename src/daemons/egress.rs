//! egress's contract: its part of `pipelock.json` (the routes, each naming the env var whose
//! value the run hands the bundle on stdin), the placeholder the guest holds in place of a
//! token, and where a route's upstream CA is in the config component and the bundle.

use serde::{Deserialize, Serialize};

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

/// Where a route's upstream CA is in the bundle (mounted from [`upstream_ca_file`]).
pub fn upstream_ca_path(host: &str) -> String {
    format!("{UPSTREAM_CA_DIR}/{host}.pem")
}
