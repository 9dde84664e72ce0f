//! git-gate's build-time half: `git-gate.json` for an entry, each SSH upstream's identity key
//! and known_hosts mounted from the host, the local upstreams' socket folder, and the guest's
//! git config naming each upstream as a remote at the bundle.

use super::daemon::{GuestFile, GuestPath, GuestSide, Render, audit_mount};
use crate::daemons::Daemon;
use crate::daemons::audit;
use crate::daemons::git_gate::{
    Config, GUEST_GIT_CONFIG, KEYS, KNOWN_HOSTS, LOCAL_RUN_DIR, LOCAL_SOCKETS, PORT, Upstream, Via,
    any_address,
};
use crate::hash::ConfigKey;
use crate::manifest::{Mount, MountSource};
use crate::plan::UpstreamSource;

pub struct GitGate;

impl Render for GitGate {
    const DAEMON: Daemon = Daemon::GitGate;
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
            audit_log: Some(audit::log_in_bundle()),
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
        mounts.push(audit_mount());
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
            path: GuestPath::Home(GUEST_GIT_CONFIG.to_string()),
            bytes: text.into_bytes(),
            user_owned: true,
        }]
    }
}
