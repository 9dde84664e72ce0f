//! pipelock's build-time half: `pipelock.json` for an entry (egress's routes in it), the run's
//! CA and audit folder mounted, each route's upstream CA mounted from the component, and the
//! routes' tokens as the secrets the bundle gets on stdin.

use super::daemon::{Render, audit_mount};
use super::files::ca_files;
use crate::daemons::audit;
use crate::daemons::pipelock::{CA_DIR, Config, Dlp, DlpRule, PORT, any_address};
use crate::daemons::{Daemon, egress};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};

pub struct Pipelock;

impl Render for Pipelock {
    const DAEMON: Daemon = Daemon::Pipelock;
    type Config = Config;

    fn config(key: &ConfigKey) -> Option<Config> {
        let p = &key.pipelock;
        Some(Config {
            listen_port: PORT,
            listen_host: any_address(),
            allow: p.allow.clone(),
            dlp: Dlp {
                enabled: p.dlp,
                rules: p
                    .dlp_rules
                    .iter()
                    .map(|r| DlpRule {
                        id: r.id.clone(),
                        regex: r.regex.clone(),
                    })
                    .collect(),
                allow: p.dlp_allow.clone(),
            },
            ca_cert: format!("{CA_DIR}/{}", ca_files::PIPELOCK_CERT),
            ca_key: format!("{CA_DIR}/{}", ca_files::PIPELOCK_KEY),
            egress: egress_config(key),
            audit_log: Some(audit::log_in_bundle()),
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
            audit_mount(),
        ];
        mounts.extend(egress_mounts(key));
        mounts
    }

    fn secrets(key: &ConfigKey) -> Vec<String> {
        key.egress
            .routes
            .iter()
            .map(|r| r.token_env.clone())
            .collect()
    }
}

/// egress's part of pipelock's config.
fn egress_config(key: &ConfigKey) -> egress::Config {
    egress::Config {
        routes: key
            .egress
            .routes
            .iter()
            .map(|r| egress::Route {
                host: r.host.clone(),
                header: r.header.clone(),
                scheme: r.scheme.clone(),
                token_env: r.token_env.clone(),
                upstream_ca: r.upstream_ca.map(|_| egress::upstream_ca_path(&r.host)),
            })
            .collect(),
        upstream_proxy: key.egress.upstream_proxy.clone(),
    }
}

/// The upstream CA files, mounted from the config component.
fn egress_mounts(key: &ConfigKey) -> Vec<Mount> {
    key.egress
        .routes
        .iter()
        .filter(|r| r.upstream_ca.is_some())
        .map(|r| Mount {
            source: MountSource::Config(egress::upstream_ca_file(&r.host)),
            target: egress::upstream_ca_path(&r.host),
            read_only: true,
        })
        .collect()
}
